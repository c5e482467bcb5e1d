//! What the handler knows of a request, whichever protocol brought it: the client
//! connection, the head (names in their case), and a way to read the body.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use fulcrum_http1::{Headers, Version};

use crate::site::Site;
use crate::vars::Ctx;

/// Where a request came in.
#[derive(Debug, Clone, Copy)]
pub struct ClientConn {
    /// The connection's number, as nginx's `*N` in the error log.
    pub id: u64,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub https: bool,
    /// What a PROXY protocol header said, on a listen that asks for one.
    pub proxy: Option<crate::proxy_protocol::Addrs>,
}

/// A request as the handler, its variables and its log lines see it.
#[derive(Debug)]
pub(crate) struct Req {
    /// The method as sent.
    pub method_name: Bytes,
    /// The request target as sent, from its path on (`$request_uri`), as bytes.
    pub target: Bytes,
    /// The same as text, for variables and logs.
    pub request_uri: String,
    /// The normalized path (`$uri`), set once the target is checked.
    pub uri: String,
    pub args: String,
    pub protocol: &'static str,
    pub headers: Headers,
    /// `host[:port]` of an absolute-form target (it wins over the Host header).
    pub host: Option<Bytes>,
    pub conn: ClientConn,
    pub start: Instant,
    /// The body is framed with chunked or Content-Length (HTTP/1), or may follow (h2).
    pub has_body: bool,
    /// The rewrite module's state and the variables it sets.
    pub script: crate::rewrite::Script,
    /// The connection's own remote address once realip has replaced `conn.remote`.
    pub realip: Option<SocketAddr>,
    /// The status error_page answers with (nginx's r->err_status): the error's, or its `=CODE`.
    pub err_status: Option<u16>,
    /// The method of the request line, when error_page has made the request a GET.
    pub line_method: Option<Bytes>,
    /// auth_basic's challenge, which stays with the request (nginx's
    /// headers_out.www_authenticate) whatever page answers it.
    pub www_authenticate: Option<String>,
    /// `$limit_req_status` and `$limit_conn_status` once the modules have run (they run
    /// once a request, internal redirects aside).
    pub limit_req_status: Option<&'static str>,
    pub limit_conn_status: Option<&'static str>,
    /// The places this request holds in limit_conn zones, handed to its response (which
    /// gives them back once it is done).
    pub limit_conn: std::sync::Mutex<Vec<crate::limit::ConnGuard>>,
    /// The peers tried, for `$upstream_*` (and the access log line, which may render
    /// some once the response is done).
    pub upstream: std::sync::Arc<std::sync::Mutex<crate::upvars::UpstreamLog>>,
    /// Headers of an X-Accel-Redirect answer that go on to the response replacing it.
    pub carried: Headers,
    /// The request's number on its connection, and whether it came pipelined.
    pub connection_requests: u64,
    pub pipelined: bool,
    /// The TLS session it came over.
    pub tls: Option<TlsInfo>,
    /// The head's bytes (the request line and headers).
    pub head_length: u64,
    /// `$request_id`, made when first asked for.
    pub request_id: std::sync::OnceLock<String>,
    /// The body as read for the upstream (`$request_body`).
    pub request_body: std::sync::OnceLock<Bytes>,
}

/// The TLS session of a connection, as nginx's `$ssl_*` name it.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub protocol: &'static str,
    pub cipher: &'static str,
    pub server_name: Option<String>,
}

impl TlsInfo {
    pub fn of(c: &rustls::ServerConnection) -> TlsInfo {
        let protocol = match c.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        // OpenSSL's names, as nginx reports them (TLS 1.3's are IANA's).
        let cipher = c.negotiated_cipher_suite().map_or("", |s| {
            use rustls::CipherSuite as C;
            match s.suite() {
                C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
                C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
                C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
                other => other.as_str().unwrap_or(""),
            }
        });
        TlsInfo {
            protocol,
            cipher,
            server_name: c.server_name().map(str::to_string),
        }
    }
}

impl Req {
    pub fn new(
        method_name: Bytes,
        target: Bytes,
        version: Version,
        headers: Headers,
        conn: ClientConn,
    ) -> Req {
        let request_uri = String::from_utf8_lossy(&target).into_owned();
        let args = request_uri
            .split_once('?')
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        Req {
            method_name,
            target,
            request_uri,
            uri: String::new(),
            args,
            protocol: protocol(version),
            headers,
            host: None,
            conn,
            start: Instant::now(),
            has_body: false,
            script: crate::rewrite::Script::default(),
            realip: None,
            www_authenticate: None,
            limit_req_status: None,
            limit_conn_status: None,
            limit_conn: std::sync::Mutex::new(Vec::new()),
            upstream: Default::default(),
            carried: Headers::new(),
            connection_requests: 1,
            pipelined: false,
            tls: None,
            head_length: 0,
            request_id: std::sync::OnceLock::new(),
            request_body: std::sync::OnceLock::new(),
            err_status: None,
            line_method: None,
        }
    }

    /// The method as text.
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.method_name).unwrap_or("-")
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.request_uri
            .split_once('?')
            .map_or(&self.request_uri, |(p, _)| p)
    }

    /// The host the request names (absolute-form target, else Host), as text.
    pub fn host_header(&self) -> Option<&str> {
        match &self.host {
            Some(h) => std::str::from_utf8(h).ok(),
            None => self.headers.get_str("host"),
        }
    }

    pub fn ctx<'a>(&'a self, site: &'a Site, server: &'a str, proxy_host: &'a str) -> Ctx<'a> {
        Ctx {
            site,
            method: self.method_str(),
            line_method: self
                .line_method
                .as_deref()
                .and_then(|m| std::str::from_utf8(m).ok())
                .unwrap_or_else(|| self.method_str()),
            request_uri: &self.request_uri,
            uri: &self.uri,
            args: &self.args,
            protocol: self.protocol,
            headers: &self.headers,
            host: self.host_header(),
            remote: self.conn.remote,
            local: self.conn.local,
            https: self.conn.https,
            server_name: server,
            proxy_host,
            status: 0,
            body_bytes_sent: 0,
            time_local: "",
            request_time: 0.0,
            upstream: &self.upstream,
            script: &self.script,
            realip_remote: self.realip,
            sent: None,
            sent_content_type: None,
            limit_req_status: self.limit_req_status,
            limit_conn_status: self.limit_conn_status,
            proxy: self.conn.proxy,
            req: Some(self),
        }
    }
}

pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version(2000) => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Bad framing: 400.
    Invalid,
    /// The client went away or the connection failed.
    Closed,
}

/// The request body, read piece by piece (HTTP/1 off the connection's buffer and socket,
/// HTTP/2 off its stream).
pub(crate) trait ClientBody: Send {
    /// The next piece, `None` at the end. The first call answers `Expect: 100-continue`
    /// where the client asked, as nginx does when it starts reading a body.
    fn next(&mut self) -> impl Future<Output = Option<Result<Bytes, BodyError>>> + Send;
}
