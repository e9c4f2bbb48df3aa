//! Pods over real HTTP: each an axum server on its own 127.0.0.x address
//! with the ownership layer, the session layer (handoff endpoints, driver)
//! and a list application over a `SessionStore<Vec<u64>, Db>`, each with its
//! own `StaticRingSource` and `MemoryProgressReporter`. Callers use the
//! client `Router` over reqwest.
//!
//! The list application, here and in the simulation: a POST appends the
//! element in [`ELEMENT_HEADER`] to the session's list (400 without one)
//! and answers the new list length, with the session's new version in
//! [`VERSION_HEADER`] and the ownership epoch the pod holds the session
//! under in [`EPOCH_HEADER`]; a GET answers the whole list (JSON), with the
//! same headers.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use locus::driver::{HANDOFF_HEADER, TAKEOVER_HEADER};
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

/// Response header of the list application: the session's version.
pub const VERSION_HEADER: &str = "x-session-version";

/// Response header of the list application: the ownership epoch under which
/// the pod holds the session (`Versioned::epoch`).
pub const EPOCH_HEADER: &str = "x-session-epoch";

/// Request header of an append: the element, a decimal `u64`.
pub const ELEMENT_HEADER: &str = "x-list-element";

/// The list store of a pod.
pub type ListStore = SessionStore<Vec<u64>, Db>;

/// What a session weighs for the store's byte bounds: 8 bytes whatever its
/// length, so that the byte bounds count sessions (as when sessions were
/// counters).
pub fn weight(_: &Vec<u64>) -> usize {
    8
}

/// The element of an append request, if it carries a valid one.
pub fn element_of(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(ELEMENT_HEADER)?.to_str().ok()?.parse().ok()
}

/// The shared secret of the test service.
pub fn secret() -> HandoffSecret {
    HandoffSecret::new("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0").unwrap()
}

#[derive(Clone)]
struct App {
    store: ListStore,
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

/// The list application's answer: `body`, with the version in
/// [`VERSION_HEADER`] and the epoch in [`EPOCH_HEADER`].
fn answer(
    app: &App,
    result: Result<Versioned<impl Display>, StoreError>,
) -> axum::response::Response {
    match result {
        Ok(done) => (
            [
                (VERSION_HEADER, done.version.to_string()),
                (EPOCH_HEADER, done.epoch.to_string()),
            ],
            done.value.to_string(),
        )
            .into_response(),
        Err(error) => app.member.error_response(&error).into_response(),
    }
}

/// 400 for an append without a valid element.
fn no_element() -> axum::response::Response {
    (StatusCode::BAD_REQUEST, "no element").into_response()
}

/// Like `append`, but holds the session's lock until the test releases a
/// permit of the pod's `hold` semaphore.
async fn hold(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    let Some(element) = element_of(&headers) else {
        return no_element();
    };
    let gate = Arc::clone(&app.hold);
    let done = app
        .store
        .update_async(&session_key(&headers), |mut list| async move {
            // One permit per request: the test releases them one by one.
            gate.acquire().await.unwrap().forget();
            list.push(element);
            let len = list.len();
            Ok::<_, std::convert::Infallible>((list, len))
        })
        .await
        .map(|done| done.unwrap_or_else(|never| match never {}));
    answer(&app, done)
}

async fn append(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    let Some(element) = element_of(&headers) else {
        return no_element();
    };
    let done = app
        .store
        .update(&session_key(&headers), |list| {
            list.push(element);
            list.len()
        })
        .await;
    answer(&app, done)
}

async fn read(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    let done = app
        .store
        .read(&session_key(&headers), |list| {
            serde_json::to_string(list).unwrap()
        })
        .await;
    answer(&app, done)
}

/// One running pod.
pub struct TestPod {
    pub info: Pod,
    pub source: StaticRingSource,
    pub member: Member,
    pub store: ListStore,
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
        let store = SessionStore::builder(JsonCodec, weight)
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
            .route("/append", axum::routing::post(append))
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

    /// Appends `element` to `key` through the callers' router.
    pub async fn append(&self, key: &[u8], element: u64) -> Outcome {
        self.call("/append", key, element).await
    }

