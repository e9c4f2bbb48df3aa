//! The `StatefulService` CRD, installed from the operator's types (which `make crds` writes
//! to `crds/` and CI checks for drift).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::SupportError;

/// Field manager of the install.
const MANAGER: &str = "locus-e2e";
/// Longest wait for the CRD to be established.
const ESTABLISHED_WITHIN: Duration = Duration::from_secs(30);

/// Installs (or updates) the CRD by server-side apply and waits until it is established.
pub async fn install(client: &Client) -> Result<(), SupportError> {
    let name = locus_contract::crd::CRD_NAME;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(locus_contract::crd::crd()),
    )
    .await
    .map_err(|source| SupportError::Api {
        action: format!("apply CRD {name}"),
        source,
    })?;
    let established = kube::runtime::wait::await_condition(
        crds,
        name,
        kube::runtime::wait::conditions::is_crd_established(),
    );
    match tokio::time::timeout(ESTABLISHED_WITHIN, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(SupportError::Timeout(format!(
            "waiting for CRD {name}: {e}"
        ))),
        Err(_) => Err(SupportError::Timeout(format!(
            "CRD {name} not established within {ESTABLISHED_WITHIN:?}"
        ))),
    }
}
