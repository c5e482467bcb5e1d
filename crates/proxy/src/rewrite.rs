//! nginx's rewrite module: `rewrite`, `return`, `set`, `break` and `if`, compiled once
//! and run per request in nginx's order (`ngx_http_rewrite_module.c` and the script
//! engine of `ngx_http_script.c`). Pure: a run reads and changes the request's URI,
//! arguments and variables and says what happens next; the handler does the rest (find
//! the location again, answer, or go on).

use std::collections::HashMap;
use std::sync::Mutex;

use fulcrum_nginx_conf::model::{Condition, FileTest, If, Return, RewriteFlag, Step, Template};
use regex::Regex;

use crate::request::Req;
use crate::site::{Loc, Site};

/// A compiled directive.
#[derive(Debug)]
pub enum Op {
    Rewrite(Rewrite),
    Return(Return),
    Set {
        variable: String,
        value: Template,
    },
    Break,
    If {
        cond: Cond,
        ops: Vec<Op>,
        /// In a location: the configuration that applies once the condition holds.
        loc: Option<Box<Loc>>,
    },
}

#[derive(Debug)]
pub struct Rewrite {
    pub regex: Regex,
    pub pattern: String,
    /// Without the trailing `?`.
    pub replacement: Template,
    /// No `?` at the end: the request's arguments are kept (appended).
    pub add_args: bool,
    /// 301 or 302: answer with a redirect to the result.
    pub redirect: Option<u16>,
    /// `last` (find the location again) or `break` (stay); None: go on with the next
    /// directive.
    pub stop: Option<RewriteFlag>,
}

/// An `if` condition as written, with its regex compiled (for `~` and its kin).
#[derive(Debug)]
pub struct Cond {
    pub condition: Condition,
    pub regex: Option<Regex>,
}

/// Builds the configuration of an `if` in a location (None at server level).
pub type IfLoc<'a> = dyn FnMut(&If) -> Result<Option<Box<Loc>>, String> + 'a;

/// Compiles a server's or location's directives.
pub fn compile(steps: &[Step], if_loc: &mut IfLoc<'_>) -> Result<Vec<Op>, String> {
    let regex = |p: &str, ci: bool| {
        regex::RegexBuilder::new(p)
            .case_insensitive(ci)
            .build()
            .map_err(|e| format!("regex \"{p}\": {e}"))
    };
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        out.push(match s {
            Step::Rewrite(r) => {
                let raw = r.replacement.as_str();
                let (text, add_args) = match raw.strip_suffix('?') {
                    Some(t) => (t, false),
                    None => (raw, true),
                };
                let absolute = ["http://", "https://", "$scheme"]
                    .iter()
                    .any(|p| text.starts_with(p));
                let redirect = match r.flag {
                    Some(RewriteFlag::Permanent) => Some(301),
                    Some(RewriteFlag::Redirect) => Some(302),
                    _ if absolute => Some(302),
                    _ => None,
                };
                Op::Rewrite(Rewrite {
                    regex: regex(&r.regex, false)?,
                    pattern: r.regex.clone(),
                    replacement: Template::new(text),
                    add_args,
                    redirect,
                    stop: r.flag,
                })
            }
            Step::Return(r) => Op::Return(r.clone()),
            Step::Set { variable, value } => Op::Set {
                variable: variable.clone(),
                value: value.clone(),
            },
            Step::Break => Op::Break,
            Step::If(i) => Op::If {
                cond: Cond {
                    condition: i.condition.clone(),
                    regex: match &i.condition {
                        Condition::Match {
                            regex: r,
                            case_insensitive,
                            ..
                        } => Some(regex(r, *case_insensitive)?),
                        _ => None,
                    },
                },
                ops: compile(&i.steps, if_loc)?,
                loc: if_loc(i)?,
            },
        });
    }
    Ok(out)
}

/// The names `set` gives values to, for uninitialized_variable_warn.
pub fn declared(ops: &[Op], out: &mut std::collections::HashSet<String>) {
    for op in ops {
        match op {
            Op::Set { variable, .. } => {
                out.insert(variable.clone());
            }
            Op::If { ops, .. } => declared(ops, out),
            _ => {}
        }
    }
}

