//! The per-service shared secret that authenticates handoff requests.
//!
//! The operator generates one Secret per service (`<service>-handoff`, key
//! `key`: 64 hex characters) and mounts it in every pod at
//! `/var/run/locus/handoff/key`, announced by `LOCUS_HANDOFF_SECRET_FILE`.
//! Every handoff request carries it as `authorization: Bearer <secret>`; a
//! pod answers 401 to a request without it or with another value. The
//! comparison takes the same time whatever the position of the first
//! differing byte.
//!
//! The secret travels in clear over the pod network, like the sessions
//! themselves: it keeps other workloads of the cluster from reading or
//! planting sessions, not an attacker who can sniff pod traffic (run the pod
//! network encrypted, or a mesh with mTLS, for that).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;

/// Environment variable naming the file that holds the secret.
pub const SECRET_FILE_ENV: &str = "LOCUS_HANDOFF_SECRET_FILE";

/// Where the operator mounts the secret when the variable is unset.
pub const DEFAULT_SECRET_FILE: &str = "/var/run/locus/handoff/key";

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the handoff secret from {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret is too short, too long, or not printable ASCII.
    #[error("the handoff secret {reason}")]
    Invalid {
        /// What is wrong.
        reason: &'static str,
    },
}

/// The shared secret of one service's handoff endpoints. Clones share it;
/// `Debug` never prints it.
#[derive(Clone)]
pub struct HandoffSecret {
    secret: Arc<[u8]>,
    header: HeaderValue,
}

impl fmt::Debug for HandoffSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoffSecret")
            .field("bytes", &self.secret.len())
            .finish_non_exhaustive()
    }
}

impl HandoffSecret {
    /// A secret given directly: 16..=4096 bytes of printable ASCII
    /// (surrounding whitespace is trimmed).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, SecretError> {
        let secret = secret.as_ref().trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::Invalid {
                reason: "is shorter than 16 bytes",
            });
        }
        if secret.len() > MAX_SECRET_BYTES {
            return Err(SecretError::Invalid {
                reason: "is longer than 4096 bytes",
            });
        }
        if !secret.iter().all(u8::is_ascii_graphic) {
            return Err(SecretError::Invalid {
                reason: "must be printable ASCII without spaces",
            });
        }
        let mut header = b"Bearer ".to_vec();
        header.extend_from_slice(secret);
        let mut header = HeaderValue::from_bytes(&header).map_err(|_| SecretError::Invalid {
            reason: "is not a valid header value",
        })?;
        header.set_sensitive(true);
        Ok(Self {
            secret: secret.into(),
            header,
        })
    }

    /// The secret in `path` (the operator's mount holds 64 hex characters).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::new(bytes)
    }

    /// The secret in the file named by [`SECRET_FILE_ENV`], or in
    /// [`DEFAULT_SECRET_FILE`] when the variable is unset.
    pub fn from_env() -> Result<Self, SecretError> {
        let path = std::env::var_os(SECRET_FILE_ENV)
            .map_or_else(|| PathBuf::from(DEFAULT_SECRET_FILE), PathBuf::from);
        Self::from_file(path)
    }

    /// The `authorization` header value requests carry.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }

    /// True if `header` (an `authorization` value) carries this secret.
    /// Constant time in the secret's content.
    pub fn verify(&self, header: Option<&HeaderValue>) -> bool {
        let Some(presented) = header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(presented, &self.secret)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Fold every byte pair (and the length difference) into one value, so
    // the loop never exits early on a mismatch.
    let mut diff = u8::from(a.len() != b.len());
    let longest = a.len().max(b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn verifies_only_the_exact_bearer_secret() {
        let secret = HandoffSecret::new(format!("{KEY}\n")).unwrap();
        assert_eq!(
            secret.authorization().as_bytes(),
            format!("Bearer {KEY}").as_bytes()
        );
        assert!(secret.verify(Some(secret.authorization())));
        assert!(!secret.verify(None));
        let wrong = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(!secret.verify(Some(&wrong(KEY))), "no Bearer prefix");
        assert!(!secret.verify(Some(&wrong(&format!("Bearer {}", &KEY[1..])))));
        assert!(!secret.verify(Some(&wrong(&format!("Bearer {KEY}0")))));
        let mut flipped = KEY.as_bytes().to_vec();
        flipped[63] = b'0';
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(!secret.verify(Some(&wrong(&format!("Bearer {flipped}")))));
        assert!(!format!("{secret:?}").contains("0123"));
    }

    #[test]
    fn refuses_short_or_unprintable_secrets_and_reads_files() {
        assert!(HandoffSecret::new("short").is_err());
        assert!(HandoffSecret::new("0123456789abcdef 0123").is_err());
        let dir = std::env::temp_dir().join(format!("locus-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, KEY).unwrap();
        let secret = HandoffSecret::from_file(&path).unwrap();
        assert!(secret.verify(Some(
            &HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap()
        )));
        assert!(matches!(
            HandoffSecret::from_file(dir.join("missing")),
            Err(SecretError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn constant_time_eq_compares_lengths_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
