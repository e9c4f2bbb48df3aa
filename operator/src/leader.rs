//! Leader election over a `coordination.k8s.io/v1` Lease, so that only one operator instance
//! writes at a time while standbys wait to take over.
//!
//! The holder renews the Lease every `retry_period`; a standby takes it over once the Lease
//! has not changed for `lease_duration` as measured on the standby's own clock (like
//! client-go, it compares what it observed, not timestamps written by another machine, so
//! clock skew does not matter). Every write is conditional on the `resourceVersion` read just
//! before, so two candidates never both win: the loser gets a conflict.
//!
//! The holder keeps its own account of its tenure ([`Tenure`]) on its monotonic clock
//! (`tokio::time::Instant`), never by comparing its clock with the Lease's `renewTime`: a
//! standby cannot count the Lease's expiry from before the holder *sent* its last successful
//! write, so the holder counts from that instant too. Every acquire or renew is bounded by the
//! renew deadline ([`LeaseConfig::effective_renew_deadline`]: at most two thirds of the lease
//! duration), and the holder stops leading — the controller and its writes are stopped — as
//! soon as no renewal has succeeded within it, which is before anyone else can take the Lease.
//! A write already on its way when the holder stops can still land; the ring's writes carry a
//! `resourceVersion` precondition for that reason (see [`crate::executor::RingWrite`]).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::executor::FIELD_MANAGER;

/// Where the Lease is and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This instance's identity (its pod name).
    pub identity: String,
    /// How long a Lease that is not renewed stays valid.
    pub lease_duration: Duration,
    /// How long the holder keeps leading while renewals fail (capped at two thirds of
    /// `lease_duration`, see [`Self::effective_renew_deadline`]).
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby retries.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The usual timings (15 s lease, 10 s renew deadline, 2 s retry) for `identity`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The renew deadline in force: `renew_deadline`, but at most two thirds of
    /// `lease_duration`, so that the holder stops leading well before a standby may take the
    /// Lease even if the two clocks run at slightly different rates.
    pub fn effective_renew_deadline(&self) -> Duration {
        self.renew_deadline.min(self.lease_duration * 2 / 3)
    }
}

/// How one renewal attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The Lease was written with this instance as the holder.
    Renewed,
    /// Another instance holds the Lease.
    Superseded,
    /// The API server refused, failed or did not answer in time.
    Failed,
}

/// What the holder does after a renewal attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep leading; the next attempt is due at this instant.
    Lead(Instant),
    /// Another instance holds the Lease: stop leading.
    Superseded,
    /// No renewal succeeded within the renew deadline: stop leading before the Lease can
    /// expire for the others.
    DeadlinePassed,
}

/// The holder's account of its tenure, on its own monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure {
    /// When the last successful acquire or renewal was sent: the Lease was not written
    /// before, so no standby counts its expiry from an earlier instant.
    renewed_at: Instant,
    renew_deadline: Duration,
    lease_duration: Duration,
    retry_period: Duration,
}

impl Tenure {
    /// A tenure whose last successful write was sent at `sent`.
    pub fn new(sent: Instant, config: &LeaseConfig) -> Self {
        Self {
            renewed_at: sent,
            renew_deadline: config.effective_renew_deadline(),
            lease_duration: config.lease_duration,
            retry_period: config.retry_period,
        }
    }

    /// The instant the holder stops leading unless a renewal succeeds first.
    pub fn give_up_at(&self) -> Instant {
        self.renewed_at + self.renew_deadline
    }

    /// The earliest instant a standby may take the Lease over (the holder gives up before).
    pub fn expires_at(&self) -> Instant {
        self.renewed_at + self.lease_duration
    }

    /// When the next renewal is due after one that ended at `now`: a retry period later, but
    /// never after [`Self::give_up_at`].
    pub fn next_attempt(&self, now: Instant) -> Instant {
        (now + self.retry_period).min(self.give_up_at())
    }

