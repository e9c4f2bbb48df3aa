//! The `StatefulService` custom resource (`locus.dev/v1alpha1`).
//!
//! The types, their schema and validation rules live in the contract crate
//! ([`locus_contract::crd`]), which the SDK's tools and the end-to-end tests share without
//! compiling the operator; they are re-exported here, so `locus_operator::crd::...` names the same
//! items. This module adds what only the operator's `crdgen` needs: the YAML rendering.

pub use locus_contract::crd::*;

/// The `CustomResourceDefinition` rendered as YAML: exactly what `crdgen` prints and what
/// `crds/statefulservices.locus.dev.yaml` must contain.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd())
}
