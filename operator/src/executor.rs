//! The thin executor: applies a plan's [`Actions`] and keeps the service's fixed objects
//! (account, Role, Service, Secret, budget) as they should be.
//!
//! Every write is a server-side apply with the field manager [`FIELD_MANAGER`], forced,
//! except those that cannot be: the handoff Secret is created once with a POST (an apply
//! could overwrite the key), in-place updates patch only the images (a re-apply of the whole
//! pod would also claim fields that admission plugins added), deletions, and the ring
//! `ConfigMap`, which is never written blindly ([`RingWrite`]): created with a POST when the
//! plan was made without one, else applied with the `resourceVersion` the plan was made from
//! as a precondition, so that a writer with a stale view (a paused, deposed leader) is refused
//! instead of publishing another document under a version already used. Nothing is written
//! when the object already has what the operator wants: fixed objects are compared with what
//! the API server holds ([`crate::resources::up_to_date`]; not read again while what they
//! should be is unchanged and they were checked less than
//! [`FIXED_RECHECK`](crate::context::FIXED_RECHECK) ago), the ring is written only when the
//! plan publishes one, the status only when it differs.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cache::PodWrites;
use crate::context::Context;
use crate::crd::{StatefulService, StatefulServiceStatus};
use crate::error::{Error, Result};
use crate::plan::{Actions, PublishedRing, handoff_secret};
use crate::resources;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "locus-operator";

/// How a new ring document is written, given what the plan was made from.
#[derive(Clone, Debug, PartialEq)]
pub enum RingWrite {
    /// No ring `ConfigMap` existed: create it (refused with 409 if one appeared meanwhile).
    Create(ConfigMap),
    /// Apply it with `metadata.resourceVersion` set to the version read: the API server
    /// refuses (409) if the `ConfigMap` changed since.
    Update(ConfigMap),
}

impl RingWrite {
    /// The write of `published` for `svc`, the ring `ConfigMap` having been read with
    /// `resource_version` (`None`: it did not exist).
    pub fn new(
        svc: &StatefulService,
        published: &PublishedRing,
        resource_version: Option<&str>,
    ) -> Result<Self, locus_contract::ring::RingError> {
        let mut config_map = resources::ring_config_map(svc, published)?;
        Ok(match resource_version {
            None => Self::Create(config_map),
            Some(version) => {
                config_map.metadata.resource_version = Some(version.to_owned());
                Self::Update(config_map)
            }
        })
    }
}

