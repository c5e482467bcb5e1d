//! The nginx.conf model compiled for serving: settings merged down the http → server →
//! location chain as nginx merges them, regexes compiled, `proxy_pass` targets resolved to
//! upstream pools (an address written in `proxy_pass` is an implicit upstream, as in nginx).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_nginx_conf::model::{
    AccessLog, AccessRule, AddHeader, Balance, ErrorPage, Expires, HttpVersion, IfModifiedSince,
    Location, LocationMatch, LogFormat, Map, NextUpstream, NginxConfig, ProxyRedirect, Root,
    Server, ServerName, Settings, Source, Template, Upstream, UpstreamServer,
};
use fulcrum_upstream::{PeerAddr, Pool};
use regex::Regex;

/// nginx's `combined` log format.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// Settings after inheritance: what applies to a request in a location.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// proxy_set_header, the innermost level that has any (nginx's rule), names parsed
    /// once here rather than per request.
    pub set_headers: Vec<(bytes::Bytes, Template)>,
    pub http_version: HttpVersion,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub next_upstream: NextUpstream,
    pub next_upstream_tries: u32,
    pub next_upstream_timeout: Option<Duration>,
    pub buffering: bool,
    /// proxy_request_buffering: off streams the client's body to the upstream.
    pub request_buffering: bool,
    /// proxy_buffers: memory a buffered response may fill before it goes to a file.
    pub buffers: u64,
    /// proxy_max_temp_file_size (0: no file; the upstream then waits for the client).
    pub max_temp_file: u64,
    /// proxy_temp_path, else the system's temporary directory.
    pub temp_path: std::path::PathBuf,
    pub redirect: Vec<ProxyRedirect>,
    pub access_log: Vec<AccessLog>,
    pub error_log: ErrorLogTarget,
    pub client_max_body_size: u64,
    pub client_body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    /// `Server: fulcrum/VERSION` (server_tokens on) or `Server: fulcrum`.
    pub server: bytes::Bytes,
    /// default_type: the Content-Type of `return` with text.
    pub default_type: bytes::Bytes,
    pub add_header: Vec<AddHeader>,
    pub expires: Expires,
    pub rewrite_log: bool,
    pub uninitialized_variable_warn: bool,
    /// set_real_ip_from with real_ip_header and real_ip_recursive; None without trusted
    /// addresses.
    pub realip: Option<RealIp>,
    /// allow and deny, in order.
    pub access: Vec<AccessRule>,
    /// root (nginx's default `html`, under the prefix; a trailing `/` dropped, as
    /// nginx drops it) or alias. Shared: `$document_root` names the current one.
    pub root: Arc<Root>,
    pub index: Vec<Template>,
    /// MIME types by lowercase extension.
    pub types: std::sync::Arc<HashMap<String, bytes::Bytes>>,
    pub error_page: Vec<ErrorPage>,
    pub etag: bool,
    pub if_modified_since: IfModifiedSince,
    pub log_not_found: bool,
    /// The gzip filter, when on.
    pub gzip: Option<std::sync::Arc<crate::gzip::Gzip>>,
    /// auth_basic's realm and user file, when both are set (nginx checks nothing
    /// without the file).
    pub auth_basic: Option<(Template, Template)>,
    /// satisfy any.
    pub satisfy_any: bool,
    pub limit_req: Vec<fulcrum_nginx_conf::model::LimitReq>,
    pub limit_req_status: u16,
    pub limit_req_log_level: Level,
    pub limit_req_dry_run: bool,
    pub limit_conn: Vec<(String, u32)>,
    pub limit_conn_status: u16,
    pub limit_conn_log_level: Level,
    pub limit_conn_dry_run: bool,
    /// The upstream's headers that do not reach the client, lowercase: nginx's (Date,
    /// Server, X-Pad, its X-Accel-* instructions) and proxy_hide_header's, less
    /// proxy_pass_header's.
    pub hide_headers: Vec<Vec<u8>>,
    /// proxy_ignore_headers, lowercase.
    pub ignore_headers: Vec<String>,
    pub intercept_errors: bool,
    pub method: Option<Template>,
    pub set_body: Option<Template>,
    /// proxy_bind's local address (None: off or unset).
    pub bind: Option<Template>,
    pub pass_request_headers: bool,
    pub pass_request_body: bool,
    /// TLS to https upstreams as configured; `ssl_config` is built from it when the
    /// configuration is loaded (it reads files).
    pub ssl: UpstreamSsl,
    pub ssl_config: Option<Arc<rustls::ClientConfig>>,
    /// proxy_cookie_domain, _path and _flags.
    pub cookies: crate::cookies::Cookies,
}

/// proxy_ssl_*: how a location talks TLS to its upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSsl {
    pub verify: bool,
    pub depth: u32,
    pub trusted: Option<String>,
    /// The name to verify and send (nginx's default: the proxy_pass host).
    pub name: Option<Template>,
    pub server_name: bool,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// proxy_ssl_session_reuse: resume sessions (with the peers of this setting only).
    pub session_reuse: bool,
}

