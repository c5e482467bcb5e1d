//! What the handler answers, and how nginx writes it: the status line (always HTTP/1.1),
//! then the headers nginx's header filter writes itself, in its order (Server, Date,
//! Content-Type, Content-Length, Location, Transfer-Encoding, Connection, Keep-Alive;
//! nginx's Last-Modified slot is for what it serves itself, which the proxy does not
//! yet), then the upstream's others as received, names in their case
//! (`ngx_http_header_filter_module.c`). nginx's own error pages, byte for byte.

use bytes::{BufMut, Bytes, BytesMut};
use fulcrum_http1::{write, Headers};

use crate::body::Body;
use crate::log::AccessLine;
use crate::upstream::Conn;

/// A response on its way to the client.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    /// The upstream's status line from the code on (nginx passes its text on); else
    /// nginx's own for the status.
    pub status_line: Option<Bytes>,
    pub content_type: Option<Bytes>,
    /// Known length; without one the body goes chunked (HTTP/1.1) or until close.
    pub content_length: Option<u64>,
    /// A Location nginx writes itself (made absolute); an upstream's absolute one stays
    /// among the other headers, where nginx leaves it.
    pub location: Option<Bytes>,
    /// The other headers, in order, names in their case.
    pub headers: Headers,
    pub body: Body,
    /// nginx closes the connection after this response (lingering close on an error).
    pub close: bool,
    /// A 101 from an upstream: its connection, for the tunnel.
    pub upgrade: Option<Conn>,
    /// The access log line, written once the body has gone out.
    pub log: Option<AccessLine>,
    /// The Server header's value (server_tokens).
    pub server: Bytes,
    /// A file's modification time, and as an HTTP date: written in nginx's own
    /// Last-Modified slot (for 200, 206 and 304 only, as nginx drops it otherwise).
    pub last_modified: Option<(i64, Bytes)>,
    /// A file being served, before the range filter cuts its body.
    pub file: Option<crate::files::FileSource>,
    /// One of nginx's own error pages (its status is not replaced by error_page's).
    pub special: bool,
    /// `Vary: Accept-Encoding`, which nginx's header filter writes itself (gzip_vary on
    /// a response gzip could compress).
    pub gzip_vary: bool,
    /// The request's places in limit_conn zones, given back when the response is done.
    pub limit_conn: Vec<crate::limit::ConnGuard>,
    /// nginx writes its own Server and Date, unless proxy_pass_header let the upstream's
    /// through (then those stand among the other headers).
    pub own_server: bool,
    pub own_date: bool,
    /// An unbuffered upstream's body: each piece goes out at once (nginx marks every
    /// buffer of it `flush`, which gzip honours with a sync flush).
    pub flush_each: bool,
}

impl Response {
    pub fn new(status: u16, server: Bytes) -> Response {
        Response {
            status,
            status_line: None,
            content_type: None,
            content_length: None,
            location: None,
            headers: Headers::new(),
            body: Body::Empty,
            close: false,
            upgrade: None,
            log: None,
            server,
            last_modified: None,
            file: None,
            special: false,
            gzip_vary: false,
            limit_conn: Vec::new(),
            own_server: true,
            own_date: true,
            flush_each: false,
        }
    }

    /// A body of known length.
    pub fn with_body(mut self, content_type: Bytes, body: Bytes) -> Response {
        self.content_type = Some(content_type);
        self.content_length = Some(body.len() as u64);
        self.body = Body::full(body);
        self
    }

    /// nginx's built-in page for `status` (ngx_http_special_response_handler): 494 is
    /// sent as 400 with its own title; a code nginx has no page for gets an empty body.
    /// The statuses after which nginx closes the connection say so.
    pub fn error(status: u16, server: Bytes) -> Response {
        let wire = if (494..=497).contains(&status) {
            400
        } else {
            status
        };
        let mut r = Response::new(wire, server.clone());
        r.special = true;
        r.close = matches!(status, 400 | 408 | 413 | 414 | 494..=497 | 500 | 501);
        match page_title(status) {
            Some(title) => {
                let mut html = BytesMut::with_capacity(200);
                html.put_slice(b"<html>\r\n<head><title>");
                html.put_slice(title.as_bytes());
                html.put_slice(b"</title></head>\r\n<body>\r\n<center><h1>");
                if wire == status {
                    html.put_slice(title.as_bytes());
                    html.put_slice(b"</h1></center>\r\n");
                } else {
                    // 494 to 497: "400 Bad Request", then the reason on a line of its own.
                    html.put_slice(b"400 Bad Request</h1></center>\r\n<center>");
                    html.put_slice(title.trim_start_matches("400 ").as_bytes());
                    html.put_slice(b"</center>\r\n");
                }
                html.put_slice(b"<hr><center>");
                html.put_slice(&server);
                html.put_slice(b"</center>\r\n</body>\r\n</html>\r\n");
                r.with_body(Bytes::from_static(b"text/html"), html.freeze())
            }
            None => {
                r.content_length = Some(0);
                r
            }
        }
    }

    /// nginx's msie_padding (on by default): its own page for a status from 300 goes to
    /// MSIE and Chrome with comments after it, so that they show it rather than a page
    /// of their own.
    pub fn pad_for(&mut self, user_agent: Option<&[u8]>, http09: bool) {
        const PADDING: &[u8] =
            b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n";
        if !self.special || self.status < 300 || http09 || !user_agent.is_some_and(pads) {
            return;
        }
        let Body::Full(Some(page)) = &self.body else {
            return;
        };
        let mut padded = BytesMut::with_capacity(page.len() + 6 * PADDING.len());
        padded.put_slice(page);
        for _ in 0..6 {
            padded.put_slice(PADDING);
        }
        self.content_length = Some(padded.len() as u64);
        self.body = Body::full(padded.freeze());
    }

