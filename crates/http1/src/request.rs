//! The request head, read as nginx 1.22 reads it (`ngx_http_parse_request_line`,
//! `ngx_http_parse_header_line`, and the checks of `ngx_http_request.c`).
//!
//! The parser is a byte-at-a-time state machine that resumes where it stopped, so a head
//! that arrives a byte at a time costs no more than one that arrives whole. It never
//! copies: the finished head is split off the connection's buffer and every field is a
//! slice of it.
//!
//! nginx's buffer limits are simulated exactly: the head first fills a buffer of
//! `client_header_buffer_size`; when that is full the line in progress moves to one of
//! `large_client_header_buffers` (and the buffers that follow), and a line that does not
//! fit one of those, or a head that needs more of them, is refused: 414 for the request
//! line, 494 (sent as 400 "Request Header Or Cookie Too Large") for a header.

use bytes::{Bytes, BytesMut};

use crate::field;
use crate::head::{contains_ignore_case, parse_length, Framing, Headers, Method, Version};

/// nginx's limits on a request head, and its header-name rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `client_header_buffer_size` (1k).
    pub header_buffer: usize,
    /// `large_client_header_buffers`' number (4).
    pub large_buffers: usize,
    /// `large_client_header_buffers`' size (8k).
    pub large_buffer: usize,
    /// `underscores_in_headers` (off): a name with `_` is invalid.
    pub underscores_in_headers: bool,
    /// `ignore_invalid_headers` (on): an invalid name is dropped, not refused.
    pub ignore_invalid_headers: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_buffer: 1024,
            large_buffers: 4,
            large_buffer: 8192,
            underscores_in_headers: false,
            ignore_invalid_headers: true,
        }
    }
}

/// A request nginx would refuse: the status it answers with (494 is sent as 400) and the
/// reason its error log gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub why: &'static str,
    /// The request line said HTTP/0.9: the answer is a body with no status line.
    pub http09: bool,
}

/// A request head, every field a slice of the bytes it arrived in.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// The method as sent.
    pub method_name: Bytes,
    /// The request target as sent.
    pub target: Bytes,
    /// nginx's `$request_uri`: the target from its path on (an absolute-form target with
    /// no path gives `/`).
    pub uri: Bytes,
    /// `host[:port]` of an absolute-form target; nginx prefers it to the Host header.
    pub host: Option<Bytes>,
    pub version: Version,
    /// Every valid header line, in order, names in their case (invalid names dropped as
    /// `ignore_invalid_headers` says).
    pub headers: Headers,
    /// The body's framing (Content-Length or chunked; none otherwise).
    pub framing: Framing,
    /// Whether the connection may serve another request after this one, as nginx decides
    /// from the version and `Connection`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// Bytes the head took, leading empty lines included.
    pub len: usize,
}

impl RequestHead {
    /// The host the request names: the absolute-form target's, else the Host header's.
    pub fn host(&self) -> Option<&[u8]> {
        self.host
            .as_deref()
            .or_else(|| self.headers.get("host").map(|v| &v[..]))
    }

    /// The Upgrade header, when the request asks for one.
    pub fn upgrade(&self) -> Option<&Bytes> {
        self.headers.get("upgrade")
    }
}

/// Where the request-line machine is (nginx's states, in its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Start,
    Method,
    SpacesBeforeUri,
    Schema,
    SchemaSlash,
    SchemaSlashSlash,
    HostStart,
    Host,
    HostEnd,
    HostIpLiteral,
    Port,
    Uri,
    Http09,
    HttpH,
    HttpHT,
    HttpHTT,
    HttpHTTP,
    FirstMajorDigit,
    MajorDigit,
    FirstMinorDigit,
    MinorDigit,
    SpacesAfterDigit,
    AlmostDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Line(Line),
    Fields,
}

/// Offsets of what the request line has marked so far.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    request_start: usize,
    method_end: usize,
    target_start: usize,
    uri_start: Option<usize>,
    uri_end: usize,
    schema_end: usize,
    host_start: usize,
    host_end: Option<usize>,
    empty_path: bool,
    major: u32,
    minor: u32,
}