/// Applies plans for one service.
pub struct Executor<'a> {
    ctx: &'a Context,
    svc: &'a StatefulService,
    namespace: String,
    name: String,
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl<'a> Executor<'a> {
    /// An executor for `svc`, which must come from the API server (namespace and name set).
    pub fn new(ctx: &'a Context, svc: &'a StatefulService) -> Self {
        Self {
            ctx,
            svc,
            namespace: svc.namespace().unwrap_or_default(),
            name: svc.name_any(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Server-side applies `desired`.
    async fn apply<K>(&self, desired: &K, kind: &'static str, resource: &'static str) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = desired.name_any();
        self.api::<K>()
            .patch(&name, &Self::apply_params(), &Patch::Apply(desired))
            .await
            .map_err(|source| Error::Apply {
                kind,
                namespace: self.namespace.clone(),
                name: name.clone(),
                source,
            })?;
        self.ctx.metrics.write(resource, "apply");
        debug!(kind, %name, "applied");
        Ok(())
    }

    /// Applies `desired` unless the API server already holds everything it sets.
    async fn ensure<K>(&self, desired: K, kind: &'static str, resource: &'static str) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = desired.name_any();
        // Found or made as it should be a moment ago, and what it should be is unchanged.
        let uid = self.svc.metadata.uid.as_deref().unwrap_or_default();
        let hash = {
            let mut hasher = DefaultHasher::new();
            serde_json::to_vec(&desired)
                .unwrap_or_default()
                .hash(&mut hasher);
            hasher.finish()
        };
        if self.ctx.fixed_is_known(uid, kind, hash) {
            return Ok(());
        }
        let observed = self
            .api::<K>()
            .get_opt(&name)
            .await
            .map_err(|source| Error::Read {
                kind,
                namespace: self.namespace.clone(),
                name: name.clone(),
                source,
            })?;
        if !observed.is_some_and(|o| resources::up_to_date(&desired, &o)) {
            self.apply(&desired, kind, resource).await?;
        }
        self.ctx.fixed_checked(uid, kind, hash);
        Ok(())
    }

    /// Creates the handoff Secret if it does not exist; never rewrites it.
    async fn ensure_handoff_secret(&self) -> Result<()> {
        let name = handoff_secret(&self.name);
        let api = self.api::<Secret>();
        let read_error = |source| Error::Read {
            kind: "Secret",
            namespace: self.namespace.clone(),
            name: name.clone(),
            source,
        };
        let uid = self.svc.metadata.uid.as_deref().unwrap_or_default();
        if self.ctx.fixed_is_known(uid, "Secret", 0) {
            return Ok(());
        }
        if api
            .get_metadata_opt(&name)
            .await
            .map_err(read_error)?
            .is_some()
        {
            self.ctx.fixed_checked(uid, "Secret", 0);
            return Ok(());
        }
        let key = resources::new_handoff_key()
            .await
            .map_err(|source| Error::HandoffKey {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        let secret = resources::handoff_secret_object(self.svc, &key);
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        match api.create(&params, &secret).await {
            Ok(_) => {
                self.ctx.metrics.write("secrets", "create");
                self.ctx.fixed_checked(uid, "Secret", 0);
                info!(namespace = %self.namespace, %name, "created the handoff key");
                Ok(())
            }
            Err(e) if is_status(&e, 409) => {
                self.ctx.fixed_checked(uid, "Secret", 0);
                Ok(())
            }
            Err(source) => Err(Error::Apply {
                kind: "Secret",
                namespace: self.namespace.clone(),
                name,
                source,
            }),
        }
    }

    /// Keeps the service's fixed objects as they should be. `pod_names` are the pods the
    /// Role must let the pods patch (every existing pod and every pod about to be created).
    pub async fn ensure_owned(&self, pod_names: &[String]) -> Result<()> {
        self.ensure(
            resources::service_account(self.svc),
            "ServiceAccount",
            "serviceaccounts",
        )
        .await?;
        self.ensure(resources::pod_role(self.svc, pod_names), "Role", "roles")
            .await?;
        self.ensure(
            resources::pod_role_binding(self.svc),
            "RoleBinding",
            "rolebindings",
        )
        .await?;
        self.ensure_handoff_secret().await?;
        self.ensure(resources::headless_service(self.svc), "Service", "services")
            .await?;
        self.ensure(
            resources::disruption_budget(self.svc),
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        )
        .await
    }

    /// Carries out `actions`: pods created and updated, the ring published, pods deleted
    /// (after the publish, so no published ring names a deleted pod), the status written,
    /// events emitted. `ring_resource_version` is the `resourceVersion` of the ring
    /// `ConfigMap` the plan was made from (`None`: there was none); a ring that changed since
    /// is not overwritten ([`Error::RingConflict`], and nothing after the publish is done).
    pub async fn execute(
        &self,
        actions: &Actions,
        observed_status: Option<&StatefulServiceStatus>,
        ring_resource_version: Option<&str>,
    ) -> Result<()> {
        let uid = self.svc.metadata.uid.as_deref().unwrap_or_default();
        for create in &actions.create {
            let pod = resources::pod(self.svc, create);
            // Recorded before the write: a write that fails after reaching the API server
            // must still be looked for.
            self.ctx.wrote_pods(
                uid,
                PodWrites {
                    created: vec![create.name.clone()],
                    deleted: Vec::new(),
                },
            );
            self.apply(&pod, "Pod", "pods").await?;
            info!(namespace = %self.namespace, pod = %create.name, slot = create.slot, "created pod");
        }
        let pods = self.api::<Pod>();
        for update in &actions.update {
            let patch = resources::in_place_patch(self.svc, update);
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            pods.patch(&update.name, &params, &Patch::Strategic(&patch))
                .await
                .map_err(|source| Error::UpdatePod {
                    namespace: self.namespace.clone(),
                    name: update.name.clone(),
                    source,
                })?;
            self.ctx.metrics.write("pods", "patch");
            info!(namespace = %self.namespace, pod = %update.name, revision = %update.revision, "updated pod in place");
        }
        if let Some(published) = &actions.publish {
            let write =
                RingWrite::new(self.svc, published, ring_resource_version).map_err(|source| {
                    Error::EncodeRing {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        source,
                    }
                })?;
            self.write_ring(&write, ring_resource_version).await?;
            if let Some(uid) = self.svc.metadata.uid.as_deref() {
                self.ctx.remember_ring(uid, published);
                self.ctx.published_ring(uid, published);
            }
            info!(
                namespace = %self.namespace,
                service = %self.name,
                version = published.ring.version(),
                phase = %published.ring.phase(),
                "published ring"
            );
        }
        for deletion in &actions.delete {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(deletion.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            self.ctx.wrote_pods(
                uid,
                PodWrites {
                    created: Vec::new(),
                    deleted: vec![deletion.uid.clone()],
                },
            );
            match pods.delete(&deletion.name, &params).await {
                Ok(_) => {
                    self.ctx.metrics.write("pods", "delete");
                    info!(namespace = %self.namespace, pod = %deletion.name, reason = deletion.reason, "deleted pod");
                }
                // Gone already, or a newer pod of that name: nothing to do.
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(source) => {
                    return Err(Error::DeletePod {
                        namespace: self.namespace.clone(),
                        name: deletion.name.clone(),
                        source,
                    });
                }
            }
        }
        if observed_status != Some(&actions.status) {
            self.write_status(&actions.status).await?;
        }
        for event in &actions.events {
            self.publish_event(event.warning, event.reason, &event.note)
                .await;
        }
        Ok(())
    }

    /// Creates or conditionally applies the ring `ConfigMap`; a refusal because it changed
    /// since it was read (409, or 404 for an update of a `ConfigMap` deleted meanwhile) is
    /// [`Error::RingConflict`].
    async fn write_ring(&self, write: &RingWrite, expected: Option<&str>) -> Result<()> {
        let api = self.api::<ConfigMap>();
        let (result, verb) = match write {
            RingWrite::Create(config_map) => {
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                };
                (api.create(&params, config_map).await, "create")
            }
            RingWrite::Update(config_map) => (
                api.patch(
                    &config_map.name_any(),
                    &Self::apply_params(),
                    &Patch::Apply(config_map),
                )
                .await,
                "apply",
            ),
        };
        let name = match write {
            RingWrite::Create(m) | RingWrite::Update(m) => m.name_any(),
        };
        match result {
            Ok(_) => {
                self.ctx.metrics.write("configmaps", verb);
                Ok(())
            }
            Err(source)
                if is_status(&source, 409)
                    || (matches!(write, RingWrite::Update(_)) && is_status(&source, 404)) =>
            {
                warn!(namespace = %self.namespace, %name, expected = ?expected, "the ring changed since it was read: not written");
                if let Some(uid) = self.svc.metadata.uid.as_deref() {
                    self.ctx.ring_refused(uid);
                }
                Err(Error::RingConflict {
                    namespace: self.namespace.clone(),
                    name,
                    expected: expected.map(str::to_owned),
                    source,
                })
            }
            Err(source) => Err(Error::Apply {
                kind: "ConfigMap",
                namespace: self.namespace.clone(),
                name,
                source,
            }),
        }
    }

    async fn write_status(&self, status: &StatefulServiceStatus) -> Result<()> {
        let api: Api<StatefulService> = self.api();
        let body = json!({
            "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            "kind": crate::crd::KIND,
            "status": status,
        });
        api.patch_status(&self.name, &Self::apply_params(), &Patch::Apply(&body))
            .await
            .map_err(|source| Error::Status {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        self.ctx.metrics.write("statefulservices/status", "apply");
        Ok(())
    }

    /// Emits an event on the service; a failure is logged, never fatal.
    pub async fn publish_event(&self, warning: bool, reason: &str, note: &str) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        match self
            .ctx
            .recorder
            .publish(&event, &self.svc.object_ref(&()))
            .await
        {
            Ok(()) => self.ctx.metrics.write("events", "create"),
            Err(error) => warn!(%error, reason, "could not publish an event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use locus_contract::ring::{
        Assignment, Pod as RingPod, Ring, RingParts, ShardCount, Slot, SlotState,
    };
    use serde_json::Value;

    use super::*;
    use crate::crd::StatefulServiceSpec;
    use crate::metrics::Metrics;
    use crate::plan::PodDeletion;

    fn service() -> StatefulService {
        let spec: StatefulServiceSpec = serde_json::from_value(json!({
            "replicas": 1,
            "shards": 4,
            "port": "http",
            "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }))
        .unwrap();
        let mut svc = StatefulService::new("chat", spec);
        svc.metadata.namespace = Some("shop".into());
        svc.metadata.uid = Some("uid-1".into());
        svc
    }

    fn published(version: u64) -> PublishedRing {
        let ring = Ring::new(RingParts {
            namespace: "shop".into(),
            service: "chat".into(),
            version,
            shards: ShardCount::new(4).unwrap(),
            vnodes: 16,
            slots: vec![Slot {
                index: 0,
                pod: RingPod {
                    name: "chat-0-abcde".into(),
                    uid: "pod-uid".into(),
                    address: "10.0.0.1:8080".parse().unwrap(),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            }],
            current: Assignment::new(vec![0; 4]).unwrap(),
            transition: locus_contract::ring::Transition::Stable,
        })
        .unwrap();
        PublishedRing { ring, meta: None }
    }

    #[test]
    fn a_ring_write_is_a_create_without_a_config_map_else_conditional_on_its_version() {
        let svc = service();
        let Ok(RingWrite::Create(created)) = RingWrite::new(&svc, &published(1), None) else {
            panic!("a create");
        };
        assert_eq!(created.metadata.resource_version, None);
        let Ok(RingWrite::Update(updated)) = RingWrite::new(&svc, &published(2), Some("41")) else {
            panic!("an update");
        };
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("41"));
        assert_eq!(updated.metadata.name.as_deref(), Some("chat-ring"));
        let body = serde_json::to_value(&updated).unwrap();
        assert_eq!(
            body["metadata"]["resourceVersion"], "41",
            "sent as a precondition"
        );
    }

    /// What the stub API server received: method, path and query, body.
    type Log = Arc<Mutex<Vec<(String, String, Value)>>>;

    /// A client whose API server answers ring `ConfigMap` writes with `ring_status` (a
    /// `Status` for errors) and everything else with an empty object.
    fn api_server(ring_status: u16) -> (kube::Client, Log) {
        let log: Log = Arc::default();
        let seen = log.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = http_body_util::BodyExt::collect(body)
                    .await
                    .map(http_body_util::Collected::to_bytes)
                    .unwrap_or_default();
                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let target = parts
                    .uri
                    .path_and_query()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let ring = target.contains("/configmaps");
                seen.lock()
                    .unwrap()
                    .push((parts.method.to_string(), target, value.clone()));
                let (status, answer) = if ring && ring_status != 200 {
                    (
                        ring_status,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Conflict", "code": ring_status,
                               "message": "the object has been modified"}),
                    )
                } else if ring {
                    (200, value)
                } else {
                    (200, json!({}))
                };
                http::Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        answer.to_string(),
                    )))
            }
        });
        (kube::Client::new(service, "shop"), log)
    }

    fn actions(version: u64) -> Actions {
        Actions {
            create: Vec::new(),
            update: Vec::new(),
            delete: vec![PodDeletion {
                name: "chat-0-old".into(),
                uid: "old-uid".into(),
                reason: "surplus",
            }],
            publish: Some(published(version)),
            status: StatefulServiceStatus::default(),
            events: Vec::new(),
            steps: Vec::new(),
            requeue_after: None,
        }
    }

    #[tokio::test]
    async fn a_ring_changed_since_it_was_read_is_not_overwritten_and_nothing_follows() {
        for (expected, method) in [(Some("41"), "PATCH"), (None, "POST")] {
            let (client, log) = api_server(409);
            let ctx = Context::new(client, Arc::new(Metrics::new()), "test");
            let svc = service();
            let error = Executor::new(&ctx, &svc)
                .execute(&actions(9), None, expected)
                .await
                .unwrap_err();
            let Error::RingConflict {
                expected: got,
                name,
                ..
            } = &error
            else {
                panic!("{error}");
            };
            assert_eq!((got.as_deref(), name.as_str()), (expected, "chat-ring"));
            assert_eq!(error.metric_label(), "ring_conflict");
            let requests = log.lock().unwrap().clone();
            assert_eq!(requests.len(), 1, "no deletion, no status: {requests:?}");
            let (sent, target, body) = &requests[0];
            assert_eq!(sent, method);
            assert!(
                target.starts_with("/api/v1/namespaces/shop/configmaps"),
                "{target}"
            );
            assert_eq!(
                body["metadata"]["resourceVersion"].as_str(),
                expected,
                "{body}"
            );
            assert!(ctx.remembered_ring("uid-1").is_none());
        }
    }

    #[tokio::test]
    async fn a_published_ring_is_remembered_and_pods_are_deleted_after_it() {
        let (client, log) = api_server(200);
        let ctx = Context::new(client, Arc::new(Metrics::new()), "test");
        let svc = service();
        let actions = actions(9);
        Executor::new(&ctx, &svc)
            .execute(&actions, Some(&actions.status), Some("41"))
            .await
            .unwrap();
        let methods: Vec<String> = log.lock().unwrap().iter().map(|r| r.0.clone()).collect();
        assert_eq!(methods, ["PATCH", "DELETE"]);
        let remembered = ctx.remembered_ring("uid-1").unwrap();
        assert_eq!((remembered.last.ring.version(), remembered.highest), (9, 9));
    }
}

#[cfg(test)]
mod fixed_tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::crd::StatefulServiceSpec;
    use crate::metrics::Metrics;

    /// A client whose API server answers every GET with 404 and every write with `{}`; the
    /// methods it received are logged.
    fn api_server() -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = log.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                let method = request.method().to_string();
                seen.lock().unwrap().push(method.clone());
                let (status, body) = if method == "GET" {
                    (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404}),
                    )
                } else {
                    (200, json!({}))
                };
                http::Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        body.to_string(),
                    )))
            }
        });
        (kube::Client::new(service, "shop"), log)
    }

    #[tokio::test]
    async fn fixed_objects_are_read_again_only_when_what_they_should_be_changes() {
        let (client, log) = api_server();
        let ctx = Context::new(client, Arc::new(Metrics::new()), "test");
        let spec: StatefulServiceSpec = serde_json::from_value(json!({
            "replicas": 1,
            "port": "http",
            "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }))
        .unwrap();
        let mut svc = StatefulService::new("chat", spec);
        svc.metadata.namespace = Some("shop".into());
        svc.metadata.uid = Some("uid-1".into());
        let executor = Executor::new(&ctx, &svc);
        let gets = || log.lock().unwrap().iter().filter(|m| *m == "GET").count();
        let pods = vec!["chat-0-a".to_owned()];
        executor.ensure_owned(&pods).await.unwrap();
        // Account, Role, RoleBinding, Secret, Service, budget.
        assert_eq!(gets(), 6);
        executor.ensure_owned(&pods).await.unwrap();
        assert_eq!(gets(), 6, "nothing read again");
        // A new pod changes the Role only.
        let pods = vec!["chat-0-a".to_owned(), "chat-1-b".to_owned()];
        executor.ensure_owned(&pods).await.unwrap();
        assert_eq!(gets(), 7);
    }
}
