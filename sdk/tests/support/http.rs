//! Pods over real HTTP: each an axum server on its own 127.0.0.x address
//! with the ownership layer, the session layer (handoff endpoints, driver)
//! and a counter application over a `SessionStore<u64, Db>`, each with its
//! own `StaticRingSource` and `MemoryProgressReporter`. Callers use the
//! client `Router` over reqwest.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use locus::driver::HANDOFF_HEADER;
use locus::handoff::{HandoffConfig, HandoffSecret};
use locus::progress::MemoryProgressReporter;
use locus::ring::{Pod, Ring};
use locus::server::session::{Member, StartReport};
use locus::store::{JsonCodec, Limits, SessionStore, StoreError, Versioned};
use locus::{
    OwnershipLayer, ReqwestClient, RouteError, Router, RouterLayer, StaticRingSource, headers,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};

use super::checker::Outcome;
use super::db::Db;
use super::operator::Fleet;

/// Response header of the counter application: the session's version.
pub const VERSION_HEADER: &str = "x-session-version";

/// The counter store of a pod.
pub type CounterStore = SessionStore<u64, Db>;

/// The shared secret of the test service.
pub fn secret() -> HandoffSecret {
    HandoffSecret::new("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0").unwrap()
}

#[derive(Clone)]
struct App {
    store: CounterStore,
    member: Member,
    hold: Arc<Semaphore>,
}

