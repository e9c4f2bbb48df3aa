//! The Locus operator: reconciles `StatefulService` resources (`locus.dev/v1alpha1`).

pub mod crd;
pub mod plan;
