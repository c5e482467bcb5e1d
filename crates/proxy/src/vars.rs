//! nginx's variables, evaluated for one request.

use std::net::SocketAddr;

use fulcrum_http1::Headers;
use fulcrum_nginx_conf::model::{Part, Template};

use crate::site::Site;

/// What a request's variables are made of.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub site: &'a Site,
    pub method: &'a str,
    /// The request line's method (`$request`), which error_page does not change.
    pub line_method: &'a str,
    /// As the client sent it: path and query.
    pub request_uri: &'a str,
    /// Normalized path.
    pub uri: &'a str,
    pub args: &'a str,
    pub protocol: &'a str,
    pub headers: &'a Headers,
    /// The host the request names (absolute-form target, else the Host header).
    pub host: Option<&'a str>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub https: bool,
    pub server_name: &'a str,
    pub proxy_host: &'a str,
    /// For the access log.
    pub status: u16,
    pub body_bytes_sent: u64,
    pub time_local: &'a str,
    pub request_time: f64,
    /// The peers tried (`$upstream_*`).
    pub(crate) upstream: &'a std::sync::Mutex<crate::upvars::UpstreamLog>,
    /// The rewrite module's variables and the last regex's captures.
    pub script: &'a crate::rewrite::Script,
    /// The connection's own address when realip replaced `remote` (`$realip_remote_addr`).
    pub realip_remote: Option<SocketAddr>,
    /// The response's headers, for `$sent_http_*` (while the response is being made).
    pub sent: Option<&'a Headers>,
    pub sent_content_type: Option<&'a [u8]>,
    pub limit_req_status: Option<&'static str>,
    pub limit_conn_status: Option<&'static str>,
    /// The connection's PROXY protocol header.
    pub(crate) proxy: Option<crate::proxy_protocol::Addrs>,
    /// The request itself, for what only it knows (`$request_id`, `$ssl_*`, ...).
    pub(crate) req: Option<&'a crate::request::Req>,
}

