//! Directive trees into the typed model, checked the way `nginx -t` checks them: unknown
//! directives, directives in the wrong context, wrong argument counts, bad values,
//! duplicates and unknown variables are errors with nginx's wording (and our location).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use fulcrum_diag::{Diagnostic, Span};

use crate::model::*;
use crate::syntax::{Directive, Word};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Main,
    Events,
    Http,
    Server,
    Location,
    Upstream,
}

const MAIN: u8 = 1;
const EVENTS: u8 = 2;
const HTTP: u8 = 4;
const SERVER: u8 = 8;
const LOCATION: u8 = 16;
const UPSTREAM: u8 = 32;
const HSL: u8 = HTTP | SERVER | LOCATION;

impl Ctx {
    fn bit(self) -> u8 {
        match self {
            Ctx::Main => MAIN,
            Ctx::Events => EVENTS,
            Ctx::Http => HTTP,
            Ctx::Server => SERVER,
            Ctx::Location => LOCATION,
            Ctx::Upstream => UPSTREAM,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Arity {
    None,
    Take(usize, usize),
    Flag,
    More(usize),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Simple,
    Block,
}

/// What fulcrum does with a directive nginx knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Support {
    /// Read into the model.
    Yes,
    /// Harmless to skip (tuning, static files, compression): a warning.
    Ignored,
    /// Skipping it would change who may see what or where a request goes: an error.
    Refused,
}

struct Spec {
    name: &'static str,
    ctx: u8,
    arity: Arity,
    kind: Kind,
    support: Support,
}

const fn s(name: &'static str, ctx: u8, arity: Arity) -> Spec {
    Spec {
        name,
        ctx,
        arity,
        kind: Kind::Simple,
        support: Support::Yes,
    }
}

const fn b(name: &'static str, ctx: u8, arity: Arity) -> Spec {
    Spec {
        name,
        ctx,
        arity,
        kind: Kind::Block,
        support: Support::Yes,
    }
}

const fn ignored(name: &'static str, ctx: u8, kind: Kind) -> Spec {
    Spec {
        name,
        ctx,
        arity: Arity::More(0),
        kind,
        support: Support::Ignored,
    }
}

const fn refused(name: &'static str, ctx: u8, kind: Kind) -> Spec {
    Spec {
        name,
        ctx,
        arity: Arity::More(0),
        kind,
        support: Support::Refused,
    }
}

use Arity::{Flag, More, Take};
use Kind::{Block, Simple};

static SPECS: &[Spec] = &[
    // main and events
    s("worker_processes", MAIN, Take(1, 1)),
    s("pid", MAIN, Take(1, 1)),
    s("error_log", MAIN | HSL, More(1)),
    b("events", MAIN, Arity::None),
    s("worker_connections", EVENTS, Take(1, 1)),
    s("use", EVENTS, Take(1, 1)),
    s("multi_accept", EVENTS, Flag),
    b("http", MAIN, Arity::None),
    // http
    b("upstream", HTTP, Take(1, 1)),
    b("server", HTTP, Arity::None),
    s("server", UPSTREAM, More(1)),
    b("map", HTTP, Take(2, 2)),
    s("log_format", HTTP, More(2)),
    s("access_log", HSL, More(1)),
    s("client_max_body_size", HSL, Take(1, 1)),
    s("client_body_timeout", HSL, Take(1, 1)),
    s("client_header_timeout", HTTP | SERVER, Take(1, 1)),
    s("client_header_buffer_size", HTTP | SERVER, Take(1, 1)),
    s("large_client_header_buffers", HTTP | SERVER, Take(2, 2)),
    s("underscores_in_headers", HTTP | SERVER, Flag),
    s("ignore_invalid_headers", HTTP | SERVER, Flag),
    s("send_timeout", HSL, Take(1, 1)),
    s("keepalive_timeout", HSL, Take(1, 2)),
    s("keepalive_timeout", UPSTREAM, Take(1, 1)),
    s("keepalive_requests", HSL | UPSTREAM, Take(1, 1)),
    s("ssl_certificate", HTTP | SERVER, Take(1, 1)),
    s("ssl_certificate_key", HTTP | SERVER, Take(1, 1)),
    // server and location
    s("listen", SERVER, More(1)),
    s("server_name", SERVER, More(1)),
    b("location", SERVER | LOCATION, Take(1, 2)),
    s("return", SERVER | LOCATION, Take(1, 2)),
    s("proxy_pass", LOCATION, Take(1, 1)),
    s("proxy_set_header", HSL, Take(2, 2)),
    s("proxy_http_version", HSL, Take(1, 1)),
    s("proxy_connect_timeout", HSL, Take(1, 1)),
    s("proxy_read_timeout", HSL, Take(1, 1)),
    s("proxy_send_timeout", HSL, Take(1, 1)),
    s("proxy_next_upstream", HSL, More(1)),
    s("proxy_next_upstream_tries", HSL, Take(1, 1)),
    s("proxy_next_upstream_timeout", HSL, Take(1, 1)),
    s("proxy_buffering", HSL, Flag),
    s("proxy_buffers", HSL, Take(2, 2)),
    s("proxy_max_temp_file_size", HSL, Take(1, 1)),
    s("proxy_temp_path", HSL, Take(1, 4)),
    s("proxy_redirect", HSL, Take(1, 2)),
    // upstream
    s("least_conn", UPSTREAM, Arity::None),
    s("ip_hash", UPSTREAM, Arity::None),
    s("hash", UPSTREAM, Take(1, 2)),
    s("random", UPSTREAM, Take(0, 2)),
    s("keepalive", UPSTREAM, Take(1, 1)),
    // Known to nginx, harmless to skip.
    ignored("user", MAIN, Simple),
    ignored("worker_rlimit_nofile", MAIN, Simple),
    ignored("worker_cpu_affinity", MAIN, Simple),
    ignored("worker_priority", MAIN, Simple),
    ignored("worker_shutdown_timeout", MAIN, Simple),
    ignored("daemon", MAIN, Simple),
    ignored("master_process", MAIN, Simple),
    ignored("load_module", MAIN, Simple),
    ignored("env", MAIN, Simple),
    ignored("timer_resolution", MAIN, Simple),
    ignored("accept_mutex", EVENTS, Simple),
    ignored("accept_mutex_delay", EVENTS, Simple),
    ignored("sendfile", HSL, Simple),
    ignored("sendfile_max_chunk", HSL, Simple),
    ignored("tcp_nopush", HSL, Simple),
    ignored("tcp_nodelay", HSL, Simple),
    ignored("types_hash_max_size", HSL, Simple),
    ignored("types_hash_bucket_size", HSL, Simple),
    ignored("server_names_hash_bucket_size", HTTP, Simple),
    ignored("server_names_hash_max_size", HTTP, Simple),
    ignored("variables_hash_max_size", HTTP, Simple),
    ignored("variables_hash_bucket_size", HTTP, Simple),
    ignored("map_hash_max_size", HTTP, Simple),
    ignored("map_hash_bucket_size", HTTP, Simple),
    s("server_tokens", HSL, Flag),
    s("default_type", HSL, Take(1, 1)),
    ignored("types", HSL, Block),
    ignored("charset", HSL, Simple),
    ignored("gzip", HSL, Simple),
    ignored("gzip_vary", HSL, Simple),
    ignored("gzip_proxied", HSL, Simple),
    ignored("gzip_comp_level", HSL, Simple),
    ignored("gzip_buffers", HSL, Simple),
    ignored("gzip_http_version", HSL, Simple),
    ignored("gzip_types", HSL, Simple),
    ignored("gzip_min_length", HSL, Simple),
    ignored("gzip_disable", HSL, Simple),
    ignored("ssl_protocols", HTTP | SERVER, Simple),
    ignored("ssl_ciphers", HTTP | SERVER, Simple),
    ignored("ssl_prefer_server_ciphers", HTTP | SERVER, Simple),
    ignored("ssl_session_cache", HTTP | SERVER, Simple),
    ignored("ssl_session_timeout", HTTP | SERVER, Simple),
    ignored("ssl_session_tickets", HTTP | SERVER, Simple),
    ignored("ssl_dhparam", HTTP | SERVER, Simple),
    ignored("ssl_ecdh_curve", HTTP | SERVER, Simple),
    ignored("ssl_stapling", HTTP | SERVER, Simple),
    ignored("ssl_stapling_verify", HTTP | SERVER, Simple),
    ignored("root", HSL, Simple),
    ignored("index", HSL, Simple),
    ignored("autoindex", HSL, Simple),
    ignored("expires", HSL, Simple),
    ignored("add_header", HSL, Simple),
    ignored("log_not_found", HSL, Simple),
    ignored("open_file_cache", HSL, Simple),
    ignored("open_file_cache_valid", HSL, Simple),
    ignored("open_file_cache_min_uses", HSL, Simple),
    ignored("open_file_cache_errors", HSL, Simple),
    ignored("reset_timedout_connection", HSL, Simple),
    ignored("client_body_buffer_size", HSL, Simple),
    ignored("proxy_buffer_size", HSL, Simple),
    ignored("proxy_busy_buffers_size", HSL, Simple),
    ignored("proxy_request_buffering", HSL, Simple),
    ignored("proxy_intercept_errors", HSL, Simple),
    ignored("proxy_hide_header", HSL, Simple),
    ignored("proxy_pass_header", HSL, Simple),
    ignored("proxy_ignore_headers", HSL, Simple),
    ignored("proxy_ssl_server_name", HSL, Simple),
    ignored("proxy_ssl_verify", HSL, Simple),
    ignored("proxy_ssl_name", HSL, Simple),
    ignored("proxy_ssl_protocols", HSL, Simple),
    ignored("resolver", HSL, Simple),
    ignored("resolver_timeout", HSL, Simple),
    ignored("error_page", HSL, Simple),
    ignored("http2", HTTP | SERVER, Simple),
    ignored("stream", MAIN, Block),
    ignored("mail", MAIN, Block),
    ignored("zone", UPSTREAM, Simple),
    ignored("keepalive_time", HSL | UPSTREAM, Simple),
    // Known to nginx; skipping it would open or reroute something.
    refused("allow", HSL, Simple),
    refused("deny", HSL, Simple),
    refused("auth_basic", HSL, Simple),
    refused("auth_basic_user_file", HSL, Simple),
    refused("auth_request", HSL, Simple),
    refused("satisfy", HSL, Simple),
    refused("limit_req", HSL, Simple),
    refused("limit_req_zone", HTTP, Simple),
    refused("limit_conn", HSL, Simple),
    refused("limit_conn_zone", HTTP, Simple),
    refused("limit_except", LOCATION, Block),
    refused("if", SERVER | LOCATION, Block),
    refused("rewrite", SERVER | LOCATION, Simple),
    refused("set", SERVER | LOCATION, Simple),
    refused("try_files", SERVER | LOCATION, Simple),
    refused("alias", LOCATION, Simple),
    refused("internal", LOCATION, Simple),
    refused("real_ip_header", HSL, Simple),
    refused("set_real_ip_from", HSL, Simple),
    refused("proxy_cache", HSL, Simple),
    refused("proxy_cache_path", HTTP, Simple),
    refused("fastcgi_pass", LOCATION, Simple),
    refused("uwsgi_pass", LOCATION, Simple),
    refused("grpc_pass", LOCATION, Simple),
    refused("ssl_client_certificate", HTTP | SERVER, Simple),
    refused("ssl_verify_client", HTTP | SERVER, Simple),
];

/// Variables nginx provides without configuration.
const BUILTIN_VARIABLES: &[&str] = &[
    "args",
    "binary_remote_addr",
    "body_bytes_sent",
    "bytes_sent",
    "connection",
    "connection_requests",
    "content_length",
    "content_type",
    "document_root",
    "document_uri",
    "host",
    "hostname",
    "https",
    "is_args",
    "msec",
    "nginx_version",
    "pid",
    "pipe",
    "proxy_add_x_forwarded_for",
    "proxy_host",
    "proxy_port",
    "query_string",
    "remote_addr",
    "remote_port",
    "remote_user",
    "request",
    "request_body",
    "request_id",
    "request_length",
    "request_method",
    "request_time",
    "request_uri",
    "scheme",
    "server_addr",
    "server_name",
    "server_port",
    "server_protocol",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_server_name",
    "status",
    "time_iso8601",
    "time_local",
    "upstream_addr",
    "upstream_bytes_received",
    "upstream_bytes_sent",
    "upstream_connect_time",
    "upstream_header_time",
    "upstream_response_length",
    "upstream_response_time",
    "upstream_status",
    "uri",
];

const VARIABLE_PREFIXES: &[&str] = &[
    "http_",
    "sent_http_",
    "upstream_http_",
    "cookie_",
    "arg_",
    "upstream_cookie_",
];

fn spec(name: &str, ctx: Ctx) -> Result<&'static Spec, bool> {
    let mut known = false;
    for sp in SPECS {
        if sp.name == name {
            known = true;
            if sp.ctx & ctx.bit() != 0 {
                return Ok(sp);
            }
        }
    }
    Err(known)
}

pub(crate) struct Builder<'a> {
    diags: &'a mut Vec<Diagnostic>,
    /// Variables used, checked once every `map` is known.
    used_vars: Vec<(String, Span)>,
    map_vars: HashSet<String>,
    /// Files named by ssl_certificate(_key), checked by host checks.
    pub files: Vec<(String, Span)>,
    log_format_refs: Vec<(String, Span)>,
    default_servers: Vec<(Option<IpAddr>, u16, Span)>,
}

