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

use bytes::{Bytes, BytesMut};
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

    async fn call(
        &self,
        to: &Pod,
        path: &'static str,
        ring_version: u64,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<http::Response<HandoffBody>, HandoffError> {
        let request = Request::post(path)
            .header(AUTHORIZATION, self.inner.authorization.clone())
            .header(headers::POD, self.inner.pod.clone())
            .header(headers::RING_VERSION, HeaderValue::from(ring_version))
            .header(CONTENT_TYPE, content_type)
            .body(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| HandoffError::Request {
                pod: to.name.clone(),
                reason: e.to_string(),
            })?;
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

    async fn timed<T>(
        to: &Pod,
        timeout: Duration,
        call: impl Future<Output = Result<T, HandoffError>>,
    ) -> Result<T, HandoffError> {
        tokio::time::timeout(timeout, call)
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
        let body = serde_json::to_vec(request).map_err(|e| HandoffError::Request {
            pod: to.name.clone(),
            reason: e.to_string(),
        })?;
        Self::timed(to, timeout, async {
            let response = self
                .call(
                    to,
                    PRECOPY_PATH,
                    ring_version,
                    "application/json",
                    body.into(),
                )
                .await?;
            let mut records = 0;
            let mut unexpected = false;
            self.read_frames(to, response.into_body(), |frame| {
                if let Frame::Record(WireRecord { record, .. }) = frame {
                    records += 1;
                    each(record)
                } else {
                    unexpected = true;
                    false
                }
            })
            .await?;
            if unexpected {
                return Err(HandoffError::Protocol {
                    pod: to.name.clone(),
                    source: wire::WireError::Malformed {
                        kind: "pre-copy answer",
                        reason: "a frame other than a record",
                    },
                });
            }
            Ok(records)
        })
        .await
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
        let body = wire::encode_body(&frames).map_err(|e| HandoffError::Request {
            pod: to.name.clone(),
            reason: e.to_string(),
        })?;
        Self::timed(to, timeout, async {
            let response = self
                .call(to, TRANSFER_PATH, ring_version, wire::CONTENT_TYPE, body)
                .await?;
            let mut answers = Vec::with_capacity(wants.len());
            let mut unexpected = false;
            self.read_frames(to, response.into_body(), |frame| {
                let answer = match frame {
                    Frame::Record(r) => (r.record.key.clone(), TransferAnswer::State(r.record)),
                    Frame::Unchanged { key, version } => (key, TransferAnswer::Unchanged(version)),
                    Frame::NotResident { key } => (key, TransferAnswer::NotResident),
                    Frame::Refused {
                        key,
                        reason,
                        message,
                    } => (key, TransferAnswer::Refused(reason, message)),
                    _ => {
                        unexpected = true;
                        return false;
                    }
                };
                answers.push(answer);
                true
            })
            .await?;
            let matches = answers.len() == wants.len()
                && answers.iter().zip(wants).all(|((a, _), (w, _))| a == w);
            if unexpected || !matches {
                return Err(HandoffError::Protocol {
                    pod: to.name.clone(),
                    source: wire::WireError::Malformed {
                        kind: "transfer answer",
                        reason: "answers do not match the keys asked for",
                    },
                });
            }
            Ok(answers)
        })
        .await
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
        let mut body = BytesMut::new();
        for record in records {
            Frame::Record(WireRecord {
                record: record.clone(),
                last: true,
            })
            .encode(&mut body)
            .map_err(|e| HandoffError::Request {
                pod: to.name.clone(),
                reason: e.to_string(),
            })?;
        }
        Frame::End {
            frames: records.len() as u64,
        }
        .encode(&mut body)
        .map_err(|e| HandoffError::Request {
            pod: to.name.clone(),
            reason: e.to_string(),
        })?;
        Self::timed(to, timeout, async {
            let response = self
                .call(
                    to,
                    PUSH_PATH,
                    ring_version,
                    wire::CONTENT_TYPE,
                    body.freeze(),
                )
                .await?;
            let mut acks = Vec::with_capacity(records.len());
            let mut unexpected = false;
            self.read_frames(to, response.into_body(), |frame| {
                if let Frame::Ack { key, outcome } = frame {
                    acks.push((key, outcome));
                    true
                } else {
                    unexpected = true;
                    false
                }
            })
            .await?;
            let matches = acks.len() == records.len()
                && acks.iter().zip(records).all(|((k, _), r)| *k == r.key);
            if unexpected || !matches {
                return Err(HandoffError::Protocol {
                    pod: to.name.clone(),
                    source: wire::WireError::Malformed {
                        kind: "push answer",
                        reason: "acknowledgements do not match the records pushed",
                    },
                });
            }
            Ok(acks)
        })
        .await
    }
}
