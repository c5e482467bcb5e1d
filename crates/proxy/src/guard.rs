//! A request-head guard in front of hyper's HTTP/1 parser, for what hyper accepts and
//! nginx refuses: a request with both Content-Length and Transfer-Encoding (the classic
//! smuggling shape). hyper lets Transfer-Encoding win and drops Content-Length before the
//! handler could see both; nginx answers 400, and so do we: the guard holds each request
//! head until it is complete, and a head with both headers reaches hyper with an invalid
//! Content-Length instead, which hyper answers with 400 and a closed connection.
//!
//! It also keeps nginx's two waiting times, which hyper has as one: client_header_timeout
//! for a head (from the connection's start for the first, from its first byte for later
//! ones) and keepalive_timeout while the connection waits for its next request once the
//! last response went out (the handler tells it when, through [`Shared`]). A connection
//! past either is closed without an answer, as nginx does. (send_timeout, on the writes,
//! is stall::SendTimed around the guard.)
//!
//! The guard follows the connection's framing to find each head: a Content-Length body is
//! passed through by count, a chunked one by its chunk framing; after an upgrade, HTTP/2's
//! preface or broken chunk framing (which hyper refuses, closing the connection) it steps
//! aside for the rest of the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The name a Transfer-Encoding other than `chunked` reaches the handler under: as long
/// as "Transfer-Encoding", so it is renamed in place.
pub const UNKNOWN_CODING: &str = "X-Unknown-Codings";

/// Heads longer than this are hyper's to refuse (431).
const MAX_HEAD: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    /// A chunked body: where in its framing.
    Chunked(Chunk),
    Pass,
}

/// The framing of a chunked body (RFC 9112 7.1), followed byte by byte so the head after
/// it is found and checked too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The size line: the size so far, whether it had a digit, whether an extension began.
    Size {
        size: u64,
        digits: bool,
        ext: bool,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty one; whether this line is empty
    /// so far.
    Trailers {
        empty: bool,
    },
}

const CHUNK_START: State = State::Chunked(Chunk::Size {
    size: 0,
    digits: false,
    ext: false,
});

impl Chunk {
    /// Takes bytes of the body from `bytes`: how many it used, and the state after. Pass
    /// when the framing is broken (hyper refuses the body then, and closes).
    fn step(self, bytes: &[u8]) -> (usize, State) {
        let mut c = self;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            c = match c {
                Chunk::Data(n) => {
                    // The data in one go.
                    let k = (n as usize).min(bytes.len() - i);
                    i += k;
                    let left = n - k as u64;
                    c = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    continue;
                }
                Chunk::Size { size, digits, ext } => match b {
                    b'\n' if !digits => return (i + 1, State::Pass),
                    b'\n' if size == 0 => Chunk::Trailers { empty: true },
                    b'\n' => Chunk::Data(size),
                    b'\r' => c,
                    _ if ext => c,
                    b';' | b' ' | b'\t' => Chunk::Size {
                        size,
                        digits,
                        ext: true,
                    },
                    _ => match (b as char).to_digit(16) {
                        Some(d) if size >> 60 == 0 => Chunk::Size {
                            size: size * 16 + u64::from(d),
                            digits: true,
                            ext,
                        },
                        _ => return (i + 1, State::Pass),
                    },
                },
                Chunk::DataEnd => match b {
                    b'\r' => c,
                    b'\n' => Chunk::Size {
                        size: 0,
                        digits: false,
                        ext: false,
                    },
                    _ => return (i + 1, State::Pass),
                },
                Chunk::Trailers { empty } => match b {
                    b'\n' if empty => return (i + 1, State::Head),
                    b'\n' => Chunk::Trailers { empty: true },
                    b'\r' => c,
                    _ => Chunk::Trailers { empty: false },
                },
            };
            i += 1;
        }
        (bytes.len(), State::Chunked(c))
    }
}

impl State {
    /// For tests: a chunked state's step.
    #[cfg(test)]
    fn step_from(self, bytes: &[u8]) -> (usize, State) {
        match self {
            State::Chunked(c) => c.step(bytes),
            other => (0, other),
        }
    }
}

/// What the guard and the request handler share about one client connection.
#[derive(Debug)]
pub struct Shared {
    start: Instant,
    /// Responses finished (sent, or given up), and when the last one did (ms after start).
    done: AtomicU64,
    done_at_ms: AtomicU64,
    /// Requests the handler has taken (for keepalive_requests).
    requests: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            start: Instant::now(),
            done: AtomicU64::new(0),
            done_at_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// A request begins: how many the connection has had, this one included.
    pub fn request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A response is over: written, or given up (see log::Sent).
    pub(crate) fn finished(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.done_at_ms.store(ms, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Release);
    }
}

/// client_header_timeout and keepalive_timeout.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub header: Duration,
    pub keepalive: Duration,
}