impl<'a> Builder<'a> {
    pub fn new(diags: &'a mut Vec<Diagnostic>) -> Builder<'a> {
        Builder {
            diags,
            used_vars: Vec::new(),
            map_vars: HashSet::new(),
            files: Vec::new(),
            log_format_refs: Vec::new(),
            default_servers: Vec::new(),
        }
    }

    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, msg));
    }

    /// Checks a directive against the table for this context. `Some` when the caller
    /// should read it into the model.
    fn check(&mut self, d: &Directive, ctx: Ctx) -> bool {
        let name = d.name.text.as_str();
        let sp = match spec(name, ctx) {
            Ok(sp) => sp,
            Err(true) => {
                self.error(
                    d.name.span,
                    format!("\"{name}\" directive is not allowed here"),
                );
                return false;
            }
            Err(false) => {
                self.error(d.name.span, format!("unknown directive \"{name}\""));
                return false;
            }
        };
        match (sp.kind, &d.block) {
            (Kind::Block, None) => {
                self.error(
                    d.name.span,
                    format!("directive \"{name}\" has no opening \"{{\""),
                );
                return false;
            }
            (Kind::Simple, Some(_)) => {
                self.error(
                    d.name.span,
                    format!("directive \"{name}\" is not terminated by \";\""),
                );
                return false;
            }
            _ => {}
        }
        match sp.support {
            Support::Yes => {}
            Support::Ignored => {
                self.diags.push(Diagnostic::warning(
                    d.name.span,
                    format!("\"{name}\" directive is not supported by fulcrum; ignored"),
                ));
                return false;
            }
            Support::Refused => {
                self.diags.push(
                    Diagnostic::error(
                        d.name.span,
                        format!("\"{name}\" directive is not supported by fulcrum"),
                    )
                    .with_help("ignoring it would change which requests are allowed or where they go; remove it or keep this server on nginx"),
                );
                return false;
            }
        }
        let n = d.args.len();
        let ok = match sp.arity {
            Arity::None => n == 0,
            Arity::Take(lo, hi) => (lo..=hi).contains(&n),
            Arity::Flag => n == 1,
            Arity::More(lo) => n >= lo,
        };
        if !ok {
            self.error(
                d.name.span,
                format!("invalid number of arguments in \"{name}\" directive"),
            );
            return false;
        }
        for a in &d.args {
            self.collect_vars(a);
        }
        true
    }

    fn collect_vars(&mut self, w: &Word) {
        let t = Template(w.text.clone());
        for p in t.parts() {
            if let Part::Variable(v) = p {
                self.used_vars.push((v.to_string(), w.span));
            }
        }
    }

    /// Named captures of a regex (`(?<name>...)`, `(?P<name>...)`) become variables, as in
    /// nginx.
    fn define_captures(&mut self, regex: &str) {
        for (i, _) in regex.match_indices("(?") {
            let rest = &regex[i + 2..];
            let rest = rest.strip_prefix('P').unwrap_or(rest);
            let Some(rest) = rest.strip_prefix('<').or_else(|| rest.strip_prefix('\'')) else {
                continue;
            };
            let end = rest.find(['>', '\'']).unwrap_or(0);
            if end > 0 {
                self.map_vars.insert(rest[..end].to_string());
            }
        }
    }

    fn dup<T>(&mut self, slot: &Option<T>, d: &Directive) -> bool {
        if slot.is_some() {
            self.error(
                d.name.span,
                format!("\"{}\" directive is duplicate", d.name.text),
            );
            true
        } else {
            false
        }
    }

    fn flag(&mut self, d: &Directive) -> Option<bool> {
        match d.args[0].text.as_str() {
            "on" => Some(true),
            "off" => Some(false),
            v => {
                self.error(
                    d.args[0].span,
                    format!(
                        "invalid value \"{v}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                        d.name.text
                    ),
                );
                None
            }
        }
    }

    /// A time argument of `d`, with nginx's message when it is not one.
    fn time(&mut self, d: &Directive, w: &Word) -> Option<Duration> {
        let t = parse_time(&w.text);
        if t.is_none() {
            self.error(
                w.span,
                format!("\"{}\" directive invalid value", d.name.text),
            );
        }
        t
    }

    fn size(&mut self, w: &Word) -> Option<u64> {
        let t = parse_size(&w.text);
        if t.is_none() {
            self.error(w.span, format!("invalid size value \"{}\"", w.text));
        }
        t
    }

    fn number(&mut self, w: &Word) -> Option<u32> {
        match w.text.parse::<u32>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(w.span, format!("invalid number \"{}\"", w.text));
                None
            }
        }
    }

    // === main ===

    pub fn config(&mut self, ds: &[Directive]) -> NginxConfig {
        let mut cfg = NginxConfig::default();
        let mut seen_events = false;
        let mut wp_seen = false;
        for d in ds {
            if !self.check(d, Ctx::Main) {
                continue;
            }
            match d.name.text.as_str() {
                "worker_processes" => {
                    if wp_seen {
                        self.error(d.name.span, "\"worker_processes\" directive is duplicate");
                    }
                    wp_seen = true;
                    let a = &d.args[0];
                    if a.text == "auto" {
                        cfg.worker_processes = WorkerProcesses::Auto;
                    } else {
                        match a.text.parse::<u32>() {
                            Ok(n) if n > 0 => cfg.worker_processes = WorkerProcesses::Count(n),
                            _ => self.error(
                                a.span,
                                format!(
                                    "invalid value \"{}\" in \"worker_processes\" directive",
                                    a.text
                                ),
                            ),
                        }
                    }
                }
                "pid" => cfg.pid = Some(d.args[0].text.clone()),
                "error_log" => cfg.error_log = self.error_log(d),
                "events" => {
                    if seen_events {
                        self.error(d.name.span, "\"events\" directive is duplicate");
                    }
                    seen_events = true;
                    for e in d.block.as_deref().unwrap_or_default() {
                        if !self.check(e, Ctx::Events) {
                            continue;
                        }
                        match e.name.text.as_str() {
                            "worker_connections" => {
                                if let Some(n) = self.number(&e.args[0]) {
                                    cfg.worker_connections = n;
                                }
                            }
                            "use" if e.args[0].text != "epoll" => {
                                self.error(
                                    e.args[0].span,
                                    format!(
                                        "invalid event type \"{}\": fulcrum uses epoll",
                                        e.args[0].text
                                    ),
                                );
                            }
                            "multi_accept" => {
                                self.flag(e);
                            }
                            _ => {}
                        }
                    }
                }
                "http" => {
                    if cfg.http.is_some() {
                        self.error(d.name.span, "\"http\" directive is duplicate");
                        continue;
                    }
                    cfg.http = Some(self.http(d.block.as_deref().unwrap_or_default()));
                }
                _ => {}
            }
        }
        if !seen_events {
            self.diags.push(Diagnostic::error(
                None,
                "no \"events\" section in configuration",
            ));
        }
        self.check_variables();
        cfg
    }

    fn check_variables(&mut self) {
        let used = std::mem::take(&mut self.used_vars);
        for (v, span) in used {
            let known = BUILTIN_VARIABLES.contains(&v.as_str())
                || VARIABLE_PREFIXES
                    .iter()
                    .any(|p| v.starts_with(p) && v.len() > p.len())
                || self.map_vars.contains(&v)
                || v.bytes().all(|b| b.is_ascii_digit());
            if !known {
                self.error(span, format!("unknown \"{v}\" variable"));
            }
        }
    }

    fn error_log(&mut self, d: &Directive) -> Option<ErrorLog> {
        if d.args.len() > 2 {
            self.error(
                d.args[2].span,
                format!("invalid parameter \"{}\"", d.args[2].text),
            );
        }
        let level = d.args.get(1).map(|l| l.text.clone());
        if let Some(l) = &level {
            const LEVELS: &[&str] = &[
                "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
            ];
            if !LEVELS.contains(&l.as_str()) {
                self.error(d.args[1].span, format!("invalid log level \"{l}\""));
                return None;
            }
        }
        Some(ErrorLog {
            path: d.args[0].text.clone(),
            level,
        })
    }

    // === http ===

    fn http(&mut self, ds: &[Directive]) -> Http {
        let mut http = Http::default();
        // Maps define variables for the whole http block, wherever they stand.
        for d in ds {
            if d.name.text == "map" && d.args.len() == 2 {
                if let Some(v) = d.args[1].text.strip_prefix('$') {
                    self.map_vars.insert(v.to_string());
                }
            }
        }
        let mut upstream_names = HashSet::new();
        for d in ds {
            if !self.check(d, Ctx::Http) {
                continue;
            }
            if self.setting(d, &mut http.settings, Ctx::Http) {
                continue;
            }
            match d.name.text.as_str() {
                "log_format" => {
                    let name = d.args[0].text.clone();
                    if http.log_formats.iter().any(|f| f.name == name) || name == "combined" {
                        self.error(
                            d.args[0].span,
                            format!("duplicate \"log_format\" name \"{name}\""),
                        );
                        continue;
                    }
                    let mut rest = &d.args[1..];
                    let mut escape = None;
                    if let Some(e) = rest.first().and_then(|w| w.text.strip_prefix("escape=")) {
                        if !matches!(e, "default" | "json" | "none") {
                            self.error(
                                rest[0].span,
                                format!("unknown log format escaping \"{e}\""),
                            );
                        }
                        escape = Some(e.to_string());
                        rest = &rest[1..];
                    }
                    let format = rest.iter().map(|w| w.text.as_str()).collect::<String>();
                    http.log_formats.push(LogFormat {
                        name,
                        escape,
                        format: Template(format),
                    });
                }
                "map" => {
                    if let Some(m) = self.map(d) {
                        http.maps.push(m);
                    }
                }
                "upstream" => {
                    let name = d.args[0].text.clone();
                    if !upstream_names.insert(name.clone()) {
                        self.error(d.args[0].span, format!("duplicate upstream \"{name}\""));
                        continue;
                    }
                    if let Some(u) = self.upstream(d) {
                        http.upstreams.push(u);
                    }
                }
                "server" => {
                    let s = self.server(d.block.as_deref().unwrap_or_default());
                    http.servers.push(s);
                }
                _ => {}
            }
        }
        // access_log FORMAT must name a defined log_format (or nginx's built-in combined).
        let refs = std::mem::take(&mut self.log_format_refs);
        for (name, span) in refs {
            if name != "combined" && !http.log_formats.iter().any(|f| f.name == name) {
                self.error(span, format!("unknown log format \"{name}\""));
            }
        }
        http
    }

    fn map(&mut self, d: &Directive) -> Option<Map> {
        let Some(var) = d.args[1].text.strip_prefix('$') else {
            self.error(
                d.args[1].span,
                format!("invalid variable name \"{}\"", d.args[1].text),
            );
            return None;
        };
        let mut m = Map {
            source: Template(d.args[0].text.clone()),
            variable: var.to_string(),
            hostnames: false,
            volatile: false,
            default: None,
            entries: Vec::new(),
        };
        for e in d.block.as_deref().unwrap_or_default() {
            if e.block.is_some() {
                self.error(e.name.span, "unexpected \"{\"");
                continue;
            }
            for a in &e.args {
                self.collect_vars(a);
            }
            match (e.name.text.as_str(), e.args.len()) {
                ("hostnames", 0) if !e.name.quoted => m.hostnames = true,
                ("volatile", 0) if !e.name.quoted => m.volatile = true,
                ("default", 1) if !e.name.quoted => {
                    m.default = Some(Template(e.args[0].text.clone()))
                }
                (key, 1) => {
                    let key = key.strip_prefix('\\').unwrap_or(key);
                    if m.entries.iter().any(|(k, _)| k == key) {
                        self.error(e.name.span, format!("conflicting parameter \"{key}\""));
                        continue;
                    }
                    m.entries
                        .push((key.to_string(), Template(e.args[0].text.clone())));
                }
                _ => self.error(e.name.span, "invalid number of the map parameters"),
            }
        }
        Some(m)
    }

    /// Settings inherited through http, server and location. True when `d` was one.
    fn setting(&mut self, d: &Directive, st: &mut Settings, ctx: Ctx) -> bool {
        let a0 = &d.args.first();
        match d.name.text.as_str() {
            "proxy_set_header" => {
                let list = st.proxy_set_header.get_or_insert_with(Vec::new);
                list.push((d.args[0].text.clone(), Template(d.args[1].text.clone())));
            }
            "proxy_http_version" => {
                if self.dup(&st.proxy_http_version, d) {
                    return true;
                }
                st.proxy_http_version = match d.args[0].text.as_str() {
                    "1.0" => Some(HttpVersion::V1_0),
                    "1.1" => Some(HttpVersion::V1_1),
                    v => {
                        self.error(d.args[0].span, format!("invalid value \"{v}\" in \"proxy_http_version\" directive, it must be \"1.0\" or \"1.1\""));
                        None
                    }
                };
            }
            "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "proxy_send_timeout"
            | "proxy_next_upstream_timeout"
            | "client_body_timeout"
            | "send_timeout"
            | "client_header_timeout" => {
                let slot = match d.name.text.as_str() {
                    "proxy_connect_timeout" => &mut st.proxy_connect_timeout,
                    "proxy_read_timeout" => &mut st.proxy_read_timeout,
                    "proxy_send_timeout" => &mut st.proxy_send_timeout,
                    "proxy_next_upstream_timeout" => &mut st.proxy_next_upstream_timeout,
                    "client_body_timeout" => &mut st.client_body_timeout,
                    "send_timeout" => &mut st.send_timeout,
                    _ => &mut st.client_header_timeout,
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.time(d, &d.args[0]);
            }
            "proxy_next_upstream" => {
                if self.dup(&st.proxy_next_upstream, d) {
                    return true;
                }
                let mut nu = NextUpstream::default();
                let mut off = false;
                for a in &d.args {
                    if a.text == "off" {
                        off = true;
                    } else if !nu.set(&a.text) {
                        self.error(a.span, format!("invalid value \"{}\"", a.text));
                    }
                }
                if off && d.args.len() > 1 {
                    self.error(
                        d.args[0].span,
                        "\"off\" cannot be combined with other values in \"proxy_next_upstream\"",
                    );
                }
                st.proxy_next_upstream = Some(if off { NextUpstream::default() } else { nu });
            }
            "proxy_next_upstream_tries" => {
                if self.dup(&st.proxy_next_upstream_tries, d) {
                    return true;
                }
                st.proxy_next_upstream_tries = a0.and_then(|w| self.number(w));
            }
            "proxy_buffering"
            | "server_tokens"
            | "underscores_in_headers"
            | "ignore_invalid_headers" => {
                let slot = match d.name.text.as_str() {
                    "proxy_buffering" => &mut st.proxy_buffering,
                    "server_tokens" => &mut st.server_tokens,
                    "underscores_in_headers" => &mut st.underscores_in_headers,
                    _ => &mut st.ignore_invalid_headers,
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            "default_type" => {
                if self.dup(&st.default_type, d) {
                    return true;
                }
                st.default_type = Some(d.args[0].text.clone());
            }
            "proxy_redirect" => {
                if d.args[0].text == "default" && ctx != Ctx::Location {
                    self.error(d.name.span, "\"proxy_redirect default\" should be placed after the \"proxy_pass\" directive");
                    return true;
                }
                let r = match (d.args[0].text.as_str(), d.args.len()) {
                    ("default", 1) => ProxyRedirect::Default,
                    ("off", 1) => ProxyRedirect::Off,
                    (_, 2) => ProxyRedirect::Replace {
                        from: Template(d.args[0].text.clone()),
                        to: Template(d.args[1].text.clone()),
                    },
                    _ => {
                        self.error(
                            d.name.span,
                            "invalid number of arguments in \"proxy_redirect\" directive",
                        );
                        return true;
                    }
                };
                st.proxy_redirect.get_or_insert_with(Vec::new).push(r);
            }
            "access_log" => {
                let entry = if d.args[0].text == "off" {
                    if d.args.len() > 1 {
                        self.error(
                            d.args[1].span,
                            format!("invalid parameter \"{}\"", d.args[1].text),
                        );
                    }
                    AccessLog::Off
                } else {
                    for extra in d.args.iter().skip(2) {
                        if !(extra.text.starts_with("buffer=")
                            || extra.text.starts_with("flush=")
                            || extra.text.starts_with("gzip")
                            || extra.text.starts_with("if="))
                        {
                            self.error(extra.span, format!("invalid parameter \"{}\"", extra.text));
                        }
                    }
                    if let Some(f) = d.args.get(1) {
                        self.log_format_refs.push((f.text.clone(), f.span));
                    }
                    AccessLog::File {
                        path: d.args[0].text.clone(),
                        format: d.args.get(1).map(|w| w.text.clone()),
                    }
                };
                st.access_log.get_or_insert_with(Vec::new).push(entry);
            }
            "proxy_buffers" => {
                if self.dup(&st.proxy_buffers, d) {
                    return true;
                }
                if let (Some(n), Some(sz)) = (self.number(&d.args[0]), self.size(&d.args[1])) {
                    if n == 0 || sz == 0 {
                        self.error(
                            d.name.span,
                            "invalid value in \"proxy_buffers\"".to_string(),
                        );
                    } else {
                        st.proxy_buffers = Some((n, sz));
                    }
                }
            }
            "proxy_max_temp_file_size" => {
                if self.dup(&st.proxy_max_temp_file_size, d) {
                    return true;
                }
                st.proxy_max_temp_file_size = self.size(&d.args[0]);
            }
            "proxy_temp_path" => {
                if self.dup(&st.proxy_temp_path, d) {
                    return true;
                }
                st.proxy_temp_path = Some(d.args[0].text.clone());
            }
            "error_log" => {
                if self.dup(&st.error_log, d) {
                    return true;
                }
                st.error_log = self.error_log(d);
            }
            "client_max_body_size" | "client_header_buffer_size" => {
                let slot = if d.name.text == "client_max_body_size" {
                    &mut st.client_max_body_size
                } else {
                    &mut st.client_header_buffer_size
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.size(&d.args[0]);
            }
            "large_client_header_buffers" => {
                if self.dup(&st.large_client_header_buffers, d) {
                    return true;
                }
                if let (Some(n), Some(sz)) = (self.number(&d.args[0]), self.size(&d.args[1])) {
                    st.large_client_header_buffers = Some((n, sz));
                }
            }
            "keepalive_timeout" if ctx != Ctx::Upstream => {
                if self.dup(&st.keepalive_timeout, d) {
                    return true;
                }
                let t = self.time(d, &d.args[0]);
                let header = d.args.get(1).and_then(|w| self.time(d, w));
                st.keepalive_timeout = t.map(|t| (t, header));
            }
            "keepalive_requests" if ctx != Ctx::Upstream => {
                if self.dup(&st.keepalive_requests, d) {
                    return true;
                }
                st.keepalive_requests = self.number(&d.args[0]);
            }
            "ssl_certificate" | "ssl_certificate_key" => {
                let slot = if d.name.text == "ssl_certificate" {
                    &mut st.ssl_certificate
                } else {
                    &mut st.ssl_certificate_key
                };
                *slot = Some(d.args[0].text.clone());
                self.files.push((d.args[0].text.clone(), d.args[0].span));
            }
            _ => return false,
        }
        true
    }

    // === upstream ===

    fn upstream(&mut self, d: &Directive) -> Option<Upstream> {
        let mut u = Upstream {
            name: d.args[0].text.clone(),
            servers: Vec::new(),
            balance: Balance::RoundRobin,
            keepalive: None,
            keepalive_requests: None,
            keepalive_timeout: None,
        };
        let mut balance_span: Option<Span> = None;
        let mut backup_span: Option<Span> = None;
        for e in d.block.as_deref().unwrap_or_default() {
            if !self.check(e, Ctx::Upstream) {
                continue;
            }
            let method =
                |b: &mut Builder<'_>, bal: Balance, u: &mut Upstream, span: &mut Option<Span>| {
                    if span.is_some() {
                        b.error(e.name.span, "load balancing method redefined");
                    }
                    *span = Some(e.name.span);
                    u.balance = bal;
                };
            match e.name.text.as_str() {
                "server" => {
                    if let Some(s) = self.upstream_server(e) {
                        if s.backup && backup_span.is_none() {
                            backup_span = Some(e.name.span);
                        }
                        u.servers.push(s);
                    }
                }
                "least_conn" => method(self, Balance::LeastConn, &mut u, &mut balance_span),
                "ip_hash" => method(self, Balance::IpHash, &mut u, &mut balance_span),
                "hash" => {
                    let consistent = match e.args.get(1) {
                        None => false,
                        Some(w) if w.text == "consistent" => true,
                        Some(w) => {
                            self.error(w.span, format!("invalid parameter \"{}\"", w.text));
                            false
                        }
                    };
                    let bal = Balance::Hash {
                        key: Template(e.args[0].text.clone()),
                        consistent,
                    };
                    method(self, bal, &mut u, &mut balance_span);
                }
                "random" => {
                    let words: Vec<&str> = e.args.iter().map(|w| w.text.as_str()).collect();
                    let bal = match words.as_slice() {
                        [] => Some(Balance::Random {
                            two: false,
                            least_conn: false,
                        }),
                        ["two"] => Some(Balance::Random {
                            two: true,
                            least_conn: false,
                        }),
                        ["two", "least_conn"] => Some(Balance::Random {
                            two: true,
                            least_conn: true,
                        }),
                        _ => {
                            let bad = e
                                .args
                                .iter()
                                .find(|w| w.text != "two")
                                .unwrap_or(&e.args[0]);
                            self.error(bad.span, format!("invalid parameter \"{}\"", bad.text));
                            None
                        }
                    };
                    if let Some(bal) = bal {
                        method(self, bal, &mut u, &mut balance_span);
                    }
                }
                "keepalive" => match e.args[0].text.parse::<u32>() {
                    Ok(n) if n > 0 => u.keepalive = Some(n),
                    _ => self.error(
                        e.args[0].span,
                        format!(
                            "invalid value \"{}\" in \"keepalive\" directive",
                            e.args[0].text
                        ),
                    ),
                },
                "keepalive_requests" => u.keepalive_requests = self.number(&e.args[0]),
                "keepalive_timeout" => u.keepalive_timeout = self.time(e, &e.args[0]),
                _ => {}
            }
        }
        if let (Some(span), true) = (
            backup_span,
            matches!(
                u.balance,
                Balance::IpHash | Balance::Hash { .. } | Balance::Random { .. }
            ),
        ) {
            self.error(
                span,
                "balancing method does not support parameter \"backup\"",
            );
        }
        if u.servers.is_empty() {
            self.error(
                d.name.span,
                format!("no servers are inside upstream \"{}\"", u.name),
            );
            return None;
        }
        Some(u)
    }

    fn upstream_server(&mut self, e: &Directive) -> Option<UpstreamServer> {
        let addr = &e.args[0];
        let (host, port) = match split_host_port(&addr.text) {
            Some(hp) => hp,
            None => {
                self.error(
                    addr.span,
                    format!("invalid host in upstream \"{}\"", addr.text),
                );
                return None;
            }
        };
        let mut s = UpstreamServer::new(&host, port.unwrap_or(80));
        s.port_written = port.is_some();
        for p in &e.args[1..] {
            let (key, value) = p.text.split_once('=').unwrap_or((p.text.as_str(), ""));
            let bad =
                |b: &mut Builder<'_>| b.error(p.span, format!("invalid parameter \"{}\"", p.text));
            match key {
                "weight" => match value.parse::<u32>() {
                    Ok(w) if w > 0 => s.weight = w,
                    _ => bad(self),
                },
                "max_fails" => match value.parse::<u32>() {
                    Ok(v) => s.max_fails = v,
                    _ => bad(self),
                },
                "max_conns" => match value.parse::<u32>() {
                    Ok(v) => s.max_conns = v,
                    _ => bad(self),
                },
                "fail_timeout" => match parse_time(value).filter(|_| !value.contains("ms")) {
                    Some(t) => s.fail_timeout = t,
                    None => bad(self),
                },
                "backup" if value.is_empty() && !p.text.contains('=') => s.backup = true,
                "down" if value.is_empty() && !p.text.contains('=') => s.down = true,
                _ => bad(self),
            }
        }
        Some(s)
    }

    // === server and location ===

    fn server(&mut self, ds: &[Directive]) -> Server {
        let mut srv = Server {
            listen: Vec::new(),
            server_name: Vec::new(),
            settings: Settings::default(),
            ret: None,
            locations: Vec::new(),
        };
        let mut seen = HashSet::new();
        for d in ds {
            if !self.check(d, Ctx::Server) {
                continue;
            }
            if self.setting(d, &mut srv.settings, Ctx::Server) {
                continue;
            }
            match d.name.text.as_str() {
                "listen" => {
                    if let Some(l) = self.listen(d) {
                        if l.default_server {
                            let earlier = self
                                .default_servers
                                .iter()
                                .any(|(a, p, _)| *a == l.addr && *p == l.port);
                            if earlier {
                                let addr = match l.addr {
                                    None => "0.0.0.0".to_string(),
                                    Some(IpAddr::V6(a)) => format!("[{a}]"),
                                    Some(a) => a.to_string(),
                                };
                                self.error(
                                    d.args[0].span,
                                    format!("a duplicate default server for {addr}:{}", l.port),
                                );
                            }
                            self.default_servers.push((l.addr, l.port, d.args[0].span));
                        }
                        srv.listen.push(l);
                    }
                }
                "server_name" => {
                    for a in &d.args {
                        let name = server_name(&a.text);
                        if let ServerName::Regex(r) = &name {
                            self.define_captures(r);
                        }
                        srv.server_name.push(name);
                    }
                }
                "return" if srv.ret.is_none() => srv.ret = self.ret(d),
                "location" => {
                    if let Some(l) = self.location(d) {
                        self.note_location(&mut seen, &l, d);
                        srv.locations.push(l);
                    }
                }
                _ => {}
            }
        }
        if srv.listen.is_empty() {
            // nginx listens on *:80 (as root) when a server has no listen.
            srv.listen.push(Listen::new(None, 80));
        }
        srv
    }

    /// Reports a second prefix or exact location with the same path, as nginx does.
    fn note_location(&mut self, seen: &mut HashSet<String>, l: &Location, d: &Directive) {
        let key = match &l.matcher {
            LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) => format!("p{p}"),
            LocationMatch::Exact(p) => format!("e{p}"),
            LocationMatch::Regex { .. } => return,
        };
        if !seen.insert(key) {
            let span = d.args.last().map_or(d.name.span, |w| w.span);
            let text = d.args.last().map_or("", |w| w.text.as_str());
            self.error(span, format!("duplicate location \"{text}\""));
        }
    }

    fn listen(&mut self, d: &Directive) -> Option<Listen> {
        let a = &d.args[0];
        if a.text.starts_with("unix:") {
            self.error(
                a.span,
                "listening on unix sockets is not supported by fulcrum",
            );
            return None;
        }
        let (addr, port) = match parse_listen_addr(&a.text) {
            Some(v) => v,
            None => {
                self.error(
                    a.span,
                    format!("invalid host in \"{}\" of the \"listen\" directive", a.text),
                );
                return None;
            }
        };
        let mut l = Listen::new(addr, port);
        for p in &d.args[1..] {
            match p.text.as_str() {
                "default_server" | "default" => l.default_server = true,
                "ssl" => l.ssl = true,
                "http2" => l.http2 = true,
                "reuseport" => l.reuseport = true,
                "ipv6only=on" => l.ipv6only = Some(true),
                "ipv6only=off" => l.ipv6only = Some(false),
                t if t.starts_with("backlog=") => match t["backlog=".len()..].parse::<u32>() {
                    Ok(n) => l.backlog = Some(n),
                    Err(_) => self.error(
                        p.span,
                        format!("invalid backlog \"{}\"", &t["backlog=".len()..]),
                    ),
                },
                "deferred" | "bind" | "proxy_protocol" | "fastopen" | "so_keepalive=on"
                | "so_keepalive=off" => {
                    self.diags.push(Diagnostic::warning(
                        p.span,
                        format!(
                            "listen parameter \"{}\" is not supported by fulcrum; ignored",
                            p.text
                        ),
                    ));
                }
                _ => self.error(p.span, format!("invalid parameter \"{}\"", p.text)),
            }
        }
        Some(l)
    }

    fn ret(&mut self, d: &Directive) -> Option<Return> {
        let first = &d.args[0];
        if d.args.len() == 1 && !first.text.bytes().all(|b| b.is_ascii_digit()) {
            // `return URL` is a 302.
            let t = &first.text;
            if !(t.starts_with("http://") || t.starts_with("https://") || t.starts_with('$')) {
                self.error(first.span, format!("invalid return code \"{t}\""));
                return None;
            }
            return Some(Return {
                code: 302,
                text: Some(Template(t.clone())),
            });
        }
        match first.text.parse::<u16>() {
            Ok(code) if code <= 999 => Some(Return {
                code,
                text: d.args.get(1).map(|w| Template(w.text.clone())),
            }),
            _ => {
                self.error(
                    first.span,
                    format!("invalid return code \"{}\"", first.text),
                );
                None
            }
        }
    }

    fn location(&mut self, d: &Directive) -> Option<Location> {
        let matcher = match d.args.len() {
            1 => {
                let t = &d.args[0].text;
                // `location =/x` and `location ~re` glued forms, as nginx accepts.
                if let Some(rest) = t.strip_prefix("^~").filter(|r| !r.is_empty()) {
                    LocationMatch::PrefixNoRegex(rest.to_string())
                } else if let Some(rest) = t.strip_prefix("~*").filter(|r| !r.is_empty()) {
                    LocationMatch::Regex {
                        pattern: rest.to_string(),
                        case_insensitive: true,
                    }
                } else if let Some(rest) = t.strip_prefix('~').filter(|r| !r.is_empty()) {
                    LocationMatch::Regex {
                        pattern: rest.to_string(),
                        case_insensitive: false,
                    }
                } else if let Some(rest) = t.strip_prefix('=').filter(|r| !r.is_empty()) {
                    LocationMatch::Exact(rest.to_string())
                } else if t.starts_with('@') {
                    self.error(
                        d.args[0].span,
                        "named locations are not supported by fulcrum",
                    );
                    return None;
                } else {
                    LocationMatch::Prefix(t.clone())
                }
            }
            _ => {
                let (m, p) = (&d.args[0].text, d.args[1].text.clone());
                match m.as_str() {
                    "=" => LocationMatch::Exact(p),
                    "^~" => LocationMatch::PrefixNoRegex(p),
                    "~" => LocationMatch::Regex {
                        pattern: p,
                        case_insensitive: false,
                    },
                    "~*" => LocationMatch::Regex {
                        pattern: p,
                        case_insensitive: true,
                    },
                    other => {
                        self.error(
                            d.args[0].span,
                            format!("invalid location modifier \"{other}\""),
                        );
                        return None;
                    }
                }
            }
        };
        if let LocationMatch::Regex { pattern, .. } = &matcher {
            self.define_captures(pattern);
        }
        let exact = matches!(matcher, LocationMatch::Exact(_));
        let mut loc = Location {
            matcher,
            proxy_pass: None,
            ret: None,
            settings: Settings::default(),
            locations: Vec::new(),
        };
        let mut seen = HashSet::new();
        for e in d.block.as_deref().unwrap_or_default() {
            if !self.check(e, Ctx::Location) {
                continue;
            }
            if e.name.text == "proxy_redirect"
                && e.args.first().is_some_and(|a| a.text == "default")
                && loc.proxy_pass.is_none()
            {
                self.error(e.name.span, "\"proxy_redirect default\" should be placed after the \"proxy_pass\" directive");
                continue;
            }
            if self.setting(e, &mut loc.settings, Ctx::Location) {
                continue;
            }
            match e.name.text.as_str() {
                "proxy_pass" => {
                    if self.dup(&loc.proxy_pass, e) {
                        continue;
                    }
                    let t = &e.args[0].text;
                    if !(t.starts_with("http://") || t.starts_with("https://")) {
                        self.error(e.args[0].span, "invalid URL prefix");
                        continue;
                    }
                    if matches!(loc.matcher, LocationMatch::Regex { .. })
                        && !Template(t.clone()).has_variables()
                        && proxy_uri(t).is_some()
                    {
                        self.error(e.args[0].span, "\"proxy_pass\" cannot have URI part in location given by regular expression");
                        continue;
                    }
                    loc.proxy_pass = Some(Template(t.clone()));
                }
                "return" if loc.ret.is_none() => loc.ret = self.ret(e),
                "location" => {
                    if exact {
                        self.error(e.name.span, "location is inside the exact location; nested locations are not allowed there");
                        continue;
                    }
                    if let Some(l) = self.location(e) {
                        self.note_location(&mut seen, &l, e);
                        loc.locations.push(l);
                    }
                }
                _ => {}
            }
        }
        Some(loc)
    }
}

/// The URI part of a `proxy_pass` URL: what follows `scheme://host[:port]`, if anything.
pub fn proxy_uri(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.find('/').map(|i| &rest[i..])
}

fn server_name(text: &str) -> ServerName {
    if let Some(r) = text.strip_prefix('~') {
        ServerName::Regex(r.to_string())
    } else if text.starts_with('*') || text.ends_with('*') || text.starts_with('.') {
        ServerName::Wildcard(text.to_string())
    } else {
        ServerName::Exact(text.to_string())
    }
}

/// `host[:port]`, `[v6]:port`, `v4`, or a bare port.
pub fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (text, None),
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some((host.to_string(), port))
}

