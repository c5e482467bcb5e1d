//! One request, as nginx's proxy module handles it: pick the server and location, answer
//! `return`, or build the upstream request (nginx's header rules, order and case), try
//! peers in the balancer's order under proxy_next_upstream, and relay the response with
//! the upstream's header names in their case.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use fulcrum_http1::{Framing, Headers, ResponseHead, Version};
use fulcrum_nginx_conf::model::{
    ErrorPageStatus, HttpVersion, LocationMatch, NextUpstream, ProxyRedirect, Template,
};
use fulcrum_upstream::{Outcome, PeerAddr, PeerId};
use tracing::{error, warn};

use crate::body::Body;
use crate::limit::Pre;
use crate::log::AccessLine;
use crate::request::{BodyError, ClientBody, Req};
use crate::response::Response;
use crate::rewrite;
use crate::route::{self, Matched};
use crate::site::{self, Level, Loc, Resolved, Site, Target, UpstreamGroup, VServer};
use crate::upstream::{self, Conn, Failure, Relayed};
use crate::upvars::{Meter, Try};
use crate::vars::Ctx;

/// Monotonic whole seconds, the balancer's clock (nginx's ngx_time()).
fn now_secs() -> u64 {
    // CLOCK_MONOTONIC, which every worker reads alike (an upstream zone shares the
    // times its peers failed).
    fulcrum_sys::monotonic_ns() / 1_000_000_000 + 1
}

/// A cheap per-thread random source for `random` (xorshift, seeded from the clock).
fn random() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9E37_79B9_7F4A_7C15),
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 33) as u32
    })
}

/// Handles one request. `None`: close the connection without an answer (`return 444`,
/// or a client that stopped sending its body: nginx logs 408 and closes).
pub(crate) async fn handle<B: ClientBody>(
    site: Arc<Site>,
    mut r: Req,
    body: &mut B,
) -> Option<Response> {
    // The host the request names, without its port.
    let host = r.host_header().map(|h| {
        if h.starts_with('[') {
            h.split_once(']')
                .map_or(h, |(a, _)| a.trim_start_matches('['))
                .to_string()
        } else {
            h.rsplit_once(':').map_or(h, |(a, _)| a).to_string()
        }
    });
    let Some(server) = route::server(&site, r.conn.local, host.as_deref()) else {
        return Some(Response::error(404, site.server.clone()));
    };
    let log_settings = &server.settings;
    let Some(uri) = route::normalize(r.path()) else {
        return Some(fail(&site, server, log_settings, &r, 400));
    };
    r.uri = uri;
    let path = r.path();
    r.script.quoted = path.contains('%') || path.contains('+');
    let regexes = server.regexes.iter().any(Option::is_some);
    if let (Some(h), true) = (&host, regexes) {
        // A server_name regex's captures, when no plain name of the server matched.
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        let named = server.names.iter().any(|n| match n {
            fulcrum_nginx_conf::model::ServerName::Exact(e) => e.eq_ignore_ascii_case(&h),
            _ => false,
        });
        if !named {
            for re in server.regexes.iter().flatten() {
                if r.script.matched(re, &h) {
                    break;
                }
            }
        }
    }
    // nginx's post-read phase: realip with the server's settings.
    crate::access::realip(&mut r, server.settings.realip.as_ref());
    let mut start = Start::Server;
    // nginx's uri_changes: URI changes and internal redirects, at most ten.
    let mut changes = 0u32;
    // error_page redirects once (recursive_error_pages off).
    let mut paged = false;
    loop {
        let mut next = phases(&site, server, &mut r, start, &mut changes);
        if let Next::Delayed(wait, loc, matched) = next {
            tokio::time::sleep(wait).await;
            next = after_limit_req(&site, server, &mut r, loc, matched);
        }
        let (status, res) = match next {
            Next::Done(resp) => return resp,
            Next::Error(status, res) => (status, res),
            Next::Redirect { uri, args } => {
                if let Some(resp) = redirect(&site, server, &mut r, uri, args, &mut changes) {
                    return Some(resp);
                }
                start = Start::Server;
                continue;
            }
            Next::Named(loc) => {
                start = Start::Named(loc);
                continue;
            }
            Next::Delayed(..) => unreachable!("waited for above"),
            Next::Content(loc, matched) => {
                let outcome = match &loc.target {
                    _ if loc.stub_status => stub_status(&site, server, &r, &loc.settings),
                    Some(target) => proxy(&site, server, &r, loc, target, matched, body).await,
                    None => files(&site, server, &mut r, loc, body, &mut changes).await,
                };
                match outcome {
                    Served::Done(resp) => return resp,
                    Served::Error(status) => (status, &loc.settings),
                    Served::Again => {
                        start = Start::Server;
                        continue;
                    }
                    Served::Intercepted(status, www_authenticate) => {
                        if www_authenticate.is_some() {
                            r.www_authenticate = www_authenticate;
                        }
                        (status, &loc.settings)
                    }
                    Served::Accel(target, carried) => {
                        r.carried = carried;
                        if let Some(name) = target.strip_prefix('@') {
                            match server.named.iter().find(
                                |l| matches!(&l.matcher, LocationMatch::Named(n) if n == name),
                            ) {
                                Some(named) => {
                                    start = Start::Named(named);
                                    continue;
                                }
                                None => {
                                    let message =
                                        format!("could not find named location \"{target}\"");
                                    log_error(&r, &loc.settings, server.name(), &message);
                                    (500, &loc.settings)
                                }
                            }
                        } else {
                            let Some((uri, args)) = accel_target(&target) else {
                                let message = format!("unsafe URI \"{target}\" was detected");
                                log_error(&r, &loc.settings, server.name(), &message);
                                return Some(fail(&site, server, &loc.settings, &r, 404));
                            };
                            if &r.method_name[..] != b"HEAD" {
                                let line = std::mem::replace(
                                    &mut r.method_name,
                                    Bytes::from_static(b"GET"),
                                );
                                r.line_method.get_or_insert(line);
                            }
                            if let Some(resp) =
                                redirect(&site, server, &mut r, uri, args, &mut changes)
                            {
                                return Some(resp);
                            }
                            start = Start::Server;
                            continue;
                        }
                    }
                }
            }
        };
        // error_page, once.
        let page = (!paged)
            .then(|| res.error_page.iter().find(|p| p.codes.contains(&status)))
            .flatten();
        let Some(page) = page else {
            if status == 444 {
                drop(fail(&site, server, res, &r, 444));
                return None;
            }
            return Some(fail(&site, server, res, &r, status));
        };
        paged = true;
        let wire = if (494..=497).contains(&status) {
            400
        } else {
            status
        };
        r.err_status = match page.response {
            None => Some(wire),
            Some(ErrorPageStatus::Page) => None,
            Some(ErrorPageStatus::Code(c)) => Some(c),
        };
        let target = r.ctx(&site, server.name(), "").eval(&page.uri);
        if let Some(name) = target.strip_prefix('@') {
            match server
                .named
                .iter()
                .find(|l| matches!(&l.matcher, LocationMatch::Named(n) if n == name))
            {
                Some(loc) => start = Start::Named(loc),
                None => {
                    log_error(
                        &r,
                        res,
                        server.name(),
                        &format!("could not find named location \"{target}\""),
                    );
                    r.err_status = None;
                    return Some(fail(&site, server, res, &r, 500));
                }
            }
            continue;
        }
        if target.starts_with('/') {
            if &r.method_name[..] != b"HEAD" {
                let line = std::mem::replace(&mut r.method_name, Bytes::from_static(b"GET"));
                r.line_method.get_or_insert(line);
            }
            let (uri, args) = match target.split_once('?') {
                Some((u, a)) => (u.to_string(), a.to_string()),
                None => (target.clone(), String::new()),
            };
            if let Some(resp) = redirect(&site, server, &mut r, uri, args, &mut changes) {
                return Some(resp);
            }
            start = Start::Server;
            continue;
        }
        // An absolute URL: a redirect, 302 unless `=` named a redirect status.
        let code = r
            .err_status
            .take()
            .filter(|c| matches!(c, 301 | 302 | 303 | 307 | 308))
            .unwrap_or(302);
        let mut resp = Response::error(code, res.server.clone());
        resp.headers.push("Location", target);
        return Some(finish(&site, server, res, &r, resp));
    }
}

