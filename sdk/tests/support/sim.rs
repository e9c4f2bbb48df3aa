//! The simulated cluster: the real pod stack (ownership layer, session layer
//! with the handoff endpoints and the transition driver, the list
//! application of `http.rs` over a store backed by the shared persistence)
//! and the real client router, connected by an in-memory network instead of
//! sockets, on tokio's paused clock.
//!
//! The network delays every message by a seeded random time (so messages
//! overtake each other), can *pause* a pod (nothing reaches it or leaves it
//! until it resumes: messages, rings, its persistence calls and its progress
//! reports; its own timers keep running, and what they do reaches the world
//! only on resume, as a stopped process's expired timers act on SIGCONT), can *partition* two pods from each
//! other (their calls to each other are refused, as an iptables REJECT
//! does, while callers and the ring still reach both) and can *kill* one
//! (its tasks stop, new connections are refused, calls in progress and
//! bodies being streamed are cut). A pod can also *stop* after its graceful
//! shutdown (`Member::shutdown`): it is removed the same way, but not
//! recorded as a crash, so anything it lost counts as a lost write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use locus::client::RouterBody;
use locus::handoff::{HandoffBody, HandoffConfig, HandoffSecret};
use locus::internal::{Transport, TransportError};
use locus::progress::{MemoryProgressReporter, Progress, ProgressError, ProgressReporter};
use locus::ring::{Pod, Ring};
use locus::server::session::{Member, ShutdownReport};
use locus::store::{JsonCodec, Limits, SessionStore};
use locus::{BoxError, Mode, OwnershipLayer, Router, RouterLayer, StaticRingSource, headers};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use super::checker::{Crash, Outcome};
use super::db::{Db, Gate};
use super::http::{self as app, Listing, listing, outcome};
use super::load::Rng;
use super::operator::Fleet;

type PodService = BoxCloneService<Request<HandoffBody>, Response<HandoffBody>, Infallible>;

/// `HandoffBody` spelled with its `'static` error bound, for closure
/// parameters (where an elided trait-object lifetime would be generic).
type StaticBody = http_body_util::combinators::UnsyncBoxBody<
    Bytes,
    Box<dyn std::error::Error + Send + Sync + 'static>,
>;

fn boxed<B>(body: B) -> HandoffBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn text(status: StatusCode, body: String) -> Response<HandoffBody> {
    let mut response = Response::new(boxed(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
}

/// Delays and faults of the network.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// Largest one-way delay of a message.
    pub max_delay: Duration,
    /// Largest delay of a ring reaching a pod or the callers.
    pub max_ring_delay: Duration,
}

struct Endpoint {
    name: String,
    service: PodService,
    killed: watch::Receiver<bool>,
}

struct NetInner {
    rng: Rng,
    endpoints: HashMap<SocketAddr, Endpoint>,
    paused: HashMap<String, Instant>,
    /// Pod pairs (in name order) cut from each other, until when.
    cut: HashMap<(String, String), Instant>,
}

/// The in-memory network; clones share it.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Mutex<NetInner>>,
    config: NetConfig,
}

/// A pod's progress reporter: reports wait while the pod is paused.
struct GatedReporter {
    inner: MemoryProgressReporter,
    net: Net,
    pod: String,
}

impl ProgressReporter for GatedReporter {
    fn report<'a>(&'a self, progress: &'a Progress) -> BoxFuture<'a, Result<(), ProgressError>> {
        Box::pin(async move {
            self.net.unpaused(&self.pod).await;
            self.inner.report(progress).await
        })
    }
}

/// A body that fails once its pod is killed.
struct Cut {
    inner: HandoffBody,
    killed: watch::Receiver<bool>,
}