/// The upstream headers nginx's proxy module hides by default.
const HIDDEN: [&str; 8] = [
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

impl Resolved {
    /// Whether the upstream's header `name` stays with the proxy.
    pub fn hides(&self, name: &[u8]) -> bool {
        self.hide_headers
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
    }

    /// Whether proxy_ignore_headers names `name` (lowercase).
    pub fn ignores(&self, name: &str) -> bool {
        self.ignore_headers.iter().any(|h| h == name)
    }
}

/// The realip module's settings for a level.
#[derive(Debug, Clone)]
pub struct RealIp {
    pub from: Vec<Source>,
    /// X-Real-IP unless configured.
    pub header: String,
    pub recursive: bool,
}

/// The Server header's value and the error pages' footer, as server_tokens says.
pub fn server_name(tokens: bool) -> bytes::Bytes {
    if tokens {
        bytes::Bytes::from(concat!("fulcrum/", env!("CARGO_PKG_VERSION")))
    } else {
        bytes::Bytes::from_static(b"fulcrum")
    }
}

fn merge(inner: &Settings, outer: &Settings) -> Settings {
    macro_rules! m {
        ($($f:ident),*) => { Settings { $($f: inner.$f.clone().or_else(|| outer.$f.clone()),)* } };
    }
    let mut merged = m!(
        proxy_set_header,
        proxy_http_version,
        proxy_connect_timeout,
        proxy_read_timeout,
        proxy_send_timeout,
        proxy_next_upstream,
        proxy_next_upstream_tries,
        proxy_next_upstream_timeout,
        proxy_buffering,
        proxy_request_buffering,
        proxy_buffers,
        proxy_max_temp_file_size,
        proxy_temp_path,
        proxy_redirect,
        access_log,
        error_log,
        client_max_body_size,
        client_body_timeout,
        send_timeout,
        keepalive_timeout,
        keepalive_requests,
        ssl_certificate,
        ssl_certificate_key,
        ssl_protocols,
        client_header_timeout,
        client_header_buffer_size,
        large_client_header_buffers,
        underscores_in_headers,
        ignore_invalid_headers,
        server_tokens,
        default_type,
        add_header,
        expires,
        rewrite_log,
        uninitialized_variable_warn,
        set_real_ip_from,
        real_ip_header,
        real_ip_recursive,
        access,
        root,
        index,
        types,
        error_page,
        etag,
        if_modified_since,
        log_not_found,
        gzip,
        gzip_types,
        gzip_comp_level,
        gzip_min_length,
        gzip_proxied,
        gzip_vary,
        gzip_http_version,
        gzip_disable,
        auth_basic,
        auth_basic_user_file,
        satisfy_any,
        limit_req,
        limit_req_status,
        limit_req_log_level,
        limit_req_dry_run,
        limit_conn,
        limit_conn_status,
        limit_conn_log_level,
        limit_conn_dry_run,
        proxy_hide_header,
        proxy_pass_header,
        proxy_ignore_headers,
        proxy_intercept_errors,
        proxy_method,
        proxy_set_body,
        proxy_bind,
        proxy_pass_request_headers,
        proxy_pass_request_body,
        proxy_ssl_verify,
        proxy_ssl_verify_depth,
        proxy_ssl_trusted_certificate,
        proxy_ssl_name,
        proxy_ssl_server_name,
        proxy_ssl_certificate,
        proxy_ssl_certificate_key,
        proxy_ssl_session_reuse,
        proxy_cookie_domain,
        proxy_cookie_path,
        proxy_cookie_flags
    );
    // proxy_hide_header and proxy_pass_header come down together: a level with either
    // has only its own.
    if inner.proxy_hide_header.is_some() || inner.proxy_pass_header.is_some() {
        merged.proxy_hide_header = inner.proxy_hide_header.clone();
        merged.proxy_pass_header = inner.proxy_pass_header.clone();
    }
    merged
}

impl Resolved {
    fn of(s: &Settings) -> Resolved {
        let minute = Duration::from_secs(60);
        Resolved {
            set_headers: s
                .proxy_set_header
                .iter()
                .flatten()
                .map(|(n, t)| (bytes::Bytes::from(n.clone()), t.clone()))
                .collect(),
            http_version: s.proxy_http_version.unwrap_or(HttpVersion::V1_0),
            connect_timeout: s.proxy_connect_timeout.unwrap_or(minute),
            read_timeout: s.proxy_read_timeout.unwrap_or(minute),
            send_timeout: s.proxy_send_timeout.unwrap_or(minute),
            next_upstream: s.proxy_next_upstream.unwrap_or(NextUpstream::DEFAULT),
            next_upstream_tries: s.proxy_next_upstream_tries.unwrap_or(0),
            next_upstream_timeout: s.proxy_next_upstream_timeout.filter(|d| !d.is_zero()),
            buffering: s.proxy_buffering.unwrap_or(true),
            request_buffering: s.proxy_request_buffering.unwrap_or(true),
            // nginx's default on x86-64: 8 buffers of one 4 KiB page.
            buffers: s
                .proxy_buffers
                .map(|(n, sz)| u64::from(n) * sz)
                .unwrap_or(8 * 4096),
            max_temp_file: s.proxy_max_temp_file_size.unwrap_or(1024 * 1024 * 1024),
            temp_path: s
                .proxy_temp_path
                .as_ref()
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            redirect: s
                .proxy_redirect
                .clone()
                .unwrap_or_else(|| vec![ProxyRedirect::Default]),
            access_log: s.access_log.clone().unwrap_or_else(|| {
                vec![AccessLog::File {
                    path: "/var/log/nginx/access.log".into(),
                    format: None,
                }]
            }),
            error_log: ErrorLogTarget::of(s.error_log.as_ref()),
            client_max_body_size: s.client_max_body_size.unwrap_or(1024 * 1024),
            client_body_timeout: s.client_body_timeout.unwrap_or(minute),
            keepalive_timeout: s
                .keepalive_timeout
                .map(|k| k.0)
                .unwrap_or(Duration::from_secs(75)),
            keepalive_requests: s.keepalive_requests.unwrap_or(1000),
            server: server_name(s.server_tokens.unwrap_or(true)),
            default_type: bytes::Bytes::from(
                s.default_type
                    .clone()
                    .unwrap_or_else(|| "text/plain".into()),
            ),
            add_header: s.add_header.clone().unwrap_or_default(),
            expires: s.expires.clone().unwrap_or(Expires::Off),
            rewrite_log: s.rewrite_log.unwrap_or(false),
            uninitialized_variable_warn: s.uninitialized_variable_warn.unwrap_or(true),
            realip: s.set_real_ip_from.as_ref().map(|from| RealIp {
                from: from.clone(),
                header: s
                    .real_ip_header
                    .clone()
                    .unwrap_or_else(|| "X-Real-IP".into()),
                recursive: s.real_ip_recursive.unwrap_or(false),
            }),
            access: s.access.clone().unwrap_or_default(),
            root: Arc::new(match s.root.clone() {
                Some(Root::Root(t)) if t.0.len() > 1 && t.0.ends_with('/') => {
                    Root::Root(Template::new(&t.0[..t.0.len() - 1]))
                }
                Some(r) => r,
                None => Root::Root(Template::new("html")),
            }),
            index: s
                .index
                .clone()
                .unwrap_or_else(|| vec![Template::new("index.html")]),
            types: types(s.types.as_deref()),
            error_page: s.error_page.clone().unwrap_or_default(),
            etag: s.etag.unwrap_or(true),
            if_modified_since: s.if_modified_since.unwrap_or(IfModifiedSince::Exact),
            log_not_found: s.log_not_found.unwrap_or(true),
            gzip: crate::gzip::Gzip::of(s).map(std::sync::Arc::new),
            auth_basic: s
                .auth_basic
                .clone()
                .filter(|realm| realm.as_str() != "off")
                .zip(s.auth_basic_user_file.clone()),
            satisfy_any: s.satisfy_any.unwrap_or(false),
            limit_req: s.limit_req.clone().unwrap_or_default(),
            limit_req_status: s.limit_req_status.unwrap_or(503),
            limit_req_log_level: Level::parse(s.limit_req_log_level.as_deref()),
            limit_req_dry_run: s.limit_req_dry_run.unwrap_or(false),
            limit_conn: s.limit_conn.clone().unwrap_or_default(),
            limit_conn_status: s.limit_conn_status.unwrap_or(503),
            limit_conn_log_level: Level::parse(s.limit_conn_log_level.as_deref()),
            limit_conn_dry_run: s.limit_conn_dry_run.unwrap_or(false),
            hide_headers: {
                let pass: Vec<String> = s
                    .proxy_pass_header
                    .iter()
                    .flatten()
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                let mut hide: Vec<Vec<u8>> = HIDDEN
                    .iter()
                    .map(|h| h.to_string())
                    .chain(
                        s.proxy_hide_header
                            .iter()
                            .flatten()
                            .map(|h| h.to_ascii_lowercase()),
                    )
                    .filter(|h| !pass.contains(h))
                    .map(String::into_bytes)
                    .collect();
                hide.dedup();
                hide
            },
            ignore_headers: s.proxy_ignore_headers.clone().unwrap_or_default(),
            intercept_errors: s.proxy_intercept_errors.unwrap_or(false),
            method: s.proxy_method.clone(),
            set_body: s.proxy_set_body.clone(),
            bind: match &s.proxy_bind {
                Some(fulcrum_nginx_conf::model::ProxyBind::Local(t)) => Some(t.clone()),
                _ => None,
            },
            pass_request_headers: s.proxy_pass_request_headers.unwrap_or(true),
            pass_request_body: s.proxy_pass_request_body.unwrap_or(true),
            ssl: UpstreamSsl {
                verify: s.proxy_ssl_verify.unwrap_or(false),
                depth: s.proxy_ssl_verify_depth.unwrap_or(1),
                trusted: s.proxy_ssl_trusted_certificate.clone(),
                name: s.proxy_ssl_name.clone(),
                server_name: s.proxy_ssl_server_name.unwrap_or(false),
                cert: s.proxy_ssl_certificate.clone(),
                key: s.proxy_ssl_certificate_key.clone(),
                session_reuse: s.proxy_ssl_session_reuse.unwrap_or(true),
            },
            ssl_config: None,
            cookies: crate::cookies::Cookies::of(
                s.proxy_cookie_domain.as_deref(),
                s.proxy_cookie_path.as_deref(),
                s.proxy_cookie_flags.as_deref(),
            ),
        }
    }
}

/// The types in force as a lookup by extension; nginx's built-in three when none are
/// configured. Shared: every location of a configuration usually has the same.
type Types = std::sync::Arc<HashMap<String, bytes::Bytes>>;

fn types(list: Option<&[(String, Vec<String>)]>) -> Types {
    type Cache = Vec<(Vec<(String, Vec<String>)>, Types)>;
    thread_local! {
        static CACHE: std::cell::RefCell<Cache> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let builtin;
    let list = match list {
        Some(l) => l,
        None => {
            builtin = [
                ("text/html", "html"),
                ("image/gif", "gif"),
                ("image/jpeg", "jpg"),
            ]
            .map(|(m, e)| (m.to_string(), vec![e.to_string()]));
            &builtin[..]
        }
    };
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, m)) = c.iter().find(|(k, _)| k[..] == *list) {
            return m.clone();
        }
        let mut map = HashMap::new();
        for (mime, exts) in list {
            for e in exts {
                map.insert(e.clone(), bytes::Bytes::from(mime.clone()));
            }
        }
        let m = std::sync::Arc::new(map);
        c.push((list.to_vec(), m.clone()));
        if c.len() > 8 {
            c.remove(0);
        }
        m
    })
}

