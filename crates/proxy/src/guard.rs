//! A request-head guard in front of hyper's HTTP/1 parser, for what hyper accepts and
//! nginx refuses: a request with both Content-Length and Transfer-Encoding (the classic
//! smuggling shape). hyper lets Transfer-Encoding win and drops Content-Length before the
//! handler could see both; nginx answers 400, and so do we: the guard holds each request
//! head until it is complete, and a head with both headers reaches hyper with an invalid
//! Content-Length instead, which hyper answers with 400 and a closed connection.
//!
//! The guard follows the connection's framing to find each head: a Content-Length body is
//! passed through by count; after a chunked body, an upgrade or HTTP/2's preface it steps
//! aside for the rest of the connection (the handler closes connections that carried a
//! chunked body, so no later head goes unseen).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The name a Transfer-Encoding other than `chunked` reaches the handler under.
pub const UNKNOWN_CODING: &str = "x-fulcrum-unknown-transfer-encoding";

/// Heads longer than this are hyper's to refuse (431).
const MAX_HEAD: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Pass,
}

/// The read side of a client connection, with its request heads checked.
#[derive(Debug)]
pub struct Guard<S> {
    inner: S,
    state: State,
    head: Vec<u8>,
    out: Vec<u8>,
    eof: bool,
}

impl<S> Guard<S> {
    pub fn new(inner: S) -> Guard<S> {
        Guard {
            inner,
            state: State::Head,
            head: Vec::new(),
            out: Vec::new(),
            eof: false,
        }
    }

    fn feed(&mut self, mut data: Vec<u8>) {
        while !data.is_empty() {
            match self.state {
                State::Pass => {
                    self.out.extend_from_slice(&data);
                    return;
                }
                State::Body(n) => {
                    let k = (n as usize).min(data.len());
                    self.out.extend_from_slice(&data[..k]);
                    let left = n - k as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                    data.drain(..k);
                }
                State::Head => {
                    self.head.extend_from_slice(&data);
                    data.clear();
                    // Empty lines before a request line are skipped, as parsers do.
                    let start = self
                        .head
                        .iter()
                        .position(|b| *b != b'\r' && *b != b'\n')
                        .unwrap_or(self.head.len());
                    match find(&self.head[start..], b"\r\n\r\n")
                        .map(|i| start + i + 4)
                        .or_else(|| find(&self.head[start..], b"\n\n").map(|i| start + i + 2))
                    {
                        Some(end) => {
                            let rest = self.head.split_off(end);
                            let head = std::mem::take(&mut self.head);
                            let (head, state) = inspect(head);
                            self.out.extend_from_slice(&head);
                            self.state = state;
                            data = rest;
                        }
                        None if self.head.len() > MAX_HEAD => {
                            self.out.append(&mut self.head);
                            self.state = State::Pass;
                        }
                        None => {}
                    }
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What follows a complete head, and the head as hyper should see it.
fn inspect(head: Vec<u8>) -> (Vec<u8>, State) {
    if head.starts_with(b"PRI * HTTP/2.0") {
        return (head, State::Pass);
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut unknown_coding: Option<std::ops::Range<usize>> = None;
    let mut offset = 0;
    let mut upgrade = false;
    let mut has_length = false;
    for (i, line) in head.split(|b| *b == b'\n').enumerate() {
        let at = offset;
        offset += line.len() + 1;
        if i == 0 {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        match name.as_str() {
            "content-length" => {
                has_length = true;
                length = value.parse().ok();
            }
            "transfer-encoding" => {
                chunked = true;
                if !value.eq_ignore_ascii_case("chunked") {
                    unknown_coding = Some(at..at + colon);
                }
            }
            "upgrade" => upgrade = true,
            _ => {}
        }
    }
    if chunked && has_length {
        // Keep the request line; an unparsable length makes hyper answer 400 and close.
        let first = head
            .iter()
            .position(|b| *b == b'\n')
            .map_or(head.len(), |i| i + 1);
        let mut bad = head[..first].to_vec();
        bad.extend_from_slice(b"Content-Length: both-content-length-and-transfer-encoding\r\n\r\n");
        return (bad, State::Pass);
    }
    if let Some(name) = unknown_coding {
        // hyper refuses a coding it cannot decode with 400; nginx answers 501, and so does
        // the handler on seeing the header under this name.
        let mut renamed = head[..name.start].to_vec();
        renamed.extend_from_slice(UNKNOWN_CODING.as_bytes());
        renamed.extend_from_slice(&head[name.end..]);
        return (renamed, State::Pass);
    }
    let state = if chunked || upgrade {
        State::Pass
    } else {
        match length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head,
        }
    };
    (head, state)
}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Pass && this.head.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled().to_vec();
                    if got.is_empty() {
                        // The peer is done: whatever head is held goes on as it is.
                        this.eof = true;
                        let held = std::mem::take(&mut this.head);
                        this.out.extend_from_slice(&held);
                        continue;
                    }
                    this.feed(got);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let mut b = tokio_test_stream(chunks);
        let mut g = Guard::new(&mut b);
        let mut out = Vec::new();
        g.read_to_end(&mut out).await.unwrap();
        out
    }

    fn tokio_test_stream(chunks: &[&[u8]]) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(chunks.concat())
    }

    #[tokio::test]
    async fn ordinary_requests_pass_unchanged() {
        let two = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(&[two]).await, two.to_vec());
    }

    #[tokio::test]
    async fn both_lengths_become_an_invalid_length() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let out = through(&[req]).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("POST /a HTTP/1.1\r\nContent-Length: both"),
            "{text}"
        );
        assert!(!text.contains("Transfer-Encoding"));
    }

    #[tokio::test]
    async fn unknown_codings_are_renamed_for_the_handler() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
        let out = String::from_utf8_lossy(&through(&[req]).await).into_owned();
        assert_eq!(
            out,
            format!("POST /a HTTP/1.1\r\nHost: x\r\n{UNKNOWN_CODING}: gzip\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn the_second_head_after_a_counted_body_is_checked_too() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        let out = String::from_utf8_lossy(&through(&[req]).await).into_owned();
        assert!(
            out.contains("okPOST /b HTTP/1.1\r\nContent-Length: both"),
            "{out}"
        );
    }
}
