//! The VIPs this director announces by BGP (keepalived.conf's `fulcrum_bgp`), through
//! BIRD: every half second the node's state (quorum from the health checks, the data
//! plane's services and counters, drain, stop) goes through [`fulcrum_bgp::Announcer`];
//! when the routes change, the include file is rewritten and BIRD told to read it. The
//! routes hang on a tap device this process holds (see fulcrum_bgp::bird), so a killed
//! daemon announces nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fulcrum_bgp::{Announcer, Bird, Inputs, Policy, Route, Speaker, VipInput, Why};
use fulcrum_keepalived_conf::model::{Bgp, KeepalivedConfig, ServiceKey};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::status;

/// What the node tells the BGP task, and what it reads back.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    pub drain: watch::Sender<bool>,
    pub stopping: watch::Sender<bool>,
    /// Set by the task once a stop has withdrawn everything.
    pub done: watch::Sender<bool>,
    /// The BGP view after each step (None without a fulcrum_bgp block).
    pub status: watch::Sender<Option<status::Bgp>>,
}

impl Default for Control {
    fn default() -> Control {
        Control {
            drain: watch::channel(false).0,
            stopping: watch::channel(false).0,
            done: watch::channel(false).0,
            status: watch::channel(None).0,
        }
    }
}

/// The VIPs a fulcrum_bgp block announces: its `vips`, else every virtual_server address.
pub(crate) fn vips(k: &KeepalivedConfig, b: &Bgp) -> Vec<IpAddr> {
    if !b.vips.is_empty() {
        return b.vips.clone();
    }
    let set: BTreeSet<IpAddr> = k
        .virtual_servers
        .iter()
        .filter_map(|vs| match vs.key {
            ServiceKey::Address { addr, .. } => Some(addr),
            _ => None,
        })
        .collect();
    set.into_iter().collect()
}

/// The address of a health view's `ADDR:PORT PROTO`.
fn service_ip(name: &str) -> Option<IpAddr> {
    name.split_whitespace()
        .next()?
        .parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip())
}

/// The decision's inputs out of the node's views.
pub(crate) fn inputs(
    vips: &[IpAddr],
    listing: Option<&status::Listing>,
    health: &[status::ServiceHealth],
    stopping: bool,
) -> Inputs {
    let vips = vips
        .iter()
        .map(|vip| {
            let services: Vec<&status::IpvsService> = listing
                .map(|l| {
                    l.services
                        .iter()
                        .filter(|s| s.address.parse::<IpAddr>().ok() == Some(*vip))
                        .collect()
                })
                .unwrap_or_default();
            VipInput {
                vip: *vip,
                without_quorum: health
                    .iter()
                    .filter(|h| service_ip(&h.virtual_server) == Some(*vip) && !h.has_quorum)
                    .map(|h| h.virtual_server.clone())
                    .collect(),
                services: services.len(),
                active: services
                    .iter()
                    .flat_map(|s| &s.dests)
                    .map(|d| d.active)
                    .sum(),
                packets: services.iter().map(|s| s.stats.inpkts).sum(),
            }
        })
        .collect();
    Inputs {
        dataplane_up: listing.is_some(),
        stopping,
        vips,
    }
}

fn speaker(b: &Bgp) -> Bird {
    Bird {
        socket: PathBuf::from(b.control()),
        include: PathBuf::from(b.config_file()),
        local_as: b.local_as,
        neighbors: b.neighbors.clone(),
        liveness: b.liveness().to_string(),
    }
}

fn policy(b: &Bgp) -> Policy {
    let d = Policy::default();
    Policy {
        med: b.med,
        communities: b.communities.clone(),
        drain_prepend: b.drain_prepend.unwrap_or(d.drain_prepend),
        drain_timeout: b
            .drain_timeout
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(d.drain_timeout),
        drain_quiet: d.drain_quiet,
    }
}

/// One fulcrum_bgp block at work: the announcer, the liveness tap, what BIRD was last
/// given.
pub(crate) struct Runtime {
    block: Bgp,
    speaker: Bird,
    announcer: Announcer,
    tap: Option<fulcrum_sys::LivenessTap>,
    written: Option<String>,
    routes: Vec<Route>,
    /// Each VIP's active connections through this director, as last seen.
    active: std::collections::BTreeMap<IpAddr, u64>,
    sessions: Vec<fulcrum_bgp::Session>,
    sessions_read: Option<Instant>,
    last_error: Option<String>,
}