    /// The decision after an attempt sent at `sent` that ended at `now` with `outcome`.
    pub fn after(&mut self, sent: Instant, outcome: Renewal, now: Instant) -> Verdict {
        match outcome {
            Renewal::Superseded => return Verdict::Superseded,
            // A write sent after the deadline does not count: the holder must already have
            // stopped leading by then.
            Renewal::Renewed if sent < self.give_up_at() => {
                self.renewed_at = self.renewed_at.max(sent);
            }
            Renewal::Renewed | Renewal::Failed => {}
        }
        if now >= self.give_up_at() {
            Verdict::DeadlinePassed
        } else {
            Verdict::Lead(self.next_attempt(now))
        }
    }
}

/// What a standby last saw of the Lease, and when.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
}

/// A candidate for leadership.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    seen: Option<(Seen, Instant)>,
    /// Set by [`Self::acquire`], kept up to date by [`Self::hold`], cleared when leadership
    /// is lost.
    tenure: Option<Tenure>,
}

fn lease_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            seen: None,
            tenure: None,
        }
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    fn record(
        &self,
        acquire: Option<MicroTime>,
        transitions: i32,
        version: Option<String>,
    ) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version: version,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(self.config.lease_duration)),
                acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Writes `lease` conditionally on its `resourceVersion`; `false` on a conflict.
    async fn write(&self, lease: &Lease) -> Result<bool> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self
            .api
            .patch(&self.config.name, &params, &Patch::Apply(lease))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// One attempt to acquire or renew: `true` if this instance holds the Lease now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let Some(lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            let lease = self.record(None, 0, None);
            let params = PostParams {
                dry_run: false,
                field_manager: Some(FIELD_MANAGER.to_owned()),
            };
            return match self.api.create(&params, &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let version = lease.metadata.resource_version.clone();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder.as_deref() == Some(self.config.identity.as_str()) {
            let renewed = self.record(spec.acquire_time.clone(), transitions, version);
            return self.write(&renewed).await;
        }
        let seen = Seen {
            holder: holder.clone(),
            renew_time: spec.renew_time.clone(),
            resource_version: version.clone(),
        };
        let now = Instant::now();
        let since = match &self.seen {
            Some((last, at)) if *last == seen => *at,
            _ => {
                self.seen = Some((seen, now));
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        if holder.is_some() && now.duration_since(since) < duration {
            return Ok(false);
        }
        let taken = self.record(None, transitions + 1, version);
        let won = self.write(&taken).await?;
        if won {
            info!(lease = %self.config.name, previous = ?holder, "took over the leader Lease");
        }
        Ok(won)
    }

    /// One attempt bounded by the renew deadline: how it ended.
    async fn attempt(&mut self, until: Instant) -> Renewal {
        match tokio::time::timeout_at(until, self.try_acquire_or_renew()).await {
            Ok(Ok(true)) => Renewal::Renewed,
            Ok(Ok(false)) => Renewal::Superseded,
            Ok(Err(error)) => {
                warn!(%error, lease = %self.config.name, "leader election");
                Renewal::Failed
            }
            Err(_) => {
                warn!(lease = %self.config.name, "no answer from the API server within the renew deadline");
                Renewal::Failed
            }
        }
    }

    /// Waits until this instance holds the Lease (errors are logged and retried; every
    /// attempt is bounded by the renew deadline).
    pub async fn acquire(&mut self) {
        loop {
            let sent = Instant::now();
            let until = sent + self.config.effective_renew_deadline();
            if self.attempt(until).await == Renewal::Renewed {
                self.tenure = Some(Tenure::new(sent, &self.config));
                return;
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Keeps renewing; returns when leadership is lost: another instance holds the Lease, or
    /// no renewal succeeded within the renew deadline of the last successful one (on this
    /// instance's monotonic clock; each attempt is cut off at that deadline). Returns at once
    /// if [`Self::acquire`] did not succeed first.
    pub async fn hold(&mut self) {
        let Some(tenure) = self.tenure else {
            warn!(lease = %self.config.name, "not holding the Lease");
            return;
        };
        let mut next = tenure.next_attempt(Instant::now());
        loop {
            tokio::time::sleep_until(next).await;
            let Some(mut tenure) = self.tenure else {
                return;
            };
            let sent = Instant::now();
            let outcome = if sent < tenure.give_up_at() {
                self.attempt(tenure.give_up_at()).await
            } else {
                Renewal::Failed
            };
            let verdict = tenure.after(sent, outcome, Instant::now());
            self.tenure = match verdict {
                Verdict::Lead(_) => Some(tenure),
                Verdict::Superseded | Verdict::DeadlinePassed => None,
            };
            match verdict {
                Verdict::Lead(at) => next = at,
                Verdict::Superseded => {
                    warn!(lease = %self.config.name, "another instance holds the Lease");
                    return;
                }
                Verdict::DeadlinePassed => {
                    warn!(
                        lease = %self.config.name,
                        deadline = ?self.config.effective_renew_deadline(),
                        "no renewal within the renew deadline: stopping before the Lease can expire"
                    );
                    return;
                }
            }
        }
    }

    /// This instance's tenure, while it leads.
    pub fn tenure(&self) -> Option<Tenure> {
        self.tenure
    }

    /// Gives the Lease up (clears the holder) so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        let mut released = self.record(
            spec.acquire_time,
            spec.lease_transitions.unwrap_or(0),
            lease.metadata.resource_version,
        );
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = Some(String::new());
        }
        if let Err(error) = self.write(&released).await {
            warn!(%error, "could not release the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use serde_json::json;

    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig::new("ns", "locus-operator", "me")
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_renew_deadline_is_at_most_two_thirds_of_the_lease() {
        let mut c = config();
        assert_eq!(c.effective_renew_deadline(), secs(10));
        c.renew_deadline = secs(20);
        assert_eq!(c.effective_renew_deadline(), secs(10));
        c.renew_deadline = secs(4);
        assert_eq!(c.effective_renew_deadline(), secs(4));
        let t0 = Instant::now();
        let tenure = Tenure::new(t0, &config());
        assert!(tenure.give_up_at() < tenure.expires_at());
    }

    #[test]
    fn a_renewal_counts_from_when_it_was_sent_not_answered() {
        let t0 = Instant::now();
        let mut tenure = Tenure::new(t0, &config());
        assert_eq!(tenure.give_up_at(), t0 + secs(10));
        // Sent at 2 s, answered at 9 s: the Lease may have been written at 2 s already.
        let verdict = tenure.after(t0 + secs(2), Renewal::Renewed, t0 + secs(9));
        assert_eq!(verdict, Verdict::Lead(t0 + secs(11)));
        assert_eq!(tenure.give_up_at(), t0 + secs(12));
        assert_eq!(tenure.expires_at(), t0 + secs(17));
    }

    #[test]
    fn failures_keep_leading_until_the_deadline_then_step_down() {
        let t0 = Instant::now();
        let mut tenure = Tenure::new(t0, &config());
        assert_eq!(
            tenure.after(t0 + secs(2), Renewal::Failed, t0 + secs(3)),
            Verdict::Lead(t0 + secs(5))
        );
        // The next attempt is never due after the deadline.
        assert_eq!(
            tenure.after(t0 + secs(7), Renewal::Failed, t0 + secs(9)),
            Verdict::Lead(t0 + secs(10))
        );
        assert_eq!(
            tenure.after(t0 + secs(9), Renewal::Failed, t0 + secs(10)),
            Verdict::DeadlinePassed
        );
        assert_eq!(tenure.give_up_at(), t0 + secs(10), "failures move nothing");
    }

    #[test]
    fn a_renewal_sent_after_the_deadline_does_not_count() {
        let t0 = Instant::now();
        let mut tenure = Tenure::new(t0, &config());
        let verdict = tenure.after(t0 + secs(11), Renewal::Renewed, t0 + secs(11));
        assert_eq!(verdict, Verdict::DeadlinePassed);
    }

    #[test]
    fn another_holder_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut tenure = Tenure::new(t0, &config());
        assert_eq!(
            tenure.after(t0 + secs(2), Renewal::Superseded, t0 + secs(2)),
            Verdict::Superseded
        );
    }

    /// A stub API server for the Lease: answers with `holder` while `answering` is set,
    /// never answers otherwise; counts requests.
    struct Stub {
        answering: Arc<AtomicBool>,
        holder: Arc<std::sync::Mutex<String>>,
        requests: Arc<AtomicUsize>,
    }

    fn stub() -> (Client, Stub) {
        let stub = Stub {
            answering: Arc::new(AtomicBool::new(true)),
            holder: Arc::new(std::sync::Mutex::new("me".to_owned())),
            requests: Arc::new(AtomicUsize::new(0)),
        };
        let (answering, holder, requests) = (
            stub.answering.clone(),
            stub.holder.clone(),
            stub.requests.clone(),
        );
        let service = tower::service_fn(move |_request: http::Request<kube::client::Body>| {
            requests.fetch_add(1, Ordering::SeqCst);
            let answer = answering.load(Ordering::SeqCst);
            let holder = holder.lock().map(|h| h.clone()).unwrap_or_default();
            let future: BoxFuture<'static, Result<_, http::Error>> = Box::pin(async move {
                if !answer {
                    futures::future::pending::<()>().await;
                }
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": "locus-operator", "namespace": "ns", "resourceVersion": "7"},
                    "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
                });
                http::Response::builder()
                    .status(200)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        lease.to_string(),
                    )))
            });
            future
        });
        (Client::new(service, "ns"), stub)
    }

    #[tokio::test(start_paused = true)]
    async fn hold_stops_leading_at_the_renew_deadline_when_the_api_server_stops_answering() {
        let (client, stub) = stub();
        let mut elector = LeaderElector::new(client, config());
        elector.acquire().await;
        assert!(elector.tenure().is_some());
        // While the API server answers, the holder keeps leading (and renewing).
        let held = tokio::time::timeout(secs(60), elector.hold()).await;
        assert!(held.is_err(), "still leading after a minute of renewals");
        let renewals = stub.requests.load(Ordering::SeqCst);
        assert!(renewals >= 2 * 29, "{renewals} requests");
        let last = elector.tenure().unwrap();

        // The API server hangs: leadership ends at the renew deadline of the last renewal,
        // before the Lease can expire for a standby.
        stub.answering.store(false, Ordering::SeqCst);
        let stopped_waiting = Instant::now();
        elector.hold().await;
        let stopped = Instant::now();
        assert_eq!(stopped, last.give_up_at());
        assert!(stopped < last.expires_at());
        assert!(stopped.duration_since(stopped_waiting) <= secs(10));
        assert!(elector.tenure().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn hold_ends_when_another_instance_holds_the_lease() {
        let (client, stub) = stub();
        let mut elector = LeaderElector::new(client, config());
        elector.acquire().await;
        let start = Instant::now();
        if let Ok(mut holder) = stub.holder.lock() {
            "other".clone_into(&mut holder);
        }
        elector.hold().await;
        assert!(start.elapsed() <= secs(2), "{:?}", start.elapsed());
        assert!(elector.tenure().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_does_not_hang_on_a_silent_api_server() {
        let (client, stub) = stub();
        stub.answering.store(false, Ordering::SeqCst);
        let mut elector = LeaderElector::new(client, config());
        let attempts = tokio::time::timeout(secs(60), elector.acquire()).await;
        assert!(attempts.is_err());
        // Each attempt was cut off at the renew deadline and tried again.
        assert!(stub.requests.load(Ordering::SeqCst) >= 4);
    }
}
