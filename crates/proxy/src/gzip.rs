//! nginx's gzip filter: which responses are compressed (status, Content-Encoding,
//! gzip_min_length, gzip_types, and the client's Accept-Encoding, HTTP version, Via and
//! User-Agent under gzip_http_version, gzip_proxied and gzip_disable), what it does to
//! the head (Content-Encoding: gzip, no Content-Length or Accept-Ranges, a weak ETag,
//! Vary with gzip_vary), and the body, compressed as it streams: the system's zlib with
//! nginx's window and memory level (sized to a known length as nginx sizes them) and
//! zlib's gzip header, so the bytes are nginx's.

use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::Crc;
use fulcrum_nginx_conf::model::{GzipProxied, HttpVersion, Settings};
use fulcrum_sys::Flush;

use crate::body::Body;
use crate::request::Req;
use crate::response::Response;
use crate::stream::{BoxError, Source};

/// The gzip module's settings for a location, when `gzip on`.
#[derive(Debug)]
pub struct Gzip {
    /// gzip_types, lowercase, text/html among them; None for `*`.
    types: Option<Vec<Vec<u8>>>,
    level: u32,
    min_length: u64,
    proxied: GzipProxied,
    pub vary: bool,
    http_version: HttpVersion,
    disable_msie6: bool,
    disable: Vec<regex::bytes::Regex>,
}

impl Gzip {
    /// The location's gzip, or None when it is off (nginx's default).
    pub fn of(s: &Settings) -> Option<Gzip> {
        if s.gzip != Some(true) {
            return None;
        }
        let types = match &s.gzip_types {
            Some(list) if list.iter().any(|t| t == "*") => None,
            list => {
                let mut v: Vec<Vec<u8>> = vec![b"text/html".to_vec()];
                v.extend(list.iter().flatten().map(|t| t.as_bytes().to_vec()));
                Some(v)
            }
        };
        let disable = s.gzip_disable.clone().unwrap_or_default();
        Some(Gzip {
            types,
            level: s.gzip_comp_level.unwrap_or(1),
            min_length: s.gzip_min_length.unwrap_or(20),
            proxied: s.gzip_proxied.unwrap_or(GzipProxied(GzipProxied::OFF)),
            vary: s.gzip_vary.unwrap_or(false),
            http_version: s.gzip_http_version.unwrap_or(HttpVersion::V1_1),
            disable_msie6: disable.msie6,
            // Checked when the configuration was read.
            disable: disable
                .regexes
                .iter()
                .filter_map(|r| {
                    regex::bytes::RegexBuilder::new(r)
                        .case_insensitive(true)
                        .build()
                        .ok()
                })
                .collect(),
        })
    }

    /// ngx_http_test_content_type against gzip_types.
    fn type_ok(&self, content_type: Option<&Bytes>) -> bool {
        let Some(types) = &self.types else {
            return true;
        };
        let Some(ct) = content_type.filter(|t| !t.is_empty()) else {
            return false;
        };
        let key = type_key(ct);
        types.iter().any(|t| t.eq_ignore_ascii_case(key))
    }

    /// ngx_http_gzip_ok: whether this client gets a compressed answer.
    fn client_ok(&self, r: &Req, resp: &Response) -> bool {
        let Some(ae) = r.headers.get("accept-encoding") else {
            return false;
        };
        if ae.len() < 4 || !(ae.starts_with(b"gzip,") || accepts_gzip(ae)) {
            return false;
        }
        let ua = r.headers.get("user-agent");
        if self.disable_msie6 && ua.is_some_and(|u| msie6(u)) {
            return false;
        }
        let version = match r.protocol {
            "HTTP/1.1" | "HTTP/2.0" => HttpVersion::V1_1,
            "HTTP/1.0" => HttpVersion::V1_0,
            _ => return false,
        };
        if self.http_version == HttpVersion::V1_1 && version == HttpVersion::V1_0 {
            return false;
        }
        if r.headers.contains("via") && !self.proxied_ok(r, resp) {
            return false;
        }
        !ua.is_some_and(|u| self.disable.iter().any(|re| re.is_match(u)))
    }

