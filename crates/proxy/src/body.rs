//! Response bodies on their way to the client, whatever carries them (our HTTP/1 engine,
//! or hyper's HTTP/2): a fixed text, an upstream's body read off its connection, or one
//! spooled ahead of a slow client.

use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::stream::{BoxError, Source};

/// A response body.
#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Relayed(Box<crate::upstream::Relayed>),
    Spooled(Box<crate::spool::Spooled>),
    /// A file, or slices of it (the static module).
    File(Box<crate::files::FileBody>),
    /// Another body, compressed as it goes (the gzip filter).
    Gzip(Box<crate::gzip::GzipBody>),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }

    /// The length, where it is known before the body is read.
    pub fn exact_len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Relayed(r) => r.remaining(),
            Body::Spooled(s) => s.exact_len(),
            Body::File(f) => Some(f.len()),
            Body::Gzip(_) => None,
        }
    }

    pub async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl Source for Body {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        match self {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(Ok)),
            Body::Relayed(r) => r.poll_next(cx),
            Body::Spooled(s) => s.poll_next(cx),
            Body::File(f) => f.poll_next(cx),
            Body::Gzip(g) => g.poll_next(cx),
        }
    }
}
