//! The model back into nginx.conf text. Parsing the output gives the same model.

use std::time::Duration;

use crate::model::*;

/// Quotes a word when nginx's tokenizer would otherwise split it or read it differently.
fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '#' | '"' | '\'' | '\\'));
    if plain {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn time(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

struct Out {
    text: String,
    depth: usize,
}

impl Out {
    fn line(&mut self, parts: &[String]) {
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str(&parts.join(" "));
        self.text.push_str(";\n");
    }

    fn open(&mut self, parts: &[String]) {
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str(&parts.join(" "));
        self.text.push_str(" {\n");
        self.depth += 1;
    }

    fn close(&mut self) {
        self.depth -= 1;
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str("}\n");
    }
}

fn w(s: &str) -> String {
    word(s)
}

fn error_log(o: &mut Out, e: &ErrorLog) {
    let mut p = vec![w("error_log"), w(&e.path)];
    if let Some(l) = &e.level {
        p.push(w(l));
    }
    o.line(&p);
}

fn settings(o: &mut Out, s: &Settings) {
    if let Some(list) = &s.proxy_set_header {
        for (k, v) in list {
            o.line(&[w("proxy_set_header"), w(k), w(v.as_str())]);
        }
    }
    if let Some(v) = s.proxy_http_version {
        let v = match v {
            HttpVersion::V1_0 => "1.0",
            HttpVersion::V1_1 => "1.1",
        };
        o.line(&[w("proxy_http_version"), w(v)]);
    }
    let times = [
        ("proxy_connect_timeout", s.proxy_connect_timeout),
        ("proxy_read_timeout", s.proxy_read_timeout),
        ("proxy_send_timeout", s.proxy_send_timeout),
        ("proxy_next_upstream_timeout", s.proxy_next_upstream_timeout),
        ("client_body_timeout", s.client_body_timeout),
        ("client_header_timeout", s.client_header_timeout),
        ("send_timeout", s.send_timeout),
    ];
    for (k, v) in times {
        if let Some(v) = v {
            o.line(&[w(k), time(v)]);
        }
    }
    if let Some(nu) = s.proxy_next_upstream {
        let mut p = vec![w("proxy_next_upstream")];
        if nu.is_off() {
            p.push(w("off"));
        } else {
            p.extend(nu.flags().iter().filter(|f| f.1).map(|f| w(f.0)));
        }
        o.line(&p);
    }
    if let Some(n) = s.proxy_next_upstream_tries {
        o.line(&[w("proxy_next_upstream_tries"), n.to_string()]);
    }
    if let Some(b) = s.proxy_buffering {
        o.line(&[w("proxy_buffering"), w(if b { "on" } else { "off" })]);
    }
    if let Some(b) = s.proxy_request_buffering {
        o.line(&[
            w("proxy_request_buffering"),
            w(if b { "on" } else { "off" }),
        ]);
    }
    for (name, flag) in [
        ("server_tokens", s.server_tokens),
        ("underscores_in_headers", s.underscores_in_headers),
        ("ignore_invalid_headers", s.ignore_invalid_headers),
    ] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
    if let Some(t) = &s.default_type {
        o.line(&[w("default_type"), w(t)]);
    }
    if let Some((n, sz)) = s.proxy_buffers {
        o.line(&[w("proxy_buffers"), n.to_string(), sz.to_string()]);
    }
    if let Some(n) = s.proxy_max_temp_file_size {
        o.line(&[w("proxy_max_temp_file_size"), n.to_string()]);
    }
    if let Some(p) = &s.proxy_temp_path {
        o.line(&[w("proxy_temp_path"), w(p)]);
    }
    if let Some(list) = &s.proxy_redirect {
        for r in list {
            match r {
                ProxyRedirect::Default => o.line(&[w("proxy_redirect"), w("default")]),
                ProxyRedirect::Off => o.line(&[w("proxy_redirect"), w("off")]),
                ProxyRedirect::Replace { from, to } => {
                    o.line(&[w("proxy_redirect"), w(from.as_str()), w(to.as_str())])
                }
            }
        }
    }
    if let Some(list) = &s.access_log {
        for a in list {
            match a {
                AccessLog::Off => o.line(&[w("access_log"), w("off")]),
                AccessLog::File { path, format } => {
                    let mut p = vec![w("access_log"), w(path)];
                    if let Some(f) = format {
                        p.push(w(f));
                    }
                    o.line(&p);
                }
            }
        }
    }
    if let Some(e) = &s.error_log {
        error_log(o, e);
    }
    if let Some(n) = s.client_max_body_size {
        o.line(&[w("client_max_body_size"), n.to_string()]);
    }
    if let Some(n) = s.client_header_buffer_size {
        o.line(&[w("client_header_buffer_size"), n.to_string()]);
    }
    if let Some((n, sz)) = s.large_client_header_buffers {
        o.line(&[
            w("large_client_header_buffers"),
            n.to_string(),
            sz.to_string(),
        ]);
    }
    if let Some((t, h)) = s.keepalive_timeout {
        let mut p = vec![w("keepalive_timeout"), time(t)];
        if let Some(h) = h {
            p.push(time(h));
        }
        o.line(&p);
    }
    if let Some(n) = s.keepalive_requests {
        o.line(&[w("keepalive_requests"), n.to_string()]);
    }
    if let Some(c) = &s.ssl_certificate {
        o.line(&[w("ssl_certificate"), w(c)]);
    }
    if let Some(c) = &s.ssl_certificate_key {
        o.line(&[w("ssl_certificate_key"), w(c)]);
    }
    for h in s.add_header.iter().flatten() {
        let mut p = vec![w("add_header"), w(&h.name), w(h.value.as_str())];
        if h.always {
            p.push(w("always"));
        }
        o.line(&p);
    }
    if let Some(e) = &s.expires {
        o.line(&expires(e));
    }
    for (name, flag) in [
        ("rewrite_log", s.rewrite_log),
        ("uninitialized_variable_warn", s.uninitialized_variable_warn),
        ("real_ip_recursive", s.real_ip_recursive),
    ] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
    for src in s.set_real_ip_from.iter().flatten() {
        o.line(&[w("set_real_ip_from"), w(&src.as_written())]);
    }
    if let Some(h) = &s.real_ip_header {
        o.line(&[w("real_ip_header"), w(h)]);
    }
    for r in s.access.iter().flatten() {
        let verb = if r.allow { "allow" } else { "deny" };
        o.line(&[w(verb), w(&r.source.as_written())]);
    }
    match &s.root {
        Some(Root::Root(p)) => o.line(&[w("root"), w(p.as_str())]),
        Some(Root::Alias(p)) => o.line(&[w("alias"), w(p.as_str())]),
        None => {}
    }
    if let Some(list) = &s.index {
        let mut p = vec![w("index")];
        p.extend(list.iter().map(|t| w(t.as_str())));
        o.line(&p);
    }
    if let Some(types) = &s.types {
        o.open(&[w("types")]);
        for (mime, exts) in types {
            let mut p = vec![w(mime)];
            p.extend(exts.iter().map(|e| w(e)));
            o.line(&p);
        }
        o.close();
    }
    for e in s.error_page.iter().flatten() {
        let mut p = vec![w("error_page")];
        p.extend(e.codes.iter().map(u16::to_string));
        match e.response {
            Some(ErrorPageStatus::Page) => p.push(w("=")),
            Some(ErrorPageStatus::Code(c)) => p.push(format!("={c}")),
            None => {}
        }
        p.push(w(e.uri.as_str()));
        o.line(&p);
    }
    for (name, flag) in [("etag", s.etag), ("log_not_found", s.log_not_found)] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
    gzip(o, s);
    limits(o, s);
    proxy_heads(o, s);
    cookies(o, s);
    if let Some(m) = s.if_modified_since {
        let v = match m {
            IfModifiedSince::Off => "off",
            IfModifiedSince::Exact => "exact",
            IfModifiedSince::Before => "before",
        };
        o.line(&[w("if_modified_since"), w(v)]);
    }
}

fn proxy_heads(o: &mut Out, s: &Settings) {
    for (name, list) in [
        ("proxy_hide_header", &s.proxy_hide_header),
        ("proxy_pass_header", &s.proxy_pass_header),
    ] {
        for h in list.iter().flatten() {
            o.line(&[w(name), w(h)]);
        }
    }
    if let Some(list) = &s.proxy_ignore_headers {
        let mut p = vec![w("proxy_ignore_headers")];
        p.extend(list.iter().map(|h| w(h)));
        o.line(&p);
    }
    for (name, flag) in [
        ("proxy_intercept_errors", s.proxy_intercept_errors),
        ("proxy_pass_request_headers", s.proxy_pass_request_headers),
        ("proxy_pass_request_body", s.proxy_pass_request_body),
    ] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
    if let Some(list) = &s.ssl_protocols {
        let mut p = vec![w("ssl_protocols")];
        p.extend(list.iter().map(|v| w(v)));
        o.line(&p);
    }
    for (name, flag) in [
        ("proxy_ssl_verify", s.proxy_ssl_verify),
        ("proxy_ssl_server_name", s.proxy_ssl_server_name),
        ("proxy_ssl_session_reuse", s.proxy_ssl_session_reuse),
    ] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
    if let Some(n) = s.proxy_ssl_verify_depth {
        o.line(&[w("proxy_ssl_verify_depth"), n.to_string()]);
    }
    for (name, v) in [
        (
            "proxy_ssl_trusted_certificate",
            &s.proxy_ssl_trusted_certificate,
        ),
        ("proxy_ssl_certificate", &s.proxy_ssl_certificate),
        ("proxy_ssl_certificate_key", &s.proxy_ssl_certificate_key),
    ] {
        if let Some(v) = v {
            o.line(&[w(name), w(v)]);
        }
    }
    match &s.proxy_bind {
        Some(ProxyBind::Off) => o.line(&[w("proxy_bind"), w("off")]),
        Some(ProxyBind::Local(t)) => o.line(&[w("proxy_bind"), w(t.as_str())]),
        None => {}
    }
    for (name, t) in [
        ("proxy_ssl_name", &s.proxy_ssl_name),
        ("proxy_method", &s.proxy_method),
        ("proxy_set_body", &s.proxy_set_body),
    ] {
        if let Some(t) = t {
            o.line(&[w(name), w(t.as_str())]);
        }
    }
}

fn cookie_match(m: &CookieMatch) -> String {
    match m {
        CookieMatch::Plain(t) => w(t.as_str()),
        CookieMatch::Regex {
            pattern,
            case_insensitive: true,
        } => w(&format!("~*{pattern}")),
        CookieMatch::Regex { pattern, .. } => w(&format!("~{pattern}")),
    }
}

fn cookies(o: &mut Out, s: &Settings) {
    for (name, list) in [
        ("proxy_cookie_domain", &s.proxy_cookie_domain),
        ("proxy_cookie_path", &s.proxy_cookie_path),
    ] {
        match list {
            Some(l) if l.is_empty() => o.line(&[w(name), w("off")]),
            Some(l) => {
                for r in l {
                    let m = match (&r.matcher, name) {
                        // A domain regex is caseless already: `~` says so.
                        (
                            CookieMatch::Regex {
                                pattern,
                                case_insensitive: true,
                            },
                            "proxy_cookie_domain",
                        ) => w(&format!("~{pattern}")),
                        (m, _) => cookie_match(m),
                    };
                    o.line(&[w(name), m, w(r.replacement.as_str())]);
                }
            }
            None => {}
        }
    }
    match &s.proxy_cookie_flags {
        Some(l) if l.is_empty() => o.line(&[w("proxy_cookie_flags"), w("off")]),
        Some(l) => {
            for f in l {
                let m = match &f.cookie {
                    CookieMatch::Regex { pattern, .. } => w(&format!("~{pattern}")),
                    m => cookie_match(m),
                };
                let mut p = vec![w("proxy_cookie_flags"), m];
                p.extend(f.flags.iter().map(|t| w(t.as_str())));
                o.line(&p);
            }
        }
        None => {}
    }
}

fn limits(o: &mut Out, s: &Settings) {
    for l in s.limit_req.iter().flatten() {
        let mut p = vec![w("limit_req"), format!("zone={}", l.zone)];
        if l.burst > 0 {
            p.push(format!("burst={}", l.burst));
        }
        match l.delay {
            LimitDelay::All => {}
            LimitDelay::After(n) => p.push(format!("delay={n}")),
            LimitDelay::Never => p.push(w("nodelay")),
        }
        o.line(&p);
    }
    for (zone, n) in s.limit_conn.iter().flatten() {
        o.line(&[w("limit_conn"), w(zone), n.to_string()]);
    }
    for (name, v) in [
        ("limit_req_status", s.limit_req_status),
        ("limit_conn_status", s.limit_conn_status),
    ] {
        if let Some(v) = v {
            o.line(&[w(name), v.to_string()]);
        }
    }
    for (name, v) in [
        ("limit_req_log_level", &s.limit_req_log_level),
        ("limit_conn_log_level", &s.limit_conn_log_level),
    ] {
        if let Some(v) = v {
            o.line(&[w(name), w(v)]);
        }
    }
    for (name, flag) in [
        ("limit_req_dry_run", s.limit_req_dry_run),
        ("limit_conn_dry_run", s.limit_conn_dry_run),
    ] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
}

fn gzip(o: &mut Out, s: &Settings) {
    if let Some(t) = &s.auth_basic {
        o.line(&[w("auth_basic"), w(t.as_str())]);
    }
    if let Some(t) = &s.auth_basic_user_file {
        o.line(&[w("auth_basic_user_file"), w(t.as_str())]);
    }
    if let Some(any) = s.satisfy_any {
        o.line(&[w("satisfy"), w(if any { "any" } else { "all" })]);
    }
    for (name, flag) in [("gzip", s.gzip), ("gzip_vary", s.gzip_vary)] {
        if let Some(b) = flag {
            o.line(&[w(name), w(if b { "on" } else { "off" })]);
        }
    }
    if let Some(n) = s.gzip_comp_level {
        o.line(&[w("gzip_comp_level"), n.to_string()]);
    }
    if let Some(n) = s.gzip_min_length {
        o.line(&[w("gzip_min_length"), n.to_string()]);
    }
    if let Some(v) = s.gzip_http_version {
        let v = match v {
            HttpVersion::V1_0 => "1.0",
            HttpVersion::V1_1 => "1.1",
        };
        o.line(&[w("gzip_http_version"), w(v)]);
    }
    if let Some(p) = s.gzip_proxied {
        let mut line = vec![w("gzip_proxied")];
        for word in [
            "off",
            "expired",
            "no-cache",
            "no-store",
            "private",
            "no_last_modified",
            "no_etag",
            "auth",
            "any",
        ] {
            if GzipProxied::bit(word).is_some_and(|b| p.has(b)) {
                line.push(w(word));
            }
        }
        o.line(&line);
    }
    if let Some(types) = &s.gzip_types {
        let mut line = vec![w("gzip_types")];
        line.extend(types.iter().map(|t| w(t)));
        if types.is_empty() {
            line.push(w("text/html"));
        }
        o.line(&line);
    }
    if let Some(dis) = &s.gzip_disable {
        let mut line = vec![w("gzip_disable")];
        if dis.msie6 {
            line.push(w("msie6"));
        }
        line.extend(dis.regexes.iter().map(|r| w(r)));
        if line.len() == 1 {
            line.push(w("degradation"));
        }
        o.line(&line);
    }
}

fn try_files(o: &mut Out, list: &[Template]) {
    let mut p = vec![w("try_files")];
    p.extend(list.iter().map(|t| w(t.as_str())));
    o.line(&p);
}

/// A time in seconds as `expires` takes it (no unit: seconds).
fn expires(e: &Expires) -> Vec<String> {
    let mut p = vec![w("expires")];
    match e {
        Expires::Off => p.push(w("off")),
        Expires::Epoch => p.push(w("epoch")),
        Expires::Max => p.push(w("max")),
        Expires::Access(s) => p.push(s.to_string()),
        Expires::Modified(s) => {
            p.push(w("modified"));
            p.push(s.to_string());
        }
        Expires::Daily(s) => p.push(format!("@{s}")),
        Expires::Variable(t) => p.push(w(t.as_str())),
    }
    p
}

fn steps(o: &mut Out, list: &[Step]) {
    for s in list {
        match s {
            Step::Return(r) => {
                let mut p = vec![w("return"), r.code.to_string()];
                if let Some(t) = &r.text {
                    p.push(w(t.as_str()));
                }
                o.line(&p);
            }
            Step::Rewrite(r) => {
                let mut p = vec![w("rewrite"), w(&r.regex), w(r.replacement.as_str())];
                if let Some(f) = r.flag {
                    p.push(w(f.as_str()));
                }
                o.line(&p);
            }
            Step::Set { variable, value } => {
                o.line(&[w("set"), format!("${variable}"), w(value.as_str())]);
            }
            Step::Break => o.line(&[w("break")]),
            Step::If(i) => {
                let mut head = vec![w("if")];
                match &i.condition {
                    Condition::Variable(v) => head.push(format!("(${v})")),
                    Condition::Compare {
                        variable,
                        negate,
                        value,
                    } => {
                        head.push(format!("(${variable}"));
                        head.push(w(if *negate { "!=" } else { "=" }));
                        head.push(w(value.as_str()));
                        head.push(w(")"));
                    }
                    Condition::Match {
                        variable,
                        negate,
                        case_insensitive,
                        regex,
                    } => {
                        head.push(format!("(${variable}"));
                        let op = match (negate, case_insensitive) {
                            (false, false) => "~",
                            (false, true) => "~*",
                            (true, false) => "!~",
                            (true, true) => "!~*",
                        };
                        head.push(w(op));
                        head.push(w(regex));
                        head.push(w(")"));
                    }
                    Condition::File { negate, test, path } => {
                        let op = format!("{}-{}", if *negate { "!" } else { "" }, test.letter());
                        head.push(format!("({op}"));
                        head.push(w(path.as_str()));
                        head.push(w(")"));
                    }
                }
                o.open(&head);
                if let Some(p) = &i.proxy_pass {
                    o.line(&[w("proxy_pass"), w(p.as_str())]);
                }
                settings(o, &i.settings);
                steps(o, &i.steps);
                o.close();
            }
        }
    }
}

fn location(o: &mut Out, l: &Location) {
    let head = match &l.matcher {
        LocationMatch::Prefix(p) => vec![w("location"), w(p)],
        LocationMatch::Exact(p) => vec![w("location"), w("="), w(p)],
        LocationMatch::PrefixNoRegex(p) => vec![w("location"), w("^~"), w(p)],
        LocationMatch::Named(n) => vec![w("location"), w(&format!("@{n}"))],
        LocationMatch::Regex {
            pattern,
            case_insensitive,
        } => vec![
            w("location"),
            w(if *case_insensitive { "~*" } else { "~" }),
            w(pattern),
        ],
    };
    o.open(&head);
    if let Some(p) = &l.proxy_pass {
        o.line(&[w("proxy_pass"), w(p.as_str())]);
    }
    settings(o, &l.settings);
    steps(o, &l.steps);
    if let Some(t) = &l.try_files {
        try_files(o, t);
    }
    if l.stub_status {
        o.line(&[w("stub_status")]);
    }
    if l.internal {
        o.line(&[w("internal")]);
    }
    for inner in &l.locations {
        location(o, inner);
    }
    o.close();
}

/// Prints a configuration as nginx.conf text.
pub fn print(cfg: &NginxConfig) -> String {
    let mut o = Out {
        text: String::new(),
        depth: 0,
    };
    match cfg.worker_processes {
        WorkerProcesses::Auto => o.line(&[w("worker_processes"), w("auto")]),
        WorkerProcesses::Count(n) => o.line(&[w("worker_processes"), n.to_string()]),
    }
    if let Some(p) = &cfg.pid {
        o.line(&[w("pid"), w(p)]);
    }
    if !cfg.daemon {
        o.line(&[w("daemon"), w("off")]);
    }
    if !cfg.master_process {
        o.line(&[w("master_process"), w("off")]);
    }
    if let Some((user, group)) = &cfg.user {
        let mut l = vec![w("user"), w(user)];
        l.extend(group.as_deref().map(w));
        o.line(&l);
    }
    if let Some(n) = cfg.worker_rlimit_nofile {
        o.line(&[w("worker_rlimit_nofile"), n.to_string()]);
    }
    match &cfg.worker_cpu_affinity {
        Some(CpuAffinity::Auto(mask)) => {
            let mut l = vec![w("worker_cpu_affinity"), w("auto")];
            l.extend(mask.as_deref().map(w));
            o.line(&l);
        }
        Some(CpuAffinity::Masks(m)) => {
            let mut l = vec![w("worker_cpu_affinity")];
            l.extend(m.iter().map(|m| w(m)));
            o.line(&l);
        }
        None => {}
    }
    if let Some(e) = &cfg.error_log {
        error_log(&mut o, e);
    }
    o.open(&[w("events")]);
    o.line(&[w("worker_connections"), cfg.worker_connections.to_string()]);
    o.close();
    let Some(http) = &cfg.http else {
        return o.text;
    };
    o.open(&[w("http")]);
    settings(&mut o, &http.settings);
    for (directive, path) in &http.temp_paths {
        o.line(&[w(directive), w(path)]);
    }
    for z in &http.limit_zones {
        let zone = format!("zone={}:{}", z.name, z.size);
        match z.rate {
            Some(r) if r % 1000 == 0 => o.line(&[
                w("limit_req_zone"),
                w(z.key.as_str()),
                zone,
                format!("rate={}r/s", r / 1000),
            ]),
            // r/m as nginx stores it: requests per 1000 s, rounded down.
            Some(r) => o.line(&[
                w("limit_req_zone"),
                w(z.key.as_str()),
                zone,
                format!("rate={}r/m", (r * 60).div_ceil(1000)),
            ]),
            None => o.line(&[w("limit_conn_zone"), w(z.key.as_str()), zone]),
        }
    }
    for f in &http.log_formats {
        let mut p = vec![w("log_format"), w(&f.name)];
        if let Some(e) = &f.escape {
            p.push(w(&format!("escape={e}")));
        }
        p.push(w(f.format.as_str()));
        o.line(&p);
    }
    for m in &http.maps {
        o.open(&[
            w("map"),
            w(m.source.as_str()),
            w(&format!("${}", m.variable)),
        ]);
        if m.hostnames {
            o.line(&[w("hostnames")]);
        }
        if m.volatile {
            o.line(&[w("volatile")]);
        }
        if let Some(d) = &m.default {
            o.line(&[w("default"), w(d.as_str())]);
        }
        for (k, v) in &m.entries {
            // A key that reads as a map keyword is escaped, as nginx allows.
            let key = if matches!(k.as_str(), "default" | "hostnames" | "volatile" | "include")
                || k.starts_with('\\')
            {
                format!("\\{k}")
            } else {
                k.clone()
            };
            o.line(&[w(&key), w(v.as_str())]);
        }
        o.close();
    }
    for s in &http.split_clients {
        o.open(&[
            w("split_clients"),
            w(s.source.as_str()),
            w(&format!("${}", s.variable)),
        ]);
        for (percent, value) in &s.parts {
            let key = if *percent == 0 {
                w("*")
            } else {
                format!("{}.{:02}%", percent / 100, percent % 100)
            };
            o.line(&[key, w(value)]);
        }
        o.close();
    }
    for g in &http.geos {
        let mut head = vec![w("geo")];
        if let Some(a) = &g.address {
            head.push(format!("${a}"));
        }
        head.push(format!("${}", g.variable));
        o.open(&head);
        if g.ranges {
            o.line(&[w("ranges")]);
        }
        if let Some(d) = &g.default {
            o.line(&[w("default"), w(d)]);
        }
        for p in &g.proxies {
            o.line(&[w("proxy"), w(&p.as_written())]);
        }
        if g.proxy_recursive {
            o.line(&[w("proxy_recursive")]);
        }
        for (k, v) in &g.entries {
            let key = match k {
                GeoKey::Net(a, l) => format!("{a}/{l}"),
                GeoKey::Range(a, b) => format!("{a}-{b}"),
            };
            o.line(&[key, w(v)]);
        }
        o.close();
    }
    for u in &http.upstreams {
        o.open(&[w("upstream"), w(&u.name)]);
        match &u.balance {
            Balance::RoundRobin => {}
            Balance::LeastConn => o.line(&[w("least_conn")]),
            Balance::IpHash => o.line(&[w("ip_hash")]),
            Balance::Hash { key, consistent } => {
                let mut p = vec![w("hash"), w(key.as_str())];
                if *consistent {
                    p.push(w("consistent"));
                }
                o.line(&p);
            }
            Balance::Random { two, least_conn } => {
                let mut p = vec![w("random")];
                if *two {
                    p.push(w("two"));
                }
                if *least_conn {
                    p.push(w("least_conn"));
                }
                o.line(&p);
            }
        }
        for s in &u.servers {
            let mut p = vec![w("server"), w(&s.as_written())];
            if s.weight != 1 {
                p.push(format!("weight={}", s.weight));
            }
            if s.max_fails != 1 {
                p.push(format!("max_fails={}", s.max_fails));
            }
            if s.fail_timeout != Duration::from_secs(10) {
                p.push(format!("fail_timeout={}", time(s.fail_timeout)));
            }
            if s.max_conns != 0 {
                p.push(format!("max_conns={}", s.max_conns));
            }
            if s.backup {
                p.push(w("backup"));
            }
            if s.down {
                p.push(w("down"));
            }
            o.line(&p);
        }
        if let Some(n) = u.keepalive {
            o.line(&[w("keepalive"), n.to_string()]);
        }
        if let Some(n) = u.keepalive_requests {
            o.line(&[w("keepalive_requests"), n.to_string()]);
        }
        if let Some((name, size)) = &u.zone {
            let mut p = vec![w("zone"), w(name)];
            if let Some(n) = size {
                p.push(n.to_string());
            }
            o.line(&p);
        }
        if let Some(t) = u.keepalive_timeout {
            o.line(&[w("keepalive_timeout"), time(t)]);
        }
        o.close();
    }
    for s in &http.servers {
        o.open(&[w("server")]);
        for l in &s.listen {
            let addr = match l.addr {
                None => l.port.to_string(),
                Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{}", l.port),
                Some(a) => format!("{a}:{}", l.port),
            };
            let mut p = vec![w("listen"), w(&addr)];
            for (flag, name) in [
                (l.default_server, "default_server"),
                (l.ssl, "ssl"),
                (l.http2, "http2"),
                (l.reuseport, "reuseport"),
                (l.proxy_protocol, "proxy_protocol"),
            ] {
                if flag {
                    p.push(w(name));
                }
            }
            match l.ipv6only {
                Some(true) => p.push(w("ipv6only=on")),
                Some(false) => p.push(w("ipv6only=off")),
                None => {}
            }
            if let Some(b) = l.backlog {
                p.push(format!("backlog={b}"));
            }
            o.line(&p);
        }
        if !s.server_name.is_empty() {
            let mut p = vec![w("server_name")];
            p.extend(s.server_name.iter().map(|n| w(&n.as_written())));
            o.line(&p);
        }
        settings(&mut o, &s.settings);
        steps(&mut o, &s.steps);
        if let Some(t) = &s.try_files {
            try_files(&mut o, t);
        }
        if s.stub_status {
            o.line(&[w("stub_status")]);
        }
        for l in &s.locations {
            location(&mut o, l);
        }
        o.close();
    }
    o.close();
    o.text
}