/// What the headers nginx treats specially have said so far.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    host: Option<usize>,
    content_length: Option<usize>,
    transfer_encoding: Option<usize>,
    expect: Option<usize>,
    close: Option<bool>,
}

/// Headers of which nginx 1.22 refuses a second line ("client sent duplicate header line").
const UNIQUE: [&str; 10] = [
    "if-modified-since",
    "if-unmodified-since",
    "if-match",
    "if-none-match",
    "content-length",
    "content-range",
    "if-range",
    "transfer-encoding",
    "expect",
    "authorization",
];

/// Reads request heads off a connection's buffer, one after another.
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    phase: Phase,
    /// How far into the buffer the machine has read.
    pos: usize,
    /// The simulated nginx buffer the head is in: where it ends, and how many large
    /// buffers have been taken.
    buf_end: usize,
    large_taken: usize,
    line: Marks,
    field: field::Machine,
    /// (name, value) offsets of every header line kept.
    fields: Vec<(usize, usize, usize, usize)>,
    seen: Seen,
    /// Which of [`UNIQUE`] have been seen, a bit each.
    unique_seen: u16,
}

fn reject(status: u16, why: &'static str) -> Reject {
    Reject {
        status,
        why,
        http09: false,
    }
}

impl RequestParser {
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser {
            limits,
            phase: Phase::Line(Line::Start),
            pos: 0,
            buf_end: limits.header_buffer.max(1),
            large_taken: 0,
            line: Marks::default(),
            field: field::Machine::default(),
            fields: Vec::new(),
            seen: Seen::default(),
            unique_seen: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether part of a head has been read (a connection closed now ends a request).
    pub fn in_progress(&self) -> bool {
        self.phase != Phase::Line(Line::Start)
    }

    /// Reads what `buf` holds of the next head. `buf` must hold, from its start, the bytes
    /// of this head seen by earlier calls, and may have more appended. On success the head
    /// is split off the front of `buf` (what follows stays: a body, or the next request),
    /// and the parser is ready for the next head. `Ok(None)`: more bytes are needed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, Reject> {
        loop {
            let limit = buf.len().min(self.buf_end);
            let done = self.scan(&buf[..limit])?;
            if done {
                let head = self.finish(buf);
                return head.map(Some);
            }
            if self.pos < self.buf_end {
                return Ok(None);
            }
            self.next_buffer()?;
        }
    }

    /// nginx's `ngx_http_alloc_large_header_buffer`: the buffer is full and the head is
    /// not done; the line in progress moves to a large buffer, if one is left and it fits.
    fn next_buffer(&mut self) -> Result<(), Reject> {
        let large = self.limits.large_buffer;
        let (old, started, too_long) = match self.phase {
            Phase::Line(Line::Start) => {
                // The client filled the buffer with empty lines: it starts over.
                self.buf_end = self.pos + self.limits.header_buffer.max(1);
                return Ok(());
            }
            Phase::Line(_) => (
                self.line.request_start,
                true,
                reject(414, "client sent too long URI"),
            ),
            // Between header lines nothing is carried over (nginx 1.22 answers a head
            // whose header line ends exactly at a buffer's end).
            Phase::Fields if self.field.state == field::State::Start => (
                self.pos,
                false,
                reject(494, "client sent too large request"),
            ),
            Phase::Fields => (
                self.field.marks.name_start.unwrap_or(self.pos),
                true,
                reject(494, "client sent too long header line"),
            ),
        };
        let partial = self.pos - old;
        if started && partial >= large {
            return Err(too_long);
        }
        if self.large_taken >= self.limits.large_buffers || partial > large {
            return Err(too_long);
        }
        self.large_taken += 1;
        self.buf_end = old + large;
        Ok(())
    }

