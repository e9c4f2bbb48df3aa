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
//! * `load(key)` returns the last stored value *with the version it was stored
//!   with* (or `None` if there is none). Versions must survive the round trip:
//!   the handoff protocol compares them across pods, and a version that went
//!   backwards would make a newer copy look stale.
//! * Calls for different keys may run concurrently; the store never runs two
//!   calls for the same key at once (loads are single-flight and write-backs
//!   hold the session's lock).
//! * `store` is **conditional**: it must not replace a stored version higher
//!   than `version` (ignore the call and return `Ok`). Sessions move between
//!   pods with their versions, so a late write-back from a pod that handed a
//!   session off (a retried write-back, a drain that could not deliver, a
//!   shutdown flush) carries a lower version than what the new owner wrote
//!   since, and must not put the older state back. With SQL:
//!   `INSERT ... ON CONFLICT (key) DO UPDATE SET ... WHERE t.version <= excluded.version`.
//! * [`durable`](Persistence::durable) says whether `store` keeps anything:
//!   the handoff drain writes what it could not deliver through the
//!   persistence before it reports a pod drained, and cannot do that over
//!   [`NoPersistence`].

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;

/// A value with the session version it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Versioned<T> {
    /// The session's version: 0 for a session fresh from the factory, +1 on
    /// every committed write.
    pub version: u64,
    /// The value (a session state, or what a closure returned).
    pub value: T,
}

impl<T> Versioned<T> {
    /// Pairs a value with a version.
    pub fn new(version: u64, value: T) -> Self {
        Self { version, value }
    }
}

/// The user's durable storage for sessions of type `V`.
///
/// Implement it with `async fn`s:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use locus::store::{Persistence, Versioned};
///
/// #[derive(Default)]
/// struct InMemory(Mutex<HashMap<Vec<u8>, Versioned<String>>>);
///
/// impl Persistence<String> for InMemory {
///     type Error = std::convert::Infallible;
///
///     async fn load(&self, key: &[u8]) -> Result<Option<Versioned<String>>, Self::Error> {
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///
///     async fn store(&self, key: &[u8], version: u64, value: &String) -> Result<(), Self::Error> {
///         let mut rows = self.0.lock().unwrap();
///         // Conditional: never put an older version over a newer one.
///         if rows.get(key).is_none_or(|held| held.version <= version) {
///             rows.insert(key.to_vec(), Versioned::new(version, value.clone()));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Persistence<V>: Send + Sync + 'static {
    /// What a failed call reports; it reaches callers inside
    /// [`StoreError::Persistence`](super::StoreError::Persistence).
    type Error: Error + Send + Sync + 'static;

    /// Loads the session `key`, with the version it was stored with, or `None`
    /// when it has never been stored (the store then creates it with its
    /// factory, at version 0).
    fn load(
        &self,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<Versioned<V>>, Self::Error>> + Send;

    /// Durably stores `value` as version `version` of session `key`, unless a
    /// higher version of `key` is stored already (then it keeps that one and
    /// returns `Ok`).
    fn store(
        &self,
        key: &[u8],
        version: u64,
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

    async fn load(&self, _key: &[u8]) -> Result<Option<Versioned<V>>, Infallible> {
        Ok(None)
    }

    async fn store(&self, _key: &[u8], _version: u64, _value: &V) -> Result<(), Infallible> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}