impl Body for Cut {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if *self.killed.borrow() {
            return Poll::Ready(Some(Err("connection reset: the pod died".into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}

impl Net {
    pub fn new(seed: u64, config: NetConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(NetInner {
                rng: Rng::new(seed),
                endpoints: HashMap::new(),
                paused: HashMap::new(),
                cut: HashMap::new(),
            })),
            config,
        }
    }

    fn random(&self, max: Duration) -> Duration {
        let max = u64::try_from(max.as_micros()).unwrap().max(1);
        Duration::from_micros(self.inner.lock().unwrap().rng.below(max + 1))
    }

    /// Waits while pod `name` is paused.
    async fn unpaused(&self, name: &str) {
        loop {
            let until = self.inner.lock().unwrap().paused.get(name).copied();
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// How long the application works on a request before touching the
    /// store: mostly little, sometimes long, so requests admitted under an
    /// old ring reach the store after the ring changed (stragglers).
    fn handler_delay(&self) -> Duration {
        let mut inner = self.inner.lock().unwrap();
        if inner.rng.below(10) == 0 {
            Duration::from_millis(inner.rng.below(400))
        } else {
            Duration::from_millis(inner.rng.below(5))
        }
    }

    /// Pauses pod `name` for `duration`.
    pub fn pause(&self, name: &str, duration: Duration) {
        self.inner
            .lock()
            .unwrap()
            .paused
            .insert(name.to_owned(), Instant::now() + duration);
    }

    /// Cuts pods `a` and `b` from each other for `duration`.
    pub fn partition(&self, a: &str, b: &str, duration: Duration) {
        self.inner
            .lock()
            .unwrap()
            .cut
            .insert(pair(a, b), Instant::now() + duration);
    }

    /// True while pods `a` and `b` are cut from each other.
    fn is_cut(&self, a: &str, b: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        inner
            .cut
            .get(&pair(a, b))
            .is_some_and(|until| *until > Instant::now())
    }

    /// Delivers `request` to the pod at `to`, from pod `from` (for pauses).
    async fn deliver(
        &self,
        from: Option<&str>,
        to: SocketAddr,
        request: Request<HandoffBody>,
    ) -> Result<Response<HandoffBody>, TransportError> {
        if let Some(from) = from {
            self.unpaused(from).await;
        }
        tokio::time::sleep(self.random(self.config.max_delay)).await;
        let (name, service, mut killed) = {
            let inner = self.inner.lock().unwrap();
            let Some(endpoint) = inner.endpoints.get(&to) else {
                return Err(TransportError::Unreachable("no such address".into()));
            };
            (
                endpoint.name.clone(),
                endpoint.service.clone(),
                endpoint.killed.clone(),
            )
        };
        self.unpaused(&name).await;
        if *killed.borrow() || from.is_some_and(|from| self.is_cut(from, &name)) {
            return Err(TransportError::Unreachable("connection refused".into()));
        }
        // `ready` + `call` (not `oneshot`): the boxed future keeps the
        // compiler's `Send` check of this async block simple.
        let mut service = service;
        let call = match service.ready().await {
            Ok(service) => service.call(request),
            Err(never) => match never {},
        };
        let response = tokio::select! {
            response = call => response.unwrap_or_else(|never| match never {}),
            _ = killed.wait_for(|k| *k) => {
                return Err(TransportError::Failed("connection reset: the pod died".into()));
            }
        };
        self.unpaused(&name).await;
        tokio::time::sleep(self.random(self.config.max_delay)).await;
        if let Some(from) = from {
            self.unpaused(from).await;
        }
        if *killed.borrow() {
            return Err(TransportError::Failed(
                "connection reset: the pod died".into(),
            ));
        }
        Ok(response.map(|inner| boxed(Cut { inner, killed })))
    }
}

/// The key of a pod pair, the same both ways.
fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// A pod's stack with its response bodies boxed.
#[derive(Clone)]
struct PodStack<S> {
    stack: S,
}

impl<S, B> Service<Request<StaticBody>> for PodStack<S>
where
    S: Service<Request<StaticBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<HandoffBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<HandoffBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, request: Request<StaticBody>) -> Self::Future {
        let call: BoxFuture<'static, Result<Response<B>, Infallible>> =
            Box::pin(self.stack.call(request));
        Box::pin(async move { Ok(call.await?.map(boxed)) })
    }
}

/// The handoff transport of one pod.
struct SimTransport {
    net: Net,
    pod: String,
}

impl Transport for SimTransport {
    fn send(
        &self,
        to: SocketAddr,
        request: Request<HandoffBody>,
    ) -> BoxFuture<'static, Result<Response<HandoffBody>, TransportError>> {
        let net = self.net.clone();
        let pod = self.pod.clone();
        Box::pin(async move { net.deliver(Some(&pod), to, request).await })
    }
}

/// The callers' side of the network, as the router's inner service.
#[derive(Clone)]
pub struct SimClient {
    net: Net,
}

impl Service<Request<RouterBody<String>>> for SimClient {
    type Response = Response<HandoffBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<HandoffBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RouterBody<String>>) -> Self::Future {
        let net = self.net.clone();
        Box::pin(async move {
            let to: SocketAddr = request
                .uri()
                .authority()
                .ok_or("no authority")?
                .as_str()
                .parse()?;
            let request = request.map(boxed);
            net.deliver(None, to, request).await.map_err(Into::into)
        })
    }
}

