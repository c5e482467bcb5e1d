//! nginx's static and index modules, and the filters that work on what they serve:
//! `root`/`alias` map the URI to a path, `index` tries files for a URI ending in `/`, the
//! file goes out with nginx's Content-Type (by extension), Last-Modified, ETag and
//! Accept-Ranges, conditional requests get 304 or 412 (`ngx_http_not_modified_filter`)
//! and Range requests 206 or 416 (`ngx_http_range_filter_module`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use fulcrum_nginx_conf::model::{IfModifiedSince, LocationMatch, Root};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use crate::body::Body;
use crate::request::Req;
use crate::response::{format_date, Response};
use crate::site::{Resolved, Site};
use crate::stream::BoxError;

/// nginx's prefix in Debian's build: relative `root` paths are under it.
const PREFIX: &str = "/usr/share/nginx/";

/// What the content phase decided for a location without proxy_pass.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, one per request: no box
pub(crate) enum Content {
    /// A file (or 304, 412, a redirect to the directory).
    Response(Response),
    /// An index file: an internal redirect to this URI.
    Internal(String),
    /// An error nginx answers with its page (or error_page): 403, 404, 405, 500.
    Status(u16),
}

/// A root or alias path as nginx completes it: a relative one under the prefix.
pub(crate) fn full(p: String) -> String {
    if p.starts_with('/') {
        p
    } else {
        format!("{PREFIX}{p}")
    }
}

/// The path a URI maps to (ngx_http_map_uri_to_path): root + URI, or for alias the
/// alias in place of the location's prefix (the whole path in a regex location).
pub(crate) fn path(
    r: &Req,
    site: &Site,
    server: &str,
    res: &Resolved,
    matcher: &LocationMatch,
    uri: &str,
) -> PathBuf {
    let ctx = r.ctx(site, server, "");
    match &*res.root {
        Root::Root(t) => PathBuf::from(full(ctx.eval(t)) + uri),
        Root::Alias(t) => {
            let alias = full(ctx.eval(t));
            match matcher {
                LocationMatch::Regex { .. } => PathBuf::from(alias),
                LocationMatch::Prefix(p)
                | LocationMatch::PrefixNoRegex(p)
                | LocationMatch::Exact(p) => {
                    PathBuf::from(alias + uri.get(p.len()..).unwrap_or(""))
                }
                LocationMatch::Named(_) => PathBuf::from(alias + uri),
            }
        }
    }
}

