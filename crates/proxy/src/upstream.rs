//! Upstream connections on our own HTTP/1 engine: a request head written in nginx's order
//! and case, the response head read as nginx's proxy module reads it, and the body relayed
//! as slices of the connection's read buffer. Timeouts are nginx's: proxy_connect_timeout
//! for the connection (and TLS), proxy_send_timeout between writes, proxy_read_timeout
//! between reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fulcrum_http1::{BodyDecoder, Chunk, ResponseError, ResponseHead, ResponseParser};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use fulcrum_upstream::PeerAddr;

use crate::stall::{SendTimed, Stall};
use crate::stream::BoxError;

const UPSTREAM_STALL: &str = "upstream timed out while sending request to upstream";

/// proxy_read_timeout passed between two reads of a response body.
const READ_STALL: &str = "upstream timed out (110: Connection timed out) while reading upstream";

/// The upstream closed a connection before a byte of the response head.
pub const CLOSED_BEFORE_HEAD: &str =
    "upstream prematurely closed connection while reading response header from upstream";

/// How much a read of a response head asks the kernel for.
const READ_SIZE: usize = 16 * 1024;

/// ... and a read of a body: large bodies go in large pieces (fewer reads, fewer pieces
/// to spool and to write).
const BODY_READ_SIZE: usize = 16 * 1024;

/// proxy_buffer_size's default: an upstream's response head must fit.
pub const HEAD_LIMIT: usize = 8 * 1024;

/// The connection to a peer: TCP, or a UNIX-domain socket (`unix:/path`).
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Forwards each call to the stream inside.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Transport::Tcp($s) => $e,
            Transport::Unix($s) => $e,
        }
    };
}