/// The session key of a request (empty without the header).
fn session_key(headers: &HeaderMap) -> Vec<u8> {
    headers
        .get(headers::SESSION)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The counter's answer: its value, with its version in [`VERSION_HEADER`].
fn answer(app: &App, result: Result<Versioned<u64>, StoreError>) -> axum::response::Response {
    match result {
        Ok(done) => (
            [(VERSION_HEADER, done.version.to_string())],
            done.value.to_string(),
        )
            .into_response(),
        Err(error) => app.member.error_response(&error).into_response(),
    }
}

/// Like `incr`, but holds the session's lock until the test releases a
/// permit of the pod's `hold` semaphore.
async fn hold(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    let gate = Arc::clone(&app.hold);
    let done = app
        .store
        .update_async(&session_key(&headers), |n| async move {
            // One permit per request: the test releases them one by one.
            gate.acquire().await.unwrap().forget();
            Ok::<_, std::convert::Infallible>((n + 1, n + 1))
        })
        .await
        .map(|done| done.unwrap_or_else(|never| match never {}));
    answer(&app, done)
}

async fn incr(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    let done = app
        .store
        .update(&session_key(&headers), |n| {
            *n += 1;
            *n
        })
        .await;
    answer(&app, done)
}

async fn read(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    let done = app.store.read(&session_key(&headers), |n| *n).await;
    answer(&app, done)
}

/// One running pod.
pub struct TestPod {
    pub info: Pod,
    pub source: StaticRingSource,
    pub member: Member,
    pub store: CounterStore,
    pub progress: MemoryProgressReporter,
    /// Permits for the `/hold` route.
    pub hold: Arc<Semaphore>,
    /// What `Member::start` did.
    pub started: StartReport,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

/// How pods are built.
#[derive(Clone)]
pub struct PodOptions {
    pub config: HandoffConfig,
    pub limits: Limits,
    pub snapshot_dir: Option<PathBuf>,
    /// How long a shutdown waits for the operator to retire the pod.
    pub coordination_wait: Duration,
}

/// A fleet of pods on loopback plus the callers' ring source.
pub struct HttpCluster {
    pub pods: Mutex<BTreeMap<String, TestPod>>,
    pub client_source: StaticRingSource,
    pub db: Db,
    pub options: PodOptions,
    router: Router<ReqwestClient>,
}

impl HttpCluster {
    pub fn new(options: PodOptions) -> Self {
        let client_source = StaticRingSource::new();
        let router = RouterLayer::new(&client_source)
            .timeout(Duration::from_secs(15))
            .layer(ReqwestClient::new());
        Self {
            pods: Mutex::new(BTreeMap::new()),
            client_source,
            db: Db::default(),
            options,
            router,
        }
    }

    /// Starts pod `name` on 127.0.0.`host` (port `port`, 0 for any) and
    /// gives it the callers' latest ring.
    pub async fn start_pod(&self, name: &str, host: u8, port: u16) -> Pod {
        let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, host), port))
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let source = StaticRingSource::new();
        if let Some(ring) = locus::RingSource::watch(&self.client_source).latest() {
            source.publish((*ring).clone()).unwrap();
        }
        let store = SessionStore::builder(JsonCodec, |_: &u64| 8)
            .limits(self.options.limits.clone())
            .persistence(self.db.clone())
            .build()
            .unwrap();
        let progress = MemoryProgressReporter::new();
        let mut builder = Member::builder(name, &source, store.clone())
            .secret(secret())
            .progress(progress.clone())
            .config(self.options.config.clone())
            .coordination_wait(self.options.coordination_wait);
        if let Some(dir) = &self.options.snapshot_dir {
            builder = builder.snapshot_dir(dir.join(name));
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let member = builder.build().unwrap();
        let started = member.start().await;
        let hold_gate = Arc::new(Semaphore::new(0));
        let ownership = OwnershipLayer::builder(name, &source).build().unwrap();
        let app = axum::Router::new()
            .route("/incr", axum::routing::post(incr))
            .route("/get", axum::routing::get(read))
            .route("/hold", axum::routing::post(hold))
            .with_state(App {
                store: store.clone(),
                member: member.clone(),
                hold: Arc::clone(&hold_gate),
            })
            .layer(member.layer())
            .layer(ownership);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let info = Pod {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            address,
        };
        self.pods.lock().unwrap().insert(
            name.to_owned(),
            TestPod {
                info: info.clone(),
                source,
                member,
                store,
                progress,
                hold: hold_gate,
                started,
                stop: Some(stop),
                server,
            },
        );
        info
    }

    /// Stops the server of pod `name` (in-flight requests finish) and
    /// forgets the pod.
    pub async fn stop_pod(&self, name: &str) -> TestPod {
        let mut pod = self.pods.lock().unwrap().remove(name).unwrap();
        if let Some(stop) = pod.stop.take() {
            let _ = stop.send(());
        }
        let server = std::mem::replace(&mut pod.server, tokio::spawn(async {}));
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("server stops")
            .unwrap();
        pod
    }

    /// A member of a running pod.
    pub fn member(&self, name: &str) -> Member {
        self.pods.lock().unwrap()[name].member.clone()
    }

    /// Increments `key` through the callers' router.
    pub async fn incr(&self, key: &[u8]) -> Outcome {
        self.call("/incr", key).await
    }

    /// Sends a POST to `path` for session `key` through the callers' router.
    pub async fn call(&self, path: &str, key: &[u8]) -> Outcome {
        let request = Request::post(path)
            .header(headers::SESSION, key)
            .body(String::new())
            .unwrap();
        outcome(self.router.clone().oneshot(request).await).await
    }

    /// Reads `key` through the callers' router: (version, value).
    pub async fn read(&self, key: &[u8]) -> (u64, u64) {
        for _ in 0..100 {
            let request = Request::get("/get")
                .header(headers::SESSION, key)
                .body(String::new())
                .unwrap();
            if let Outcome::Acked { version, value, .. } =
                outcome(self.router.clone().oneshot(request).await).await
            {
                return (version, value);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot read {}", String::from_utf8_lossy(key));
    }
}

/// Classifies a routed request's result (over any client's body).
pub async fn outcome<B: http_body::Body>(result: Result<http::Response<B>, RouteError>) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(RouteError::Timeout { .. } | RouteError::Upstream { .. }) => {
            return Outcome::Unknown("no answer".into());
        }
        Err(_) => return Outcome::Refused(0),
    };
    let status = response.status();
    if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT {
        return Outcome::Unknown(format!("gateway {status}"));
    }
    if status != StatusCode::OK {
        return Outcome::Refused(status.as_u16());
    }
    // Headers read before the body is awaited: no borrow of the (maybe not
    // `Sync`) body lives across the await.
    let (parts, body) = response.into_parts();
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let version = text(VERSION_HEADER).and_then(|v| v.parse().ok());
    let pod = text(headers::POD.as_str()).unwrap_or_default();
    let handoff = text(HANDOFF_HEADER.as_str());
    drop(parts);
    let Ok(body) = body.collect().await else {
        return Outcome::Unknown("body cut".into());
    };
    let value = String::from_utf8_lossy(&body.to_bytes()).parse().ok();
    match (version, value) {
        (Some(version), Some(value)) => Outcome::Acked {
            version,
            value,
            pod,
            handoff,
        },
        _ => Outcome::Unknown("malformed answer".into()),
    }
}

impl Fleet for HttpCluster {
    async fn publish(&self, ring: &Ring) {
        let sources: Vec<StaticRingSource> = self
            .pods
            .lock()
            .unwrap()
            .values()
            .map(|p| p.source.clone())
            .collect();
        for source in sources {
            let _ = source.publish(ring.clone());
        }
        let _ = self.client_source.publish(ring.clone());
    }

    fn progress(&self, pod: &str) -> Option<MemoryProgressReporter> {
        self.pods
            .lock()
            .unwrap()
            .get(pod)
            .map(|p| p.progress.clone())
    }
}

/// The address of a host byte, for naming.
pub fn host(address: SocketAddr) -> u8 {
    match address.ip() {
        std::net::IpAddr::V4(ip) => ip.octets()[3],
        std::net::IpAddr::V6(_) => 0,
    }
}
