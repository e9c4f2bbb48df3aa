//! One resident session: its state behind an async read-write lock, the
//! count of updates queued on it, and the pins of requests about to use it.
//!
//! Readers share the lock; an update, an install, a write-back or a handoff
//! holds it alone. An entry leaves the index only while its lock is held
//! exclusively, and is then marked *retired*: a caller that looked the entry up
//! before and acquires the lock after sees the mark and looks the key up again
//! (and finds it loading, moved or absent). So the index slot of a resident
//! entry never changes under a holder of its lock.
//!
//! Eviction passes over an entry that is *in use*: updates queued on it, or
//! *pinned* by a load whose waiters have not taken it yet. The pin closes the
//! gap between a load making its session resident and the requests that
//! waited for it locking it; without it, another request short of room could
//! evict the session in that gap, and the waiters would load it again.
//!
//! A session restored from a snapshot may hold its state *encoded* (the
//! bytes the codec made, a slice of the snapshot's chunk:
//! `docs/adr/0005-restore-without-building-the-heap.md`) until its first use.
//! Only a clean session is held so ([`Entry::encoded`] makes it clean, and
//! every change of the state stores a decoded value), so a write-back never
//! meets one. Whoever needs the value decodes it under the exclusive lock,
//! once; paths that want the encoded form (a snapshot, a hand-off) take the
//! bytes as they are.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tokio::sync::RwLock;

/// A session's state: decoded, or still as the snapshot held it.
#[derive(Debug)]
pub(crate) enum Value<V> {
    /// The state.
    Decoded(V),
    /// The state as the store's codec encoded it (clean sessions only).
    /// Boxed: a restored session pays one small allocation until its first
    /// use so that every session's state stays as small as its decoded
    /// value (a `Bytes` is 32 bytes, more than many values).
    Encoded(Box<Bytes>),
}

impl<V> Value<V> {
    /// The state, if decoded.
    pub fn decoded(&self) -> Option<&V> {
        match self {
            Self::Decoded(value) => Some(value),
            Self::Encoded(_) => None,
        }
    }
}

/// A session's state and bookkeeping, guarded by the entry's lock.
#[derive(Debug)]
pub(crate) struct State<V> {
    /// Encoded only while clean (see the [module docs](self)).
    pub value: Value<V>,
    pub version: u64,
    /// The ownership epoch its write-backs carry (see
    /// [`Stamp`](super::Stamp)).
    pub epoch: u64,
    /// Changed since the persistence last stored it.
    pub dirty: bool,
    /// No longer in the index; look the key up again.
    pub retired: bool,
}

/// A resident session. Its counters are 32-bit (a million sessions hold a
/// million entries: 8 bytes less each keeps the allocation a size class
/// smaller); neither can come near `u32::MAX` (each place is a task).
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub state: RwLock<State<V>>,
    pending: AtomicU32,
    pins: AtomicU32,
}

impl<V> Entry<V> {
    pub fn new(value: V, version: u64, epoch: u64, dirty: bool) -> Self {
        Self::with(Value::Decoded(value), version, epoch, dirty)
    }

    /// A clean session whose state stays `encoded` until its first use.
    pub fn encoded(encoded: Bytes, version: u64, epoch: u64) -> Self {
        Self::with(Value::Encoded(Box::new(encoded)), version, epoch, false)
    }

    fn with(value: Value<V>, version: u64, epoch: u64, dirty: bool) -> Self {
        Self {
            state: RwLock::new(State {
                value,
                version,
                epoch,
                dirty,
                retired: false,
            }),
            pending: AtomicU32::new(0),
            pins: AtomicU32::new(0),
        }
    }

    /// Whether it is resident and still encoded, as far as a look without
    /// waiting tells (false while it is locked exclusively).
    pub fn is_encoded(&self) -> bool {
        self.state
            .try_read()
            .is_ok_and(|state| !state.retired && state.value.decoded().is_none())
    }

    /// Whether eviction must pass over it: updates queued or running, or
    /// pinned.
    pub fn in_use(&self) -> bool {
        self.pending() > 0 || self.pins.load(Ordering::Acquire) > 0
    }

    /// Pins the entry until the returned guard is dropped.
    pub fn pin(self: &Arc<Self>) -> Pinned<V> {
        self.pins.fetch_add(1, Ordering::AcqRel);
        Pinned {
            entry: Arc::clone(self),
        }
    }

    /// Updates queued on or holding the lock.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire) as usize
    }

    /// Joins the queue of updates if fewer than `max` are in it.
    pub fn enter(&self, max: usize) -> Option<Pending<'_, V>> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                ((n as usize) < max).then(|| n.checked_add(1)).flatten()
            })
            .ok()
            .map(|_| Pending { entry: self })
    }

    /// Joins the queue without a bound (handoffs must not be turned away).
    pub fn enter_unbounded(&self) -> Pending<'_, V> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Pending { entry: self }
    }
}

/// A place in an entry's update queue, left on drop (also on cancellation and
/// panic).
pub(crate) struct Pending<'a, V> {
    entry: &'a Entry<V>,
}

impl<V> Drop for Pending<'_, V> {
    fn drop(&mut self) {
        self.entry.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pin on an entry (see [`Entry::pin`]), released on drop.
#[derive(Debug)]
pub(crate) struct Pinned<V> {
    entry: Arc<Entry<V>>,
}

impl<V> Drop for Pinned<V> {
    fn drop(&mut self) {
        self.entry.pins.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_places_are_released_on_drop() {
        let entry = Entry::new((), 0, 0, false);
        let first = entry.enter(2).unwrap();
        let second = entry.enter(2).unwrap();
        assert!(entry.enter(2).is_none());
        assert_eq!(entry.pending(), 2);
        drop(first);
        let third = entry.enter(2).unwrap();
        let forced = entry.enter_unbounded();
        assert_eq!(entry.pending(), 3);
        drop((second, third, forced));
        assert_eq!(entry.pending(), 0);
    }

    #[test]
    fn pins_and_queued_updates_mark_an_entry_in_use() {
        let entry = Arc::new(Entry::new((), 0, 0, false));
        assert!(!entry.in_use());
        let pins = (entry.pin(), entry.pin());
        assert!(entry.in_use());
        assert_eq!(entry.pending(), 0, "pins take no place in the queue");
        drop(pins);
        assert!(!entry.in_use());
        let queued = entry.enter(1).unwrap();
        assert!(entry.in_use());
        drop(queued);
        assert!(!entry.in_use());
    }
}
