//! Fan-out: one request to every member, one deadline, partial answers.
//!
//! The pattern of Facebook's Scuba: a query goes to every leaf; whatever came
//! back by the deadline is merged, and the caller learns how complete the
//! answer is (`answered / members`) instead of waiting for the slowest leaf
//! or failing because one is down.
//!
//! The members are the distinct pods of the slots that serve keys under the
//! ring's `current` assignment (state `active` or `leaving`, plus
//! `unavailable` ones, which count as failed members without a request:
//! their share of the data is missing). Each member gets a copy of the
//! request with [`x-locus-fanout`](crate::headers::FANOUT) set to its pod
//! name, which the [`OwnershipLayer`](crate::OwnershipLayer) serves without
//! an ownership check. A member *answered* if it returned a 2xx response
//! whose body (at most `max_answer_bytes`) arrived before the deadline.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use locus::{FanOut, StaticRingSource};
//!
//! # async fn example(source: StaticRingSource) -> Result<(), locus::FanOutError> {
//! let fanout = FanOut::new(&source).deadline(Duration::from_millis(200));
//! let result = fanout
//!     .send(http::Request::get("/stats").body(Bytes::new()).unwrap())
//!     .await?;
//! println!("{:.0} % of members answered", result.completeness() * 100.0);
//! for answer in &result.answers {
//!     println!("{}: {:?}", answer.member.pod, answer.response.body());
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt as _, Full, Limited};
use tokio::time::Instant;
use tower::{Service, ServiceExt as _};
use tracing::Instrument as _;

use crate::client::ReqwestClient;
use crate::metrics::Metrics;
use crate::ring::{Ring, SlotState};
use crate::source::{RingSource, RingWatch};
use crate::{BoxError, headers};

/// Default deadline of a fan-out.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
/// Default largest answer body kept per member.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// One member of a fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Its slot.
    pub slot: u16,
    /// Its pod.
    pub pod: String,
    /// Where it was sent.
    pub address: SocketAddr,
}

/// A member's answer.
#[derive(Debug)]
pub struct Answer {
    /// Who answered.
    pub member: Member,
    /// The response, body read in full.
    pub response: Response<Bytes>,
}

/// A member that did not answer, and why.
#[derive(Debug)]
pub struct Failure {
    /// Who failed.
    pub member: Member,
    /// Why.
    pub error: MemberError,
}

/// Why a member did not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// Its slot is marked unavailable in the ring; nothing was sent.
    #[error("slot is unavailable")]
    Unavailable,
    /// No complete answer before the deadline.
    #[error("no answer before the deadline")]
    Timeout,
    /// The request failed (connection refused, reset, …).
    #[error("request failed: {0}")]
    Upstream(#[source] BoxError),
    /// It answered with a non-2xx status.
    #[error("answered {0}")]
    Status(StatusCode),
    /// Its answer body could not be read (or was too large).
    #[error("cannot read the answer body: {0}")]
    Body(#[source] BoxError),
}

impl MemberError {
    /// A short, stable label for `locus_fanout_members_total{outcome}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Upstream(_) => "upstream",
            Self::Status(_) => "status",
            Self::Body(_) => "body",
        }
    }
}

/// Everything a fan-out got back.
#[derive(Debug)]
pub struct FanOutResult {
    /// Version of the ring the members were taken from.
    pub ring_version: u64,
    /// How many members were asked (or counted as failed without asking).
    pub members: usize,
    /// The answers, in slot order.
    pub answers: Vec<Answer>,
    /// The failures, in slot order.
    pub failures: Vec<Failure>,
}

impl FanOutResult {
    /// `answered / members`: 1.0 when every member answered (and for a ring
    /// with no serving member, where there was nothing to ask).
    pub fn completeness(&self) -> f64 {
        if self.members == 0 {
            return 1.0;
        }
        let count = |n: usize| f64::from(u32::try_from(n).unwrap_or(u32::MAX));
        count(self.answers.len()) / count(self.members)
    }

    /// True if every member answered.
    pub fn is_complete(&self) -> bool {
        self.answers.len() == self.members
    }
}

/// Why a fan-out could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FanOutError {
    /// The ring source has not delivered a ring yet.
    #[error("no ring yet: the ring source has not delivered a valid ring")]
    NoRing,
}

/// Sends one request to every member; see the [module docs](self).
#[derive(Clone)]
pub struct FanOut<S = ReqwestClient> {
    inner: S,
    ring: RingWatch,
    deadline: Duration,
    max_answer_bytes: usize,
    metrics: Option<Metrics>,
}

impl<S> fmt::Debug for FanOut<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("deadline", &self.deadline)
            .field("ring_version", &self.ring.version())
            .finish_non_exhaustive()
    }
}

