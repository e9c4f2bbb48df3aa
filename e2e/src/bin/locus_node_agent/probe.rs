//! Container probes: startup, readiness and liveness, with `httpGet` and `tcpSocket`.
//!
//! Timing and thresholds follow Kubernetes, including its defaults
//! (`initialDelaySeconds` 0, `periodSeconds` 10, `timeoutSeconds` 1, `successThreshold`
//! 1, `failureThreshold` 3). Readiness and liveness start once the startup probe (if any)
//! succeeded. The agent reaches the pod's address over the bridge. `httpGet` speaks plain
//! HTTP/1.1 (`scheme: HTTPS`, `exec` and `grpc` probes are reported as failing with a
//! message saying they are not supported here).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Timing and thresholds of one probe, defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Wait before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive successes that make the probe succeed.
    pub success_threshold: u32,
    /// Consecutive failures that make the probe fail.
    pub failure_threshold: u32,
}

fn positive(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl ProbeSettings {
    /// The settings of `probe`, with Kubernetes' defaults for what it leaves out.
    pub fn of(probe: &Probe) -> Self {
        let initial = probe
            .initial_delay_seconds
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        Self {
            initial_delay: Duration::from_secs(initial),
            period: Duration::from_secs(u64::from(positive(probe.period_seconds, 10))),
            timeout: Duration::from_secs(u64::from(positive(probe.timeout_seconds, 1))),
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

/// What one probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// An HTTP GET; success is a status in 200..400.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The `Host` header.
        host: String,
        /// Request path.
        path: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// A TCP connect.
    Tcp(SocketAddr),
    /// Something this agent cannot check; every check fails with this message.
    Unsupported(String),
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("container has no port named {name:?}")),
    }
}

/// The action of `probe` for `container`, which listens on `pod_ip`.
pub fn action(probe: &Probe, container: &Container, pod_ip: IpAddr) -> Action {
    let target = |host: Option<&String>, port: &IntOrString| -> Result<SocketAddr, String> {
        let ip = match host.filter(|h| !h.is_empty()) {
            Some(h) => h
                .parse::<IpAddr>()
                .map_err(|_| format!("probe host {h:?} is not an IP address"))?,
            None => pod_ip,
        };
        Ok(SocketAddr::new(ip, port_of(port, container)?))
    };
    if let Some(h) = &probe.http_get {
        if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Action::Unsupported(
                "HTTPS probes are not supported by the local node agent".into(),
            );
        }
        return match target(h.host.as_ref(), &h.port) {
            Ok(addr) => Action::Http {
                addr,
                host: addr.to_string(),
                path: h
                    .path
                    .clone()
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or_else(|| "/".into()),
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
            },
            Err(e) => Action::Unsupported(e),
        };
    }
    if let Some(t) = &probe.tcp_socket {
        return match target(t.host.as_ref(), &t.port) {
            Ok(addr) => Action::Tcp(addr),
            Err(e) => Action::Unsupported(e),
        };
    }
    if probe.exec.is_some() {
        return Action::Unsupported("exec probes are not supported by the local node agent".into());
    }
    if probe.grpc.is_some() {
        return Action::Unsupported("grpc probes are not supported by the local node agent".into());
    }
    Action::Unsupported("the probe has no handler".into())
}

/// Runs one check of `action` within `timeout`.
pub async fn check(action: &Action, timeout: Duration) -> Result<(), String> {
    match action {
        Action::Unsupported(why) => Err(why.clone()),
        Action::Tcp(addr) => match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: timeout after {timeout:?}")),
        },
        Action::Http {
            addr,
            host,
            path,
            headers,
        } => {
            let attempt = http_status(*addr, host, path, headers);
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
                Ok(Ok(code)) => Err(format!(
                    "HTTP probe failed with statuscode: {code} (GET http://{addr}{path})"
                )),
                Ok(Err(e)) => Err(format!("Get \"http://{addr}{path}\": {e}")),
                Err(_) => Err(format!(
                    "Get \"http://{addr}{path}\": timeout after {timeout:?}"
                )),
            }
        }
    }
}

async fn http_status(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/locus\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        let _ = write!(request, "{k}: {v}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
    })
}

/// The status code of an HTTP/1.x response head.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

/// Counts consecutive results and says when the probe's outcome flips.
#[derive(Clone, Debug)]
pub struct Tracker {
    settings: ProbeSettings,
    outcome: bool,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// A tracker whose outcome starts as `initial`.
    pub fn new(settings: ProbeSettings, initial: bool) -> Self {
        Self {
            settings,
            outcome: initial,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one check; returns the new outcome when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.outcome && self.successes >= self.settings.success_threshold {
                self.outcome = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.outcome && self.failures >= self.settings.failure_threshold {
                self.outcome = false;
                return Some(false);
            }
        }
        None
    }
}

/// What the probes of a running container report to its supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The container counts as started (startup probe passed or absent).
    Started,
    /// Readiness changed.
    Ready(bool),
    /// A startup or liveness probe failed: the container must be restarted.
    Failed(String),
}

