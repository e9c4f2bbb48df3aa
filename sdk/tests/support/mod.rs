//! Shared by the transition tests and the simulation: the test operator,
//! the workload, the checker, the shared persistence and the real-HTTP pods.
//! Each test binary uses a part of it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_precision_loss,
    reason = "test support: each test binary uses a part; a failed unwrap is a failed test"
)]

pub mod checker;
pub mod db;
pub mod http;
pub mod load;
pub mod operator;
pub mod sim;
