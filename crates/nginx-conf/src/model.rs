//! The typed model of the nginx.conf subset Fulcrum's proxy serves. Inheritable settings
//! are `Option`s at every level: `None` means "not written here, inherit", which is how
//! nginx merges configurations (and why `proxy_set_header` at an inner level replaces the
//! whole outer list).

use std::net::IpAddr;
use std::time::Duration;

/// A value that may contain variables (`$name`, `${name}`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Template(pub String);

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

impl Template {
    pub fn new(s: impl Into<String>) -> Template {
        Template(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits the value into literal text and variable references, as nginx's script
    /// compiler does: a name is letters, digits and `_` (or anything up to `}` in `${}`),
    /// and a digit from 1 to 9 alone is a regex capture.
    pub fn parts(&self) -> Vec<Part<'_>> {
        let s = self.0.as_str();
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut lit_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            let (name_start, name_end, next) =
                if bytes.get(i + 1).is_some_and(|b| (b'1'..=b'9').contains(b)) {
                    // A capture: `$1` to `$9`, one digit (`$10` is `$1` then "0").
                    (i + 1, i + 2, i + 2)
                } else if bytes.get(i + 1) == Some(&b'{') {
                    match s[i + 2..].find('}') {
                        Some(off) => (i + 2, i + 2 + off, i + 3 + off),
                        None => {
                            i += 1;
                            continue;
                        }
                    }
                } else {
                    let mut e = i + 1;
                    while e < bytes.len() && (bytes[e].is_ascii_alphanumeric() || bytes[e] == b'_')
                    {
                        e += 1;
                    }
                    (i + 1, e, e)
                };
            if name_end == name_start {
                i += 1;
                continue;
            }
            if lit_start < i {
                out.push(Part::Literal(&s[lit_start..i]));
            }
            out.push(Part::Variable(&s[name_start..name_end]));
            i = next;
            lit_start = next;
        }
        if lit_start < s.len() {
            out.push(Part::Literal(&s[lit_start..]));
        }
        out
    }

