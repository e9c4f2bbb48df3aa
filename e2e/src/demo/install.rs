//! The operator installed with its Helm chart, the demo's namespace, and the clean-up on a
//! cluster the demo does not own.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::support::wait;

use super::{DemoError, DemoOptions, DemoTarget, OperatorInstall, api};

/// Installs (or upgrades) the operator's chart and waits for it.
pub(crate) fn install_operator(
    target: &DemoTarget,
    install: &OperatorInstall,
) -> Result<(), DemoError> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/locus-operator");
    let mut helm = Command::new(&target.helm);
    helm.arg(format!("--kubeconfig={}", target.kubeconfig.display()))
        .args(["upgrade", "--install", &install.release, chart])
        .args(["--namespace", &install.namespace, "--create-namespace"])
        .args(["--wait", "--timeout=180s"])
        .args(["--set", "image.repository=locus/operator"])
        .args(["--set", "image.tag=dev"])
        .args(["--set", &format!("replicaCount={}", install.replicas)]);
    if let Some(ns) = &install.watch_namespace {
        helm.args(["--set", &format!("watchNamespace={ns}")]);
    }
    let out = helm.output().map_err(|e| DemoError::Command {
        command: format!("{}", target.helm.display()),
        output: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(DemoError::Command {
            command: "helm upgrade --install".into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Deletes namespace `name` if it exists and waits until it is gone.
pub(crate) async fn delete_namespace(
    client: &Client,
    name: &str,
    log: &dyn Fn(&str),
) -> Result<(), DemoError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(name)
        .await
        .map_err(api(format!("read namespace {name}")))?
        .is_none()
    {
        return Ok(());
    }
    log(&format!(
        "deleting the namespace {name} left by an earlier run"
    ));
    match namespaces.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(api(format!("delete namespace {name}"))(e)),
    }
    wait::until(
        Duration::from_secs(120),
        &format!("namespace {name} deleted"),
        || {
            let namespaces = namespaces.clone();
            async move {
                namespaces
                    .get_opt(name)
                    .await
                    .map(|found| found.is_none().then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

/// Installs the operator and creates the namespace, as the options say.
pub(crate) async fn prepare(
    target: &DemoTarget,
    options: &DemoOptions,
    client: &Client,
    log: &dyn Fn(&str),
) -> Result<(), DemoError> {
    if let Some(install) = &options.operator {
        log(&format!(
            "helm upgrade --install {} (chart charts/locus-operator, image locus/operator:dev) into namespace {}",
            install.release, install.namespace
        ));
        let target = target.clone();
        let install_spec = install.clone();
        // helm blocks while it waits for the Deployment.
        tokio::task::spawn_blocking(move || install_operator(&target, &install_spec))
            .await
            .map_err(|e| DemoError::Command {
                command: "helm".into(),
                output: e.to_string(),
            })??;
        log(&format!(
            "operator installed and ready in namespace {}",
            install.namespace
        ));
    }
    if options.create_namespace {
        delete_namespace(client, &options.namespace, log).await?;
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": options.namespace, "labels": {"app.kubernetes.io/part-of": "locus-demo"}}
        }))
        .map_err(|e| DemoError::Command {
            command: "namespace manifest".into(),
            output: e.to_string(),
        })?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(api(format!("create namespace {}", options.namespace)))?;
        log(&format!("namespace {} created", options.namespace));
    }
    Ok(())
}

/// Removes what the demo made on a cluster it does not own: the demo namespace and the
/// operator's release.
pub fn cleanup(target: &DemoTarget, options: &DemoOptions) -> Vec<String> {
    let mut problems = Vec::new();
    let kubeconfig = format!("--kubeconfig={}", target.kubeconfig.display());
    if options.create_namespace {
        let kubectl = target.helm.with_file_name("kubectl");
        let kubectl = if kubectl.is_file() {
            kubectl
        } else {
            PathBuf::from("kubectl")
        };
        match Command::new(&kubectl)
            .args([
                kubeconfig.as_str(),
                "delete",
                "namespace",
                &options.namespace,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => problems.push(format!("{}: {e}", kubectl.display())),
        }
    }
    if let Some(install) = &options.operator {
        match Command::new(&target.helm)
            .args([
                kubeconfig.as_str(),
                "uninstall",
                &install.release,
                "--namespace",
                &install.namespace,
            ])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => problems.push(format!("{}: {e}", target.helm.display())),
        }
    }
    problems
}
