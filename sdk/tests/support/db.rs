//! A shared in-memory "database": the persistence every test pod uses.
//!
//! It is a conditional store (an older version never overwrites a newer
//! one), unless built [`unconditional`](Db::unconditional): then every store
//! overwrites, as a naive user persistence would — a mutation that shows the
//! checks catch what the conditional store prevents. Every store call is
//! recorded per key, with whether it was applied, for the checker.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use locus::store::{Persistence, Versioned};

/// One store call: the version offered, the version held before, and
/// whether it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCall {
    pub version: u64,
    pub held: u64,
    pub applied: bool,
}

/// Session key → last stored version and counter. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Db {
    map: Arc<Mutex<HashMap<Vec<u8>, Versioned<u64>>>>,
    calls: Arc<Mutex<HashMap<Vec<u8>, Vec<StoreCall>>>>,
    stores: Arc<AtomicU64>,
    unconditional: bool,
}

impl Db {
    /// A database that applies every store, whatever the version held.
    pub fn unconditional() -> Self {
        Self {
            unconditional: true,
            ..Self::default()
        }
    }

    /// The stored version of `key` (0 if never stored).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.map.lock().unwrap().get(key).map_or(0, |v| v.version)
    }

    /// The stored value of `key` (0 if never stored).
    pub fn value(&self, key: &[u8]) -> u64 {
        self.map.lock().unwrap().get(key).map_or(0, |v| v.value)
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

impl Persistence<u64> for Db {
    type Error = Infallible;

    async fn load(&self, key: &[u8]) -> Result<Option<Versioned<u64>>, Infallible> {
        Ok(self.map.lock().unwrap().get(key).copied())
    }

    async fn store(&self, key: &[u8], version: u64, value: &u64) -> Result<(), Infallible> {
        self.stores.fetch_add(1, Ordering::AcqRel);
        let mut map = self.map.lock().unwrap();
        let held = map.entry(key.to_vec()).or_default();
        let before = held.version;
        // Idempotent per (key, version); an older version never overwrites
        // (unless unconditional).
        let applied = self.unconditional || version >= held.version;
        if applied {
            *held = Versioned::new(version, *value);
        }
        self.calls
            .lock()
            .unwrap()
            .entry(key.to_vec())
            .or_default()
            .push(StoreCall {
                version,
                held: before,
                applied,
            });
        Ok(())
    }
}
