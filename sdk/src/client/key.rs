//! Where a request's session key comes from.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;

use crate::headers;

type KeyFn = dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync;

/// How to find a request's session key; used by both the client router and
/// the server ownership layer, so both sides agree on the key.
///
/// The default is the header [`x-locus-session`](crate::headers::SESSION). An
/// empty key counts as no key.
///
/// ```
/// use locus::SessionKey;
///
/// // The room id in `/rooms/{id}/...` is the key.
/// let key = SessionKey::from_fn(|parts| {
///     let mut segments = parts.uri.path().split('/').skip(1);
///     (segments.next() == Some("rooms"))
///         .then(|| segments.next())
///         .flatten()
///         .map(|id| id.as_bytes().to_vec())
/// });
/// let request = http::Request::get("/rooms/42/messages").body(()).unwrap();
/// let (parts, ()) = request.into_parts();
/// assert_eq!(key.extract(&parts).as_deref(), Some(&b"42"[..]));
/// ```
#[derive(Clone)]
pub enum SessionKey {
    /// The value of this header, as raw bytes.
    Header(HeaderName),
    /// Computed by a closure from the request head.
    Custom(Arc<KeyFn>),
}

impl Default for SessionKey {
    fn default() -> Self {
        Self::Header(headers::SESSION)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl SessionKey {
    /// The key is the value of header `name`.
    pub fn header(name: HeaderName) -> Self {
        Self::Header(name)
    }

    /// The key is computed by `f` from the request head (`None`: no key).
    pub fn from_fn(f: impl Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }

    /// The key of a request, if it has a non-empty one.
    pub fn extract<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, [u8]>> {
        let key = match self {
            Self::Header(name) => Cow::Borrowed(parts.headers.get(name)?.as_bytes()),
            Self::Custom(f) => Cow::Owned(f(parts)?),
        };
        (!key.is_empty()).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn header_key_is_the_raw_value_and_empty_is_none() {
        let key = SessionKey::default();
        let with = parts(
            http::Request::get("/")
                .header("x-locus-session", "room-7")
                .body(())
                .unwrap(),
        );
        assert_eq!(key.extract(&with).as_deref(), Some(&b"room-7"[..]));
        let empty = parts(
            http::Request::get("/")
                .header("x-locus-session", "")
                .body(())
                .unwrap(),
        );
        assert_eq!(key.extract(&empty), None);
        assert_eq!(key.extract(&parts(http::Request::new(()))), None);
    }

    #[test]
    fn custom_key() {
        let key = SessionKey::from_fn(|p| p.uri.query().map(|q| q.as_bytes().to_vec()));
        let p = parts(http::Request::get("/x?abc").body(()).unwrap());
        assert_eq!(key.extract(&p).as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            key.extract(&parts(http::Request::get("/x").body(()).unwrap())),
            None
        );
    }
}
