//! Connections to upstream peers: opened with proxy_connect_timeout, kept idle for reuse
//! when the upstream has `keepalive` (nginx's per-upstream cache), dropped after
//! keepalive_timeout or keepalive_requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stall::SendTimed;

const UPSTREAM_STALL: &str = "upstream timed out while sending request to upstream";

pub type Sender = SendRequest<Full<Bytes>>;

/// An open upstream connection.
#[derive(Debug)]
pub struct Conn {
    pub sender: Sender,
    /// Requests sent on it so far.
    pub requests: u32,
    pub idle_since: Instant,
}

/// Idle connections by peer address.
#[derive(Debug, Default)]
pub struct Idle(Mutex<HashMap<SocketAddr, Vec<Conn>>>);

impl Idle {
    /// The most recently used live idle connection to `addr`, if any.
    pub fn take(&self, addr: SocketAddr, timeout: Duration) -> Option<Conn> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if c.idle_since.elapsed() < timeout && c.sender.is_ready() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps a connection for reuse; the oldest idle ones go beyond `cap` in all.
    pub fn put(&self, addr: SocketAddr, mut conn: Conn, cap: usize) {
        if cap == 0 || conn.sender.is_closed() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(addr).or_default().push(conn);
        let total: usize = map.values().map(Vec::len).sum();
        if total > cap {
            // Drop the connection idle the longest.
            let oldest = map
                .iter()
                .filter_map(|(a, l)| l.first().map(|c| (*a, c.idle_since)))
                .min_by_key(|(_, t)| *t)
                .map(|(a, _)| a);
            if let Some(a) = oldest {
                if let Some(l) = map.get_mut(&a) {
                    l.remove(0);
                }
            }
        }
    }
}

/// Opens a connection to `addr` within `timeout` (the TCP connect and, for an https
/// upstream, the TLS handshake: unverified and without SNI, nginx's proxy_ssl defaults).
/// Its writes give up after `send_timeout` without progress (proxy_send_timeout, as it
/// was where the connection was opened: a kept connection keeps it).
/// Err(true) on timeout.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    https: bool,
    send_timeout: Duration,
) -> Result<Conn, (bool, String)> {
    let timed_out = || {
        (
            true,
            "upstream timed out (110: Connection timed out) while connecting to upstream"
                .to_string(),
        )
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => {
            return Err((
                false,
                format!(
                    "connect() failed ({}) while connecting to upstream",
                    os_error(&e)
                ),
            ))
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder.title_case_headers(true);
    let sender = if https {
        let handshake = fulcrum_checkers::tls::handshake(stream, addr, None);
        let tls = match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err((
                    false,
                    format!("SSL_do_handshake() failed ({e}) while SSL handshaking to upstream"),
                ))
            }
            Ok(Ok(t)) => t,
        };
        let (sender, conn) = builder
            .handshake(TokioIo::new(SendTimed::new(
                tls,
                send_timeout,
                UPSTREAM_STALL,
            )))
            .await
            .map_err(|e| (false, format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
    } else {
        let (sender, conn) = builder
            .handshake(TokioIo::new(SendTimed::new(
                stream,
                send_timeout,
                UPSTREAM_STALL,
            )))
            .await
            .map_err(|e| (false, format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
    };
    Ok(Conn {
        sender,
        requests: 0,
        idle_since: Instant::now(),
    })
}

/// An OS error as nginx writes one: `111: Connection refused`.
pub fn os_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let text = e.to_string();
            let text = text
                .strip_suffix(&format!(" (os error {n})"))
                .unwrap_or(&text);
            format!("{n}: {text}")
        }
        None => e.to_string(),
    }
}
