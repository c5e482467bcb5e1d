//! server and location blocks.

use super::*;

impl Builder<'_> {
    pub(super) fn server(&mut self, ds: &[Directive]) -> Server {
        let mut srv = Server {
            listen: Vec::new(),
            server_name: Vec::new(),
            settings: Settings::default(),
            steps: Vec::new(),
            locations: Vec::new(),
            try_files: None,
            stub_status: false,
        };
        let mut seen = HashSet::new();
        for d in ds {
            if !self.check(d, Ctx::Server) {
                continue;
            }
            if self.step(d, &mut srv.steps, Ctx::Server) {
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
                "location" => {
                    if let Some(l) = self.location(d, true) {
                        self.note_location(&mut seen, &l, d);
                        srv.locations.push(l);
                    }
                }
                "try_files" => {
                    if self.dup(&srv.try_files, d) {
                        continue;
                    }
                    srv.try_files = self.try_files(d);
                }
                "stub_status" => srv.stub_status = true,
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
    pub(super) fn note_location(
        &mut self,
        seen: &mut HashSet<String>,
        l: &Location,
        d: &Directive,
    ) {
        let key = match &l.matcher {
            LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) => format!("p{p}"),
            LocationMatch::Exact(p) => format!("e{p}"),
            LocationMatch::Named(n) => format!("@{n}"),
            LocationMatch::Regex { .. } => return,
        };
        if !seen.insert(key) {
            let span = d.args.last().map_or(d.name.span, |w| w.span);
            let text = d.args.last().map_or("", |w| w.text.as_str());
            self.error(span, format!("duplicate location \"{text}\""));
        }
    }

    pub(super) fn listen(&mut self, d: &Directive) -> Option<Listen> {
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
                "proxy_protocol" => l.proxy_protocol = true,
                "ipv6only=on" => l.ipv6only = Some(true),
                "ipv6only=off" => l.ipv6only = Some(false),
                t if t.starts_with("backlog=") => match t["backlog=".len()..].parse::<u32>() {
                    Ok(n) => l.backlog = Some(n),
                    Err(_) => self.error(
                        p.span,
                        format!("invalid backlog \"{}\"", &t["backlog=".len()..]),
                    ),
                },
                "deferred" | "bind" | "fastopen" | "so_keepalive=on" | "so_keepalive=off" => {
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

    pub(super) fn ret(&mut self, d: &Directive) -> Option<Return> {
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

    /// A location block; `server_level`: directly in a server (where named ones may be).
    pub(super) fn location(&mut self, d: &Directive, server_level: bool) -> Option<Location> {
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
                } else if let Some(name) = t.strip_prefix('@') {
                    if !server_level {
                        self.error(
                            d.args[0].span,
                            format!("named location \"{t}\" can be on the server level only"),
                        );
                        return None;
                    }
                    LocationMatch::Named(name.to_string())
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
        if let LocationMatch::Regex {
            pattern,
            case_insensitive,
        } = &matcher
        {
            let w = Word {
                text: pattern.clone(),
                span: d.args[d.args.len() - 1].span,
                quoted: false,
            };
            if !self.regex(&w, *case_insensitive) {
                return None;
            }
        }
        let exact = matches!(matcher, LocationMatch::Exact(_));
        let mut loc = Location {
            matcher,
            proxy_pass: None,
            steps: Vec::new(),
            settings: Settings::default(),
            locations: Vec::new(),
            try_files: None,
            internal: false,
            stub_status: false,
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
            if self.step(e, &mut loc.steps, Ctx::Location) {
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
                    if !self.check_unix_proxy_pass(&e.args[0]) {
                        continue;
                    }
                    if matches!(
                        loc.matcher,
                        LocationMatch::Regex { .. } | LocationMatch::Named(_)
                    ) && !Template(t.clone()).has_variables()
                        && proxy_uri(t).is_some()
                    {
                        self.error(e.args[0].span, rewrite::PROXY_PASS_URI);
                        continue;
                    }
                    loc.proxy_pass = Some(Template(t.clone()));
                    loc.stub_status = false;
                }
                "stub_status" => {
                    loc.stub_status = true;
                    loc.proxy_pass = None;
                }
                "try_files" => {
                    if self.dup(&loc.try_files, e) {
                        continue;
                    }
                    loc.try_files = self.try_files(e);
                }
                "internal" => loc.internal = true,
                "location" => {
                    if exact {
                        self.error(e.name.span, "location is inside the exact location; nested locations are not allowed there");
                        continue;
                    }
                    if let Some(l) = self.location(e, false) {
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