/// Where `proxy_pass` sends a request.
#[derive(Debug, Clone)]
pub enum Target {
    /// No variables: the upstream (named or implicit), scheme and URI part fixed.
    Fixed {
        https: bool,
        upstream: Arc<UpstreamGroup>,
        /// `$proxy_host`: the upstream's name, or host[:port] as written.
        proxy_host: String,
        uri: Option<String>,
    },
    /// With variables: evaluated per request (the host must name an upstream or be an
    /// address with a port).
    Dynamic(Template),
}

#[derive(Debug)]
pub struct Loc {
    pub matcher: LocationMatch,
    pub regex: Option<Regex>,
    pub target: Option<Target>,
    /// The rewrite module's directives, run after the location is found.
    pub ops: Vec<crate::rewrite::Op>,
    pub settings: Resolved,
    pub children: Vec<Loc>,
    pub try_files: Option<Vec<Template>>,
    /// Reached only by internal redirects.
    pub internal: bool,
    /// stub_status answers here.
    pub stub_status: bool,
}

#[derive(Debug)]
pub struct VServer {
    pub names: Vec<ServerName>,
    pub regexes: Vec<Option<Regex>>,
    pub listens: Vec<(Option<IpAddr>, u16, bool)>,
    /// The listens that say `ssl`.
    pub ssl_listens: Vec<(Option<IpAddr>, u16)>,
    /// The listens that say `reuseport`.
    pub reuseport_listens: Vec<(Option<IpAddr>, u16)>,
    /// The listens that say `proxy_protocol`.
    pub proxy_protocol_listens: Vec<(Option<IpAddr>, u16)>,
    /// A listen says `http2`: ALPN offers h2.
    pub http2: bool,
    /// ssl_certificate and ssl_certificate_key.
    pub cert: Option<(String, String)>,
    /// ssl_protocols, as written.
    pub ssl_protocols: Option<Vec<String>>,
    /// The rewrite module's directives at server level, run before a location is found.
    pub ops: Vec<crate::rewrite::Op>,
    pub settings: Resolved,
    pub locations: Vec<Loc>,
    /// `location @name` blocks.
    pub named: Vec<Loc>,
    /// try_files at server level (for requests no location takes).
    pub try_files: Option<Vec<Template>>,
    /// stub_status at server level (for requests no location takes).
    pub stub_status: bool,
    pub https: bool,
}

