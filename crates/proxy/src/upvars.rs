//! The upstream module's variables, as nginx keeps them: one state per peer tried
//! (`, ` between them) and per upstream group a request went through (` : ` between
//! those, after an internal redirect), rendered when asked. The last try's response time,
//! bytes received and response length grow while its body is relayed, so an access log
//! line renders them once the response is done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One peer tried.
#[derive(Debug, Clone)]
pub(crate) struct Try {
    /// The peer's address, or the upstream's name when no peer was live.
    pub addr: String,
    /// Its status; 0 when none came (nginx writes `-`), or 502/504 as nginx records a
    /// failed try.
    pub status: u16,
    pub started: Instant,
    pub connect: Option<Duration>,
    pub header: Option<Duration>,
    /// When the try ended (a failure, or the end of its body).
    pub ended: Option<Instant>,
    /// The request's bytes written to the peer.
    pub sent: u64,
    /// The response head's bytes.
    pub head_bytes: u64,
    /// The body as it is relayed (the last try).
    pub meter: Option<Arc<Meter>>,
}

impl Try {
    pub fn new(addr: String, started: Instant) -> Try {
        Try {
            addr,
            status: 0,
            started,
            connect: None,
            header: None,
            ended: None,
            sent: 0,
            head_bytes: 0,
            meter: None,
        }
    }
}

/// What the relayed body of the last try has come to.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    /// Bytes taken off the connection after the head (framing included).
    pub received: AtomicU64,
    /// The body's own bytes.
    pub length: AtomicU64,
    pub done: Mutex<Option<Instant>>,
}

impl Meter {
    pub fn finish(&self) {
        if let Ok(mut d) = self.done.lock() {
            d.get_or_insert_with(Instant::now);
        }
    }
}

/// Every try of a request, by upstream group.
#[derive(Debug, Default)]
pub(crate) struct UpstreamLog {
    groups: Vec<Vec<Try>>,
    /// The last response's head (`$upstream_http_*`, `$upstream_cookie_*`).
    pub headers: Option<fulcrum_http1::Headers>,
}

/// The variables this module answers.
pub(crate) const NAMES: [&str; 9] = [
    "upstream_addr",
    "upstream_status",
    "upstream_connect_time",
    "upstream_header_time",
    "upstream_response_time",
    "upstream_bytes_received",
    "upstream_bytes_sent",
    "upstream_response_length",
    "upstream_cache_status",
];

/// The ones whose last value grows with the body: rendered when the log line is written.
pub(crate) fn deferred(name: &str) -> bool {
    matches!(
        name,
        "upstream_response_time" | "upstream_bytes_received" | "upstream_response_length"
    )
}

fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl UpstreamLog {
    /// A new group of tries (a proxy_pass reached).
    pub fn begin(&mut self) {
        self.groups.push(Vec::new());
    }

    /// The try being made, in the current group.
    pub fn push(&mut self, t: Try) -> &mut Try {
        if self.groups.is_empty() {
            self.groups.push(Vec::new());
        }
        let g = self.groups.last_mut().expect("made above");
        g.push(t);
        g.last_mut().expect("pushed above")
    }

    /// `$upstream_http_NAME`: a header of the last upstream response (the first, when
    /// it came more than once, as nginx takes it).
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.replace('_', "-");
        let v = self.headers.as_ref()?.get(&name)?;
        Some(String::from_utf8_lossy(v).into_owned())
    }

    /// `$upstream_cookie_NAME`: the value a Set-Cookie of the last upstream response
    /// gives the cookie.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let h = self.headers.as_ref()?;
        h.get_all("set-cookie")
            .find_map(|v| set_cookie_value(v, name.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A variable's value; None when no upstream was tried (or for the cache status,
    /// as nothing is cached).
    pub fn value(&self, name: &str) -> Option<String> {
        if self.groups.iter().all(Vec::is_empty) || name == "upstream_cache_status" {
            return None;
        }
        let now = Instant::now();
        let one = |t: &Try| -> String {
            let meter = t.meter.as_deref();
            match name {
                "upstream_addr" => t.addr.clone(),
                "upstream_status" if t.status == 0 => "-".into(),
                "upstream_status" => t.status.to_string(),
                "upstream_connect_time" => t.connect.map_or("-".into(), seconds),
                "upstream_header_time" => t.header.map_or("-".into(), seconds),
                "upstream_response_time" => {
                    let end = t
                        .ended
                        .or_else(|| meter.and_then(|m| *m.done.lock().ok()?))
                        .unwrap_or(now);
                    seconds(end.saturating_duration_since(t.started))
                }
                "upstream_bytes_received" => {
                    let body = meter.map_or(0, |m| m.received.load(Ordering::Relaxed));
                    (t.head_bytes + body).to_string()
                }
                "upstream_bytes_sent" => t.sent.to_string(),
                "upstream_response_length" => meter
                    .map_or(0, |m| m.length.load(Ordering::Relaxed))
                    .to_string(),
                _ => String::new(),
            }
        };
        Some(
            self.groups
                .iter()
                .filter(|g| !g.is_empty())
                .map(|g| g.iter().map(one).collect::<Vec<_>>().join(", "))
                .collect::<Vec<_>>()
                .join(" : "),
        )
    }
}

/// The value of cookie `name` in one Set-Cookie line: its first pair only (what follows
/// `;` are attributes), the name compared without case, as nginx's parser does.
fn set_cookie_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let pair = line.split(|b| *b == b';').next()?;
    let eq = pair.iter().position(|b| *b == b'=')?;
    let (n, v) = (pair[..eq].trim_ascii(), &pair[eq + 1..]);
    n.eq_ignore_ascii_case(name).then(|| v.trim_ascii())
}

/// The value of cookie `name` in a request's Cookie header: pairs split by `;` (or `,`),
/// names compared without case, as nginx's `$cookie_NAME`.
pub(crate) fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|b| *b == b';' || *b == b',').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (n, v) = (pair[..eq].trim_ascii(), &pair[eq + 1..]);
        n.eq_ignore_ascii_case(name).then(|| v.trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_as_nginx_lists_them() {
        let start = Instant::now();
        let mut log = UpstreamLog::default();
        assert_eq!(log.value("upstream_addr"), None);
        log.begin();
        let t = log.push(Try::new("127.0.0.1:9001".into(), start));
        t.status = 502;
        t.ended = Some(start + Duration::from_millis(1234));
        let t = log.push(Try::new("127.0.0.1:9002".into(), start));
        t.status = 200;
        t.connect = Some(Duration::from_millis(2));
        t.header = Some(Duration::from_millis(5));
        t.ended = Some(start + Duration::from_millis(7));
        t.head_bytes = 100;
        log.begin();
        log.push(Try::new("u".into(), start));
        assert_eq!(
            log.value("upstream_addr").unwrap(),
            "127.0.0.1:9001, 127.0.0.1:9002 : u"
        );
        assert_eq!(log.value("upstream_status").unwrap(), "502, 200 : -");
        assert_eq!(log.value("upstream_connect_time").unwrap(), "-, 0.002 : -");
        assert_eq!(log.value("upstream_header_time").unwrap(), "-, 0.005 : -");
        assert_eq!(log.value("upstream_bytes_received").unwrap(), "0, 100 : 0");
        assert!(log
            .value("upstream_response_time")
            .unwrap()
            .starts_with("1.234, 0.007 : "));
        assert_eq!(log.value("upstream_cache_status"), None);
    }

    #[test]
    fn cookies_by_name() {
        assert_eq!(
            cookie_value(b"a=1; SID=xyz; b=2", b"sid"),
            Some(&b"xyz"[..])
        );
        assert_eq!(cookie_value(b"a=1;b=", b"b"), Some(&b""[..]));
        assert_eq!(cookie_value(b"a=1", b"c"), None);
        assert_eq!(
            set_cookie_value(b"SID=abc; Path=/; HttpOnly", b"sid"),
            Some(&b"abc"[..])
        );
        assert_eq!(set_cookie_value(b"x=1; SID=abc", b"SID"), None);
    }
}