/// The read side of a client connection, with its request heads checked. Bytes are read
/// straight into hyper's buffer; only the head being assembled is copied aside, to be
/// scanned when it is complete.
#[derive(Debug)]
pub struct Guard<S> {
    inner: S,
    state: State,
    head: Vec<u8>,
    /// Heads completed, and when the first byte of the one in progress came.
    heads: u64,
    head_started: Option<Instant>,
    shared: Arc<Shared>,
    waits: Waits,
    /// Armed while the connection waits for a head.
    timer: Option<Pin<Box<Sleep>>>,
}

/// What a complete head needs done to the bytes hyper has not seen yet.
enum Verdict {
    Next(State),
    /// Both Content-Length and Transfer-Encoding: spoil the head.
    Refuse,
    /// A coding other than chunked: rename the header (at this offset in the head).
    Rename(usize),
}

impl<S> Guard<S> {
    pub fn new(inner: S, shared: Arc<Shared>, waits: Waits) -> Guard<S> {
        Guard {
            inner,
            state: State::Head,
            head: Vec::new(),
            heads: 0,
            head_started: None,
            shared,
            waits,
            timer: None,
        }
    }

    /// Until when the connection may wait for what it is waiting for, if it is waiting
    /// for a head: none while a request or its response is under way.
    fn deadline(&self) -> Option<Instant> {
        if self.state != State::Head {
            return None;
        }
        if let Some(t) = self.head_started {
            return Some(t + self.waits.header);
        }
        if self.heads == 0 {
            return Some(self.shared.start + self.waits.header);
        }
        if self.shared.done.load(Ordering::Acquire) < self.heads {
            return None;
        }
        let done = Duration::from_millis(self.shared.done_at_ms.load(Ordering::Relaxed));
        Some(self.shared.start + done + self.waits.keepalive)
    }

    /// Follows the framing over bytes just read (not yet seen by hyper), changing them
    /// where a head must be refused.
    fn scan(&mut self, chunk: &mut [u8]) {
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::Pass => return,
                State::Chunked(c) => {
                    let (used, state) = c.step(&chunk[i..]);
                    i += used;
                    self.state = state;
                }
                State::Body(n) => {
                    let k = (n as usize).min(chunk.len() - i);
                    i += k;
                    let left = n - k as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(&chunk[i..]);
                    let Some(end) = head_end(&self.head) else {
                        if self.head.len() > MAX_HEAD {
                            // hyper's to refuse (431).
                            self.head = Vec::new();
                            self.state = State::Pass;
                        }
                        return;
                    };
                    // The terminator ends in this chunk: its head bytes here start at i.
                    let used = end - before;
                    let verdict = inspect(&self.head[..end]);
                    self.head = Vec::new();
                    self.heads += 1;
                    self.head_started = None;
                    match verdict {
                        Verdict::Next(state) => self.state = state,
                        Verdict::Refuse => {
                            // A NUL inside the head: hyper answers 400 and closes.
                            chunk[i] = 0;
                            self.state = State::Pass;
                        }
                        Verdict::Rename(at) => {
                            if at >= before {
                                let at = i + at - before;
                                chunk[at..at + UNKNOWN_CODING.len()]
                                    .copy_from_slice(UNKNOWN_CODING.as_bytes());
                            } else {
                                chunk[i] = 0;
                            }
                            self.state = State::Pass;
                        }
                    }
                    i += used;
                }
            }
        }
    }
}

/// Where the head ends (past its blank line), empty lines before the request line skipped.
fn head_end(head: &[u8]) -> Option<usize> {
    let start = head.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let rest = &head[start..];
    let crlf = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = rest.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(start + a.min(b)),
        (a, b) => a.or(b).map(|e| start + e),
    }
}

