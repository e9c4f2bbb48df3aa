//! Locus examples: a real sample stateful service and a load generator.
//!
//! * [`sample`]: `locus-sample`, a **session ledger** built on the SDK's
//!   server side — the [`OwnershipLayer`](locus::OwnershipLayer) in front of
//!   a bounded [`SessionStore`](locus::SessionStore), optionally written back
//!   to PostgreSQL ([`postgres`]), or a `--stateless` variant that keeps
//!   nothing in memory (the data-locality baseline).
//! * [`loadgen`]: `locus-loadgen`, a load generator built on the SDK's
//!   client side ([`RouterLayer`](locus::RouterLayer)) that records every
//!   acknowledged append and, at the end, reads every session back to count
//!   lost writes; latency percentiles from HDR histograms, errors by kind,
//!   warm and cold answers. The binaries are thin wrappers over
//!   [`sample::SampleService`] and [`loadgen::LoadGenerator`].
//! * [`ledger`]: the sample's domain (events, per-session state, bounds).
//! * [`ring_source`]: the ring from a file, the ring `ConfigMap` or an
//!   in-process watch.
//! * [`ranges`], [`args`]: small shared pieces.
//!
//! `examples/README.md` says how to run both, locally and with the operator.

pub mod args;
mod error;
pub mod ledger;
pub mod loadgen;
pub mod postgres;
pub mod ranges;
pub mod ring_source;
pub mod sample;

pub use error::Error;