    /// gzip_proxied, for a request that came through a proxy.
    fn proxied_ok(&self, r: &Req, resp: &Response) -> bool {
        let p = self.proxied;
        if p.has(GzipProxied::OFF) {
            return false;
        }
        if p.has(GzipProxied::ANY)
            || (p.has(GzipProxied::AUTH) && r.headers.contains("authorization"))
        {
            return true;
        }
        if let Some(e) = resp.headers.get_str("expires") {
            if !p.has(GzipProxied::EXPIRED) {
                return false;
            }
            let Some(expires) = crate::files::parse_http_date(e) else {
                return false;
            };
            let date = match resp.headers.get_str("date") {
                Some(d) => match crate::files::parse_http_date(d) {
                    Some(d) => d,
                    None => return false,
                },
                None => now(),
            };
            return expires < date;
        }
        let cc: Vec<&Bytes> = resp.headers.get_all("cache-control").collect();
        if !cc.is_empty() {
            let has = |word: &[u8]| cc.iter().any(|v| has_token(v, word));
            return (p.has(GzipProxied::NO_CACHE) && has(b"no-cache"))
                || (p.has(GzipProxied::NO_STORE) && has(b"no-store"))
                || (p.has(GzipProxied::PRIVATE) && has(b"private"));
        }
        let last_modified = resp.last_modified.is_some() || resp.headers.contains("last-modified");
        if p.has(GzipProxied::NO_LAST_MODIFIED) && last_modified {
            return false;
        }
        !(p.has(GzipProxied::NO_ETAG) && resp.headers.contains("etag"))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The part of a Content-Type nginx looks up: all of it, or what comes before the `;`
/// that introduces a charset parameter (ngx_http_upstream_process_content_type).
fn type_key(ct: &[u8]) -> &[u8] {
    let mut key = ct;
    for (i, _) in ct.iter().enumerate().filter(|(_, c)| **c == b';') {
        let rest = &ct[i + 1..];
        let rest = &rest[rest.iter().take_while(|c| **c == b' ').count()..];
        if rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"charset=") {
            key = &ct[..i];
        }
    }
    key
}

/// ngx_http_parse_multi_header_lines: `word` as one of a comma-separated list.
fn has_token(v: &[u8], word: &[u8]) -> bool {
    v.split(|c| *c == b',').any(|t| {
        t.trim_ascii().len() >= word.len()
            && t.trim_ascii()[..word.len()].eq_ignore_ascii_case(word)
    })
}

/// ngx_http_gzip_accept_encoding: a `gzip` token (not `x-gzip`) with no `q=0`.
fn accepts_gzip(ae: &[u8]) -> bool {
    let lower = ae.to_ascii_lowercase();
    let mut from = 0;
    let at = loop {
        let Some(i) = find(&lower[from..], b"gzip") else {
            return false;
        };
        let at = from + i;
        if at == 0 || matches!(ae[at - 1], b',' | b' ') {
            break at;
        }
        from = at + 4;
    };
    let mut p = at + 4;
    // After the token: `,`, the end, or `;` and a quantity.
    loop {
        match ae.get(p) {
            None | Some(b',') => return true,
            Some(b' ') => p += 1,
            Some(b';') => {
                p += 1;
                break;
            }
            Some(_) => return false,
        }
    }
    loop {
        match ae.get(p) {
            None => return true,
            Some(b'q' | b'Q') => {
                p += 1;
                break;
            }
            Some(b' ') => p += 1,
            Some(_) => return false,
        }
    }
    if p + 2 > ae.len() || ae[p] != b'=' {
        return false;
    }
    quantity(&ae[p + 1..]) > 0
}

/// ngx_http_gzip_quantity: `0`, `1`, `0.5`, `1.000` as thousandths-ish (0 when invalid).
fn quantity(v: &[u8]) -> u32 {
    let mut it = v.iter();
    let q = match it.next() {
        Some(c @ (b'0' | b'1')) => u32::from(c - b'0') * 100,
        _ => return 0,
    };
    match it.next() {
        None | Some(b',' | b' ') => return q,
        Some(b'.') => {}
        Some(_) => return 0,
    }
    let (mut q, mut n) = (q, 0);
    for c in it {
        match c {
            b',' | b' ' => break,
            b'0'..=b'9' => {
                q += u32::from(c - b'0');
                n += 1;
            }
            _ => return 0,
        }
    }
    if q > 100 || n > 3 {
        0
    } else {
        q
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// nginx's MSIE 4 to 6 test (`gzip_disable msie6`), SP2's "SV1" excepted.
fn msie6(ua: &[u8]) -> bool {
    let Some(i) = find(ua, b"MSIE ") else {
        return false;
    };
    let m = &ua[i..];
    if m.len() <= 7 || m[6] != b'.' {
        return false;
    }
    match m[5] {
        b'4' | b'5' => true,
        b'6' => find(&m[8..], b"SV1").is_none(),
        _ => false,
    }
}

/// The gzip header filter, after add_header and expires and before the range filter.
pub(crate) fn filter(resp: &mut Response, conf: Option<&Gzip>, r: &Req) {
    let Some(g) = conf else {
        return;
    };
    if !matches!(resp.status, 200 | 403 | 404)
        || resp
            .headers
            .get("content-encoding")
            .is_some_and(|v| !v.is_empty())
        || resp.content_length.is_some_and(|n| n < g.min_length)
        || !g.type_ok(resp.content_type.as_ref())
    {
        return;
    }
    resp.gzip_vary = g.vary;
    if !g.client_ok(r, resp) {
        return;
    }
    resp.headers.push("Content-Encoding", "gzip");
    let (wbits, memlevel) = window(resp.content_length);
    resp.content_length = None;
    resp.headers.remove("accept-ranges");
    // ngx_http_weak_etag: a strong tag becomes weak; one that is not a tag goes.
    if let Some(tag) = resp.headers.get("etag").cloned() {
        if !(tag.len() > 2 && tag.starts_with(b"W/")) {
            if tag.starts_with(b"\"") {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(&tag);
                resp.headers.set_value("etag", weak);
            } else {
                resp.headers.remove("etag");
            }
        }
    }
    let inner = match resp.file.take() {
        Some(src) => crate::files::whole(src),
        None => std::mem::take(&mut resp.body),
    };
    let flush = if resp.flush_each {
        Flush::Sync
    } else {
        Flush::None
    };
    match GzipBody::new(inner, g.level, wbits, memlevel, flush) {
        Ok(body) => resp.body = Body::Gzip(Box::new(body)),
        Err((inner, e)) => {
            // (Only when zlib cannot allocate its state: the body goes as it is.)
            tracing::error!("gzip: {e}");
            resp.headers.remove("content-encoding");
            resp.body = inner;
        }
    }
}

/// zlib's window bits and memory level as nginx sizes them (ngx_http_gzip_filter_memory):
/// gzip_window and gzip_hash's defaults (15, 8), each one less while a body of known
/// length would fit in half the window (less zlib's 262 bytes of lookahead).
fn window(length: Option<u64>) -> (i32, i32) {
    let (mut wbits, mut memlevel) = (15i32, 8i32);
    if let Some(n) = length.filter(|n| *n > 0) {
        while (n as i64) < (1i64 << (wbits - 1)) - 262 {
            wbits -= 1;
            memlevel -= 1;
        }
        memlevel = memlevel.max(1);
    }
    (wbits, memlevel)
}

/// gzip's header as zlib writes it for nginx: deflate, no flags, no time, Unix, and the
/// extra flags by level (2 for the best, 4 for the fastest).
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]
}

/// A body compressed as it streams, as zlib gives it out (an unbuffered upstream's
/// pieces each flushed, as nginx flushes them).
pub(crate) struct GzipBody {
    inner: Body,
    deflate: fulcrum_sys::Deflate,
    /// After each piece: Sync for an unbuffered upstream's, else None.
    flush: Flush,
    level: u32,
    crc: Crc,
    started: bool,
    done: bool,
}

impl std::fmt::Debug for GzipBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipBody")
            .field("deflate", &self.deflate)
            .finish()
    }
}

