//! Reading a service's objects through the API server: the `StatefulService`, its ring
//! `ConfigMap` and its pods, as [`Objects`] for [`report::build`](crate::report::build).
//!
//! Three reads, all plain `get`/`list` (RBAC: `get` on `statefulservices.locus.dev`, `get` on
//! `configmaps`, `list` on `pods` in the namespace). Nothing is written.

use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use locus_contract::crd::StatefulService;
use locus_contract::ring::RingDocument;
use locus_operator::plan::LABEL_SERVICE;
use tracing::debug;

use crate::error::{Error, Result};

/// What the API server holds for one service.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The service.
    pub service: StatefulService,
    /// The ring `ConfigMap` (`<name>-ring`); `None` if the operator has not published one.
    pub ring: Option<ConfigMap>,
    /// The pods labelled `locus.dev/service=<name>` and controlled by the service.
    pub pods: Vec<Pod>,
}

/// A client from `--kubeconfig` (with `--context`) or, without it, from the environment as
/// kubectl finds it (`KUBECONFIG`, `~/.kube/config`, in-cluster), and the namespace of the
/// chosen context (`default` if it names none).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let error = |source| Error::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(error)?
        }
        (None, Some(_)) => {
            Config::from_kubeconfig(&options)
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: std::env::var_os("KUBECONFIG").map_or_else(
                        || Path::new("~/.kube/config").to_owned(),
                        std::path::PathBuf::from,
                    ),
                    source,
                })?
        }
        (None, None) => Config::infer()
            .await
            .map_err(|source| Error::Infer { source })?,
    };
    let namespace = config.default_namespace.clone();
    debug!(cluster = %config.cluster_url, %namespace, "client configured");
    let client = Client::try_from(config).map_err(|source| Error::Client { source })?;
    Ok((client, namespace))
}

/// Reads the service `name` in `namespace`, its ring `ConfigMap` and its pods.
pub async fn objects(client: &Client, namespace: &str, name: &str) -> Result<Objects> {
    let services: Api<StatefulService> = Api::namespaced(client.clone(), namespace);
    let service = services
        .get_opt(name)
        .await
        .map_err(|source| Error::Api {
            action: format!("get statefulservice {namespace}/{name}"),
            source,
        })?
        .ok_or_else(|| Error::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let ring_name = RingDocument::config_map_name(name);
    let ring = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&ring_name)
        .await
        .map_err(|source| Error::Api {
            action: format!("get configmap {namespace}/{ring_name}"),
            source,
        })?;
    let selector = format!("{LABEL_SERVICE}={name}");
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Api {
            action: format!("list pods -l {selector} in namespace {namespace}"),
            source,
        })?
        .items;
    let uid = service.metadata.uid.clone();
    let pods: Vec<Pod> = pods
        .into_iter()
        .filter(|pod| controlled_by(pod, uid.as_deref()))
        .collect();
    debug!(
        ring = ring.is_some(),
        pods = pods.len(),
        "read {namespace}/{name}"
    );
    Ok(Objects {
        service,
        ring,
        pods,
    })
}

/// True if `pod`'s controller is the object with UID `uid` (or if the service's UID is
/// unknown, which the API server never returns).
fn controlled_by(pod: &Pod, uid: Option<&str>) -> bool {
    let Some(uid) = uid else { return true };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}
