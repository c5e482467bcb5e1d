//! An upstream's response head, as nginx 1.22's proxy module reads it
//! (`ngx_http_parse_status_line`, `ngx_http_parse_header_line` with underscores allowed,
//! and `ngx_http_proxy_process_header`): a response that does not start with a status
//! line is relayed as HTTP/0.9 (the bytes as they come, until the upstream closes); the
//! status line's text is kept, since nginx passes it on; `Transfer-Encoding` naming
//! `chunked` wins over `Content-Length`.

use bytes::{Bytes, BytesMut};

use crate::field;
use crate::head::{contains_ignore_case, parse_length, Framing, Headers, Version};

/// An upstream response nginx would not relay (both are answered with 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// "upstream sent invalid header"
    Invalid,
    /// "upstream sent too big header": the head does not fit `proxy_buffer_size`.
    TooBig,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResponseError::Invalid => "upstream sent invalid header",
            ResponseError::TooBig => "upstream sent too big header",
        })
    }
}

impl std::error::Error for ResponseError {}

/// A response head, every field a slice of the bytes it came in.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    /// The status line from the code on (`200 OK`), as nginx passes it to the client.
    pub status_line: Bytes,
    pub headers: Headers,
    /// The body's framing, given the request's method and the status.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read
    /// (HTTP/1.1 and no `Connection: close`).
    pub keep_alive: bool,
    /// No status line came: the whole stream is the body (nginx's HTTP/0.9 response).
    pub http09: bool,
    /// Bytes the head took.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Start,
    H,
    Ht,
    Htt,
    Http,
    FirstMajorDigit,
    MajorDigit,
    FirstMinorDigit,
    MinorDigit,
    Status,
    SpaceAfterStatus,
    StatusText,
    AlmostDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Line(Line),
    Fields,
}

/// Reads one response head off an upstream connection's buffer.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    /// `proxy_buffer_size`: the head must fit.
    max: usize,
    /// The request was HEAD: no body follows, whatever the head says.
    head_request: bool,
    phase: Phase,
    pos: usize,
    major: u32,
    minor: u32,
    code: u16,
    digits: u8,
    status_start: usize,
    status_end: usize,
    field: field::Machine,
    fields: Vec<(usize, usize, usize, usize)>,
}

impl ResponseParser {
    pub fn new(max: usize, head_request: bool) -> ResponseParser {
        ResponseParser {
            max: max.max(1),
            head_request,
            phase: Phase::Line(Line::Start),
            pos: 0,
            major: 0,
            minor: 0,
            code: 0,
            digits: 0,
            status_start: 0,
            status_end: 0,
            field: field::Machine::default(),
            fields: Vec::new(),
        }
    }