/// The index module and then the static module for the request's URI.
pub(crate) async fn serve(
    r: &Req,
    site: &Site,
    server: &str,
    res: &Resolved,
    matcher: &LocationMatch,
) -> Content {
    let method = &r.method_name[..];
    let uri = r.uri.as_str();
    if uri.ends_with('/') {
        // The index module: the first index file that exists, by internal redirect.
        let ctx = r.ctx(site, server, "");
        let dir = path(r, site, server, res, matcher, uri);
        for (i, t) in res.index.iter().enumerate() {
            let name = ctx.eval(t);
            if name.starts_with('/') {
                // An absolute index (the last one, as nginx has it) is redirected to as is.
                return Content::Internal(name);
            }
            let file = dir.join(&name);
            match tokio::fs::metadata(&file).await {
                Ok(_) => return Content::Internal(format!("{uri}{name}")),
                Err(_) if i + 1 < res.index.len() => continue,
                Err(_) => {}
            }
        }
        return match tokio::fs::metadata(&dir).await {
            Ok(m) if m.is_dir() => {
                let message = format!("directory index of \"{}\" is forbidden", dir.display());
                crate::handler::log_error(r, res, server, &message);
                Content::Status(403)
            }
            _ => {
                let message = format!(
                    "\"{}\" is not found (2: No such file or directory)",
                    dir.display()
                );
                if res.log_not_found {
                    crate::handler::log_error(r, res, server, &message);
                }
                Content::Status(404)
            }
        };
    }
    if !matches!(method, b"GET" | b"HEAD" | b"POST") {
        return Content::Status(405);
    }
    let file_path = path(r, site, server, res, matcher, uri);
    let file = match tokio::fs::File::open(&file_path).await {
        Ok(f) => f,
        Err(e) => {
            let (status, log) = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                    (404, res.log_not_found)
                }
                std::io::ErrorKind::PermissionDenied => (403, true),
                _ => (500, true),
            };
            if log {
                let message = format!(
                    "open() \"{}\" failed ({}: {})",
                    file_path.display(),
                    e.raw_os_error().unwrap_or(0),
                    crate::handler::strerror(&e)
                );
                crate::handler::log_error(r, res, server, &message);
            }
            return Content::Status(status);
        }
    };
    let Ok(meta) = file.metadata().await else {
        return Content::Status(500);
    };
    if meta.is_dir() {
        // A directory without its slash: 301 to it, with the arguments.
        let mut location = format!("{uri}/");
        if !r.args.is_empty() {
            location.push('?');
            location.push_str(&r.args);
        }
        let mut resp = Response::error(301, res.server.clone());
        let host = r.ctx(site, server, "").host();
        resp.location = Some(Bytes::from(crate::handler::absolute(r, &host, &location)));
        return Content::Response(resp);
    }
    if !meta.is_file() {
        let message = format!("\"{}\" is not a regular file", file_path.display());
        crate::handler::log_error(r, res, server, &message);
        return Content::Status(404);
    }
    if method == b"POST" {
        return Content::Status(405);
    }
    let size = meta.len();
    let mtime = meta.mtime();
    let mut resp = Response::new(200, res.server.clone());
    resp.content_type = Some(content_type(res, uri));
    resp.content_length = Some(size);
    resp.last_modified = Some((mtime, Bytes::from(format_date(mtime.max(0) as u64))));
    if res.etag {
        resp.headers
            .push("ETag", format!("\"{:x}-{:x}\"", mtime, size));
    }
    resp.file = Some(FileSource { file, size });
    resp.body = Body::Empty;
    Content::Response(resp)
}

/// The Content-Type for a URI's extension: the `types` in force (nginx's built-in three
/// when none are configured), else default_type.
fn content_type(res: &Resolved, uri: &str) -> Bytes {
    let name = uri.rsplit('/').next().unwrap_or("");
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    ext.and_then(|e| res.types.get(&e).cloned())
        .unwrap_or_else(|| res.default_type.clone())
}

/// An open file being served; the body is cut from it once the filters have decided.
#[derive(Debug)]
pub(crate) struct FileSource {
    pub file: tokio::fs::File,
    pub size: u64,
}

/// nginx's not-modified filter, for a 200 with a Last-Modified time: 412 for a failed
/// If-Unmodified-Since or If-Match, 304 for If-Modified-Since / If-None-Match that say
/// the client's copy is current.
pub(crate) fn not_modified(resp: &mut Response, r: &Req, ims: IfModifiedSince) {
    if resp.status != 200 {
        return;
    }
    let Some((mtime, _)) = &resp.last_modified else {
        return;
    };
    let mtime = *mtime;
    let etag = resp.headers.get("etag").cloned();
    if let Some(v) = r.headers.get_str("if-unmodified-since") {
        if parse_http_date(v).is_none_or(|t| mtime > t) {
            return precondition_failed(resp);
        }
    }
    if let Some(v) = r.headers.get_str("if-match") {
        if !matches_etag(v, etag.as_deref(), false) {
            return precondition_failed(resp);
        }
    }
    let since = r.headers.get_str("if-modified-since");
    let none_match = r.headers.get_str("if-none-match");
    if since.is_none() && none_match.is_none() {
        return;
    }
    if let Some(v) = since {
        let modified = match ims {
            IfModifiedSince::Off => true,
            IfModifiedSince::Exact => parse_http_date(v) != Some(mtime),
            IfModifiedSince::Before => parse_http_date(v).is_none_or(|t| t < mtime),
        };
        if modified {
            return;
        }
    }
    if let Some(v) = none_match {
        if !matches_etag(v, etag.as_deref(), true) {
            return;
        }
    }
    resp.status = 304;
    resp.content_type = None;
    resp.content_length = None;
    resp.file = None;
    resp.body = Body::Empty;
}

fn precondition_failed(resp: &mut Response) {
    let server = resp.server.clone();
    *resp = Response::error(412, server);
}

