//! [`HandoffClient`]: the calling side of the handoff endpoints.
//!
//! * [`precopy`](HandoffClient::precopy): stream the resident sessions of some
//!   shards from their current owner (the Warm step);
//! * [`transfer`](HandoffClient::transfer): take over given keys from their
//!   previous owner (first touch after the Switch);
//! * [`push`](HandoffClient::push): hand records over to their new owner
//!   (the drain after the Switch, and the SIGTERM drain).
//!
//! Every call carries the shared secret, this pod's name
//! ([`x-locus-pod`](crate::headers::POD)) and its ring version
//! ([`x-locus-ring-version`](crate::headers::RING_VERSION)), is bounded by a
//! timeout covering the whole answer, and checks that the answer is complete
//! (ends with the `end` frame).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde::{Deserialize, Serialize};

use super::error::HandoffError;
use super::secret::HandoffSecret;
use super::transport::{HandoffBody, Transport, TransportError};
use super::wire::{self, AckOutcome, Frame, FrameDecoder, WireRecord};
use super::{PRECOPY_PATH, PUSH_PATH, TRANSFER_PATH};
use crate::headers;
use crate::ring::Pod;
use crate::store::SessionRecord;

/// Body of a pre-copy request (JSON): the shards wanted, under the shard count
/// of the asker's ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecopyRequest {
    /// The ring's shard count `S`, so both sides compute the same shards.
    pub shard_count: u32,
    /// The shards wanted.
    pub shards: Vec<u32>,
}

/// The answer to one key of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferAnswer {
    /// The latest state, handed off (the previous owner no longer serves it).
    State(SessionRecord),
    /// The asker's known version is the latest; handed off.
    Unchanged(u64),
    /// The previous owner does not hold the session in memory: the
    /// persistence holds the latest state.
    NotResident,
    /// Refused; see the reason.
    Refused(wire::Refusal, String),
}

/// Calls other pods' handoff endpoints. Clones share the transport.
#[derive(Clone)]
pub struct HandoffClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn Transport>,
    authorization: HeaderValue,
    pod: HeaderValue,
    max_frame: usize,
}

impl std::fmt::Debug for HandoffClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffClient")
            .field("pod", &self.inner.pod)
            .finish_non_exhaustive()
    }
}