fn parse_listen_addr(text: &str) -> Option<(Option<IpAddr>, u16)> {
    if let Ok(port) = text.parse::<u16>() {
        return Some((None, port));
    }
    let (host, port) = split_host_port(text)?;
    let port = port.unwrap_or(80);
    let addr = match host.as_str() {
        "*" => None,
        "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
        h => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = h.parse().ok()?;
            if ip.is_unspecified() && ip.is_ipv4() {
                None
            } else {
                Some(ip)
            }
        }
    };
    Some((addr, port))
}

/// nginx time: `30`, `30s`, `500ms`, `1m30s`, `1h`, `1d`, `1w`, `1M`, `1y`.
pub fn parse_time(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    let mut num: Option<u64> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let n = num.take()?;
        let unit_ms: u64 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            'M' => 30 * 86_400_000,
            'y' => 365 * 86_400_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    if let Some(n) = num {
        total_ms = total_ms.checked_add(n.checked_mul(1000)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// nginx size: `1024`, `8k`, `1m`, `1g` (either case).
pub fn parse_size(text: &str) -> Option<u64> {
    let (num, mult) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1024),
        'm' | 'M' => (&text[..text.len() - 1], 1024 * 1024),
        'g' | 'G' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(parse_time("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_time("s"), None);
        assert_eq!(parse_time("5x"), None);
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("8K"), Some(8192));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("k"), None);
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("10.1.10.66:8080"),
            Some(("10.1.10.66".into(), Some(8080)))
        );
        assert_eq!(split_host_port("backend"), Some(("backend".into(), None)));
        assert_eq!(
            split_host_port("[::1]:80"),
            Some(("[::1]".into(), Some(80)))
        );
        assert_eq!(
            parse_listen_addr("[::]:443"),
            Some((Some("::".parse().unwrap()), 443))
        );
        assert_eq!(parse_listen_addr("*:80"), Some((None, 80)));
        assert_eq!(parse_listen_addr("8080"), Some((None, 8080)));
        assert_eq!(proxy_uri("http://up"), None);
        assert_eq!(proxy_uri("http://up/api/"), Some("/api/"));
    }

    #[test]
    fn template_parts() {
        let t = Template::new("a$host-${http_x}b$1");
        assert_eq!(
            t.parts(),
            vec![
                Part::Literal("a"),
                Part::Variable("host"),
                Part::Literal("-"),
                Part::Variable("http_x"),
                Part::Literal("b"),
                Part::Variable("1"),
            ]
        );
    }
}
