//! A client connection on our own HTTP/1 engine: one task drives its requests one after
//! another (pipelined ones included), reads heads with nginx's rules
//! (`fulcrum_http1::RequestParser`), hands each to the handler with a reader for its body,
//! and writes the answer as nginx's header filter would, the body as slices of what the
//! upstream sent (vectored writes, no copies). Its waits are nginx's:
//! client_header_timeout for a head (from the connection's start for the first, from
//! its first byte for later ones), keepalive_timeout between requests, send_timeout
//! between writes. A plain connection waiting for its next request holds no buffer.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use fulcrum_http1::{
    write, BodyDecoder, Chunk, Framing, Reject, RequestHead, RequestParser, Version,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::Body;
use crate::request::{BodyError, ClientBody, ClientConn, Req};
use crate::response::{self, Persist, Response};
use crate::site::Site;
use crate::stall::SendTimed;
use crate::stats::{self, Counted, Gauge};
use crate::stream::Source;

/// How much a read asks the kernel for.
const READ_SIZE: usize = 16 * 1024;

/// Vectored writes gather up to this much before they go.
const GATHER: usize = 256 * 1024;

const SEND_STALL: &str = "client timed out (send_timeout)";

/// A client's byte stream: plain TCP (whose readiness can be awaited with no buffer
/// held), or TLS.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> Option<&TcpStream>;
    /// The TLS session's protocol, cipher and SNI (`$ssl_*`).
    fn tls(&self) -> Option<crate::request::TlsInfo> {
        None
    }
}

impl ClientStream for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }

    fn tls(&self) -> Option<crate::request::TlsInfo> {
        Some(crate::request::TlsInfo::of(self.get_ref().1))
    }
}

// === buffers ===

thread_local! {
    /// Read buffers of connections that went idle, for the next request on this thread.
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer from this thread's pool.
fn take_buffer() -> BytesMut {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

/// Gives an empty read buffer back to the pool (a connection turning idle).
fn give_buffer(buf: &mut BytesMut) {
    let b = std::mem::take(buf);
    if b.is_empty() && b.capacity() >= READ_SIZE / 2 {
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < 256 {
                f.push(b);
            }
        });
    }
}

/// Reads more into `buf` (from the pool if it has no room).
async fn fill<S: ClientStream>(
    io: &mut SendTimed<S>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        *buf = take_buffer();
    }
    buf.reserve(READ_SIZE / 4);
    tokio_util::io::read_buf(io, buf).await
}

// === the request body ===

/// The body of the request being handled, off the connection's buffer and socket.
struct H1Body<'a, S: ClientStream> {
    io: &'a mut SendTimed<S>,
    buf: &'a mut BytesMut,
    decoder: BodyDecoder,
    /// `Expect: 100-continue` not answered yet.
    expect: bool,
}

impl<S: ClientStream> ClientBody for H1Body<'_, S> {
    async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        if std::mem::take(&mut self.expect) {
            let sent = self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            if sent.is_err() {
                return Some(Err(BodyError::Closed));
            }
        }
        loop {
            match self.decoder.decode(self.buf, usize::MAX) {
                Err(_) => return Some(Err(BodyError::Invalid)),
                Ok(Some(Chunk::Data(b))) => return Some(Ok(b)),
                Ok(Some(Chunk::End)) => return None,
                Ok(None) => {}
            }
            match fill(self.io, self.buf).await {
                Ok(0) | Err(_) => return Some(Err(BodyError::Closed)),
                Ok(_) => {}
            }
        }
    }
}

// === the connection ===

