//! The metrics listener of `fulcrum run --metrics ADDR:PORT` (or global_defs'
//! `fulcrum_metrics ADDR:PORT`): Prometheus metrics at `/metrics` (each scrape a fresh
//! snapshot of the node, encoded by `fulcrum_metrics`), the dashboard at `/` and its
//! server-sent `/events`, and the same data as `/status.json` and `/status.csv`; all of
//! it behind HTTP basic auth with `--metrics-htpasswd`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use base64::Engine;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::info;

/// Where a scrape gets its numbers.
pub type Sources = Arc<fulcrum_node::Node>;

/// The exposition text of one scrape.
pub async fn render(src: &Sources) -> String {
    fulcrum_metrics::render(src.snapshot().await)
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The users allowed on the listener: an htpasswd file's bcrypt entries (`htpasswd -B`).
#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, String>,
    /// Authorization headers already verified: bcrypt is meant to be slow, and Prometheus
    /// sends the same header at every scrape.
    accepted: Mutex<HashSet<String>>,
}

impl Auth {
    /// Reads an htpasswd file: `user:hash` lines, `#` comments; only bcrypt hashes.
    pub fn load(path: &Path) -> anyhow::Result<Auth> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--metrics-htpasswd {}", path.display()))?;
        Auth::parse(&text)
            .map_err(|e| anyhow::anyhow!("--metrics-htpasswd {}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Auth, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: not user:hash", n + 1))?;
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {}: the hash of '{user}' is not bcrypt (make it with htpasswd -B)",
                    n + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err("no user".into());
        }
        Ok(Auth {
            users,
            accepted: Mutex::new(HashSet::new()),
        })
    }

    /// Whether a request's `Authorization` header names a user with the right password.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(header) = header else {
            return false;
        };
        if self
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(header)
        {
            return true;
        }
        let decoded = header
            .strip_prefix("Basic ")
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return false;
        };
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok {
            let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            // A bound on what a caller can make us keep: at most a few headers.
            if accepted.len() >= 64 {
                accepted.clear();
            }
            accepted.insert(header.to_string());
        }
        ok
    }
}

fn respond(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Body> {
    use http_body_util::BodyExt;
    Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(body.into()).boxed())
        .expect("static response parts")
}

/// The server-sent events of the dashboard: the whole state every half second.
fn events_stream(src: Sources, events: Arc<crate::dashboard::Events>) -> Response<Body> {
    use http_body_util::BodyExt;
    let stream = futures::stream::unfold(
        (
            src,
            events,
            tokio::time::interval(std::time::Duration::from_millis(500)),
        ),
        |(src, events, mut tick)| async move {
            tick.tick().await;
            let state = events.current(&src).await;
            let frame = hyper::body::Frame::data(Bytes::from(format!("data: {state}\n\n")));
            Some((
                Ok::<_, std::convert::Infallible>(frame),
                (src, events, tick),
            ))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .expect("static response parts")
}

/// Serves `/metrics`, the dashboard at `/` with its `/events`, and `/status.json` and
/// `/status.csv` on `addr`, asking for basic auth when `auth` is given.
pub async fn serve(addr: SocketAddr, src: Sources, auth: Option<Arc<Auth>>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    info!(%addr, "metrics at /metrics, dashboard at /");
    let events = Arc::new(crate::dashboard::Events::default());
    crate::dashboard::sample(src.clone(), Arc::clone(&events));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let src = src.clone();
            let events = Arc::clone(&events);
            let auth = auth.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let src = src.clone();
                        let events = Arc::clone(&events);
                        let auth = auth.clone();
                        async move {
                            let header = req
                                .headers()
                                .get(hyper::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok());
                            if let Some(a) = &auth {
                                // bcrypt is slow on purpose: off the reactor.
                                let a = Arc::clone(a);
                                let header = header.map(str::to_string);
                                let allowed = tokio::task::spawn_blocking(move || {
                                    a.allows(header.as_deref())
                                })
                                .await
                                .unwrap_or(false);
                                if !allowed {
                                    let mut r = respond(
                                        StatusCode::UNAUTHORIZED,
                                        "text/plain",
                                        "authentication required\n",
                                    );
                                    r.headers_mut().insert(
                                        hyper::header::WWW_AUTHENTICATE,
                                        hyper::header::HeaderValue::from_static(
                                            "Basic realm=\"fulcrum\"",
                                        ),
                                    );
                                    return Ok(r);
                                }
                            }
                            let resp = match req.uri().path() {
                                "/metrics" => respond(
                                    StatusCode::OK,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    render(&src).await,
                                ),
                                "/" => respond(
                                    StatusCode::OK,
                                    "text/html; charset=utf-8",
                                    crate::dashboard::page(&src, &events).await,
                                ),
                                "/events" => events_stream(src, events),
                                "/status.json" => respond(
                                    StatusCode::OK,
                                    "application/json",
                                    events.current(&src).await.to_string(),
                                ),
                                "/status.csv" => respond(
                                    StatusCode::OK,
                                    "text/csv; charset=utf-8",
                                    crate::export::csv(&src.snapshot().await),
                                ),
                                _ => respond(
                                    StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "see /, /metrics, /status.json and /status.csv\n",
                                ),
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // "secret", hashed at cost 4 (htpasswd -B -C 4), to keep the test fast.
    fn auth() -> Auth {
        let hash = bcrypt::hash_with_salt("secret", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        Auth::parse(&format!("# scrapers\nprom:{hash}\n")).unwrap()
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn basic_auth_takes_the_right_password_only() {
        let a = auth();
        assert!(a.allows(Some(&basic("prom:secret"))));
        // Again, from the cache.
        assert!(a.allows(Some(&basic("prom:secret"))));
        assert!(!a.allows(Some(&basic("prom:wrong"))));
        assert!(!a.allows(Some(&basic("other:secret"))));
        assert!(!a.allows(Some("Bearer x")));
        assert!(!a.allows(None));
    }

    #[test]
    fn htpasswd_files_must_hold_bcrypt_users() {
        assert!(Auth::parse("prom:{SHA}abc\n")
            .unwrap_err()
            .contains("not bcrypt"));
        assert!(Auth::parse("# nobody\n").unwrap_err().contains("no user"));
        assert!(Auth::parse("justaname\n")
            .unwrap_err()
            .contains("not user:hash"));
    }
}