impl HandoffClient {
    /// A client for pod `pod` (its name), authenticating with `secret`,
    /// refusing answer frames over `max_frame` bytes.
    pub fn new(
        transport: Arc<dyn Transport>,
        secret: &HandoffSecret,
        pod: &HeaderValue,
        max_frame: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                authorization: secret.authorization().clone(),
                pod: pod.clone(),
                max_frame,
            }),
        }
    }

    /// Posts `body` to `endpoint` on `to`; an answer other than 200 is an
    /// error carrying the start of its body.
    async fn call(
        &self,
        endpoint: &Endpoint,
        to: &Pod,
        ring_version: u64,
        body: Bytes,
    ) -> Result<http::Response<HandoffBody>, HandoffError> {
        let request = Request::post(endpoint.path)
            .header(AUTHORIZATION, self.inner.authorization.clone())
            .header(headers::POD, self.inner.pod.clone())
            .header(headers::RING_VERSION, HeaderValue::from(ring_version))
            .header(CONTENT_TYPE, endpoint.content_type)
            .body(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| request_error(to, &e))?;
        let response = self
            .inner
            .transport
            .send(to.address, request)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(source) => HandoffError::Unreachable {
                    pod: to.name.clone(),
                    source,
                },
                TransportError::Failed(source) => HandoffError::Failed {
                    pod: to.name.clone(),
                    source,
                },
            })?;
        match response.status() {
            StatusCode::OK => Ok(response),
            StatusCode::UNAUTHORIZED => Err(HandoffError::Unauthorized {
                pod: to.name.clone(),
            }),
            status => {
                // The start of the answer, for the log line.
                let mut body = response.into_body();
                let mut message = Vec::new();
                while message.len() < 512 {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                message.extend_from_slice(&data);
                            }
                        }
                        _ => break,
                    }
                }
                message.truncate(512);
                Err(HandoffError::Status {
                    pod: to.name.clone(),
                    status,
                    message: String::from_utf8_lossy(&message).into_owned(),
                })
            }
        }
    }

    /// Reads a frame body, handing each frame to `each` (which returns
    /// `false` to stop early). Returns the number of frames read.
    async fn read_frames(
        &self,
        to: &Pod,
        mut body: HandoffBody,
        mut each: impl FnMut(Frame) -> bool,
    ) -> Result<u64, HandoffError> {
        let protocol = |source| HandoffError::Protocol {
            pod: to.name.clone(),
            source,
        };
        let mut decoder = FrameDecoder::new(self.inner.max_frame);
        let mut count = 0;
        loop {
            while let Some(frame) = decoder.next_frame().map_err(protocol)? {
                count += 1;
                if !each(frame) {
                    return Ok(count);
                }
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        decoder.push(&data).map_err(protocol)?;
                    }
                }
                Some(Err(source)) => {
                    return Err(HandoffError::Failed {
                        pod: to.name.clone(),
                        source,
                    });
                }
                None => break,
            }
        }
        decoder.finish().map_err(protocol)?;
        Ok(count)
    }

    /// Posts `body` to `endpoint` on `to` and reads the answer, the whole
    /// exchange bounded by `timeout`. Each answer frame goes to `each`:
    /// `Some(true)` reads on, `Some(false)` stops, `None` marks a frame that
    /// has no place in this answer, which makes it malformed.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        to: &Pod,
        ring_version: u64,
        timeout: Duration,
        body: Bytes,
        mut each: impl FnMut(Frame) -> Option<bool>,
    ) -> Result<(), HandoffError> {
        let exchange = async {
            let response = self.call(endpoint, to, ring_version, body).await?;
            let mut unexpected = false;
            self.read_frames(to, response.into_body(), |frame| {
                each(frame).unwrap_or_else(|| {
                    unexpected = true;
                    false
                })
            })
            .await?;
            if unexpected {
                return Err(endpoint.malformed(to));
            }
            Ok(())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HandoffError::Timeout {
                    pod: to.name.clone(),
                    after: timeout,
                })
            })
    }

    /// Streams the resident sessions of `request.shards` from `to`, handing
    /// each record to `each` (which returns `false` to stop, e.g. when the
    /// warm cache is full). Returns the number of records received. The whole
    /// call, body included, is bounded by `timeout`.
    pub async fn precopy(
        &self,
        to: &Pod,
        ring_version: u64,
        request: &PrecopyRequest,
        timeout: Duration,
        mut each: impl FnMut(SessionRecord) -> bool,
    ) -> Result<u64, HandoffError> {
        let body = serde_json::to_vec(request).map_err(|e| request_error(to, &e))?;
        let mut records = 0;
        self.exchange(&PRECOPY, to, ring_version, timeout, body.into(), |frame| {
            let Frame::Record(WireRecord { record, .. }) = frame else {
                return None;
            };
            records += 1;
            Some(each(record))
        })
        .await?;
        Ok(records)
    }

    /// Asks `to` (the keys' previous owner) to hand `wants` over to this
    /// pod: one answer per key, in order.
    pub async fn transfer(
        &self,
        to: &Pod,
        ring_version: u64,
        wants: &[(Bytes, Option<u64>)],
        timeout: Duration,
    ) -> Result<Vec<(Bytes, TransferAnswer)>, HandoffError> {
        let frames: Vec<Frame> = wants
            .iter()
            .map(|(key, known)| Frame::Want {
                key: key.clone(),
                known: *known,
            })
            .collect();
        let body = wire::encode_body(&frames).map_err(|e| request_error(to, &e))?;
        let mut answers = Vec::with_capacity(wants.len());
        self.exchange(&TRANSFER, to, ring_version, timeout, body, |frame| {
            answers.push(match frame {
                Frame::Record(r) => (r.record.key.clone(), TransferAnswer::State(r.record)),
                Frame::Unchanged { key, version } => (key, TransferAnswer::Unchanged(version)),
                Frame::NotResident { key } => (key, TransferAnswer::NotResident),
                Frame::Refused {
                    key,
                    reason,
                    message,
                } => (key, TransferAnswer::Refused(reason, message)),
                _ => return None,
            });
            Some(true)
        })
        .await?;
        let matches = answers.len() == wants.len()
            && answers.iter().zip(wants).all(|((a, _), (w, _))| a == w);
        if !matches {
            return Err(TRANSFER.malformed(to));
        }
        Ok(answers)
    }

    /// Pushes `records` (handed off here) to `to`, their new owner. Returns
    /// what it did with each, in order.
    pub async fn push(
        &self,
        to: &Pod,
        ring_version: u64,
        records: &[SessionRecord],
        timeout: Duration,
    ) -> Result<Vec<(Bytes, AckOutcome)>, HandoffError> {
        let frames: Vec<Frame> = records
            .iter()
            .map(|record| {
                Frame::Record(WireRecord {
                    record: record.clone(),
                    last: true,
                })
            })
            .collect();
        let body = wire::encode_body(&frames).map_err(|e| request_error(to, &e))?;
        let mut acks = Vec::with_capacity(records.len());
        self.exchange(&PUSH, to, ring_version, timeout, body, |frame| {
            let Frame::Ack { key, outcome } = frame else {
                return None;
            };
            acks.push((key, outcome));
            Some(true)
        })
        .await?;
        let matches =
            acks.len() == records.len() && acks.iter().zip(records).all(|((k, _), r)| *k == r.key);
        if !matches {
            return Err(PUSH.malformed(to));
        }
        Ok(acks)
    }
}