/// Serves the HTTP/1 requests of one client connection until it closes or times out.
///
/// `io` comes from [`client_io`]; `buf` holds what was read off it already; `hold` is
/// kept until the connection ends (its worker_connections permit). What the task holds
/// while it waits is kept small: the parameters are used in place (not moved into
/// locals, which would take their room twice), and the rest is boxed while it runs.
// An async block on purpose (see below).
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<S: ClientStream, H: Send>(
    current: Arc<crate::site::Current>,
    mut io: SendTimed<S>,
    conn: ClientConn,
    mut buf: BytesMut,
    hold: H,
) -> impl std::future::Future<Output = ()> + Send {
    // An async block, not an async fn: it keeps its captures in place, where an async
    // fn's body would copy each parameter into a local of its own.
    async move {
        let start = Instant::now();
        let mut requests: u64 = 0;
        loop {
            let first = requests == 0;
            let deadline = if first {
                start + current.get().client_header_timeout
            } else {
                Instant::now() + current.get().keepalive_timeout
            };
            // The wait for the next request holds no buffer and no parser: reading the head
            // is boxed, and starts once bytes are here. A graceful stop closes a keep-alive
            // connection that waits, as nginx closes its idle ones; a new connection gets
            // its first request answered (with `Connection: close`), as in nginx, where
            // it is not idle yet: it may have been accepted just before the stop.
            if buf.is_empty() && first {
                let _waiting = Counted::new(&current.get().stats, Gauge::Waiting);
                if !wait_for_bytes(&mut io, &mut buf, deadline).await {
                    return;
                }
            } else if buf.is_empty() {
                let closed = current.closed();
                if current.closing_idle() {
                    let _ = io.shutdown().await;
                    return;
                }
                let _waiting = Counted::new(&current.get().stats, Gauge::Waiting);
                tokio::select! {
                    got = wait_for_bytes(&mut io, &mut buf, deadline) => if !got {
                        return;
                    },
                    () = closed => {
                        let _ = io.shutdown().await;
                        return;
                    }
                }
            }
            // Bytes of the next request already here: it was pipelined.
            let pipelined = !buf.is_empty() && requests > 0;
            requests += 1;
            let cycle = Box::pin(request(
                &mut io, &mut buf, &current, conn, first, deadline, requests, pipelined,
            ));
            match cycle.await {
                After::KeepAlive => {}
                After::Close => {
                    let _ = io.shutdown().await;
                    return;
                }
                After::Gone => return,
                After::Tunnel(up) => {
                    Box::pin(tunnel(io, buf, up)).await;
                    drop(hold);
                    return;
                }
            }
            if buf.is_empty() {
                give_buffer(&mut buf);
            }
        }
    }
}

/// One request on the connection: its head read (bytes of it are here already), then
/// the handler's answer written; or a refused head answered.
#[allow(clippy::too_many_arguments)]
async fn request<S: ClientStream>(
    io: &mut SendTimed<S>,
    buf: &mut BytesMut,
    current: &crate::site::Current,
    conn: ClientConn,
    first: bool,
    deadline: Instant,
    requests: u64,
    pipelined: bool,
) -> After {
    let site = current.get();
    let mut counted = stats::request_started(&site.stats, Gauge::Reading);
    let head = match read_head(io, buf, &site, first, deadline).await {
        Ok(Some(h)) => h,
        Ok(None) => return After::Gone,
        Err(reject) => {
            counted.set(Gauge::Writing);
            refuse(io, &site, reject).await;
            return After::Gone;
        }
    };
    counted.set(Gauge::Writing);
    // The last one on this connection: keepalive_requests reached, or a graceful stop.
    let last = (site.keepalive_requests > 0 && requests >= u64::from(site.keepalive_requests))
        || current.closing();
    let info = ConnInfo {
        requests,
        pipelined,
        tls: io.get_ref().tls(),
    };
    exchange(io, buf, site, head, conn, last, info).await
}

/// What a request learns of its connection.
struct ConnInfo {
    requests: u64,
    pipelined: bool,
    tls: Option<crate::request::TlsInfo>,
}

/// A client stream with send_timeout on its writes, as [`serve`] takes it.
pub(crate) fn client_io<S: ClientStream>(stream: S, site: &Site) -> SendTimed<S> {
    SendTimed::new(stream, site.send_timeout, SEND_STALL)
}