    /// Runs the machines over `bytes[self.pos..]`; true when the head is complete.
    fn scan(&mut self, bytes: &[u8]) -> Result<bool, Reject> {
        while self.pos < bytes.len() {
            // Runs that cannot change the state (inside a name, a value or the URI) are
            // passed over whole.
            self.pos = match self.phase {
                Phase::Fields => self.field.skip(bytes, self.pos),
                Phase::Line(Line::Uri) => {
                    let rest = &bytes[self.pos..];
                    self.pos
                        + rest
                            .iter()
                            .position(|&b| b <= 0x20 || b == 0x7f)
                            .unwrap_or(rest.len())
                }
                _ => self.pos,
            };
            if self.pos >= bytes.len() {
                break;
            }
            let p = self.pos;
            let ch = bytes[p];
            self.pos += 1;
            let done = match self.phase {
                Phase::Line(s) => self.line_byte(s, ch, p, bytes)?,
                Phase::Fields => {
                    let underscores = self.limits.underscores_in_headers;
                    match self.field.step(ch, p, underscores, None) {
                        field::Step::More => false,
                        field::Step::Line => self.field_done(bytes)?,
                        field::Step::Done => self.head_done(bytes)?,
                        field::Step::Invalid => {
                            return Err(reject(400, "client sent invalid header line"))
                        }
                    }
                }
            };
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One byte of the request line. True when the head is done (HTTP/0.9 has no
    /// headers).
    fn line_byte(&mut self, state: Line, ch: u8, p: usize, bytes: &[u8]) -> Result<bool, Reject> {
        let m = &mut self.line;
        let next = match state {
            Line::Start => {
                m.request_start = p;
                if ch == b'\r' || ch == b'\n' {
                    return Ok(false);
                }
                if !is_method_char(ch) {
                    return Err(reject(400, "client sent invalid method"));
                }
                Line::Method
            }
            Line::Method => {
                if ch == b' ' {
                    m.method_end = p;
                    Line::SpacesBeforeUri
                } else if !is_method_char(ch) {
                    return Err(reject(400, "client sent invalid method"));
                } else {
                    Line::Method
                }
            }
            Line::SpacesBeforeUri => {
                m.target_start = p;
                if ch == b'/' {
                    m.uri_start = Some(p);
                    Line::Uri
                } else if (ch | 0x20).is_ascii_lowercase() {
                    Line::Schema
                } else if ch == b' ' {
                    Line::SpacesBeforeUri
                } else {
                    return Err(reject(400, "client sent invalid request"));
                }
            }
            Line::Schema => {
                if (ch | 0x20).is_ascii_lowercase()
                    || ch.is_ascii_digit()
                    || matches!(ch, b'+' | b'-' | b'.')
                {
                    Line::Schema
                } else if ch == b':' {
                    m.schema_end = p;
                    Line::SchemaSlash
                } else {
                    return Err(reject(400, "client sent invalid request"));
                }
            }
            Line::SchemaSlash | Line::SchemaSlashSlash => {
                if ch != b'/' {
                    return Err(reject(400, "client sent invalid request"));
                }
                if state == Line::SchemaSlash {
                    Line::SchemaSlashSlash
                } else {
                    Line::HostStart
                }
            }
            Line::HostStart | Line::Host | Line::HostEnd => {
                if state == Line::HostStart {
                    m.host_start = p;
                    if ch == b'[' {
                        self.phase = Phase::Line(Line::HostIpLiteral);
                        return Ok(false);
                    }
                }
                if state != Line::HostEnd
                    && ((ch | 0x20).is_ascii_lowercase()
                        || ch.is_ascii_digit()
                        || matches!(ch, b'.' | b'-'))
                {
                    Line::Host
                } else if ch == b':' {
                    Line::Port
                } else {
                    m.host_end = Some(p);
                    self.after_host(ch, p)?
                }
            }
            Line::HostIpLiteral => {
                if ch.is_ascii_alphanumeric()
                    || matches!(
                        ch,
                        b':' | b'-'
                            | b'.'
                            | b'_'
                            | b'~'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
                {
                    Line::HostIpLiteral
                } else if ch == b']' {
                    Line::HostEnd
                } else {
                    return Err(reject(400, "client sent invalid request"));
                }
            }
            Line::Port => {
                if ch.is_ascii_digit() {
                    Line::Port
                } else {
                    m.host_end = Some(p);
                    self.after_host(ch, p)?
                }
            }
            Line::Uri => {
                match ch {
                    b' ' => {
                        m.uri_end = p;
                        Line::Http09
                    }
                    b'\r' => {
                        m.uri_end = p;
                        m.minor = 9;
                        Line::AlmostDone
                    }
                    b'\n' => {
                        m.uri_end = p;
                        m.minor = 9;
                        return self.line_done(bytes);
                    }
                    _ if ch < 0x20 || ch == 0x7f => {
                        return Err(reject(400, "client sent invalid request"));
                    }
                    // nginx tells "/.", "//", "%" and "?" apart here to mark the URI as
                    // complex; the proxy normalizes every URI, so only the bytes matter.
                    _ => Line::Uri,
                }
            }
            Line::Http09 => match ch {
                b' ' => Line::Http09,
                b'\r' => {
                    m.minor = 9;
                    Line::AlmostDone
                }
                b'\n' => {
                    m.minor = 9;
                    return self.line_done(bytes);
                }
                b'H' => Line::HttpH,
                _ => return Err(reject(400, "client sent invalid request")),
            },
            Line::HttpH | Line::HttpHT | Line::HttpHTT | Line::HttpHTTP => {
                let (want, next) = match state {
                    Line::HttpH => (b'T', Line::HttpHT),
                    Line::HttpHT => (b'T', Line::HttpHTT),
                    Line::HttpHTT => (b'P', Line::HttpHTTP),
                    _ => (b'/', Line::FirstMajorDigit),
                };
                if ch != want {
                    return Err(reject(400, "client sent invalid request"));
                }
                next
            }
            Line::FirstMajorDigit => {
                if !(b'1'..=b'9').contains(&ch) {
                    return Err(reject(400, "client sent invalid request"));
                }
                m.major = u32::from(ch - b'0');
                if m.major > 1 {
                    return Err(reject(505, "client sent invalid version"));
                }
                Line::MajorDigit
            }
            Line::MajorDigit => {
                if ch == b'.' {
                    Line::FirstMinorDigit
                } else if !ch.is_ascii_digit() {
                    return Err(reject(400, "client sent invalid request"));
                } else {
                    m.major = m.major * 10 + u32::from(ch - b'0');
                    if m.major > 1 {
                        return Err(reject(505, "client sent invalid version"));
                    }
                    Line::MajorDigit
                }
            }
            Line::FirstMinorDigit => {
                if !ch.is_ascii_digit() {
                    return Err(reject(400, "client sent invalid request"));
                }
                m.minor = u32::from(ch - b'0');
                Line::MinorDigit
            }
            Line::MinorDigit => match ch {
                b'\r' => Line::AlmostDone,
                b'\n' => return self.line_done(bytes),
                b' ' => Line::SpacesAfterDigit,
                _ if !ch.is_ascii_digit() || m.minor > 99 => {
                    return Err(reject(400, "client sent invalid request"))
                }
                _ => {
                    m.minor = m.minor * 10 + u32::from(ch - b'0');
                    Line::MinorDigit
                }
            },
            Line::SpacesAfterDigit => match ch {
                b' ' => Line::SpacesAfterDigit,
                b'\r' => Line::AlmostDone,
                b'\n' => return self.line_done(bytes),
                _ => return Err(reject(400, "client sent invalid request")),
            },
            Line::AlmostDone => {
                if ch != b'\n' {
                    return Err(reject(400, "client sent invalid request"));
                }
                return self.line_done(bytes);
            }
        };
        self.phase = Phase::Line(next);
        Ok(false)
    }

    /// The byte that ends an absolute-form target's host (or port).
    fn after_host(&mut self, ch: u8, p: usize) -> Result<Line, Reject> {
        let m = &mut self.line;
        Ok(match ch {
            b'/' => {
                m.uri_start = Some(p);
                Line::Uri
            }
            b'?' => {
                m.uri_start = Some(p);
                m.empty_path = true;
                Line::Uri
            }
            b' ' => {
                // No path: nginx's URI is the "/" of "://".
                m.uri_start = None;
                m.uri_end = p;
                Line::Http09
            }
            _ => return Err(reject(400, "client sent invalid request")),
        })
    }

    /// The request line is complete.
    fn line_done(&mut self, bytes: &[u8]) -> Result<bool, Reject> {
        let version = self.line.major * 1000 + self.line.minor;
        if let Some(end) = self.line.host_end {
            if !valid_host(&bytes[self.line.host_start..end]) {
                return Err(Reject {
                    status: 400,
                    why: "client sent invalid host in request line",
                    http09: version == 9,
                });
            }
        }
        if version == 9 {
            if &bytes[self.line.request_start..self.line.method_end] != b"GET" {
                return Err(Reject {
                    status: 400,
                    why: "client sent invalid method in HTTP/0.9 request",
                    http09: true,
                });
            }
            return Ok(true);
        }
        self.phase = Phase::Fields;
        self.field = field::Machine::default();
        Ok(false)
    }

    /// A header line is complete: kept (or dropped as invalid), and checked as nginx's
    /// header handlers check it.
    fn field_done(&mut self, bytes: &[u8]) -> Result<bool, Reject> {
        let f = self.field.marks;
        if f.invalid && self.limits.ignore_invalid_headers {
            return Ok(false);
        }
        let start = f.name_start.unwrap_or(f.name_end);
        let name = &bytes[start..f.name_end];
        let value = &bytes[f.value_start..f.value_end];
        let index = self.fields.len();
        self.fields
            .push((start, f.name_end, f.value_start, f.value_end));
        if name.eq_ignore_ascii_case(b"host") {
            if self.seen.host.is_some() {
                return Err(reject(400, "client sent duplicate host header"));
            }
            if !valid_host(value) {
                return Err(reject(400, "client sent invalid host header"));
            }
            self.seen.host = Some(index);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if contains_ignore_case(value, b"close") {
                self.seen.close = Some(true);
            } else if contains_ignore_case(value, b"keep-alive") {
                self.seen.close = Some(false);
            }
        } else if let Some(u) = UNIQUE
            .iter()
            .position(|u| name.eq_ignore_ascii_case(u.as_bytes()))
        {
            let bit = 1u16 << u;
            if self.unique_seen & bit != 0 {
                return Err(reject(400, "client sent duplicate header line"));
            }
            self.unique_seen |= bit;
            match UNIQUE[u] {
                "content-length" => self.seen.content_length = Some(index),
                "transfer-encoding" => self.seen.transfer_encoding = Some(index),
                "expect" => self.seen.expect = Some(index),
                _ => {}
            }
        }
        Ok(false)
    }

    /// The empty line: nginx's `ngx_http_process_request_header` checks.
    fn head_done(&mut self, bytes: &[u8]) -> Result<bool, Reject> {
        let version = self.line.major * 1000 + self.line.minor;
        let value = |i: usize| {
            let (_, _, s, e) = self.fields[i];
            &bytes[s..e]
        };
        if self.seen.host.is_none() && version > 1000 {
            return Err(reject(
                400,
                "client sent HTTP/1.1 request without \"Host\" header",
            ));
        }
        if let Some(i) = self.seen.content_length {
            if parse_length(value(i)).is_none() {
                return Err(reject(400, "client sent invalid \"Content-Length\" header"));
            }
        }
        if let Some(i) = self.seen.transfer_encoding {
            if version < 1001 {
                return Err(reject(
                    400,
                    "client sent HTTP/1.0 request with \"Transfer-Encoding\" header",
                ));
            }
            if !value(i).eq_ignore_ascii_case(b"chunked") {
                return Err(reject(501, "client sent unknown \"Transfer-Encoding\""));
            }
            if self.seen.content_length.is_some() {
                return Err(reject(
                    400,
                    "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time",
                ));
            }
        }
        match &bytes[self.line.request_start..self.line.method_end] {
            b"CONNECT" => return Err(reject(405, "client sent CONNECT method")),
            b"TRACE" => return Err(reject(405, "client sent TRACE method")),
            _ => {}
        }
        Ok(true)
    }

    /// Splits the finished head off `buf` and readies the parser for the next one.
    fn finish(&mut self, buf: &mut BytesMut) -> Result<RequestHead, Reject> {
        let len = self.pos;
        let bytes = buf.split_to(len).freeze();
        let m = self.line;
        let version = Version(m.major * 1000 + m.minor);
        let uri = match m.uri_start {
            Some(s) if m.empty_path => {
                let mut u = Vec::with_capacity(m.uri_end - s + 1);
                u.push(b'/');
                u.extend_from_slice(&bytes[s..m.uri_end]);
                Bytes::from(u)
            }
            Some(s) => bytes.slice(s..m.uri_end),
            None => Bytes::from_static(b"/"),
        };
        let mut headers = Headers::with_capacity(self.fields.len());
        for &(ns, ne, vs, ve) in &self.fields {
            headers.push(bytes.slice(ns..ne), bytes.slice(vs..ve));
        }
        let framing = if self.seen.transfer_encoding.is_some() {
            Framing::Chunked
        } else if let Some(i) = self.seen.content_length {
            let (_, _, s, e) = self.fields[i];
            match parse_length(&bytes[s..e]) {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        } else {
            Framing::Empty
        };
        let expect_continue = version >= Version::HTTP_11
            && self.seen.expect.is_some_and(|i| {
                let (_, _, s, e) = self.fields[i];
                bytes[s..e].eq_ignore_ascii_case(b"100-continue")
            });
        let keep_alive = match self.seen.close {
            Some(close) => !close && version >= Version::HTTP_10,
            None => version > Version::HTTP_10,
        };
        let method_name = bytes.slice(m.request_start..m.method_end);
        let head = RequestHead {
            method: Method::from_bytes(&method_name),
            method_name,
            target: bytes.slice(m.target_start..m.uri_end),
            uri,
            host: m.host_end.map(|e| bytes.slice(m.host_start..e)),
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
            len,
        };
        self.reset();
        Ok(head)
    }

    /// Ready for the next head on the connection.
    pub fn reset(&mut self) {
        self.phase = Phase::Line(Line::Start);
        self.pos = 0;
        self.buf_end = self.limits.header_buffer.max(1);
        self.large_taken = 0;
        self.line = Marks::default();
        self.field = field::Machine::default();
        self.fields.clear();
        self.seen = Seen::default();
        self.unique_seen = 0;
    }
}

/// `A`-`Z`, `_` and `-`: what nginx allows in a method.
fn is_method_char(ch: u8) -> bool {
    ch.is_ascii_uppercase() || ch == b'_' || ch == b'-'
}

/// nginx's `ngx_http_validate_host`: no empty host, no `..`, no `/` or `\`, no control
/// bytes or spaces; a trailing dot and a port are allowed.
pub fn valid_host(host: &[u8]) -> bool {
    #[derive(PartialEq)]
    enum S {
        Usual,
        Literal,
        Rest,
    }
    let mut state = S::Usual;
    let mut dot_pos: Option<usize> = None;
    let mut host_len = host.len();
    for (i, &ch) in host.iter().enumerate() {
        match ch {
            b'.' => {
                if i > 0 && dot_pos == Some(i - 1) {
                    return false;
                }
                dot_pos = Some(i);
            }
            b':' if state == S::Usual => {
                host_len = i;
                state = S::Rest;
            }
            b'[' if i == 0 => state = S::Literal,
            b']' if state == S::Literal => {
                host_len = i + 1;
                state = S::Rest;
            }
            b':' | b'[' | b']' => {}
            b'/' => return false,
            _ if ch <= 0x20 || ch == 0x7f => return false,
            _ => {}
        }
    }
    if host_len > 0 && dot_pos == Some(host_len - 1) {
        host_len -= 1;
    }
    host_len > 0
}
