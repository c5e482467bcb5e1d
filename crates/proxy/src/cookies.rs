//! proxy_cookie_domain, proxy_cookie_path and proxy_cookie_flags, as nginx's proxy
//! module rewrites an upstream's Set-Cookie: the cookie read into `name=value` and its
//! attributes, the first domain (path) rule that matches rewrites the attribute's value,
//! the first flags rule whose cookie matches sets or clears Secure, HttpOnly and
//! SameSite; a cookie changed is written back with `; ` between its parts, one left alone
//! keeps its bytes.

use fulcrum_nginx_conf::model::{CookieFlags, CookieMatch, CookieRewrite};
use regex::{Regex, RegexBuilder};

/// A rule's matcher, its regex compiled.
#[derive(Debug, Clone)]
pub enum Matcher {
    Plain(fulcrum_nginx_conf::model::Template),
    Regex(Regex),
}

impl Matcher {
    fn of(m: &CookieMatch) -> Matcher {
        match m {
            CookieMatch::Plain(t) => Matcher::Plain(t.clone()),
            CookieMatch::Regex {
                pattern,
                case_insensitive,
            } => RegexBuilder::new(pattern)
                .case_insensitive(*case_insensitive)
                .build()
                .map_or_else(
                    // Checked when the configuration was read.
                    |_| Matcher::Plain(fulcrum_nginx_conf::model::Template::new("\u{0}")),
                    Matcher::Regex,
                ),
        }
    }
}

/// The rules for a location.
#[derive(Debug, Clone, Default)]
pub struct Cookies {
    pub domains: Vec<(Matcher, fulcrum_nginx_conf::model::Template)>,
    pub paths: Vec<(Matcher, fulcrum_nginx_conf::model::Template)>,
    pub flags: Vec<(Matcher, Vec<fulcrum_nginx_conf::model::Template>)>,
}

