//! A shared in-memory "database": the persistence every test pod uses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use locus::store::{Persistence, Versioned};

/// Session key → last stored version and counter. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Db {
    map: Arc<Mutex<HashMap<Vec<u8>, Versioned<u64>>>>,
    stores: Arc<AtomicU64>,
}

impl Db {
    /// The stored version of `key` (0 if never stored).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.map.lock().unwrap().get(key).map_or(0, |v| v.version)
    }

    /// Write-backs received.
    pub fn stores(&self) -> u64 {
        self.stores.load(Ordering::Acquire)
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
        // Idempotent per (key, version); an older version never overwrites.
        if version >= held.version {
            *held = Versioned::new(version, *value);
        }
        Ok(())
    }
}
