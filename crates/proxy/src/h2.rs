//! HTTP/2 clients, through hyper's h2 server (negotiated by ALPN on TLS, or by the
//! connection preface on a plain listen that says `http2`). Each stream becomes the same
//! request the HTTP/1 engine hands the handler, and the handler's response goes back as
//! HTTP/2 (names lowercase, as HTTP/2 requires; no connection headers).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use fulcrum_http1::{Headers, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::Body;
use crate::log::AccessLine;
use crate::request::{BodyError, ClientBody, ClientConn, Req};
use crate::stream::{BoxError, Source};

/// Serves an HTTP/2 connection; `early` holds what was read off it already.
pub(crate) async fn serve<S>(
    current: Arc<crate::site::Current>,
    stream: S,
    conn: ClientConn,
    early: BytesMut,
) where
    S: crate::http1::ClientStream,
{
    let tls = stream.tls();
    let streams = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let site_of = Arc::clone(&current);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let site = site_of.get();
        let n = streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Box::pin(handle(site, req, conn, tls.clone(), n))
    });
    let io = TokioIo::new(Prefixed {
        early: early.freeze(),
        inner: stream,
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(io, service);
    tokio::pin!(connection);
    // A graceful stop (QUIT, or a reload retiring this worker) sends GOAWAY, as nginx
    // does: the streams begun finish, the client opens its next ones elsewhere.
    let stopping = current.stopping();
    tokio::pin!(stopping);
    stopping.as_mut().enable();
    if current.closing() {
        connection.as_mut().graceful_shutdown();
    }
    let built = tokio::select! {
        r = connection.as_mut() => r,
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = built {
        tracing::debug!(remote = %conn.remote, "HTTP/2 connection: {e}");
    }
}

/// A stream's body.
struct H2Body(Incoming);

impl ClientBody for H2Body {
    async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            match self.0.frame().await? {
                Err(_) => return Some(Err(BodyError::Closed)),
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        return Some(Ok(d));
                    }
                }
            }
        }
    }
}

async fn handle(
    site: Arc<crate::site::Site>,
    req: hyper::Request<Incoming>,
    conn: ClientConn,
    tls: Option<crate::request::TlsInfo>,
    number: u64,
) -> Result<hyper::Response<Out>, std::io::Error> {
    let (parts, incoming) = req.into_parts();
    // A stream's head comes whole: the request is writing from the start.
    let counted = crate::stats::request_started(&site.stats, crate::stats::Gauge::Writing);
    let mut headers = Headers::with_capacity(parts.headers.len());
    for (n, v) in &parts.headers {
        headers.push(
            Bytes::copy_from_slice(n.as_str().as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        );
    }
    let target = parts.uri.path_and_query().map_or_else(
        || Bytes::from_static(b"/"),
        |p| Bytes::copy_from_slice(p.as_str().as_bytes()),
    );
    let method = Bytes::copy_from_slice(parts.method.as_str().as_bytes());
    let mut r = Req::new(method, target, Version(2000), headers, conn);
    r.host = parts
        .uri
        .authority()
        .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()));
    r.has_body = !hyper::body::Body::is_end_stream(&incoming);
    r.tls = tls;
    r.connection_requests = number;
    let mut body = H2Body(incoming);
    let Some(resp) = crate::handler::handle(site, r, &mut body).await else {
        return Err(std::io::Error::other("closed without an answer"));
    };
    let mut b = hyper::Response::builder().status(resp.status);
    let date = crate::response::http_date();
    if resp.own_server {
        b = b.header("server", &resp.server[..]);
    }
    if resp.own_date {
        b = b.header("date", &date[..]);
    }
    if let Some(t) = &resp.content_type {
        b = b.header("content-type", &t[..]);
    }
    if let Some(n) = resp.content_length {
        b = b.header("content-length", n);
    }
    if let Some(v) = &resp.location {
        b = b.header("location", &v[..]);
    }
    if resp.gzip_vary {
        b = b.header("vary", "Accept-Encoding");
    }
    for h in &resp.headers {
        b = b.header(&h.name[..], &h.value[..]);
    }
    let out = Out {
        body: resp.body,
        log: resp.log,
        sent: 0,
        _limit_conn: resp.limit_conn,
        _counted: counted,
    };
    b.body(out).map_err(std::io::Error::other)
}

/// The handler's body as hyper's, writing the access log line once it is done with.
pub(crate) struct Out {
    body: Body,
    log: Option<AccessLine>,
    sent: u64,
    /// limit_conn's places, given back when the stream is done.
    _limit_conn: Vec<crate::limit::ConnGuard>,
    /// stub_status's writing count, until the stream is done.
    _counted: crate::stats::Counted,
}

impl hyper::body::Body for Out {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.body.poll_next(cx).map(|p| {
            p.map(|r| {
                r.map(|b| {
                    this.sent += b.len() as u64;
                    Frame::data(b)
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.body, Body::Empty) || matches!(&self.body, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self.body.exact_len() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        if let Some(line) = self.log.take() {
            line.write(self.sent);
        }
    }
}

/// A stream with bytes already read off it put back in front.
struct Prefixed<S> {
    early: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            let piece = self.early.split_to(n);
            buf.put_slice(&piece);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
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
}
