//! One request, as nginx's proxy module handles it: pick the server and location, answer
//! `return`, or build the upstream request (nginx's header rules), try peers in the
//! balancer's order under proxy_next_upstream, and relay the response.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulcrum_nginx_conf::model::{HttpVersion, NextUpstream, ProxyRedirect};
use fulcrum_upstream::{Outcome, PeerId};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tracing::{error, warn};

use crate::log::{AccessLine, Level};
use crate::pool::{self, Conn};
use crate::route::{self, Matched};
use crate::site::{self, Loc, Resolved, Site, Target, UpstreamGroup, VServer};
use crate::vars::Ctx;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Monotonic whole seconds, the balancer's clock (nginx's ngx_time()).
fn now_secs() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() + 1
}

/// A cheap per-thread random source for `random` (xorshift, seeded from the clock).
fn random() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9E37_79B9_7F4A_7C15),
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 33) as u32
    })
}

/// Where a request came in.
#[derive(Debug, Clone, Copy)]
pub struct Conn4 {
    /// The connection's number, as nginx's `*N` in the error log.
    pub id: u64,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub https: bool,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

fn reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        494 => "Request Header Or Cookie Too Large",
        _ => status.canonical_reason().unwrap_or(""),
    }
}

/// nginx's built-in error page.
fn error_page(status: StatusCode) -> Response<Body> {
    let code = status.as_u16();
    let title = format!("{code} {}", reason(status));
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>fulcrum</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    if matches!(code, 400 | 408 | 413 | 414 | 494 | 500 | 501) {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// What the handler knows of a request for its variables and log line.
pub(crate) struct Req {
    pub method: Method,
    pub request_uri: String,
    pub uri: String,
    pub args: String,
    pub protocol: &'static str,
    pub headers: HeaderMap,
    pub conn: Conn4,
    pub start: Instant,
}

impl Req {
    pub fn ctx<'a>(&'a self, site: &'a Site, server: &'a str, proxy_host: &'a str) -> Ctx<'a> {
        Ctx {
            site,
            method: self.method.as_str(),
            request_uri: &self.request_uri,
            uri: &self.uri,
            args: &self.args,
            protocol: self.protocol,
            headers: &self.headers,
            remote: self.conn.remote,
            local: self.conn.local,
            https: self.conn.https,
            server_name: server,
            proxy_host,
            status: 0,
            body_bytes_sent: 0,
            time_local: "",
            request_time: 0.0,
            upstream_addr: "",
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// Handles one request. Err closes the connection without an answer (`return 444`).
pub async fn handle(
    site: Arc<Site>,
    mut req: Request<Incoming>,
    conn: Conn4,
) -> Result<Response<Body>, std::io::Error> {
    let start = Instant::now();
    let client_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let request_uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let mut r = Req {
        method: parts.method.clone(),
        request_uri,
        uri: String::new(),
        args: parts.uri.query().unwrap_or("").to_string(),
        protocol: protocol(parts.version),
        headers: parts.headers,
        conn,
        start,
    };
    // An absolute-form target names the host, as a Host header would.
    if let Some(auth) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            r.headers.insert(header::HOST, v);
        }
    }
    let host = r
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let Some(server) = route::server(
        &site,
        conn.local,
        host.as_deref().map(|h| {
            if h.starts_with('[') {
                h.split_once(']')
                    .map_or(h, |(a, _)| a.trim_start_matches('['))
            } else {
                h.rsplit_once(':').map_or(h, |(a, _)| a)
            }
        }),
    ) else {
        return Ok(error_page(StatusCode::NOT_FOUND));
    };
    let log_settings = &server.settings;
    // HTTP/1.1 without Host; both framings (if hyper let them through); nginx's limits.
    let refused = if host.is_none() && parts.version == Version::HTTP_11
        || r.headers.contains_key(header::TRANSFER_ENCODING)
            && r.headers.contains_key(header::CONTENT_LENGTH)
    {
        Some(StatusCode::BAD_REQUEST)
    } else {
        head_limits(&site, &r)
    };
    if let Some(status) = refused {
        return Ok(fail(&site, server, log_settings, &r, status));
    }
    let Some(uri) = route::normalize(parts.uri.path()) else {
        return Ok(fail(
            &site,
            server,
            log_settings,
            &r,
            StatusCode::BAD_REQUEST,
        ));
    };
    r.uri = uri;
    if let Some(ret) = &server.ret {
        return answer(&site, server, log_settings, &r, ret);
    }
    let Some((loc, matched)) = route::location(&server.locations, &r.uri) else {
        return Ok(fail(&site, server, log_settings, &r, StatusCode::NOT_FOUND));
    };
    if let Some(ret) = &loc.ret {
        return answer(&site, server, &loc.settings, &r, ret);
    }
    let Some(target) = &loc.target else {
        return Ok(fail(
            &site,
            server,
            &loc.settings,
            &r,
            StatusCode::NOT_FOUND,
        ));
    };
    let res = &loc.settings;
    // The request body, whole (nginx's proxy_request_buffering), within client_max_body_size.
    let declared = r
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if res.client_max_body_size > 0 && declared.is_some_and(|n| n > res.client_max_body_size) {
        return Ok(fail(&site, server, res, &r, StatusCode::PAYLOAD_TOO_LARGE));
    }
    let chunked = r.headers.contains_key(header::TRANSFER_ENCODING);
    let has_body = declared.is_some() || chunked;
    let body = match read_body(body, res).await {
        Ok(b) => b,
        Err(StatusCode::REQUEST_TIMEOUT) => {
            // nginx logs 408 and closes the connection without an answer.
            drop(fail(&site, server, res, &r, StatusCode::REQUEST_TIMEOUT));
            return Err(std::io::Error::other("client_body_timeout"));
        }
        Err(status) => return Ok(fail(&site, server, res, &r, status)),
    };
    let (group, proxy_host, upstream_uri, https) =
        match resolve_target(&site, target, matched, &r, server) {
            Ok(t) => t,
            Err(status) => return Ok(fail(&site, server, res, &r, status)),
        };
    let ctx = r.ctx(&site, server.name(), &proxy_host);
    let headers = upstream_headers(&ctx, res, body.len(), has_body);
    let key = group
        .hash_key
        .as_ref()
        .map(|k| ctx.eval(k))
        .unwrap_or_default();
    let upstream = UpstreamRequest {
        method: r.method.clone(),
        uri: upstream_uri,
        version: match res.http_version {
            HttpVersion::V1_0 => Version::HTTP_10,
            HttpVersion::V1_1 => Version::HTTP_11,
        },
        headers,
        body,
    };
    let elog = crate::log::ErrorContext {
        target: &res.error_log,
        r: &r,
        server: server.name(),
    };
    let (resp, peer) = match forward(
        &group,
        &upstream,
        res,
        key.as_bytes(),
        https,
        &site.stats,
        &elog,
    )
    .await
    {
        Ok(x) => x,
        Err(status) => return Ok(fail(&site, server, res, &r, status)),
    };
    let peer_text = peer.to_string();
    let mut resp = resp;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(on_client) = client_upgrade {
            let on_upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(c), Ok(u)) = (on_client.await, on_upstream.await) else {
                    return;
                };
                let mut c = hyper_util::rt::TokioIo::new(c);
                let mut u = hyper_util::rt::TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            });
            let (p, _) = resp.into_parts();
            let mut out = Response::from_parts(p, full(Bytes::new()));
            out.headers_mut().remove(header::CONTENT_LENGTH);
            return Ok(finish(&site, server, res, &r, out, &peer_text));
        }
    }
    let out = relay(&site, resp, res, &r, loc, target, &proxy_host, server);
    Ok(finish(&site, server, res, &r, out, &peer_text))
}

