//! Pod volumes: directories under the pod's run directory, bind-mounted into containers.
//!
//! Supported: `emptyDir` (a plain directory; `medium: Memory` is also just a directory on
//! disk here), `secret` and `configMap` (every key, or the listed `items`, written as
//! files), `downwardAPI` (`fieldRef` items), `projected` (service account token,
//! configMap, secret and downwardAPI sources — the form the ServiceAccount admission
//! plugin injects as `kube-api-access-*`) and `hostPath`. Contents are written once when
//! the pod starts; only tokens are refreshed afterwards (a kubelet would also resync
//! changed Secrets and ConfigMaps).
//!
//! Service account tokens come from the TokenRequest API (bound to the pod, 3600 s unless
//! the projection says otherwise) and are rewritten before 80 % of their lifetime has
//! passed. When a pod has no mount at `/var/run/secrets/kubernetes.io/serviceaccount`
//! (the admission plugin is off) and does not opt out with
//! `automountServiceAccountToken: false`, the agent mounts its own `token`, `ca.crt`
//! (the cluster CA from the admin kubeconfig) and `namespace` there. A projected
//! `kube-root-ca.crt` ConfigMap that does not exist (yet) is served from that same CA.
//!
//! Why about 640 lines: one function per volume kind the agent supports, each short; they
//! share the path checks and the object reads, and a kind added later goes beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::env::{PodFacts, field_value};
use crate::process::Mount;

/// Where Kubernetes mounts a pod's service account credentials.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why a pod's volumes could not be prepared (the pod then waits in
/// `ContainerCreating`, as with a kubelet's `FailedMount`).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A required Secret or ConfigMap does not exist.
    #[error("volume {volume:?}: {kind} {name:?} not found")]
    NotFound {
        /// Volume name.
        volume: String,
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
    },
    /// A listed key is not in the object.
    #[error("volume {volume:?}: {kind} {name:?} has no key {key:?}")]
    NoKey {
        /// Volume name.
        volume: String,
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Key.
        key: String,
    },
    /// A volume type the agent does not implement.
    #[error(
        "volume {0:?}: unsupported volume type (supported: emptyDir, secret, configMap, downwardAPI, projected, hostPath)"
    )]
    Unsupported(String),
    /// A container mounts a volume the pod does not declare.
    #[error("container {container:?} mounts unknown volume {volume:?}")]
    UnknownVolume {
        /// Container.
        container: String,
        /// Volume.
        volume: String,
    },
    /// The API server refused or failed.
    #[error("volume {volume:?}: {message}")]
    Api {
        /// Volume name.
        volume: String,
        /// The error.
        message: String,
    },
    /// Writing files failed.
    #[error("volume {volume:?}: writing {path}: {source}")]
    Io {
        /// Volume name.
        volume: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An item path that would leave the volume.
    #[error("volume {volume:?}: item path {path:?} must be relative and stay inside the volume")]
    BadPath {
        /// Volume.
        volume: String,
        /// Path.
        path: String,
    },
}

/// A service account token file the agent keeps fresh.
#[derive(Clone, Debug)]
pub struct TokenFile {
    /// The volume it belongs to (for messages).
    pub volume: String,
    /// The file.
    pub path: PathBuf,
    /// Requested audience, `None` for the API server's.
    pub audience: Option<String>,
    /// Requested lifetime.
    pub expiration_seconds: i64,
    /// When to request the next token.
    pub refresh_at: Instant,
}

/// A pod's prepared volumes.
#[derive(Debug, Default)]
pub struct Volumes {
    /// Volume name → host directory (or file, or host path).
    pub sources: BTreeMap<String, PathBuf>,
    /// Token files to refresh.
    pub tokens: Vec<TokenFile>,
    /// The agent's own service account directory when it supplies one.
    pub service_account_dir: Option<PathBuf>,
}

impl Volumes {
    /// When the next token must be refreshed.
    pub fn next_refresh(&self) -> Option<Instant> {
        self.tokens.iter().map(|t| t.refresh_at).min()
    }
}

/// What volume preparation needs from the agent.
pub struct VolumeContext<'a> {
    /// Admin client.
    pub client: &'a Client,
    /// Cluster CA (PEM).
    pub ca_pem: &'a [u8],
    /// Addresses for downward API files.
    pub facts: &'a PodFacts,
}

fn check_relative(volume: &str, path: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadPath {
            volume: volume.to_string(),
            path: path.to_string(),
        })
    }
}