    pub fn has_variables(&self) -> bool {
        self.parts().iter().any(|p| matches!(p, Part::Variable(_)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerProcesses {
    Auto,
    Count(u32),
}

/// `worker_cpu_affinity`: the CPUs each worker runs on. Masks are written as nginx's,
/// `0101` for CPUs 0 and 2 (CPU 0 rightmost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAffinity {
    /// `auto [MASK]`: worker i on the i-th CPU (of MASK, else of all), round again
    /// past the last.
    Auto(Option<String>),
    /// One mask per worker; the last serves the workers past the list.
    Masks(Vec<String>),
}

/// The CPUs a mask names, ascending.
pub fn mask_cpus(mask: &str) -> Vec<usize> {
    mask.bytes()
        .rev()
        .enumerate()
        .filter(|(_, b)| *b == b'1')
        .map(|(i, _)| i)
        .collect()
}

impl CpuAffinity {
    /// The CPUs worker `n` (from 0) runs on, on a host with `ncpu` CPUs; None leaves it
    /// to the scheduler (as an empty mask does in nginx).
    pub fn cpus(&self, n: usize, ncpu: usize) -> Option<Vec<usize>> {
        let cpus = match self {
            CpuAffinity::Auto(mask) => {
                let set = match mask {
                    Some(m) => mask_cpus(m),
                    None => (0..ncpu).collect(),
                };
                vec![*set.get(n % set.len().max(1))?]
            }
            CpuAffinity::Masks(masks) => mask_cpus(masks.get(n).or(masks.last())?),
        };
        (!cpus.is_empty()).then_some(cpus)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    pub worker_processes: WorkerProcesses,
    pub worker_connections: u32,
    pub pid: Option<String>,
    /// `daemon` (on by default): fork into the background at start.
    pub daemon: bool,
    /// `master_process` (on by default).
    pub master_process: bool,
    pub error_log: Option<ErrorLog>,
    /// `user USER [GROUP]`: who the worker processes run as (the group defaults to
    /// the user's name, as nginx's does).
    pub user: Option<(String, Option<String>)>,
    /// `worker_rlimit_nofile`: the workers' limit on open files.
    pub worker_rlimit_nofile: Option<u64>,
    pub worker_cpu_affinity: Option<CpuAffinity>,
    pub http: Option<Http>,
    /// The directory of the main file: nginx's conf prefix, which relative certificate
    /// paths are resolved against. None for text without a directory.
    pub conf_prefix: Option<std::path::PathBuf>,
}

impl Default for NginxConfig {
    fn default() -> NginxConfig {
        NginxConfig {
            worker_processes: WorkerProcesses::Count(1),
            worker_connections: 512,
            pid: None,
            daemon: true,
            master_process: true,
            error_log: None,
            user: None,
            worker_rlimit_nofile: None,
            worker_cpu_affinity: None,
            http: None,
            conf_prefix: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLog {
    pub path: String,
    pub level: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    File {
        path: String,
        format: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    pub name: String,
    pub escape: Option<String>,
    pub format: Template,
}

/// `proxy_bind`: the local address upstream connections are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyBind {
    /// `off`: the kernel chooses (cancels an outer level's).
    Off,
    /// `ADDRESS[:PORT]`, maybe with variables (an empty value then means none).
    Local(Template),
}

/// An address as nginx's ngx_parse_addr_port reads one: an IP address alone (port 0),
/// `IPv4:PORT` or `[IPv6]:PORT`, the port 1 to 65535; no host names.
pub fn parse_addr_port(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(std::net::SocketAddr::new(ip, 0));
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    V1_0,
    V1_1,
}

/// `proxy_next_upstream`: when a request goes on to the next server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextUpstream {
    pub error: bool,
    pub timeout: bool,
    pub invalid_header: bool,
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    pub http_403: bool,
    pub http_404: bool,
    pub http_429: bool,
    pub non_idempotent: bool,
}

impl NextUpstream {
    /// nginx's default: `error timeout`.
    pub const DEFAULT: NextUpstream = NextUpstream {
        error: true,
        timeout: true,
        invalid_header: false,
        http_500: false,
        http_502: false,
        http_503: false,
        http_504: false,
        http_403: false,
        http_404: false,
        http_429: false,
        non_idempotent: false,
    };

    /// The flag for each keyword nginx accepts, in nginx's order.
    pub fn flags(&self) -> [(&'static str, bool); 11] {
        [
            ("error", self.error),
            ("timeout", self.timeout),
            ("invalid_header", self.invalid_header),
            ("http_500", self.http_500),
            ("http_502", self.http_502),
            ("http_503", self.http_503),
            ("http_504", self.http_504),
            ("http_403", self.http_403),
            ("http_404", self.http_404),
            ("http_429", self.http_429),
            ("non_idempotent", self.non_idempotent),
        ]
    }

    pub fn set(&mut self, keyword: &str) -> bool {
        let slot = match keyword {
            "error" => &mut self.error,
            "timeout" => &mut self.timeout,
            "invalid_header" => &mut self.invalid_header,
            "http_500" => &mut self.http_500,
            "http_502" => &mut self.http_502,
            "http_503" => &mut self.http_503,
            "http_504" => &mut self.http_504,
            "http_403" => &mut self.http_403,
            "http_404" => &mut self.http_404,
            "http_429" => &mut self.http_429,
            "non_idempotent" => &mut self.non_idempotent,
            _ => return false,
        };
        *slot = true;
        true
    }

    pub fn is_off(&self) -> bool {
        *self == NextUpstream::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRedirect {
    Default,
    Off,
    Replace { from: Template, to: Template },
}

/// Settings that nginx inherits from http to server to location.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub proxy_set_header: Option<Vec<(String, Template)>>,
    pub proxy_http_version: Option<HttpVersion>,
    pub proxy_connect_timeout: Option<Duration>,
    pub proxy_read_timeout: Option<Duration>,
    pub proxy_send_timeout: Option<Duration>,
    pub proxy_next_upstream: Option<NextUpstream>,
    pub proxy_next_upstream_tries: Option<u32>,
    pub proxy_next_upstream_timeout: Option<Duration>,
    pub proxy_buffering: Option<bool>,
    /// proxy_request_buffering: off sends the client's body up as it comes.
    pub proxy_request_buffering: Option<bool>,
    /// proxy_buffers NUMBER SIZE: memory for a buffered response.
    pub proxy_buffers: Option<(u32, u64)>,
    /// Beyond the buffers, how much of a response may wait in a temporary file (0: none).
    pub proxy_max_temp_file_size: Option<u64>,
    /// Where those files go (the directory only; levels are accepted and not used).
    pub proxy_temp_path: Option<String>,
    pub proxy_redirect: Option<Vec<ProxyRedirect>>,
    pub access_log: Option<Vec<AccessLog>>,
    pub error_log: Option<ErrorLog>,
    pub client_max_body_size: Option<u64>,
    pub client_body_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub keepalive_timeout: Option<(Duration, Option<Duration>)>,
    pub keepalive_requests: Option<u32>,
    pub ssl_certificate: Option<String>,
    pub ssl_certificate_key: Option<String>,
    /// ssl_protocols as written (fulcrum speaks TLSv1.2 and TLSv1.3 of them).
    pub ssl_protocols: Option<Vec<String>>,
    /// Server and http level only.
    pub client_header_timeout: Option<Duration>,
    pub client_header_buffer_size: Option<u64>,
    pub large_client_header_buffers: Option<(u32, u64)>,
    pub underscores_in_headers: Option<bool>,
    pub ignore_invalid_headers: Option<bool>,
    /// `Server: fulcrum/VERSION` (on, nginx's default) or `Server: fulcrum` (off).
    pub server_tokens: Option<bool>,
    /// Content-Type of responses Fulcrum makes itself (`return` with text).
    pub default_type: Option<String>,
    /// add_header, the innermost level that has any (nginx's rule).
    pub add_header: Option<Vec<AddHeader>>,
    pub expires: Option<Expires>,
    pub rewrite_log: Option<bool>,
    pub uninitialized_variable_warn: Option<bool>,
    /// set_real_ip_from: the addresses trusted to name the client.
    pub set_real_ip_from: Option<Vec<Source>>,
    /// real_ip_header: `X-Real-IP` (nginx's default), `X-Forwarded-For`, or any header.
    pub real_ip_header: Option<String>,
    pub real_ip_recursive: Option<bool>,
    /// allow and deny, in order; the innermost level that has any.
    pub access: Option<Vec<AccessRule>>,
    /// root or (in a location) alias: where files are served from.
    pub root: Option<Root>,
    /// index: the files tried for a URI ending in `/` (nginx's default `index.html`).
    pub index: Option<Vec<Template>>,
    /// types: MIME type by file extension, the innermost block that has any.
    pub types: Option<Vec<(String, Vec<String>)>>,
    /// error_page, the innermost level that has any.
    pub error_page: Option<Vec<ErrorPage>>,
    pub etag: Option<bool>,
    pub if_modified_since: Option<IfModifiedSince>,
    pub log_not_found: Option<bool>,
    /// The gzip module.
    pub gzip: Option<bool>,
    /// gzip_types as written, lowercase (`*`: any); text/html is always compressed.
    pub gzip_types: Option<Vec<String>>,
    pub gzip_comp_level: Option<u32>,
    pub gzip_min_length: Option<u64>,
    pub gzip_proxied: Option<GzipProxied>,
    pub gzip_vary: Option<bool>,
    pub gzip_http_version: Option<HttpVersion>,
    /// gzip_disable: User-Agent regexes (case-insensitive) and nginx's `msie6`.
    pub gzip_disable: Option<GzipDisable>,
    /// auth_basic: the realm (a template; `off`, written or evaluated, turns it off).
    pub auth_basic: Option<Template>,
    /// auth_basic_user_file: the htpasswd file, read for each request as nginx reads it.
    pub auth_basic_user_file: Option<Template>,
    /// satisfy any: access or auth_basic suffices (nginx's default is all).
    pub satisfy_any: Option<bool>,
    /// limit_req, in order; the innermost level that has any.
    pub limit_req: Option<Vec<LimitReq>>,
    pub limit_req_status: Option<u16>,
    /// limit_req_log_level: info, notice, warn or error (nginx's default).
    pub limit_req_log_level: Option<String>,
    pub limit_req_dry_run: Option<bool>,
    /// limit_conn ZONE NUMBER, in order; the innermost level that has any.
    pub limit_conn: Option<Vec<(String, u32)>>,
    pub limit_conn_status: Option<u16>,
    pub limit_conn_log_level: Option<String>,
    pub limit_conn_dry_run: Option<bool>,
    /// proxy_hide_header and proxy_pass_header: a level with either has its own lists
    /// (nginx inherits the two together).
    pub proxy_hide_header: Option<Vec<String>>,
    pub proxy_pass_header: Option<Vec<String>>,
    /// proxy_ignore_headers, lowercase: which of the upstream's instructions to ignore.
    pub proxy_ignore_headers: Option<Vec<String>>,
    pub proxy_intercept_errors: Option<bool>,
    pub proxy_method: Option<Template>,
    pub proxy_set_body: Option<Template>,
    pub proxy_bind: Option<ProxyBind>,
    pub proxy_pass_request_headers: Option<bool>,
    pub proxy_pass_request_body: Option<bool>,
    /// TLS to https upstreams: verify the peer against trusted CAs (to a chain depth),
    /// the name to verify and to send as SNI, a client certificate.
    pub proxy_ssl_verify: Option<bool>,
    pub proxy_ssl_verify_depth: Option<u32>,
    pub proxy_ssl_trusted_certificate: Option<String>,
    pub proxy_ssl_name: Option<Template>,
    pub proxy_ssl_server_name: Option<bool>,
    pub proxy_ssl_certificate: Option<String>,
    pub proxy_ssl_certificate_key: Option<String>,
    pub proxy_ssl_session_reuse: Option<bool>,
    /// proxy_cookie_domain and proxy_cookie_path, in order (empty: `off`).
    pub proxy_cookie_domain: Option<Vec<CookieRewrite>>,
    pub proxy_cookie_path: Option<Vec<CookieRewrite>>,
    /// proxy_cookie_flags, in order (empty: `off`).
    pub proxy_cookie_flags: Option<Vec<CookieFlags>>,
}

/// A cookie's name, or a domain or path to match: as written, or a regex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieMatch {
    Plain(Template),
    Regex {
        pattern: String,
        case_insensitive: bool,
    },
}

/// `proxy_cookie_domain|path MATCH REPLACEMENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieRewrite {
    pub matcher: CookieMatch,
    pub replacement: Template,
}

/// `proxy_cookie_flags COOKIE FLAG...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieFlags {
    pub cookie: CookieMatch,
    pub flags: Vec<Template>,
}

/// `limit_req zone=NAME [burst=N] [nodelay | delay=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReq {
    pub zone: String,
    /// Requests beyond the rate that may wait (0: none).
    pub burst: u32,
    /// Of those, how many go without waiting: nodelay is all of them.
    pub delay: LimitDelay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitDelay {
    /// Every request beyond the rate waits (nginx's default).
    All,
    /// `delay=N`: the first N beyond the rate go at once.
    After(u32),
    /// `nodelay`: none waits.
    Never,
}

/// limit_req_zone or limit_conn_zone: the state shared by every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitZone {
    pub name: String,
    pub key: Template,
    /// The zone's size in bytes: how many keys it can hold.
    pub size: u64,
    /// limit_req_zone's rate in requests per 1000 seconds (nginx's unit: `1r/s` is 1000,
    /// `30r/m` is 500); None for limit_conn_zone.
    pub rate: Option<u64>,
}

/// gzip_proxied: when a request that came through a proxy (it has `Via`) gets a
/// compressed answer; nginx's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GzipProxied(pub u16);

impl GzipProxied {
    pub const OFF: u16 = 0x0002;
    pub const EXPIRED: u16 = 0x0004;
    pub const NO_CACHE: u16 = 0x0008;
    pub const NO_STORE: u16 = 0x0010;
    pub const PRIVATE: u16 = 0x0020;
    pub const NO_LAST_MODIFIED: u16 = 0x0040;
    pub const NO_ETAG: u16 = 0x0080;
    pub const AUTH: u16 = 0x0100;
    pub const ANY: u16 = 0x0200;

    /// The bit of one of gzip_proxied's words.
    pub fn bit(word: &str) -> Option<u16> {
        Some(match word {
            "off" => Self::OFF,
            "expired" => Self::EXPIRED,
            "no-cache" => Self::NO_CACHE,
            "no-store" => Self::NO_STORE,
            "private" => Self::PRIVATE,
            "no_last_modified" => Self::NO_LAST_MODIFIED,
            "no_etag" => Self::NO_ETAG,
            "auth" => Self::AUTH,
            "any" => Self::ANY,
            _ => return None,
        })
    }

    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// gzip_disable: `msie6` (nginx's test for MSIE 4 to 6), and regexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GzipDisable {
    pub msie6: bool,
    pub regexes: Vec<String>,
}

/// `root PATH` or `alias PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Root(Template),
    Alias(Template),
}

/// `if_modified_since off|exact|before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfModifiedSince {
    Off,
    Exact,
    Before,
}

/// `error_page CODE... [=[RESPONSE]] URI`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    pub codes: Vec<u16>,
    /// `=`: the status of what the URI answers; `=CODE`: that code; None: the error's.
    pub response: Option<ErrorPageStatus>,
    /// A URI (an internal redirect), `@name`, or an absolute URL (a redirect).
    pub uri: Template,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPageStatus {
    /// `=`: whatever the page's request answers.
    Page,
    Code(u16),
}

/// `add_header NAME VALUE [always]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHeader {
    pub name: String,
    pub value: Template,
    pub always: bool,
}

/// The `expires` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expires {
    Off,
    /// `Expires: Thu, 01 Jan 1970 00:00:01 GMT`, `Cache-Control: no-cache`.
    Epoch,
    /// 2037 and ten years of max-age.
    Max,
    /// `[+|-]TIME`: from the time of the request, in seconds (negative: no-cache).
    Access(i64),
    /// `modified TIME`: from the response's Last-Modified.
    Modified(i64),
    /// `@TIME`: the next time of day, in seconds after midnight.
    Daily(i64),
    /// A value with variables, parsed per response.
    Variable(Template),
}