/// nginx's ngx_http_test_if_match: `*`, or one of the listed tags equal to the entity's
/// (weak comparison ignores `W/`).
fn matches_etag(header: &str, etag: Option<&[u8]>, weak: bool) -> bool {
    if header.trim() == "*" {
        return true;
    }
    let Some(etag) = etag else { return false };
    let etag = std::str::from_utf8(etag).unwrap_or("");
    let strip = |t: &str| {
        if weak {
            t.strip_prefix("W/").unwrap_or(t).to_string()
        } else {
            t.to_string()
        }
    };
    if !weak && etag.starts_with("W/") {
        return false;
    }
    let ours = strip(etag);
    header
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .any(|t| strip(t) == ours)
}

/// nginx's range filter for a file about to go out whole (200, known length): a single
/// range becomes a 206 with Content-Range, several a multipart/byteranges 206, an
/// unsatisfiable one a 416; otherwise `Accept-Ranges: bytes` is added. Then the body is
/// cut from the file.
pub(crate) fn ranges(resp: &mut Response, r: &Req) {
    let Some(src) = resp.file.take() else {
        return;
    };
    let size = src.size;
    let whole = vec![Segment::File {
        offset: 0,
        len: size,
    }];
    let range = r
        .headers
        .get_str("range")
        .filter(|v| v.len() >= 7 && v[..6].eq_ignore_ascii_case("bytes="));
    let parsed = match range {
        // (Not for a page error_page serves under another status.)
        _ if resp.status != 200
            || r.protocol == "HTTP/0.9"
            || r.err_status.is_some_and(|s| s != 200) =>
        {
            None
        }
        Some(v) if if_range_holds(resp, r) => Some(parse_ranges(&v[6..], size)),
        _ => Some(Parsed::Declined),
    };
    let segments = match parsed {
        None => whole,
        Some(Parsed::Declined) => {
            resp.headers.push("Accept-Ranges", "bytes");
            whole
        }
        Some(Parsed::NotSatisfiable) => {
            // nginx's page for 416: the ETag goes, add_header's lines (added before the
            // range filter ran) stay, then Content-Range.
            let server = resp.server.clone();
            let mut headers = std::mem::take(&mut resp.headers);
            headers.remove("etag");
            *resp = Response::error(416, server);
            resp.headers = headers;
            resp.headers
                .push("Content-Range", format!("bytes */{size}"));
            // nginx's own page, padded for MSIE and Chrome as its others are.
            let ua = r.headers.get("user-agent").map(|u| &u[..]);
            resp.pad_for(ua, r.protocol == "HTTP/0.9");
            return;
        }
        Some(Parsed::Ranges(list)) if list.len() == 1 => {
            let (start, end) = list[0];
            resp.status = 206;
            resp.status_line = None;
            resp.headers
                .push("Content-Range", format!("bytes {start}-{}/{size}", end - 1));
            vec![Segment::File {
                offset: start,
                len: end - start,
            }]
        }
        Some(Parsed::Ranges(list)) => {
            let boundary = format!("{:020}", next_boundary());
            let part_type = resp.content_type.clone();
            let mut segments = Vec::new();
            for (start, end) in list {
                let mut head = format!("\r\n--{boundary}\r\n");
                if let Some(t) = &part_type {
                    head.push_str("Content-Type: ");
                    head.push_str(&String::from_utf8_lossy(t));
                    head.push_str("\r\n");
                }
                head.push_str(&format!(
                    "Content-Range: bytes {start}-{}/{size}\r\n\r\n",
                    end - 1
                ));
                segments.push(Segment::Mem(Bytes::from(head)));
                segments.push(Segment::File {
                    offset: start,
                    len: end - start,
                });
            }
            segments.push(Segment::Mem(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
            resp.status = 206;
            resp.status_line = None;
            resp.content_type = Some(Bytes::from(format!(
                "multipart/byteranges; boundary={boundary}"
            )));
            segments
        }
    };
    let body = FileBody::new(src.file, segments);
    resp.content_length = Some(body.len());
    resp.body = Body::File(Box::new(body));
}

/// The whole file as the body (the gzip filter has taken the length, so no ranges).
pub(crate) fn whole(src: FileSource) -> Body {
    let segments = vec![Segment::File {
        offset: 0,
        len: src.size,
    }];
    Body::File(Box::new(FileBody::new(src.file, segments)))
}

/// nginx numbers its multipart boundaries from a per-process counter.
fn next_boundary() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// If-Range: an entity tag equal to ours, or a date equal to Last-Modified.
fn if_range_holds(resp: &Response, r: &Req) -> bool {
    let Some(v) = r.headers.get_str("if-range") else {
        return true;
    };
    if v.len() >= 2 && v.ends_with('"') {
        return resp.headers.get("etag").is_some_and(|e| e == v.as_bytes());
    }
    match &resp.last_modified {
        Some((t, _)) => parse_http_date(v) == Some(*t),
        None => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Declined,
    NotSatisfiable,
    /// [start, end) pairs.
    Ranges(Vec<(u64, u64)>),
}

/// ngx_http_range_parse over what follows `bytes=`: comma-separated `start-end`,
/// `start-` and `-suffix`, spaces allowed around the numbers.
fn parse_ranges(spec: &str, len: u64) -> Parsed {
    let number = |t: &str| {
        let t = t.trim_matches(' ');
        if t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse::<u64>().ok()
        } else {
            None
        }
    };
    let mut out = Vec::new();
    let mut size = 0u64;
    for piece in spec.split(',') {
        let Some((a, b)) = piece.split_once('-') else {
            return Parsed::NotSatisfiable;
        };
        let (start, end) = if a.trim_matches(' ').is_empty() {
            // `-N`: the last N bytes.
            let Some(n) = number(b) else {
                return Parsed::NotSatisfiable;
            };
            (len.saturating_sub(n), len)
        } else {
            let Some(start) = number(a) else {
                return Parsed::NotSatisfiable;
            };
            if b.trim_matches(' ').is_empty() {
                (start, len)
            } else {
                let Some(e) = number(b) else {
                    return Parsed::NotSatisfiable;
                };
                (start, if e >= len { len } else { e + 1 })
            }
        };
        if start < end {
            out.push((start, end));
            size += end - start;
        } else if start == 0 {
            return Parsed::Declined;
        }
    }
    if out.is_empty() {
        return Parsed::NotSatisfiable;
    }
    if size > len {
        return Parsed::Declined;
    }
    Parsed::Ranges(out)
}

/// An HTTP date (RFC 1123, RFC 850 or asctime, as nginx's ngx_parse_http_time reads
/// them), in seconds since 1970.
pub(crate) fn parse_http_date(v: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let v = v.trim();
    let rest = v.split_once(' ').map_or(v, |(_, r)| r).trim();
    let fields: Vec<&str> = rest
        .split([' ', '-', ':'])
        .filter(|f| !f.is_empty())
        .collect();
    let month = |m: &str| MONTHS.iter().position(|x| m.eq_ignore_ascii_case(x));
    // "05 Dec 2026 09:10:11 GMT", "05-Dec-26 09:10:11 GMT", "Dec  5 09:10:11 2026".
    let (d, m, y, hh, mm, ss) = match fields[..] {
        [d, m, y, hh, mm, ss, ..] if month(m).is_some() => (d, month(m)?, y, hh, mm, ss),
        [m, d, hh, mm, ss, y] => (d, month(m)?, y, hh, mm, ss),
        _ => return None,
    };
    let mut y: i64 = y.parse().ok()?;
    if y < 70 {
        y += 2000;
    } else if y < 100 {
        y += 1900;
    }
    let d: i64 = d.parse().ok()?;
    let m = m as i64 + 1;
    let (hh, mm, ss): (i64, i64, i64) = (hh.parse().ok()?, mm.parse().ok()?, ss.parse().ok()?);
    if !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A piece of a file body: bytes of our own (multipart heads) or a slice of the file.
#[derive(Debug)]
pub(crate) enum Segment {
    Mem(Bytes),
    File { offset: u64, len: u64 },
}

/// A file body read piece by piece.
pub(crate) struct FileBody {
    file: tokio::fs::File,
    segments: std::collections::VecDeque<Segment>,
    /// Where the file's position is, once known.
    position: Option<u64>,
    seeking: bool,
    buf: BytesMut,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("segments", &self.segments)
            .finish_non_exhaustive()
    }
}

impl FileBody {
    fn new(file: tokio::fs::File, segments: Vec<Segment>) -> FileBody {
        FileBody {
            file,
            segments: segments.into(),
            position: Some(0),
            seeking: false,
            buf: BytesMut::new(),
        }
    }

    /// The total length.
    pub fn len(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Mem(b) => b.len() as u64,
                Segment::File { len, .. } => *len,
            })
            .sum()
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        const CHUNK: u64 = 64 * 1024;
        loop {
            let Some(seg) = self.segments.front_mut() else {
                return Poll::Ready(None);
            };
            let (offset, len) = match seg {
                Segment::Mem(b) => {
                    let b = std::mem::take(b);
                    self.segments.pop_front();
                    return Poll::Ready(Some(Ok(b)));
                }
                Segment::File { len: 0, .. } => {
                    self.segments.pop_front();
                    continue;
                }
                Segment::File { offset, len } => (offset, len),
            };
            if self.position != Some(*offset) {
                if !self.seeking {
                    if let Err(e) =
                        Pin::new(&mut self.file).start_seek(std::io::SeekFrom::Start(*offset))
                    {
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    self.seeking = true;
                }
                match Pin::new(&mut self.file).poll_complete(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(Ok(p)) => {
                        self.seeking = false;
                        self.position = Some(p);
                    }
                }
            }
            let want = (*len).min(CHUNK) as usize;
            self.buf.resize(want, 0);
            let mut rb = ReadBuf::new(&mut self.buf[..want]);
            match Pin::new(&mut self.file).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Some(Err("the file is shorter than it was".into())));
            }
            *offset += n as u64;
            *len -= n as u64;
            self.position = Some(*offset);
            return Poll::Ready(Some(Ok(self.buf.split_to(n).freeze())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_nginx_parses_them() {
        use Parsed::*;
        assert_eq!(parse_ranges("0-4", 10), Ranges(vec![(0, 5)]));
        assert_eq!(parse_ranges("5-", 10), Ranges(vec![(5, 10)]));
        assert_eq!(parse_ranges("-3", 10), Ranges(vec![(7, 10)]));
        assert_eq!(parse_ranges("-30", 10), Ranges(vec![(0, 10)]));
        assert_eq!(parse_ranges("0-100", 10), Ranges(vec![(0, 10)]));
        assert_eq!(parse_ranges("2-100", 10), Ranges(vec![(2, 10)]));
        assert_eq!(parse_ranges("0-1, 4-5", 10), Ranges(vec![(0, 2), (4, 6)]));
        assert_eq!(parse_ranges("20-30", 10), NotSatisfiable);
        assert_eq!(parse_ranges("a-b", 10), NotSatisfiable);
        assert_eq!(parse_ranges("5-2", 10), NotSatisfiable);
        assert_eq!(parse_ranges("0-1,2-9,0-9", 10), Declined);
        assert_eq!(parse_ranges(" 1 - 2 ", 10), Ranges(vec![(1, 3)]));
        assert_eq!(parse_ranges("-", 10), NotSatisfiable);
        assert_eq!(parse_ranges("0-4,", 10), NotSatisfiable);
        assert_eq!(parse_ranges("99999999999999999999-", 10), NotSatisfiable);
    }

    #[test]
    fn http_dates_in_three_forms() {
        let t = Some(1_796_396_195);
        assert_eq!(parse_http_date("Fri, 04 Dec 2026 14:56:35 GMT"), t);
        assert_eq!(parse_http_date("Friday, 04-Dec-26 14:56:35 GMT"), t);
        assert_eq!(parse_http_date("Fri Dec  4 14:56:35 2026"), t);
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn entity_tags_strong_and_weak() {
        assert!(matches_etag("\"a\"", Some(b"\"a\""), false));
        assert!(matches_etag("\"b\", \"a\"", Some(b"\"a\""), true));
        assert!(matches_etag("W/\"a\"", Some(b"\"a\""), true));
        assert!(!matches_etag("W/\"a\"", Some(b"\"a\""), false));
        assert!(matches_etag("*", None, false));
        assert!(!matches_etag("\"a\"", None, true));
    }
}
