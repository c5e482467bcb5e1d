//! The rewrite module (rewrite, return, set, break, if), and the modules whose directives
//! sit among the inherited settings: headers (add_header, expires), realip, access, and
//! the *_temp_path directives.

use super::*;

/// nginx's message for a proxy_pass URI where the location's prefix is unknown.
pub(super) const PROXY_PASS_URI: &str = "\"proxy_pass\" cannot have URI part in location given by regular expression, or inside named location, or inside \"if\" statement, or inside \"limit_except\" block";

impl Builder<'_> {
    /// A directive of the rewrite module into `steps`, in order; true when `d` was one.
    pub(super) fn step(&mut self, d: &Directive, steps: &mut Vec<Step>, ctx: Ctx) -> bool {
        match d.name.text.as_str() {
            "return" => {
                if let Some(r) = self.ret(d) {
                    steps.push(Step::Return(r));
                }
            }
            "rewrite" => {
                if let Some(r) = self.rewrite(d) {
                    steps.push(Step::Rewrite(r));
                }
            }
            "set" => {
                let a = &d.args[0];
                let Some(var) = a.text.strip_prefix('$').filter(|v| !v.is_empty()) else {
                    self.error(a.span, format!("invalid variable name \"{}\"", a.text));
                    return true;
                };
                // nginx's built-in variables cannot be set, but for $args.
                let builtin = BUILTIN_VARIABLES.contains(&var)
                    || VARIABLE_PREFIXES.iter().any(|p| var.starts_with(p));
                if builtin && var != "args" {
                    self.error(a.span, format!("the duplicate \"{var}\" variable"));
                    return true;
                }
                self.map_vars.insert(var.to_string());
                steps.push(Step::Set {
                    variable: var.to_string(),
                    value: Template(d.args[1].text.clone()),
                });
            }
            "break" => steps.push(Step::Break),
            "if" => {
                if let Some(i) = self.if_block(d, ctx) {
                    steps.push(Step::If(Box::new(i)));
                }
            }
            _ => return false,
        }
        true
    }

    /// Checks a regex as nginx compiles it at load time; named captures become variables.
    pub(super) fn regex(&mut self, w: &Word, case_insensitive: bool) -> bool {
        match regex::RegexBuilder::new(&w.text)
            .case_insensitive(case_insensitive)
            .build()
        {
            Ok(_) => {
                self.define_captures(&w.text);
                true
            }
            Err(e) => {
                let why = e.to_string();
                let why = why
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                self.error(w.span, format!("invalid regex \"{}\": {why}", w.text));
                false
            }
        }
    }

    fn rewrite(&mut self, d: &Directive) -> Option<Rewrite> {
        let (re, rep) = (&d.args[0], &d.args[1]);
        if rep.text.is_empty() {
            self.error(rep.span, "empty replacement");
            return None;
        }
        if !self.regex(re, false) {
            return None;
        }
        let flag = match d.args.get(2) {
            None => None,
            Some(w) => Some(match w.text.as_str() {
                "last" => RewriteFlag::Last,
                "break" => RewriteFlag::Break,
                "redirect" => RewriteFlag::Redirect,
                "permanent" => RewriteFlag::Permanent,
                other => {
                    self.error(w.span, format!("invalid parameter \"{other}\""));
                    return None;
                }
            }),
        };
        Some(Rewrite {
            regex: re.text.clone(),
            replacement: Template(rep.text.clone()),
            flag,
        })
    }

    /// `if (CONDITION) { ... }` in a server or a location.
    fn if_block(&mut self, d: &Directive, ctx: Ctx) -> Option<If> {
        let condition = self.condition(d);
        let inner = if ctx == Ctx::Server {
            Ctx::ServerIf
        } else {
            Ctx::LocationIf
        };
        let mut block = If {
            condition: condition
                .clone()
                .unwrap_or(Condition::Variable(String::new())),
            steps: Vec::new(),
            proxy_pass: None,
            settings: Settings::default(),
        };
        for e in d.block.as_deref().unwrap_or_default() {
            if !self.check(e, inner) {
                continue;
            }
            if self.step(e, &mut block.steps, inner) {
                continue;
            }
            if self.setting(e, &mut block.settings, inner) {
                continue;
            }
            if e.name.text == "proxy_pass" {
                if self.dup(&block.proxy_pass, e) {
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
                if !Template(t.clone()).has_variables() && proxy_uri(t).is_some() {
                    self.error(e.args[0].span, PROXY_PASS_URI);
                    continue;
                }
                block.proxy_pass = Some(Template(t.clone()));
            }
        }
        condition.map(|_| block)
    }

    /// The condition of `if`, split as nginx splits it: `(` and `)` glued to the first and
    /// last words or standing alone; a variable alone, compared, or matched; or a file test.
    fn condition(&mut self, d: &Directive) -> Option<Condition> {
        let mut words: Vec<(String, Span)> =
            d.args.iter().map(|w| (w.text.clone(), w.span)).collect();
        let invalid = |b: &mut Self, (t, s): &(String, Span)| {
            b.error(*s, format!("invalid condition \"{t}\""));
        };
        if !words[0].0.starts_with('(') {
            invalid(self, &words[0]);
            return None;
        }
        if words[0].0 == "(" {
            words.remove(0);
        } else {
            words[0].0.remove(0);
        }
        let Some(last) = words.last_mut() else {
            self.error(d.name.span, "invalid condition \"(\"");
            return None;
        };
        if !last.0.ends_with(')') {
            let l = last.clone();
            invalid(self, &l);
            return None;
        }
        if last.0 == ")" {
            words.pop();
        } else {
            last.0.pop();
        }
        let Some(first) = words.first().cloned() else {
            self.error(d.name.span, "invalid condition \"()\"");
            return None;
        };
        if first.0.len() > 1 && first.0.starts_with('$') {
            let variable = first.0[1..].to_string();
            if words.len() != 1 && words.len() != 3 {
                invalid(self, &first);
                return None;
            }
            if words.len() == 1 {
                return Some(Condition::Variable(variable));
            }
            let (op, value) = (&words[1], &words[2]);
            return match op.0.as_str() {
                "=" | "!=" => Some(Condition::Compare {
                    variable,
                    negate: op.0 == "!=",
                    value: Template(value.0.clone()),
                }),
                "~" | "~*" | "!~" | "!~*" => {
                    let case_insensitive = op.0.ends_with('*');
                    let w = Word {
                        text: value.0.clone(),
                        span: value.1,
                        quoted: false,
                    };
                    if !self.regex(&w, case_insensitive) {
                        return None;
                    }
                    Some(Condition::Match {
                        variable,
                        negate: op.0.starts_with('!'),
                        case_insensitive,
                        regex: value.0.clone(),
                    })
                }
                _ => {
                    self.error(op.1, format!("unexpected \"{}\" in condition", op.0));
                    None
                }
            };
        }
        let (negate, letter) = match first.0.as_bytes() {
            [b'-', l] => (false, *l),
            [b'!', b'-', l] => (true, *l),
            _ => {
                invalid(self, &first);
                return None;
            }
        };
        if words.len() != 2 {
            invalid(self, &first);
            return None;
        }
        let test = match letter {
            b'f' => FileTest::File,
            b'd' => FileTest::Dir,
            b'e' => FileTest::Exists,
            b'x' => FileTest::Executable,
            _ => {
                invalid(self, &first);
                return None;
            }
        };
        Some(Condition::File {
            negate,
            test,
            path: Template(words[1].0.clone()),
        })
    }

    /// The settings of the headers, realip and access modules and the temporary paths;
    /// true when `d` was one.
    pub(super) fn module_setting(&mut self, d: &Directive, st: &mut Settings) -> bool {
        match d.name.text.as_str() {
            "add_header" => {
                let always = match d.args.get(2) {
                    None => false,
                    Some(w) if w.text == "always" => true,
                    Some(w) => {
                        self.error(w.span, format!("invalid parameter \"{}\"", w.text));
                        return true;
                    }
                };
                st.add_header.get_or_insert_with(Vec::new).push(AddHeader {
                    name: d.args[0].text.clone(),
                    value: Template(d.args[1].text.clone()),
                    always,
                });
            }
            "expires" => {
                if st.expires.is_some() {
                    self.error(d.name.span, "\"expires\" directive is duplicate");
                    return true;
                }
                st.expires = self.expires(d);
            }
            "rewrite_log" | "uninitialized_variable_warn" | "real_ip_recursive" => {
                let slot = match d.name.text.as_str() {
                    "rewrite_log" => &mut st.rewrite_log,
                    "uninitialized_variable_warn" => &mut st.uninitialized_variable_warn,
                    _ => &mut st.real_ip_recursive,
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            "set_real_ip_from" => {
                if let Some(s) = self.source(&d.args[0], false) {
                    st.set_real_ip_from.get_or_insert_with(Vec::new).push(s);
                }
            }
            "real_ip_header" => {
                if self.dup(&st.real_ip_header, d) {
                    return true;
                }
                st.real_ip_header = Some(d.args[0].text.clone());
            }
            "allow" | "deny" => {
                if let Some(source) = self.source(&d.args[0], true) {
                    st.access.get_or_insert_with(Vec::new).push(AccessRule {
                        allow: d.name.text == "allow",
                        source,
                    });
                }
            }
            "root" | "alias" => {
                let this = d.name.text.as_str();
                let other = match &st.root {
                    Some(Root::Root(_)) => "root",
                    Some(Root::Alias(_)) => "alias",
                    None => "",
                };
                if !other.is_empty() {
                    let msg = if this == other {
                        format!("\"{this}\" directive is duplicate")
                    } else {
                        format!("\"{this}\" directive is duplicate, \"{other}\" directive was specified earlier")
                    };
                    self.error(d.name.span, msg);
                    return true;
                }
                let path = Template(d.args[0].text.clone());
                st.root = Some(if this == "root" {
                    Root::Root(path)
                } else {
                    Root::Alias(path)
                });
            }
            "index" => {
                let list = st.index.get_or_insert_with(Vec::new);
                list.extend(d.args.iter().map(|w| Template(w.text.clone())));
            }
            "types" => {
                // A second types block adds to the first, as in nginx.
                let types = st.types.get_or_insert_with(Vec::new);
                for e in d.block.as_deref().unwrap_or_default() {
                    if e.block.is_some() {
                        self.error(e.name.span, "unexpected \"{\"");
                        continue;
                    }
                    types.push((
                        e.name.text.clone(),
                        e.args.iter().map(|w| w.text.to_ascii_lowercase()).collect(),
                    ));
                }
            }
            "error_page" => {
                if let Some(p) = self.error_page(d) {
                    st.error_page.get_or_insert_with(Vec::new).push(p);
                }
            }
            "etag" | "log_not_found" => {
                let slot = if d.name.text == "etag" {
                    &mut st.etag
                } else {
                    &mut st.log_not_found
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            "if_modified_since" => {
                if self.dup(&st.if_modified_since, d) {
                    return true;
                }
                st.if_modified_since = match d.args[0].text.as_str() {
                    "off" => Some(IfModifiedSince::Off),
                    "exact" => Some(IfModifiedSince::Exact),
                    "before" => Some(IfModifiedSince::Before),
                    v => {
                        self.error(d.args[0].span, format!("invalid value \"{v}\""));
                        None
                    }
                };
            }
            "client_body_temp_path"
            | "fastcgi_temp_path"
            | "uwsgi_temp_path"
            | "scgi_temp_path" => {
                for level in &d.args[1..] {
                    if !matches!(level.text.as_str(), "1" | "2") {
                        self.error(level.span, format!("invalid value \"{}\"", level.text));
                    }
                }
                self.temp_paths
                    .push((d.name.text.clone(), d.args[0].text.clone()));
            }
            _ => return false,
        }
        true
    }

    /// `error_page CODE... [=[RESPONSE]] URI`, checked as nginx checks it.
    fn error_page(&mut self, d: &Directive) -> Option<ErrorPage> {
        let uri = d.args.last()?;
        let mut codes = Vec::new();
        let mut response = None;
        for (i, w) in d.args[..d.args.len() - 1].iter().enumerate() {
            if let Some(r) = w.text.strip_prefix('=') {
                let code = r.parse::<u16>().ok().filter(|c| *c <= 999);
                if i != d.args.len() - 2 || (!r.is_empty() && code.is_none()) {
                    self.error(w.span, format!("invalid value \"{}\"", w.text));
                    return None;
                }
                response = Some(code.map_or(ErrorPageStatus::Page, ErrorPageStatus::Code));
                continue;
            }
            let Ok(code) = w.text.parse::<u16>() else {
                self.error(w.span, format!("invalid value \"{}\"", w.text));
                return None;
            };
            if code == 499 {
                self.error(w.span, format!("invalid value \"{}\"", w.text));
                return None;
            }
            if !(300..=599).contains(&code) {
                self.error(
                    w.span,
                    format!("value \"{}\" must be between 300 and 599", w.text),
                );
                return None;
            }
            codes.push(code);
        }
        if codes.is_empty() {
            self.error(
                d.name.span,
                "invalid number of arguments in \"error_page\" directive",
            );
            return None;
        }
        Some(ErrorPage {
            codes,
            response,
            uri: Template(uri.text.clone()),
        })
    }

    /// `try_files FILE... URI|=CODE|@NAME`.
    pub(super) fn try_files(&mut self, d: &Directive) -> Option<Vec<Template>> {
        let last = d.args.last()?;
        if let Some(code) = last.text.strip_prefix('=') {
            if !matches!(code.parse::<u16>(), Ok(c) if c <= 999) {
                self.error(last.span, format!("invalid code \"{}\"", last.text));
                return None;
            }
        }
        Some(d.args.iter().map(|w| Template(w.text.clone())).collect())
    }

    /// `expires [modified] TIME|epoch|max|off|@TIME`, or a value with variables.
    fn expires(&mut self, d: &Directive) -> Option<Expires> {
        let modified = d.args.len() == 2;
        if modified && d.args[0].text != "modified" {
            self.error(d.args[0].span, "\"expires\" directive invalid value");
            return None;
        }
        let w = d.args.last()?;
        let t = Template(w.text.clone());
        if t.has_variables() {
            return Some(Expires::Variable(t));
        }
        match parse_expires(&w.text, modified) {
            Ok(e) => Some(e),
            Err(why) => {
                self.error(w.span, format!("\"expires\" directive {why}"));
                None
            }
        }
    }

    /// An address, a CIDR network, `unix:`, or (for allow and deny) `all`.
    fn source(&mut self, w: &Word, all: bool) -> Option<Source> {
        match w.text.as_str() {
            "all" if all => return Some(Source::All),
            "unix:" => return Some(Source::Unix),
            _ => {}
        }
        self.net(w, "parameter")
            .map(|(addr, len)| Source::Net(addr, len))
    }

    /// An address or CIDR network, its host bits cleared (with nginx's warning when
    /// some were set); `what` names it in the error (`parameter`, `network`).
    pub(super) fn net(&mut self, w: &Word, what: &str) -> Option<(IpAddr, u8)> {
        let (addr, len) = match w.text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (w.text.as_str(), None),
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            self.error(w.span, format!("invalid {what} \"{}\"", w.text));
            return None;
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len.map(str::parse::<u8>) {
            None => max,
            Some(Ok(l)) if l <= max => l,
            Some(_) => {
                self.error(w.span, format!("invalid {what} \"{}\"", w.text));
                return None;
            }
        };
        let masked = match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        if masked != ip {
            self.diags.push(Diagnostic::warning(
                w.span,
                format!("low address bits of {} are meaningless", w.text),
            ));
        }
        Some((masked, len))
    }
}

/// Parses an `expires` time as nginx does (also per response, for a value with variables):
/// `epoch`, `max` and `off` (unless after `modified`), `@TIME` (a time of day), or a
/// signed time.
pub fn parse_expires(text: &str, modified: bool) -> Result<Expires, &'static str> {
    if !modified {
        match text {
            "epoch" => return Ok(Expires::Epoch),
            "max" => return Ok(Expires::Max),
            "off" => return Ok(Expires::Off),
            _ => {}
        }
    }
    let (daily, minus, rest) = if let Some(r) = text.strip_prefix('@') {
        if modified {
            return Err("daily time cannot be used with \"modified\" parameter");
        }
        (true, false, r)
    } else if let Some(r) = text.strip_prefix('+') {
        (false, false, r)
    } else if let Some(r) = text.strip_prefix('-') {
        (false, true, r)
    } else {
        (false, false, text)
    };
    let secs = parse_seconds(rest).ok_or("invalid value")?;
    if daily {
        if secs > 24 * 60 * 60 {
            return Err("daily time value must be less than 24 hours");
        }
        return Ok(Expires::Daily(secs));
    }
    let secs = if minus { -secs } else { secs };
    Ok(if modified {
        Expires::Modified(secs)
    } else {
        Expires::Access(secs)
    })
}

/// nginx's ngx_parse_time in seconds: numbers with y, M, w, d, h, m, s (no unit:
/// seconds), each unit once and in decreasing order.
fn parse_seconds(text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut n: i64 = 0;
    let mut digits = false;
    let mut last_unit = i64::MAX;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.checked_mul(10)?.checked_add(i64::from(d))?;
            digits = true;
            continue;
        }
        let unit = match c {
            'y' => 365 * 24 * 3600,
            'M' => 30 * 24 * 3600,
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            ' ' if !digits => continue,
            _ => return None,
        };
        if !digits || unit >= last_unit {
            return None;
        }
        last_unit = unit;
        total = total.checked_add(n.checked_mul(unit)?)?;
        n = 0;
        digits = false;
    }
    total.checked_add(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_values_as_nginx_reads_them() {
        assert_eq!(parse_expires("1h", false), Ok(Expires::Access(3600)));
        assert_eq!(parse_expires("-1", false), Ok(Expires::Access(-1)));
        assert_eq!(
            parse_expires("+30d", false),
            Ok(Expires::Access(30 * 86400))
        );
        assert_eq!(
            parse_expires("1d12h", false),
            Ok(Expires::Access(86400 + 43200))
        );
        assert_eq!(parse_expires("@15h30m", false), Ok(Expires::Daily(55800)));
        assert_eq!(parse_expires("epoch", false), Ok(Expires::Epoch));
        assert_eq!(parse_expires("max", false), Ok(Expires::Max));
        assert_eq!(parse_expires("off", false), Ok(Expires::Off));
        assert_eq!(parse_expires("2h", true), Ok(Expires::Modified(7200)));
        assert!(parse_expires("epoch", true).is_err());
        assert!(parse_expires("@25h", false).is_err());
        assert!(parse_expires("1x", false).is_err());
        assert!(parse_expires("1s1h", false).is_err());
    }
}
