//! HTTP_GET, SSL_GET and genhash: one GET per url, the status checked against `status_code`
//! (default 200-299) and the MD5 of the body against `digest`.
//!
//! The request is keepalived's, byte for byte: `GET PATH HTTP/1.0` (or 1.1), `User-Agent:
//! KeepAliveClient`, `Connection: close` for 1.0C and 1.1, and `Host:` the virtualhost or
//! `IP:PORT`. The digest covers the raw bytes after the header up to the server's close,
//! as keepalived's genhash computes it (a chunked body is hashed with its framing).

use std::fmt::Write as _;
use std::io;

use fulcrum_health::Outcome;
use fulcrum_keepalived_conf::model::{HttpProtocol, StatusRange, UrlCheck};
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tcp::{connect, connect_failure, Target};

/// Bounds on what a server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The status line and headers.
    pub max_header: usize,
    /// The body, when it is read (for a digest).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header: 16 * 1024,
            max_body: 64 * 1024 * 1024,
        }
    }
}

/// One GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    /// The `Host:` value; `None` sends `IP:PORT` of the target.
    pub virtualhost: Option<String>,
    pub protocol: HttpProtocol,
    /// Read the body to its end and hash it.
    pub want_digest: bool,
    /// Read the body to its end and keep it (for a url `regex`).
    pub want_body: bool,
}

impl Request {
    /// The bytes keepalived sends for this request to `target`.
    pub fn encode(&self, target: &Target) -> Vec<u8> {
        let mut out = String::new();
        let version = match self.protocol {
            HttpProtocol::V1_1 => "1.1",
            HttpProtocol::V1_0 | HttpProtocol::V1_0C => "1.0",
        };
        let _ = write!(
            out,
            "GET {} HTTP/{version}\r\nUser-Agent: KeepAliveClient\r\n",
            self.path
        );
        if self.protocol != HttpProtocol::V1_0 {
            out.push_str("Connection: close\r\n");
        }
        match &self.virtualhost {
            Some(host) => {
                let _ = write!(out, "Host: {host}\r\n\r\n");
            }
            None => {
                let _ = write!(out, "Host: {}\r\n\r\n", target.connect);
            }
        }
        out.into_bytes()
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// MD5 of the body in lowercase hex, when it was asked for.
    pub digest: Option<String>,
    /// The body, when it was asked for (at most `Limits::max_body` bytes).
    pub body: Option<Vec<u8>>,
    pub body_len: u64,
}

/// Sends `request` on an open stream and reads the response within `limits`.
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    request: &Request,
    limits: Limits,
) -> Result<HttpResponse, String> {
    let io_err = |what: &str, e: io::Error| format!("HTTP {what} {}: {e}", target.connect);
    stream
        .write_all(&request.encode(target))
        .await
        .map_err(|e| io_err("request to", e))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 8192];
    let body_start = loop {
        if let Some(end) = find_header_end(&head) {
            break end;
        }
        if head.len() > limits.max_header {
            return Err(format!(
                "HTTP header from {} longer than {} bytes",
                target.connect, limits.max_header
            ));
        }
        let n = read_some(stream, &mut buf)
            .await
            .map_err(|e| io_err("response from", e))?;
        if n == 0 {
            return Err(format!(
                "connection to {} closed before the end of the HTTP header",
                target.connect
            ));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let status = parse_status(&head[..body_start])
        .ok_or_else(|| format!("malformed HTTP status line from {}", target.connect))?;
    let mut body_len = (head.len() - body_start) as u64;
    let mut body = request.want_body.then(|| head[body_start..].to_vec());
    let digest = if request.want_digest || request.want_body {
        let mut md5 = Md5::new();
        md5.update(&head[body_start..]);
        loop {
            if body_len > limits.max_body {
                return Err(format!(
                    "HTTP body from {} longer than {} bytes",
                    target.connect, limits.max_body
                ));
            }
            let n = read_some(stream, &mut buf)
                .await
                .map_err(|e| io_err("body from", e))?;
            if n == 0 {
                break;
            }
            body_len += n as u64;
            md5.update(&buf[..n]);
            if let Some(b) = body.as_mut() {
                b.extend_from_slice(&buf[..n]);
            }
        }
        request.want_digest.then(|| hex(&md5.finalize()))
    } else {
        None
    };
    Ok(HttpResponse {
        status,
        digest,
        body,
        body_len,
    })
}

/// A read where a TLS peer closing without close_notify is an end of stream, as it is
/// for keepalived (many servers close that way).
async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    match stream.read(buf).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// `HTTP/1.x NNN reason` -> NNN.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

const DEFAULT_STATUS: StatusRange = StatusRange {
    first: 200,
    last: 299,
};

fn ranges_text(ranges: &[StatusRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Judges one response against its url block.
pub fn judge(url: &UrlCheck, response: &HttpResponse) -> Result<(), String> {
    let ranges: &[StatusRange] = if url.status_code.is_empty() {
        std::slice::from_ref(&DEFAULT_STATUS)
    } else {
        &url.status_code
    };
    if !ranges
        .iter()
        .any(|r| (r.first..=r.last).contains(&response.status))
    {
        return Err(format!(
            "HTTP status {}, expected {} for {}",
            response.status,
            ranges_text(ranges),
            url.path
        ));
    }
    if let (Some(want), Some(got)) = (&url.digest, &response.digest) {
        if !want.eq_ignore_ascii_case(got) {
            return Err(format!(
                "digest mismatch for {}: got {got}, expected {want}",
                url.path
            ));
        }
    }
    if let Some(pattern) = &url.regex {
        let body = response.body.as_deref().unwrap_or_default();
        let matched = regex_matches(pattern, body)
            .map_err(|e| format!("url regex {pattern:?} for {}: {e}", url.path))?;
        if matched == url.regex_no_match {
            return Err(if url.regex_no_match {
                format!("body of {} matches regex {pattern:?}", url.path)
            } else {
                format!("body of {} does not match regex {pattern:?}", url.path)
            });
        }
    }
    Ok(())
}

thread_local! {
    /// Compiled url regexes: checks run every few seconds with the same patterns.
    static REGEXES: std::cell::RefCell<std::collections::HashMap<String, regex::bytes::Regex>> =
        Default::default();
}

/// Whether `pattern` (keepalived's PCRE2 syntax, as far as Rust's regex crate shares it:
/// no look-around or backreferences) matches somewhere in `body`.
fn regex_matches(pattern: &str, body: &[u8]) -> Result<bool, String> {
    REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(pattern) {
            let re = regex::bytes::Regex::new(pattern).map_err(|e| e.to_string())?;
            cache.insert(pattern.to_string(), re);
        }
        Ok(cache[pattern].is_match(body))
    })
}

/// How a check reaches the server: HTTP_GET in the clear, SSL_GET over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    /// `sni`: send the virtualhost as SNI (`enable_sni`).
    Tls {
        sni: bool,
    },
}

