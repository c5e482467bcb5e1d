//! The checkers of a real server (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, SMTP_CHECK,
//! DNS_CHECK, UDP_CHECK, PING_CHECK, FILE_CHECK) and their url blocks.

use super::*;

impl Builder<'_> {
    pub(super) fn checker_common(&mut self, c: &Node, common: &mut CheckerCommon) -> bool {
        match c.name() {
            "connect_ip" => common.connect_ip = self.ip(c),
            "connect_port" => {
                self.no_block(c);
                self.at_most(c, 1);
                common.connect_port = self.port_at(c, 0);
            }
            "bindto" => common.bindto = self.ip(c),
            "bind_port" => {
                self.no_block(c);
                self.at_most(c, 1);
                common.bind_port = self.port_at(c, 0);
            }
            "bind_if" => {
                common.bind_if = self.string(c, "an interface");
                if let Some(name) = common.bind_if.clone() {
                    self.interface_ref(&name, Self::arg_span(c, 0));
                }
            }
            "fwmark" => {
                common.fwmark = self
                    .int(c, "fwmark", 1, i64::from(u32::MAX))
                    .map(|v| v as u32)
            }
            "connect_timeout" => common.connect_timeout = self.timer(c),
            "retry" => common.retry = self.u32_value(c, "retry"),
            "nb_get_retry" => {
                self.warn(c.span(), "nb_get_retry is deprecated; use 'retry'");
                common.retry = self.u32_value(c, "retry");
            }
            "delay_before_retry" => common.delay_before_retry = self.timer(c),
            "warmup" => common.warmup = self.timer(c),
            "delay_loop" => common.delay_loop = self.timer(c),
            "alpha" => common.alpha = self.flag(c),
            "log_all_failures" => common.log_all_failures = self.flag(c),
            _ => return false,
        }
        true
    }

    pub(super) fn checker(&mut self, n: &Node) -> Option<Checker> {
        self.at_most(n, 0);
        let mut common = CheckerCommon::default();
        let nodes = self.block(n);
        let kind = match n.name() {
            "TCP_CHECK" | "PING_CHECK" => {
                for c in nodes {
                    if !self.checker_common(c, &mut common) {
                        self.unknown(c, n.name());
                    }
                }
                if n.name() == "TCP_CHECK" {
                    CheckerKind::Tcp
                } else {
                    CheckerKind::Ping
                }
            }
            "HTTP_GET" | "SSL_GET" => {
                let mut h = HttpCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "url" => {
                            if let Some(u) = self.url(c) {
                                h.urls.push(u);
                            }
                        }
                        "virtualhost" => h.virtualhost = self.string(c, "a host name"),
                        "http_protocol" => {
                            h.http_protocol = match self.string(c, "an HTTP version").as_deref() {
                                Some("1.0") => Some(HttpProtocol::V1_0),
                                Some("1.0C") | Some("1.0c") => Some(HttpProtocol::V1_0C),
                                Some("1.1") => Some(HttpProtocol::V1_1),
                                Some(other) => {
                                    let msg = format!("invalid http_protocol '{other}': expected 1.0, 1.0C or 1.1");
                                    self.error(Self::arg_span(c, 0), msg);
                                    None
                                }
                                None => None,
                            }
                        }
                        "enable_sni" => h.enable_sni = self.flag(c),
                        "fast_recovery" => h.fast_recovery = self.flag(c),
                        "tls_compliant" => self.unsupported(c),
                        _ => self.unknown(c, n.name()),
                    }
                }
                if h.urls.is_empty() {
                    self.error(
                        n.span(),
                        format!("{} needs at least one 'url' block", n.name()),
                    );
                    return None;
                }
                if n.name() == "HTTP_GET" {
                    CheckerKind::Http(h)
                } else {
                    CheckerKind::Ssl(h)
                }
            }
            "MISC_CHECK" => {
                let mut path = None;
                let mut timeout = None;
                let mut dynamic = false;
                let mut user = None;
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "misc_path" => path = self.script(c),
                        "misc_timeout" => timeout = self.timer(c),
                        "misc_dynamic" => dynamic = self.presence(c),
                        "user" => user = self.script_user(c),
                        _ => self.unknown(c, n.name()),
                    }
                }
                let Some(mut path) = path else {
                    self.error(n.span(), "MISC_CHECK needs 'misc_path'");
                    return None;
                };
                if user.is_some() {
                    path.user = user;
                }
                CheckerKind::Misc(MiscCheck {
                    misc_path: path,
                    misc_timeout: timeout,
                    misc_dynamic: dynamic,
                })
            }
            "SMTP_CHECK" => {
                let mut s = SmtpCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "helo_name" => s.helo_name = self.string(c, "a host name"),
                        "host" => {
                            let mut h = CheckerCommon::default();
                            for hc in self.block(c) {
                                if !self.checker_common(hc, &mut h) {
                                    self.unknown(hc, "host");
                                }
                            }
                            s.hosts.push(h);
                        }
                        _ => self.unknown(c, n.name()),
                    }
                }
                CheckerKind::Smtp(s)
            }
            "DNS_CHECK" => {
                let mut d = DnsCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "type" => {
                            d.query_type = match self.string(c, "a query type") {
                                Some(t) if DNS_TYPES.contains(&t.as_str()) => Some(t),
                                Some(t) => {
                                    let msg = format!(
                                        "invalid DNS query type '{t}': expected one of {}",
                                        DNS_TYPES.join(" ")
                                    );
                                    self.error(Self::arg_span(c, 0), msg);
                                    None
                                }
                                None => None,
                            }
                        }
                        "name" => d.name = self.string(c, "a name to query"),
                        _ => self.unknown(c, n.name()),
                    }
                }
                CheckerKind::Dns(d)
            }
            "UDP_CHECK" => {
                let mut u = UdpCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "payload" => u.payload = self.hex(c),
                        "require_reply" => {
                            u.require_reply = Some(if c.args.is_empty() {
                                self.no_block(c);
                                None
                            } else {
                                self.hex(c)
                            })
                        }
                        "min_reply_length" => u.min_reply_length = self.u32_value(c, "length"),
                        "max_reply_length" => u.max_reply_length = self.u32_value(c, "length"),
                        _ => self.unknown(c, n.name()),
                    }
                }
                CheckerKind::Udp(u)
            }
            "FILE_CHECK" => {
                let mut file = None;
                let mut weight = None;
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "track_file" => {
                            file = self.string(c, "a track_file name");
                            if let Some(f) = &file {
                                self.refs.push(Reference {
                                    kind: RefKind::TrackFile,
                                    name: f.clone(),
                                    span: Self::arg_span(c, 0),
                                });
                            }
                        }
                        "weight" => {
                            self.no_block(c);
                            self.at_most(c, 2);
                            if let Some(w) = self.track_weight_at(c, 0) {
                                weight = Some((w, self.reverse_at(c, 1)));
                            }
                        }
                        _ => self.unknown(c, n.name()),
                    }
                }
                let Some(track_file) = file else {
                    self.error(n.span(), "FILE_CHECK needs 'track_file'");
                    return None;
                };
                CheckerKind::File(FileCheck { track_file, weight })
            }
            _ => return None,
        };
        Some(Checker { common, kind })
    }

    pub(super) fn hex(&mut self, c: &Node) -> Option<String> {
        let text = self.string(c, "hex digits")?;
        if text.is_empty() || text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.error(
                Self::arg_span(c, 0),
                format!("invalid hex string '{text}': expected an even number of hex digits"),
            );
            return None;
        }
        Some(text.to_ascii_lowercase())
    }

    pub(super) fn url(&mut self, n: &Node) -> Option<UrlCheck> {
        self.at_most(n, 0);
        let mut u = UrlCheck {
            path: String::new(),
            digest: None,
            status_code: Vec::new(),
            virtualhost: None,
            regex: None,
            regex_no_match: false,
        };
        let mut have_path = false;
        for c in self.block(n) {
            match c.name() {
                "path" => {
                    if let Some(p) = self.string(c, "a URL path") {
                        u.path = p;
                        have_path = true;
                    }
                }
                "digest" => {
                    if let Some(d) = self.string(c, "an MD5 digest") {
                        if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
                            u.digest = Some(d.to_ascii_lowercase());
                        } else {
                            self.error(
                                Self::arg_span(c, 0),
                                format!("invalid digest '{d}': expected 32 hex digits (see 'fulcrum genhash')"),
                            );
                        }
                    }
                }
                "status_code" => {
                    self.no_block(c);
                    if c.args.is_empty() {
                        self.arg(c, 0, "a status code");
                    }
                    for t in &c.args {
                        match parse_status(&t.text) {
                            Some(r) => u.status_code.push(r),
                            None => self.error(
                                t.span,
                                format!("invalid status_code '{}': expected a code or range within 100..599", t.text),
                            ),
                        }
                    }
                }
                "virtualhost" => u.virtualhost = self.string(c, "a host name"),
                "regex" => u.regex = self.string(c, "a regular expression"),
                "regex_no_match" => u.regex_no_match = self.flag(c).unwrap_or(false),
                "regex_options" | "regex_stack" | "regex_min_offset" | "regex_max_offset" => {
                    self.unsupported(c)
                }
                _ => self.unknown(c, "url"),
            }
        }
        if !have_path {
            self.error(n.span(), "url needs 'path'");
            return None;
        }
        Some(u)
    }
}