/// nginx's limits on the request head (large_client_header_buffers: the request line and
/// each header line within one buffer, the whole head within all of them) and on transfer
/// codings (only `chunked`).
fn head_limits(site: &Site, r: &Req) -> Option<StatusCode> {
    let line = r.method.as_str().len() + r.request_uri.len() + 10;
    if line > site.header_line {
        return Some(StatusCode::URI_TOO_LONG);
    }
    let mut total = line;
    for (n, v) in &r.headers {
        let len = n.as_str().len() + 2 + v.len();
        if len > site.header_line {
            return Some(StatusCode::BAD_REQUEST);
        }
        total += len + 2;
    }
    if total > site.header_buffer {
        return Some(StatusCode::BAD_REQUEST);
    }
    if r.headers.contains_key("x-unknown-codings") {
        return Some(StatusCode::NOT_IMPLEMENTED);
    }
    if let Some(te) = r.headers.get(header::TRANSFER_ENCODING) {
        if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Some(StatusCode::NOT_IMPLEMENTED);
        }
    }
    None
}

/// `return code [text|URL]`.
fn answer(
    site: &Site,
    server: &VServer,
    res: &Resolved,
    r: &Req,
    ret: &fulcrum_nginx_conf::model::Return,
) -> Result<Response<Body>, std::io::Error> {
    if ret.code == 444 {
        return Err(std::io::Error::other("return 444"));
    }
    let status = StatusCode::from_u16(ret.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ctx = r.ctx(site, server.name(), "");
    let text = ret.text.as_ref().map(|t| ctx.eval(t));
    let resp = match (ret.code, text) {
        (301 | 302 | 303 | 307 | 308, Some(url)) => {
            let mut resp = error_page(status);
            let absolute = if url.starts_with('/') {
                format!(
                    "{}://{}{}",
                    if r.conn.https { "https" } else { "http" },
                    ctx.host(),
                    url
                )
            } else {
                url
            };
            if let Ok(v) = HeaderValue::from_str(&absolute) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        (_, Some(text)) => {
            let mut resp = Response::new(full(text));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        (_, None) => error_page(status),
    };
    Ok(finish(site, server, res, r, resp, ""))
}

/// Reads the client's body within client_body_timeout per read and client_max_body_size.
async fn read_body(mut body: Incoming, res: &Resolved) -> Result<Bytes, StatusCode> {
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(res.client_body_timeout, body.frame()).await {
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(StatusCode::BAD_REQUEST),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if res.client_max_body_size > 0 && buf.len() as u64 > res.client_max_body_size {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
    }
    Ok(buf.freeze())
}

/// nginx's ngx_escape_uri for a URI path: what may not stand in a request line.
fn escape_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'#' | b'%' | b'?') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The upstream group, `$proxy_host`, the URI to send, and whether it is https.
fn resolve_target(
    site: &Site,
    target: &Target,
    matched: Matched,
    r: &Req,
    server: &VServer,
) -> Result<(Arc<UpstreamGroup>, String, String, bool), StatusCode> {
    match target {
        Target::Fixed {
            https,
            upstream,
            proxy_host,
            uri,
        } => {
            let path = match (uri, matched) {
                (None, _) => r.request_uri.clone(),
                (Some(u), Matched::Prefix(len)) => {
                    let rest = r.uri.get(len..).unwrap_or("");
                    let mut p = format!("{u}{}", escape_uri(rest));
                    if !r.args.is_empty() {
                        p.push('?');
                        p.push_str(&r.args);
                    }
                    p
                }
                (Some(u), _) => {
                    let mut p = u.clone();
                    if !r.args.is_empty() {
                        p.push('?');
                        p.push_str(&r.args);
                    }
                    p
                }
            };
            Ok((upstream.clone(), proxy_host.clone(), path, *https))
        }
        Target::Dynamic(t) => {
            let ctx = r.ctx(site, server.name(), "");
            let url = ctx.eval(t);
            let (https, hp, uri) =
                site::split_url(&url).ok_or(StatusCode::INTERNAL_SERVER_ERROR)?;
            let group = match site.upstreams.get(hp) {
                Some(g) => g.clone(),
                None => {
                    let (host, port, _) = site::host_port(hp, https);
                    if host.trim_matches(['[', ']']).parse::<IpAddr>().is_err() {
                        error!("no resolver defined to resolve {host}");
                        return Err(StatusCode::BAD_GATEWAY);
                    }
                    Arc::new(site::implicit(&host, port, hp).map_err(|_| StatusCode::BAD_GATEWAY)?)
                }
            };
            let path = match uri {
                Some(u) => u.to_string(),
                None => r.request_uri.clone(),
            };
            Ok((group, hp.to_string(), path, https))
        }
    }
}

/// Headers the upstream gets, in nginx's order: proxy_set_header's (defaults `Host
/// $proxy_host` and `Connection close`; TE, Keep-Alive, Expect and Upgrade dropped unless
/// set), then the client's own except those and the body framing; empty values are not
/// sent.
fn upstream_headers(
    ctx: &Ctx<'_>,
    res: &Resolved,
    body_len: usize,
    has_body: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    const DEFAULTS: [(HeaderName, &str); 6] = [
        (header::HOST, "$proxy_host"),
        (header::CONNECTION, "close"),
        (header::TE, ""),
        (HeaderName::from_static("keep-alive"), ""),
        (header::EXPECT, ""),
        (header::UPGRADE, ""),
    ];
    let mut out = Vec::new();
    let set = |n: &HeaderName| res.set_headers.iter().any(|(s, _)| s == n);
    for (name, t) in &res.set_headers {
        let v = ctx.eval(t);
        if let (false, Ok(v)) = (v.is_empty(), HeaderValue::from_str(&v)) {
            out.push((name.clone(), v));
        }
    }
    for (name, value) in &DEFAULTS {
        if set(name) {
            continue;
        }
        // `$proxy_host` is the only variable among them; empty ones are not sent.
        let v = if *value == "$proxy_host" {
            HeaderValue::from_str(ctx.proxy_host).ok()
        } else {
            (!value.is_empty()).then(|| HeaderValue::from_static(value))
        };
        if let Some(v) = v {
            out.push((name.clone(), v));
        }
    }
    for (name, value) in ctx.headers {
        if DEFAULTS.iter().any(|(d, _)| d == name)
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || set(name)
        {
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    if has_body {
        out.push((header::CONTENT_LENGTH, HeaderValue::from(body_len)));
    }
    out
}

struct UpstreamRequest {
    method: Method,
    uri: String,
    version: Version,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl UpstreamRequest {
    fn build(&self) -> Result<Request<Full<Bytes>>, StatusCode> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.as_str())
            .version(self.version);
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        b.body(Full::new(self.body.clone()))
            .map_err(|_| StatusCode::BAD_REQUEST)
    }
}

/// Why a try failed, as proxy_next_upstream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Error,
    Timeout,
    InvalidHeader,
}

impl Fail {
    fn allowed(self, n: &NextUpstream) -> bool {
        match self {
            Fail::Error => n.error,
            Fail::Timeout => n.timeout,
            Fail::InvalidHeader => n.invalid_header,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Fail::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The proxy_next_upstream flag for a response status, and whether nginx counts it as a
/// failure of the peer (403 and 404 never are).
fn status_flag(n: &NextUpstream, status: u16) -> Option<(bool, bool)> {
    let (listed, failure) = match status {
        500 => (n.http_500, true),
        502 => (n.http_502, true),
        503 => (n.http_503, true),
        504 => (n.http_504, true),
        429 => (n.http_429, true),
        403 => (n.http_403, false),
        404 => (n.http_404, false),
        _ => return None,
    };
    Some((listed, failure))
}

/// Tries peers until one answers or nginx's rules say stop; returns the response (with
/// its connection handed to the body, for reuse) and the peer's address.
async fn forward(
    group: &Arc<UpstreamGroup>,
    req: &UpstreamRequest,
    res: &Resolved,
    key: &[u8],
    https: bool,
    stats: &crate::stats::Stats,
    elog: &crate::log::ErrorContext<'_>,
) -> Result<(Response<Relayed>, SocketAddr), StatusCode> {
    let client = elog.r.conn.remote.ip();
    let scheme = if https { "https" } else { "http" };
    let url = |host: &dyn std::fmt::Display| format!("{scheme}://{host}{}", req.uri);
    let mut attempt = {
        let pool = group.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.start(client, key)
    };
    attempt.limit_tries(res.next_upstream_tries);
    let started = Instant::now();
    let non_idempotent = matches!(req.method.as_str(), "POST" | "LOCK" | "PATCH");
    let timed_out = || {
        res.next_upstream_timeout
            .is_some_and(|t| started.elapsed() >= t)
    };
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            stats.retried(&group.name);
        }
        let (id, addr) = {
            let mut pool = group.pool.lock().unwrap_or_else(|e| e.into_inner());
            let mut rng = random;
            match pool.get(&mut attempt, now_secs(), &mut rng) {
                Some(id) => (id, pool.peer(id).addr),
                None => {
                    error!(upstream = %group.name, "no live upstreams while connecting to upstream");
                    elog.write(
                        Level::Error,
                        "no live upstreams while connecting to upstream",
                        Some(&url(&group.name)),
                    );
                    return Err(StatusCode::BAD_GATEWAY);
                }
            }
        };
        let tried = Instant::now();
        match try_peer(group, addr, req, res, https).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                stats.answered(&group.name, addr, status, tried.elapsed());
                if let Some((listed, failure)) = status_flag(&res.next_upstream, status) {
                    let blocked = non_idempotent && !res.next_upstream.non_idempotent;
                    if listed && attempt.tries > 1 && !blocked && !timed_out() {
                        warn!(upstream = %group.name, peer = %addr, status, "upstream answered {status}: trying the next one");
                        let outcome = if failure {
                            Outcome::Failed
                        } else {
                            Outcome::Ok
                        };
                        if free(group, &mut attempt, id, outcome) {
                            elog.write(Level::Warn, DISABLED_READING, Some(&url(&addr)));
                        }
                        continue;
                    }
                    let outcome = if listed && failure {
                        Outcome::Failed
                    } else {
                        Outcome::Ok
                    };
                    if free(group, &mut attempt, id, outcome) {
                        elog.write(Level::Warn, DISABLED_READING, Some(&url(&addr)));
                    }
                } else {
                    free(group, &mut attempt, id, Outcome::Ok);
                }
                return Ok((resp, addr));
            }
            Err((fail, sent, why)) => {
                error!(upstream = %group.name, peer = %addr, "{why}");
                elog.write(Level::Error, &why, Some(&url(&addr)));
                stats.failed(&group.name, addr);
                if free(group, &mut attempt, id, Outcome::Failed) {
                    // With the failure's own context ("while connecting to upstream",
                    // ...), as nginx's log context adds it to every line of a phase.
                    let context = why.rfind(" while ").map_or("", |i| &why[i..]);
                    let message = format!("upstream server temporarily disabled{context}");
                    elog.write(Level::Warn, &message, Some(&url(&addr)));
                }
                let blocked = sent && non_idempotent && !res.next_upstream.non_idempotent;
                if attempt.tries == 0 || !fail.allowed(&res.next_upstream) || blocked || timed_out()
                {
                    return Err(fail.status());
                }
            }
        }
    }
}

const DISABLED_READING: &str =
    "upstream server temporarily disabled while reading response header from upstream";

/// Ends a try; true when the peer has just been marked failed (max_fails reached).
fn free(
    group: &UpstreamGroup,
    attempt: &mut fulcrum_upstream::Attempt,
    id: PeerId,
    outcome: Outcome,
) -> bool {
    let mut pool = group.pool.lock().unwrap_or_else(|e| e.into_inner());
    debug_assert_eq!(attempt.current(), Some(id));
    let disabled = pool.free(attempt, outcome, now_secs());
    if disabled {
        let peer = pool.peer(id);
        warn!(upstream = %group.name, peer = %peer.addr, "upstream server temporarily disabled");
    }
    disabled
}

/// One try against one peer: a cached connection if there is one (a stale one is
/// replaced without costing a try), else a new one.
async fn try_peer(
    group: &Arc<UpstreamGroup>,
    addr: SocketAddr,
    req: &UpstreamRequest,
    res: &Resolved,
    https: bool,
) -> Result<Response<Relayed>, (Fail, bool, String)> {
    let reuse = group.keepalive > 0 && req.version == Version::HTTP_11;
    let mut conn = if reuse {
        group.idle.take(addr, group.keepalive_timeout)
    } else {
        None
    };
    let built = req.build().map_err(|_| {
        (
            Fail::Error,
            false,
            "cannot build the upstream request".to_string(),
        )
    })?;
    let mut built = Some(built);
    let response = loop {
        let mut c = match conn.take() {
            Some(c) => c,
            None => pool::connect(addr, res.connect_timeout, https, res.send_timeout)
                .await
                .map_err(|(timeout, why)| {
                    (
                        if timeout { Fail::Timeout } else { Fail::Error },
                        false,
                        why,
                    )
                })?,
        };
        let fresh = c.requests == 0;
        let request = built.take().expect("a request per send");
        c.requests += 1;
        match tokio::time::timeout(res.read_timeout, c.sender.try_send_request(request)).await {
            Err(_) => {
                return Err((
                    Fail::Timeout,
                    true,
                    "upstream timed out (110: Connection timed out) while reading response header from upstream".into(),
                ))
            }
            Ok(Ok(resp)) => break (resp, c),
            Ok(Err(mut e)) => {
                // A cached connection the peer had closed: the request was not sent.
                if let (false, Some(r)) = (fresh, e.take_message()) {
                    built = Some(r);
                    continue;
                }
                let err = e.into_error();
                if timed_out(&err) {
                    return Err((
                        Fail::Timeout,
                        true,
                        "upstream timed out (110: Connection timed out) while sending request to upstream".into(),
                    ));
                }
                let fail = if err.is_parse() { Fail::InvalidHeader } else { Fail::Error };
                let why = if fail == Fail::InvalidHeader {
                    format!("upstream sent invalid header ({err}) while reading response header from upstream")
                } else {
                    format!("upstream prematurely closed connection ({err}) while reading response header from upstream")
                };
                return Err((fail, true, why));
            }
        }
    };
    let (resp, c) = response;
    let keep = reuse
        && c.requests < group.keepalive_requests
        && !resp
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        && resp.status() != StatusCode::SWITCHING_PROTOCOLS;
    let back = keep.then(|| (group.clone(), addr, c));
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(
        parts,
        Relayed {
            inner: body,
            read_timeout: res.read_timeout,
            sleep: Box::pin(tokio::time::sleep(res.read_timeout)),
            back,
        },
    ))
}

/// Whether an error comes from a timed-out write (proxy_send_timeout).
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(err);
    while let Some(x) = e {
        if x.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        e = x.source();
    }
    false
}