/// Where the phases start: the server's rewrite phase (a new request, or an internal
/// redirect), or a named location (error_page or try_files to `@name`).
#[derive(Clone, Copy)]
enum Start<'a> {
    Server,
    Named(&'a Loc),
}

/// What the phases before the content decided.
#[allow(clippy::large_enum_variant)] // short-lived, one per request: no box
enum Next<'a> {
    /// Answered (or closed: None).
    Done(Option<Response>),
    /// An error nginx answers with its page, or with error_page.
    Error(u16, &'a Resolved),
    /// An internal redirect (try_files' fallback URI).
    Redirect {
        uri: String,
        args: String,
    },
    Named(&'a Loc),
    /// limit_req makes the request wait, then the phases go on in this location.
    Delayed(std::time::Duration, &'a Loc, Matched),
    /// The content phase of this location: proxy_pass, or files.
    Content(&'a Loc, Matched),
}

/// What the content phase decided.
#[allow(clippy::large_enum_variant)] // short-lived, one per request: no box
enum Served {
    Done(Option<Response>),
    Error(u16),
    /// The URI changed (an index file): the phases again from the server's rewrite.
    Again,
    /// proxy_intercept_errors: the upstream's error, answered as nginx's own (its
    /// WWW-Authenticate kept for a 401).
    Intercepted(u16, Option<String>),
    /// X-Accel-Redirect: an internal redirect to a URI or named location, with the
    /// upstream headers nginx carries over.
    Accel(String, Headers),
}

/// `return` (or a rewrite's redirect): a code from 400 with no text is an error nginx
/// answers with its page, or error_page.
fn answered<'a>(
    site: &Site,
    server: &VServer,
    res: &'a Resolved,
    r: &Req,
    code: u16,
    text: Option<String>,
) -> Next<'a> {
    if code >= 400 && text.is_none() {
        return Next::Error(code, res);
    }
    Next::Done(answer(site, server, res, r, code, text))
}

/// An internal redirect (ngx_http_internal_redirect): the new URI and arguments, counted
/// against the cycle limit. Some: the 500 that ends a cycle.
fn redirect(
    site: &Site,
    server: &VServer,
    r: &mut Req,
    uri: String,
    args: String,
    changes: &mut u32,
) -> Option<Response> {
    *changes += 1;
    if *changes > 10 {
        let message = format!(
            "rewrite or internal redirection cycle while internally redirecting to \"{uri}\""
        );
        error!("{message}");
        log_error(r, &server.settings, server.name(), &message);
        r.err_status = None;
        return Some(fail(site, server, &server.settings, r, 500));
    }
    r.uri = uri;
    r.args = args;
    r.script.internal = true;
    None
}

/// nginx's phases from server rewrite (or a named location) to the content: find the
/// location, its client_max_body_size, its rewrite (again while a rewrite changes the
/// URI), preaccess realip, access, try_files.
fn phases<'a>(
    site: &Site,
    server: &'a VServer,
    r: &mut Req,
    start: Start<'a>,
    changes: &mut u32,
) -> Next<'a> {
    let log_settings = &server.settings;
    let mut named = match start {
        Start::Named(loc) => Some(loc),
        Start::Server => {
            r.script.root = Some(server.settings.root.clone());
            let (outcome, _) = rewrite::run(
                &server.ops,
                r,
                site,
                server.name(),
                server.settings.rewrite_log,
            );
            notices(r, log_settings, server);
            match outcome {
                rewrite::Outcome::Continue => {}
                rewrite::Outcome::Answer { code, text } => {
                    return answered(site, server, log_settings, r, code, text)
                }
                rewrite::Outcome::Error => {
                    log_error(r, log_settings, server.name(), ZERO_LENGTH);
                    return Next::Error(500, log_settings);
                }
            }
            None
        }
    };
    let (loc, matched) = loop {
        let (found, matched) = match named.take() {
            Some(l) => (l, Matched::Exact),
            None => {
                let Some((found, matched)) = route::location(&server.locations, &r.uri) else {
                    // No location: the server's try_files, else 404.
                    if let Some(list) = &server.try_files {
                        return try_files(
                            site,
                            server,
                            r,
                            list,
                            log_settings,
                            None,
                            Matched::Exact,
                        );
                    }
                    if server.stub_status {
                        return match stub_status(site, server, r, log_settings) {
                            Served::Done(resp) => Next::Done(resp),
                            Served::Error(status) => Next::Error(status, log_settings),
                            _ => Next::Error(500, log_settings),
                        };
                    }
                    return Next::Error(404, log_settings);
                };
                (found, matched)
            }
        };
        if found.internal && !r.script.internal {
            return Next::Error(404, &found.settings);
        }
        if let Some(re) = &found.regex {
            r.script.matched(re, &r.uri);
        }
        // nginx checks a declared body's size once the location is known.
        let max = found.settings.client_max_body_size;
        let declared = r
            .headers
            .get_str("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if max > 0 && declared.is_some_and(|n| n > max) {
            let message = format!(
                "client intended to send too large body: {} bytes",
                declared.unwrap_or(0)
            );
            log_error(r, &found.settings, server.name(), &message);
            return Next::Error(413, &found.settings);
        }
        r.script.uri_changed = false;
        r.script.valid_location = true;
        r.script.root = Some(found.settings.root.clone());
        let (outcome, inner) = rewrite::run(
            &found.ops,
            r,
            site,
            server.name(),
            found.settings.rewrite_log,
        );
        let loc = inner.unwrap_or(found);
        r.script.root = Some(loc.settings.root.clone());
        notices(r, &loc.settings, server);
        match outcome {
            rewrite::Outcome::Continue => {}
            rewrite::Outcome::Answer { code, text } => {
                return answered(site, server, &loc.settings, r, code, text)
            }
            rewrite::Outcome::Error => {
                log_error(r, &loc.settings, server.name(), ZERO_LENGTH);
                return Next::Error(500, &loc.settings);
            }
        }
        if r.script.uri_changed {
            *changes += 1;
            if *changes > 10 {
                let message = format!(
                    "rewrite or internal redirection cycle while processing \"{}\"",
                    r.uri
                );
                error!("{message}");
                elog(&loc.settings, r, server).write(Level::Error, &message, None);
                return Next::Error(500, &loc.settings);
            }
            continue;
        }
        break (loc, matched);
    };
    crate::access::realip(r, loc.settings.realip.as_ref());
    let mut lines = Vec::new();
    let pre = crate::limit::limit_req(site, &loc.settings, r, server.name(), &mut |l, m| {
        lines.push((l, m))
    });
    for (level, m) in lines {
        elog(&loc.settings, r, server).write(level, &m, None);
    }
    match pre {
        Pre::Go => after_limit_req(site, server, r, loc, matched),
        Pre::Refuse(status) => Next::Error(status, &loc.settings),
        Pre::Wait(ms) => Next::Delayed(std::time::Duration::from_millis(ms), loc, matched),
    }
}

/// The phases after limit_req (which may have made the request wait): limit_conn, access,
/// try_files, then the content.
fn after_limit_req<'a>(
    site: &Site,
    server: &'a VServer,
    r: &mut Req,
    loc: &'a Loc,
    matched: Matched,
) -> Next<'a> {
    let mut lines = Vec::new();
    let pre = crate::limit::limit_conn(site, &loc.settings, r, server.name(), &mut |l, m| {
        lines.push((l, m))
    });
    for (level, m) in lines {
        elog(&loc.settings, r, server).write(level, &m, None);
    }
    if let Pre::Refuse(status) = pre {
        return Next::Error(status, &loc.settings);
    }
    if let Some(status) = access_phase(site, server, r, &loc.settings) {
        return Next::Error(status, &loc.settings);
    }
    if let Some(list) = &loc.try_files {
        return try_files(site, server, r, list, &loc.settings, Some(loc), matched);
    }
    Next::Content(loc, matched)
}

