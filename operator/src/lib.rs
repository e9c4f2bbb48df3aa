//! The Locus operator: reconciles `StatefulService` resources (`locus.dev/v1alpha1`).
//!
//! - [`crd`]: the resource's types and generated `CustomResourceDefinition`.
//! - [`plan`]: the pure planner, observed state → next actions (the state machine).
//! - [`resources`]: the objects the operator owns, built from the service.
//! - [`executor`] and [`controller`]: the thin layer that reads, plans and writes;
//!   [`cache`]: what it reads from the watch caches and when it reads fresh instead;
//!   [`sightings`]: the controller's memory of when it first saw the states step deadlines
//!   count from.
//! - [`leader`]: leader election over a Lease; [`metrics`] and [`server`]: `/metrics`,
//!   `/healthz`, `/readyz`; [`api_count`]: the count of requests sent to the API server.
//!
//! [`run`] puts them together; the `locus-operator` binary only reads its [`Config`] from
//! the environment and calls it.

pub mod api_count;
pub mod cache;
pub mod context;
pub mod controller;
pub mod crd;
pub mod error;
pub mod executor;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod resources;
pub mod server;
pub mod sightings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tracing::{info, warn};

pub use error::{ConfigError, Error, Result};

use controller::{Context, run_controller};
use leader::{LeaderElector, LeaseConfig};
use metrics::Metrics;
use server::Health;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace; `None` watches every namespace.
    pub namespace: Option<String>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// Leader election; `None` runs the controller at once (a single instance).
    pub leader_election: Option<LeaseConfig>,
    /// This instance's name (events' reporting instance, the Lease holder).
    pub instance: String,
}

impl Config {
    /// The configuration the environment describes (`lookup` reads a variable):
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `LOCUS_OPERATOR_WATCH_NAMESPACE` | every namespace | namespace to watch |
    /// | `LOCUS_OPERATOR_METRICS_ADDR` | `0.0.0.0:8080` | metrics and health address; `off` disables |
    /// | `LOCUS_OPERATOR_LEADER_ELECTION` | `true` | `false` runs without a Lease |
    /// | `LOCUS_OPERATOR_LEASE_NAME` | `locus-operator` | name of the Lease |
    /// | `LOCUS_OPERATOR_LEASE_NAMESPACE` | `$POD_NAMESPACE`, else `default` | namespace of the Lease |
    /// | `POD_NAME` | `$HOSTNAME`, else `locus-operator-<pid>` | this instance's identity |
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let metrics_addr = match get("LOCUS_OPERATOR_METRICS_ADDR").as_deref() {
            Some("off") => None,
            Some(addr) => Some(addr.parse().map_err(|source| ConfigError::MetricsAddr {
                value: addr.to_owned(),
                source,
            })?),
            None => Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
        };
        let instance = get("POD_NAME")
            .or_else(|| get("HOSTNAME"))
            .unwrap_or_else(|| format!("locus-operator-{}", std::process::id()));
        let election = match get("LOCUS_OPERATOR_LEADER_ELECTION").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ConfigError::LeaderElection {
                    value: other.to_owned(),
                });
            }
        };
        let leader_election = election.then(|| {
            LeaseConfig::new(
                &get("LOCUS_OPERATOR_LEASE_NAMESPACE")
                    .or_else(|| get("POD_NAMESPACE"))
                    .unwrap_or_else(|| "default".to_owned()),
                &get("LOCUS_OPERATOR_LEASE_NAME").unwrap_or_else(|| "locus-operator".to_owned()),
                &instance,
            )
        });
        Ok(Self {
            namespace: get("LOCUS_OPERATOR_WATCH_NAMESPACE"),
            metrics_addr,
            leader_election,
            instance,
        })
    }
}

/// Runs the operator until `shutdown` resolves: serves metrics and health checks, takes part
/// in leader election (if configured) and, while leading, runs the controller. Losing the
/// Lease stops the controller at once (in-flight writes are abandoned) and goes back to
/// standing by; `shutdown` lets in-flight reconciles finish, then releases the Lease.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_with_metrics(client, config, Arc::new(Metrics::new()), shutdown).await
}

/// [`run`], recording into `metrics` (which the caller may read meanwhile). Every request
/// `client` sends on the operator's behalf is counted ([`api_count`]).
pub async fn run_with_metrics(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let client = api_count::counted(client, metrics.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let server = match config.metrics_addr {
        Some(addr) => {
            let health = Health {
                metrics: metrics.clone(),
                ready: ready.clone(),
            };
            let (local, serve) = server::bind(addr, health).await?;
            info!(%local, "serving /metrics, /healthz and /readyz");
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        &config.instance,
    ));
    let namespace = config.namespace.as_deref();
    ready.store(true, Ordering::Relaxed);
    match config.leader_election {
        None => {
            metrics.leader.set(1);
            run_controller(ctx, namespace, stopped()).await;
        }
        Some(lease) => {
            let mut elector = LeaderElector::new(client, lease.clone());
            loop {
                info!(lease = %lease.name, identity = %lease.identity, "waiting for leadership");
                tokio::select! {
                    () = stopped() => break,
                    () = elector.acquire() => {}
                }
                metrics.leader.set(1);
                info!(lease = %lease.name, "leading: starting the controller");
                let lost = tokio::select! {
                    () = run_controller(ctx.clone(), namespace, stopped()) => false,
                    () = elector.hold() => true,
                };
                metrics.leader.set(0);
                if !lost {
                    elector.release().await;
                    break;
                }
                warn!(lease = %lease.name, "lost leadership: controller stopped, standing by");
            }
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> std::result::Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_lead_on_a_lease_and_serve_metrics_on_8080() {
        let c = config(&[("POD_NAME", "op-1"), ("POD_NAMESPACE", "locus-system")]).unwrap();
        assert_eq!(c.metrics_addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(c.namespace, None);
        let lease = c.leader_election.unwrap();
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.name.as_str(),
                lease.identity.as_str()
            ),
            ("locus-system", "locus-operator", "op-1")
        );
    }

    #[test]
    fn everything_can_be_overridden_and_bad_values_are_explained() {
        let c = config(&[
            ("LOCUS_OPERATOR_METRICS_ADDR", "off"),
            ("LOCUS_OPERATOR_LEADER_ELECTION", "false"),
            ("LOCUS_OPERATOR_WATCH_NAMESPACE", "shop"),
        ])
        .unwrap();
        assert!(c.metrics_addr.is_none() && c.leader_election.is_none());
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        let error = config(&[("LOCUS_OPERATOR_METRICS_ADDR", "8080")]).unwrap_err();
        assert!(
            matches!(&error, ConfigError::MetricsAddr { value, .. } if value == "8080"),
            "{error:?}"
        );
        assert_eq!(error.variable(), "LOCUS_OPERATOR_METRICS_ADDR");
        assert!(
            error.to_string().contains("LOCUS_OPERATOR_METRICS_ADDR"),
            "{error}"
        );
        let error = config(&[("LOCUS_OPERATOR_LEADER_ELECTION", "maybe")]).unwrap_err();
        assert!(
            matches!(&error, ConfigError::LeaderElection { value } if value == "maybe"),
            "{error:?}"
        );
    }
}