impl VServer {
    /// `$server_name`: the first name, or "".
    pub fn name(&self) -> &str {
        match self.names.first() {
            Some(ServerName::Exact(n)) | Some(ServerName::Wildcard(n)) => n,
            _ => "",
        }
    }
}

/// An upstream block (or implicit upstream) with its shared balancer state and its idle
/// connection cache settings.
#[derive(Debug)]
pub struct UpstreamGroup {
    pub name: String,
    pub config: Upstream,
    pub hash_key: Option<Template>,
    pub pool: Mutex<Pool>,
    /// keepalive N: idle connections kept per upstream (0: none).
    pub keepalive: usize,
    pub keepalive_requests: u32,
    pub keepalive_timeout: Duration,
    /// Idle connections to its peers, kept for reuse (keepalive N).
    pub idle: Arc<crate::upstream::Idle>,
    /// With `zone`, in worker processes: the balancer state they share.
    pub shared: Option<crate::shm::SharedBalancer>,
}

impl UpstreamGroup {
    /// Runs `f` on the pool, with the state the workers share where the upstream has a
    /// `zone` (nginx's upstream zone: one balancer for every worker).
    pub fn with_pool<R>(&self, f: impl FnOnce(&mut Pool) -> R) -> R {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match &self.shared {
            Some(s) => s.with(&mut pool, f),
            None => f(&mut pool),
        }
    }
}

#[derive(Debug)]
pub struct CompiledMap {
    pub source: Template,
    pub variable: String,
    pub default: Template,
    pub exact: HashMap<String, Template>,
    pub regexes: Vec<(Regex, Template)>,
}

/// A whole compiled http block.
#[derive(Debug)]
pub struct Site {
    pub servers: Vec<VServer>,
    pub upstreams: HashMap<String, Arc<UpstreamGroup>>,
    pub maps: Vec<CompiledMap>,
    /// split_clients and geo blocks by the variable each defines.
    pub splits: HashMap<String, crate::clients::Split>,
    pub geos: HashMap<String, crate::clients::GeoTable>,
    /// Variables that `set` gives values to somewhere (uninitialized_variable_warn).
    pub set_vars: std::collections::HashSet<String>,
    pub log_formats: HashMap<String, String>,
    pub client_header_timeout: Duration,
    /// keepalive_timeout and keepalive_requests for client connections, from the http
    /// level (nginx applies a location's; a connection here keeps the http block's).
    pub keepalive_timeout: Duration,
    /// keepalive_timeout's second value: a `Keep-Alive: timeout=N` header on responses.
    pub keepalive_header: Option<Duration>,
    pub keepalive_requests: u32,
    /// send_timeout for client connections, from the http level likewise.
    pub send_timeout: Duration,
    /// client_header_buffer_size, large_client_header_buffers, underscores_in_headers
    /// and ignore_invalid_headers, from the http block (nginx takes them from the
    /// default server of the address).
    pub limits: fulcrum_http1::Limits,
    /// The Server header and error-page footer for what is answered before a server is
    /// chosen (a refused head), from the http block's server_tokens.
    pub server: bytes::Bytes,
    pub threads: usize,
    /// worker_cpu_affinity: the CPUs of each worker thread.
    pub cpu_affinity: Option<fulcrum_nginx_conf::model::CpuAffinity>,
    /// Which of nginx's workers the first thread stands for (a worker process's number,
    /// for worker_cpu_affinity).
    pub worker_index: usize,
    /// worker_connections: client connections each worker may hold.
    pub worker_connections: usize,
    /// TLS for the bound addresses that have `ssl` listens.
    pub tls: HashMap<SocketAddr, Arc<rustls::ServerConfig>>,
    /// The main file's directory, where relative paths in values (auth_basic_user_file)
    /// are found, as nginx's conf prefix.
    pub conf_prefix: std::path::PathBuf,
    /// limit_req_zone and limit_conn_zone by name.
    pub req_zones: HashMap<String, Arc<crate::limit::ReqZone>>,
    pub conn_zones: HashMap<String, Arc<crate::limit::ConnZone>>,
    /// The counters, carried from the previous configuration by a reload.
    pub stats: Arc<crate::stats::Stats>,
}

