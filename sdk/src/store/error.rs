//! The one error type of the session store, and the HTTP answer each maps to.
//!
//! Every refusal past a bound is a typed variant that says which bound and, for
//! the transient ones, how long to wait before retrying; the server layer turns
//! it into a response with [`StoreError::status`] and
//! [`StoreError::retry_after`]. Variants name the session key (lossily decoded
//! and shortened, so that a hostile key cannot flood a log line).

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// A shared, thread-safe error from user code (persistence, codec). Shared so
/// that every caller waiting on one load receives the same cause.
pub type SharedError = Arc<dyn Error + Send + Sync>;

/// Longest key prefix, in characters, that an error message repeats.
const KEY_DISPLAY_CHARS: usize = 64;

/// Why a session store operation was refused or failed.
///
/// | variant | HTTP status | `Retry-After` |
/// |---|---|---|
/// | [`Busy`](Self::Busy) | 429 Too Many Requests | yes |
/// | [`Full`](Self::Full) | 503 Service Unavailable | yes |
/// | [`LoadsSaturated`](Self::LoadsSaturated) | 503 Service Unavailable | yes |
/// | [`Persistence`](Self::Persistence) | 503 Service Unavailable | yes |
/// | [`PersistenceTimeout`](Self::PersistenceTimeout) | 503 Service Unavailable | yes |
/// | [`Interrupted`](Self::Interrupted) | 503 Service Unavailable | yes |
/// | [`Fenced`](Self::Fenced) | 503 Service Unavailable | yes |
/// | [`TooLarge`](Self::TooLarge) | 413 Payload Too Large | no |
/// | [`KeyTooLong`](Self::KeyTooLong) | 413 Payload Too Large | no |
/// | [`Moved`](Self::Moved) | 421 Misdirected Request | no (owner hint instead) |
/// | [`Codec`](Self::Codec) | 500 Internal Server Error | no |
/// | [`InvalidLimits`](Self::InvalidLimits) | 500 Internal Server Error | no |
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The session already has its bound of updates queued or running; this
    /// one was refused without waiting.
    #[error("session `{key}` is busy: {queued} updates already queued or running (the bound)")]
    Busy {
        /// The session key, for display.
        key: String,
        /// The per-session bound that was reached.
        queued: usize,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The store is at its session count or total byte bound and no idle
    /// session could be written back and evicted to make room.
    #[error("session store is full ({limit} bound reached) and nothing could be evicted")]
    Full {
        /// Which bound: `"sessions"` or `"total bytes"`.
        limit: &'static str,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The session would weigh more than the per-session byte bound; the
    /// previous state, if any, is left intact.
    #[error("session `{key}` would weigh {size} bytes, more than the bound of {max} bytes")]
    TooLarge {
        /// The session key, for display.
        key: String,
        /// The weight the refused state would have had.
        size: usize,
        /// The per-session bound.
        max: usize,
    },
    /// The session key is longer than the key bound.
    #[error("session key is {len} bytes, more than the bound of {max} bytes")]
    KeyTooLong {
        /// Length of the refused key.
        len: usize,
        /// The key bound.
        max: usize,
    },
    /// The session was handed off to another owner; the tombstone has not
    /// expired yet.
    #[error("session `{key}` has moved to `{owner}`")]
    Moved {
        /// The session key, for display.
        key: String,
        /// The new owner, as given to [`hand_off`](super::SessionStore::hand_off).
        owner: String,
    },
    /// The bound on concurrent loads is reached; the load was not started.
    #[error("{max} session loads are already in flight (the bound)")]
    LoadsSaturated {
        /// The bound on concurrent loads.
        max: usize,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The user's persistence returned an error.
    #[error("persistence failed to {action} session `{key}`: {source}")]
    Persistence {
        /// The session key, for display.
        key: String,
        /// `"load"` or `"store"`.
        action: &'static str,
        /// The persistence's error.
        source: SharedError,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The user's persistence did not answer within the persistence timeout.
    #[error("persistence did not {action} session `{key}` within {after:?}")]
    PersistenceTimeout {
        /// The session key, for display.
        key: String,
        /// `"load"` or `"store"`.
        action: &'static str,
        /// The timeout.
        after: Duration,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The load task of the session ended without a result (it panicked, or
    /// the runtime is shutting down).
    #[error("the load of session `{key}` ended without a result")]
    Interrupted {
        /// The session key, for display.
        key: String,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The persistence holds the session under a newer ownership epoch than
    /// this pod's ring: another pod took it over under a ring this pod has
    /// not seen yet. The session is not served here until the ring catches up.
    #[error(
        "session `{key}` was stored under ownership epoch {stored}, newer than this pod's ring version {own}: another pod owns it now"
    )]
    Fenced {
        /// The session key, for display.
        key: String,
        /// The epoch the persistence holds.
        stored: u64,
        /// This pod's ring version.
        own: u64,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The user's codec failed to encode or decode a session.
    #[error("codec failed to {action} session `{key}`: {source}")]
    Codec {
        /// The session key, for display.
        key: String,
        /// `"encode"` or `"decode"`.
        action: &'static str,
        /// The codec's error.
        source: SharedError,
    },
    /// The store was built with limits that cannot work.
    #[error("invalid session store limit `{field}`: {reason}")]
    InvalidLimits {
        /// The offending field of [`Limits`](super::Limits).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl StoreError {
    /// The HTTP status the server layer answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Full { .. }
            | Self::LoadsSaturated { .. }
            | Self::Persistence { .. }
            | Self::PersistenceTimeout { .. }
            | Self::Interrupted { .. }
            | Self::Fenced { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge { .. } | Self::KeyTooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Moved { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::Codec { .. } | Self::InvalidLimits { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` hint, for the transient refusals.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after, .. }
            | Self::Full { retry_after, .. }
            | Self::LoadsSaturated { retry_after, .. }
            | Self::Persistence { retry_after, .. }
            | Self::PersistenceTimeout { retry_after, .. }
            | Self::Interrupted { retry_after, .. }
            | Self::Fenced { retry_after, .. } => Some(*retry_after),
            Self::TooLarge { .. }
            | Self::KeyTooLong { .. }
            | Self::Moved { .. }
            | Self::Codec { .. }
            | Self::InvalidLimits { .. } => None,
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Busy { .. } => "busy",
            Self::Full { .. } => "full",
            Self::TooLarge { .. } => "too_large",
            Self::KeyTooLong { .. } => "key_too_long",
            Self::Moved { .. } => "moved",
            Self::LoadsSaturated { .. } => "loads_saturated",
            Self::Persistence { .. } => "persistence",
            Self::PersistenceTimeout { .. } => "persistence_timeout",
            Self::Interrupted { .. } => "interrupted",
            Self::Fenced { .. } => "fenced",
            Self::Codec { .. } => "codec",
            Self::InvalidLimits { .. } => "invalid_limits",
        }
    }
}

/// A session key as error messages show it: lossy UTF-8, control characters
/// escaped, at most [`KEY_DISPLAY_CHARS`] characters then `…`.
pub(crate) fn display_key(key: &[u8]) -> String {
    struct Shown<'a>(&'a [u8]);
    impl fmt::Display for Shown<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let text = String::from_utf8_lossy(self.0);
            let mut chars = text.chars();
            for c in chars.by_ref().take(KEY_DISPLAY_CHARS) {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            if chars.next().is_some() {
                write!(f, "…")?;
            }
            Ok(())
        }
    }
    Shown(key).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shortened_and_escaped() {
        assert_eq!(display_key(b"cart-7"), "cart-7");
        assert_eq!(display_key(b"a\nb"), "a\\nb");
        assert_eq!(display_key(&[0xff, b'x']), "\u{fffd}x");
        let long = vec![b'k'; 500];
        let shown = display_key(&long);
        assert_eq!(shown.chars().count(), KEY_DISPLAY_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn transient_refusals_carry_retry_after_and_map_to_4xx_5xx() {
        let wait = Duration::from_secs(2);
        let busy = StoreError::Busy {
            key: "k".into(),
            queued: 8,
            retry_after: wait,
        };
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.retry_after(), Some(wait));
        let full = StoreError::Full {
            limit: "sessions",
            retry_after: wait,
        };
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.retry_after(), Some(wait));
        let large = StoreError::TooLarge {
            key: "k".into(),
            size: 10,
            max: 5,
        };
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(large.retry_after(), None);
        let moved = StoreError::Moved {
            key: "k".into(),
            owner: "chat-1-abcde".into(),
        };
        assert_eq!(moved.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(moved.metric_label(), "moved");
        assert!(moved.to_string().contains("chat-1-abcde"));
    }
}