    /// Sends a POST to `path` for session `key` with `element` through the
    /// callers' router.
    pub async fn call(&self, path: &str, key: &[u8], element: u64) -> Outcome {
        let request = Request::post(path)
            .header(headers::SESSION, key)
            .header(ELEMENT_HEADER, element)
            .body(String::new())
            .unwrap();
        outcome(self.router.clone().oneshot(request).await, element).await
    }

    /// Reads `key` through the callers' router: (version, list).
    pub async fn read(&self, key: &[u8]) -> (u64, Vec<u64>) {
        for _ in 0..100 {
            let request = Request::get("/get")
                .header(headers::SESSION, key)
                .body(String::new())
                .unwrap();
            if let Ok(read) = listing(self.router.clone().oneshot(request).await).await {
                return (read.version, read.list);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot read {}", String::from_utf8_lossy(key));
    }
}

/// A 200 answer of the list application.
struct Answered {
    version: u64,
    epoch: u64,
    pod: String,
    handoff: Option<String>,
    takeover: Option<String>,
    body: Bytes,
}

/// Reads a routed request's result (over any client's body): the answer if
/// it is a well-formed 200, else the outcome it makes.
async fn answered<B: http_body::Body>(
    result: Result<http::Response<B>, RouteError>,
) -> Result<Answered, Outcome> {
    let response = match result {
        Ok(response) => response,
        Err(RouteError::Timeout { .. } | RouteError::Upstream { .. }) => {
            return Err(Outcome::Unknown("no answer".into()));
        }
        Err(_) => return Err(Outcome::Refused(0)),
    };
    let status = response.status();
    if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT {
        return Err(Outcome::Unknown(format!("gateway {status}")));
    }
    if status != StatusCode::OK {
        return Err(Outcome::Refused(status.as_u16()));
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
    let epoch = text(EPOCH_HEADER).and_then(|v| v.parse().ok());
    let pod = text(headers::POD.as_str()).unwrap_or_default();
    let handoff = text(HANDOFF_HEADER.as_str());
    let takeover = text(TAKEOVER_HEADER.as_str());
    drop(parts);
    let Ok(body) = body.collect().await else {
        return Err(Outcome::Unknown("body cut".into()));
    };
    match (version, epoch) {
        (Some(version), Some(epoch)) => Ok(Answered {
            version,
            epoch,
            pod,
            handoff,
            takeover,
            body: body.to_bytes(),
        }),
        _ => Err(Outcome::Unknown("malformed answer".into())),
    }
}

/// Classifies the result of an append of `element` (over any client's
/// body): acknowledged with the list length the body gives, refused, or
/// unknown (no answer, a gateway error, a cut or malformed answer).
pub async fn outcome<B: http_body::Body>(
    result: Result<http::Response<B>, RouteError>,
    element: u64,
) -> Outcome {
    let answer = match answered(result).await {
        Ok(answer) => answer,
        Err(outcome) => return outcome,
    };
    let Ok(len) = String::from_utf8_lossy(&answer.body).parse() else {
        return Outcome::Unknown("malformed answer".into());
    };
    Outcome::Acked {
        element,
        version: answer.version,
        len,
        epoch: answer.epoch,
        pod: answer.pod,
        handoff: answer.handoff,
        takeover: answer.takeover,
    }
}

/// What a read answered.
#[derive(Debug, Clone)]
pub struct Listing {
    pub version: u64,
    pub epoch: u64,
    pub pod: String,
    pub list: Vec<u64>,
}

/// Reads the answer of a read (over any client's body): the list, or the
/// outcome it makes when it is not a well-formed 200.
pub async fn listing<B: http_body::Body>(
    result: Result<http::Response<B>, RouteError>,
) -> Result<Listing, Outcome> {
    let answer = answered(result).await?;
    let Ok(list) = serde_json::from_slice(&answer.body) else {
        return Err(Outcome::Unknown("malformed answer".into()));
    };
    Ok(Listing {
        version: answer.version,
        epoch: answer.epoch,
        pod: answer.pod,
        list,
    })
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