/// A request's state for the rewrite module and its variables.
#[derive(Debug)]
pub struct Script {
    /// Values of `set` and of named captures.
    pub vars: HashMap<String, String>,
    /// `$1` to `$9` of the last regex that matched (none after one that did not).
    pub captures: Vec<String>,
    /// A rewrite changed the URI (nginx's r->internal): the upstream gets `$uri` and
    /// `$args`, not the client's target.
    pub internal: bool,
    /// The URI changed in a location's rewrite phase: find the location again.
    pub uri_changed: bool,
    /// False after `rewrite ... break` (or `break` after a rewrite): proxy_pass's URI part
    /// no longer replaces the location's prefix.
    pub valid_location: bool,
    /// The client's path had `%` escapes or `+` (nginx's quoted_uri, plus_in_uri):
    /// captures put into arguments or redirects are escaped again.
    pub quoted: bool,
    /// `set` variables read before any value was set, for the warning.
    pub uninitialized: Mutex<Vec<String>>,
    /// rewrite_log's notices.
    pub notices: Vec<String>,
    /// The root or alias where the request is now (the server's, then its location's),
    /// for `$document_root`.
    pub root: Option<std::sync::Arc<fulcrum_nginx_conf::model::Root>>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            vars: HashMap::new(),
            captures: Vec::new(),
            internal: false,
            uri_changed: false,
            valid_location: true,
            quoted: false,
            uninitialized: Mutex::new(Vec::new()),
            notices: Vec::new(),
            root: None,
        }
    }
}

impl Script {
    /// Records what a regex matched: numbered captures and named ones as variables.
    pub fn matched(&mut self, re: &Regex, subject: &str) -> bool {
        let Some(c) = re.captures(subject) else {
            self.captures.clear();
            return false;
        };
        self.captures = (1..c.len())
            .map(|i| c.get(i).map_or("", |m| m.as_str()).to_string())
            .collect();
        for name in re.capture_names().flatten() {
            if let Some(m) = c.name(name) {
                self.vars.insert(name.to_string(), m.as_str().to_string());
            }
        }
        true
    }
}

/// What the directives decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on (with the URI as it now is).
    Continue,
    /// Answer: `return`, or a rewrite's redirect (its Location as the text).
    Answer { code: u16, text: Option<String> },
    /// 500 (a rewrite to an empty URI).
    Error,
}

enum Flow {
    Next,
    Stop,
    Done(Outcome),
}

/// Runs `ops` for `r`; returns the outcome and, when an `if` in a location held, the
/// configuration that now applies.
pub(crate) fn run<'a>(
    ops: &'a [Op],
    r: &mut Req,
    site: &Site,
    server: &str,
    log: bool,
) -> (Outcome, Option<&'a Loc>) {
    let mut loc = None;
    let outcome = match exec(ops, r, site, server, log, &mut loc) {
        Flow::Done(o) => o,
        Flow::Next | Flow::Stop => Outcome::Continue,
    };
    (outcome, loc)
}

fn exec<'a>(
    ops: &'a [Op],
    r: &mut Req,
    site: &Site,
    server: &str,
    log: bool,
    loc: &mut Option<&'a Loc>,
) -> Flow {
    for op in ops {
        match op {
            Op::Rewrite(rw) => {
                let hit = r.script.matched(&rw.regex, &r.uri);
                if log {
                    let verb = if hit { "matches" } else { "does not match" };
                    let line = format!("\"{}\" {verb} \"{}\"", rw.pattern, r.uri);
                    r.script.notices.push(line);
                }
                if !hit {
                    continue;
                }
                let value = replacement(rw, r, site, server);
                if let Some(code) = rw.redirect {
                    let mut location = unescape_redirect(&value.text);
                    if rw.add_args && !r.args.is_empty() {
                        location.push(if value.has_args { '&' } else { '?' });
                        location.push_str(&r.args);
                    }
                    if log {
                        r.script
                            .notices
                            .push(format!("rewritten redirect: \"{location}\""));
                    }
                    return Flow::Done(Outcome::Answer {
                        code,
                        text: Some(location),
                    });
                }
                let (path, args) = match value.args_at {
                    Some(i) => {
                        let mut args = value.text[i + 1..].to_string();
                        if rw.add_args && !r.args.is_empty() {
                            args.push('&');
                            args.push_str(&r.args);
                        }
                        (value.text[..i].to_string(), Some(args))
                    }
                    None => (value.text, (!rw.add_args).then(String::new)),
                };
                if let Some(a) = args {
                    r.args = a;
                }
                if log {
                    r.script
                        .notices
                        .push(format!("rewritten data: \"{path}\", args: \"{}\"", r.args));
                }
                r.script.internal = true;
                if rw.stop == Some(RewriteFlag::Break) {
                    r.script.valid_location = false;
                    r.script.uri_changed = false;
                } else {
                    r.script.uri_changed = true;
                }
                if path.is_empty() {
                    return Flow::Done(Outcome::Error);
                }
                r.uri = path;
                if rw.stop.is_some() {
                    return Flow::Stop;
                }
            }
            Op::Return(ret) => {
                let text = ret.text.as_ref().map(|t| r.ctx(site, server, "").eval(t));
                return Flow::Done(Outcome::Answer {
                    code: ret.code,
                    text,
                });
            }
            Op::Set { variable, value } => {
                let v = r.ctx(site, server, "").eval(value);
                if variable == "args" {
                    r.args = v;
                } else {
                    r.script.vars.insert(variable.clone(), v);
                }
            }
            Op::Break => {
                if r.script.uri_changed {
                    r.script.valid_location = false;
                    r.script.uri_changed = false;
                }
                return Flow::Stop;
            }
            Op::If {
                cond,
                ops,
                loc: if_loc,
            } => {
                if !holds(cond, r, site, server) {
                    continue;
                }
                if let Some(l) = if_loc {
                    *loc = Some(l);
                }
                match exec(ops, r, site, server, log, loc) {
                    Flow::Next => {}
                    other => return other,
                }
            }
        }
    }
    Flow::Next
}