/// nginx's access phase: allow and deny, then auth_basic, under satisfy all (each must
/// pass; the first refusal answers) or any (one passing suffices; else 401 before 403).
/// Some: the status to answer.
fn access_phase(site: &Site, server: &VServer, r: &mut Req, res: &Resolved) -> Option<u16> {
    const FORBIDDEN: &str = "access forbidden by rule";
    let any = res.satisfy_any;
    let mut refused = None;
    match crate::access::verdict(&res.access, r.conn.remote.ip()) {
        Some(true) if any => return None,
        Some(false) if any => refused = Some(403),
        Some(false) => {
            elog(res, r, server).write(Level::Error, FORBIDDEN, None);
            return Some(403);
        }
        _ => {}
    }
    if let Some((realm, file)) = &res.auth_basic {
        let ctx = r.ctx(site, server.name(), "");
        let realm = ctx.eval(realm);
        if realm != "off" {
            let file = site.conf_prefix.join(ctx.eval(file));
            let mut lines = Vec::new();
            let verdict = crate::auth::check(&r.headers, &file, &mut |level, m| {
                lines.push((level, m.to_string()))
            });
            for (level, m) in lines {
                elog(res, r, server).write(level, &m, None);
            }
            match verdict {
                crate::auth::Verdict::Pass if any => return None,
                crate::auth::Verdict::Pass => {}
                crate::auth::Verdict::Challenge => {
                    r.www_authenticate = Some(format!("Basic realm=\"{realm}\""));
                    if !any {
                        return Some(401);
                    }
                    refused = Some(401);
                }
                crate::auth::Verdict::Status(s) => return Some(s),
            }
        }
    }
    if refused == Some(403) {
        elog(res, r, server).write(Level::Error, FORBIDDEN, None);
    }
    refused
}

/// nginx's try_files phase: the first file (or, ending in `/`, directory) that exists
/// becomes the URI for this location's content; else the last argument: `=CODE`,
/// `@name`, or a URI to redirect to.
#[allow(clippy::too_many_arguments)]
fn try_files<'a>(
    site: &Site,
    server: &'a VServer,
    r: &mut Req,
    list: &[Template],
    res: &'a Resolved,
    loc: Option<&'a Loc>,
    matched: Matched,
) -> Next<'a> {
    let (last, tries) = list
        .split_last()
        .expect("try_files has two arguments or more");
    let server_level = LocationMatch::Prefix(String::new());
    let matcher = loc.map_or(&server_level, |l| &l.matcher);
    for t in tries {
        // An argument written with a trailing `/` asks for a directory; the slash is
        // not part of the name tried (nor of the URI that results).
        let dir = t.as_str().ends_with('/');
        let mut name = r.ctx(site, server.name(), "").eval(t);
        if dir {
            name.pop();
        }
        let path = crate::files::path(r, site, server.name(), res, matcher, &name);
        let hit = std::fs::metadata(&path).is_ok_and(|m| m.is_dir() == dir);
        if hit {
            r.uri = name;
            return match loc {
                Some(l) => Next::Content(l, matched),
                None => Next::Error(404, res),
            };
        }
    }
    let last = r.ctx(site, server.name(), "").eval(last);
    if let Some(code) = last.strip_prefix('=') {
        return match code.parse::<u16>() {
            Ok(c) => Next::Error(c, res),
            Err(_) => Next::Error(500, res),
        };
    }
    if let Some(name) = last.strip_prefix('@') {
        return match server
            .named
            .iter()
            .find(|l| matches!(&l.matcher, LocationMatch::Named(n) if n == name))
        {
            Some(l) => Next::Named(l),
            None => {
                log_error(
                    r,
                    res,
                    server.name(),
                    &format!("could not find named location \"{last}\""),
                );
                Next::Error(500, res)
            }
        };
    }
    let (uri, args) = match last.split_once('?') {
        Some((u, a)) => (u.to_string(), a.to_string()),
        None => (last, String::new()),
    };
    Next::Redirect { uri, args }
}

/// The content of a location without proxy_pass: its files (index, static), the request
/// body discarded.
async fn files<B: ClientBody>(
    site: &Site,
    server: &VServer,
    r: &mut Req,
    loc: &Loc,
    body: &mut B,
    changes: &mut u32,
) -> Served {
    let res = &loc.settings;
    let has_body = r.has_body || r.headers.contains("content-length");
    if let Err(status) = read_body(body, res, has_body).await {
        return unread(site, server, res, r, status);
    }
    match crate::files::serve(r, site, server.name(), res, &loc.matcher).await {
        crate::files::Content::Status(s) => Served::Error(s),
        crate::files::Content::Internal(uri) => {
            let args = r.args.clone();
            match redirect(site, server, r, uri, args, changes) {
                Some(resp) => Served::Done(Some(resp)),
                None => Served::Again,
            }
        }
        crate::files::Content::Response(mut resp) => {
            crate::files::not_modified(&mut resp, r, res.if_modified_since);
            Served::Done(Some(finish(site, server, res, r, resp)))
        }
    }
}