impl Site {
    /// The addresses to bind: per port, the wildcard if any server listens on it, else
    /// each address (nginx binds `*:port` once and picks servers by local address).
    pub fn binds(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let all: Vec<(Option<IpAddr>, u16)> = self
            .servers
            .iter()
            .flat_map(|s| s.listens.iter().map(|(a, p, _)| (*a, *p)))
            .collect();
        for (addr, port) in &all {
            let wildcard = all.iter().any(|(a, p)| a.is_none() && p == port);
            let bind = match (addr, wildcard) {
                (_, true) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                (Some(a), false) => SocketAddr::new(*a, *port),
                (None, false) => unreachable!("a wildcard listen is a wildcard"),
            };
            if !out.contains(&bind) {
                out.push(bind);
            }
        }
        out
    }

    /// Whether a listen bound at `bind` says `reuseport`: the address is then bound once
    /// per worker thread with SO_REUSEPORT, and the kernel spreads new connections over
    /// them (nginx: one socket per worker process).
    pub fn reuseport(&self, bind: SocketAddr) -> bool {
        self.servers.iter().any(|s| {
            s.reuseport_listens.iter().any(|(a, p)| {
                *p == bind.port() && (bind.ip().is_unspecified() || *a == Some(bind.ip()))
            })
        })
    }

    /// Whether a listen on `bind` says `proxy_protocol`.
    pub fn proxy_protocol(&self, bind: SocketAddr) -> bool {
        self.servers.iter().any(|s| {
            s.proxy_protocol_listens.iter().any(|(a, p)| {
                *p == bind.port() && (bind.ip().is_unspecified() || *a == Some(bind.ip()))
            })
        })
    }

    /// Whether a listen on `bind` says `http2` (HTTP/2 by its preface on a plain port).
    pub fn http2(&self, bind: SocketAddr) -> bool {
        self.servers.iter().any(|s| {
            s.http2
                && s.listens.iter().any(|(a, p, _)| {
                    *p == bind.port() && (bind.ip().is_unspecified() || *a == Some(bind.ip()))
                })
        })
    }

    pub fn map(&self, name: &str) -> Option<&CompiledMap> {
        self.maps.iter().find(|m| m.variable == name)
    }
}

fn resolve(host: &str, port: u16) -> Vec<PeerAddr> {
    if let Some(path) = fulcrum_nginx_conf::strip_unix(host) {
        return vec![PeerAddr::Unix(path.to_string())];
    }
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return vec![PeerAddr::Inet(SocketAddr::new(ip, port))];
    }
    (h, port)
        .to_socket_addrs()
        .map(|a| a.map(PeerAddr::Inet).collect())
        .unwrap_or_default()
}

/// Splits `http://host[:port]/uri` into (https, host[:port], uri part); for
/// `http://unix:PATH[:URI]`, `unix:PATH` is the host.
pub fn split_url(url: &str) -> Option<(bool, &str, Option<&str>)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        (true, url.strip_prefix("https://")?)
    };
    let uri = fulcrum_nginx_conf::proxy_uri(url);
    let mut host = &rest[..rest.len() - uri.map_or(0, str::len)];
    if fulcrum_nginx_conf::strip_unix(rest).is_some() && uri.is_some() {
        // The `:` between the path and the URI.
        host = &host[..host.len() - 1];
    }
    Some((https, host, uri))
}

/// `$proxy_host` (and the default Host header) for a proxy_pass's `host[:port]`: nginx
/// sends `localhost` to a UNIX-domain socket.
pub fn proxy_host_of(hp: &str) -> &str {
    if fulcrum_nginx_conf::strip_unix(hp).is_some() {
        "localhost"
    } else {
        hp
    }
}

/// `host[:port]` into host, port (default by scheme) and whether the port was written,
/// as the configuration's own parser splits it.
pub fn host_port(hp: &str, https: bool) -> (String, u16, bool) {
    let default = if https { 443 } else { 80 };
    if fulcrum_nginx_conf::strip_unix(hp).is_some() {
        return (hp.to_string(), 0, false);
    }
    match fulcrum_nginx_conf::split_host_port(hp) {
        Some((host, port)) => (host, port.unwrap_or(default), port.is_some()),
        None => (hp.to_string(), default, false),
    }
}

fn group(u: &Upstream) -> Result<UpstreamGroup, String> {
    let pool = Pool::new(u, resolve)?;
    let shared = u
        .zone
        .as_ref()
        .and_then(|_| crate::shm::SharedBalancer::for_upstream(&u.name, pool.state_len()));
    Ok(UpstreamGroup {
        shared,
        name: u.name.clone(),
        config: u.clone(),
        hash_key: match &u.balance {
            Balance::Hash { key, .. } => Some(key.clone()),
            _ => None,
        },
        pool: Mutex::new(pool),
        keepalive: u.keepalive.unwrap_or(0) as usize,
        keepalive_requests: u.keepalive_requests.unwrap_or(1000),
        keepalive_timeout: u.keepalive_timeout.unwrap_or(Duration::from_secs(60)),
        idle: Arc::default(),
    })
}

/// An implicit upstream for `proxy_pass http://host:port`: its addresses, round-robin,
/// nginx's defaults.
pub fn implicit(host: &str, port: u16, written: &str) -> Result<UpstreamGroup, String> {
    let mut s = UpstreamServer::new(host, port);
    s.port_written = written.contains(':') && fulcrum_nginx_conf::strip_unix(host).is_none();
    group(&Upstream {
        name: written.to_string(),
        servers: vec![s],
        balance: Balance::RoundRobin,
        keepalive: None,
        keepalive_requests: None,
        keepalive_timeout: None,
        zone: None,
    })
}

struct Compiler<'a> {
    upstreams: HashMap<String, Arc<UpstreamGroup>>,
    previous: Option<&'a Site>,
}