/// The list application: a POST appends its element and answers the new
/// length, a GET answers the whole list; both with the version and the
/// epoch in headers (see `http.rs`).
async fn serve(
    store: &app::ListStore,
    member: &Member,
    request: &http::request::Parts,
) -> Response<HandoffBody> {
    let key = request
        .headers
        .get(headers::SESSION)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let result = if request.method == http::Method::POST {
        let Some(element) = app::element_of(&request.headers) else {
            return text(StatusCode::BAD_REQUEST, "no element".into());
        };
        store
            .update(&key, |list| {
                list.push(element);
                list.len().to_string()
            })
            .await
    } else {
        store
            .read(&key, |list| serde_json::to_string(list).unwrap())
            .await
    };
    match result {
        Ok(done) => {
            let mut response = text(StatusCode::OK, done.value);
            let headers = response.headers_mut();
            headers.insert(app::VERSION_HEADER, http::HeaderValue::from(done.version));
            headers.insert(app::EPOCH_HEADER, http::HeaderValue::from(done.epoch));
            response
        }
        Err(error) => member.error_response(&error),
    }
}

/// One simulated pod.
pub struct SimPod {
    pub info: Pod,
    pub source: StaticRingSource,
    pub member: Member,
    pub store: app::ListStore,
    pub progress: MemoryProgressReporter,
    kill: watch::Sender<bool>,
}

/// The simulated fleet.
pub struct SimCluster {
    pub net: Net,
    pub db: Db,
    pub pods: Mutex<BTreeMap<String, SimPod>>,
    pub client_source: StaticRingSource,
    pub config: HandoffConfig,
    pub limits: Limits,
    pub passivate: bool,
    router: Router<SimClient>,
    crashes: Mutex<Vec<Crash>>,
}

fn secret() -> HandoffSecret {
    HandoffSecret::new("simulation-secret-0123456789abcdef").unwrap()
}

impl SimCluster {
    pub fn new(net: Net, config: HandoffConfig, limits: Limits, passivate: bool) -> Self {
        Self::with_db(net, config, limits, passivate, Db::default())
    }

    /// [`new`](Self::new) over the persistence `db`.
    pub fn with_db(
        net: Net,
        config: HandoffConfig,
        limits: Limits,
        passivate: bool,
        db: Db,
    ) -> Self {
        let client_source = StaticRingSource::new();
        let router = RouterLayer::new(&client_source)
            .timeout(Duration::from_secs(10))
            .layer(SimClient { net: net.clone() });
        Self {
            net,
            db,
            pods: Mutex::new(BTreeMap::new()),
            client_source,
            config,
            limits,
            passivate,
            router,
            crashes: Mutex::new(Vec::new()),
        }
    }