impl Cookies {
    pub fn of(
        domains: Option<&[CookieRewrite]>,
        paths: Option<&[CookieRewrite]>,
        flags: Option<&[CookieFlags]>,
    ) -> Cookies {
        let rules = |l: Option<&[CookieRewrite]>| {
            l.unwrap_or_default()
                .iter()
                .map(|r| (Matcher::of(&r.matcher), r.replacement.clone()))
                .collect()
        };
        Cookies {
            domains: rules(domains),
            paths: rules(paths),
            flags: flags
                .unwrap_or_default()
                .iter()
                .map(|f| (Matcher::of(&f.cookie), f.flags.clone()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.paths.is_empty() && self.flags.is_empty()
    }
}

/// A cookie's parts: (key, value) with nginx's trimming; None value: no `=`.
fn parse(v: &str) -> Vec<(Option<String>, Option<String>)> {
    v.split(';')
        .map(|part| {
            let part = part.trim_start_matches(' ');
            match part.split_once('=') {
                Some((k, val)) => (
                    Some(k.trim_end_matches(' ').to_string()),
                    Some(val.trim_matches(' ').to_string()),
                ),
                None => (Some(part.trim_end_matches(' ').to_string()), None),
            }
        })
        .collect()
}

/// A domain or path rule applied to `value`: Some(new value) when one matched.
fn rewrite(
    value: &str,
    rules: &[(Matcher, fulcrum_nginx_conf::model::Template)],
    domain: bool,
    eval: &dyn Fn(&fulcrum_nginx_conf::model::Template) -> String,
) -> Option<String> {
    for (m, replacement) in rules {
        match m {
            Matcher::Regex(re) => {
                let Some(caps) = re.captures(value) else {
                    continue;
                };
                // $1..$9 are the regex's captures; the rest as variables.
                let mut text = String::new();
                let raw = replacement.as_str();
                let mut chars = raw.char_indices().peekable();
                while let Some((_, c)) = chars.next() {
                    match (c, chars.peek()) {
                        ('$', Some((_, d))) if d.is_ascii_digit() && *d != '0' => {
                            let n = d.to_digit(10).unwrap_or(0) as usize;
                            text.push_str(caps.get(n).map_or("", |m| m.as_str()));
                            chars.next();
                        }
                        _ => text.push(c),
                    }
                }
                return Some(eval(&fulcrum_nginx_conf::model::Template::new(text)));
            }
            Matcher::Plain(pattern) => {
                let pattern = eval(pattern);
                if domain {
                    // A leading dot is kept, and not compared.
                    let (dot, rest) = match value.strip_prefix('.') {
                        Some(r) if !value.is_empty() => (".", r),
                        _ => ("", value),
                    };
                    if rest.eq_ignore_ascii_case(&pattern) {
                        return Some(format!("{dot}{}", eval(replacement)));
                    }
                } else if let Some(rest) = value.strip_prefix(pattern.as_str()) {
                    return Some(format!("{}{rest}", eval(replacement)));
                }
            }
        }
    }
    None
}

const SECURE: u8 = 1;
const NOSECURE: u8 = 2;
const HTTPONLY: u8 = 4;
const NOHTTPONLY: u8 = 8;
const STRICT: u8 = 16;
const LAX: u8 = 32;
const NONE: u8 = 64;
const NOSAMESITE: u8 = 128;

/// An upstream's Set-Cookie as the rules make it; None when nothing changes.
pub fn rewrite_cookie(
    value: &str,
    c: &Cookies,
    eval: &dyn Fn(&fulcrum_nginx_conf::model::Template) -> String,
) -> Option<String> {
    let mut attrs = parse(value);
    if attrs.first().is_none_or(|(_, v)| v.is_none()) {
        return None;
    }
    let mut changed = false;
    for (k, v) in attrs.iter_mut().skip(1) {
        let (Some(key), Some(val)) = (k.as_deref(), v.as_mut()) else {
            continue;
        };
        let rules = if !c.domains.is_empty() && key.eq_ignore_ascii_case("domain") {
            Some((&c.domains, true))
        } else if !c.paths.is_empty() && key.eq_ignore_ascii_case("path") {
            Some((&c.paths, false))
        } else {
            None
        };
        if let Some((rules, domain)) = rules {
            if let Some(new) = rewrite(val, rules, domain, eval) {
                *val = new;
                changed = true;
            }
        }
    }
    if !c.flags.is_empty() {
        let name = attrs[0].0.clone().unwrap_or_default();
        let rule = c.flags.iter().find(|(m, _)| match m {
            Matcher::Regex(re) => re.is_match(&name),
            Matcher::Plain(t) => eval(t).eq_ignore_ascii_case(&name),
        });
        if let Some((_, flags)) = rule {
            let mut f = 0u8;
            for t in flags {
                f |= match eval(t).to_ascii_lowercase().as_str() {
                    "secure" => SECURE,
                    "nosecure" => NOSECURE,
                    "httponly" => HTTPONLY,
                    "nohttponly" => NOHTTPONLY,
                    "samesite=strict" => STRICT,
                    "samesite=lax" => LAX,
                    "samesite=none" => NONE,
                    "nosamesite" => NOSAMESITE,
                    _ => 0,
                };
            }
            if f != 0 {
                edit_flags(&mut attrs, f);
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 16);
    for (i, (k, v)) in attrs.iter().enumerate() {
        let Some(k) = k else { continue };
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    Some(out)
}

/// ngx_http_proxy_edit_cookie_flags.
fn edit_flags(attrs: &mut Vec<(Option<String>, Option<String>)>, mut f: u8) {
    for (k, v) in attrs.iter_mut().skip(1) {
        let Some(key) = k.as_deref() else { continue };
        if key.eq_ignore_ascii_case("secure") {
            if f & SECURE != 0 {
                f &= !SECURE;
            } else if f & NOSECURE != 0 {
                *k = None;
            }
        } else if key.eq_ignore_ascii_case("httponly") {
            if f & HTTPONLY != 0 {
                f &= !HTTPONLY;
            } else if f & NOHTTPONLY != 0 {
                *k = None;
            }
        } else if key.eq_ignore_ascii_case("samesite") {
            let is = |want: &str| v.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(want));
            let wanted = [(STRICT, "Strict"), (LAX, "Lax"), (NONE, "None")]
                .into_iter()
                .find(|(bit, _)| f & bit != 0);
            match wanted {
                Some((bit, name)) => {
                    f &= !bit;
                    if !is(name) {
                        *k = Some("SameSite".into());
                        *v = Some(name.into());
                    }
                }
                None if f & NOSAMESITE != 0 => *k = None,
                None => {}
            }
        }
    }
    if f & SECURE != 0 {
        attrs.push((Some("Secure".into()), None));
    }
    if f & HTTPONLY != 0 {
        attrs.push((Some("HttpOnly".into()), None));
    }
    let site = if f & STRICT != 0 {
        Some("Strict")
    } else if f & LAX != 0 {
        Some("Lax")
    } else if f & NONE != 0 {
        Some("None")
    } else {
        None
    };
    if let Some(s) = site {
        attrs.push((Some("SameSite".into()), Some(s.into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_nginx_conf::model::Template;

    fn plain(s: &str) -> Matcher {
        Matcher::Plain(Template::new(s))
    }

    fn id(t: &Template) -> String {
        t.as_str().to_string()
    }

    #[test]
    fn domains_paths_and_flags_as_nginx_rewrites_them() {
        let c = Cookies {
            domains: vec![(plain("backend.local"), Template::new("example.org"))],
            paths: vec![(plain("/app/"), Template::new("/"))],
            flags: vec![(
                plain("sid"),
                vec![Template::new("secure"), Template::new("samesite=lax")],
            )],
        };
        assert_eq!(
            rewrite_cookie("a=1;Domain=.Backend.Local ;path=/app/x", &c, &id).as_deref(),
            Some("a=1; Domain=.example.org; path=/x")
        );
        assert_eq!(
            rewrite_cookie("sid=2; HttpOnly; SameSite=Strict", &c, &id).as_deref(),
            Some("sid=2; HttpOnly; SameSite=Lax; Secure")
        );
        // Nothing to change: the bytes as they came.
        assert_eq!(rewrite_cookie("a=1;  Path=/other", &c, &id), None);
        assert_eq!(
            rewrite_cookie("novalue; Domain=backend.local", &c, &id),
            None
        );
    }
}