impl GzipBody {
    /// Err gives `inner` back when zlib cannot start.
    fn new(
        inner: Body,
        level: u32,
        wbits: i32,
        memlevel: i32,
        flush: Flush,
    ) -> Result<GzipBody, (Body, std::io::Error)> {
        match fulcrum_sys::Deflate::raw(level as i32, wbits, memlevel) {
            Ok(deflate) => Ok(GzipBody {
                inner,
                deflate,
                flush,
                level,
                crc: Crc::new(),
                started: false,
                done: false,
            }),
            Err(e) => Err((inner, e)),
        }
    }

    /// Feeds `input` with `flush`; the bytes that came out, the header before the first
    /// of them (never alone: a write of its own would cost a system call and a packet).
    fn run(&mut self, input: &[u8], flush: Flush) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        if !self.started {
            out.extend_from_slice(&header(self.level));
        }
        let before = out.len();
        self.deflate.compress(input, &mut out, flush)?;
        if out.len() == before {
            return Ok(Vec::new());
        }
        self.started = true;
        Ok(out)
    }

    fn trailer(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
    }
}

impl Source for GzipBody {
    /// As nginx's gzip filter: each piece deflated as it comes (flushed after it only
    /// for an unbuffered upstream's body, as nginx flushes the buffers it marks so),
    /// the rest and the trailer at the end. What goes out is what zlib gives.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match self.inner.poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.crc.update(&chunk);
                    match self.run(&chunk, self.flush) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Bytes::from(out)))),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.done = true;
                    let out = self.run(&[], Flush::Finish).map(|mut out| {
                        self.trailer(&mut out);
                        Bytes::from(out)
                    });
                    return Poll::Ready(Some(out));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_as_nginx_reads_it() {
        for yes in [
            "gzip",
            "gzip, deflate",
            "deflate, gzip",
            "br,gzip",
            "GZIP",
            "gzip;q=0.5",
            "gzip; q=1",
            "gzip;q=0.001",
            "deflate, gzip ;q=1.0",
            "x-gzip, gzip",
        ] {
            assert!(accepts_gzip(yes.as_bytes()), "{yes}");
        }
        for no in [
            "deflate",
            "x-gzip",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip;q=1.5",
            "gzip;q=0.0001",
            "gzipx",
            "gzip;level=1",
            "gzip;q",
        ] {
            assert!(!accepts_gzip(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn msie6_as_nginx_tells_it() {
        assert!(msie6(b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"));
        assert!(msie6(b"Mozilla/4.0 (compatible; MSIE 5.5; Windows 98)"));
        assert!(!msie6(
            b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)"
        ));
        assert!(!msie6(
            b"Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)"
        ));
        assert!(!msie6(b"curl/8.0"));
    }

    #[test]
    fn content_types_are_looked_up_without_the_charset() {
        assert_eq!(type_key(b"text/html; charset=utf-8"), b"text/html");
        assert_eq!(type_key(b"text/html;charset=utf-8"), b"text/html");
        assert_eq!(type_key(b"text/html; q=1"), b"text/html; q=1");
        assert_eq!(type_key(b"text/plain"), b"text/plain");
    }

    #[test]
    fn compressed_bodies_inflate_to_what_went_in() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let mut g = GzipBody::new(Body::full(text.clone()), 1, 15, 8, Flush::None)
                .map_err(|(_, e)| e)
                .unwrap();
            let mut out = Vec::new();
            while let Some(piece) = std::future::poll_fn(|cx| g.poll_next(cx)).await {
                out.extend_from_slice(&piece.unwrap());
            }
            out
        });
        assert_eq!(out[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 3]);
        assert!(out.len() < text.len() / 3);
        let mut back = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn zlibs_window_is_sized_to_the_body_as_nginx_sizes_it() {
        assert_eq!(window(None), (15, 8));
        assert_eq!(window(Some(0)), (15, 8));
        assert_eq!(window(Some(100)), (9, 2));
        assert_eq!(window(Some(2000)), (12, 5));
        assert_eq!(window(Some(8000)), (14, 7));
        assert_eq!(window(Some(1 << 20)), (15, 8));
        assert_eq!(window(Some(1)), (9, 2));
    }
}
