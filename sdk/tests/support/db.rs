//! A shared in-memory "database": the persistence every test pod uses. A
//! session is a list of elements (`Vec<u64>`, see the checker).
//!
//! It is conditional on the [`Stamp`] (ownership epoch, then version: an
//! older stamp never overwrites a newer one), as the `Persistence` contract
//! asks. Two mutation modes show the checks catch what that prevents:
//! [`unconditional`](Db::unconditional) applies every store (a naive user
//! persistence), [`versions_only`](Db::versions_only) compares versions and
//! ignores epochs (the contract before ownership epochs). Every store call is
//! recorded per key, with whether it was applied, for the checker.
//!
//! Each pod gets a [`gated`](Db::gated) handle: a call waits at the gate
//! before it reaches the rows, so a paused pod's loads and write-backs wait
//! for its resume, as a stopped process's would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use locus::store::{Persistence, Stamp, Stored};

/// One store call: the stamp offered, the stamp held before, and whether it
/// was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCall {
    pub stamp: Stamp,
    pub held: Stamp,
    pub applied: bool,
}

/// Which stores the database applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Condition {
    /// Only a stamp at least as high as the one held (the contract).
    #[default]
    Stamp,
    /// Only a version at least as high as the one held, whatever the epochs.
    Version,
    /// Every store.
    None,
}

/// Session key → last stored stamp and list.
type Rows = HashMap<Vec<u8>, Stored<Vec<u64>>>;

/// What a call waits for before it reaches the rows.
#[derive(Clone)]
pub struct Gate(Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>);

impl Gate {
    pub fn new(wait: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static) -> Self {
        Self(Arc::new(wait))
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// The rows, and the store calls per key. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Db {
    map: Arc<Mutex<Rows>>,
    calls: Arc<Mutex<HashMap<Vec<u8>, Vec<StoreCall>>>>,
    stores: Arc<AtomicU64>,
    condition: Condition,
    gate: Option<Gate>,
}

impl Db {
    /// A database that applies every store, whatever it holds.
    pub fn unconditional() -> Self {
        Self {
            condition: Condition::None,
            ..Self::default()
        }
    }

    /// A database that compares versions only: a lower epoch with a higher
    /// version wins.
    pub fn versions_only() -> Self {
        Self {
            condition: Condition::Version,
            ..Self::default()
        }
    }

    /// A handle on the same rows whose calls first wait at `gate`.
    pub fn gated(&self, gate: Gate) -> Self {
        Self {
            gate: Some(gate),
            ..self.clone()
        }
    }

    async fn pass(&self) {
        if let Some(gate) = &self.gate {
            (gate.0)().await;
        }
    }

    /// The stored version of `key` (0 if never stored).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.map
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |v| v.stamp.version)
    }

    /// The row of `key` (stamp 0/0 and an empty list if never stored).
    pub fn stored(&self, key: &[u8]) -> Stored<Vec<u64>> {
        self.map
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// The stored list of `key` (empty if never stored).
    pub fn list(&self, key: &[u8]) -> Vec<u64> {
        self.stored(key).value
    }

    /// Write-backs received.
    pub fn stores(&self) -> u64 {
        self.stores.load(Ordering::Acquire)
    }

    /// Every store call for `key`, in order.
    pub fn calls(&self, key: &[u8]) -> Vec<StoreCall> {
        self.calls
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

impl Persistence<Vec<u64>> for Db {
    type Error = Infallible;

    async fn load(&self, key: &[u8]) -> Result<Option<Stored<Vec<u64>>>, Infallible> {
        self.pass().await;
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    async fn store(&self, key: &[u8], stamp: Stamp, value: &Vec<u64>) -> Result<(), Infallible> {
        self.pass().await;
        self.stores.fetch_add(1, Ordering::AcqRel);
        let mut map = self.map.lock().unwrap();
        let held = map.entry(key.to_vec()).or_default();
        let before = held.stamp;
        // Idempotent per (key, stamp); an older stamp never overwrites.
        let applied = match self.condition {
            Condition::Stamp => stamp >= held.stamp,
            Condition::Version => stamp.version >= held.stamp.version,
            Condition::None => true,
        };
        if applied {
            *held = Stored::new(stamp, value.clone());
        }
        self.calls
            .lock()
            .unwrap()
            .entry(key.to_vec())
            .or_default()
            .push(StoreCall {
                stamp,
                held: before,
                applied,
            });
        Ok(())
    }
}