/// What follows a complete head.
fn inspect(head: &[u8]) -> Verdict {
    if head.starts_with(b"PRI * HTTP/2.0") {
        return Verdict::Next(State::Pass);
    }
    let mut length: Option<u64> = None;
    let mut has_length = false;
    let mut chunked = false;
    let mut unknown_coding = None;
    let mut upgrade = false;
    let mut offset = 0;
    for (i, line) in head.split(|b| *b == b'\n').enumerate() {
        let at = offset;
        offset += line.len() + 1;
        if i == 0 {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        if name.eq_ignore_ascii_case(b"content-length") {
            has_length = true;
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
            if !value.eq_ignore_ascii_case("chunked") {
                unknown_coding = Some(at);
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if chunked && has_length {
        return Verdict::Refuse;
    }
    if let Some(at) = unknown_coding {
        return Verdict::Rename(at);
    }
    Verdict::Next(if upgrade {
        State::Pass
    } else if chunked {
        CHUNK_START
    } else {
        match length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head,
        }
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                if this.state != State::Pass {
                    let new = &mut buf.filled_mut()[before..];
                    this.scan(new);
                    // A head begun and not complete (after a body in the same read, too):
                    // client_header_timeout from its first bytes.
                    if this.state == State::Head
                        && !this.head.is_empty()
                        && this.head_started.is_none()
                    {
                        this.head_started = Some(Instant::now());
                    }
                }
                if this.state == State::Pass {
                    this.timer = None;
                }
            }
            Poll::Pending => {
                if let Some(deadline) = this.deadline() {
                    let timer = match &mut this.timer {
                        Some(t) => {
                            if t.deadline() != deadline {
                                t.as_mut().reset(deadline);
                            }
                            t
                        }
                        None => this
                            .timer
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "client timed out waiting for a request",
                        )));
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        polled
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

    /// A peer that delivers `chunks` one read at a time.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if let Some(c) = self.0.pop_front() {
                buf.put_slice(&c);
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let waits = Waits {
            header: Duration::from_secs(60),
            keepalive: Duration::from_secs(75),
        };
        let mut g = Guard::new(
            Chunks(chunks.iter().map(|c| c.to_vec()).collect()),
            Shared::new(),
            waits,
        );
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// A peer that sends `first` (if anything), then nothing more, ever.
    struct Quiet(Option<Vec<u8>>);

    impl AsyncRead for Quiet {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.take() {
                Some(b) => {
                    buf.put_slice(&b);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            }
        }
    }

    const WAITS: Waits = Waits {
        header: Duration::from_secs(60),
        keepalive: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_gets_client_header_timeout() {
        let start = Instant::now();
        let mut g = Guard::new(Quiet(None), Shared::new(), WAITS);
        let err = g.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_in_progress_gets_client_header_timeout_from_its_first_byte() {
        let shared = Shared::new();
        let mut g = Guard::new(Quiet(Some(b"GET / HTTP/1.1\r\n".to_vec())), shared, WAITS);
        let mut buf = [0u8; 64];
        tokio::time::sleep(Duration::from_secs(30)).await;
        let started = Instant::now();
        assert!(g.read(&mut buf).await.unwrap() > 0);
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_timeout_runs_from_the_end_of_the_response() {
        let shared = Shared::new();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut g = Guard::new(Quiet(Some(head)), shared.clone(), WAITS);
        let mut buf = [0u8; 64];
        assert!(g.read(&mut buf).await.unwrap() > 0);
        // The response takes its time: no wait applies meanwhile.
        let slow = tokio::time::timeout(Duration::from_secs(1000), g.read(&mut buf)).await;
        assert!(slow.is_err(), "the guard gave up during a response");
        shared.finished();
        let done = Instant::now();
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(done.elapsed().as_secs(), 5);
    }

    #[tokio::test]
    async fn ordinary_requests_pass_unchanged() {
        let two = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(&[two]).await, two.to_vec());
        assert_eq!(
            through(&[&two[..20], &two[20..50], &two[50..]]).await,
            two.to_vec()
        );
    }

    #[tokio::test]
    async fn both_lengths_spoil_the_head() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let out = through(&[req]).await;
        assert_eq!(out[0], 0, "spoilt where the head starts");
        assert_eq!(&out[1..], &req[1..]);
        // Split across reads: spoilt in the part hyper has not seen.
        let out = through(&[&req[..40], &req[40..]]).await;
        assert_eq!(&out[..40], &req[..40]);
        assert_eq!(out[40], 0);
    }

    #[tokio::test]
    async fn the_head_after_a_chunked_body_is_checked_too() {
        let body = "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        let smuggled = "GET /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        let req = format!("{body}{smuggled}");
        let at = body.len();
        // In one read, and split inside the chunk sizes, data and trailers.
        let whole = through(&[req.as_bytes()]).await;
        assert_eq!(whole[at], 0, "{}", String::from_utf8_lossy(&whole));
        assert_eq!(whole[..at], req.as_bytes()[..at]);
        let cuts = [70, 74, 80, 95, 100, 115];
        let mut parts = Vec::new();
        let mut from = 0;
        for c in cuts {
            parts.push(&req.as_bytes()[from..c]);
            from = c;
        }
        parts.push(&req.as_bytes()[from..]);
        let split = through(&parts).await;
        // Spoilt in the part of the head hyper has not seen yet.
        assert_eq!(split[..at], req.as_bytes()[..at]);
        assert!(
            split[at..].contains(&0),
            "{}",
            String::from_utf8_lossy(&split)
        );
        // An ordinary request after a chunked one passes as it is.
        let fine = format!("{body}GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(through(&[fine.as_bytes()]).await, fine.as_bytes());
    }

    #[test]
    fn broken_chunk_framing_steps_aside() {
        let (_, state) = CHUNK_START.step_from(b"zz\r\n");
        assert_eq!(state, State::Pass);
        let (_, state) = CHUNK_START.step_from(b"3\r\nabcX");
        assert_eq!(state, State::Pass);
        let (used, state) = CHUNK_START.step_from(b"0\r\n\r\nGET");
        assert_eq!((used, state), (5, State::Head));
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
        let out = through(&[req]).await;
        let second = req.windows(7).position(|w| w == b"POST /b").unwrap();
        assert_eq!(out[second], 0, "{}", String::from_utf8_lossy(&out));
        assert_eq!(out[..second], req[..second]);
    }
}
