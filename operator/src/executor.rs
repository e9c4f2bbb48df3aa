//! The thin executor: applies a plan's [`Actions`] and keeps the service's fixed objects
//! (account, Role, Service, Secret, budget) as they should be.
//!
//! Every write is a server-side apply with the field manager [`FIELD_MANAGER`], forced,
//! except three that cannot be: the handoff Secret is created once with a POST (an apply
//! could overwrite the key), in-place updates patch only the images (a re-apply of the whole
//! pod would also claim fields that admission plugins added), and deletions. Nothing is
//! written when the object already has what the operator wants: fixed objects are compared
//! with what the API server holds ([`crate::resources::up_to_date`]), the ring is written only
//! when the plan publishes one, the status only when it differs.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::controller::Context;
use crate::crd::{StatefulService, StatefulServiceStatus};
use crate::error::{Error, Result};
use crate::plan::{Actions, handoff_secret};
use crate::resources;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "locus-operator";

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
        if observed.is_some_and(|o| resources::up_to_date(&desired, &o)) {
            return Ok(());
        }
        self.apply(&desired, kind, resource).await
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
        if api
            .get_metadata_opt(&name)
            .await
            .map_err(read_error)?
            .is_some()
        {
            return Ok(());
        }
        let key = resources::new_handoff_key().map_err(|source| Error::HandoffKey {
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
                info!(namespace = %self.namespace, %name, "created the handoff key");
                Ok(())
            }
            Err(e) if is_status(&e, 409) => Ok(()),
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
    /// events emitted.
    pub async fn execute(
        &self,
        actions: &Actions,
        observed_status: Option<&StatefulServiceStatus>,
    ) -> Result<()> {
        for create in &actions.create {
            let pod = resources::pod(self.svc, create);
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
            let config_map = resources::ring_config_map(self.svc, published).map_err(|source| {
                Error::EncodeRing {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    source,
                }
            })?;
            self.apply::<ConfigMap>(&config_map, "ConfigMap", "configmaps")
                .await?;
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
