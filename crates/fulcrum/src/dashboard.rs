//! The live dashboard at `/` on the metrics address: one page, no external assets (its
//! script and style are in the binary), rendered at once from the state embedded in it,
//! then kept live by server-sent events from `/events` (the whole state every half
//! second). One sampler reads the state every 250 ms, notices the recent events (VRRP
//! transitions, checker and real-server changes, upstream peers leaving or joining,
//! reloads) and keeps the latest state for every page and stream: viewers add no reads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const PAGE: &str = include_str!("dashboard.html");

/// What happened recently (newest last), and the latest state the sampler read.
#[derive(Debug, Default)]
pub struct Events {
    recent: Mutex<VecDeque<(u128, String)>>,
    latest: Mutex<Option<Value>>,
}

impl Events {
    /// The latest state with the events, as pages and streams show it; read afresh only
    /// before the sampler's first round.
    pub async fn current(&self, src: &crate::metrics::Sources) -> Value {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut state = match latest {
            Some(v) => v,
            None => state(src).await,
        };
        state["events"] = self.json();
        state
    }

    fn push(&self, text: String) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        tracing::debug!("dashboard event: {text}");
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
async fn state(src: &crate::metrics::Sources) -> Value {
    let s = crate::metrics::snapshot(src).await;
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
        "status": s.status,
        "vrrp": s.vrrp,
        "health": s.health,
        "l4": s.l4,
        "upstreams": s.upstreams,
        "l7_requests": requests,
    })
}

/// The page, with the current state embedded.
pub async fn page(src: &crate::metrics::Sources, events: &Events) -> String {
    let state = events.current(src).await.to_string().replace("</", "<\\/");
    PAGE.replace("__INITIAL__", &state)
}

/// Short text of what changed between two states.
fn changes(before: &Value, now: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let arr = |v: &Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
    for i in arr(now, "vrrp") {
        let old = arr(before, "vrrp")
            .into_iter()
            .find(|o| o["name"] == i["name"]);
        if let Some(o) = old {
            if o["state"] != i["state"] {
                out.push(format!(
                    "VRRP {}: {} → {} ({})",
                    i["name"].as_str().unwrap_or(""),
                    o["state"].as_str().unwrap_or(""),
                    i["state"].as_str().unwrap_or(""),
                    i["last_transition"]["reason"].as_str().unwrap_or("")
                ));
            }
        }
    }
    for (vs_now, vs_old) in arr(now, "health").iter().zip(arr(before, "health").iter()) {
        for r in vs_now["real_servers"].as_array().into_iter().flatten() {
            let Some(o) = vs_old["real_servers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["address"] == r["address"])
            else {
                continue;
            };
            if o["alive"] != r["alive"] {
                let reason = r["checkers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|c| (c["state"] == "down").then(|| c["last_reason"].clone()))
                    .and_then(|r| r.as_str().map(str::to_string))
                    .unwrap_or_default();
                out.push(format!(
                    "real server {} in {}: {}{}",
                    r["address"].as_str().unwrap_or(""),
                    vs_now["virtual_server"].as_str().unwrap_or(""),
                    if r["alive"] == true { "up" } else { "down" },
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                ));
            }
        }
    }
    for p in arr(now, "upstreams") {
        let Some(o) = arr(before, "upstreams")
            .into_iter()
            .find(|o| o["upstream"] == p["upstream"] && o["address"] == p["address"])
        else {
            continue;
        };
        let state = |v: &Value| (v["check_down"] == true, v["drained"] == true);
        if state(&o) != state(&p) {
            let (down, drained) = state(&p);
            out.push(format!(
                "upstream {} peer {}: {}",
                p["upstream"].as_str().unwrap_or(""),
                p["address"].as_str().unwrap_or(""),
                if drained {
                    "drained"
                } else if down {
                    "out (health check)"
                } else {
                    "in rotation"
                }
            ));
        }
    }
    let reloads = |v: &Value, k: &str| v["status"]["config"][k].as_u64().unwrap_or(0);
    if reloads(now, "reloads_ok") > reloads(before, "reloads_ok") {
        out.push(format!(
            "configuration reloaded ({})",
            now["status"]["config"]["hash"].as_str().unwrap_or("")
        ));
    }
    if reloads(now, "reloads_failed") > reloads(before, "reloads_failed") {
        out.push("a reload was refused; the running configuration stays".into());
    }
    out
}

/// Notices changes every 250 ms, for the events list.
pub fn sample(src: crate::metrics::Sources, events: Arc<Events>) {
    tokio::spawn(async move {
        let mut before: Option<Value> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let now = state(&src).await;
            if let Some(b) = &before {
                for text in changes(b, &now) {
                    events.push(text);
                }
            }
            *events.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(now.clone());
            before = Some(now);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_described() {
        let before = json!({"vrrp": [{"name": "VI_1", "state": "BACKUP"}], "health": [], "upstreams": [],
                            "status": {"config": {"reloads_ok": 0, "reloads_failed": 0}}});
        let now = json!({"vrrp": [{"name": "VI_1", "state": "MASTER", "last_transition": {"reason": "no advert for 3 intervals"}}],
                         "health": [], "upstreams": [], "status": {"config": {"reloads_ok": 1, "reloads_failed": 0, "hash": "ab"}}});
        assert_eq!(
            changes(&before, &now),
            vec![
                "VRRP VI_1: BACKUP → MASTER (no advert for 3 intervals)".to_string(),
                "configuration reloaded (ab)".to_string()
            ]
        );
    }
}
