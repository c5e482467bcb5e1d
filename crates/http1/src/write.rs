//! Heads and chunk framing as bytes: header names as given, in the order given. The
//! proxy decides the order (nginx's header filter order toward the client, nginx's
//! request order toward the upstream); this only writes.

use bytes::{BufMut, BytesMut};

use crate::head::{Headers, Version};

/// `METHOD URI VERSION`, the header lines, the empty line.
pub fn request_head(
    out: &mut BytesMut,
    method: &[u8],
    uri: &[u8],
    version: Version,
    headers: &Headers,
) {
    out.reserve(method.len() + uri.len() + 12 + fields_len(headers) + 2);
    out.put_slice(method);
    out.put_u8(b' ');
    out.put_slice(uri);
    out.put_u8(b' ');
    out.put_slice(version.as_str().as_bytes());
    out.put_slice(b"\r\n");
    fields(out, headers);
    out.put_slice(b"\r\n");
}

/// `HTTP/1.1 <status line>`, the header lines, the empty line. nginx answers every
/// request with HTTP/1.1.
pub fn response_head(out: &mut BytesMut, status_line: &[u8], headers: &Headers) {
    out.reserve(11 + status_line.len() + fields_len(headers) + 2);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status_line);
    out.put_slice(b"\r\n");
    fields(out, headers);
    out.put_slice(b"\r\n");
}

fn fields_len(headers: &Headers) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum()
}

fn fields(out: &mut BytesMut, headers: &Headers) {
    for h in headers {
        out.put_slice(&h.name);
        out.put_slice(b": ");
        out.put_slice(&h.value);
        out.put_slice(b"\r\n");
    }
}

/// The size line before `len` bytes of chunk data (lower-case hex, as nginx writes it).
pub fn chunk_head(out: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

/// What follows a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// nginx's status line for `status` (`ngx_http_status_lines`): its own wording where it
/// has one (`302 Moved Temporarily`, `503 Service Temporarily Unavailable`), else the
/// code and a space, as nginx writes a code it has no text for.
pub fn status_line(status: u16) -> std::borrow::Cow<'static, str> {
    let text = match status {
        200 => "200 OK",
        201 => "201 Created",
        202 => "202 Accepted",
        204 => "204 No Content",
        206 => "206 Partial Content",
        301 => "301 Moved Permanently",
        302 => "302 Moved Temporarily",
        303 => "303 See Other",
        304 => "304 Not Modified",
        307 => "307 Temporary Redirect",
        308 => "308 Permanent Redirect",
        400 => "400 Bad Request",
        401 => "401 Unauthorized",
        402 => "402 Payment Required",
        403 => "403 Forbidden",
        404 => "404 Not Found",
        405 => "405 Not Allowed",
        406 => "406 Not Acceptable",
        408 => "408 Request Time-out",
        409 => "409 Conflict",
        410 => "410 Gone",
        411 => "411 Length Required",
        412 => "412 Precondition Failed",
        413 => "413 Request Entity Too Large",
        414 => "414 Request-URI Too Large",
        415 => "415 Unsupported Media Type",
        416 => "416 Requested Range Not Satisfiable",
        421 => "421 Misdirected Request",
        429 => "429 Too Many Requests",
        500 => "500 Internal Server Error",
        501 => "501 Not Implemented",
        502 => "502 Bad Gateway",
        503 => "503 Service Temporarily Unavailable",
        504 => "504 Gateway Time-out",
        505 => "505 HTTP Version Not Supported",
        507 => "507 Insufficient Storage",
        _ => return format!("{status:03} ").into(),
    };
    text.into()
}