impl Transport {
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        each!(self, s => s.try_read(buf))
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// The byte stream to an upstream: plain or TLS, over TCP or a UNIX-domain socket.
#[derive(Debug)]
pub enum Io {
    Plain(Transport),
    Tls(Box<tokio_rustls::client::TlsStream<Transport>>),
}

impl Io {
    fn transport(&self) -> &Transport {
        match self {
            Io::Plain(s) => s,
            Io::Tls(t) => t.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open upstream connection and what has been read off it but not used yet.
#[derive(Debug)]
pub struct Conn {
    pub io: SendTimed<Io>,
    pub buf: BytesMut,
    /// Requests sent on it so far.
    pub requests: u32,
    pub idle_since: Instant,
}

/// Why a try failed, with nginx's error-log wording.
#[derive(Debug)]
pub enum Failure {
    /// A kept connection the peer had closed: the request did not reach it (`sent`
    /// false), or the peer closed it without a byte of answer (`sent` true). Either way
    /// the request may go again on a new connection without counting as a try, the
    /// second only when it is idempotent (nginx does not send a POST twice).
    Stale {
        sent: bool,
    },
    /// proxy_read_timeout or proxy_send_timeout.
    Timeout(String),
    /// The response head was not HTTP nginx would relay.
    InvalidHeader(String),
    Error(String),
}

impl Conn {
    /// Whether an idle connection is still open: nothing to read and no end of stream
    /// (nginx drops a kept connection the moment its peer closes it or sends anything).
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        // (An idle connection holds no unread bytes: `Idle::put` drops its buffer.)
        matches!(
            self.io.get_ref().transport().try_read(&mut probe),
            Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Sends a request (head and body, in one write where they fit), then reads the
    /// response head within `read_timeout`.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        read_timeout: Duration,
    ) -> Result<ResponseHead, Failure> {
        self.send_head(&[head, body]).await?;
        self.response_head(head_request, read_timeout).await
    }

    /// Writes the start of a request (its head, and what of its body is at hand): a
    /// kept connection that fails here had been closed by its peer (`Stale`).
    pub async fn send_head(&mut self, parts: &[&[u8]]) -> Result<(), Failure> {
        let fresh = self.requests == 0;
        self.requests += 1;
        match write_all(&mut self.io, parts).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(send_timeout()),
            Err(_) if !fresh => Err(Failure::Stale { sent: false }),
            Err(e) => Err(send_failed(&e)),
        }
    }

    /// Writes more of a request body (proxy_request_buffering off): a failure here is
    /// the peer's, whatever the connection's age.
    pub async fn send_more(&mut self, parts: &[&[u8]]) -> Result<(), Failure> {
        match write_all(&mut self.io, parts).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(send_timeout()),
            Err(e) => Err(send_failed(&e)),
        }
    }

    /// Reads the response head to the request just sent, within `read_timeout`.
    pub async fn response_head(
        &mut self,
        head_request: bool,
        read_timeout: Duration,
    ) -> Result<ResponseHead, Failure> {
        let fresh = self.requests <= 1;
        let mut parser = ResponseParser::new(HEAD_LIMIT, head_request);
        let read = async {
            loop {
                match parser.parse(&mut self.buf) {
                    Ok(Some(h)) => return Ok(h),
                    Ok(None) => {}
                    Err(e @ ResponseError::Invalid) | Err(e @ ResponseError::TooBig) => {
                        return Err(Failure::InvalidHeader(format!(
                            "{e} while reading response header from upstream"
                        )))
                    }
                }
                self.buf.reserve(READ_SIZE);
                match tokio_util::io::read_buf(&mut self.io, &mut self.buf).await {
                    Ok(0) if !fresh && self.buf.is_empty() => {
                        return Err(Failure::Stale { sent: true })
                    }
                    Ok(0) => return Err(Failure::Error(CLOSED_BEFORE_HEAD.into())),
                    Ok(_) => {}
                    Err(_) if !fresh && self.buf.is_empty() => {
                        return Err(Failure::Stale { sent: true })
                    }
                    Err(e) => {
                        return Err(Failure::Error(format!(
                            "recv() failed ({}) while reading response header from upstream",
                            os_error(&e)
                        )))
                    }
                }
            }
        };
        match tokio::time::timeout(read_timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(
                "upstream timed out (110: Connection timed out) while reading response header from upstream".into(),
            )),
        }
    }
}

fn send_timeout() -> Failure {
    Failure::Timeout(
        "upstream timed out (110: Connection timed out) while sending request to upstream".into(),
    )
}

fn send_failed(e: &std::io::Error) -> Failure {
    Failure::Error(format!(
        "writev() failed ({}) while sending request to upstream",
        os_error(e)
    ))
}

/// Writes every part, in as few (vectored) writes as the socket takes.
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> std::io::Result<()> {
    // The common case, a head alone (a request without a body), allocates nothing.
    let mut full = parts.iter().filter(|p| !p.is_empty());
    if let (first, None) = (full.next(), full.next()) {
        return match first {
            Some(p) => w.write_all(p).await,
            None => Ok(()),
        };
    }
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut at = 0;
    while at < parts.len() {
        if parts.len() - at == 1 {
            return w.write_all(parts[at]).await;
        }
        let bufs: Vec<std::io::IoSlice<'_>> = parts[at..]
            .iter()
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut n = w.write_vectored(&bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while at < parts.len() && n >= parts[at].len() {
            n -= parts[at].len();
            at += 1;
        }
        if n > 0 {
            parts[at] = &parts[at][n..];
        }
    }
    Ok(())
}

/// TLS to an https upstream: the location's proxy_ssl_* configuration, and the name to
/// verify and send (None: the peer's address, which sends no SNI).
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub name: Option<rustls::pki_types::ServerName<'static>>,
}

/// Why a connection could not be opened (nginx's message, for the error log).
#[derive(Debug)]
pub enum ConnectError {
    /// proxy_connect_timeout passed (or the TLS handshake's share of it).
    Timeout(String),
    /// Refused, unreachable, the handshake failed: the peer's failure.
    Failed(String),
    /// The same, where nginx logs it at crit.
    Crit(String),
    /// The local address (proxy_bind) could not be bound: not the peer's failure, and
    /// no other peer would do better (nginx answers 500).
    Local(String),
}

/// A socket bound to proxy_bind's `local` for a connection to `peer`: with port 0 the
/// port is left to the connect (IP_BIND_ADDRESS_NO_PORT, as nginx).
fn bound(local: SocketAddr, peer: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let s = if peer.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if local.port() == 0 && local.is_ipv4() {
        let _ = fulcrum_sys::set_bind_address_no_port(&s);
    }
    s.bind(local)?;
    Ok(s)
}

/// Opens a connection to `addr` (from `local` when proxy_bind names one) within `timeout` (the TCP connect and, for an https
/// upstream, the TLS handshake as proxy_ssl_* say: by default unverified and without SNI,
/// as nginx's proxy module).
/// Its writes give up after `send_timeout` without progress (proxy_send_timeout, as it
/// was where the connection was opened: a kept connection keeps it).
/// Err(true) on timeout.
pub async fn connect(
    addr: &PeerAddr,
    local: Option<SocketAddr>,
    timeout: Duration,
    tls: Option<&Tls>,
    send_timeout: Duration,
) -> Result<Conn, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (stream, ip) = match addr {
        PeerAddr::Unix(path) => {
            // (proxy_bind has nothing to bind for a UNIX-domain socket.)
            let connecting = tokio::net::UnixStream::connect(path);
            match tokio::time::timeout_at(deadline, connecting).await {
                Err(_) => return Err(connect_timed_out()),
                // A UNIX-domain connect fails at once, where nginx names the peer, at
                // error for a refusal and at crit otherwise (no such socket, no
                // permission), as ngx_event_connect_peer logs it.
                Ok(Err(e)) => {
                    let why = format!(
                        "connect() to {addr} failed ({}) while connecting to upstream",
                        os_error(&e)
                    );
                    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, WouldBlock};
                    let refused =
                        matches!(e.kind(), ConnectionRefused | ConnectionReset | WouldBlock);
                    return Err(if refused {
                        ConnectError::Failed(why)
                    } else {
                        ConnectError::Crit(why)
                    });
                }
                Ok(Ok(s)) => (Transport::Unix(s), std::net::Ipv4Addr::LOCALHOST.into()),
            }
        }
        PeerAddr::Inet(addr) => {
            let s = connect_tcp(*addr, local, deadline).await?;
            let _ = s.set_nodelay(true);
            (Transport::Tcp(s), addr.ip())
        }
    };
    let io = if let Some(tls) = tls {
        let name = tls
            .name
            .clone()
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(ip.into()));
        let handshake = tokio_rustls::TlsConnector::from(tls.config.clone()).connect(name, stream);
        match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => return Err(connect_timed_out()),
            Ok(Err(e)) => {
                return Err(ConnectError::Failed(format!(
                    "SSL_do_handshake() failed ({e}) while SSL handshaking to upstream"
                )))
            }
            Ok(Ok(t)) => Io::Tls(Box::new(t)),
        }
    } else {
        Io::Plain(stream)
    };
    Ok(Conn {
        io: SendTimed::new(io, send_timeout, UPSTREAM_STALL),
        buf: BytesMut::new(),
        requests: 0,
        idle_since: Instant::now(),
    })
}

