//! The live dashboard at `/` on the metrics address: one page, no external assets (its
//! script and style are in the binary), rendered at once from the state embedded in it,
//! then kept live by server-sent events from `/events` (the whole state every half
//! second). The events list comes from the node's event channel, so a flap between two
//! samples is still shown; one sampler reads the state every half second and keeps the
//! latest for every page and stream (an event makes the next reader take a fresh one):
//! viewers add no reads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_node::{Node, Status};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

const PAGE: &str = include_str!("dashboard.html");

/// What happened recently (newest last), and the latest state the sampler read.
#[derive(Debug, Default)]
pub struct Events {
    recent: Mutex<VecDeque<(u128, String)>>,
    latest: Mutex<Option<Value>>,
}

impl Events {
    /// The latest state with the events, as pages and streams show it; read afresh when
    /// something happened since the sampler's last round, so the state and the events
    /// agree.
    pub async fn current(&self, node: &Node) -> Value {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut state = match latest {
            Some(v) => v,
            None => {
                let now = state(&node.snapshot().await);
                *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(now.clone());
                now
            }
        };
        state["events"] = self.json();
        state
    }

    fn push(&self, text: String) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut q = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back((at, text));
        while q.len() > 50 {
            q.pop_front();
        }
    }

    fn json(&self) -> Value {
        let q = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .map(|(at, text)| json!({"at_ms": at, "text": text}))
            .collect()
    }
}

/// The page's state: what the control socket shows and the proxy's request counts.
fn state(s: &Status) -> Value {
    let requests: serde_json::Map<String, Value> =
        s.l7.as_ref()
            .map(|c| {
                c.requests
                    .iter()
                    .flat_map(|(server, by)| {
                        by.iter()
                            .map(move |(status, n)| (format!("{server} {status}"), json!(n)))
                    })
                    .collect()
            })
            .unwrap_or_default();
    json!({
        "status": s.daemon,
        "vrrp": s.vrrp,
        "health": s.health,
        "l4": s.l4,
        "upstreams": s.upstreams,
        "l7_requests": requests,
        "bgp": s.bgp,
    })
}

/// The page, with the current state embedded.
pub async fn page(node: &Node, events: &Events) -> String {
    let state = events.current(node).await.to_string().replace("</", "<\\/");
    PAGE.replace("__INITIAL__", &state)
}

/// Keeps the events list from the node's events, and the latest state every half second.
pub fn sample(node: Arc<Node>, events: Arc<Events>) {
    let mut rx = node.events();
    let recent = Arc::clone(&events);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => recent.push(e.to_string()),
                Err(RecvError::Lagged(n)) => recent.push(format!("({n} events not shown)")),
                Err(RecvError::Closed) => return,
            }
            // The state changed with it: the next reader takes a fresh one.
            *recent.latest.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = state(&node.snapshot().await);
            *events.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        }
    });
}
