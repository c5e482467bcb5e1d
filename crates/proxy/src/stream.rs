//! What every body on its way to the client is: something that yields pieces. A leaf
//! module: the body kinds (fixed, relayed, spooled) all build on it.

use std::task::{Context, Poll};

use bytes::Bytes;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something that yields a body piece by piece.
pub trait Source: Send + Unpin {
    /// The next piece; `None` at the end.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>>;
}
