//! The gzip and auth_basic modules' directives (and satisfy), checked as nginx checks
//! them.

use super::*;

impl Builder<'_> {
    /// gzip and its settings, auth_basic and satisfy. True when `d` was one.
    pub(super) fn gzip_setting(&mut self, d: &Directive, st: &mut Settings) -> bool {
        match d.name.text.as_str() {
            "gzip" | "gzip_vary" => {
                let slot = if d.name.text == "gzip" {
                    &mut st.gzip
                } else {
                    &mut st.gzip_vary
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            "gzip_comp_level" => {
                if self.dup(&st.gzip_comp_level, d) {
                    return true;
                }
                match d.args[0].text.parse::<u32>() {
                    Ok(n) if (1..=9).contains(&n) => st.gzip_comp_level = Some(n),
                    Ok(_) => self.error(d.args[0].span, "value must be between 1 and 9"),
                    Err(_) => self.error(
                        d.args[0].span,
                        "\"gzip_comp_level\" directive invalid number",
                    ),
                }
            }
            "gzip_min_length" => {
                if self.dup(&st.gzip_min_length, d) {
                    return true;
                }
                match parse_size(&d.args[0].text) {
                    Some(n) => st.gzip_min_length = Some(n),
                    None => self.error(
                        d.args[0].span,
                        "\"gzip_min_length\" directive invalid value",
                    ),
                }
            }
            "gzip_buffers" => {
                // Memory for zlib's output in nginx; ours streams, so only checked.
                let n = d.args[0].text.parse::<u32>().ok().filter(|n| *n > 0);
                let size = parse_size(&d.args[1].text).filter(|s| *s > 0);
                if n.is_none() || size.is_none() {
                    self.error(d.name.span, "\"gzip_buffers\" directive invalid value");
                }
            }
            "gzip_http_version" => {
                if self.dup(&st.gzip_http_version, d) {
                    return true;
                }
                st.gzip_http_version = match d.args[0].text.as_str() {
                    "1.0" => Some(HttpVersion::V1_0),
                    "1.1" => Some(HttpVersion::V1_1),
                    v => {
                        self.error(d.args[0].span, format!("invalid value \"{v}\""));
                        None
                    }
                };
            }
            "gzip_proxied" => {
                if self.dup(&st.gzip_proxied, d) {
                    return true;
                }
                let mut bits = 0;
                for a in &d.args {
                    match GzipProxied::bit(&a.text) {
                        Some(b) => bits |= b,
                        None => {
                            self.error(a.span, format!("invalid value \"{}\"", a.text));
                            return true;
                        }
                    }
                }
                st.gzip_proxied = Some(GzipProxied(bits));
            }
            "gzip_types" => {
                if self.dup(&st.gzip_types, d) {
                    return true;
                }
                let mut types: Vec<String> = Vec::new();
                for a in &d.args {
                    let t = a.text.to_ascii_lowercase();
                    if t == "text/html" || types.contains(&t) {
                        self.diags.push(Diagnostic::warning(
                            a.span,
                            format!("duplicate MIME type \"{}\"", a.text),
                        ));
                        continue;
                    }
                    types.push(t);
                }
                st.gzip_types = Some(types);
            }
            "gzip_disable" => {
                let mut dis = st.gzip_disable.take().unwrap_or_default();
                for a in &d.args {
                    match a.text.as_str() {
                        "msie6" => dis.msie6 = true,
                        // nginx's degradation module is not in Debian's packages.
                        "degradation" => {}
                        _ => {
                            if self.regex(a, true) {
                                dis.regexes.push(a.text.clone());
                            }
                        }
                    }
                }
                st.gzip_disable = Some(dis);
            }
            "auth_basic" | "auth_basic_user_file" => {
                let slot = if d.name.text == "auth_basic" {
                    &mut st.auth_basic
                } else {
                    &mut st.auth_basic_user_file
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = Some(Template(d.args[0].text.clone()));
            }
            "satisfy" => {
                if self.dup(&st.satisfy_any, d) {
                    return true;
                }
                st.satisfy_any = match d.args[0].text.as_str() {
                    "all" => Some(false),
                    "any" => Some(true),
                    v => {
                        self.error(d.args[0].span, format!("invalid value \"{v}\""));
                        None
                    }
                };
            }
            _ => return false,
        }
        true
    }
}
