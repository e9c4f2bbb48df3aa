//! PostgreSQL persistence for the chaos scenarios, behind a link that can be made slow for
//! one pod, and an audit of what reaches the table.
//!
//! [`SlowPostgres`] starts a private PostgreSQL on the cluster's bridge address and a
//! [`SlowLink`] in front of it on the same address; the pods get the link's address as
//! their `DATABASE_URL`, so a delay set for one pod's IP slows every query that pod sends
//! (write-backs, loads) while the others go at full speed.
//!
//! [`PgAudit`] polls the sample's table (`locus_sessions`) and checks that a session's
//! persisted (epoch, version) never goes back: the store writes back conditionally (never
//! over a higher ownership epoch, nor a higher version of the same epoch), so a late
//! write-back from a pod that handed the session off must be refused. A stamp that
//! decreases between two polls is a stale state put back over a newer one.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locus_e2e::chaos::ClusterNet;
use locus_e2e::postgres::{PrivatePostgres, pg_script};
use locus_e2e::slowlink::SlowLink;
use serde::Serialize;

use super::secs;

/// How often the audit reads the table.
const POLL: Duration = Duration::from_millis(500);

/// A private PostgreSQL reached by the pods through a [`SlowLink`].
pub struct SlowPostgres {
    pub pg: Arc<PrivatePostgres>,
    pub link: SlowLink,
    /// What the pods get as `DATABASE_URL` (the link's address).
    pub url: String,
}

impl SlowPostgres {
    /// Starts PostgreSQL (installing it first if needed, see `examples/tests/pg.sh`) in `dir`,
    /// listening on the bridge address for the pod range, and the link in front of it.
    pub async fn start(net: &ClusterNet, dir: std::path::PathBuf) -> Self {
        let (gateway, pod_cidr) = (net.gateway, net.pod_cidr.clone());
        let pg = tokio::task::spawn_blocking(move || {
            PrivatePostgres::start(&pg_script(), dir, gateway, &pod_cidr)
        })
        .await
        .unwrap()
        .unwrap();
        let listen = SocketAddr::V4(SocketAddrV4::new(gateway, 0));
        let link = SlowLink::start(listen, SocketAddr::V4(pg.addr()))
            .await
            .unwrap();
        let SocketAddr::V4(proxy) = link.local_addr() else {
            panic!("the link listens on an IPv4 address");
        };
        let url = PrivatePostgres::url_for(*proxy.ip(), proxy.port());
        Self {
            pg: Arc::new(pg),
            link,
            url,
        }
    }
}

/// What [`PgAudit`] saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PgAuditReport {
    /// Reads of the table that answered.
    pub polls: u64,
    /// Reads that failed (PostgreSQL busy or restarting; not a finding).
    pub failed_polls: u64,
    /// Sessions with a row at the last read.
    pub rows: usize,
    /// Times a row's (epoch, version) was seen higher than at the previous read
    /// (write-backs seen).
    pub advances: u64,
    /// Times a row's (epoch, version) was seen lower than before: an older state written
    /// over a newer.
    pub decreases: u64,
    /// Up to ten of them, in words.
    pub examples: Vec<String>,
}

#[derive(Default)]
struct AuditState {
    report: PgAuditReport,
    highest: HashMap<String, (i64, i64)>,
}

/// Polls the sample's table every [`POLL`] until [`PgAudit::finish`].
pub struct PgAudit {
    state: Arc<Mutex<AuditState>>,
    task: tokio::task::JoinHandle<()>,
}

impl PgAudit {
    pub fn start(pg: Arc<PrivatePostgres>, clock: Instant) -> Self {
        let state: Arc<Mutex<AuditState>> = Arc::default();
        let sink = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let db = pg.clone();
                let read = tokio::task::spawn_blocking(move || {
                    db.query("SELECT encode(key, 'escape'), epoch, version FROM locus_sessions")
                })
                .await;
                let at = secs(clock.elapsed());
                {
                    let Ok(mut state) = sink.lock() else { return };
                    match read {
                        Ok(Ok(text)) => state.record(&text, at),
                        _ => state.report.failed_polls += 1,
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Self { state, task }
    }

    /// Stops polling (after one last read) and returns what was seen.
    pub async fn finish(self) -> PgAuditReport {
        tokio::time::sleep(POLL * 2).await;
        self.task.abort();
        self.state
            .lock()
            .map(|s| s.report.clone())
            .unwrap_or_default()
    }
}

impl AuditState {
    /// One read of the table: `key|epoch|version` lines.
    fn record(&mut self, text: &str, at: f64) {
        self.report.polls += 1;
        let mut rows = 0;
        for line in text.lines() {
            let mut fields = line.rsplitn(3, '|');
            let (Some(version), Some(epoch), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (Ok(epoch), Ok(version)) =
                (epoch.trim().parse::<i64>(), version.trim().parse::<i64>())
            else {
                continue;
            };
            let stamp = (epoch, version);
            rows += 1;
            match self.highest.get_mut(key) {
                Some(highest) if stamp > *highest => {
                    *highest = stamp;
                    self.report.advances += 1;
                }
                Some(highest) if stamp < *highest => {
                    self.report.decreases += 1;
                    if self.report.examples.len() < 10 {
                        self.report.examples.push(format!(
                            "t={at:.1}s: session {key} persisted at epoch {epoch} version {version} after epoch {} version {}",
                            highest.0, highest.1
                        ));
                    }
                }
                Some(_) => {}
                None => {
                    self.highest.insert(key.to_owned(), stamp);
                }
            }
        }
        self.report.rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_that_goes_back_is_found() {
        let mut state = AuditState::default();
        state.record("lg-a-1|2|3\nlg-a-2|2|1", 1.0);
        state.record("lg-a-1|2|5\nlg-a-2|2|1\nlg-a-3|2|2", 2.0);
        assert_eq!(
            (
                state.report.advances,
                state.report.decreases,
                state.report.rows
            ),
            (1, 0, 3)
        );
        // A newer epoch at a lower version is an advance; an older epoch at a
        // higher version, or a lower version of the same epoch, goes back.
        state.record("lg-a-1|2|4\nlg-a-2|3|0\nlg-a-3|1|9", 3.0);
        assert_eq!((state.report.advances, state.report.decreases), (2, 2));
        assert!(
            state.report.examples[0]
                .contains("lg-a-1 persisted at epoch 2 version 4 after epoch 2 version 5")
        );
        assert!(state.report.examples[1].contains("lg-a-3 persisted at epoch 1 version 9"));
    }
}