/// Runs a container's probes until the receiver is dropped or a startup/liveness probe
/// fails.
pub async fn run(container: Container, pod_ip: IpAddr, tx: mpsc::UnboundedSender<ProbeEvent>) {
    if let Some(probe) = &container.startup_probe {
        let settings = ProbeSettings::of(probe);
        let action = action(probe, &container, pod_ip);
        tokio::time::sleep(settings.initial_delay).await;
        let mut failures = 0;
        loop {
            match check(&action, settings.timeout).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if failures >= settings.failure_threshold {
                        let _ = tx.send(ProbeEvent::Failed(format!("Startup probe failed: {e}")));
                        return;
                    }
                }
            }
            tokio::time::sleep(settings.period).await;
        }
    }
    if tx.send(ProbeEvent::Started).is_err() {
        return;
    }
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            let _ = tx.send(ProbeEvent::Ready(true));
            return std::future::pending::<()>().await;
        };
        let settings = ProbeSettings::of(probe);
        let action = action(probe, &container, pod_ip);
        let mut tracker = Tracker::new(settings, false);
        tokio::time::sleep(settings.initial_delay).await;
        loop {
            let result = check(&action, settings.timeout).await;
            if let Err(e) = &result {
                tracing::debug!(container = %container.name, "readiness probe failed: {e}");
            }
            if let Some(ready) = tracker.record(result.is_ok())
                && tx.send(ProbeEvent::Ready(ready)).is_err()
            {
                return;
            }
            tokio::time::sleep(settings.period).await;
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        let settings = ProbeSettings::of(probe);
        let action = action(probe, &container, pod_ip);
        let mut tracker = Tracker::new(settings, true);
        tokio::time::sleep(settings.initial_delay).await;
        loop {
            let result = check(&action, settings.timeout).await;
            let message = result.as_ref().err().cloned().unwrap_or_default();
            if tracker.record(result.is_ok()) == Some(false) {
                let _ = tx.send(ProbeEvent::Failed(format!(
                    "Liveness probe failed: {message}"
                )));
                return;
            }
            tokio::time::sleep(settings.period).await;
        }
    };
    tokio::select! {
        () = readiness => {}
        () = liveness => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, TCPSocketAction};

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let s = ProbeSettings::of(&Probe::default());
        assert_eq!(
            s,
            ProbeSettings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let s = ProbeSettings::of(&Probe {
            period_seconds: Some(2),
            failure_threshold: Some(0),
            initial_delay_seconds: Some(5),
            ..Probe::default()
        });
        assert_eq!(s.period, Duration::from_secs(2));
        assert_eq!(s.failure_threshold, 3);
        assert_eq!(s.initial_delay, Duration::from_secs(5));
    }

    fn container() -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    #[test]
    fn named_and_numbered_ports_resolve() {
        let ip: IpAddr = "10.213.1.5".parse().unwrap();
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("/healthz".into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        match action(&probe, &container(), ip) {
            Action::Http { addr, path, .. } => {
                assert_eq!(addr, "10.213.1.5:8080".parse().unwrap());
                assert_eq!(path, "/healthz");
            }
            other => panic!("{other:?}"),
        }
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(9000),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            action(&probe, &container(), ip),
            Action::Tcp("10.213.1.5:9000".parse().unwrap())
        );
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("grpc".into()),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        };
        assert!(
            matches!(action(&probe, &container(), ip), Action::Unsupported(m) if m.contains("grpc"))
        );
    }

    #[test]
    fn tracker_flips_after_thresholds() {
        let settings = ProbeSettings {
            success_threshold: 2,
            failure_threshold: 3,
            ..ProbeSettings::of(&Probe::default())
        };
        let mut t = Tracker::new(settings, false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success resets the failure count");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Busy\r\nx: y"), Some(503));
        assert_eq!(parse_status_line(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_checks_against_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for code in [200, 500] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let http = Action::Http {
            addr,
            host: addr.to_string(),
            path: "/healthz".into(),
            headers: vec![],
        };
        assert_eq!(check(&http, Duration::from_secs(2)).await, Ok(()));
        let err = check(&http, Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("500"), "{err}");
        server.await.unwrap();
        // Nothing listens there any more.
        assert!(
            check(&Action::Tcp(addr), Duration::from_secs(2))
                .await
                .is_err()
        );
    }
}