    /// Whether a body follows the head on the wire (HEAD, 1xx, 204 and 304 have none).
    pub fn has_body(&self, head_request: bool) -> bool {
        !(head_request || self.status < 200 || self.status == 204 || self.status == 304)
    }
}

/// The browsers nginx pads its pages for (ngx_http_process_user_agent): MSIE (not
/// Opera), and Chrome where it does not say Gecko/.
fn pads(ua: &[u8]) -> bool {
    let has = |s: &[u8]| ua.windows(s.len()).any(|w| w == s);
    let msie = ua
        .windows(5)
        .position(|w| w == b"MSIE ")
        .is_some_and(|i| i + 7 < ua.len());
    if has(b"Opera") {
        return false;
    }
    msie || (!has(b"Gecko/") && has(b"Chrome/"))
}

/// nginx's error page titles (`ngx_http_error_pages`): a page for every 3xx, 4xx and 5xx
/// status nginx has a status line for (304 aside), titled with that line, except 302's
/// (Found, though its status line says Moved Temporarily), 401's, and 494 to 497 (sent as
/// 400 with their own titles).
fn page_title(status: u16) -> Option<std::borrow::Cow<'static, str>> {
    Some(match status {
        302 => "302 Found".into(),
        401 => "401 Authorization Required".into(),
        494 => "400 Request Header Or Cookie Too Large".into(),
        495 => "400 The SSL certificate error".into(),
        496 => "400 No required SSL certificate was sent".into(),
        497 => "400 The plain HTTP request was sent to HTTPS port".into(),
        300..=599 if status != 304 => {
            let line = write::status_line(status);
            // A code nginx has no text for is written as the code and a space.
            if line.ends_with(' ') {
                return None;
            }
            line
        }
        _ => return None,
    })
}

/// How the connection goes on after a response, as the header filter writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    KeepAlive { timeout_header: Option<u64> },
    Close,
    Upgrade,
}

/// The HTTP/1 head of `r`, in nginx's order.
pub(crate) fn head(r: &Response, date: &[u8], chunked: bool, persist: Persist) -> BytesMut {
    let mut out = BytesMut::with_capacity(256 + r.headers.len() * 40);
    out.put_slice(b"HTTP/1.1 ");
    match &r.status_line {
        Some(l) => out.put_slice(l),
        None => out.put_slice(write::status_line(r.status).as_bytes()),
    }
    out.put_slice(b"\r\n");
    if r.own_server {
        line(&mut out, b"Server", &r.server);
    }
    if r.own_date {
        line(&mut out, b"Date", date);
    }
    if let Some(t) = &r.content_type {
        line(&mut out, b"Content-Type", t);
    }
    if let (Some(n), false) = (r.content_length, chunked) {
        out.put_slice(b"Content-Length: ");
        decimal(&mut out, n);
        out.put_slice(b"\r\n");
    }
    if let (Some((_, v)), 200 | 206 | 304) = (&r.last_modified, r.status) {
        line(&mut out, b"Last-Modified", v);
    }
    if let Some(v) = &r.location {
        line(&mut out, b"Location", v);
    }
    if chunked {
        out.put_slice(b"Transfer-Encoding: chunked\r\n");
    }
    match persist {
        Persist::Upgrade => out.put_slice(b"Connection: upgrade\r\n"),
        Persist::Close => out.put_slice(b"Connection: close\r\n"),
        Persist::KeepAlive { timeout_header } => {
            out.put_slice(b"Connection: keep-alive\r\n");
            if let Some(t) = timeout_header {
                out.put_slice(b"Keep-Alive: timeout=");
                decimal(&mut out, t);
                out.put_slice(b"\r\n");
            }
        }
    }
    if r.gzip_vary {
        out.put_slice(b"Vary: Accept-Encoding\r\n");
    }
    for h in &r.headers {
        line(&mut out, &h.name, &h.value);
    }
    out.put_slice(b"\r\n");
    out
}

/// `n` in decimal, with no allocation.
fn decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

fn line(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// `Fri, 04 Dec 2026 15:16:35 GMT`, made once a second per thread, as nginx caches its
/// time strings.
pub(crate) fn http_date() -> Bytes {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, Bytes)> = const { RefCell::new((0, Bytes::new())) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != now || c.1.is_empty() {
            *c = (now, Bytes::from(format_date(now)));
        }
        c.1.clone()
    })
}

pub(crate) fn format_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::log::civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_nginx_writes_them() {
        assert_eq!(format_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_date(1_796_396_195), "Fri, 04 Dec 2026 14:56:35 GMT");
    }

    #[test]
    fn error_pages_as_nginx_writes_them() {
        let r = Response::error(494, Bytes::from_static(b"fulcrum"));
        assert_eq!(r.status, 400);
        assert!(r.close);
        let Body::Full(Some(b)) = &r.body else {
            panic!("a page")
        };
        assert_eq!(
            &b[..],
            &b"<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>Request Header Or Cookie Too Large</center>\r\n<hr><center>fulcrum</center>\r\n</body>\r\n</html>\r\n"[..]
        );
        let h = head(&r, b"D", false, Persist::Close);
        assert_eq!(
            &h[..],
            &b"HTTP/1.1 400 Bad Request\r\nServer: fulcrum\r\nDate: D\r\nContent-Type: text/html\r\nContent-Length: 228\r\nConnection: close\r\n\r\n"[..]
        );
    }
}