/// How a connection goes on after a request.
enum After {
    KeepAlive,
    /// Close after the answer, as nginx does.
    Close,
    /// The client or the body failed: nothing more to say.
    Gone,
    /// A 101: the tunnel to the upstream.
    Tunnel(crate::upstream::Conn),
}

/// One request: the handler's answer, written. `last`: keepalive_requests is reached.
async fn exchange<S: ClientStream>(
    io: &mut SendTimed<S>,
    buf: &mut BytesMut,
    site: Arc<Site>,
    head: RequestHead,
    conn: ClientConn,
    last: bool,
    info: ConnInfo,
) -> After {
    let version = head.version;
    let head_request = &head.method_name[..] == b"HEAD";
    let mut keep = head.keep_alive && !site.keepalive_timeout.is_zero() && !last;
    let mut body = BodyDecoder::new(head.framing);
    let expect = head.expect_continue;
    let mut req = to_req(head, conn);
    req.connection_requests = info.requests;
    req.pipelined = info.pipelined;
    req.tls = info.tls;
    let resp = {
        let mut reader = H1Body {
            io,
            buf,
            decoder: body,
            expect,
        };
        let handled = crate::handler::handle(site.clone(), req, &mut reader).await;
        body = reader.decoder;
        handled
    };
    let Some(mut resp) = resp else {
        return After::Gone;
    };
    // What the handler did not read of the body is dropped if it is here already;
    // else the connection closes after this answer (nginx would read and drop it).
    if !body.is_done() {
        let discarded = loop {
            match body.decode(buf, usize::MAX) {
                Ok(Some(Chunk::Data(_))) => {}
                Ok(Some(Chunk::End)) => break true,
                Ok(None) | Err(_) => break false,
            }
        };
        keep &= discarded;
    }
    keep &= !resp.close;
    let has_body = resp.has_body(head_request);
    let chunked = has_body
        && resp.content_length.is_none()
        && version >= Version::HTTP_11
        && resp.upgrade.is_none();
    // An HTTP/1.0 client learns where a body of unknown length ends from the close.
    keep &= !(has_body && resp.content_length.is_none() && !chunked);
    let persist = if resp.upgrade.is_some() {
        Persist::Upgrade
    } else if keep {
        Persist::KeepAlive {
            timeout_header: site.keepalive_header.map(|d| d.as_secs()),
        }
    } else {
        Persist::Close
    };
    let sent = send(io, &mut resp, version, has_body, chunked, persist).await;
    if let Some(line) = resp.log.take() {
        line.write(*sent.as_ref().unwrap_or(&0));
    }
    if sent.is_err() {
        return After::Gone;
    }
    if let Some(up) = resp.upgrade.take() {
        return After::Tunnel(up);
    }
    if !keep || version == Version::HTTP_09 {
        return After::Close;
    }
    After::KeepAlive
}

/// The handler's view of a head.
fn to_req(head: RequestHead, conn: ClientConn) -> Req {
    let len = head.len as u64;
    let mut req = Req::new(head.method_name, head.uri, head.version, head.headers, conn);
    req.head_length = len;
    req.host = head.host;
    req.has_body = head.framing != Framing::Empty;
    req
}

/// Waits, holding no buffer, until the client sends something (a plain connection; a TLS
/// stream cannot say, and is left to [`read_head`]'s wait). False when `deadline` passes
/// or the client closes first.
// An async block, as `serve`'s, for the room an async fn's parameter copies take.
#[allow(clippy::manual_async_fn)]
fn wait_for_bytes<'a, S: ClientStream>(
    io: &'a mut SendTimed<S>,
    buf: &'a mut BytesMut,
    deadline: Instant,
) -> impl std::future::Future<Output = bool> + Send + 'a {
    async move {
        let Some(tcp) = io.get_ref().tcp() else {
            return true;
        };
        // Readiness can be stale: a buffer is taken only once a read brings bytes.
        loop {
            match tokio::time::timeout_at(deadline, tcp.readable()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
            if buf.capacity() == 0 {
                *buf = take_buffer();
            }
            match read_draining(tcp, buf) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => give_buffer(buf),
                Err(_) => return false,
            }
        }
    }
}