/// An address or network of set_real_ip_from, allow and deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An address and prefix length (the host bits zero).
    Net(IpAddr, u8),
    /// `unix:`: connections on UNIX-domain sockets.
    Unix,
    /// `all`.
    All,
}

impl Source {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Source::All, _) => true,
            (Source::Unix, _) => false,
            (Source::Net(IpAddr::V4(n), len), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(n)
            }
            (Source::Net(IpAddr::V6(n), len), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(a) & mask == u128::from(n)
            }
            // An IPv4-mapped client matches IPv4 rules, as nginx's access module does.
            (Source::Net(IpAddr::V4(_), _), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            _ => false,
        }
    }

    /// As written: `10.0.0.0/8`, `192.0.2.1`, `unix:`, `all`.
    pub fn as_written(&self) -> String {
        match self {
            Source::All => "all".into(),
            Source::Unix => "unix:".into(),
            Source::Net(a, len) if (a.is_ipv4() && *len == 32) || *len == 128 => a.to_string(),
            Source::Net(a, len) => format!("{a}/{len}"),
        }
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    pub source: Source,
}

/// A directive of the rewrite module, run in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Rewrite(Rewrite),
    Return(Return),
    /// `set $variable value`.
    Set {
        variable: String,
        value: Template,
    },
    Break,
    If(Box<If>),
}

