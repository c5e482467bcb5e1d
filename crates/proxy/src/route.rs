//! Which server and which location a request lands in, by nginx's rules, and the
//! normalized `$uri` those rules match against.

use std::net::SocketAddr;

use fulcrum_nginx_conf::model::{LocationMatch, ServerName};

use crate::site::{Loc, Site, VServer};

/// `$uri`: the path percent-decoded, with `//` merged and `.`/`..` segments resolved, as
/// nginx normalizes it. None when `..` climbs above the root (nginx answers 400).
pub fn normalize(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                decoded.push(v);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded).into_owned();
    let mut out: Vec<&str> = Vec::new();
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let mut s = String::from("/");
    s.push_str(&out.join("/"));
    if trailing && s.len() > 1 {
        s.push('/');
    }
    Some(s)
}

/// The server for a request: by the connection's local address among the servers that
/// listen there (a specific address first, else the wildcard), then by Host: exact name,
/// longest leading wildcard, longest trailing wildcard, first regex, else the
/// default_server (or the first server) of that address.
pub fn server<'a>(site: &'a Site, local: SocketAddr, host: Option<&str>) -> Option<&'a VServer> {
    let port = local.port();
    let specific: Vec<&VServer> = site
        .servers
        .iter()
        .filter(|s| {
            s.listens
                .iter()
                .any(|(a, p, _)| *p == port && *a == Some(local.ip()))
        })
        .collect();
    let candidates: Vec<&VServer> = if specific.is_empty() {
        site.servers
            .iter()
            .filter(|s| {
                s.listens
                    .iter()
                    .any(|(a, p, _)| *p == port && a.is_none_or(|a| a.is_unspecified()))
            })
            .collect()
    } else {
        specific
    };
    let default = || {
        candidates
            .iter()
            .find(|s| s.listens.iter().any(|(_, p, d)| *p == port && *d))
            .or(candidates.first())
            .copied()
    };
    let Some(host) = host else {
        // No Host: a server named "" takes it, else the default.
        return candidates
            .iter()
            .find(|s| {
                s.names
                    .iter()
                    .any(|n| matches!(n, ServerName::Exact(e) if e.is_empty()))
            })
            .copied()
            .or_else(default);
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(s) = candidates.iter().find(|s| {
        s.names
            .iter()
            .any(|n| matches!(n, ServerName::Exact(e) if e.eq_ignore_ascii_case(&host)))
    }) {
        return Some(s);
    }
    let mut best: Option<(&VServer, usize)> = None;
    for s in &candidates {
        for n in &s.names {
            let ServerName::Wildcard(w) = n else { continue };
            let w = w.to_ascii_lowercase();
            let hit = if let Some(suffix) = w.strip_prefix("*.") {
                host.ends_with(&format!(".{suffix}"))
            } else if let Some(suffix) = w.strip_prefix('.') {
                host == suffix || host.ends_with(&w)
            } else {
                false
            };
            if hit && best.is_none_or(|(_, len)| w.len() > len) {
                best = Some((s, w.len()));
            }
        }
    }
    if let Some((s, _)) = best {
        return Some(s);
    }
    for s in &candidates {
        for n in &s.names {
            let ServerName::Wildcard(w) = n else { continue };
            let w = w.to_ascii_lowercase();
            if let Some(prefix) = w.strip_suffix(".*") {
                if host.starts_with(&format!("{prefix}."))
                    && best.is_none_or(|(_, len)| w.len() > len)
                {
                    best = Some((s, w.len()));
                }
            }
        }
    }
    if let Some((s, _)) = best {
        return Some(s);
    }
    for s in &candidates {
        if s.regexes.iter().flatten().any(|r| r.is_match(&host)) {
            return Some(s);
        }
    }
    default()
}

/// What matched a location, for `proxy_pass` URI replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    Prefix(usize),
    Exact,
    Regex,
}

/// nginx's location search: an exact match wins; else the longest prefix (searched
/// again inside it, for nested locations); `^~` stops there; else the regexes in order
/// (nested ones first); else the longest prefix.
pub fn location<'a>(locs: &'a [Loc], uri: &str) -> Option<(&'a Loc, Matched)> {
    find(locs, uri).map(|(l, m, _)| (l, m))
}

fn find<'a>(locs: &'a [Loc], uri: &str) -> Option<(&'a Loc, Matched, bool)> {
    if let Some(l) = locs
        .iter()
        .find(|l| matches!(&l.matcher, LocationMatch::Exact(p) if p == uri))
    {
        return Some((l, Matched::Exact, true));
    }
    let mut found: Option<(&Loc, Matched, bool)> = None;
    let mut no_regex = false;
    let prefix = locs
        .iter()
        .filter_map(|l| match &l.matcher {
            LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p)
                if uri.starts_with(p.as_str()) =>
            {
                Some((l, p.len()))
            }
            _ => None,
        })
        .max_by_key(|(_, len)| *len);
    if let Some((l, len)) = prefix {
        found = Some((l, Matched::Prefix(len), false));
        no_regex = matches!(l.matcher, LocationMatch::PrefixNoRegex(_));
        if !l.children.is_empty() {
            if let Some(inner) = find(&l.children, uri) {
                if inner.2 {
                    return Some(inner);
                }
                found = Some(inner);
            }
        }
    }
    if !no_regex {
        for l in locs {
            if l.regex.as_ref().is_some_and(|r| r.is_match(uri)) {
                return Some((l, Matched::Regex, true));
            }
        }
    }
    found
}