/// proxy_pass: read the body, pick peers under proxy_next_upstream, relay the answer.
#[allow(clippy::too_many_arguments)]
async fn proxy<B: ClientBody>(
    site: &Site,
    server: &VServer,
    r: &Req,
    loc: &Loc,
    target: &Target,
    matched: Matched,
    body: &mut B,
) -> Served {
    let res = &loc.settings;
    let declared = r
        .headers
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body = declared.is_some() || r.has_body;
    // proxy_request_buffering off: the body goes upstream as it comes, with its own
    // length or, to an HTTP/1.1 upstream, chunked (nginx streams only where the body is
    // the client's and its framing can be told upstream; otherwise it reads it whole).
    let streams = !res.request_buffering
        && has_body
        && declared != Some(0)
        && res.set_body.is_none()
        && res.pass_request_body
        && (declared.is_some() || res.http_version == HttpVersion::V1_1);
    let mut streamed = None;
    let body = if streams {
        let mut s = Streamed {
            body,
            upload: declared.map_or(Upload::Chunked, Upload::Length),
            first: Bytes::new(),
            ended: false,
            consumed: false,
            reading: Reading::of(res),
        };
        // What the client has sent already (the first read answers its Expect:
        // 100-continue) goes with the head; it can go again to another peer.
        match s.pull().await {
            Ok(Some(b)) => s.first = b,
            Ok(None) => s.ended = true,
            Err(status) => return unread(site, server, res, r, status),
        }
        // Then what has come already, as nginx reads it before it makes the upstream
        // request (up to client_body_buffer_size): a body all here by then goes with
        // its length, even one the client sent chunked.
        let mut here = BytesMut::new();
        while !s.ended && s.first.len() + here.len() < PREREAD {
            match now_or_never(s.pull()).await {
                None => break,
                Some(Ok(Some(b))) => {
                    if here.is_empty() {
                        here.put_slice(&s.first);
                    }
                    here.put_slice(&b);
                }
                Some(Ok(None)) => s.ended = true,
                Some(Err(status)) => return unread(site, server, res, r, status),
            }
        }
        if !here.is_empty() {
            s.first = here.freeze();
        }
        if s.ended {
            // All here: as a read body (its length, and `$request_body`).
            s.upload = Upload::Length(s.first.len() as u64);
            let _ = r.request_body.set(s.first.clone());
        }
        streamed = Some(s);
        Bytes::new()
    } else {
        // The request body, whole, within client_max_body_size.
        let body = match read_body(body, res, has_body).await {
            Ok(b) => b,
            Err(status) => return unread(site, server, res, r, status),
        };
        let _ = r.request_body.set(body.clone());
        body
    };
    let (group, proxy_host, upstream_uri, https) =
        match resolve_target(site, target, matched, r, server) {
            Ok(t) => t,
            Err(status) => return Served::Error(status),
        };
    let ctx = r.ctx(site, server.name(), &proxy_host);
    let version = match res.http_version {
        HttpVersion::V1_0 => Version::HTTP_10,
        HttpVersion::V1_1 => Version::HTTP_11,
    };
    // proxy_set_body replaces the client's body; proxy_pass_request_body off drops it.
    let (body, has_body) = match &res.set_body {
        Some(t) => (Bytes::from(ctx.eval(t)), true),
        None if !res.pass_request_body => (Bytes::new(), false),
        None => (body, has_body),
    };
    let method = match &res.method {
        Some(t) => Bytes::from(ctx.eval(t)),
        None => r.method_name.clone(),
    };
    let upload = match &streamed {
        Some(s) => Some(s.upload),
        None => has_body.then_some(Upload::Length(body.len() as u64)),
    };
    let head = upstream_head(&ctx, res, r, &method, &upstream_uri, version, upload);
    let key = group
        .hash_key
        .as_ref()
        .map(|k| ctx.eval(k))
        .unwrap_or_default();
    // TLS as proxy_ssl_* say, to the name proxy_ssl_name gives (else the proxy_pass
    // host, without its port).
    let tls = https.then(|| {
        let name = match &res.ssl.name {
            Some(t) => ctx.eval(t),
            None => proxy_host.clone(),
        };
        let config = res.ssl_config.clone().unwrap_or_else(default_tls);
        upstream::Tls {
            config,
            name: crate::tls::upstream_name(&name),
        }
    });
    // proxy_bind: an empty value binds nothing; one that is no address is logged and
    // ignored, as nginx does.
    let local = res.bind.as_ref().and_then(|t| {
        let v = ctx.eval(t);
        if v.is_empty() {
            return None;
        }
        let a = fulcrum_nginx_conf::model::parse_addr_port(&v);
        if a.is_none() {
            crate::log::ErrorContext {
                target: &res.error_log,
                r,
                server: server.name(),
            }
            .write(
                Level::Error,
                &format!("invalid local address \"{v}\""),
                None,
            );
        }
        a
    });
    let upstream = UpstreamRequest {
        local,
        tls,
        non_idempotent: matches!(&r.method_name[..], b"POST" | b"LOCK" | b"PATCH"),
        head_request: &method[..] == b"HEAD",
        uri: upstream_uri.clone(),
        version,
        head,
        body,
    };
    let elog = crate::log::ErrorContext {
        target: &res.error_log,
        r,
        server: server.name(),
    };
    if let Ok(mut log) = r.upstream.lock() {
        log.begin();
    }
    let (head, conn, back, _peer, meter) = match forward(
        &group,
        &upstream,
        streamed.as_mut(),
        res,
        key.as_bytes(),
        https,
        &site.stats,
        &elog,
    )
    .await
    {
        Ok(x) => x,
        Err(Fail::Client(status)) => return unread(site, server, res, r, status),
        Err(f) => return Served::Error(f.status()),
    };
    // proxy_intercept_errors: an error error_page knows is answered as nginx's own.
    let intercept = res.intercept_errors
        && head.status >= 300
        && res
            .error_page
            .iter()
            .any(|p| p.codes.contains(&head.status));
    if intercept {
        meter.finish();
        let www = (head.status == 401)
            .then(|| head.headers.get_str("www-authenticate").map(str::to_string))
            .flatten();
        let status = head.status;
        keep_upstream_headers(r, head);
        return Served::Intercepted(status, www);
    }
    // X-Accel-Redirect: the upstream names what to serve instead.
    let accel = (!res.ignores("x-accel-redirect"))
        .then(|| head.headers.get_str("x-accel-redirect"))
        .flatten()
        .filter(|v| !v.is_empty());
    if let Some(target) = accel {
        meter.finish();
        let mut carried = Headers::new();
        for h in &head.headers {
            let n = &h.name[..];
            if CARRIED.iter().any(|c| n.eq_ignore_ascii_case(c.as_bytes())) && !res.hides(n) {
                carried.push(h.name.clone(), h.value.clone());
            }
        }
        let target = target.to_string();
        keep_upstream_headers(r, head);
        return Served::Accel(target, carried);
    }
    if head.status == 101 && r.headers.contains("upgrade") {
        meter.finish();
        let mut out = relay_head(site, &head, res, r, loc, target, &proxy_host, server);
        out.content_length = None;
        out.upgrade = Some(conn);
        return Served::Done(Some(finish(site, server, res, r, out)));
    }
    let mut out = relay_head(site, &head, res, r, loc, target, &proxy_host, server);
    // X-Accel-Buffering from the upstream overrides proxy_buffering, as in nginx.
    let accel = (!res.ignores("x-accel-buffering"))
        .then(|| head.headers.get("x-accel-buffering"))
        .flatten();
    let buffering = match accel.map(|v| &v[..]) {
        Some(v) if v.eq_ignore_ascii_case(b"yes") => true,
        Some(v) if v.eq_ignore_ascii_case(b"no") => false,
        _ => res.buffering,
    };
    let relayed = Relayed::new(conn, &head, res.read_timeout, back, meter);
    keep_upstream_headers(r, head);
    // A response of known length that fits a socket's send buffer (16 KiB at least) is
    // taken by the kernel at once however slow the client: no spool needed for it.
    let small = relayed.remaining().is_some_and(|n| n <= SMALL_RESPONSE);
    out.body = if buffering && !small {
        let limits = crate::spool::Limits {
            memory: res.buffers,
            file: res.max_temp_file,
            dir: res.temp_path.clone(),
        };
        let length = relayed.remaining();
        Body::Spooled(Box::new(crate::spool::spool(
            Body::Relayed(Box::new(relayed)),
            length,
            limits,
        )))
    } else {
        out.flush_each = !buffering;
        Body::Relayed(Box::new(relayed))
    };
    Served::Done(Some(finish(site, server, res, r, out)))
}

/// The upstream's response head, kept for `$upstream_http_*` and `$upstream_cookie_*`.
fn keep_upstream_headers(r: &Req, head: ResponseHead) {
    if let Ok(mut log) = r.upstream.lock() {
        log.headers = Some(head.headers);
    }
}

/// What an X-Accel-Redirect answer passes on to the response that replaces it (the
/// upstream module's headers marked `redirect`).
const CARRIED: [&str; 6] = [
    "content-type",
    "set-cookie",
    "content-disposition",
    "cache-control",
    "expires",
    "accept-ranges",
];

/// An X-Accel-Redirect URI as ngx_http_parse_unsafe_uri takes it: the arguments after
/// `?`, `%XX` decoded, and None for a path that climbs (`..` as a segment) or holds NUL.
fn accel_target(v: &str) -> Option<(String, String)> {
    let (path, args) = v.split_once('?').unwrap_or((v, ""));
    let climbs =
        |p: &str| p == ".." || p.starts_with("../") || p.contains("/../") || p.ends_with("/..");
    if climbs(path) {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    let path = String::from_utf8(out).ok()?;
    if path.contains('\0') || climbs(&path) {
        return None;
    }
    Some((path, args.to_string()))
}

/// The error log as it applies to `res`, for a request.
fn elog<'a>(res: &'a Resolved, r: &'a Req, server: &'a VServer) -> crate::log::ErrorContext<'a> {
    crate::log::ErrorContext {
        target: &res.error_log,
        r,
        server: server.name(),
    }
}

/// An error-level line in the error log as it applies to `res`.
pub(crate) fn log_error(r: &Req, res: &Resolved, server: &str, message: &str) {
    crate::log::ErrorContext {
        target: &res.error_log,
        r,
        server,
    }
    .write(Level::Error, message, None);
}

/// An OS error's text as strerror(3) gives it (what nginx writes after the number).
pub(crate) fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// rewrite_log's notices, into the error log.
fn notices(r: &mut Req, res: &Resolved, server: &VServer) {
    if r.script.notices.is_empty() {
        return;
    }
    let lines = std::mem::take(&mut r.script.notices);
    for l in lines {
        elog(res, r, server).write(Level::Notice, &l, None);
    }
}

/// A rewrite to an empty URI: nginx logs it and answers 500.
const ZERO_LENGTH: &str = "the rewritten URI has a zero length";