/// One read into `buf`'s spare room. A read that leaves room unfilled has drained the
/// socket, so its readiness is cleared as well (as tokio's own reads and nginx's
/// `rev->ready = 0` do): the wait for the next request then blocks on the next event,
/// rather than trying a read that can only fail with EAGAIN, a system call for nothing
/// after every response.
fn read_draining(tcp: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut got = None;
    let r = tcp.try_io(tokio::io::Interest::READABLE, || {
        let room = buf.capacity() - buf.len();
        let n = tcp.try_read_buf(buf)?;
        if n > 0 && n < room {
            got = Some(n);
            // Tells tokio the socket is drained; the count is kept above.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, got) {
        (_, Some(n)) => Ok(n),
        (r, None) => r,
    }
}

/// Reads the next head. `deadline`: until when its first byte may take (the connection's
/// client_header_timeout for the first request, keepalive_timeout after a response);
/// from the first byte on, client_header_timeout. `Ok(None)`: the client closed, or a
/// wait ran out (nginx closes without an answer then).
async fn read_head<S: ClientStream>(
    io: &mut SendTimed<S>,
    buf: &mut BytesMut,
    site: &Site,
    first: bool,
    mut deadline: Instant,
) -> Result<Option<RequestHead>, Reject> {
    let mut parser = RequestParser::new(site.limits);
    let header = site.client_header_timeout;
    // The first request's wait runs from the connection's start, through its first byte.
    let mut started = first;
    loop {
        if !buf.is_empty() {
            if !started {
                started = true;
                deadline = Instant::now() + header;
            }
            if let Some(h) = parser.parse(buf)? {
                return Ok(Some(h));
            }
        }
        match tokio::time::timeout_at(deadline, fill(io, buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Ok(None),
        }
    }
}

/// Answers a head nginx refuses, and closes.
async fn refuse<S: ClientStream>(io: &mut SendTimed<S>, site: &Site, reject: Reject) {
    let mut resp = Response::error(reject.status, site.server.clone());
    let version = if reject.http09 {
        Version::HTTP_09
    } else {
        Version::HTTP_11
    };
    let _ = send(io, &mut resp, version, true, false, Persist::Close).await;
    let _ = io.shutdown().await;
}

/// Writes a response; the body bytes sent, or Err when the client or the body failed
/// (the connection then closes, as nginx's does).
async fn send<S: ClientStream>(
    io: &mut SendTimed<S>,
    resp: &mut Response,
    version: Version,
    has_body: bool,
    chunked: bool,
    persist: Persist,
) -> Result<u64, ()> {
    let mut pending: Vec<Bytes> = Vec::with_capacity(4);
    let mut pending_len = 0;
    // HTTP/0.9 answers are the body alone.
    if version != Version::HTTP_09 {
        let date = response::http_date();
        let head = response::head(resp, &date, chunked, persist).freeze();
        pending_len += head.len();
        pending.push(head);
    }
    if !has_body {
        return flush(io, &mut pending).await.map(|_| 0);
    }
    let mut sent = 0u64;
    loop {
        // What the body has ready goes out with what is pending, in one write.
        let piece = match poll_ready(&mut resp.body) {
            Poll::Ready(p) => p,
            Poll::Pending => {
                flush(io, &mut pending).await?;
                pending_len = 0;
                resp.body.next().await
            }
        };
        match piece {
            Some(Ok(b)) => {
                sent += b.len() as u64;
                pending_len += b.len();
                if chunked {
                    let mut h = BytesMut::with_capacity(10);
                    write::chunk_head(&mut h, b.len());
                    pending.push(h.freeze());
                    pending.push(b);
                    pending.push(Bytes::from_static(write::CHUNK_END));
                } else {
                    pending.push(b);
                }
                if pending_len >= GATHER {
                    flush(io, &mut pending).await?;
                    pending_len = 0;
                }
            }
            Some(Err(e)) => {
                tracing::debug!("response body: {e}");
                let _ = flush(io, &mut pending).await;
                return Err(());
            }
            None => {
                if chunked {
                    pending.push(Bytes::from_static(write::LAST_CHUNK));
                }
                flush(io, &mut pending).await?;
                if resp.content_length.is_some_and(|n| n != sent) {
                    // The upstream sent less than it announced: the client must see the
                    // cut, as nginx closes then.
                    return Err(());
                }
                return Ok(sent);
            }
        }
    }
}

/// The body's next piece if it has one ready now.
fn poll_ready(body: &mut Body) -> Poll<Option<Result<Bytes, crate::stream::BoxError>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    body.poll_next(&mut cx)
}

/// Writes every pending piece, vectored.
async fn flush<W: AsyncWrite + Unpin>(w: &mut W, pending: &mut Vec<Bytes>) -> Result<(), ()> {
    const BATCH: usize = 32;
    let mut first = 0;
    while first < pending.len() {
        let mut slices = [std::io::IoSlice::new(&[]); BATCH];
        let batch = &pending[first..pending.len().min(first + BATCH)];
        for (s, b) in slices.iter_mut().zip(batch) {
            *s = std::io::IoSlice::new(b);
        }
        let mut n = w
            .write_vectored(&slices[..batch.len()])
            .await
            .map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        while n > 0 {
            let len = pending[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                pending[first] = pending[first].slice(n..);
                n = 0;
            }
        }
        while first < pending.len() && pending[first].is_empty() {
            first += 1;
        }
    }
    pending.clear();
    w.flush().await.map_err(|_| ())
}

/// After a 101: bytes both ways until either side closes; what each side sent past its
/// head goes first.
async fn tunnel<S: ClientStream>(
    mut io: SendTimed<S>,
    buf: BytesMut,
    mut up: crate::upstream::Conn,
) {
    if !buf.is_empty() && up.io.write_all(&buf).await.is_err() {
        return;
    }
    if !up.buf.is_empty() {
        let early = std::mem::take(&mut up.buf);
        if io.write_all(&early).await.is_err() {
            return;
        }
    }
    let _ = tokio::io::copy_bidirectional(&mut io, &mut up.io).await;
}

#[cfg(test)]
mod tests {
    /// What a connection holds while it waits for its next request is this future (the
    /// task keeps it inline): the request's handling is boxed apart, so that it stays
    /// small (nginx holds under 0.5 KiB per idle connection; the budget is 1 KiB
    /// in all, measured by bench/l7-proxy).
    #[test]
    fn a_waiting_connection_holds_a_small_future() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            let s = tokio::net::TcpStream::connect(a).await.unwrap();
            let text =
                "events {}\nhttp { server { listen 127.0.0.1:1; location / { return 200; } } }\n";
            let cfg = fulcrum_nginx_conf::parse_str(
                std::path::Path::new("x.conf"),
                text,
                &fulcrum_nginx_conf::LoadOptions::default(),
            )
            .config
            .unwrap();
            let site = crate::site::compile(&cfg, None).unwrap();
            let current = std::sync::Arc::new(crate::site::Current::new(site));
            let conn = crate::request::ClientConn {
                id: 1,
                remote: a,
                local: a,
                https: false,
                proxy: None,
            };
            let site = current.get();
            let io = super::client_io(s, &site);
            let f = super::serve(current, io, conn, bytes::BytesMut::new(), ());
            let size = std::mem::size_of_val(&f);
            assert!(
                size <= 1024,
                "a waiting connection's future is {size} bytes"
            );
        });
    }
}