    /// Starts pod `name` at `address`.
    pub async fn start_pod(&self, name: &str, address: SocketAddr) -> Pod {
        let source = StaticRingSource::new();
        if let Some(ring) = locus::RingSource::watch(&self.client_source).latest() {
            source.publish((*ring).clone()).unwrap();
        }
        // A paused pod's persistence calls and progress reports wait for its
        // resume, like its messages: a stopped process has no effect outside.
        let gate = {
            let net = self.net.clone();
            let pod = name.to_owned();
            Gate::new(move || {
                let net = net.clone();
                let pod = pod.clone();
                Box::pin(async move { net.unpaused(&pod).await })
            })
        };
        let store = SessionStore::builder(JsonCodec, app::weight)
            .limits(self.limits.clone())
            .persistence(self.db.gated(gate))
            .build()
            .unwrap();
        if self.passivate {
            // Ends with the store.
            drop(store.spawn_passivation());
        }
        let progress = MemoryProgressReporter::new();
        let member = Member::builder(name, &source, store.clone())
            .secret(secret())
            .progress(GatedReporter {
                inner: progress.clone(),
                net: self.net.clone(),
                pod: name.to_owned(),
            })
            .config(self.config.clone())
            .transport(SimTransport {
                net: self.net.clone(),
                pod: name.to_owned(),
            })
            // A SIGTERM waits this long for the operator to start retiring
            // the pod (an eviction) before it drains on its own.
            .coordination_wait(Duration::from_secs(1))
            .build()
            .unwrap();
        member.start().await;
        let app = {
            let store = store.clone();
            let member = member.clone();
            let net = self.net.clone();
            tower::service_fn(move |request: Request<StaticBody>| {
                let store = store.clone();
                let member = member.clone();
                let work = net.handler_delay();
                async move {
                    tokio::time::sleep(work).await;
                    let (request, _) = request.into_parts();
                    Ok::<_, Infallible>(serve(&store, &member, &request).await)
                }
            })
        };
        let ownership = OwnershipLayer::builder(name, &source)
            .mode(Mode::Redirect421)
            .build()
            .unwrap();
        let stack = ownership.layer(member.layer().layer(app));
        let service: PodService = BoxCloneService::new(PodStack { stack });
        let (kill, killed) = watch::channel(false);
        let info = Pod {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            address,
        };
        self.net.inner.lock().unwrap().endpoints.insert(
            address,
            Endpoint {
                name: name.to_owned(),
                service,
                killed,
            },
        );
        self.pods.lock().unwrap().insert(
            name.to_owned(),
            SimPod {
                info: info.clone(),
                source,
                member,
                store,
                progress,
                kill,
            },
        );
        info
    }

    /// Kills pod `name`: what it had not persisted is lost. Records, for the
    /// checker, the persisted lists and the sessions it held, owned or was
    /// moving under `ring` when it died.
    pub fn kill(&self, name: &str, keys: &[Vec<u8>], ring: Option<&Ring>) {
        let Some(pod) = self.pods.lock().unwrap().remove(name) else {
            return;
        };
        pod.member.abort();
        pod.kill.send_replace(true);
        let resident: HashSet<Vec<u8>> = pod
            .store
            .resident_keys()
            .into_iter()
            .map(|k| k.to_vec())
            .collect();
        let involved = |key: &[u8]| {
            resident.contains(key)
                || ring.is_some_and(|r| {
                    r.owner(key).pod.name == name
                        || r.target_owner(key).is_some_and(|s| {
                            s.pod.name == name
                                || s.successor.as_ref().is_some_and(|p| p.name == name)
                        })
                        || locus::internal::previous_pod(r, key).is_some_and(|p| p.name == name)
                })
        };
        let mut persisted = HashMap::new();
        let mut affected = HashSet::new();
        for (session, key) in keys.iter().enumerate() {
            persisted.insert(session, self.db.list(key));
            if involved(key) {
                affected.insert(session);
            }
        }
        self.crashes.lock().unwrap().push(Crash {
            pod: name.to_owned(),
            at: Instant::now(),
            persisted,
            affected,
        });
    }