/// Opens the connection a request goes over, or says why it could not.
pub async fn open(
    target: &Target,
    transport: Transport,
    virtualhost: Option<&str>,
) -> Result<Box<dyn Stream>, String> {
    let tcp = connect(target)
        .await
        .map_err(|e| connect_failure(target, &e))?;
    match transport {
        Transport::Plain => Ok(Box::new(tcp)),
        Transport::Tls { sni } => {
            let name = if sni { virtualhost } else { None };
            let tls = crate::tls::handshake(tcp, target.connect, name)
                .await
                .map_err(|e| format!("TLS handshake with {} failed: {e}", target.connect))?;
            Ok(Box::new(tls))
        }
    }
}

/// A connection a request can go over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// HTTP_GET (or SSL_GET): every url in turn on its own connection; up when all pass.
/// `virtualhost` is the checker's (or the virtual server's) default for urls without
/// their own.
pub async fn check_http(
    target: &Target,
    transport: Transport,
    urls: &[UrlCheck],
    virtualhost: Option<&str>,
    protocol: HttpProtocol,
    limits: Limits,
) -> Outcome {
    for url in urls {
        let host = url.virtualhost.as_deref().or(virtualhost);
        let request = Request {
            path: url.path.clone(),
            virtualhost: host.map(str::to_string),
            protocol,
            want_digest: url.digest.is_some(),
            want_body: url.regex.is_some(),
        };
        let mut stream = match open(target, transport, host).await {
            Ok(s) => s,
            Err(reason) => return Outcome::Failure(reason),
        };
        let verdict = match fetch(&mut stream, target, &request, limits).await {
            Ok(response) => judge(url, &response),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = verdict {
            return Outcome::Failure(reason);
        }
    }
    Outcome::Success { weight_delta: 0 }
}
