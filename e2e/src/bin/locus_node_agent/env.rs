//! A container's environment, built as a kubelet builds it.
//!
//! The process starts from an empty environment (the agent's own variables, such as
//! `KUBECONFIG`, never leak into pods), then gets `PATH`, `HOME=/`, `HOSTNAME=<pod name>`,
//! `KUBERNETES_SERVICE_HOST=<gateway>` and `KUBERNETES_SERVICE_PORT=<API server port>`
//! (so kube-rs' in-cluster configuration finds the API server), then the container's
//! `envFrom` sources, then its `env` in order. Literal values expand `$(VAR)` from the
//! variables defined before them (`$$` is a literal `$`), and so do `command` and `args`.
//! Unlike a kubelet, the agent does not add Docker-link variables for other Services.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::{Api, Client};

use crate::resources::resource_value;

/// The default `PATH` of a container.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a container's environment could not be built: reported as the waiting reason
/// `CreateContainerConfigError`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// A referenced Secret or ConfigMap (or its key) does not exist.
    #[error("{kind} {name:?} {what}")]
    Missing {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What is missing.
        what: String,
    },
    /// A field path the agent does not support.
    #[error("unsupported fieldRef {0:?}")]
    FieldPath(String),
    /// A `resourceFieldRef` without a value.
    #[error("{0}")]
    Resource(String),
    /// A source the agent does not support.
    #[error("env var {0:?}: unsupported source (fileKeyRef is not supported)")]
    Unsupported(String),
    /// The API server could not be asked.
    #[error("reading {kind} {name:?}: {message}")]
    Api {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The error.
        message: String,
    },
}

/// Facts about the pod that env vars and downward API volumes can refer to.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    /// The pod's address.
    pub pod_ip: String,
    /// The node's address.
    pub host_ip: String,
}

/// Expands `$(VAR)` references in `input` with `lookup`; `$$` yields `$`; references to
/// undefined variables stay as written, as in Kubernetes.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            if let Some(end) = body.find(')') {
                let name = &body[..end];
                if let Some(value) = lookup(name) {
                    out.push_str(&value);
                } else {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
                rest = &body[end + 1..];
            } else {
                out.push_str(&rest[pos..]);
                rest = "";
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// An ordered environment where a later definition replaces an earlier one in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    /// Sets `name`, replacing an earlier value.
    pub fn set(&mut self, name: &str, value: String) {
        if let Some(slot) = self.vars.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        } else {
            self.vars.push((name.to_string(), value));
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Expands `$(VAR)` references against this environment.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name))
    }

    /// The variables, in definition order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// The value of a `fieldRef` field path.
pub fn field_value(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations", meta.annotations.as_ref()) {
        return Ok(v);
    }
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(facts.pod_ip.clone()),
        "status.hostIP" | "status.hostIPs" => Some(facts.host_ip.clone()),
        _ => return Err(EnvError::FieldPath(path.to_string())),
    };
    Ok(value.unwrap_or_default())
}

/// Reads Secrets and ConfigMaps for one pod, each at most once.
pub struct Sources {
    secrets: Api<Secret>,
    configmaps: Api<ConfigMap>,
    secret_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
    configmap_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    /// Sources in `namespace`.
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            configmaps: Api::namespaced(client.clone(), namespace),
            secret_cache: BTreeMap::new(),
            configmap_cache: BTreeMap::new(),
        }
    }

    /// The string data of Secret `name`, `None` when it does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        if let Some(hit) = self.secret_cache.get(name) {
            return Ok(hit.clone());
        }
        let got = self
            .secrets
            .get_opt(name)
            .await
            .map_err(|e| EnvError::Api {
                kind: "secret",
                name: name.to_string(),
                message: e.to_string(),
            })?
            .map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            });
        self.secret_cache.insert(name.to_string(), got.clone());
        Ok(got)
    }

    /// The data of ConfigMap `name`, `None` when it does not exist.
    pub async fn configmap(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        if let Some(hit) = self.configmap_cache.get(name) {
            return Ok(hit.clone());
        }
        let got = self
            .configmaps
            .get_opt(name)
            .await
            .map_err(|e| EnvError::Api {
                kind: "configmap",
                name: name.to_string(),
                message: e.to_string(),
            })?
            .map(|c| c.data.unwrap_or_default());
        self.configmap_cache.insert(name.to_string(), got.clone());
        Ok(got)
    }
}