/// Writes `data` to `dir/rel` by writing a temporary file and renaming it, so readers
/// never see half a file.
pub fn write_file(
    volume: &str,
    dir: &Path,
    rel: &str,
    data: &[u8],
    mode: Option<i32>,
) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt as _;
    check_relative(volume, rel)?;
    let path = dir.join(rel);
    let io = |source| VolumeError::Io {
        volume: volume.to_string(),
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, data).map_err(io)?;
    let mode = mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Files to write into a volume: (relative path, contents, mode).
pub type Files = Vec<(String, Vec<u8>, Option<i32>)>;

/// Which (key → file) pairs to write: every key, or the listed items.
pub fn select_items(
    volume: &str,
    kind: &'static str,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Files, VolumeError> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect());
    };
    let mut out = Vec::new();
    for item in items {
        match data.get(&item.key) {
            Some(v) => out.push((item.path.clone(), v.clone(), item.mode)),
            None if optional => {}
            None => {
                return Err(VolumeError::NoKey {
                    volume: volume.to_string(),
                    kind,
                    name: name.to_string(),
                    key: item.key.clone(),
                });
            }
        }
    }
    Ok(out)
}

async fn secret_data(
    client: &Client,
    ns: &str,
    volume: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let got = api.get_opt(name).await.map_err(|e| VolumeError::Api {
        volume: volume.to_string(),
        message: format!("reading secret {name:?}: {e}"),
    })?;
    Ok(got.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }))
}

async fn configmap_data(
    vc: &VolumeContext<'_>,
    ns: &str,
    volume: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let api: Api<ConfigMap> = Api::namespaced(vc.client.clone(), ns);
    let got = api.get_opt(name).await.map_err(|e| VolumeError::Api {
        volume: volume.to_string(),
        message: format!("reading configmap {name:?}: {e}"),
    })?;
    let data = got.map(|c| {
        c.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .chain(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            )
            .collect()
    });
    if data.is_none() && name == "kube-root-ca.crt" {
        // Published by kube-controller-manager shortly after a namespace appears; the
        // admin kubeconfig's CA is the same certificate.
        return Ok(Some([("ca.crt".to_string(), vc.ca_pem.to_vec())].into()));
    }
    Ok(data)
}

fn write_all(
    volume: &str,
    dir: &Path,
    files: Files,
    default_mode: Option<i32>,
) -> Result<(), VolumeError> {
    for (path, data, mode) in files {
        write_file(volume, dir, &path, &data, mode.or(default_mode))?;
    }
    Ok(())
}

fn downward_files(
    volume: &str,
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
) -> Result<Files, VolumeError> {
    items
        .iter()
        .map(|item| {
            let value = match &item.field_ref {
                Some(f) => {
                    field_value(pod, facts, &f.field_path).map_err(|e| VolumeError::Api {
                        volume: volume.to_string(),
                        message: e.to_string(),
                    })?
                }
                None => {
                    return Err(VolumeError::Unsupported(format!(
                        "{volume} (resourceFieldRef)"
                    )));
                }
            };
            Ok((item.path.clone(), value.into_bytes(), item.mode))
        })
        .collect()
}

/// Requests a token for the pod's service account and writes it to `token.path`.
pub async fn refresh_token(
    client: &Client,
    pod: &Pod,
    token: &mut TokenFile,
) -> Result<(), VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = service_account(pod);
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: token.audience.clone().map(|a| vec![a]),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(token.expiration_seconds),
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| VolumeError::Api {
            volume: token.volume.clone(),
            message: format!("requesting a token for service account {sa:?}: {e}"),
        })?;
    let status = issued.status.unwrap_or_default();
    let text = status.token.unwrap_or_default();
    let dir = token.path.parent().unwrap_or(Path::new("/"));
    let file = token
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("token")
        .to_string();
    write_file(&token.volume, dir, &file, text.as_bytes(), Some(0o644))?;
    let requested = u64::try_from(token.expiration_seconds).unwrap_or(3600);
    let granted = status.expiration_timestamp.map_or(requested, |t| {
        u64::try_from((t.0.as_second() - k8s_openapi::jiff::Timestamp::now().as_second()).max(1))
            .unwrap_or(requested)
    });
    token.refresh_at = Instant::now() + refresh_after(requested, granted);
    Ok(())
}

/// When to refresh a token: at 80 % of its lifetime (the shorter of what was asked
/// for and what was granted).
pub fn refresh_after(requested_secs: u64, granted_secs: u64) -> Duration {
    let life = requested_secs.min(granted_secs).max(1);
    Duration::from_millis(life * 800)
}

/// The pod's service account name.
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

fn wants_own_service_account(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    if spec.automount_service_account_token == Some(false) {
        return false;
    }
    let mounted = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_PATH);
    !mounted
}

/// Which API object a volume source reads.
#[derive(Clone, Copy)]
enum Kind {
    Secret,
    ConfigMap,
}

