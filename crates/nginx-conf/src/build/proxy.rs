//! The proxy module's directives around the request and response heads: which headers
//! pass, which instructions of the upstream count, what method and body go up.

use super::*;

/// The upstream headers proxy_ignore_headers can name.
const IGNORABLE: [&str; 9] = [
    "x-accel-redirect",
    "x-accel-expires",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
    "expires",
    "cache-control",
    "set-cookie",
    "vary",
];

impl Builder<'_> {
    /// A cookie domain, path or name to match: `~` (for a path, `~*` too) makes it a
    /// regex (a domain's and a name's match whatever the case).
    fn cookie_match(&mut self, w: &Word, caseless: bool) -> Option<CookieMatch> {
        let (pattern, case_insensitive) = if let Some(p) = w.text.strip_prefix("~*") {
            (p, true)
        } else if let Some(p) = w.text.strip_prefix('~') {
            (p, caseless)
        } else {
            return Some(CookieMatch::Plain(Template(w.text.clone())));
        };
        let word = Word {
            text: pattern.to_string(),
            ..w.clone()
        };
        self.regex(&word, case_insensitive)
            .then(|| CookieMatch::Regex {
                pattern: pattern.to_string(),
                case_insensitive,
            })
    }

    /// True when `d` was one of these.
    pub(super) fn proxy_setting(&mut self, d: &Directive, st: &mut Settings) -> bool {
        match d.name.text.as_str() {
            "proxy_hide_header" | "proxy_pass_header" => {
                let slot = if d.name.text == "proxy_hide_header" {
                    &mut st.proxy_hide_header
                } else {
                    &mut st.proxy_pass_header
                };
                slot.get_or_insert_with(Vec::new)
                    .push(d.args[0].text.clone());
            }
            "proxy_ignore_headers" => {
                if self.dup(&st.proxy_ignore_headers, d) {
                    return true;
                }
                let mut list = Vec::new();
                for a in &d.args {
                    let lower = a.text.to_ascii_lowercase();
                    if !IGNORABLE.contains(&lower.as_str()) {
                        self.error(a.span, format!("invalid value \"{}\"", a.text));
                        return true;
                    }
                    list.push(lower);
                }
                st.proxy_ignore_headers = Some(list);
            }
            "proxy_intercept_errors" | "proxy_pass_request_headers" | "proxy_pass_request_body" => {
                let slot = match d.name.text.as_str() {
                    "proxy_intercept_errors" => &mut st.proxy_intercept_errors,
                    "proxy_pass_request_headers" => &mut st.proxy_pass_request_headers,
                    _ => &mut st.proxy_pass_request_body,
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            "proxy_ssl_verify" | "proxy_ssl_server_name" | "proxy_ssl_session_reuse" => {
                let slot = match d.name.text.as_str() {
                    "proxy_ssl_verify" => &mut st.proxy_ssl_verify,
                    "proxy_ssl_server_name" => &mut st.proxy_ssl_server_name,
                    _ => &mut st.proxy_ssl_session_reuse,
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            "proxy_ssl_verify_depth" => {
                if self.dup(&st.proxy_ssl_verify_depth, d) {
                    return true;
                }
                match d.args[0].text.parse::<u32>() {
                    Ok(n) => st.proxy_ssl_verify_depth = Some(n),
                    Err(_) => self.error(
                        d.args[0].span,
                        "\"proxy_ssl_verify_depth\" directive invalid number",
                    ),
                }
            }
            "proxy_ssl_trusted_certificate"
            | "proxy_ssl_certificate"
            | "proxy_ssl_certificate_key" => {
                let slot = match d.name.text.as_str() {
                    "proxy_ssl_trusted_certificate" => &mut st.proxy_ssl_trusted_certificate,
                    "proxy_ssl_certificate" => &mut st.proxy_ssl_certificate,
                    _ => &mut st.proxy_ssl_certificate_key,
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = Some(d.args[0].text.clone());
                self.files.push((d.args[0].text.clone(), d.args[0].span));
            }
            "proxy_ssl_name" => {
                if self.dup(&st.proxy_ssl_name, d) {
                    return true;
                }
                st.proxy_ssl_name = Some(Template(d.args[0].text.clone()));
            }
            "ssl_protocols" => {
                if self.dup(&st.ssl_protocols, d) {
                    return true;
                }
                const KNOWN: [&str; 6] =
                    ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
                for a in &d.args {
                    if !KNOWN.contains(&a.text.as_str()) {
                        self.error(a.span, format!("invalid value \"{}\"", a.text));
                        return true;
                    }
                }
                st.ssl_protocols = Some(d.args.iter().map(|a| a.text.clone()).collect());
            }
            "proxy_cookie_domain" | "proxy_cookie_path" => {
                let domain = d.name.text == "proxy_cookie_domain";
                let slot = if domain {
                    &mut st.proxy_cookie_domain
                } else {
                    &mut st.proxy_cookie_path
                };
                if d.args.len() == 1 {
                    if d.args[0].text != "off" {
                        self.error(
                            d.args[0].span,
                            format!("invalid parameter \"{}\"", d.args[0].text),
                        );
                        return true;
                    }
                    if slot.as_ref().is_some_and(|l| !l.is_empty()) {
                        self.error(
                            d.name.span,
                            format!("\"{}\" directive is duplicate", d.name.text),
                        );
                        return true;
                    }
                    *slot = Some(Vec::new());
                    return true;
                }
                let matcher = match self.cookie_match(&d.args[0], domain) {
                    Some(m) => m,
                    None => return true,
                };
                let list = if domain {
                    st.proxy_cookie_domain.get_or_insert_with(Vec::new)
                } else {
                    st.proxy_cookie_path.get_or_insert_with(Vec::new)
                };
                list.push(CookieRewrite {
                    matcher,
                    replacement: Template(d.args[1].text.clone()),
                });
            }
            "proxy_cookie_flags" => {
                if d.args[0].text == "off" && d.args.len() == 1 {
                    st.proxy_cookie_flags = Some(Vec::new());
                    return true;
                }
                if d.args.len() < 2 {
                    self.error(
                        d.name.span,
                        "invalid number of arguments in \"proxy_cookie_flags\" directive",
                    );
                    return true;
                }
                let Some(cookie) = self.cookie_match(&d.args[0], true) else {
                    return true;
                };
                const FLAGS: [&str; 8] = [
                    "secure",
                    "nosecure",
                    "httponly",
                    "nohttponly",
                    "samesite=strict",
                    "samesite=lax",
                    "samesite=none",
                    "nosamesite",
                ];
                let mut flags = Vec::new();
                for a in &d.args[1..] {
                    let plain = !Template(a.text.clone()).has_variables();
                    if plain && !FLAGS.iter().any(|f| f.eq_ignore_ascii_case(&a.text)) {
                        self.error(a.span, format!("invalid parameter \"{}\"", a.text));
                        return true;
                    }
                    flags.push(Template(a.text.clone()));
                }
                st.proxy_cookie_flags
                    .get_or_insert_with(Vec::new)
                    .push(CookieFlags { cookie, flags });
            }
            "proxy_bind" => {
                if self.dup(&st.proxy_bind, d) {
                    return true;
                }
                let a = &d.args[0];
                if d.args.len() == 1 && a.text == "off" {
                    st.proxy_bind = Some(ProxyBind::Off);
                    return true;
                }
                let t = Template(a.text.clone());
                if !t.has_variables() && parse_addr_port(&a.text).is_none() {
                    self.error(a.span, format!("invalid address \"{}\"", a.text));
                    return true;
                }
                if let Some(extra) = d.args.get(1) {
                    if extra.text == "transparent" {
                        // It needs CAP_NET_ADMIN in the workers, which hold none.
                        self.error(
                            extra.span,
                            "proxy_bind ... transparent is not implemented: the workers run without capabilities",
                        );
                    } else {
                        self.error(extra.span, format!("invalid parameter \"{}\"", extra.text));
                    }
                    return true;
                }
                st.proxy_bind = Some(ProxyBind::Local(t));
            }
            "proxy_method" | "proxy_set_body" => {
                let slot = if d.name.text == "proxy_method" {
                    &mut st.proxy_method
                } else {
                    &mut st.proxy_set_body
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = Some(Template(d.args[0].text.clone()));
            }
            _ => return false,
        }
        true
    }
}