fn connect_timed_out() -> ConnectError {
    ConnectError::Timeout(
        "upstream timed out (110: Connection timed out) while connecting to upstream".to_string(),
    )
}

/// A TCP connection to `addr`, from `local` when proxy_bind names one, by `deadline`.
async fn connect_tcp(
    addr: SocketAddr,
    local: Option<SocketAddr>,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, ConnectError> {
    let socket = match local {
        None => None,
        Some(local) => Some(bound(local, addr).map_err(|e| {
            ConnectError::Local(format!(
                "bind({}) failed ({}) while connecting to upstream",
                if local.port() == 0 {
                    local.ip().to_string()
                } else {
                    local.to_string()
                },
                os_error(&e)
            ))
        })?),
    };
    let connecting = async {
        match socket {
            Some(s) => s.connect(addr).await,
            None => TcpStream::connect(addr).await,
        }
    };
    match tokio::time::timeout_at(deadline, connecting).await {
        Err(_) => Err(connect_timed_out()),
        Ok(Err(e)) => Err(ConnectError::Failed(format!(
            "connect() failed ({}) while connecting to upstream",
            os_error(&e)
        ))),
        Ok(Ok(s)) => Ok(s),
    }
}

/// An OS error as nginx writes one: `111: Connection refused`.
pub fn os_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let text = e.to_string();
            let text = text
                .strip_suffix(&format!(" (os error {n})"))
                .unwrap_or(&text);
            format!("{n}: {text}")
        }
        None => e.to_string(),
    }
}

/// An upstream body on its way to the client: proxy_read_timeout between reads, and the
/// connection returned to the idle cache once the body has been read to its end (when the
/// upstream allows it).
pub struct Relayed {
    conn: Option<Conn>,
    decoder: BodyDecoder,
    /// proxy_read_timeout between two successive reads: the same stall timer as the
    /// writes' send timeouts.
    stall: Stall,
    /// Where the connection goes back to, if it may be reused.
    back: Option<Back>,
    /// What the body has come to, for `$upstream_*`.
    meter: Arc<crate::upvars::Meter>,
}