/// One Secret or ConfigMap a volume reads.
struct ObjectSource<'a> {
    kind: Kind,
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    optional: bool,
}

/// Writes the keys of one Secret or ConfigMap (all, or the listed items) into `dir`.
async fn write_object(
    vc: &VolumeContext<'_>,
    ns: &str,
    volume: &str,
    source: ObjectSource<'_>,
    mode: Option<i32>,
    dir: &Path,
) -> Result<(), VolumeError> {
    let ObjectSource {
        kind,
        name,
        items,
        optional,
    } = source;
    let (label, data) = match kind {
        Kind::Secret => ("secret", secret_data(vc.client, ns, volume, name).await?),
        Kind::ConfigMap => ("configmap", configmap_data(vc, ns, volume, name).await?),
    };
    match data {
        Some(data) => {
            let files = select_items(volume, label, name, &data, items, optional)?;
            write_all(volume, dir, files, mode)
        }
        None if optional => Ok(()),
        None => Err(VolumeError::NotFound {
            volume: volume.to_string(),
            kind: label,
            name: name.to_string(),
        }),
    }
}

async fn prepare_projected(
    vc: &VolumeContext<'_>,
    pod: &Pod,
    name: &str,
    projected: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    dir: &Path,
    out: &mut Volumes,
) -> Result<(), VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mode = projected.default_mode;
    for source in projected.sources.iter().flatten() {
        if let Some(t) = &source.service_account_token {
            check_relative(name, &t.path)?;
            let mut token = TokenFile {
                volume: name.to_string(),
                path: dir.join(&t.path),
                audience: t.audience.clone().filter(|a| !a.is_empty()),
                expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                refresh_at: Instant::now(),
            };
            refresh_token(vc.client, pod, &mut token).await?;
            out.tokens.push(token);
        } else if let Some(c) = &source.config_map {
            let source = ObjectSource {
                kind: Kind::ConfigMap,
                name: &c.name,
                items: c.items.as_ref(),
                optional: c.optional == Some(true),
            };
            write_object(vc, ns, name, source, mode, dir).await?;
        } else if let Some(s) = &source.secret {
            let source = ObjectSource {
                kind: Kind::Secret,
                name: &s.name,
                items: s.items.as_ref(),
                optional: s.optional == Some(true),
            };
            write_object(vc, ns, name, source, mode, dir).await?;
        } else if let Some(d) = &source.downward_api {
            let files = downward_files(name, pod, vc.facts, d.items.as_deref().unwrap_or(&[]))?;
            write_all(name, dir, files, mode)?;
        } else {
            return Err(VolumeError::Unsupported(format!(
                "{name} (projected source)"
            )));
        }
    }
    Ok(())
}

async fn prepare_volume(
    vc: &VolumeContext<'_>,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    out: &mut Volumes,
) -> Result<PathBuf, VolumeError> {
    let name = volume.name.as_str();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|source| VolumeError::Io {
            volume: name.to_string(),
            path: d.display().to_string(),
            source,
        })
    };
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
            mkdir(&path)?;
        }
        return Ok(path);
    }
    mkdir(dir)?;
    if volume.empty_dir.is_some() {
        // World-writable as a kubelet makes it, so non-root containers can write.
        // `medium: Memory` is a plain directory here too.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(
            |source| VolumeError::Io {
                volume: name.to_string(),
                path: dir.display().to_string(),
                source,
            },
        )?;
    } else if let Some(s) = &volume.secret {
        let source = ObjectSource {
            kind: Kind::Secret,
            name: s.secret_name.as_deref().unwrap_or_default(),
            items: s.items.as_ref(),
            optional: s.optional == Some(true),
        };
        write_object(vc, ns, name, source, s.default_mode, dir).await?;
    } else if let Some(c) = &volume.config_map {
        let source = ObjectSource {
            kind: Kind::ConfigMap,
            name: &c.name,
            items: c.items.as_ref(),
            optional: c.optional == Some(true),
        };
        write_object(vc, ns, name, source, c.default_mode, dir).await?;
    } else if let Some(d) = &volume.downward_api {
        let files = downward_files(name, pod, vc.facts, d.items.as_deref().unwrap_or(&[]))?;
        write_all(name, dir, files, d.default_mode)?;
    } else if let Some(p) = &volume.projected {
        prepare_projected(vc, pod, name, p, dir, out).await?;
    } else {
        return Err(VolumeError::Unsupported(name.to_string()));
    }
    Ok(dir.to_path_buf())
}

