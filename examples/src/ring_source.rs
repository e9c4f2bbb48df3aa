//! Where the sample and the load generator get their ring: the ring
//! `ConfigMap` through the API server ([`KubeRingSource`]), a `ring.json`
//! file ([`FileRingSource`]) or a watch handed over in-process (tests).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use locus::ring::RingDocument;
use locus::{FileRingSource, KubeRingSource, Metrics, RingSource, RingWatch};

use crate::Error;

/// Which ring source to open.
#[derive(Debug, Clone)]
pub enum RingSourceConfig {
    /// A `ring.json` file, reloaded when it changes.
    File(PathBuf),
    /// The ring `ConfigMap` `<service>-ring` of `namespace`.
    Kube {
        /// Namespace of the service.
        namespace: String,
        /// Name of the `StatefulService`.
        service: String,
        /// A kubeconfig file; `None`: in-cluster credentials or
        /// `$KUBECONFIG` / `~/.kube/config`.
        kubeconfig: Option<PathBuf>,
    },
    /// A ring source the caller runs (in-process tests, embedding).
    Watch(RingWatch),
}

/// An open ring source; dropping it stops its background task (watches
/// taken from it keep the last ring).
#[derive(Debug)]
pub struct OpenRing {
    held: Held,
}

#[derive(Debug)]
enum Held {
    File(FileRingSource),
    Kube(Box<KubeHeld>),
    Watch(RingWatch),
}

#[derive(Debug)]
struct KubeHeld {
    source: KubeRingSource,
    config_maps: Api<ConfigMap>,
    name: String,
}

impl RingSource for OpenRing {
    fn watch(&self) -> RingWatch {
        match &self.held {
            Held::File(source) => source.watch(),
            Held::Kube(kube) => kube.source.watch(),
            Held::Watch(watch) => watch.clone(),
        }
    }
}

impl OpenRing {
    /// What the source reads, for logs.
    pub fn describe(&self) -> String {
        match &self.held {
            Held::File(source) => format!("file {}", source.path().display()),
            Held::Kube(kube) => format!("configmap {}", kube.source.config_map()),
            Held::Watch(_) => "in-process watch".to_owned(),
        }
    }

    /// For the ring `ConfigMap` source: whether the `ConfigMap` exists at
    /// all (`None` for other sources). The sample's readiness uses it: the
    /// operator publishes the first ring only once the first pods are ready,
    /// so "no ring yet" must not make a pod unready while no ring exists.
    pub async fn config_map_exists(&self) -> Option<Result<bool, kube::Error>> {
        match &self.held {
            Held::Kube(kube) => Some(
                kube.config_maps
                    .get_opt(&kube.name)
                    .await
                    .map(|found| found.is_some()),
            ),
            Held::File(_) | Held::Watch(_) => None,
        }
    }
}

impl RingSourceConfig {
    /// Opens the source, counting its loads and rejections into `metrics`.
    /// A file source has read the file once when this returns; a
    /// `ConfigMap` source delivers its first ring asynchronously.
    pub async fn open(self, metrics: &Metrics) -> Result<OpenRing, Error> {
        let held = match self {
            Self::File(path) => Held::File(
                FileRingSource::builder(path)
                    .metrics(metrics.clone())
                    .open()
                    .await,
            ),
            Self::Kube {
                namespace,
                service,
                kubeconfig,
            } => {
                let client = kube_client(kubeconfig.as_deref()).await?;
                let name = RingDocument::config_map_name(&service);
                let config_maps = Api::namespaced(client.clone(), &namespace);
                let source = KubeRingSource::builder(client, namespace, service)
                    .metrics(metrics.clone())
                    .spawn();
                Held::Kube(Box::new(KubeHeld {
                    source,
                    config_maps,
                    name,
                }))
            }
            Self::Watch(watch) => Held::Watch(watch),
        };
        Ok(OpenRing { held })
    }
}

/// A Kubernetes client from `kubeconfig`, or inferred (in-cluster service
/// account, then `$KUBECONFIG` / `~/.kube/config`).
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let failed = |reason: String| Error::Kubeconfig {
        path: kubeconfig.map(Path::to_path_buf),
        reason,
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| failed(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| failed(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| failed(e.to_string()))?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The service whose ring `ConfigMap` is `config_map` (`<service>-ring`).
pub fn service_of_config_map(config_map: &str) -> Option<&str> {
    config_map
        .strip_suffix("-ring")
        .filter(|service| !service.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_the_config_map_name_without_its_suffix() {
        assert_eq!(service_of_config_map("chat-ring"), Some("chat"));
        assert_eq!(
            RingDocument::config_map_name("chat"),
            "chat-ring",
            "the SDK's naming this relies on"
        );
        assert_eq!(service_of_config_map("-ring"), None);
        assert_eq!(service_of_config_map("chat"), None);
    }
}