/// `rewrite REGEX REPLACEMENT [FLAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub regex: String,
    /// As written, with a trailing `?` (which drops the request's arguments).
    pub replacement: Template,
    pub flag: Option<RewriteFlag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteFlag {
    Last,
    Break,
    Redirect,
    Permanent,
}

impl RewriteFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            RewriteFlag::Last => "last",
            RewriteFlag::Break => "break",
            RewriteFlag::Redirect => "redirect",
            RewriteFlag::Permanent => "permanent",
        }
    }
}

/// `if (CONDITION) { ... }`: in a location, also a configuration of its own that
/// applies when the condition holds (nginx's "if in location").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct If {
    pub condition: Condition,
    pub steps: Vec<Step>,
    pub proxy_pass: Option<Template>,
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `$var`: true unless empty or "0".
    Variable(String),
    /// `$var = value` and `$var != value`.
    Compare {
        variable: String,
        negate: bool,
        value: Template,
    },
    /// `$var ~ re`, `~*`, `!~`, `!~*`.
    Match {
        variable: String,
        negate: bool,
        case_insensitive: bool,
        regex: String,
    },
    /// `-f`, `-d`, `-e`, `-x` and their `!` forms.
    File {
        negate: bool,
        test: FileTest,
        path: Template,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTest {
    File,
    Dir,
    Exists,
    Executable,
}

impl FileTest {
    pub fn letter(self) -> char {
        match self {
            FileTest::File => 'f',
            FileTest::Dir => 'd',
            FileTest::Exists => 'e',
            FileTest::Executable => 'x',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Http {
    pub settings: Settings,
    pub log_formats: Vec<LogFormat>,
    pub maps: Vec<Map>,
    pub upstreams: Vec<Upstream>,
    pub servers: Vec<Server>,
    /// client_body_temp_path, fastcgi_temp_path, uwsgi_temp_path and scgi_temp_path
    /// anywhere in the block, (directive, directory): created at start as nginx creates
    /// them (proxy_temp_path, which the proxy uses, is among the settings).
    pub temp_paths: Vec<(String, String)>,
    /// limit_req_zone and limit_conn_zone.
    pub limit_zones: Vec<LimitZone>,
    pub split_clients: Vec<SplitClients>,
    pub geos: Vec<Geo>,
}

/// `split_clients STRING $VARIABLE { PERCENT% VALUE; ... * VALUE; }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitClients {
    pub source: Template,
    /// The variable it defines, without `$`.
    pub variable: String,
    /// (hundredths of a percent, 0 for `*`; the value as written).
    pub parts: Vec<(u32, String)>,
}

/// `geo [$ADDRESS] $VARIABLE { ... }`: a value by the client's (or a variable's) address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Geo {
    /// The variable whose value is the address, without `$`; None: the client's.
    pub address: Option<String>,
    pub variable: String,
    pub default: Option<String>,
    /// `ranges`: entries are address ranges (IPv4), not networks.
    pub ranges: bool,
    /// Networks (or ranges) and their values, in order, deletions applied.
    pub entries: Vec<(GeoKey, String)>,
    /// `proxy`: balancers trusted to name the client in X-Forwarded-For.
    pub proxies: Vec<Source>,
    pub proxy_recursive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeoKey {
    Net(IpAddr, u8),
    /// An inclusive IPv4 range.
    Range(std::net::Ipv4Addr, std::net::Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    pub source: Template,
    /// The variable it defines, without `$`.
    pub variable: String,
    pub hostnames: bool,
    pub volatile: bool,
    pub default: Option<Template>,
    pub entries: Vec<(String, Template)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash { key: Template, consistent: bool },
    Random { two: bool, least_conn: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// `host:port` (port 80 when not written), an IP address or a name.
    pub host: String,
    pub port: u16,
    /// Whether the port was written (`server 10.0.0.1;` is port 80 but hashes without it
    /// in `hash ... consistent`).
    pub port_written: bool,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub max_conns: u32,
    pub backup: bool,
    pub down: bool,
}

impl UpstreamServer {
    /// The server as written in the configuration, which is what nginx hashes for
    /// `hash ... consistent`: `host:port` (an IPv6 host keeps its brackets), or the host alone.
    pub fn as_written(&self) -> String {
        if self.port_written {
            format!("{}:{}", self.host, self.port)
        } else {
            self.host.clone()
        }
    }

    pub fn new(host: &str, port: u16) -> UpstreamServer {
        UpstreamServer {
            host: host.to_string(),
            port,
            port_written: true,
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    pub keepalive: Option<u32>,
    pub keepalive_requests: Option<u32>,
    pub keepalive_timeout: Option<Duration>,
    /// `zone NAME [SIZE]`: the balancer's state shared by every worker process.
    pub zone: Option<(String, Option<u64>)>,
}

/// Where a `listen` binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `None` is every address (`listen 80`, `listen *:80`).
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub default_server: bool,
    pub ssl: bool,
    pub http2: bool,
    pub reuseport: bool,
    pub ipv6only: Option<bool>,
    pub backlog: Option<u32>,
    /// Connections begin with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
}

impl Listen {
    pub fn new(addr: Option<IpAddr>, port: u16) -> Listen {
        Listen {
            addr,
            port,
            default_server: false,
            ssl: false,
            http2: false,
            reuseport: false,
            ipv6only: None,
            backlog: None,
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    Exact(String),
    /// `*.example.com`, `www.example.*`, or `.example.com` (both the name and its subdomains).
    Wildcard(String),
    /// `~regex`, stored without the `~`.
    Regex(String),
}

impl ServerName {
    pub fn as_written(&self) -> String {
        match self {
            ServerName::Exact(s) | ServerName::Wildcard(s) => s.clone(),
            ServerName::Regex(r) => format!("~{r}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    pub code: u16,
    pub text: Option<Template>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub listen: Vec<Listen>,
    pub server_name: Vec<ServerName>,
    pub settings: Settings,
    /// The rewrite module's directives at server level (nginx's server rewrite phase).
    pub steps: Vec<Step>,
    pub locations: Vec<Location>,
    /// try_files at server level: for requests no location takes.
    pub try_files: Option<Vec<Template>>,
    /// stub_status at server level: for requests no location takes.
    pub stub_status: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationMatch {
    /// `location /prefix`.
    Prefix(String),
    /// `location = /exact`.
    Exact(String),
    /// `location ^~ /prefix`: a prefix that stops the regex search.
    PrefixNoRegex(String),
    /// `location ~ re` and `location ~* re`.
    Regex {
        pattern: String,
        case_insensitive: bool,
    },
    /// `location @name`: reached only by error_page and try_files.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub matcher: LocationMatch,
    pub proxy_pass: Option<Template>,
    /// The rewrite module's directives (the location's rewrite phase).
    pub steps: Vec<Step>,
    pub settings: Settings,
    pub locations: Vec<Location>,
    /// try_files: files to try in order, then the fallback (a URI, `=CODE` or `@name`).
    pub try_files: Option<Vec<Template>>,
    /// internal: only internal redirects reach this location.
    pub internal: bool,
    /// stub_status: the location answers with the connection counters (when written
    /// after any proxy_pass: nginx's last content handler wins).
    pub stub_status: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_affinity_places_workers_as_nginx() {
        assert_eq!(mask_cpus("0101"), [0, 2]);
        let masks = CpuAffinity::Masks(vec!["01".into(), "10".into()]);
        assert_eq!(masks.cpus(0, 4), Some(vec![0]));
        assert_eq!(masks.cpus(1, 4), Some(vec![1]));
        // Past the list, the last mask.
        assert_eq!(masks.cpus(5, 4), Some(vec![1]));
        let auto = CpuAffinity::Auto(None);
        assert_eq!(auto.cpus(0, 2), Some(vec![0]));
        assert_eq!(auto.cpus(3, 2), Some(vec![1]));
        // auto within a mask: the i-th CPU of it, round again.
        let within = CpuAffinity::Auto(Some("1010".into()));
        assert_eq!(within.cpus(0, 4), Some(vec![1]));
        assert_eq!(within.cpus(1, 4), Some(vec![3]));
        assert_eq!(within.cpus(2, 4), Some(vec![1]));
        // An empty mask leaves the worker to the scheduler.
        assert_eq!(CpuAffinity::Auto(Some("0000".into())).cpus(0, 4), None);
        assert_eq!(CpuAffinity::Masks(vec!["0".into()]).cpus(0, 4), None);
    }
}