/// Prepares every volume of `pod` under `pod_dir/volumes`, plus the agent's own service
/// account directory when the pod needs one.
pub async fn prepare(
    vc: &VolumeContext<'_>,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<Volumes, VolumeError> {
    let mut out = Volumes::default();
    let volumes_dir = pod_dir.join("volumes");
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = volumes_dir.join(&volume.name);
        let source = prepare_volume(vc, pod, volume, &dir, &mut out).await?;
        out.sources.insert(volume.name.clone(), source);
    }
    if wants_own_service_account(pod) {
        let dir = pod_dir.join("serviceaccount");
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        write_file("serviceaccount", &dir, "ca.crt", vc.ca_pem, None)?;
        write_file("serviceaccount", &dir, "namespace", ns.as_bytes(), None)?;
        let mut token = TokenFile {
            volume: "serviceaccount".into(),
            path: dir.join("token"),
            audience: None,
            expiration_seconds: 3600,
            refresh_at: Instant::now(),
        };
        refresh_token(vc.client, pod, &mut token).await?;
        out.tokens.push(token);
        out.service_account_dir = Some(dir);
    }
    Ok(out)
}

/// The bind mounts of one container.
pub fn container_mounts(
    container: &Container,
    volumes: &Volumes,
) -> Result<Vec<Mount>, VolumeError> {
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let source = volumes
            .sources
            .get(&m.name)
            .ok_or_else(|| VolumeError::UnknownVolume {
                container: container.name.clone(),
                volume: m.name.clone(),
            })?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                check_relative(&m.name, sub)?;
                let full = source.join(sub);
                if !full.exists() {
                    std::fs::create_dir_all(&full).map_err(|e| VolumeError::Io {
                        volume: m.name.clone(),
                        path: full.display().to_string(),
                        source: e,
                    })?;
                }
                full
            }
            None => source.clone(),
        };
        mounts.push(Mount {
            source,
            target: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
        });
    }
    if let Some(dir) = &volumes.service_account_dir {
        mounts.push(Mount {
            source: dir.clone(),
            target: SERVICE_ACCOUNT_PATH.into(),
            read_only: true,
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};

    #[test]
    fn items_select_keys_and_paths() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        let all = select_items("v", "secret", "s", &data, None, false).unwrap();
        assert_eq!(all.len(), 2);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o600),
        }];
        let some = select_items("v", "secret", "s", &data, Some(&items), false).unwrap();
        assert_eq!(
            some,
            vec![("sub/b.txt".to_string(), b"2".to_vec(), Some(0o600))]
        );
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        assert!(select_items("v", "secret", "s", &data, Some(&missing), false).is_err());
        assert!(
            select_items("v", "secret", "s", &data, Some(&missing), true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn files_are_written_inside_the_volume_only() {
        let dir = std::env::temp_dir().join(format!("locus-vol-test-{}", std::process::id()));
        write_file("v", &dir, "a/b.txt", b"hello", None).unwrap();
        assert_eq!(std::fs::read(dir.join("a/b.txt")).unwrap(), b"hello");
        write_file("v", &dir, "a/b.txt", b"again", None).unwrap();
        assert_eq!(std::fs::read(dir.join("a/b.txt")).unwrap(), b"again");
        assert!(write_file("v", &dir, "../escape", b"x", None).is_err());
        assert!(write_file("v", &dir, "/abs", b"x", None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refresh_at_eighty_percent_of_the_shorter_lifetime() {
        assert_eq!(refresh_after(3600, 3600), Duration::from_secs(2880));
        assert_eq!(refresh_after(3600, 600), Duration::from_secs(480));
        assert_eq!(refresh_after(3600, 86400), Duration::from_secs(2880));
    }

    fn pod_with(mount: Option<&str>, automount: Option<bool>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                automount_service_account_token: automount,
                containers: vec![Container {
                    name: "c".into(),
                    volume_mounts: mount.map(|p| {
                        vec![VolumeMount {
                            name: "kube-api-access-x".into(),
                            mount_path: p.into(),
                            ..VolumeMount::default()
                        }]
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn own_service_account_only_when_nothing_else_provides_it() {
        assert!(wants_own_service_account(&pod_with(None, None)));
        assert!(!wants_own_service_account(&pod_with(None, Some(false))));
        assert!(!wants_own_service_account(&pod_with(
            Some(SERVICE_ACCOUNT_PATH),
            None
        )));
    }

    #[test]
    fn mounts_map_volumes_and_refuse_unknown_ones() {
        let mut volumes = Volumes::default();
        volumes
            .sources
            .insert("kube-api-access-x".into(), "/run/p/volumes/k".into());
        let pod = pod_with(Some(SERVICE_ACCOUNT_PATH), None);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = container_mounts(c, &volumes).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target, SERVICE_ACCOUNT_PATH);
        assert!(container_mounts(c, &Volumes::default()).is_err());
    }
}