impl Runtime {
    pub fn new(block: &Bgp) -> Runtime {
        let tap = match fulcrum_sys::LivenessTap::create(block.liveness()) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(
                    interface = block.liveness(),
                    "cannot create the BGP liveness tap: {e}; nothing is announced"
                );
                None
            }
        };
        Runtime {
            block: block.clone(),
            speaker: speaker(block),
            announcer: Announcer::new(policy(block)),
            tap,
            written: None,
            routes: Vec::new(),
            active: Default::default(),
            sessions: Vec::new(),
            sessions_read: None,
            last_error: None,
        }
    }

    pub fn block(&self) -> &Bgp {
        &self.block
    }

    /// A changed block with the same liveness interface: taken in place (the drain and
    /// the tap stay).
    pub fn update(&mut self, block: &Bgp) {
        self.block = block.clone();
        self.speaker = speaker(block);
        self.announcer.set_policy(policy(block));
        self.written = None;
    }

    /// Decides, and hands BIRD what changed.
    pub async fn step(&mut self, now: Instant, inputs: &Inputs, drain: bool) {
        if drain != self.announcer.draining() {
            self.announcer.drain(now, drain);
            info!(
                "{}",
                if drain {
                    "draining this director: the VIPs are announced with a longer path until quiet"
                } else {
                    "drain ended: the VIPs are announced as usual"
                }
            );
        }
        let routes = self.announcer.plan(now, inputs);
        self.active = inputs.vips.iter().map(|v| (v.vip, v.active)).collect();
        for r in &routes {
            let before = self.routes.iter().find(|o| o.vip == r.vip);
            if before.map(|b| (&b.attrs, &b.why)) != Some((&r.attrs, &r.why)) {
                info!(vip = %r.vip, announced = r.why.announced(), "BGP: {}", r.why);
            }
        }
        self.routes = routes;
        let text = self.speaker.config(&self.routes);
        if self.written.as_deref() != Some(text.as_str()) {
            match self.hand_over(&text).await {
                Ok(()) => {
                    self.written = Some(text);
                    self.last_error = None;
                }
                Err(e) => {
                    if self.last_error.as_deref() != Some(e.as_str()) {
                        warn!("BGP: {e}; tried again in a moment");
                    }
                    self.last_error = Some(e);
                }
            }
        }
        if self
            .sessions_read
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(2))
        {
            self.sessions_read = Some(now);
            if let Ok(out) = run(&self.speaker.sessions_command()).await {
                self.sessions = self.speaker.sessions(&out);
            }
        }
    }

    /// Writes the include (a new file renamed over the old) and has BIRD read it.
    async fn hand_over(&self, text: &str) -> Result<(), String> {
        let path = self.speaker.include();
        let tmp = path.with_extension("fulcrum-new");
        // A small file: written in place of an await point.
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        let out = run(&self.speaker.reload_command()).await?;
        if self.speaker.reloaded(&out) {
            Ok(())
        } else {
            Err(format!("BIRD refused {}: {}", path.display(), out.trim()))
        }
    }

    pub fn status(&self) -> status::Bgp {
        status::Bgp {
            daemon: self.block.daemon.clone(),
            local_as: self.block.local_as,
            liveness_interface: self.block.liveness().to_string(),
            liveness_up: self.tap.is_some(),
            draining: self.announcer.draining(),
            drained: self.announcer.drained(&self.routes),
            sessions: self
                .block
                .neighbors
                .iter()
                .map(|n| {
                    let s = self.sessions.iter().find(|s| s.neighbor == n.addr);
                    status::BgpSession {
                        neighbor: n.addr.to_string(),
                        remote_as: n.remote_as,
                        state: s
                            .map(|s| s.info.clone())
                            .unwrap_or_else(|| "unknown".into()),
                        established: s.is_some_and(fulcrum_bgp::Session::established),
                        since: s.map(|s| s.since.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| status::BgpRoute {
                    vip: r.vip.to_string(),
                    announced: r.why.announced(),
                    prepend: r.attrs.as_ref().map_or(0, |a| a.prepend),
                    why: r.why.to_string(),
                    active: self.active.get(&r.vip).copied().unwrap_or(0),
                })
                .collect(),
            last_error: self.last_error.clone(),
        }
    }

    /// Everything withdrawn (the node stops): BIRD sends the withdrawals at once.
    pub async fn withdraw_all(&mut self) {
        let inputs = Inputs {
            dataplane_up: false,
            stopping: true,
            vips: self
                .routes
                .iter()
                .map(|r| VipInput {
                    vip: r.vip,
                    without_quorum: Vec::new(),
                    services: 0,
                    active: 0,
                    packets: 0,
                })
                .collect(),
        };
        let drain = self.announcer.draining();
        self.step(Instant::now(), &inputs, drain).await;
        if self.routes.iter().all(|r| r.why == Why::Stopping) && self.last_error.is_none() {
            info!("BGP: every VIP withdrawn");
        }
    }
}

async fn run(argv: &[String]) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`{}` did not answer in 5 s", argv.join(" ")))?
    .map_err(|e| format!("cannot run `{}`: {e}", argv.join(" ")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("`{}` failed: {}", argv.join(" "), text.trim()));
    }
    Ok(text)
}
