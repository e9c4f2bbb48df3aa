//! The pod dispatcher: watches the pods bound to this node and runs one worker per pod.
//!
//! The watch uses the field selector `spec.nodeName=<node>`. A new UID gets a worker
//! (`pod.rs`); later versions of the pod are handed to it; a pod that disappears (a
//! delete event, or missing from a re-list) is reported as gone. Pods that already
//! reached `Succeeded`/`Failed` before the agent saw them are not run again. On shutdown
//! every worker is told to stop and awaited.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use crate::agent::Agent;
use crate::pod::{self, PodSignal};

struct Dispatcher {
    agent: Arc<Agent>,
    workers: HashMap<String, watch::Sender<PodSignal>>,
    tasks: JoinSet<()>,
    task_uids: HashMap<Id, String>,
    /// Workers that finished, until the API confirms the pod is gone.
    finished: HashSet<String>,
    /// UIDs seen during a re-list.
    listing: Option<HashSet<String>>,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Dispatcher {
    fn upsert(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(seen) = &mut self.listing {
            seen.insert(uid.clone());
        }
        if self.finished.contains(&uid) {
            return;
        }
        if let Some(tx) = self.workers.get(&uid) {
            tx.send_modify(|s| s.pod = pod);
            return;
        }
        if is_terminal(&pod) && pod.metadata.deletion_timestamp.is_none() {
            return;
        }
        let (tx, rx) = watch::channel(PodSignal {
            pod,
            gone: false,
            agent_stopping: false,
        });
        let handle = self.tasks.spawn(pod::run(self.agent.clone(), rx));
        self.task_uids.insert(handle.id(), uid.clone());
        self.workers.insert(uid, tx);
    }

    fn gone(&mut self, uid: &str) {
        self.finished.remove(uid);
        if let Some(tx) = self.workers.get(uid) {
            tx.send_modify(|s| s.gone = true);
        }
    }

    fn reaped(&mut self, id: Id) {
        if let Some(uid) = self.task_uids.remove(&id) {
            self.workers.remove(&uid);
            self.finished.insert(uid);
        }
    }

    fn on_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Apply(pod) | Event::InitApply(pod) => self.upsert(pod),
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid {
                    self.gone(&uid);
                }
            }
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitDone => {
                if let Some(seen) = self.listing.take() {
                    let missing: Vec<String> = self
                        .workers
                        .keys()
                        .chain(self.finished.iter())
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in missing {
                        self.gone(&uid);
                    }
                }
            }
        }
    }
}

/// Runs until `shutdown` turns true, then stops every pod.
pub async fn run(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", agent.flags.node_name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut d = Dispatcher {
        agent,
        workers: HashMap::new(),
        tasks: JoinSet::new(),
        task_uids: HashMap::new(),
        finished: HashSet::new(),
        listing: None,
    };
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => d.on_event(event),
                Some(Err(e)) => tracing::warn!("watching pods: {e}"),
                None => break,
            },
            Some(done) = d.tasks.join_next_with_id(), if !d.tasks.is_empty() => {
                match done {
                    Ok((id, ())) => d.reaped(id),
                    Err(e) => {
                        tracing::error!("a pod worker failed: {e}");
                        d.reaped(e.id());
                    }
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    for tx in d.workers.values() {
        tx.send_modify(|s| s.agent_stopping = true);
    }
    while d.tasks.join_next().await.is_some() {}
}