/// The environment every container starts from.
pub fn base_environment(pod_name: &str, api_host: &str, api_port: u16) -> Environment {
    let mut env = Environment::default();
    env.set("PATH", DEFAULT_PATH.to_string());
    // As a container runtime does for a user without a home in the image. Left unset, the
    // pod's process runs on the host's file system and finds the host user's home through
    // the password database: kube-rs would then read the host's `~/.kube/config` (for
    // example one `kind create cluster` wrote) before its in-cluster configuration.
    env.set("HOME", "/".to_string());
    env.set("HOSTNAME", pod_name.to_string());
    env.set("KUBERNETES_SERVICE_HOST", api_host.to_string());
    env.set("KUBERNETES_SERVICE_PORT", api_port.to_string());
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", api_port.to_string());
    env
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// The full environment of `container`: `base`, then `envFrom`, then `env`.
pub async fn container_environment(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    mut env: Environment,
    sources: &mut Sources,
) -> Result<Environment, EnvError> {
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data) = if let Some(r) = &from.config_map_ref {
            let data = sources.configmap(&r.name).await?;
            ("configmap", r.name.clone(), r.optional == Some(true), data)
        } else if let Some(r) = &from.secret_ref {
            let data = sources.secret(&r.name).await?;
            ("secret", r.name.clone(), r.optional == Some(true), data)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    let key = format!("{prefix}{k}");
                    if is_env_name(&key) {
                        env.set(&key, v);
                    }
                }
            }
            None if optional => {}
            None => {
                return Err(EnvError::Missing {
                    kind,
                    name,
                    what: "not found".into(),
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = var_value(pod, facts, (&container.name, var), &env, sources).await? {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

/// One `env` entry's value; `None` when an optional source is missing (the variable is
/// then not set).
async fn var_value(
    pod: &Pod,
    facts: &PodFacts,
    (container, var): (&str, &EnvVar),
    env: &Environment,
    sources: &mut Sources,
) -> Result<Option<String>, EnvError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(env.expand(var.value.as_deref().unwrap_or(""))));
    };
    if let Some(f) = &from.field_ref {
        return field_value(pod, facts, &f.field_path).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_value(pod, container, r)
            .map(Some)
            .map_err(|e| EnvError::Resource(e.to_string()));
    }
    let (kind, name, key, optional, data) = if let Some(r) = &from.secret_key_ref {
        let data = sources.secret(&r.name).await?;
        ("secret", &r.name, &r.key, r.optional == Some(true), data)
    } else if let Some(r) = &from.config_map_key_ref {
        let data = sources.configmap(&r.name).await?;
        ("configmap", &r.name, &r.key, r.optional == Some(true), data)
    } else {
        return Err(EnvError::Unsupported(var.name.clone()));
    };
    match data.as_ref().and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(v.clone())),
        None if optional => Ok(None),
        None => Err(EnvError::Missing {
            kind,
            name: name.clone(),
            what: if data.is_some() {
                format!("has no key {key:?}")
            } else {
                "not found".into()
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("x-$(A)-y", lookup), "x-alpha-y");
        assert_eq!(expand("$(A)$(A)", lookup), "alphaalpha");
        assert_eq!(expand("$(MISSING)", lookup), "$(MISSING)");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("cost: $5", lookup), "cost: $5");
        assert_eq!(expand("$(A", lookup), "$(A");
        assert_eq!(expand("[$(EMPTY)]", lookup), "[]");
        assert_eq!(expand("tail$", lookup), "tail$");
        assert_eq!(expand("", lookup), "");
    }

    #[test]
    fn home_is_the_root_unless_the_container_sets_it() {
        let mut env = base_environment("p", "10.213.1.1", 6443);
        assert_eq!(env.get("HOME").as_deref(), Some("/"));
        env.set("HOME", "/data".into());
        assert_eq!(env.get("HOME").as_deref(), Some("/data"));
    }

    #[test]
    fn later_definitions_replace_earlier_ones_in_place() {
        let mut env = base_environment("p", "10.213.1.1", 6443);
        env.set("X", "1".into());
        env.set("PATH", "/bin".into());
        assert_eq!(env.get("PATH").as_deref(), Some("/bin"));
        assert_eq!(env.vars()[0].0, "PATH");
        assert_eq!(env.expand("$(KUBERNETES_SERVICE_PORT)"), "6443");
        assert_eq!(env.get("HOSTNAME").as_deref(), Some("p"));
    }

    #[test]
    fn field_refs_read_the_pod() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let facts = PodFacts {
            pod_ip: "10.213.1.5".into(),
            host_ip: "10.213.1.1".into(),
        };
        let get = |p: &str| field_value(&pod, &facts, p);
        assert_eq!(get("metadata.name").unwrap(), "web-1");
        assert_eq!(get("metadata.namespace").unwrap(), "ns");
        assert_eq!(get("metadata.uid").unwrap(), "u-1");
        assert_eq!(get("metadata.labels['app']").unwrap(), "web");
        assert_eq!(get("metadata.labels['none']").unwrap(), "");
        assert_eq!(get("metadata.annotations['x']").unwrap(), "");
        assert_eq!(get("status.podIP").unwrap(), "10.213.1.5");
        assert_eq!(get("status.hostIP").unwrap(), "10.213.1.1");
        assert!(get("spec.bogus").is_err());
    }
}
