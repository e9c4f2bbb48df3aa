//! The body the router hands its inner service: either a buffered copy it
//! can send again after a 421, or the caller's body streamed once.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Limited};

use crate::BoxError;

/// A request body as sent by the [`Router`](super::Router).
///
/// Bodies whose exact length is known and at most the router's
/// `max_replay_bytes` (default 64 KiB; `Full`, `Bytes`, `String`, empty
/// bodies, hyper bodies with a `content-length`) are read into memory first
/// and can be sent again after a 421. Other bodies stream through once; a 421
/// on them becomes [`RouteError::Misdirected`](super::RouteError::Misdirected).
pub struct RouterBody<B> {
    inner: Inner<B>,
}

enum Inner<B> {
    Buffered(Option<Bytes>),
    Streaming(Pin<Box<B>>),
}

impl<B> fmt::Debug for RouterBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Buffered(bytes) => f
                .debug_tuple("Buffered")
                .field(&bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Streaming(_) => f.write_str("Streaming"),
        }
    }
}

impl<B> RouterBody<B> {
    /// A buffered body.
    pub fn buffered(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Buffered(Some(bytes)),
        }
    }

    /// A body streamed through once.
    pub fn streaming(body: B) -> Self {
        Self {
            inner: Inner::Streaming(Box::pin(body)),
        }
    }

    /// True if this is a buffered (replayable) body.
    pub fn is_buffered(&self) -> bool {
        matches!(self.inner, Inner::Buffered(_))
    }
}

impl<B> RouterBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Buffers `body` if its exact size is known and at most `max` bytes;
    /// returns the body to send and, if buffered, a copy to send again.
    pub(crate) async fn prepare(body: B, max: usize) -> Result<(Self, Option<Bytes>), BoxError> {
        let replayable = body
            .size_hint()
            .exact()
            .is_some_and(|len| usize::try_from(len).is_ok_and(|len| len <= max));
        if !replayable {
            return Ok((Self::streaming(body), None));
        }
        // The hint may lie: never read more than `max`.
        let bytes = Limited::new(body, max).collect().await?.to_bytes();
        Ok((Self::buffered(bytes.clone()), Some(bytes)))
    }
}

impl<B> Body for RouterBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Buffered(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Inner::Streaming(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Buffered(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Inner::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Streaming(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Full, StreamBody};

    use super::*;

    #[tokio::test]
    async fn small_known_bodies_are_buffered_others_stream() {
        let (body, copy) = RouterBody::prepare(Full::new(Bytes::from_static(b"hello")), 16)
            .await
            .unwrap();
        assert!(body.is_buffered());
        assert_eq!(copy.as_deref(), Some(&b"hello"[..]));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        let (body, copy) = RouterBody::prepare(Full::new(Bytes::from_static(b"hello")), 4)
            .await
            .unwrap();
        assert!(!body.is_buffered());
        assert!(copy.is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(
            Bytes::from_static(b"abc"),
        ))]);
        let (body, copy) = RouterBody::prepare(StreamBody::new(chunks), 1024)
            .await
            .unwrap();
        assert!(!body.is_buffered() && copy.is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }
}