/// `return code [text|URL]`, and a rewrite's redirect (its Location as the text).
fn answer(
    site: &Site,
    server: &VServer,
    res: &Resolved,
    r: &Req,
    status: u16,
    text: Option<String>,
) -> Option<Response> {
    if status == 444 {
        return None;
    }
    let ctx = r.ctx(site, server.name(), "");
    let resp = match (status, text) {
        (301 | 302 | 303 | 307 | 308, Some(url)) => {
            // A relative URL is made absolute and written where nginx's header filter
            // writes its own; an absolute one goes after nginx's headers.
            let mut resp = Response::error(status, res.server.clone());
            if url.starts_with('/') {
                resp.location = Some(Bytes::from(absolute(r, &ctx.host(), &url)));
            } else {
                resp.headers.push("Location", url);
            }
            resp
        }
        (_, Some(text)) => Response::new(status, res.server.clone())
            .with_body(res.default_type.clone(), Bytes::from(text)),
        (_, None) => Response::error(status, res.server.clone()),
    };
    Some(finish(site, server, res, r, resp))
}

/// A body that could not be read: nginx logs 408 and closes the connection without an
/// answer; another status gets its page.
fn unread(site: &Site, server: &VServer, res: &Resolved, r: &Req, status: u16) -> Served {
    if status == 408 {
        drop(fail(site, server, res, r, 408));
        return Served::Done(None);
    }
    Served::Error(status)
}

/// The client's body as nginx reads it, piece by piece: client_body_timeout between two
/// reads, client_max_body_size (0: none) over the whole.
struct Reading {
    timeout: std::time::Duration,
    limit: u64,
    total: u64,
}

impl Reading {
    fn of(res: &Resolved) -> Reading {
        Reading {
            timeout: res.client_body_timeout,
            limit: res.client_max_body_size,
            total: 0,
        }
    }

    /// The next piece (None at the end), or the status a failure gets: 408 for a
    /// timeout or a client gone, 400 for bad framing, 413 past the limit.
    async fn take(
        &mut self,
        next: impl std::future::Future<Output = Option<Result<Bytes, BodyError>>>,
    ) -> Result<Option<Bytes>, u16> {
        match tokio::time::timeout(self.timeout, next).await {
            Err(_) => Err(408),
            Ok(None) => Ok(None),
            Ok(Some(Err(BodyError::Invalid))) => Err(400),
            Ok(Some(Err(BodyError::Closed))) => Err(408),
            Ok(Some(Ok(b))) => {
                self.total += b.len() as u64;
                if self.limit > 0 && self.total > self.limit {
                    return Err(413);
                }
                Ok(Some(b))
            }
        }
    }
}

/// Reads the client's body whole, as [`Reading`] reads it; Err is the status to answer
/// (408: close without one). A request without a body is
/// only asked once (that answers its `Expect: 100-continue`, as nginx's reading does),
/// with no timer: it cannot wait.
async fn read_body<B: ClientBody>(
    body: &mut B,
    res: &Resolved,
    has_body: bool,
) -> Result<Bytes, u16> {
    if !has_body {
        return match body.next().await {
            None => Ok(Bytes::new()),
            Some(Err(BodyError::Invalid)) => Err(400),
            Some(Err(BodyError::Closed)) => Err(408),
            Some(Ok(_)) => Err(400),
        };
    }
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut reading = Reading::of(res);
    while let Some(piece) = reading.take(body.next()).await? {
        // One piece stays as it came (no copy); more are gathered.
        match first.take() {
            None if buf.is_empty() => first = Some(piece),
            Some(f) => {
                buf.put_slice(&f);
                buf.put_slice(&piece);
            }
            None => buf.put_slice(&piece),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// nginx's ngx_escape_uri for a URI path: what may not stand in a request line.
fn escape_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'#' | b'%' | b'?') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// proxy_pass's URI part, then `$uri` after the location's prefix (escaped), then
/// `?$args` (ngx_http_proxy_create_request).
fn uri_and_args(r: &Req, part: &str, prefix: usize) -> Bytes {
    let rest = r.uri.get(prefix..).unwrap_or("");
    let mut p = format!("{part}{}", escape_uri(rest));
    if !r.args.is_empty() {
        p.push('?');
        p.push_str(&r.args);
    }
    Bytes::from(p)
}

/// The upstream group, `$proxy_host`, the URI to send, and whether it is https.
fn resolve_target(
    site: &Site,
    target: &Target,
    matched: Matched,
    r: &Req,
    server: &VServer,
) -> Result<(Arc<UpstreamGroup>, String, Bytes, bool), u16> {
    match target {
        Target::Fixed {
            https,
            upstream,
            proxy_host,
            uri,
        } => {
            let path = match (uri, matched) {
                // The target as the client sent it (nginx's unparsed URI), unless a
                // rewrite changed it.
                (None, _) if !r.script.internal => r.target.clone(),
                (None, _) => uri_and_args(r, "", 0),
                // After `rewrite ... break` the URI part no longer replaces the prefix:
                // the whole rewritten URI goes.
                (Some(_), _) if !r.script.valid_location => uri_and_args(r, "", 0),
                (Some(u), Matched::Prefix(len)) => uri_and_args(r, u, len),
                (Some(u), _) => uri_and_args(r, u, r.uri.len()),
            };
            Ok((upstream.clone(), proxy_host.clone(), path, *https))
        }
        Target::Dynamic(t) => {
            let ctx = r.ctx(site, server.name(), "");
            let url = ctx.eval(t);
            let (https, hp, uri) = site::split_url(&url).ok_or(500u16)?;
            let group = match site.upstreams.get(hp) {
                Some(g) => g.clone(),
                None => {
                    let (host, port, _) = site::host_port(hp, https);
                    let unix = fulcrum_nginx_conf::strip_unix(&host).is_some();
                    if !unix && host.trim_matches(['[', ']']).parse::<IpAddr>().is_err() {
                        error!("no resolver defined to resolve {host}");
                        return Err(502);
                    }
                    Arc::new(site::implicit(&host, port, hp).map_err(|_| 502u16)?)
                }
            };
            let path = match uri {
                Some(u) => Bytes::from(u.to_string()),
                None if r.script.internal => uri_and_args(r, "", 0),
                None => r.target.clone(),
            };
            Ok((group, site::proxy_host_of(hp).to_string(), path, https))
        }
    }
}

/// The headers nginx's proxy module sets by default (ngx_http_proxy_headers), in its
/// order; empty ones are not sent, and the client's lines of the same names never are.
const DEFAULTS: [&str; 8] = [
    "Host",
    "Connection",
    "Content-Length",
    "Transfer-Encoding",
    "TE",
    "Keep-Alive",
    "Expect",
    "Upgrade",
];

/// The upstream request head, in nginx's order and case: the request line, the
/// proxy_set_header lines as configured, the defaults not configured (`Host
/// $proxy_host`, `Connection close`, `Content-Length` when there is a body, or
/// `Transfer-Encoding: chunked` for one streamed without a length), then the client's
/// own lines as received, except those of any name set above.
fn upstream_head(
    ctx: &Ctx<'_>,
    res: &Resolved,
    r: &Req,
    method: &[u8],
    uri: &[u8],
    version: Version,
    upload: Option<Upload>,
) -> Bytes {
    let mut list = Headers::with_capacity(res.set_headers.len() + r.headers.len() + 3);
    let configured = |n: &[u8]| {
        res.set_headers
            .iter()
            .any(|(s, _)| s.eq_ignore_ascii_case(n))
    };
    for (name, t) in &res.set_headers {
        let v = ctx.eval(t);
        if !v.is_empty() {
            list.push(name.clone(), v);
        }
    }
    for name in DEFAULTS {
        if configured(name.as_bytes()) {
            continue;
        }
        match name {
            "Host" => list.push(name, ctx.proxy_host.to_string()),
            "Connection" => list.push(name, "close"),
            "Content-Length" => {
                if let Some(Upload::Length(n)) = upload {
                    list.push(name, n.to_string());
                }
            }
            "Transfer-Encoding" if upload == Some(Upload::Chunked) => list.push(name, "chunked"),
            _ => {}
        }
    }
    // proxy_pass_request_headers off: the configured ones only.
    let client = r.headers.iter().filter(|_| res.pass_request_headers);
    for h in client {
        if DEFAULTS.iter().any(|d| h.is(d)) || configured(&h.name) {
            continue;
        }
        list.push(h.name.clone(), h.value.clone());
    }
    let mut out = BytesMut::new();
    fulcrum_http1::write::request_head(&mut out, method, uri, version, &list);
    out.freeze()
}

struct UpstreamRequest {
    /// TLS for an https upstream.
    tls: Option<upstream::Tls>,
    non_idempotent: bool,
    head_request: bool,
    /// For the error log's `upstream: "http://PEER/URI"`.
    uri: Bytes,
    version: Version,
    head: Bytes,
    body: Bytes,
    /// proxy_bind's address, evaluated for this request.
    local: Option<SocketAddr>,
}

/// nginx's proxy_ssl defaults (no verification, no SNI), for a location no
/// configuration was built for.
fn default_tls() -> Arc<rustls::ClientConfig> {
    static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(fulcrum_checkers::tls::accept_any(provider))
                .with_no_client_auth();
            config.enable_sni = false;
            Arc::new(config)
        })
        .clone()
}

