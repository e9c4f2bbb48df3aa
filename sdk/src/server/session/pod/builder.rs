//! [`MemberPodBuilder`]: what a member pod needs, read from its environment
//! or given, checked in one place ([`MemberPodBuilder::build`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use super::env::PodEnv;
use super::{MemberLayer, MemberPod, PodError, Readiness};
use crate::client::SessionKey;
use crate::handoff::{HandoffConfig, HandoffSecret, SecretError};
use crate::load::DEFAULT_LOAD_REPORT_INTERVAL;
use crate::metrics::Metrics;
use crate::progress::{KubeProgressReporter, ProgressReporter};
use crate::ring::RingDocument;
use crate::server::ownership::{Mode, OwnershipLayer};
use crate::server::session::{
    DEFAULT_COORDINATION_WAIT, DEFAULT_INTENT_TIMEOUT, Member, MemberBuilder, ShutdownIntentSource,
};
use crate::source::{KubeRingSource, RingSource};
use crate::store::{Persistence, SessionStore};

/// Default of [`MemberPodBuilder::shutdown_timeout`]: under the default
/// 30 s termination grace period of a pod.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// Paths that pass the ownership check by default: the probes and the
/// metrics page carry no session key.
pub const DEFAULT_PROBE_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/metrics"];

/// A change to the member's options made at build time.
type Tweak = Box<dyn FnOnce(MemberBuilder) -> MemberBuilder + Send>;

/// Builds a member over the store, for a pod and its ring.
type MemberOver = Box<dyn FnOnce(String, &dyn RingSource) -> MemberBuilder + Send>;

/// The parts of the session store the pod needs, its type erased.
struct StoreParts {
    /// Builds the member over the store.
    member: MemberOver,
    /// Registers the store's metrics.
    register: Box<dyn FnOnce(&mut Registry) + Send>,
    /// Starts passivation.
    passivate: Box<dyn FnOnce() -> JoinHandle<()> + Send>,
}

/// Where the ring comes from.
enum RingFrom {
    /// The ring `ConfigMap` of the service (from the environment).
    ConfigMap,
    /// A source the caller opened (kept alive by the pod).
    Given(Box<dyn RingSource + Send + Sync>),
}

/// Where the handoff secret comes from.
enum SecretFrom {
    File(PathBuf),
    Value(HandoffSecret),
}

/// Where progress goes.
enum ProgressTo {
    /// The pod's annotations when the ring comes from the `ConfigMap`,
    /// else nowhere.
    Default,
    /// Nowhere.
    Nowhere,
    /// The caller's reporter.
    Given(Tweak),
}

/// Options of a [`MemberPod`]: see [`MemberPod::from_env`]. Each setting the
/// environment gives can be overridden here; [`build`](Self::build) checks
/// them all before anything starts.
pub struct MemberPodBuilder {
    store: StoreParts,
    env: PodEnv,
    ring: RingFrom,
    kube_client: Option<kube::Client>,
    secret: Option<SecretFrom>,
    progress: ProgressTo,
    intent: Option<Tweak>,
    handoff: HandoffConfig,
    key: SessionKey,
    mode: Mode,
    max_key_bytes: usize,
    probe_paths: Vec<String>,
    metrics: Option<Metrics>,
    coordination_wait: Duration,
    intent_timeout: Duration,
    shutdown_timeout: Duration,
    load_report_interval: Option<Duration>,
}

impl fmt::Debug for MemberPodBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberPodBuilder")
            .field("env", &self.env)
            .field("mode", &self.mode)
            .field("probe_paths", &self.probe_paths)
            .field("coordination_wait", &self.coordination_wait)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("load_report_interval", &self.load_report_interval)
            .finish_non_exhaustive()
    }
}

/// The settings [`MemberPodBuilder::check`] found usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checked {
    pub(super) pod: String,
    /// Namespace and service of the ring `ConfigMap`, when the ring comes
    /// from it.
    pub(super) config_map: Option<(String, String)>,
    /// Time between load reports (zero: none).
    pub(super) load_report_interval: Duration,
}