impl Ctx<'_> {
    /// `$document_root`: the current location's root, or its alias (as written, under
    /// the prefix when relative; variables evaluated).
    pub fn document_root(&self) -> Option<String> {
        use fulcrum_nginx_conf::model::Root;
        let (Root::Root(t) | Root::Alias(t)) = &**self.script.root.as_ref()?;
        Some(crate::files::full(self.eval(t)))
    }

    /// `$host`: the Host header without its port, lowercased; else the server's name.
    pub fn host(&self) -> String {
        match self.host {
            Some(h) if !h.is_empty() => {
                let h = if h.starts_with('[') {
                    h.split_once(']')
                        .map_or(h, |(a, _)| a)
                        .trim_start_matches('[')
                } else {
                    h.rsplit_once(':').map_or(h, |(a, _)| a)
                };
                h.trim_end_matches('.').to_ascii_lowercase()
            }
            _ => self.server_name.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        let name = name.replace('_', "-");
        let values: Vec<String> = self
            .headers
            .get_all(&name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if values.is_empty() {
            return None;
        }
        // nginx joins repeated Cookie headers with "; " and others with ", ".
        let sep = if name.eq_ignore_ascii_case("cookie") {
            "; "
        } else {
            ", "
        };
        Some(values.join(sep))
    }

    /// A variable's value; None when it is not set (renders as empty).
    pub fn var(&self, name: &str, depth: u8) -> Option<String> {
        let v = match name {
            "remote_addr" => self.remote.ip().to_string(),
            // A port realip did not learn is empty, as nginx's 0 is.
            "remote_port" if self.remote.port() == 0 => String::new(),
            "remote_port" => self.remote.port().to_string(),
            "realip_remote_addr" => self.realip_remote.unwrap_or(self.remote).ip().to_string(),
            "realip_remote_port" => self.realip_remote.unwrap_or(self.remote).port().to_string(),
            "server_addr" => self.local.ip().to_string(),
            "server_port" => self.local.port().to_string(),
            "server_name" => self.server_name.to_string(),
            "server_protocol" => self.protocol.to_string(),
            "host" => self.host(),
            "scheme" => if self.https { "https" } else { "http" }.to_string(),
            "https" => if self.https { "on" } else { "" }.to_string(),
            "request_uri" => self.request_uri.to_string(),
            "uri" | "document_uri" => self.uri.to_string(),
            "args" | "query_string" => self.args.to_string(),
            "is_args" => if self.args.is_empty() { "" } else { "?" }.to_string(),
            "request_method" => self.method.to_string(),
            "request" => format!(
                "{} {} {}",
                self.line_method, self.request_uri, self.protocol
            ),
            "proxy_host" => self.proxy_host.to_string(),
            "proxy_port" => self
                .proxy_host
                .rsplit_once(':')
                .map_or(if self.https { "443" } else { "80" }, |(_, p)| p)
                .to_string(),
            "proxy_add_x_forwarded_for" => match self.header("x_forwarded_for") {
                Some(x) => format!("{x}, {}", self.remote.ip()),
                None => self.remote.ip().to_string(),
            },
            "content_length" => return self.header("content_length"),
            "content_type" => return self.header("content_type"),
            "binary_remote_addr" => match self.remote.ip() {
                // Raw octets (one char per byte): a key for limit zones and maps.
                std::net::IpAddr::V4(a) => a.octets().iter().map(|b| char::from(*b)).collect(),
                std::net::IpAddr::V6(a) => a.octets().iter().map(|b| char::from(*b)).collect(),
            },
            "connections_active"
            | "connections_reading"
            | "connections_writing"
            | "connections_waiting" => {
                let g = match name {
                    "connections_active" => crate::stats::Gauge::Active,
                    "connections_reading" => crate::stats::Gauge::Reading,
                    "connections_writing" => crate::stats::Gauge::Writing,
                    _ => crate::stats::Gauge::Waiting,
                };
                self.site.stats.1.gauge(g).to_string()
            }
            "connection" => return self.req.map(|r| r.conn.id.to_string()),
            "connection_requests" => return self.req.map(|r| r.connection_requests.to_string()),
            "pipe" => {
                return self
                    .req
                    .map(|r| if r.pipelined { "p" } else { "." }.to_string())
            }
            "request_id" => {
                return self
                    .req
                    .map(|r| r.request_id.get_or_init(request_id).clone())
            }
            "request_body" => {
                return self
                    .req
                    .and_then(|r| r.request_body.get())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            }
            "request_length" => {
                return self.req.map(|r| {
                    let body = r
                        .request_body
                        .get()
                        .map(|b| b.len() as u64)
                        .or_else(|| r.headers.get_str("content-length")?.parse().ok())
                        .unwrap_or(0);
                    (r.head_length + body).to_string()
                })
            }
            "ssl_protocol" => {
                return self
                    .req
                    .and_then(|r| r.tls.as_ref())
                    .map(|t| t.protocol.to_string())
            }
            "ssl_cipher" => {
                return self
                    .req
                    .and_then(|r| r.tls.as_ref())
                    .map(|t| t.cipher.to_string())
            }
            "ssl_server_name" => return self.req.and_then(|r| r.tls.as_ref()?.server_name.clone()),
            "document_root" => return self.document_root(),
            "realpath_root" => {
                // The root with its links resolved, as nginx's realpath(3); nothing
                // when it does not exist.
                let root = self.document_root()?;
                return std::fs::canonicalize(root)
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned());
            }
            "hostname" => hostname().to_string(),
            "pid" => std::process::id().to_string(),
            "nginx_version" => env!("CARGO_PKG_VERSION").to_string(),
            "msec" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                format!("{}.{:03}", now.as_secs(), now.subsec_millis())
            }
            "time_iso8601" => crate::log::iso8601_now(),
            "proxy_protocol_addr" => return self.proxy.map(|p| p.src.ip().to_string()),
            "proxy_protocol_port" => return self.proxy.map(|p| p.src.port().to_string()),
            "proxy_protocol_server_addr" => return self.proxy.map(|p| p.dst.ip().to_string()),
            "proxy_protocol_server_port" => return self.proxy.map(|p| p.dst.port().to_string()),
            "limit_req_status" => return self.limit_req_status.map(str::to_string),
            "limit_conn_status" => return self.limit_conn_status.map(str::to_string),
            "remote_user" => {
                return crate::auth::basic_user(self.headers)
                    .map(|(user, _)| String::from_utf8_lossy(&user).into_owned())
            }
            "status" => format!("{:03}", self.status),
            "body_bytes_sent" => self.body_bytes_sent.to_string(),
            "time_local" => self.time_local.to_string(),
            "request_time" => format!("{:.3}", self.request_time),
            n if crate::upvars::NAMES.contains(&n) => {
                return self.upstream.lock().ok()?.value(n);
            }
            n if n.len() == 1 && (b'1'..=b'9').contains(&n.as_bytes()[0]) => {
                let i = usize::from(n.as_bytes()[0] - b'1');
                return self.script.captures.get(i).cloned();
            }
            n if n.starts_with("upstream_http_") => {
                return self.upstream.lock().ok()?.header(&n[14..]);
            }
            n if n.starts_with("upstream_cookie_") => {
                return self.upstream.lock().ok()?.cookie(&n[16..]);
            }
            n if n.starts_with("cookie_") => {
                return self.headers.get_all("cookie").find_map(|h| {
                    crate::upvars::cookie_value(h, &n.as_bytes()[7..])
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
            }
            n if n.starts_with("http_") => return self.header(&n[5..]),
            n if n.starts_with("sent_http_") => return self.sent_header(&n[10..]),
            n if n.starts_with("arg_") => {
                return self.args.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    k.eq_ignore_ascii_case(&n[4..]).then(|| v.to_string())
                })
            }
            n => {
                if let Some(v) = self.script.vars.get(n) {
                    return Some(v.clone());
                }
                if let Some(s) = self.site.splits.get(n) {
                    let key = self.eval_at(&s.source, depth + 1);
                    return Some(s.value(key.as_bytes()).to_string());
                }
                if let Some(g) = self.site.geos.get(n) {
                    return Some(self.geo(g, depth));
                }
                if self.site.map(n).is_none() && self.site.set_vars.contains(n) {
                    if let Ok(mut u) = self.script.uninitialized.lock() {
                        u.push(n.to_string());
                    }
                    return None;
                }
                return self.map(n, depth);
            }
        };
        Some(v)
    }

    /// A geo block's value: by the address its variable holds, else by the client's
    /// (through X-Forwarded-For when the client is one of its proxies).
    fn geo(&self, g: &crate::clients::GeoTable, depth: u8) -> String {
        let addr = match &g.address {
            Some(var) => {
                let v = if depth > 8 {
                    None
                } else {
                    self.var(var, depth + 1)
                };
                crate::clients::parse_address(v.as_deref().unwrap_or(""))
            }
            None => {
                let peer = self.remote.ip();
                let xff = (!g.proxies.is_empty())
                    .then(|| self.header("x_forwarded_for"))
                    .flatten();
                xff.and_then(|list| {
                    crate::access::forwarded(peer, &list, &g.proxies, g.proxy_recursive)
                })
                .map_or(peer, |a| a.ip())
            }
        };
        g.value(addr).to_string()
    }

    /// `$sent_http_NAME`: a header of the response being made.
    fn sent_header(&self, name: &str) -> Option<String> {
        let name = name.replace('_', "-");
        if name.eq_ignore_ascii_case("content-type") {
            if let Some(t) = self.sent_content_type {
                return Some(String::from_utf8_lossy(t).into_owned());
            }
        }
        let values: Vec<String> = self
            .sent?
            .get_all(&name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    fn map(&self, name: &str, depth: u8) -> Option<String> {
        let m = self.site.map(name)?;
        if depth > 8 {
            return None;
        }
        let key = self.eval_at(&m.source, depth + 1);
        let value = m
            .exact
            .get(&key)
            .or_else(|| {
                m.regexes
                    .iter()
                    .find(|(r, _)| r.is_match(&key))
                    .map(|(_, v)| v)
            })
            .unwrap_or(&m.default);
        Some(self.eval_at(value, depth + 1))
    }

    pub fn eval(&self, t: &Template) -> String {
        self.eval_at(t, 0)
    }

    fn eval_at(&self, t: &Template, depth: u8) -> String {
        let mut out = String::new();
        for p in t.parts() {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Variable(v) => {
                    if let Some(x) = self.var(v, depth) {
                        out.push_str(&x);
                    }
                }
            }
        }
        out
    }
}

/// `$request_id`: 16 random bytes in hex, as nginx makes it.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    let random = rustls::crypto::ring::default_provider().secure_random;
    if random.fill(&mut bytes).is_err() {
        // The kernel's randomness failing is not a request's problem: time and a count.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The machine's name (`$hostname`), read once.
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}
