//! The local Kubernetes cluster Locus is tested on, and helpers for end-to-end tests.
//!
//! There is no container engine where Locus is built and tested, so the cluster
//! is a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler built from the Kubernetes Go modules) plus a node agent of our
//! own that runs each pod as local processes in the pod's own network namespace.

pub mod accounting;
pub mod chaos;
pub mod cluster;
pub mod demo;
pub mod postgres;
pub mod slowlink;
pub mod support;