/// Why a try failed, as proxy_next_upstream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Error,
    Timeout,
    InvalidHeader,
    /// proxy_bind's address could not be bound: 500, no other peer tried, the peer
    /// not blamed.
    Local,
    /// The client failed while its body was streamed upstream: this status (400, 408:
    /// close without an answer, 413), no other peer tried, the peer not blamed.
    Client(u16),
}

impl Fail {
    fn allowed(self, n: &NextUpstream) -> bool {
        match self {
            Fail::Error => n.error,
            Fail::Timeout => n.timeout,
            Fail::InvalidHeader => n.invalid_header,
            Fail::Local | Fail::Client(_) => false,
        }
    }

    fn status(self) -> u16 {
        match self {
            Fail::Timeout => 504,
            Fail::Local => 500,
            Fail::Client(status) => status,
            _ => 502,
        }
    }
}

/// The proxy_next_upstream flag for a response status, and whether nginx counts it as a
/// failure of the peer (403 and 404 never are).
fn status_flag(n: &NextUpstream, status: u16) -> Option<(bool, bool)> {
    let (listed, failure) = match status {
        500 => (n.http_500, true),
        502 => (n.http_502, true),
        503 => (n.http_503, true),
        504 => (n.http_504, true),
        429 => (n.http_429, true),
        403 => (n.http_403, false),
        404 => (n.http_404, false),
        _ => return None,
    };
    Some((listed, failure))
}

type Back = Option<upstream::Back>;

/// Tries peers until one answers or nginx's rules say stop; returns the response head,
/// its connection (the body follows on it), where the connection goes back to if it may
/// be reused, and the peer's address.
#[allow(clippy::too_many_arguments)]
async fn forward(
    group: &Arc<UpstreamGroup>,
    req: &UpstreamRequest,
    mut streamed: Option<&mut Streamed<'_>>,
    res: &Resolved,
    key: &[u8],
    https: bool,
    stats: &crate::stats::Stats,
    elog: &crate::log::ErrorContext<'_>,
) -> Result<(ResponseHead, Conn, Back, PeerAddr, Arc<Meter>), Fail> {
    let client = elog.r.conn.remote.ip();
    let scheme = if https { "https" } else { "http" };
    let url = |host: &dyn std::fmt::Display| {
        let host = host.to_string();
        // (A socket's path is followed by `:` before the URI, as in proxy_pass.)
        let colon = if fulcrum_nginx_conf::strip_unix(&host).is_some() {
            ":"
        } else {
            ""
        };
        format!(
            "{scheme}://{host}{colon}{}",
            String::from_utf8_lossy(&req.uri)
        )
    };
    let mut attempt = group.with_pool(|pool| pool.start(client, key));
    attempt.limit_tries(res.next_upstream_tries);
    let started = Instant::now();
    let timed_out = || {
        res.next_upstream_timeout
            .is_some_and(|t| started.elapsed() >= t)
    };
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            stats.retried(&group.name);
        }
        let picked = group.with_pool(|pool| {
            let mut rng = random;
            pool.get(&mut attempt, now_secs(), &mut rng)
                .map(|id| (id, pool.peer(id).addr.clone()))
        });
        let (id, addr) = {
            match picked {
                Some(x) => x,
                None => {
                    if let Ok(mut log) = elog.r.upstream.lock() {
                        let t = log.push(Try::new(group.name.clone(), Instant::now()));
                        t.status = 502;
                        t.ended = Some(Instant::now());
                    }
                    error!(upstream = %group.name, "no live upstreams while connecting to upstream");
                    elog.write(
                        Level::Error,
                        "no live upstreams while connecting to upstream",
                        Some(&url(&group.name)),
                    );
                    return Err(Fail::Error);
                }
            }
        };
        let tried = Instant::now();
        let mut timing = Timing::default();
        let result = try_peer(group, &addr, req, streamed.as_deref_mut(), res, &mut timing).await;
        // The try, for $upstream_*: ended unless its body is still to come.
        let meter = result.as_ref().ok().map(|_| Arc::new(Meter::default()));
        if let Ok(mut log) = elog.r.upstream.lock() {
            let t = log.push(Try::new(addr.to_string(), tried));
            t.connect = timing.connect;
            t.header = timing.header;
            t.sent = timing.sent;
            match &result {
                Ok((head, ..)) => {
                    t.status = head.status;
                    t.head_bytes = head.len as u64;
                    t.meter = meter.clone();
                }
                Err((fail, ..)) => {
                    t.status = fail.status();
                    t.ended = Some(Instant::now());
                }
            }
        }
        match result {
            Ok((head, conn, back)) => {
                let status = head.status;
                stats.answered(&group.name, &addr, status, tried.elapsed());
                if let Some((listed, failure)) = status_flag(&res.next_upstream, status) {
                    let blocked = req.non_idempotent && !res.next_upstream.non_idempotent;
                    if listed && attempt.tries > 1 && !blocked && !timed_out() {
                        warn!(upstream = %group.name, peer = %addr, status, "upstream answered {status}: trying the next one");
                        let outcome = if failure {
                            Outcome::Failed
                        } else {
                            Outcome::Ok
                        };
                        if free(group, &mut attempt, id, outcome) {
                            elog.write(Level::Warn, DISABLED_READING, Some(&url(&addr)));
                        }
                        if let Some(m) = &meter {
                            m.finish();
                        }
                        continue;
                    }
                    let outcome = if listed && failure {
                        Outcome::Failed
                    } else {
                        Outcome::Ok
                    };
                    if free(group, &mut attempt, id, outcome) {
                        elog.write(Level::Warn, DISABLED_READING, Some(&url(&addr)));
                    }
                } else {
                    free(group, &mut attempt, id, Outcome::Ok);
                }
                let meter = meter.unwrap_or_default();
                return Ok((head, conn, back, addr, meter));
            }
            Err((Fail::Local, _, why)) => {
                error!(upstream = %group.name, peer = %addr, "{}", why.text);
                elog.write(why.level, &why.text, Some(&url(&addr)));
                free(group, &mut attempt, id, Outcome::Ok);
                return Err(Fail::Local);
            }
            Err((Fail::Client(status), ..)) => {
                free(group, &mut attempt, id, Outcome::Ok);
                return Err(Fail::Client(status));
            }
            Err((fail, sent, why)) => {
                let Why { text: why, level } = why;
                error!(upstream = %group.name, peer = %addr, "{why}");
                elog.write(level, &why, Some(&url(&addr)));
                stats.failed(&group.name, &addr);
                if free(group, &mut attempt, id, Outcome::Failed) {
                    // With the failure's own context ("while connecting to upstream",
                    // ...), as nginx's log context adds it to every line of a phase.
                    let context = why.rfind(" while ").map_or("", |i| &why[i..]);
                    let message = format!("upstream server temporarily disabled{context}");
                    elog.write(Level::Warn, &message, Some(&url(&addr)));
                }
                // A body streamed upstream past what was read before the first try
                // cannot go again (nginx: request_sent with request_body_no_buffering).
                let blocked = (sent && req.non_idempotent && !res.next_upstream.non_idempotent)
                    || streamed.as_ref().is_some_and(|s| s.consumed);
                if attempt.tries == 0 || !fail.allowed(&res.next_upstream) || blocked || timed_out()
                {
                    return Err(fail);
                }
            }
        }
    }
}

