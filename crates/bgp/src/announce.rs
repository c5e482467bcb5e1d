//! What a director announces: a VIP while every virtual service at that address has
//! quorum, the node's data plane runs and the node is neither stopping nor drained.
//!
//! Draining (`ctl drain-director`) first makes the routes less preferred (AS-path
//! prepend, and a higher MED when one is set), so the router moves the flows to the
//! other directors; a VIP is withdrawn once no packet for it has arrived for
//! [`Policy::drain_quiet`], its active connections are gone, or [`Policy::drain_timeout`]
//! has passed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How routes are announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The MED sent with every route, if any.
    pub med: Option<u32>,
    /// Standard communities (RFC 1997) sent with every route.
    pub communities: Vec<(u16, u16)>,
    /// Times the local AS is prepended while draining.
    pub drain_prepend: u8,
    /// The longest a drain waits before it withdraws.
    pub drain_timeout: Duration,
    /// A drained VIP is withdrawn once no packet for it came for this long.
    pub drain_quiet: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            med: None,
            communities: Vec::new(),
            drain_prepend: 3,
            drain_timeout: Duration::from_secs(60),
            drain_quiet: Duration::from_secs(2),
        }
    }
}

/// One VIP as the node sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipInput {
    pub vip: IpAddr,
    /// The virtual services at this address that have no quorum now, by name; empty
    /// when all have it.
    pub without_quorum: Vec<String>,
    /// How many virtual services the data plane has at this address.
    pub services: usize,
    /// Active (ESTABLISHED) connections to it.
    pub active: u64,
    /// Packets that reached it so far (a counter: only its changes matter).
    pub packets: u64,
}

/// Everything the decision takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The layer-4 data plane forwards.
    pub dataplane_up: bool,
    /// The node is stopping: withdraw everything before forwarding stops.
    pub stopping: bool,
    pub vips: Vec<VipInput>,
}

/// Attributes an announced route carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    /// Extra copies of the local AS in the path.
    pub prepend: u8,
    pub med: Option<u32>,
    pub communities: Vec<(u16, u16)>,
}

/// Why a VIP is announced, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Announced: every service at the VIP has quorum.
    Serving,
    /// Announced less preferred, until it is quiet (or the drain times out).
    Draining,
    /// Withdrawn: drained.
    Drained,
    /// Withdrawn: these services at the VIP have no quorum.
    NoQuorum(Vec<String>),
    /// Withdrawn: no virtual service at this address.
    NoService,
    /// Withdrawn: the data plane is not forwarding.
    DataPlaneDown,
    /// Withdrawn: the node is stopping.
    Stopping,
}

impl Why {
    pub fn announced(&self) -> bool {
        matches!(self, Why::Serving | Why::Draining)
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Serving => write!(f, "every virtual service has quorum"),
            Why::Draining => write!(f, "draining: announced with a longer path"),
            Why::Drained => write!(f, "drained"),
            Why::NoQuorum(s) => write!(f, "no quorum: {}", s.join(", ")),
            Why::NoService => write!(f, "no virtual service at this address"),
            Why::DataPlaneDown => write!(f, "the data plane is not forwarding"),
            Why::Stopping => write!(f, "stopping"),
        }
    }
}

/// One VIP's route: announced with `attrs`, or withdrawn (`attrs` None), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub vip: IpAddr,
    pub attrs: Option<Attrs>,
    pub why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quiet {
    packets: u64,
    since: Instant,
}

/// The decision, with the drain's progress.
#[derive(Debug, Clone)]
pub struct Announcer {
    policy: Policy,
    /// When the drain began; None while not draining.
    drain: Option<Instant>,
    /// Per VIP while draining: the packet count last seen and since when it stands.
    quiet: BTreeMap<IpAddr, Quiet>,
    /// VIPs the drain has withdrawn.
    drained: BTreeSet<IpAddr>,
}

impl Announcer {
    pub fn new(policy: Policy) -> Announcer {
        Announcer {
            policy,
            drain: None,
            quiet: BTreeMap::new(),
            drained: BTreeSet::new(),
        }
    }

    /// A new policy (a reload); the drain goes on.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Starts (`on`) or ends a drain of this director.
    pub fn drain(&mut self, now: Instant, on: bool) {
        match (on, self.drain) {
            (true, None) => {
                self.drain = Some(now);
                self.quiet.clear();
                self.drained.clear();
            }
            (false, _) => {
                self.drain = None;
                self.quiet.clear();
                self.drained.clear();
            }
            (true, Some(_)) => {}
        }
    }

    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Whether the drain has withdrawn every VIP it had.
    pub fn drained(&self, routes: &[Route]) -> bool {
        self.drain.is_some() && routes.iter().all(|r| !r.why.announced())
    }

    fn attrs(&self, prepend: u8) -> Attrs {
        Attrs {
            prepend,
            med: self.policy.med,
            communities: self.policy.communities.clone(),
        }
    }

    /// The routes as they should be now, one per VIP in `inputs`, in its order.
    pub fn plan(&mut self, now: Instant, inputs: &Inputs) -> Vec<Route> {
        inputs
            .vips
            .iter()
            .map(|v| {
                let why = self.why(now, inputs, v);
                let attrs = match why {
                    Why::Serving => Some(self.attrs(0)),
                    Why::Draining => Some(self.attrs(self.policy.drain_prepend)),
                    _ => None,
                };
                Route {
                    vip: v.vip,
                    attrs,
                    why,
                }
            })
            .collect()
    }