impl std::fmt::Debug for Relayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relayed").finish_non_exhaustive()
    }
}

impl Relayed {
    pub fn new(
        conn: Conn,
        head: &ResponseHead,
        read_timeout: Duration,
        back: Option<Back>,
        meter: Arc<crate::upvars::Meter>,
    ) -> Relayed {
        let mut r = Relayed {
            conn: Some(conn),
            decoder: BodyDecoder::new(head.framing),
            stall: Stall::new(read_timeout, READ_STALL),
            back,
            meter,
        };
        if r.decoder.is_done() {
            r.give_back();
            r.meter.finish();
        }
        r
    }

    /// Bytes still to come, where Content-Length says.
    pub fn remaining(&self) -> Option<u64> {
        self.decoder.remaining()
    }

    /// The body was read to its end: the connection may serve another request.
    fn give_back(&mut self) {
        if let (Some(back), Some(c)) = (self.back.take(), self.conn.take()) {
            if c.buf.is_empty() {
                back.idle.put(back.addr, c, back.cap);
            }
        }
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                self.meter.finish();
                return Poll::Ready(None);
            };
            let before = conn.buf.len();
            let decoded = self.decoder.decode(&mut conn.buf, usize::MAX);
            let taken = before - conn.buf.len();
            self.meter
                .received
                .fetch_add(taken as u64, std::sync::atomic::Ordering::Relaxed);
            match decoded {
                Err(e) => {
                    self.back = None;
                    self.conn = None;
                    self.meter.finish();
                    return Poll::Ready(Some(Err(format!("upstream sent {e}").into())));
                }
                Ok(Some(Chunk::Data(b))) => {
                    self.meter
                        .length
                        .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if self.decoder.is_done() {
                        self.give_back();
                        self.meter.finish();
                    }
                    return Poll::Ready(Some(Ok(b)));
                }
                Ok(Some(Chunk::End)) => {
                    self.give_back();
                    self.conn = None;
                    self.meter.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            conn.buf.reserve(BODY_READ_SIZE);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf);
            match self.stall.watch(cx, read) {
                Poll::Ready(Ok(0)) => {
                    self.back = None;
                    self.meter.finish();
                    return match self.decoder.eof() {
                        Ok(_) => {
                            self.conn = None;
                            Poll::Ready(None)
                        }
                        Err(_) => {
                            self.conn = None;
                            Poll::Ready(Some(Err(
                                "upstream prematurely closed connection while reading upstream"
                                    .into(),
                            )))
                        }
                    };
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => {
                    self.back = None;
                    self.conn = None;
                    self.meter.finish();
                    let why = if e.kind() == std::io::ErrorKind::TimedOut {
                        READ_STALL.to_string()
                    } else {
                        format!("recv() failed ({}) while reading upstream", os_error(&e))
                    };
                    return Poll::Ready(Some(Err(why.into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Where a connection goes back to once its response has been read: the upstream's idle
/// cache, under its peer's address, kept within `keepalive N`.
#[derive(Debug, Clone)]
pub struct Back {
    pub idle: Arc<Idle>,
    pub addr: PeerAddr,
    pub cap: usize,
}

// === the idle cache ===

/// Idle connections by peer address.
#[derive(Debug, Default)]
pub struct Idle(Mutex<HashMap<PeerAddr, Vec<Conn>>>);

impl Idle {
    /// The most recently used live idle connection to `addr`, if any.
    pub fn take(&self, addr: &PeerAddr, timeout: Duration) -> Option<Conn> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(addr)?;
        while let Some(c) = list.pop() {
            if c.idle_since.elapsed() < timeout && c.is_alive() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps a connection for reuse; the oldest idle ones go beyond `cap` in all.
    pub fn put(&self, addr: PeerAddr, mut conn: Conn, cap: usize) {
        if cap == 0 {
            return;
        }
        conn.idle_since = Instant::now();
        // An idle connection holds no read buffer.
        conn.buf = BytesMut::new();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(addr).or_default().push(conn);
        let total: usize = map.values().map(Vec::len).sum();
        if total > cap {
            // Drop the connection idle the longest.
            let oldest = map
                .iter()
                .filter_map(|(a, l)| l.first().map(|c| (a, c.idle_since)))
                .min_by_key(|(_, t)| *t)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                if let Some(l) = map.get_mut(&a) {
                    l.remove(0);
                }
            }
        }
    }
}