    /// Reads what `buf` holds of the head (see `RequestParser::parse` for how `buf` is
    /// kept); on success the head is split off `buf`.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseHead>, ResponseError> {
        let limit = buf.len().min(self.max);
        while self.pos < limit {
            if self.phase == Phase::Fields {
                self.pos = self.field.skip(&buf[..limit], self.pos);
                if self.pos >= limit {
                    break;
                }
            }
            let p = self.pos;
            let ch = buf[p];
            self.pos += 1;
            match self.phase {
                Phase::Line(s) => match self.line_byte(s, ch, p) {
                    Some(true) => self.phase = Phase::Fields,
                    Some(false) => {}
                    None => return Ok(Some(self.http09())),
                },
                Phase::Fields => match self.field.step(ch, p, true, Some(&buf[..limit])) {
                    field::Step::More => {}
                    field::Step::Line => {
                        let m = self.field.marks;
                        let start = m.name_start.unwrap_or(m.name_end);
                        self.fields
                            .push((start, m.name_end, m.value_start, m.value_end));
                    }
                    field::Step::Done => return Ok(Some(self.finish(buf))),
                    field::Step::Invalid => return Err(ResponseError::Invalid),
                },
            }
        }
        if self.pos >= self.max {
            return Err(ResponseError::TooBig);
        }
        Ok(None)
    }

    /// One byte of the status line: `Some(true)` when it is complete, `None` when it is
    /// not a status line at all.
    fn line_byte(&mut self, state: Line, ch: u8, p: usize) -> Option<bool> {
        let next = match state {
            Line::Start => (ch == b'H').then_some(Line::H)?,
            Line::H => (ch == b'T').then_some(Line::Ht)?,
            Line::Ht => (ch == b'T').then_some(Line::Htt)?,
            Line::Htt => (ch == b'P').then_some(Line::Http)?,
            Line::Http => (ch == b'/').then_some(Line::FirstMajorDigit)?,
            Line::FirstMajorDigit => {
                if !(b'1'..=b'9').contains(&ch) {
                    return None;
                }
                self.major = u32::from(ch - b'0');
                Line::MajorDigit
            }
            Line::MajorDigit => {
                if ch == b'.' {
                    Line::FirstMinorDigit
                } else if ch.is_ascii_digit() && self.major <= 99 {
                    self.major = self.major * 10 + u32::from(ch - b'0');
                    Line::MajorDigit
                } else {
                    return None;
                }
            }
            Line::FirstMinorDigit => {
                if !ch.is_ascii_digit() {
                    return None;
                }
                self.minor = u32::from(ch - b'0');
                Line::MinorDigit
            }
            Line::MinorDigit => {
                if ch == b' ' {
                    Line::Status
                } else if ch.is_ascii_digit() && self.minor <= 99 {
                    self.minor = self.minor * 10 + u32::from(ch - b'0');
                    Line::MinorDigit
                } else {
                    return None;
                }
            }
            Line::Status => {
                if ch == b' ' {
                    Line::Status
                } else if ch.is_ascii_digit() {
                    if self.digits == 0 {
                        self.status_start = p;
                    }
                    self.code = self.code * 10 + u16::from(ch - b'0');
                    self.digits += 1;
                    if self.digits == 3 {
                        Line::SpaceAfterStatus
                    } else {
                        Line::Status
                    }
                } else {
                    return None;
                }
            }
            Line::SpaceAfterStatus => match ch {
                // IIS may send 403.1.
                b' ' | b'.' => Line::StatusText,
                b'\r' => {
                    self.status_end = p;
                    Line::AlmostDone
                }
                b'\n' => {
                    self.status_end = p;
                    return Some(true);
                }
                _ => return None,
            },
            Line::StatusText => match ch {
                b'\r' => {
                    self.status_end = p;
                    Line::AlmostDone
                }
                b'\n' => {
                    self.status_end = p;
                    return Some(true);
                }
                _ => Line::StatusText,
            },
            Line::AlmostDone => {
                if ch != b'\n' {
                    return None;
                }
                return Some(true);
            }
        };
        self.phase = Phase::Line(next);
        Some(false)
    }

    /// No status line: nginx relays the bytes as they come ("upstream sent no valid
    /// HTTP/1.0 header"), until the upstream closes.
    fn http09(&mut self) -> ResponseHead {
        ResponseHead {
            version: Version::HTTP_09,
            status: 200,
            status_line: Bytes::from_static(b"200 OK"),
            headers: Headers::new(),
            framing: Framing::Close,
            keep_alive: false,
            http09: true,
            len: 0,
        }
    }

    fn finish(&mut self, buf: &mut BytesMut) -> ResponseHead {
        let len = self.pos;
        let bytes = buf.split_to(len).freeze();
        let mut headers = Headers::with_capacity(self.fields.len());
        for &(ns, ne, vs, ve) in &self.fields {
            headers.push(bytes.slice(ns..ne), bytes.slice(vs..ve));
        }
        let version = Version(self.major * 1000 + self.minor);
        let status = self.code;
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| contains_ignore_case(v, b"chunked"));
        let length = headers.get("content-length").map(|v| parse_length(v));
        let close = version < Version::HTTP_11
            || headers
                .get_all("connection")
                .any(|v| contains_ignore_case(v, b"close"));
        let framing = if self.head_request
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            Framing::Empty
        } else if chunked {
            Framing::Chunked
        } else {
            match length {
                Some(Some(0)) => Framing::Empty,
                Some(Some(n)) => Framing::Length(n),
                _ => Framing::Close,
            }
        };
        let keep_alive = !close && framing != Framing::Close && status != 101;
        ResponseHead {
            version,
            status,
            status_line: bytes.slice(self.status_start..self.status_end),
            headers,
            framing,
            keep_alive,
            http09: false,
            len,
        }
    }
}
