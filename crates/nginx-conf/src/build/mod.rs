//! Directive trees into the typed model, checked the way `nginx -t` checks them: unknown
//! directives, directives in the wrong context, wrong argument counts, bad values,
//! duplicates and unknown variables are errors with nginx's wording (and our location).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use fulcrum_diag::{Diagnostic, Span};

use crate::model::*;
use crate::syntax::{Directive, Word};

mod directives;
mod gzip;
mod http;
mod limit;
mod proxy;
mod rewrite;
mod variables;
pub use rewrite::parse_expires;
mod server;
mod top;
mod upstream;

use directives::{BUILTIN_VARIABLES, SPECS, VARIABLE_PREFIXES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Main,
    Events,
    Http,
    Server,
    Location,
    Upstream,
    /// Inside `if` in a server block.
    ServerIf,
    /// Inside `if` in a location.
    LocationIf,
}

const MAIN: u8 = 1;
const EVENTS: u8 = 2;
const HTTP: u8 = 4;
const SERVER: u8 = 8;
const LOCATION: u8 = 16;
const UPSTREAM: u8 = 32;
const SIF: u8 = 64;
const LIF: u8 = 128;
const HSL: u8 = HTTP | SERVER | LOCATION;
/// Where the rewrite module's directives go.
const REWRITE: u8 = SERVER | LOCATION | SIF | LIF;

impl Ctx {
    fn bit(self) -> u8 {
        match self {
            Ctx::Main => MAIN,
            Ctx::Events => EVENTS,
            Ctx::Http => HTTP,
            Ctx::Server => SERVER,
            Ctx::Location => LOCATION,
            Ctx::Upstream => UPSTREAM,
            Ctx::ServerIf => SIF,
            Ctx::LocationIf => LIF,
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
    /// Directories of *_temp_path directives but proxy_temp_path: (directive, path).
    temp_paths: Vec<(String, String)>,
    /// Zones named by limit_req (true) and limit_conn, checked once the http block is read.
    limit_zone_refs: Vec<(String, bool, Span)>,
    /// Where each upstream's `zone` directive is (for the checks made once all are read).
    upstream_spans: std::collections::HashMap<String, Span>,
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
            temp_paths: Vec::new(),
            limit_zone_refs: Vec::new(),
            upstream_spans: std::collections::HashMap::new(),
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
}

/// The URI part of a `proxy_pass` URL: what follows `scheme://host[:port]`, if anything
/// (after `scheme://unix:PATH`, what follows the `:` that ends the path, as nginx).
pub fn proxy_uri(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    if let Some(path) = strip_unix(rest) {
        return path.find(':').map(|i| &path[i + 1..]);
    }
    rest.find('/').map(|i| &rest[i..])
}

/// What follows `unix:` (any case, as nginx matches it).
pub fn strip_unix(s: &str) -> Option<&str> {
    (s.len() >= 5 && s.is_char_boundary(5) && s[..5].eq_ignore_ascii_case("unix:")).then(|| &s[5..])
}

/// sun_path's size: a UNIX-domain socket's path and its NUL must fit.
const SUN_PATH: usize = 108;

/// nginx's complaint about a `unix:PATH` address (ngx_parse_unix_domain_url), if any.
pub fn unix_path_error(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("no path in the unix domain socket")
    } else if path.len() + 1 > SUN_PATH {
        Some("too long path in the unix domain socket")
    } else {
        None
    }
}

impl Builder<'_> {
    /// A literal proxy_pass to `unix:PATH[:URI]`: nginx's checks of the path.
    fn check_unix_proxy_pass(&mut self, w: &Word) -> bool {
        let t = &w.text;
        if Template(t.clone()).has_variables() {
            return true;
        }
        let Some(rest) = t.split_once("://").and_then(|(_, r)| strip_unix(r)) else {
            return true;
        };
        let path = rest.split_once(':').map_or(rest, |(p, _)| p);
        match unix_path_error(path) {
            Some(e) => {
                let written = t.split_once("://").map_or(t.as_str(), |(_, r)| r);
                self.error(w.span, format!("{e} in upstream \"{written}\""));
                false
            }
            None => true,
        }
    }
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