impl MemberPodBuilder {
    pub(super) fn new<V, P>(store: SessionStore<V, P>, env: PodEnv) -> Self
    where
        V: Clone + Send + Sync + 'static,
        P: Persistence<V>,
    {
        let for_member = store.clone();
        let for_metrics = store.clone();
        let store = StoreParts {
            member: Box::new(move |pod, ring| Member::builder(pod, ring.watch(), for_member)),
            register: Box::new(move |registry| for_metrics.register_metrics(registry)),
            passivate: Box::new(move || store.spawn_passivation()),
        };
        let secret = env.secret_file.clone().map(SecretFrom::File);
        Self {
            store,
            env,
            ring: RingFrom::ConfigMap,
            kube_client: None,
            secret,
            progress: ProgressTo::Default,
            intent: None,
            handoff: HandoffConfig::default(),
            key: SessionKey::default(),
            mode: Mode::default(),
            max_key_bytes: crate::DEFAULT_MAX_KEY_BYTES,
            probe_paths: DEFAULT_PROBE_PATHS.map(str::to_owned).to_vec(),
            metrics: None,
            coordination_wait: DEFAULT_COORDINATION_WAIT,
            intent_timeout: DEFAULT_INTENT_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            load_report_interval: None,
        }
    }

    /// This pod's name, as the ring names it (default: `POD_NAME`).
    #[must_use]
    pub fn pod_name(mut self, pod: impl Into<String>) -> Self {
        self.env.pod = Some(pod.into());
        self
    }

    /// The ring `ConfigMap` of `service` in `namespace` (default:
    /// `POD_NAMESPACE` and `LOCUS_RING_CONFIGMAP` / `LOCUS_SERVICE`).
    #[must_use]
    pub fn kube_ring(mut self, namespace: impl Into<String>, service: impl Into<String>) -> Self {
        self.env.namespace = Some(namespace.into());
        self.env.service = Some(service.into());
        self.env.ring_config_map = None;
        self.ring = RingFrom::ConfigMap;
        self
    }

    /// Another ring source (a file, a static ring for tests); the pod keeps
    /// it open. Progress then goes nowhere unless [`progress`](Self::progress)
    /// says otherwise.
    #[must_use]
    pub fn ring_source(mut self, source: impl RingSource + Send + Sync + 'static) -> Self {
        self.ring = RingFrom::Given(Box::new(source));
        self
    }

    /// The Kubernetes client for the ring `ConfigMap` and the progress
    /// reports (default: inferred — in-cluster credentials, then
    /// `$KUBECONFIG`).
    #[must_use]
    pub fn kube_client(mut self, client: kube::Client) -> Self {
        self.kube_client = Some(client);
        self
    }

    /// The handoff secret itself (default: read from
    /// `LOCUS_HANDOFF_SECRET_FILE`).
    #[must_use]
    pub fn secret(mut self, secret: HandoffSecret) -> Self {
        self.secret = Some(SecretFrom::Value(secret));
        self
    }