/// A handoff endpoint as the client calls it.
struct Endpoint {
    path: &'static str,
    content_type: &'static str,
    /// Names the answer in errors.
    answer: &'static str,
    /// What is wrong with an answer that does not fit the request.
    mismatch: &'static str,
}

const PRECOPY: Endpoint = Endpoint {
    path: PRECOPY_PATH,
    content_type: "application/json",
    answer: "pre-copy answer",
    mismatch: "a frame other than a record",
};

const TRANSFER: Endpoint = Endpoint {
    path: TRANSFER_PATH,
    content_type: wire::CONTENT_TYPE,
    answer: "transfer answer",
    mismatch: "answers do not match the keys asked for",
};

const PUSH: Endpoint = Endpoint {
    path: PUSH_PATH,
    content_type: wire::CONTENT_TYPE,
    answer: "push answer",
    mismatch: "acknowledgements do not match the records pushed",
};

impl Endpoint {
    /// The error for an answer from `to` that does not fit the request.
    fn malformed(&self, to: &Pod) -> HandoffError {
        HandoffError::Protocol {
            pod: to.name.clone(),
            source: wire::WireError::Malformed {
                kind: self.answer,
                reason: self.mismatch,
            },
        }
    }
}

/// The error for a request to `to` that could not be built or encoded.
fn request_error(to: &Pod, error: &impl std::fmt::Display) -> HandoffError {
    HandoffError::Request {
        pod: to.name.clone(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use http::Response;

    use super::*;

    /// Answers every call with one canned response (or never, to time out)
    /// and keeps what it was sent.
    struct Canned {
        status: StatusCode,
        body: Bytes,
        hang: bool,
        sent: Mutex<Vec<(http::request::Parts, Bytes)>>,
    }

    impl Transport for Canned {
        fn send(
            &self,
            _to: SocketAddr,
            request: Request<HandoffBody>,
        ) -> BoxFuture<'static, Result<Response<HandoffBody>, TransportError>> {
            let (parts, body) = request.into_parts();
            let body = futures::executor::block_on(body.collect()).unwrap();
            self.sent.lock().unwrap().push((parts, body.to_bytes()));
            let (status, answer, hang) = (self.status, self.body.clone(), self.hang);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                let mut response = Response::new(
                    Full::new(answer)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *response.status_mut() = status;
                Ok(response)
            })
        }
    }

    impl Canned {
        fn new(status: StatusCode, body: impl Into<Bytes>) -> Arc<Self> {
            Arc::new(Self {
                status,
                body: body.into(),
                hang: false,
                sent: Mutex::new(Vec::new()),
            })
        }

        fn hanging() -> Arc<Self> {
            Arc::new(Self {
                status: StatusCode::OK,
                body: Bytes::new(),
                hang: true,
                sent: Mutex::new(Vec::new()),
            })
        }

        fn answering(frames: &[Frame]) -> Arc<Self> {
            Self::new(StatusCode::OK, wire::encode_body(frames).unwrap())
        }

        fn client(self: &Arc<Self>) -> HandoffClient {
            let secret = HandoffSecret::new("0123456789abcdef0123456789abcdef").unwrap();
            let transport: Arc<dyn Transport> = self.clone();
            HandoffClient::new(
                transport,
                &secret,
                &HeaderValue::from_static("chat-0-a"),
                1 << 20,
            )
        }

        /// The one request sent: path, content type, ring version, body.
        fn request(&self) -> (String, String, String, Bytes) {
            let sent = self.sent.lock().unwrap();
            assert_eq!(sent.len(), 1);
            let (parts, body) = &sent[0];
            assert_eq!(parts.method, http::Method::POST);
            assert_eq!(parts.headers[headers::POD], "chat-0-a");
            assert!(parts.headers.contains_key(AUTHORIZATION));
            let header = |name| parts.headers[name].to_str().unwrap().to_owned();
            (
                parts.uri.path().to_owned(),
                header(CONTENT_TYPE),
                header(headers::RING_VERSION),
                body.clone(),
            )
        }
    }

    fn pod() -> Pod {
        Pod {
            name: "chat-1-b".into(),
            uid: "u".into(),
            address: "127.0.0.1:9".parse().unwrap(),
        }
    }

    fn session(key: &'static [u8]) -> SessionRecord {
        SessionRecord {
            key: Bytes::from_static(key),
            version: 4,
            epoch: 2,
            dirty: true,
            value: Bytes::from_static(b"state"),
        }
    }

    fn record(key: &'static [u8], last: bool) -> Frame {
        Frame::Record(WireRecord {
            record: session(key),
            last,
        })
    }

    fn ack(key: &'static [u8], outcome: AckOutcome) -> Frame {
        Frame::Ack {
            key: Bytes::from_static(key),
            outcome,
        }
    }

    fn key(key: &'static [u8]) -> Bytes {
        Bytes::from_static(key)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn push_sends_final_records_and_returns_the_acks_in_order() {
        let transport = Canned::answering(&[
            ack(b"a", AckOutcome::Installed),
            ack(b"b", AckOutcome::Parked),
        ]);
        let acks = transport
            .client()
            .push(&pod(), 7, &[session(b"a"), session(b"b")], SECOND)
            .await
            .unwrap();
        assert_eq!(
            acks,
            [
                (key(b"a"), AckOutcome::Installed),
                (key(b"b"), AckOutcome::Parked)
            ]
        );
        let (path, content_type, version, body) = transport.request();
        assert_eq!(
            (&*path, &*content_type, &*version),
            (PUSH_PATH, wire::CONTENT_TYPE, "7")
        );
        assert_eq!(
            wire::decode_body(&body, 1 << 20).unwrap(),
            [record(b"a", true), record(b"b", true)]
        );
    }

    #[tokio::test]
    async fn transfer_returns_one_answer_per_key() {
        let transport = Canned::answering(&[
            Frame::Unchanged {
                key: key(b"a"),
                version: 3,
            },
            record(b"b", true),
            Frame::NotResident { key: key(b"c") },
            Frame::Refused {
                key: key(b"d"),
                reason: wire::Refusal::Busy,
                message: "later".into(),
            },
        ]);
        let wants = [
            (key(b"a"), Some(3)),
            (key(b"b"), None),
            (key(b"c"), None),
            (key(b"d"), None),
        ];
        let answers = transport
            .client()
            .transfer(&pod(), 9, &wants, SECOND)
            .await
            .unwrap();
        assert_eq!(
            answers,
            [
                (key(b"a"), TransferAnswer::Unchanged(3)),
                (key(b"b"), TransferAnswer::State(session(b"b"))),
                (key(b"c"), TransferAnswer::NotResident),
                (
                    key(b"d"),
                    TransferAnswer::Refused(wire::Refusal::Busy, "later".into())
                ),
            ]
        );
        let (path, content_type, version, body) = transport.request();
        assert_eq!(
            (&*path, &*content_type, &*version),
            (TRANSFER_PATH, wire::CONTENT_TYPE, "9")
        );
        let asked = wire::decode_body(&body, 1 << 20).unwrap();
        assert_eq!(asked.len(), 4);
        assert_eq!(
            asked[0],
            Frame::Want {
                key: key(b"a"),
                known: Some(3)
            }
        );
    }

    #[tokio::test]
    async fn precopy_counts_records_and_stops_when_asked() {
        let transport = Canned::answering(&[
            record(b"a", false),
            record(b"b", false),
            record(b"c", false),
        ]);
        let request = PrecopyRequest {
            shard_count: 8,
            shards: vec![1, 2],
        };
        let mut kept = Vec::new();
        let received = transport
            .client()
            .precopy(&pod(), 5, &request, SECOND, |record| {
                kept.push(record.key);
                kept.len() < 2
            })
            .await
            .unwrap();
        assert_eq!(received, 2);
        assert_eq!(kept, [key(b"a"), key(b"b")]);
        let (path, content_type, version, body) = transport.request();
        assert_eq!(
            (&*path, &*content_type, &*version),
            (PRECOPY_PATH, "application/json", "5")
        );
        assert_eq!(&body[..], br#"{"shard_count":8,"shards":[1,2]}"#);
    }

    /// The message of the error `result` must be.
    fn error_of<T: std::fmt::Debug>(result: Result<T, HandoffError>) -> String {
        result.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn answers_that_do_not_fit_the_request_are_malformed() {
        let (to, pushed, wants) = (pod(), [session(b"a"), session(b"b")], [(key(b"b"), None)]);
        let precopy = PrecopyRequest {
            shard_count: 8,
            shards: vec![1],
        };
        let short = Canned::answering(&[ack(b"a", AckOutcome::Installed)]).client();
        let not_acks = Canned::answering(&[record(b"a", true)]).client();
        let not_answers = Canned::answering(&[ack(b"b", AckOutcome::Installed)]).client();
        let other_key = Canned::answering(&[record(b"c", true)]).client();
        let not_records =
            Canned::answering(&[record(b"a", false), ack(b"a", AckOutcome::Stale)]).client();
        let invalid = "invalid handoff answer from pod chat-1-b: malformed";
        let push = format!(
            "{invalid} push answer frame: acknowledgements do not match the records pushed"
        );
        let transfer =
            format!("{invalid} transfer answer frame: answers do not match the keys asked for");
        assert_eq!(error_of(short.push(&to, 7, &pushed, SECOND).await), push);
        assert_eq!(error_of(not_acks.push(&to, 7, &pushed, SECOND).await), push);
        assert_eq!(
            error_of(not_answers.transfer(&to, 7, &wants, SECOND).await),
            transfer
        );
        assert_eq!(
            error_of(other_key.transfer(&to, 7, &wants, SECOND).await),
            transfer
        );
        assert_eq!(
            error_of(
                not_records
                    .precopy(&to, 7, &precopy, SECOND, |_| true)
                    .await
            ),
            format!("{invalid} pre-copy answer frame: a frame other than a record")
        );
    }

    #[tokio::test]
    async fn refusals_statuses_timeouts_and_bad_requests_name_the_pod() {
        let (to, one) = (pod(), [session(b"a")]);
        let refused = Canned::new(StatusCode::UNAUTHORIZED, "no").client();
        assert_eq!(
            error_of(refused.push(&to, 1, &one, SECOND).await),
            "pod chat-1-b refused the handoff secret"
        );
        let unavailable = Canned::new(StatusCode::SERVICE_UNAVAILABLE, "x".repeat(600)).client();
        assert_eq!(
            error_of(unavailable.push(&to, 1, &one, SECOND).await),
            format!(
                "pod chat-1-b answered 503 Service Unavailable: {}",
                "x".repeat(512)
            )
        );
        let hanging = Canned::hanging().client();
        assert_eq!(
            error_of(hanging.push(&to, 1, &one, Duration::from_millis(20)).await),
            "pod chat-1-b did not answer the handoff call within 20ms"
        );
        let long_key = SessionRecord {
            key: Bytes::from(vec![b'k'; 70_000]),
            ..session(b"a")
        };
        let transport = Canned::new(StatusCode::OK, "");
        assert_eq!(
            error_of(transport.client().push(&to, 1, &[long_key], SECOND).await),
            "cannot build the handoff request for pod chat-1-b: \
             key of 70000 bytes is longer than a frame can carry"
        );
        assert!(transport.sent.lock().unwrap().is_empty());
    }
}