const DISABLED_READING: &str =
    "upstream server temporarily disabled while reading response header from upstream";

/// Ends a try; true when the peer has just been marked failed (max_fails reached).
fn free(
    group: &UpstreamGroup,
    attempt: &mut fulcrum_upstream::Attempt,
    id: PeerId,
    outcome: Outcome,
) -> bool {
    debug_assert_eq!(attempt.current(), Some(id));
    let (disabled, addr) = group.with_pool(|pool| {
        let disabled = pool.free(attempt, outcome, now_secs());
        (disabled, pool.peer(id).addr.clone())
    });
    if disabled {
        warn!(upstream = %group.name, peer = %addr, "upstream server temporarily disabled");
    }
    disabled
}

/// One try against one peer: a cached connection if there is one (a stale one is
/// replaced without costing a try), else a new one.
/// How long a try took to connect and to get the response head, and what it sent.
#[derive(Debug, Default)]
struct Timing {
    connect: Option<std::time::Duration>,
    header: Option<std::time::Duration>,
    sent: u64,
}

/// Why a try failed, for the error log: nginx's words and their level.
struct Why {
    text: String,
    level: Level,
}

impl From<String> for Why {
    fn from(text: String) -> Why {
        Why {
            text,
            level: Level::Error,
        }
    }
}

impl Why {
    /// A failure nginx logs at crit.
    fn crit(text: String) -> Why {
        Why {
            text,
            level: Level::Crit,
        }
    }
}

async fn try_peer(
    group: &Arc<UpstreamGroup>,
    addr: &PeerAddr,
    req: &UpstreamRequest,
    mut streamed: Option<&mut Streamed<'_>>,
    res: &Resolved,
    timing: &mut Timing,
) -> Result<(ResponseHead, Conn, Back), (Fail, bool, Why)> {
    let start = Instant::now();
    let reuse = group.keepalive > 0 && req.version == Version::HTTP_11;
    let mut cached = if reuse {
        group.idle.take(addr, group.keepalive_timeout)
    } else {
        None
    };
    loop {
        let mut conn = match cached.take() {
            Some(c) => c,
            None => upstream::connect(
                addr,
                req.local,
                res.connect_timeout,
                req.tls.as_ref(),
                res.send_timeout,
            )
            .await
            .map_err(|e| match e {
                upstream::ConnectError::Timeout(why) => (Fail::Timeout, false, why.into()),
                upstream::ConnectError::Failed(why) => (Fail::Error, false, why.into()),
                upstream::ConnectError::Crit(why) => (Fail::Error, false, Why::crit(why)),
                upstream::ConnectError::Local(why) => (Fail::Local, false, Why::crit(why)),
            })?,
        };
        timing.connect = Some(start.elapsed());
        let exchanged = match streamed.as_deref_mut() {
            None => {
                let exchanged = conn
                    .exchange(&req.head, &req.body, req.head_request, res.read_timeout)
                    .await;
                if !matches!(exchanged, Err(Failure::Stale { sent: false })) {
                    timing.sent = (req.head.len() + req.body.len()) as u64;
                }
                exchanged
            }
            Some(s) => match send_streamed(&mut conn, req, s, res, timing).await {
                Err(Streaming::Client(status)) => {
                    return Err((Fail::Client(status), true, String::new().into()))
                }
                Err(Streaming::Upstream(f)) => Err(f),
                Ok(head) => Ok(head),
            },
        };
        // Once the client's body has been read past what can be sent again, a
        // connection closed under it is the peer's failure, not a stale one.
        let exchanged = match exchanged {
            Err(Failure::Stale { sent: true }) if streamed.as_ref().is_some_and(|s| s.consumed) => {
                Err(Failure::Error(upstream::CLOSED_BEFORE_HEAD.into()))
            }
            e => e,
        };
        match exchanged {
            Ok(head) => {
                timing.header = Some(start.elapsed());
                let keep = reuse
                    && conn.requests < group.keepalive_requests
                    && head.keep_alive
                    && head.status != 101;
                let back = keep.then(|| upstream::Back {
                    idle: group.idle.clone(),
                    addr: addr.clone(),
                    cap: group.keepalive,
                });
                return Ok((head, conn, back));
            }
            // A cached connection the peer had closed: again on a new one, unless a
            // request nginx would not send twice may have reached it.
            Err(Failure::Stale { sent }) if !sent || !req.non_idempotent => continue,
            Err(Failure::Stale { .. }) => {
                return Err((
                    Fail::Error,
                    true,
                    String::from(upstream::CLOSED_BEFORE_HEAD).into(),
                ))
            }
            Err(Failure::Timeout(why)) => return Err((Fail::Timeout, true, why.into())),
            Err(Failure::InvalidHeader(why)) => {
                return Err((Fail::InvalidHeader, true, why.into()))
            }
            Err(Failure::Error(why)) => return Err((Fail::Error, true, why.into())),
        }
    }
}

/// See `handle`: responses up to this size are not spooled.
const SMALL_RESPONSE: u64 = 16 * 1024;

