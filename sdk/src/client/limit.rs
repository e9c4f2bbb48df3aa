//! Per-owner concurrency limit: at most `limit` requests in flight to one
//! pod address; past that, fail fast (no queue).
//!
//! Each owner address has one [`Owner`] entry: its in-flight counter and its
//! URI authority, formatted once when the entry is made. Entries live in a
//! few shards, each a read-mostly lock: a request takes a shared read lock
//! on its owner's shard and one atomic on the owner's counter; only the
//! first request to a new address takes a shard's write lock.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use http::uri::Authority;

/// Shards of the owner table (a power of two).
const SHARDS: usize = 16;
/// Entries kept before idle owners (no request in flight) are dropped, over
/// all shards.
const PRUNE_ABOVE: usize = 1024;
/// Entries per shard before its idle owners are dropped.
const PRUNE_SHARD_ABOVE: usize = PRUNE_ABOVE / SHARDS;

type Shard = RwLock<HashMap<SocketAddr, Arc<Owner>>>;

/// One owner address: requests in flight to it and its URI authority.
#[derive(Debug)]
pub(crate) struct Owner {
    in_flight: AtomicUsize,
    authority: Authority,
}

/// In-flight counters by owner address, shared by all clones of a router.
#[derive(Debug)]
pub(crate) struct OwnerLimits {
    limit: usize,
    shards: Box<[Shard]>,
}

/// One request's place in its owner's limit; released on drop.
#[derive(Debug)]
pub(crate) struct OwnerPermit(Arc<Owner>);

impl OwnerPermit {
    /// The owner's `ip:port` as a URI authority (a cheap clone).
    pub(crate) fn authority(&self) -> &Authority {
        &self.0.authority
    }
}

impl Drop for OwnerPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OwnerLimits {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn shard(&self, owner: SocketAddr) -> &Shard {
        // A fixed-key hasher: the shard only spreads addresses out.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(owner);
        // The mask keeps the index below `SHARDS`.
        #[allow(clippy::cast_possible_truncation, reason = "masked to SHARDS - 1")]
        let index = (hash as usize) & (SHARDS - 1);
        &self.shards[index]
    }

    /// The entry for `owner`, made (and its authority formatted) on first
    /// use. The locks cover a lookup (and rarely an insert and a prune),
    /// never I/O.
    fn owner(&self, owner: SocketAddr) -> Option<Arc<Owner>> {
        let shard = self.shard(owner);
        if let Some(entry) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&owner)
        {
            return Some(Arc::clone(entry));
        }
        let authority = Authority::try_from(owner.to_string()).ok()?;
        let mut owners = shard.write().unwrap_or_else(PoisonError::into_inner);
        if !owners.contains_key(&owner) && owners.len() >= PRUNE_SHARD_ABOVE {
            owners.retain(|_, o| o.in_flight.load(Ordering::Acquire) > 0);
        }
        let entry = owners.entry(owner).or_insert_with(|| {
            Arc::new(Owner {
                in_flight: AtomicUsize::new(0),
                authority,
            })
        });
        Some(Arc::clone(entry))
    }

    /// Takes a place for `owner`, or `None` if it has `limit` in flight (or,
    /// which cannot happen for a socket address, its authority is invalid).
    pub(crate) fn try_acquire(&self, owner: SocketAddr) -> Option<OwnerPermit> {
        let owner = self.owner(owner)?;
        let mut current = owner.in_flight.load(Ordering::Acquire);
        loop {
            if current >= self.limit {
                return None;
            }
            match owner.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(OwnerPermit(owner)),
                Err(seen) => current = seen,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
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
    fn the_authority_is_the_address() {
        let limits = OwnerLimits::new(1);
        let v4 = limits
            .try_acquire("10.0.0.1:8080".parse().unwrap())
            .unwrap();
        assert_eq!(v4.authority().as_str(), "10.0.0.1:8080");
        let v6 = limits.try_acquire("[fd00::1]:80".parse().unwrap()).unwrap();
        assert_eq!(v6.authority().as_str(), "[fd00::1]:80");
    }

    #[test]
    fn idle_owners_are_pruned() {
        let limits = OwnerLimits::new(1);
        let held = limits.try_acquire("10.0.0.1:1".parse().unwrap()).unwrap();
        for port in 2..=(PRUNE_ABOVE as u16 * 4) {
            drop(limits.try_acquire(SocketAddr::from(([10, 0, 0, 2], port))));
        }
        let len = limits.len();
        assert!(len <= PRUNE_ABOVE, "{len}");
        // The busy owner survived the prune.
        assert!(limits.try_acquire("10.0.0.1:1".parse().unwrap()).is_none());
        drop(held);
    }
}