    /// The member of running pod `name`.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.pods
            .lock()
            .unwrap()
            .get(name)
            .map(|p| p.member.clone())
    }

    /// Runs the graceful shutdown of pod `name` (a SIGTERM) within
    /// `within`; `None` if the pod is not running or is killed meanwhile (a
    /// dead process writes nothing back).
    pub async fn shutdown(&self, name: &str, within: Duration) -> Option<ShutdownReport> {
        let (member, mut killed) = {
            let pods = self.pods.lock().unwrap();
            let pod = pods.get(name)?;
            (pod.member.clone(), pod.kill.subscribe())
        };
        tokio::select! {
            report = member.shutdown(within) => Some(report),
            _ = killed.wait_for(|k| *k) => None,
        }
    }

    /// Removes pod `name` after its graceful shutdown: its process exits
    /// (new connections are refused), and nothing is recorded as a crash —
    /// whatever it had not handed over or written back counts as lost.
    pub fn stop(&self, name: &str) {
        let Some(pod) = self.pods.lock().unwrap().remove(name) else {
            return;
        };
        pod.member.abort();
        pod.kill.send_replace(true);
    }

    pub fn crashes(&self) -> Vec<Crash> {
        self.crashes.lock().unwrap().clone()
    }

    pub fn alive(&self, name: &str) -> bool {
        self.pods.lock().unwrap().contains_key(name)
    }

    /// Appends `element` to `key` through the callers' router.
    pub async fn append(&self, key: &[u8], element: u64) -> Outcome {
        let request = Request::post("/list")
            .header(headers::SESSION, key)
            .header(app::ELEMENT_HEADER, element)
            .body(String::new())
            .unwrap();
        outcome(self.router.clone().oneshot(request).await, element).await
    }

    /// Reads `key` once through the callers' router.
    async fn read_once(&self, key: &[u8]) -> Result<Listing, Outcome> {
        let request = Request::get("/list")
            .header(headers::SESSION, key)
            .body(String::new())
            .unwrap();
        listing(self.router.clone().oneshot(request).await).await
    }

    /// The stores of the running pods.
    fn stores(&self) -> Vec<app::ListStore> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .map(|p| p.store.clone())
            .collect()
    }

    /// Writes every changed session of every running pod back (as a
    /// shutdown's flush does), without evicting any.
    pub async fn flush_all(&self) {
        let stores = self.stores();
        for store in stores {
            store.flush().await;
        }
    }

    /// The ownership epoch of the running pod that holds `key` at the
    /// highest version (its owner, after the final reads), or `None` if no
    /// pod holds it.
    pub async fn epoch_of(&self, key: &[u8]) -> Option<u64> {
        let stores = self.stores();
        let mut best: Option<(u64, u64)> = None;
        for store in stores {
            if let Ok(Some(record)) = store.export(key).await
                && best.is_none_or(|(version, _)| record.version > version)
            {
                best = Some((record.version, record.epoch));
            }
        }
        best.map(|(_, epoch)| epoch)
    }

    /// Reads `key` until a pod answers: (version, list).
    pub async fn read(&self, key: &[u8]) -> Option<(u64, Vec<u64>)> {
        for _ in 0..200 {
            if let Ok(read) = self.read_once(key).await {
                return Some((read.version, read.list));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Fleet for SimCluster {
    async fn publish(&self, ring: &Ring) {
        let targets: Vec<(String, StaticRingSource)> = self
            .pods
            .lock()
            .unwrap()
            .iter()
            .map(|(name, p)| (name.clone(), p.source.clone()))
            .collect();
        for (name, source) in targets {
            let net = self.net.clone();
            let ring = ring.clone();
            let delay = net.random(net.config.max_ring_delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                net.unpaused(&name).await;
                let _ = source.publish(ring);
            });
        }
        let client = self.client_source.clone();
        let ring = ring.clone();
        let delay = self.net.random(self.net.config.max_ring_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = client.publish(ring);
        });
    }

    fn progress(&self, pod: &str) -> Option<MemoryProgressReporter> {
        self.pods
            .lock()
            .unwrap()
            .get(pod)
            .map(|p| p.progress.clone())
    }
}