impl Compiler<'_> {
    /// The group for `host[:port]` of a proxy_pass: a named upstream, else an implicit one.
    fn target(&mut self, hp: &str, https: bool) -> Result<Arc<UpstreamGroup>, String> {
        if let Some(g) = self.upstreams.get(hp) {
            return Ok(g.clone());
        }
        let (host, port, _) = host_port(hp, https);
        let g = Arc::new(implicit(&host, port, hp)?);
        self.upstreams.insert(hp.to_string(), g.clone());
        Ok(g)
    }

    fn proxy_target(&mut self, t: &Template) -> Result<Target, String> {
        if t.has_variables() {
            return Ok(Target::Dynamic(t.clone()));
        }
        let (https, hp, uri) =
            split_url(t.as_str()).ok_or_else(|| format!("invalid URL \"{}\"", t.0))?;
        Ok(Target::Fixed {
            https,
            upstream: self.target(hp, https)?,
            proxy_host: proxy_host_of(hp).to_string(),
            uri: uri.map(str::to_string),
        })
    }

    fn location(&mut self, l: &Location, outer: &Settings) -> Result<Loc, String> {
        let settings = merge(&l.settings, outer);
        let regex = match &l.matcher {
            LocationMatch::Regex {
                pattern,
                case_insensitive,
            } => Some(
                regex::RegexBuilder::new(pattern)
                    .case_insensitive(*case_insensitive)
                    .build()
                    .map_err(|e| format!("location regex \"{pattern}\": {e}"))?,
            ),
            _ => None,
        };
        let target = l
            .proxy_pass
            .as_ref()
            .map(|t| self.proxy_target(t))
            .transpose()?;
        // An `if` in a location is a location of its own, inheriting this one (and its
        // proxy_pass, unless it has one), as nginx merges it.
        let ops = crate::rewrite::compile(&l.steps, &mut |i| {
            let inner = merge(&i.settings, &settings);
            let target = match &i.proxy_pass {
                Some(t) => Some(self.proxy_target(t)?),
                None => target.clone(),
            };
            Ok(Some(Box::new(Loc {
                matcher: l.matcher.clone(),
                regex: None,
                target,
                ops: Vec::new(),
                settings: Resolved::of(&inner),
                children: Vec::new(),
                try_files: l.try_files.clone(),
                internal: l.internal,
                stub_status: l.stub_status,
            })))
        })?;
        let children = l
            .locations
            .iter()
            .map(|c| self.location(c, &settings))
            .collect::<Result<_, _>>()?;
        Ok(Loc {
            matcher: l.matcher.clone(),
            regex,
            target,
            ops,
            settings: Resolved::of(&settings),
            children,
            try_files: l.try_files.clone(),
            internal: l.internal,
            stub_status: l.stub_status,
        })
    }

    fn server(&mut self, s: &Server, http: &Settings) -> Result<VServer, String> {
        let settings = merge(&s.settings, http);
        let regexes = s
            .server_name
            .iter()
            .map(|n| match n {
                ServerName::Regex(r) => regex::RegexBuilder::new(r)
                    .case_insensitive(true)
                    .build()
                    .map(Some)
                    .map_err(|e| format!("server_name regex \"{r}\": {e}")),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let listens = if s.listen.is_empty() {
            vec![(None, 80, false)]
        } else {
            s.listen
                .iter()
                .map(|l| (l.addr, l.port, l.default_server))
                .collect()
        };
        Ok(VServer {
            proxy_protocol_listens: s
                .listen
                .iter()
                .filter(|l| l.proxy_protocol)
                .map(|l| (l.addr, l.port))
                .collect(),
            reuseport_listens: s
                .listen
                .iter()
                .filter(|l| l.reuseport)
                .map(|l| (l.addr, l.port))
                .collect(),
            ssl_listens: s
                .listen
                .iter()
                .filter(|l| l.ssl)
                .map(|l| (l.addr, l.port))
                .collect(),
            http2: s.listen.iter().any(|l| l.http2),
            cert: settings
                .ssl_certificate
                .clone()
                .zip(settings.ssl_certificate_key.clone()),
            ssl_protocols: settings.ssl_protocols.clone(),
            names: s.server_name.clone(),
            regexes,
            https: s.listen.iter().any(|l| l.ssl),
            listens,
            ops: crate::rewrite::compile(&s.steps, &mut |_| Ok(None))?,
            locations: s
                .locations
                .iter()
                .filter(|l| !matches!(l.matcher, LocationMatch::Named(_)))
                .map(|l| self.location(l, &settings))
                .collect::<Result<_, _>>()?,
            named: s
                .locations
                .iter()
                .filter(|l| matches!(l.matcher, LocationMatch::Named(_)))
                .map(|l| self.location(l, &settings))
                .collect::<Result<_, _>>()?,
            try_files: s.try_files.clone(),
            stub_status: s.stub_status,
            settings: Resolved::of(&settings),
        })
    }
}

fn map(m: &Map) -> Result<CompiledMap, String> {
    let mut exact = HashMap::new();
    let mut regexes = Vec::new();
    for (k, v) in &m.entries {
        if let Some(r) = k.strip_prefix("~*") {
            let re = regex::RegexBuilder::new(r).case_insensitive(true).build();
            regexes.push((
                re.map_err(|e| format!("map regex \"{r}\": {e}"))?,
                v.clone(),
            ));
        } else if let Some(r) = k.strip_prefix('~') {
            regexes.push((
                Regex::new(r).map_err(|e| format!("map regex \"{r}\": {e}"))?,
                v.clone(),
            ));
        } else {
            let key = k.strip_prefix('\\').unwrap_or(k);
            let key = if m.hostnames {
                key.to_ascii_lowercase()
            } else {
                key.to_string()
            };
            exact.insert(key, v.clone());
        }
    }
    Ok(CompiledMap {
        source: m.source.clone(),
        variable: m.variable.clone(),
        default: m.default.clone().unwrap_or_else(|| Template::new("")),
        exact,
        regexes,
    })
}

impl Site {
    /// Every file its access and error logs write (`stderr` aside), each once.
    pub fn log_paths(&self) -> Vec<String> {
        fn walk(locs: &[Loc], out: &mut Vec<String>) {
            for l in locs {
                add(&l.settings, out);
                walk(&l.children, out);
            }
        }
        fn add(r: &Resolved, out: &mut Vec<String>) {
            for a in &r.access_log {
                if let AccessLog::File { path, .. } = a {
                    out.push(path.clone());
                }
            }
            if r.error_log.path != "stderr" {
                out.push(r.error_log.path.clone());
            }
        }
        let mut out = Vec::new();
        for s in &self.servers {
            add(&s.settings, &mut out);
            walk(&s.locations, &mut out);
            walk(&s.named, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    /// The directories responses are spooled to (proxy_temp_path), each once.
    pub fn temp_paths(&self) -> Vec<std::path::PathBuf> {
        fn walk(locs: &[Loc], out: &mut Vec<std::path::PathBuf>) {
            for l in locs {
                out.push(l.settings.temp_path.clone());
                walk(&l.children, out);
            }
        }
        let mut out = Vec::new();
        for s in &self.servers {
            out.push(s.settings.temp_path.clone());
            walk(&s.locations, &mut out);
            walk(&s.named, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Makes every proxy_temp_path in use, and the directories of the other *_temp_path
/// directives, as nginx does at start: a directory that cannot be made refuses the
/// configuration, rather than failing each buffered response later.
fn temp_paths(servers: &[VServer], others: &[(String, String)]) -> Result<(), String> {
    fn walk<'a>(locs: &'a [Loc], out: &mut Vec<&'a std::path::Path>) {
        for l in locs {
            out.push(&l.settings.temp_path);
            walk(&l.children, out);
        }
    }
    let mut paths = Vec::new();
    for s in servers {
        paths.push(s.settings.temp_path.as_path());
        walk(&s.locations, &mut paths);
    }
    // client_body_temp_path and its kin: made too, though nothing is written there.
    paths.extend(others.iter().map(|(_, dir)| std::path::Path::new(dir)));
    paths.sort();
    paths.dedup();
    for p in paths {
        std::fs::create_dir_all(p)
            .map_err(|e| format!("mkdir() \"{}\" failed ({e})", p.display()))?;
    }
    Ok(())
}

/// Compiles the http block; TLS for its `ssl` listens is added by the tls module.
/// Upstream groups whose block is unchanged from `previous` keep their balancer state (a
/// reload does not reset round-robin positions or failures).
pub fn compile(cfg: &NginxConfig, previous: Option<&Site>) -> Result<Site, String> {
    let mut http = cfg.http.clone().unwrap_or_default();
    // error_log at the main level is where http's inherits from.
    if http.settings.error_log.is_none() {
        http.settings.error_log = cfg.error_log.clone();
    }
    let mut c = Compiler {
        upstreams: HashMap::new(),
        previous,
    };
    for u in &http.upstreams {
        let kept = c
            .previous
            .and_then(|p| p.upstreams.get(&u.name))
            .filter(|g| g.config == *u)
            .cloned();
        let g = match kept {
            Some(g) => g,
            None => Arc::new(group(u)?),
        };
        c.upstreams.insert(u.name.clone(), g);
    }
    let servers: Vec<VServer> = http
        .servers
        .iter()
        .map(|s| c.server(s, &http.settings))
        .collect::<Result<_, _>>()?;
    let maps = http.maps.iter().map(map).collect::<Result<_, _>>()?;
    let log_formats = http
        .log_formats
        .iter()
        .map(|f: &LogFormat| (f.name.clone(), f.format.0.clone()))
        .collect();
    let threads = match cfg.worker_processes {
        fulcrum_nginx_conf::model::WorkerProcesses::Auto => 0,
        fulcrum_nginx_conf::model::WorkerProcesses::Count(n) => n as usize,
    };
    let (count, size) = http
        .settings
        .large_client_header_buffers
        .unwrap_or((4, 8192));
    let mut set_vars = std::collections::HashSet::new();
    fn walk(locs: &[Loc], out: &mut std::collections::HashSet<String>) {
        for l in locs {
            crate::rewrite::declared(&l.ops, out);
            walk(&l.children, out);
        }
    }
    for s in &servers {
        crate::rewrite::declared(&s.ops, &mut set_vars);
        walk(&s.locations, &mut set_vars);
    }
    // A zone whose declaration is unchanged keeps its state across a reload, as nginx's
    // shared memory does.
    let (mut req_zones, mut conn_zones) = (HashMap::new(), HashMap::new());
    for z in &http.limit_zones {
        if z.rate.is_some() {
            let kept = previous
                .and_then(|p| p.req_zones.get(&z.name))
                .filter(|k| k.config == *z)
                .cloned();
            let zone = match kept {
                Some(k) => k,
                None => Arc::new(crate::limit::ReqZone::new(z.clone())?),
            };
            req_zones.insert(z.name.clone(), zone);
        } else {
            let kept = previous
                .and_then(|p| p.conn_zones.get(&z.name))
                .filter(|k| k.config == *z)
                .cloned();
            let zone = match kept {
                Some(k) => k,
                None => Arc::new(crate::limit::ConnZone::new(z.clone())?),
            };
            conn_zones.insert(z.name.clone(), zone);
        }
    }
    let site = Site {
        servers,
        upstreams: c.upstreams,
        maps,
        set_vars,
        log_formats,
        client_header_timeout: http
            .settings
            .client_header_timeout
            .unwrap_or(Duration::from_secs(60)),
        keepalive_timeout: http
            .settings
            .keepalive_timeout
            .map(|k| k.0)
            .unwrap_or(Duration::from_secs(75)),
        keepalive_header: http.settings.keepalive_timeout.and_then(|k| k.1),
        keepalive_requests: http.settings.keepalive_requests.unwrap_or(1000),
        send_timeout: http
            .settings
            .send_timeout
            .unwrap_or(Duration::from_secs(60)),
        limits: fulcrum_http1::Limits {
            header_buffer: http
                .settings
                .client_header_buffer_size
                .unwrap_or(1024)
                .max(1) as usize,
            large_buffers: count.max(1) as usize,
            large_buffer: size.max(1) as usize,
            underscores_in_headers: http.settings.underscores_in_headers.unwrap_or(false),
            ignore_invalid_headers: http.settings.ignore_invalid_headers.unwrap_or(true),
        },
        server: server_name(http.settings.server_tokens.unwrap_or(true)),
        threads,
        cpu_affinity: cfg.worker_cpu_affinity.clone(),
        worker_index: 0,
        worker_connections: cfg.worker_connections as usize,
        tls: HashMap::new(),
        stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
        conf_prefix: cfg
            .conf_prefix
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("/etc/nginx")),
        req_zones,
        conn_zones,
        splits: http
            .split_clients
            .iter()
            .map(|s| (s.variable.clone(), crate::clients::Split::new(s)))
            .collect(),
        geos: http
            .geos
            .iter()
            .map(|g| (g.variable.clone(), crate::clients::GeoTable::new(g)))
            .collect(),
    };
    temp_paths(&site.servers, &http.temp_paths)?;
    Ok(site)
}

// === error_log ===

/// nginx's error log levels, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

impl Level {
    /// A level by nginx's name; error for any other.
    pub fn parse(name: Option<&str>) -> Level {
        match name {
            Some("debug") => Level::Debug,
            Some("info") => Level::Info,
            Some("notice") => Level::Notice,
            Some("warn") => Level::Warn,
            Some("crit") => Level::Crit,
            Some("alert") => Level::Alert,
            Some("emerg") => Level::Emerg,
            _ => Level::Error,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Crit => "crit",
            Level::Alert => "alert",
            Level::Emerg => "emerg",
        }
    }
}

/// `error_log FILE [LEVEL]` as it applies to a location: where, and from which level.
/// nginx's default is `error_log logs/error.log error`, which Debian builds as
/// /var/log/nginx/error.log. `stderr` writes to the daemon's standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLogTarget {
    pub path: String,
    pub level: Level,
}

impl ErrorLogTarget {
    pub fn of(e: Option<&fulcrum_nginx_conf::model::ErrorLog>) -> ErrorLogTarget {
        let level = Level::parse(e.and_then(|e| e.level.as_deref()));
        ErrorLogTarget {
            path: e.map_or_else(
                || "/var/log/nginx/error.log".to_string(),
                |e| e.path.clone(),
            ),
            level,
        }
    }
}

// === the configuration in force ===

/// The compiled configuration in force, swapped whole by a reload; connections take the
/// current one for each request.
#[derive(Debug)]
pub struct Current(
    std::sync::RwLock<Arc<Site>>,
    /// A graceful stop has begun: answers go out with `Connection: close` (1, a
    /// worker replaced by a reload: idle keep-alive connections are kept until their
    /// next request, so none is closed while its client may be sending); and idle
    /// connections close now (2, nginx's SIGQUIT). Read per request, with the waiters
    /// it wakes (a connection waiting for its next request).
    std::sync::atomic::AtomicU8,
    tokio::sync::Notify,
    /// Woken by either stop: what an HTTP/2 connection waits on to send its GOAWAY.
    tokio::sync::Notify,
);

impl Current {
    pub fn new(site: Site) -> Current {
        Current(
            std::sync::RwLock::new(Arc::new(site)),
            std::sync::atomic::AtomicU8::new(0),
            tokio::sync::Notify::new(),
            tokio::sync::Notify::new(),
        )
    }

    /// Begins a graceful stop that closes idle connections now.
    pub fn close(&self) {
        self.1.store(2, std::sync::atomic::Ordering::Release);
        self.2.notify_waiters();
        self.3.notify_waiters();
    }

    /// Begins a graceful stop that lets idle keep-alive connections come back once more.
    pub fn drain(&self) {
        self.1.fetch_max(1, std::sync::atomic::Ordering::AcqRel);
        self.3.notify_waiters();
    }

    /// Whether answers close their connection now.
    pub fn closing(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::Acquire) >= 1
    }

    /// Whether idle connections close now.
    pub fn closing_idle(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::Acquire) >= 2
    }

    /// Resolves once a graceful stop begins (taken before checking [`Current::closing`],
    /// it misses no [`Current::close`]).
    pub fn closed(&self) -> tokio::sync::futures::Notified<'_> {
        self.2.notified()
    }

    /// Resolves once either graceful stop begins (taken before checking
    /// [`Current::closing`], it misses none).
    pub fn stopping(&self) -> tokio::sync::futures::Notified<'_> {
        self.3.notified()
    }

    pub fn get(&self) -> Arc<Site> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, site: Site) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(site);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_pass_urls_split_as_nginx_splits_them() {
        assert_eq!(
            split_url("http://10.0.0.1:8080/a/"),
            Some((false, "10.0.0.1:8080", Some("/a/")))
        );
        assert_eq!(split_url("https://app"), Some((true, "app", None)));
        // A socket's path ends at the first `:`, the URI follows it.
        assert_eq!(
            split_url("http://unix:/run/app.sock:/v1/"),
            Some((false, "unix:/run/app.sock", Some("/v1/")))
        );
        assert_eq!(
            split_url("http://unix:/run/app.sock"),
            Some((false, "unix:/run/app.sock", None))
        );
        assert_eq!(proxy_host_of("unix:/run/app.sock"), "localhost");
        assert_eq!(proxy_host_of("app:8080"), "app:8080");
        assert_eq!(
            resolve("unix:/run/app.sock", 0),
            [PeerAddr::Unix("/run/app.sock".into())]
        );
        assert_eq!(
            host_port("unix:/run/app.sock", false),
            ("unix:/run/app.sock".to_string(), 0, false)
        );
    }
}