    /// The file holding the handoff secret.
    #[must_use]
    pub fn secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret = Some(SecretFrom::File(path.into()));
        self
    }

    /// Where progress reports go (default: the pod's own annotations when
    /// the ring comes from the `ConfigMap`, else nowhere).
    #[must_use]
    pub fn progress(mut self, reporter: impl ProgressReporter) -> Self {
        self.progress = ProgressTo::Given(Box::new(move |member| member.progress(reporter)));
        self
    }

    /// No progress reports (nobody waits for them: a ring played by hand).
    #[must_use]
    pub fn no_progress(mut self) -> Self {
        self.progress = ProgressTo::Nowhere;
        self
    }

    /// Fast restarts through `dir` (default: `LOCUS_SNAPSHOT_DIR`, if set).
    #[must_use]
    pub fn snapshot_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.env.snapshot_dir = Some(dir.into());
        self
    }

    /// Where the shutdown learns why the process stops; see
    /// [`MemberBuilder::shutdown_intent`] (default: the pod's own Pod, with
    /// the default progress reports).
    #[must_use]
    pub fn shutdown_intent(mut self, source: impl ShutdownIntentSource) -> Self {
        self.intent = Some(Box::new(move |member| member.shutdown_intent(source)));
        self
    }

    /// See [`MemberBuilder::intent_timeout`].
    #[must_use]
    pub fn intent_timeout(mut self, timeout: Duration) -> Self {
        self.intent_timeout = timeout;
        self
    }

    /// See [`MemberBuilder::coordination_wait`] (default 5 s).
    #[must_use]
    pub fn coordination_wait(mut self, wait: Duration) -> Self {
        self.coordination_wait = wait;
        self
    }

    /// Longest shutdown: the pod's termination grace period minus a margin
    /// for the HTTP server to stop (default 25 s, for the default 30 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Time between two [load reports](crate::load) of the pod (default:
    /// `LOCUS_LOAD_REPORT_INTERVAL`, else 15 s). Zero: none (the counters
    /// and their metrics stay). They go where progress goes: the pod's
    /// annotation [`SHARD_LOAD`](crate::ring::annotations::SHARD_LOAD) by
    /// default.
    #[must_use]
    pub fn load_report_interval(mut self, interval: Duration) -> Self {
        self.load_report_interval = Some(interval);
        self
    }

    /// The handoff protocol's timings and bounds.
    #[must_use]
    pub fn handoff_config(mut self, config: HandoffConfig) -> Self {
        self.handoff = config;
        self
    }

    /// Where the session key comes from, for the ownership check and the
    /// session layer alike (must match the callers' routers; default: the
    /// [`x-locus-session`](crate::headers::SESSION) header).
    #[must_use]
    pub fn session_key(mut self, key: SessionKey) -> Self {
        self.key = key;
        self
    }

    /// Forward requests for keys owned elsewhere (default), or answer 421.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Longest session key (413 past it; default 256 bytes).
    #[must_use]
    pub fn max_key_bytes(mut self, max: usize) -> Self {
        self.max_key_bytes = max;
        self
    }

    /// The paths that pass the ownership check (exact matches; default
    /// [`DEFAULT_PROBE_PATHS`]). Requests on them carry no session key.
    #[must_use]
    pub fn probe_paths<I: IntoIterator<Item = S>, S: Into<String>>(mut self, paths: I) -> Self {
        self.probe_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The registry everything registers into, once (default: a new one);
    /// the service may register its own metrics there too.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks every setting (nothing runs): what [`build`](Self::build)
    /// does first.
    pub(super) fn check(&self) -> Result<Checked, PodError> {
        let pod = self.env.pod.clone().ok_or(PodError::Missing {
            what: "the pod name",
            hint: "POD_NAME from the downward API, or MemberPodBuilder::pod_name",
        })?;
        check_pod_name(&pod)?;
        let config_map = match self.ring {
            RingFrom::Given(_) => None,
            RingFrom::ConfigMap => Some(self.config_map()?),
        };
        if self.secret.is_none() {
            return Err(PodError::Missing {
                what: "the handoff secret",
                hint: "LOCUS_HANDOFF_SECRET_FILE, or MemberPodBuilder::secret",
            });
        }
        if self.shutdown_timeout.is_zero() {
            return Err(invalid("shutdown timeout", "must be more than zero"));
        }
        if self.coordination_wait >= self.shutdown_timeout {
            return Err(invalid(
                "coordination wait",
                format!(
                    "{:?} leaves no time of the {:?} shutdown to hand the sessions over",
                    self.coordination_wait, self.shutdown_timeout
                ),
            ));
        }
        if self.max_key_bytes == 0 {
            return Err(invalid("largest session key", "must be at least one byte"));
        }
        if let Some(path) = self.probe_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(invalid(
                "probe path",
                format!("{path:?} does not start with /"),
            ));
        }
        if let Some(path) = self
            .probe_paths
            .iter()
            .find(|p| p.starts_with(crate::RESERVED_PATH_PREFIX))
        {
            return Err(invalid(
                "probe path",
                format!("{path:?} is under the handoff endpoints' /_locus/"),
            ));
        }
        if self
            .env
            .snapshot_dir
            .as_ref()
            .is_some_and(|d| d.is_relative())
        {
            return Err(invalid(
                "snapshot directory",
                "must be an absolute path (the pod's memory volume)",
            ));
        }
        let load_report_interval = match (self.load_report_interval, &self.env.load_report_interval)
        {
            (Some(interval), _) => interval,
            (None, Some(text)) => super::env::parse_duration(text).ok_or_else(|| {
                invalid(
                    "load report interval",
                    format!(
                        "{text:?} is not a duration (15s, 500ms, 1m, or whole seconds) in {}",
                        super::env::LOAD_REPORT_INTERVAL_ENV
                    ),
                )
            })?,
            (None, None) => DEFAULT_LOAD_REPORT_INTERVAL,
        };
        Ok(Checked {
            pod,
            config_map,
            load_report_interval,
        })
    }

    /// Namespace and service of the ring `ConfigMap`.
    fn config_map(&self) -> Result<(String, String), PodError> {
        let namespace = self.env.namespace.clone().ok_or(PodError::Missing {
            what: "the namespace",
            hint: "POD_NAMESPACE from the downward API, MemberPodBuilder::kube_ring, or \
                   MemberPodBuilder::ring_source for a ring outside Kubernetes",
        })?;
        let service = match (&self.env.service, &self.env.ring_config_map) {
            (Some(service), Some(config_map)) => {
                let expected = RingDocument::config_map_name(service);
                if expected != *config_map {
                    return Err(invalid(
                        "ring ConfigMap",
                        format!(
                            "the ring of service {service:?} is {expected:?}, not {config_map:?}"
                        ),
                    ));
                }
                service.clone()
            }
            (Some(service), None) => service.clone(),
            (None, Some(config_map)) => config_map
                .strip_suffix("-ring")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "ring ConfigMap",
                        format!("{config_map:?} is not named <service>-ring"),
                    )
                })?
                .to_owned(),
            (None, None) => {
                return Err(PodError::Missing {
                    what: "the ring source",
                    hint: "LOCUS_RING_CONFIGMAP (set by the operator), \
                           MemberPodBuilder::kube_ring or MemberPodBuilder::ring_source",
                });
            }
        };
        Ok((namespace, service))
    }

    /// Checks the settings, opens the ring source, reads the secret, builds
    /// the member and the layer, registers every metric once, starts
    /// passivation, restores a snapshot if there is one and starts the
    /// transition driver. Call it before serving.
    pub async fn build(self) -> Result<MemberPod, PodError> {
        let Checked {
            pod,
            config_map,
            load_report_interval,
        } = self.check()?;
        let metrics = self.metrics.unwrap_or_default();
        let client = match (&config_map, self.kube_client) {
            (Some(_), Some(client)) => Some(client),
            (Some(_), None) => Some(
                kube::Client::try_default()
                    .await
                    .map_err(PodError::KubeClient)?,
            ),
            (None, client) => client,
        };
        let secret = match self.secret {
            Some(SecretFrom::Value(secret)) => secret,
            Some(SecretFrom::File(path)) => read_secret(path).await?,
            None => unreachable_secret()?,
        };
        // The ring source, and what readiness asks the API server.
        let (source, probe): (Box<dyn RingSource + Send + Sync>, _) =
            match (self.ring, &config_map, &client) {
                (RingFrom::Given(source), _, _) => (source, None),
                (RingFrom::ConfigMap, Some((namespace, service)), Some(client)) => {
                    let source = KubeRingSource::builder(client.clone(), namespace, service)
                        .metrics(metrics.clone())
                        .spawn();
                    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
                    let name = RingDocument::config_map_name(service);
                    (Box::new(source), Some((config_maps, name)))
                }
                (RingFrom::ConfigMap, _, _) => {
                    return Err(PodError::Missing {
                        what: "the ring source",
                        hint: "MemberPodBuilder::kube_ring or MemberPodBuilder::ring_source",
                    });
                }
            };
        let ring = source.watch();
        let mut member = (self.store.member)(pod.clone(), &ring)
            .secret(secret)
            .config(self.handoff.clone())
            .session_key(self.key.clone())
            .coordination_wait(self.coordination_wait)
            .intent_timeout(self.intent_timeout)
            .load_report_interval(load_report_interval);
        if let Some(dir) = self.env.snapshot_dir {
            member = member.snapshot_dir(dir);
        }
        member = match (self.progress, &config_map, &client) {
            (ProgressTo::Given(progress), _, _) => progress(member),
            (ProgressTo::Default, Some((namespace, _)), Some(client)) => {
                member.progress(KubeProgressReporter::new(client.clone(), namespace, &pod))
            }
            (ProgressTo::Default | ProgressTo::Nowhere, _, _) => member,
        };
        if let Some(intent) = self.intent {
            member = intent(member);
        }
        let member = member.build()?;
        let mut ownership = OwnershipLayer::builder(pod.clone(), &ring)
            .mode(self.mode)
            .session_key(self.key)
            .max_key_bytes(self.max_key_bytes)
            .retry_after(self.handoff.retry_after)
            .metrics(metrics.clone());
        for path in self.probe_paths {
            ownership = ownership.pass_through_path(path);
        }
        let ownership = ownership.build()?;
        // Every metric of the pod, registered once.
        let register = self.store.register;
        metrics.register_with(|registry| {
            let locus = registry.sub_registry_with_prefix("locus");
            register(locus);
            member.register_metrics(locus);
        });
        let passivation = (self.store.passivate)();
        let started = member.start().await;
        if let Some(restored) = &started.snapshot {
            tracing::info!(%pod, ?restored, "snapshot restored");
        }
        if let Some(ignored) = &started.snapshot_ignored {
            tracing::warn!(%pod, %ignored, "snapshot found but not restored");
        }
        tracing::info!(%pod, ring_version = ?ring.version(), "member pod started");
        Ok(MemberPod {
            layer: MemberLayer::new(ownership, member.layer()),
            readiness: Readiness::new(ring.clone(), probe),
            member,
            metrics,
            ring,
            _source: source,
            passivation,
            started,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// The secret's absence is refused by [`MemberPodBuilder::check`].
fn unreachable_secret() -> Result<HandoffSecret, PodError> {
    Err(PodError::Missing {
        what: "the handoff secret",
        hint: "LOCUS_HANDOFF_SECRET_FILE, or MemberPodBuilder::secret",
    })
}

fn invalid(what: &'static str, reason: impl Into<String>) -> PodError {
    PodError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// A pod name is a DNS subdomain (RFC 1123): what the ring and every header
/// carry.
fn check_pod_name(pod: &str) -> Result<(), PodError> {
    let valid = !pod.is_empty()
        && pod.len() <= 253
        && pod
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && pod.starts_with(|c: char| c.is_ascii_alphanumeric())
        && pod.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid && HeaderValue::from_str(pod).is_ok() {
        Ok(())
    } else {
        Err(invalid(
            "pod name",
            format!("{pod:?} is not a DNS subdomain name (lower-case letters, digits, '-', '.')"),
        ))
    }
}

/// Reads the secret file without blocking the runtime.
async fn read_secret(path: PathBuf) -> Result<HandoffSecret, PodError> {
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(source) => return Err(SecretError::Read { path, source }.into()),
    };
    Ok(HandoffSecret::new(bytes.trim_ascii())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JsonCodec;

    fn store() -> SessionStore<String> {
        SessionStore::builder(JsonCodec, String::len)
            .build()
            .unwrap()
    }

    /// A builder over what the operator sets in a pod.
    fn in_a_pod(extra: &[(&'static str, &'static str)]) -> MemberPodBuilder {
        let mut pairs = vec![
            ("POD_NAME", "carts-0-x7k2p"),
            ("POD_NAMESPACE", "shop"),
            ("LOCUS_RING_CONFIGMAP", "carts-ring"),
            ("LOCUS_HANDOFF_SECRET_FILE", "/var/run/locus/handoff/key"),
        ];
        pairs.extend_from_slice(extra);
        MemberPod::from_lookup(store(), move |name| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn refused(builder: &MemberPodBuilder) -> String {
        builder.check().unwrap_err().to_string()
    }

    #[test]
    fn the_operator_environment_is_enough() {
        let checked = in_a_pod(&[]).check().unwrap();
        assert_eq!(
            checked,
            Checked {
                pod: "carts-0-x7k2p".into(),
                config_map: Some(("shop".into(), "carts".into())),
                load_report_interval: DEFAULT_LOAD_REPORT_INTERVAL,
            }
        );
        let checked = in_a_pod(&[("LOCUS_SERVICE", "carts")]).check().unwrap();
        assert_eq!(checked.config_map, Some(("shop".into(), "carts".into())));
    }

    #[test]
    fn each_missing_setting_is_named() {
        let refused_without = |var: &'static str| refused(&in_a_pod(&[(var, "")]));
        assert!(refused_without("POD_NAME").contains("pod name"));
        assert!(refused_without("POD_NAMESPACE").contains("namespace"));
        assert!(refused_without("LOCUS_RING_CONFIGMAP").contains("ring source"));
        assert!(refused_without("LOCUS_HANDOFF_SECRET_FILE").contains("handoff secret"));
    }

    #[test]
    fn overrides_win_over_the_environment() {
        let checked = in_a_pod(&[])
            .pod_name("carts-1-abcde")
            .kube_ring("other", "baskets")
            .check()
            .unwrap();
        assert_eq!(checked.pod, "carts-1-abcde");
        assert_eq!(checked.config_map, Some(("other".into(), "baskets".into())));
        // A ring source of the caller's: no namespace needed.
        let checked = MemberPod::from_lookup(store(), |_| None)
            .pod_name("p-0")
            .ring_source(crate::StaticRingSource::new())
            .secret(HandoffSecret::new("a-test-secret-of-some-length").unwrap())
            .check()
            .unwrap();
        assert_eq!(checked.config_map, None);
    }

    #[test]
    fn the_load_report_interval_comes_from_the_environment_or_the_builder() {
        let checked = in_a_pod(&[("LOCUS_LOAD_REPORT_INTERVAL", "3s")])
            .check()
            .unwrap();
        assert_eq!(checked.load_report_interval, Duration::from_secs(3));
        let checked = in_a_pod(&[("LOCUS_LOAD_REPORT_INTERVAL", "3s")])
            .load_report_interval(Duration::ZERO)
            .check()
            .unwrap();
        assert_eq!(checked.load_report_interval, Duration::ZERO);
    }

    #[test]
    fn bad_settings_are_refused_before_anything_starts() {
        let cases: Vec<(MemberPodBuilder, &str)> = vec![
            (in_a_pod(&[("POD_NAME", "Carts_0")]), "pod name"),
            (in_a_pod(&[("POD_NAME", "-carts")]), "pod name"),
            (
                in_a_pod(&[("LOCUS_RING_CONFIGMAP", "carts")]),
                "<service>-ring",
            ),
            (
                in_a_pod(&[("LOCUS_SERVICE", "baskets")]),
                "the ring of service \"baskets\"",
            ),
            (
                in_a_pod(&[]).shutdown_timeout(Duration::ZERO),
                "shutdown timeout",
            ),
            (
                in_a_pod(&[])
                    .coordination_wait(Duration::from_secs(30))
                    .shutdown_timeout(Duration::from_secs(25)),
                "coordination wait",
            ),
            (in_a_pod(&[]).max_key_bytes(0), "largest session key"),
            (in_a_pod(&[]).probe_paths(["healthz"]), "probe path"),
            (in_a_pod(&[]).probe_paths(["/_locus/x"]), "probe path"),
            (
                in_a_pod(&[("LOCUS_SNAPSHOT_DIR", "snap")]),
                "snapshot directory",
            ),
            (
                in_a_pod(&[("LOCUS_LOAD_REPORT_INTERVAL", "soon")]),
                "load report interval",
            ),
        ];
        for (builder, expected) in cases {
            let message = refused(&builder);
            assert!(
                message.contains(expected),
                "{message:?} should name {expected:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreadable_secret_file_is_a_typed_error() {
        let error = MemberPod::from_lookup(store(), |_| None)
            .pod_name("p-0")
            .ring_source(crate::StaticRingSource::new())
            .secret_file("/nonexistent/locus/handoff/key")
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(error, PodError::Secret(SecretError::Read { .. })),
            "{error:?}"
        );
    }
}
