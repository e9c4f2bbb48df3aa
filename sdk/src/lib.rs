//! Locus: tower middleware for sticky stateful services.
//!
//! A Locus service keeps each session's state in the memory of one pod. The
//! operator publishes a *ring* (which slot, and so which pod, owns which
//! shard of the key space); this crate reads that ring, routes every request of
//! a session to its owner (client side) and checks ownership, keeps bounded
//! session state and hands sessions over when ownership moves (server side).

pub mod ring;
pub mod store;

pub use store::{SessionStore, StoreError};