/// The hop's own headers of an upstream's response, which never pass (the upstream
/// module ignores them whatever proxy_pass_header says).
fn hop(name: &[u8]) -> bool {
    ["connection", "keep-alive", "transfer-encoding"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The client's response head from the upstream's: nginx's own headers in their slots,
/// the others as received (names in their case), `Location` rewritten by proxy_redirect.
#[allow(clippy::too_many_arguments)]
fn relay_head(
    site: &Site,
    head: &ResponseHead,
    res: &Resolved,
    r: &Req,
    loc: &Loc,
    target: &Target,
    proxy_host: &str,
    server: &VServer,
) -> Response {
    let mut out = Response::new(head.status, res.server.clone());
    if !head.http09 {
        out.status_line = Some(head.status_line.clone());
    }
    for h in &head.headers {
        let n = &h.name[..];
        if hop(n) || res.hides(n) {
            continue;
        }
        // A Server or Date proxy_pass_header lets through takes the place of nginx's own.
        if n.eq_ignore_ascii_case(b"server") {
            out.own_server = false;
        } else if n.eq_ignore_ascii_case(b"date") {
            out.own_date = false;
        }
        if n.eq_ignore_ascii_case(b"set-cookie") && !res.cookies.is_empty() {
            let ctx = r.ctx(site, server.name(), proxy_host);
            let value = String::from_utf8_lossy(&h.value);
            match crate::cookies::rewrite_cookie(&value, &res.cookies, &|t| ctx.eval(t)) {
                Some(v) => out.headers.push(h.name.clone(), v),
                None => out.headers.push(h.name.clone(), h.value.clone()),
            }
        } else if n.eq_ignore_ascii_case(b"content-type") {
            out.content_type.get_or_insert_with(|| h.value.clone());
        } else if n.eq_ignore_ascii_case(b"content-length") {
            continue;
        } else if n.eq_ignore_ascii_case(b"location") && out.location.is_none() {
            // As proxy_redirect leaves it; a relative one is made absolute and written
            // where nginx's header filter writes its own, an absolute one stays in place.
            let value = std::str::from_utf8(&h.value)
                .ok()
                .and_then(|l| proxy_redirect(site, l, res, r, loc, target, proxy_host, server))
                .map_or_else(|| h.value.clone(), Bytes::from);
            if value.starts_with(b"/") {
                let host = r.ctx(site, server.name(), proxy_host).host();
                let path = String::from_utf8_lossy(&value);
                out.location = Some(Bytes::from(absolute(r, &host, &path)));
            } else {
                out.headers.push(h.name.clone(), value);
            }
        } else {
            out.headers.push(h.name.clone(), h.value.clone());
        }
    }
    out.content_length = match head.framing {
        Framing::Length(n) => Some(n),
        Framing::Empty if head.headers.contains("content-length") => head
            .headers
            .get_str("content-length")
            .and_then(|v| v.parse().ok()),
        Framing::Empty if head.status >= 200 && head.status != 204 && head.status != 304 => Some(0),
        _ => None,
    };
    out
}

/// proxy_redirect: `default` is `http://$proxy_host<uri part>` → the location's prefix.
#[allow(clippy::too_many_arguments)]
fn proxy_redirect(
    site: &Site,
    location: &str,
    res: &Resolved,
    r: &Req,
    loc: &Loc,
    target: &Target,
    proxy_host: &str,
    server: &VServer,
) -> Option<String> {
    for rule in &res.redirect {
        let (from, to) = match rule {
            ProxyRedirect::Off => return None,
            ProxyRedirect::Default => {
                let Target::Fixed { uri, https, .. } = target else {
                    continue;
                };
                let prefix = match &loc.matcher {
                    fulcrum_nginx_conf::model::LocationMatch::Prefix(p)
                    | fulcrum_nginx_conf::model::LocationMatch::PrefixNoRegex(p)
                    | fulcrum_nginx_conf::model::LocationMatch::Exact(p) => p.clone(),
                    _ => continue,
                };
                let scheme = if *https { "https" } else { "http" };
                let from = format!("{scheme}://{proxy_host}{}", uri.as_deref().unwrap_or("/"));
                let to = if uri.is_some() {
                    prefix
                } else {
                    "/".to_string()
                };
                (from, to)
            }
            ProxyRedirect::Replace { from, to } => {
                let ctx = r.ctx(site, server.name(), proxy_host);
                (ctx.eval(from), ctx.eval(to))
            }
        };
        if let Some(rest) = location.strip_prefix(&from) {
            return Some(format!("{to}{rest}"));
        }
    }
    None
}

/// nginx's absolute_redirect: a Location that starts with `/` gets the scheme, the host
/// the request named (without its port) and, unless it is the scheme's default, the port
/// the request came in on (port_in_redirect).
pub(crate) fn absolute(r: &Req, host: &str, path: &str) -> String {
    let (scheme, default) = if r.conn.https {
        ("https", 443)
    } else {
        ("http", 80)
    };
    let port = r.conn.local.port();
    if port == default {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    }
}

/// stub_status: the connection counters as text, for GET and HEAD.
fn stub_status(site: &Site, server: &VServer, r: &Req, res: &Resolved) -> Served {
    if !matches!(&r.method_name[..], b"GET" | b"HEAD") {
        return Served::Error(405);
    }
    let resp = Response::new(200, res.server.clone()).with_body(
        Bytes::from_static(b"text/plain"),
        Bytes::from(site.stats.1.page()),
    );
    Served::Done(Some(finish(site, server, res, r, resp)))
}

/// An error page, logged.
fn fail(site: &Site, server: &VServer, res: &Resolved, r: &Req, status: u16) -> Response {
    finish(
        site,
        server,
        res,
        r,
        Response::error(status, res.server.clone()),
    )
}

/// Applies the headers filter (expires, add_header), counts the response and leaves its
/// access log line with it.
fn finish(site: &Site, server: &VServer, res: &Resolved, r: &Req, mut resp: Response) -> Response {
    let ua = r.headers.get("user-agent").map(|u| &u[..]);
    resp.pad_for(ua, r.protocol == "HTTP/0.9");
    // auth_basic's challenge and what an X-Accel-Redirect answer carried go before the
    // response's own headers (nginx had them in its list first); the carried
    // Content-Type wins over a file's (nginx keeps the one it has).
    if r.www_authenticate.is_some() || !r.carried.is_empty() {
        let mut headers = Headers::with_capacity(r.carried.len() + resp.headers.len() + 1);
        if let Some(v) = &r.www_authenticate {
            headers.push("WWW-Authenticate", v.clone());
        }
        for h in &r.carried {
            if h.is("content-type") {
                if resp.file.is_some() || resp.content_type.is_none() {
                    resp.content_type = Some(h.value.clone());
                }
                continue;
            }
            headers.push(h.name.clone(), h.value.clone());
        }
        for h in std::mem::take(&mut resp.headers).iter() {
            headers.push(h.name.clone(), h.value.clone());
        }
        resp.headers = headers;
    }
    if let Ok(mut held) = r.limit_conn.lock() {
        resp.limit_conn.append(&mut held);
    }
    crate::headers::filter(&mut resp, res, &r.ctx(site, server.name(), ""));
    crate::gzip::filter(&mut resp, res.gzip.as_deref(), r);
    crate::files::ranges(&mut resp, r);
    // error_page's status replaces the page's own (not that of an error nginx answers
    // itself while serving the page).
    if let (Some(status), false) = (r.err_status, resp.special) {
        resp.status = status;
        resp.status_line = None;
    }
    if res.uninitialized_variable_warn {
        let names = r
            .script
            .uninitialized
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        for n in names {
            let message = format!("using uninitialized \"{n}\" variable");
            elog(res, r, server).write(Level::Warn, &message, None);
        }
    }
    site.stats.request(server.name(), resp.status);
    resp.log = AccessLine::new(site, server, res, r, resp.status);
    resp
}

/// How a request body is framed to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// `Content-Length: N`: the length read whole, or the client's own when streamed.
    Length(u64),
    /// `Transfer-Encoding: chunked`: streamed without a length, to an HTTP/1.1 upstream.
    Chunked,
}

/// nginx's client_body_buffer_size default (16k on 64-bit systems): how much of a body
/// already here is read before an unbuffered upstream request is made.
const PREREAD: usize = 16 * 1024;

/// A future's output if it is ready at its first poll.
async fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// A client body read piece by piece, as an object (the upstream side is not generic).
trait Pump: Send {
    fn pull(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>>;
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl<B: ClientBody> Pump for B {
    fn pull(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>> {
        Box::pin(self.next())
    }
}

/// proxy_request_buffering off: the client's body as it goes upstream.
struct Streamed<'a> {
    body: &'a mut dyn Pump,
    upload: Upload,
    /// What was read before the first try: it can go to another peer again.
    first: Bytes,
    /// The body ended within `first`.
    ended: bool,
    /// More than `first` has been read and sent: no other peer can be tried.
    consumed: bool,
    reading: Reading,
}

impl Streamed<'_> {
    /// The next piece (None at the end), or the status a client failure gets.
    async fn pull(&mut self) -> Result<Option<Bytes>, u16> {
        self.reading.take(self.body.pull()).await
    }
}

/// Why a streamed request failed: the client's side or the upstream's.
enum Streaming {
    Client(u16),
    Upstream(Failure),
}

/// Sends the head with what of the body is at hand, the rest as the client sends it
/// (chunked: each piece as a chunk, then the last chunk), then reads the response head.
async fn send_streamed(
    conn: &mut Conn,
    req: &UpstreamRequest,
    s: &mut Streamed<'_>,
    res: &Resolved,
    timing: &mut Timing,
) -> Result<ResponseHead, Streaming> {
    let chunked = s.upload == Upload::Chunked;
    let frame = |piece: &Bytes| -> (String, &'static [u8]) {
        if chunked && !piece.is_empty() {
            (format!("{:x}\r\n", piece.len()), b"\r\n")
        } else {
            (String::new(), b"")
        }
    };
    const LAST: &[u8] = b"0\r\n\r\n";
    let (size, crlf) = frame(&s.first);
    let last: &[u8] = if chunked && s.ended { LAST } else { b"" };
    let parts = [&req.head[..], size.as_bytes(), &s.first, crlf, last];
    conn.send_head(&parts).await.map_err(Streaming::Upstream)?;
    timing.sent = parts.iter().map(|p| p.len() as u64).sum();
    while !s.ended {
        match s.pull().await.map_err(Streaming::Client)? {
            None => {
                s.ended = true;
                if chunked {
                    conn.send_more(&[LAST]).await.map_err(Streaming::Upstream)?;
                    timing.sent += LAST.len() as u64;
                }
            }
            Some(piece) => {
                s.consumed = true;
                let (size, crlf) = frame(&piece);
                let parts = [size.as_bytes(), &piece, crlf];
                conn.send_more(&parts).await.map_err(Streaming::Upstream)?;
                timing.sent += parts.iter().map(|p| p.len() as u64).sum::<u64>();
            }
        }
    }
    conn.response_head(req.head_request, res.read_timeout)
        .await
        .map_err(Streaming::Upstream)
}
