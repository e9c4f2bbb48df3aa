//! Leader election over a `coordination.k8s.io/v1` Lease, so that only one operator instance
//! writes at a time while standbys wait to take over.
//!
//! The holder renews the Lease every `retry_period`; a standby takes it over once the Lease
//! has not changed for `lease_duration` as measured on the standby's own clock (like
//! client-go, it compares what it observed, not timestamps written by another machine, so
//! clock skew does not matter). Every write is conditional on the `resourceVersion` read just
//! before, so two candidates never both win: the loser gets a conflict. A holder that cannot
//! renew for `renew_deadline` (shorter than `lease_duration`) gives up leadership before
//! anyone else can take it, and stops writing.

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
    /// How long the holder keeps leading while renewals fail.
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

    /// Waits until this instance holds the Lease (errors are logged and retried).
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Keeps renewing; returns when leadership is lost (another holder, or no successful
    /// renewal for `renew_deadline`).
    pub async fn hold(&mut self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.config.name, "another instance holds the Lease");
                    return;
                }
                Err(error) => {
                    warn!(%error, "could not renew the Lease");
                    if renewed.elapsed() >= self.config.renew_deadline {
                        return;
                    }
                }
            }
        }
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