fn holds(cond: &Cond, r: &mut Req, site: &Site, server: &str) -> bool {
    let var = |r: &Req, name: &str| r.ctx(site, server, "").var(name, 0).unwrap_or_default();
    match &cond.condition {
        Condition::Variable(v) => {
            let v = var(r, v);
            !v.is_empty() && v != "0"
        }
        Condition::Compare {
            variable,
            negate,
            value,
        } => {
            let left = var(r, variable);
            let right = r.ctx(site, server, "").eval(value);
            (left == right) != *negate
        }
        Condition::Match {
            variable, negate, ..
        } => {
            let subject = var(r, variable);
            let regex = cond.regex.as_ref().expect("compiled with the condition");
            r.script.matched(regex, &subject) != *negate
        }
        Condition::File { negate, test, path } => {
            let p = r.ctx(site, server, "").eval(path);
            let meta = std::fs::metadata(&p);
            let yes = match test {
                FileTest::File => meta.is_ok_and(|m| m.is_file()),
                FileTest::Dir => meta.is_ok_and(|m| m.is_dir()),
                FileTest::Exists => meta.is_ok(),
                FileTest::Executable => {
                    use std::os::unix::fs::PermissionsExt;
                    meta.is_ok_and(|m| m.permissions().mode() & 0o100 != 0)
                }
            };
            yes != *negate
        }
    }
}

struct Value {
    text: String,
    /// Where a literal `?` begins the arguments (not for redirects).
    args_at: Option<usize>,
    has_args: bool,
}

/// A rewrite's result: the replacement with variables and captures, captures escaped
/// for arguments (after `?`) or redirects when the client's URI was escaped, as
/// ngx_http_script_copy_capture_code does.
fn replacement(rw: &Rewrite, r: &Req, site: &Site, server: &str) -> Value {
    use fulcrum_nginx_conf::model::Part;
    let ctx = r.ctx(site, server, "");
    let mut text = String::new();
    let mut args_at = None;
    let mut has_args = false;
    for p in rw.replacement.parts() {
        match p {
            Part::Literal(l) => {
                if let Some(i) = l.find('?') {
                    has_args = true;
                    if rw.redirect.is_none() && args_at.is_none() {
                        args_at = Some(text.len() + i);
                    }
                }
                text.push_str(l);
            }
            Part::Variable(v) if v.len() == 1 && v.as_bytes()[0].is_ascii_digit() => {
                let n = usize::from(v.as_bytes()[0] - b'0');
                let cap = r.script.captures.get(n - 1).map_or("", String::as_str);
                let escape = (args_at.is_some() || rw.redirect.is_some()) && r.script.quoted;
                if escape {
                    text.push_str(&escape_args(cap));
                } else {
                    text.push_str(cap);
                }
            }
            Part::Variable(v) => {
                if let Some(x) = ctx.var(v, 0) {
                    text.push_str(&x);
                }
            }
        }
    }
    Value {
        text,
        args_at,
        has_args,
    }
}

/// nginx's NGX_ESCAPE_ARGS: space, `#`, `%`, `&`, `+`, `;`, `?`, controls and bytes
/// from 0x7f.
fn escape_args(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'%' | b'&' | b'+' | b';' | b'?') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// nginx's NGX_UNESCAPE_REDIRECT: before the first `?`, `%XX` for a printable character
/// above `%` is decoded; the rest stays as it is.
fn unescape_redirect(s: &str) -> String {
    let bytes = s.as_bytes();
    let end = s.find('?').unwrap_or(s.len());
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < end {
        if bytes[i] == b'%' && i + 2 < end + 1 && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if v > b'%' && v < 0x7f {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out.extend_from_slice(&bytes[end..]);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_nginx() {
        assert_eq!(escape_args("a b&c+d"), "a%20b%26c%2Bd");
        assert_eq!(unescape_redirect("/a%2Fb%20c?x=%2F"), "/a/b%20c?x=%2F");
    }
}
