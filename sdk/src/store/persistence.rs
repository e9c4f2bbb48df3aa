//! Where sessions live when they are not in memory: the user's [`Persistence`].
//!
//! The store calls [`Persistence::load`] when a request touches a session that
//! is not resident (once per key, however many requests wait), and
//! [`Persistence::store`] to write a changed session back before evicting it
//! (idle passivation, memory pressure) or on [`flush`](super::SessionStore::flush).
//! Every call is bounded by [`Limits::persistence_timeout`](super::Limits::persistence_timeout).
//!
//! The contract (also in `docs/session-store.md`):
//!
//! * `store(key, version, value)` must be durable when it returns `Ok`: the
//!   store may evict the session right after.
//! * `load(key)` returns the last stored value *with the stamp it was stored
//!   with* (or `None` if there is none). Stamps must survive the round trip:
//!   the handoff protocol compares versions across pods, and a version that
//!   went backwards would make a newer copy look stale.
//! * Calls for different keys may run concurrently; the store never runs two
//!   calls for the same key at once (loads are single-flight and write-backs
//!   hold the session's lock).
//! * `store` is **conditional** on the [`Stamp`]: it must not replace a
//!   stored stamp higher than the one it is given (ignore the call and return
//!   `Ok`). A stamp is the session's version and the *ownership epoch* of the
//!   pod that wrote it, compared epoch first. Sessions move between pods with
//!   their versions, and every new owner writes under a higher epoch than the
//!   previous one, so a late write-back from a pod that lost the session (a
//!   retried write-back, a drain that could not deliver, a shutdown flush, a
//!   write a crashed or paused process had in flight) never puts older state
//!   back — not even when the two pods wrote the same version.
//!   With SQL: `INSERT ... ON CONFLICT (key) DO UPDATE SET ... WHERE
//!   (t.epoch, t.version) <= (excluded.epoch, excluded.version)`.
//! * `load` returns the stored stamp with the value. A pod that finds an epoch
//!   newer than its own ring refuses the session (its ring is behind: another
//!   pod owns it now) instead of serving it beside its owner.
//! * [`durable`](Persistence::durable) says whether `store` keeps anything:
//!   the handoff drain writes what it could not deliver through the
//!   persistence before it reports a pod drained, and cannot do that over
//!   [`NoPersistence`].

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;

/// A value with the session version it belongs to, and the ownership epoch
/// under which this pod holds the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Versioned<T> {
    /// The session's version: 0 for a session fresh from the factory, +1 on
    /// every committed write.
    pub version: u64,
    /// The ownership epoch under which this pod holds the session (see
    /// [`Stamp`]; 0 without a handoff member). It only grows from one owner
    /// to the next, so a side effect outside the session can carry it as a
    /// fencing token: a system that has seen a higher epoch for the session
    /// can refuse an older owner's late call. Given to
    /// [`install`](super::SessionStore::install), it is the least epoch the
    /// session's write-backs carry.
    pub epoch: u64,
    /// The value (a session state, or what a closure returned).
    pub value: T,
}

impl<T> Versioned<T> {
    /// Pairs a value with a version (epoch 0).
    pub fn new(version: u64, value: T) -> Self {
        Self {
            version,
            epoch: 0,
            value,
        }
    }

    /// The same, under ownership epoch `epoch`.
    #[must_use]
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }
}

/// What orders two writes of one session in the persistence: the ownership
/// epoch of the pod that wrote it, then the session's version. Compare stamps
/// with `<`/`>` (epoch first); a persistence keeps the highest it was given.
///
/// The epoch is the version of the ring under which the writing pod took the
/// session over (loaded it, or installed a hand-off). A pod takes a session
/// over only under a ring that makes it the owner, and the ring that moves a
/// session to a new pod is newer than every ring under which its previous
/// owner held it, so each owner's epoch is higher than every earlier owner's.
/// A store without a handoff member (no ring) writes under epoch 0, or the
/// epoch it loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    /// The writer's ownership epoch; compared first.
    pub epoch: u64,
    /// The session's version.
    pub version: u64,
}

impl Stamp {
    /// A stamp for `version` written under `epoch`.
    pub fn new(epoch: u64, version: u64) -> Self {
        Self { epoch, version }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} version {}", self.epoch, self.version)
    }
}

/// A session as the persistence holds it: the value and the stamp it was
/// stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stored<T> {
    /// The epoch and version it was stored with.
    pub stamp: Stamp,
    /// The session state.
    pub value: T,
}

impl<T> Stored<T> {
    /// Pairs a value with its stamp.
    pub fn new(stamp: Stamp, value: T) -> Self {
        Self { stamp, value }
    }
}

/// The user's durable storage for sessions of type `V`.
///
/// Implement it with `async fn`s:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use locus::store::{Persistence, Stamp, Stored};
///
/// #[derive(Default)]
/// struct InMemory(Mutex<HashMap<Vec<u8>, Stored<String>>>);
///
/// impl Persistence<String> for InMemory {
///     type Error = std::convert::Infallible;
///
///     async fn load(&self, key: &[u8]) -> Result<Option<Stored<String>>, Self::Error> {
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///
///     async fn store(&self, key: &[u8], stamp: Stamp, value: &String) -> Result<(), Self::Error> {
///         let mut rows = self.0.lock().unwrap();
///         // Conditional: never put an older stamp over a newer one.
///         if rows.get(key).is_none_or(|held| held.stamp <= stamp) {
///             rows.insert(key.to_vec(), Stored::new(stamp, value.clone()));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Persistence<V>: Send + Sync + 'static {
    /// What a failed call reports; it reaches callers inside
    /// [`StoreError::Persistence`](super::StoreError::Persistence).
    type Error: Error + Send + Sync + 'static;

    /// Loads the session `key`, with the stamp it was stored with, or `None`
    /// when it has never been stored (the store then creates it with its
    /// factory, at version 0).
    fn load(
        &self,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<Stored<V>>, Self::Error>> + Send;

    /// Durably stores `value` with `stamp` as session `key`, unless a higher
    /// stamp of `key` is stored already (then it keeps that one and returns
    /// `Ok`).
    fn store(
        &self,
        key: &[u8],
        stamp: Stamp,
        value: &V,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether [`store`](Self::store) keeps what it is given. `true` unless
    /// overridden; [`NoPersistence`] says `false`.
    fn durable(&self) -> bool {
        true
    }
}

/// No durable storage: every session starts from the store's factory, and an
/// evicted session is gone (its "write-back" succeeds and discards it).
///
/// Use it for caches and for state that the service can rebuild; with it the
/// store's bounds still hold, but passivation and pressure eviction lose the
/// state of the sessions they evict.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPersistence;

impl<V: Send + Sync + 'static> Persistence<V> for NoPersistence {
    type Error = Infallible;

    async fn load(&self, _key: &[u8]) -> Result<Option<Stored<V>>, Infallible> {
        Ok(None)
    }

    async fn store(&self, _key: &[u8], _stamp: Stamp, _value: &V) -> Result<(), Infallible> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}
