//! A pod's handle on its own Pod object: the API scoped to its namespace, and
//! its name. Progress reports patch it; the shutdown reads it back.
//!
//! It sits below both [`progress`](crate::progress) and the shutdown intent
//! (`crate::intent`), so neither imports the other's parent.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// The environment variable holding the pod's own name (set it from the
/// downward API: `fieldRef: metadata.name`).
pub const POD_NAME_ENV: &str = "POD_NAME";

/// Environment variable holding the pod's namespace (downward API,
/// `fieldRef: metadata.namespace`).
pub const NAMESPACE_ENV: &str = "POD_NAMESPACE";

/// See the [module docs](self).
#[derive(Clone)]
pub(crate) struct OwnPod {
    pub(crate) api: Api<Pod>,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl std::fmt::Debug for OwnPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnPod")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl OwnPod {
    pub(crate) fn new(client: kube::Client, namespace: String, name: String) -> Self {
        Self {
            api: Api::namespaced(client, &namespace),
            namespace,
            name,
        }
    }

    /// The pod named by `POD_NAME` in `POD_NAMESPACE`, with the in-cluster
    /// client (the pod's service account); the error says what is missing.
    pub(crate) async fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("environment variable {name} is unset or empty"))
        };
        let name = var(POD_NAME_ENV)?;
        let namespace = var(NAMESPACE_ENV)?;
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes client: {e}"))?;
        Ok(Self::new(client, namespace, name))
    }
}