impl FanOut<ReqwestClient> {
    /// A fan-out over the members of `source`'s ring, sent with a
    /// [`ReqwestClient`].
    pub fn new(source: impl RingSource) -> Self {
        Self::with_service(source, ReqwestClient::new())
    }
}

/// The members of `ring`: distinct pods of the slots serving `current`.
pub fn members(ring: &Ring) -> Vec<(Member, SlotState)> {
    let mut seen = HashSet::new();
    ring.slots()
        .iter()
        .filter(|slot| {
            matches!(
                slot.state,
                SlotState::Active | SlotState::Leaving | SlotState::Unavailable
            )
        })
        .filter(|slot| seen.insert(slot.pod.name.as_str()))
        .map(|slot| {
            (
                Member {
                    slot: slot.index,
                    pod: slot.pod.name.clone(),
                    address: slot.pod.address,
                },
                slot.state,
            )
        })
        .collect()
}

impl<S> FanOut<S> {
    /// A fan-out sent through `inner` (any HTTP client service).
    pub fn with_service(source: impl RingSource, inner: S) -> Self {
        Self {
            inner,
            ring: source.watch(),
            deadline: DEFAULT_DEADLINE,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            metrics: None,
        }
    }

    /// Time from [`FanOut::send`] until whatever came back is returned
    /// (default 1 s).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Largest answer body per member (default 4 MiB); a larger one is a
    /// [`MemberError::Body`].
    #[must_use]
    pub fn max_answer_bytes(mut self, max: usize) -> Self {
        self.max_answer_bytes = max;
        self
    }

    /// Counts member outcomes into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<S, RB> FanOut<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    /// Sends a copy of `request` (its path, query, method and headers) to
    /// every member and returns what came back by the deadline.
    pub async fn send(&self, request: Request<Bytes>) -> Result<FanOutResult, FanOutError> {
        let ring = self.ring.latest().ok_or(FanOutError::NoRing)?;
        let deadline = Instant::now() + self.deadline;
        let members = members(&ring);
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let calls = members.into_iter().map(|(member, state)| {
            let mut inner = self.inner.clone();
            let mut parts = parts.clone();
            let body = body.clone();
            let path = path.clone();
            let max = self.max_answer_bytes;
            let span = tracing::debug_span!(
                "locus.fanout",
                slot = member.slot,
                pod = %member.pod,
            );
            async move {
                if state == SlotState::Unavailable {
                    return Err(Failure {
                        member,
                        error: MemberError::Unavailable,
                    });
                }
                let uri = member_uri(member.address, path);
                let pod = HeaderValue::from_str(&member.pod);
                let (Ok(uri), Ok(pod)) = (uri, pod) else {
                    return Err(Failure {
                        member,
                        error: MemberError::Upstream("invalid member address or name".into()),
                    });
                };
                parts.uri = uri;
                parts.headers.insert(headers::FANOUT, pod);
                let request = Request::from_parts(parts, Full::new(body));
                let call = async {
                    let response = inner
                        .ready()
                        .await
                        .map_err(|e| MemberError::Upstream(e.into()))?
                        .call(request)
                        .await
                        .map_err(|e| MemberError::Upstream(e.into()))?;
                    if !response.status().is_success() {
                        return Err(MemberError::Status(response.status()));
                    }
                    let (head, body) = response.into_parts();
                    let bytes = Limited::new(body, max)
                        .collect()
                        .await
                        .map_err(MemberError::Body)?
                        .to_bytes();
                    Ok(Response::from_parts(head, bytes))
                };
                match tokio::time::timeout_at(deadline, call).await {
                    Ok(Ok(response)) => Ok(Answer { member, response }),
                    Ok(Err(error)) => Err(Failure { member, error }),
                    Err(_) => Err(Failure {
                        member,
                        error: MemberError::Timeout,
                    }),
                }
            }
            .instrument(span)
        });
        let outcomes = futures::future::join_all(calls).await;
        let mut result = FanOutResult {
            ring_version: ring.version(),
            members: outcomes.len(),
            answers: Vec::new(),
            failures: Vec::new(),
        };
        for outcome in outcomes {
            let label = match &outcome {
                Ok(_) => "answered",
                Err(failure) => failure.error.metric_label(),
            };
            if let Some(metrics) = &self.metrics {
                metrics.fanout_member(label);
            }
            match outcome {
                Ok(answer) => result.answers.push(answer),
                Err(failure) => {
                    tracing::debug!(pod = %failure.member.pod, error = %failure.error, "fan-out member failed");
                    result.failures.push(failure);
                }
            }
        }
        Ok(result)
    }
}

fn member_uri(address: SocketAddr, path: PathAndQuery) -> Result<Uri, http::Error> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(Authority::try_from(address.to_string())?);
    uri.path_and_query = Some(path);
    Ok(Uri::from_parts(uri)?)
}
