//! nginx's headers filter: `expires` and `add_header` on the way out
//! (`ngx_http_headers_filter_module.c`). Both apply to the statuses nginx counts as
//! successful or redirects; `add_header ... always` to every status.

use fulcrum_nginx_conf::model::Expires;

use crate::response::Response;
use crate::site::Resolved;
use crate::vars::Ctx;

/// The statuses nginx's filter treats as safe.
fn safe(status: u16) -> bool {
    matches!(
        status,
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

/// Applies the location's expires and add_header to a response about to be sent. The
/// values are worked out first, against the response as the handler made it
/// (`$sent_http_*`), then applied.
pub(crate) fn filter(resp: &mut Response, res: &Resolved, ctx: &Ctx<'_>) {
    if matches!(res.expires, Expires::Off) && res.add_header.is_empty() {
        return;
    }
    let safe = safe(resp.status);
    let (expires, values) = {
        let mut ctx = Ctx {
            sent: Some(&resp.headers),
            sent_content_type: resp.content_type.as_deref(),
            ..*ctx
        };
        ctx.status = resp.status;
        let expires = if safe {
            expires(&res.expires, &ctx)
        } else {
            None
        };
        let values: Vec<(&str, String)> = res
            .add_header
            .iter()
            .filter(|h| safe || h.always)
            .map(|h| (h.name.as_str(), sanitize(ctx.eval(&h.value))))
            .collect();
        (expires, values)
    };
    if let Some((e, cache)) = expires {
        resp.headers.set_value("Expires", e);
        resp.headers.set_value("Cache-Control", cache);
    }
    for (name, value) in values {
        if name.eq_ignore_ascii_case("last-modified") || name.eq_ignore_ascii_case("etag") {
            // One of these at most: the configured line replaces the response's where it
            // stood (an empty value removes it).
            if value.is_empty() {
                resp.headers.remove(name);
            } else {
                resp.headers.set(name.to_string(), value);
            }
        } else if !value.is_empty() {
            resp.headers.push(name.to_string(), value);
        }
    }
}

/// CR, LF and NUL in a value become spaces, as nginx sanitizes it.
fn sanitize(v: String) -> String {
    if v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        v.replace(['\r', '\n', '\0'], " ")
    } else {
        v
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The `Expires` and `Cache-Control` values for an expires setting (ngx_http_set_expires;
/// the caller rewrites an existing Expires in place, the first Cache-Control likewise and
/// drops the others, and adds missing ones at the end, Expires first).
fn expires(e: &Expires, ctx: &Ctx<'_>) -> Option<(String, String)> {
    let parsed;
    let e = match e {
        Expires::Variable(t) => {
            let text = ctx.eval(t);
            match fulcrum_nginx_conf::parse_expires(&text, false) {
                Ok(Expires::Off) | Err(_) => return None,
                Ok(p) => {
                    parsed = p;
                    &parsed
                }
            }
        }
        Expires::Off => return None,
        e => e,
    };
    let now = now();
    let (expires, cache) = match *e {
        Expires::Epoch => (
            "Thu, 01 Jan 1970 00:00:01 GMT".to_string(),
            "no-cache".to_string(),
        ),
        Expires::Max => (
            "Thu, 31 Dec 2037 23:55:55 GMT".to_string(),
            "max-age=315360000".to_string(),
        ),
        Expires::Access(0) | Expires::Modified(0) => (
            crate::response::format_date(now.max(0) as u64),
            "max-age=0".to_string(),
        ),
        Expires::Daily(at) => {
            let next = next_time(now, at);
            (
                crate::response::format_date(next.max(0) as u64),
                cache_control(next - now, false),
            )
        }
        // The proxy knows no Last-Modified time of its own (nginx's is -1 for proxied
        // responses without a cache): `modified` counts from now, as nginx's does then.
        Expires::Access(t) | Expires::Modified(t) => (
            crate::response::format_date((now + t).max(0) as u64),
            cache_control(t, t < 0),
        ),
        Expires::Off | Expires::Variable(_) => return None,
    };
    Some((expires, cache))
}

fn cache_control(max_age: i64, negative: bool) -> String {
    if negative || max_age < 0 {
        "no-cache".to_string()
    } else {
        format!("max-age={max_age}")
    }
}

/// nginx's ngx_next_time: the next moment, in local time, that is `at` seconds after
/// midnight (today if still ahead, else tomorrow).
fn next_time(now: i64, at: i64) -> i64 {
    let tz = jiff::tz::TimeZone::system();
    let Ok(ts) = jiff::Timestamp::from_second(now) else {
        return now;
    };
    let zoned = ts.to_zoned(tz);
    let midnight = zoned.start_of_day().map(|z| z.timestamp().as_second());
    let Ok(midnight) = midnight else { return now };
    let today = midnight + at;
    if today > now {
        today
    } else {
        // A day later in local time (DST days are not 24 hours).
        zoned
            .tomorrow()
            .and_then(|z| z.start_of_day())
            .map(|z| z.timestamp().as_second() + at)
            .unwrap_or(today + 86_400)
    }
}