    fn why(&mut self, now: Instant, inputs: &Inputs, v: &VipInput) -> Why {
        if inputs.stopping {
            return Why::Stopping;
        }
        if !inputs.dataplane_up {
            return Why::DataPlaneDown;
        }
        if v.services == 0 {
            return Why::NoService;
        }
        if !v.without_quorum.is_empty() {
            return Why::NoQuorum(v.without_quorum.clone());
        }
        let Some(began) = self.drain else {
            return Why::Serving;
        };
        if self.drained.contains(&v.vip) {
            return Why::Drained;
        }
        let q = self.quiet.entry(v.vip).or_insert(Quiet {
            packets: v.packets,
            since: now,
        });
        if q.packets != v.packets {
            *q = Quiet {
                packets: v.packets,
                since: now,
            };
        }
        let quiet = now.saturating_duration_since(q.since) >= self.policy.drain_quiet;
        let timed_out = now.saturating_duration_since(began) >= self.policy.drain_timeout;
        if quiet || v.active == 0 || timed_out {
            self.drained.insert(v.vip);
            return Why::Drained;
        }
        Why::Draining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(last: u8, active: u64, packets: u64) -> VipInput {
        VipInput {
            vip: IpAddr::from([10, 1, 10, last]),
            without_quorum: Vec::new(),
            services: 1,
            active,
            packets,
        }
    }

    fn inputs(vips: Vec<VipInput>) -> Inputs {
        Inputs {
            dataplane_up: true,
            stopping: false,
            vips,
        }
    }

    #[test]
    fn a_vip_is_announced_while_every_service_at_it_has_quorum() {
        let mut a = Announcer::new(Policy {
            med: Some(10),
            communities: vec![(65001, 100)],
            ..Policy::default()
        });
        let t = Instant::now();
        let mut lost = vip(66, 0, 0);
        lost.without_quorum = vec!["10.1.10.66:443 TCP".into()];
        let mut none = vip(67, 0, 0);
        none.services = 0;
        let r = a.plan(t, &inputs(vec![vip(65, 5, 100), lost, none]));
        assert_eq!(
            r[0].attrs,
            Some(Attrs {
                prepend: 0,
                med: Some(10),
                communities: vec![(65001, 100)]
            })
        );
        assert_eq!(r[0].why, Why::Serving);
        assert_eq!(r[1].attrs, None);
        assert_eq!(r[1].why, Why::NoQuorum(vec!["10.1.10.66:443 TCP".into()]));
        assert_eq!(r[2].why, Why::NoService);
    }

    #[test]
    fn the_data_plane_down_or_a_stop_withdraws_everything() {
        let mut a = Announcer::new(Policy::default());
        let t = Instant::now();
        let mut i = inputs(vec![vip(65, 5, 100)]);
        i.dataplane_up = false;
        assert_eq!(a.plan(t, &i)[0].why, Why::DataPlaneDown);
        i.dataplane_up = true;
        i.stopping = true;
        let r = a.plan(t, &i);
        assert_eq!(
            (r[0].attrs.clone(), r[0].why.clone()),
            (None, Why::Stopping)
        );
    }

    #[test]
    fn a_drain_prepends_then_withdraws_once_the_vip_is_quiet() {
        let mut a = Announcer::new(Policy::default());
        let t = Instant::now();
        a.drain(t, true);
        let r = a.plan(t, &inputs(vec![vip(65, 5, 100)]));
        assert_eq!(r[0].why, Why::Draining);
        assert_eq!(r[0].attrs.as_ref().unwrap().prepend, 3);
        // Packets still come: it stays.
        let s = t + Duration::from_secs(1);
        assert_eq!(
            a.plan(s, &inputs(vec![vip(65, 5, 200)]))[0].why,
            Why::Draining
        );
        // The router has moved the flows away: nothing for 2 s.
        let s = t + Duration::from_millis(2500);
        assert_eq!(
            a.plan(s, &inputs(vec![vip(65, 5, 200)]))[0].why,
            Why::Draining
        );
        let s = t + Duration::from_millis(3100);
        let r = a.plan(s, &inputs(vec![vip(65, 5, 200)]));
        assert_eq!((r[0].attrs.clone(), r[0].why.clone()), (None, Why::Drained));
        assert!(a.drained(&r));
        // It stays withdrawn whatever comes, until undrained.
        assert_eq!(
            a.plan(s, &inputs(vec![vip(65, 5, 300)]))[0].why,
            Why::Drained
        );
        a.drain(s, false);
        assert_eq!(
            a.plan(s, &inputs(vec![vip(65, 5, 300)]))[0].why,
            Why::Serving
        );
    }

    #[test]
    fn a_drain_ends_at_no_active_connection_or_at_its_timeout() {
        let mut a = Announcer::new(Policy::default());
        let t = Instant::now();
        a.drain(t, true);
        let r = a.plan(t, &inputs(vec![vip(65, 0, 100), vip(66, 3, 100)]));
        assert_eq!(r[0].why, Why::Drained, "no active connection");
        assert_eq!(r[1].why, Why::Draining);
        for s in 1..60u64 {
            let now = t + Duration::from_secs(s);
            let r = a.plan(now, &inputs(vec![vip(65, 0, 100), vip(66, 3, 100 + s)]));
            assert_eq!(r[1].why, Why::Draining, "at {s} s");
        }
        let r = a.plan(
            t + Duration::from_secs(60),
            &inputs(vec![vip(65, 0, 100), vip(66, 3, 1000)]),
        );
        assert_eq!(r[1].why, Why::Drained, "timed out");
    }
}
