//! The http context: what servers and locations inherit.

use super::*;

impl Builder<'_> {
    pub(super) fn http(&mut self, ds: &[Directive]) -> Http {
        let mut http = Http::default();
        // Maps define variables for the whole http block, wherever they stand.
        for d in ds {
            let defined = match (d.name.text.as_str(), d.args.len()) {
                ("map" | "split_clients", 2) => d.args.get(1),
                ("geo", 1 | 2) => d.args.last(),
                _ => None,
            };
            if let Some(v) = defined.and_then(|w| w.text.strip_prefix('$')) {
                self.map_vars.insert(v.to_string());
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
                "limit_req_zone" | "limit_conn_zone" => self.limit_zone(d, &mut http.limit_zones),
                "split_clients" => {
                    if let Some(s) = self.split_clients(d) {
                        http.split_clients.push(s);
                    }
                }
                "geo" => {
                    if let Some(g) = self.geo(d) {
                        http.geos.push(g);
                    }
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
        http.temp_paths = std::mem::take(&mut self.temp_paths);
        self.check_limit_zones(&http.limit_zones);
        // An upstream zone with no size needs another declaration of its name with one;
        // a name a limit zone holds is not an upstream's (nginx's shared memory names).
        for u in &http.upstreams {
            let Some((name, size)) = &u.zone else {
                continue;
            };
            let Some(span) = self.upstream_spans.get(&u.name).copied() else {
                continue;
            };
            if http.limit_zones.iter().any(|z| &z.name == name) {
                self.error(
                    span,
                    format!(
                        "the shared memory zone \"{name}\" is already declared for a different use"
                    ),
                );
            } else if size.is_none()
                && !http
                    .upstreams
                    .iter()
                    .any(|o| matches!(&o.zone, Some((n, Some(_))) if n == name))
            {
                self.error(span, format!("zero size shared memory zone \"{name}\""));
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

    pub(super) fn map(&mut self, d: &Directive) -> Option<Map> {
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
    pub(super) fn setting(&mut self, d: &Directive, st: &mut Settings, ctx: Ctx) -> bool {
        if self.module_setting(d, st)
            || self.gzip_setting(d, st)
            || self.limit_setting(d, st)
            || self.proxy_setting(d, st)
        {
            return true;
        }
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
            | "proxy_request_buffering"
            | "server_tokens"
            | "underscores_in_headers"
            | "ignore_invalid_headers" => {
                let slot = match d.name.text.as_str() {
                    "proxy_buffering" => &mut st.proxy_buffering,
                    "proxy_request_buffering" => &mut st.proxy_request_buffering,
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
}