/// An upstream body on its way to the client: proxy_read_timeout between reads, and the
/// connection returned to the idle cache once the body has been read to its end.
pub struct Relayed {
    inner: Incoming,
    read_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    back: Option<(Arc<UpstreamGroup>, SocketAddr, Conn)>,
}

impl std::fmt::Debug for Relayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relayed").finish_non_exhaustive()
    }
}

impl Relayed {
    /// The body was read to its end: the connection may serve another request.
    fn give_back(&mut self) {
        if let Some((g, addr, c)) = self.back.take() {
            g.idle.put(addr, c, g.keepalive);
        }
    }
}

impl hyper::body::Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                let deadline = tokio::time::Instant::now() + this.read_timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.back = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_ready() {
                    this.back = None;
                    return Poll::Ready(Some(Err(
                        "upstream timed out while reading upstream".into()
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // An empty body may never be polled to its end.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

use std::future::Future as _;

/// See `relay`: responses up to this size are not spooled.
const SMALL_RESPONSE: u64 = 16 * 1024;

/// Headers nginx does not pass from the upstream's response.
const HIDDEN: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "date",
    "server",
    "x-pad",
    "x-accel-redirect",
    "x-accel-buffering",
];

/// The client's response from the upstream's: hop-by-hop and nginx's hidden headers
/// removed, `Location` rewritten by proxy_redirect.
#[allow(clippy::too_many_arguments)]
fn relay(
    site: &Site,
    resp: Response<Relayed>,
    res: &Resolved,
    r: &Req,
    loc: &Loc,
    target: &Target,
    proxy_host: &str,
    server: &VServer,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    // X-Accel-Buffering from the upstream overrides proxy_buffering, as in nginx.
    let buffering = match parts.headers.get("x-accel-buffering").map(|v| v.as_bytes()) {
        Some(v) if v.eq_ignore_ascii_case(b"yes") => true,
        Some(v) if v.eq_ignore_ascii_case(b"no") => false,
        _ => res.buffering,
    };
    for h in HIDDEN {
        parts.headers.remove(h);
    }
    let hidden_accel: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-accel-"))
        .cloned()
        .collect();
    for k in hidden_accel {
        parts.headers.remove(k);
    }
    if let Some(location) = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(new) = redirect(site, location, res, r, loc, target, proxy_host, server) {
            if let Ok(v) = HeaderValue::from_str(&new) {
                parts.headers.insert(header::LOCATION, v);
            }
        }
    }
    parts.version = Version::HTTP_11;
    // A response of known length that fits a socket's send buffer (16 KiB at least) is
    // taken by the kernel at once however slow the client: no spool needed for it.
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= SMALL_RESPONSE);
    if buffering && !small && !body.is_end_stream() {
        let limits = crate::spool::Limits {
            memory: res.buffers,
            file: res.max_temp_file,
            dir: res.temp_path.clone(),
        };
        return Response::from_parts(parts, crate::spool::spool(body, limits).boxed_unsync());
    }
    Response::from_parts(parts, body.boxed_unsync())
}

/// proxy_redirect: `default` is `http://$proxy_host<uri part>` → the location's prefix.
#[allow(clippy::too_many_arguments)]
fn redirect(
    site: &Site,
    location: &str,
    res: &Resolved,
    r: &Req,
    loc: &Loc,
    target: &Target,
    proxy_host: &str,
    server: &VServer,
) -> Option<String> {
    for rule in &res.redirect {
        let (from, to) = match rule {
            ProxyRedirect::Off => return None,
            ProxyRedirect::Default => {
                let Target::Fixed { uri, https, .. } = target else {
                    continue;
                };
                let prefix = match &loc.matcher {
                    fulcrum_nginx_conf::model::LocationMatch::Prefix(p)
                    | fulcrum_nginx_conf::model::LocationMatch::PrefixNoRegex(p)
                    | fulcrum_nginx_conf::model::LocationMatch::Exact(p) => p.clone(),
                    _ => continue,
                };
                let scheme = if *https { "https" } else { "http" };
                let from = format!("{scheme}://{proxy_host}{}", uri.as_deref().unwrap_or("/"));
                let to = if uri.is_some() {
                    prefix
                } else {
                    "/".to_string()
                };
                (from, to)
            }
            ProxyRedirect::Replace { from, to } => {
                let ctx = r.ctx(site, server.name(), proxy_host);
                (ctx.eval(from), ctx.eval(to))
            }
        };
        if let Some(rest) = location.strip_prefix(&from) {
            let relative = format!("{to}{rest}");
            if relative.starts_with('/') {
                let host = r
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(server.name());
                let scheme = if r.conn.https { "https" } else { "http" };
                return Some(format!("{scheme}://{host}{relative}"));
            }
            return Some(relative);
        }
    }
    None
}

/// An error page, logged.
fn fail(
    site: &Site,
    server: &VServer,
    res: &Resolved,
    r: &Req,
    status: StatusCode,
) -> Response<Body> {
    finish(site, server, res, r, error_page(status), "")
}

/// Adds the access log line (as an extension) and nginx's Server header.
fn finish(
    site: &Site,
    server: &VServer,
    res: &Resolved,
    r: &Req,
    mut resp: Response<Body>,
    upstream_addr: &str,
) -> Response<Body> {
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("fulcrum"));
    site.stats.request(server.name(), resp.status().as_u16());
    if r.protocol == "HTTP/2.0" {
        // Connection-specific headers do not exist in HTTP/2.
        resp.headers_mut().remove(header::CONNECTION);
    }
    // Written by the response's one body wrapper (log::Sent) once it has gone out.
    if let Some(line) = AccessLine::new(site, server, res, r, resp.status().as_u16(), upstream_addr)
    {
        resp.extensions_mut().insert(line);
    }
    resp
}
