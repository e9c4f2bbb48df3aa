//! Per-owner concurrency limit: at most `limit` requests in flight to one
//! pod address; past that, fail fast (no queue).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Entries kept before idle owners (no request in flight) are dropped.
const PRUNE_ABOVE: usize = 1024;

/// In-flight counters by owner address, shared by all clones of a router.
#[derive(Debug)]
pub(crate) struct OwnerLimits {
    limit: usize,
    owners: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
}

/// One request's place in its owner's limit; released on drop.
#[derive(Debug)]
pub(crate) struct OwnerPermit(Arc<AtomicUsize>);

impl Drop for OwnerPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OwnerLimits {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            owners: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a place for `owner`, or `None` if it has `limit` in flight. The
    /// map lock covers a lookup (and rarely a prune), never I/O.
    pub(crate) fn try_acquire(&self, owner: SocketAddr) -> Option<OwnerPermit> {
        let counter = {
            let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(counter) = owners.get(&owner) {
                Arc::clone(counter)
            } else {
                if owners.len() >= PRUNE_ABOVE {
                    owners.retain(|_, c| c.load(Ordering::Acquire) > 0);
                }
                Arc::clone(owners.entry(owner).or_default())
            }
        };
        let mut current = counter.load(Ordering::Acquire);
        loop {
            if current >= self.limit {
                return None;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(OwnerPermit(counter)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_per_owner_and_released_on_drop() {
        let limits = OwnerLimits::new(2);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let p1 = limits.try_acquire(a).unwrap();
        let _p2 = limits.try_acquire(a).unwrap();
        assert!(limits.try_acquire(a).is_none());
        let _q = limits.try_acquire(b).unwrap();
        drop(p1);
        assert!(limits.try_acquire(a).is_some());
    }

    #[test]
    fn idle_owners_are_pruned() {
        let limits = OwnerLimits::new(1);
        let held = limits.try_acquire("10.0.0.1:1".parse().unwrap()).unwrap();
        for port in 2..=(PRUNE_ABOVE as u16 + 10) {
            drop(limits.try_acquire(SocketAddr::from(([10, 0, 0, 2], port))));
        }
        let len = limits.owners.lock().unwrap().len();
        assert!(len < PRUNE_ABOVE, "{len}");
        // The busy owner survived the prune.
        assert!(limits.try_acquire("10.0.0.1:1".parse().unwrap()).is_none());
        drop(held);
    }
}
