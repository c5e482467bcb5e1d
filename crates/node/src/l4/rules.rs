//! keepalived.conf's virtual_server blocks as the rules IPVS would be given: pure, and
//! what `ipvsadm` edits (the `edit` module).

use fulcrum_dataplane::{Method, TunCsum, TunKind, Tunnel};
use fulcrum_keepalived_conf::model::{
    GroupMember, KeepalivedConfig, ServiceKey as ConfKey, TunnelCsum, TunnelKind, TunnelOptions,
    VirtualServer,
};
use fulcrum_types::{ForwardMethod, Granularity, Protocol, Scheduler};
use std::net::{IpAddr, Ipv4Addr};

use crate::health::ServerKey;

/// A virtual service as ipvsadm knows it: (protocol, VIP, port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    pub proto: u8,
    pub vip: IpAddr,
    pub port: u16,
}

impl RuleKey {
    pub fn proto_name(self) -> &'static str {
        if self.proto == 17 {
            "UDP"
        } else {
            "TCP"
        }
    }
}

/// Where a real server's weight comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictOf {
    /// Its configured weight, whatever the health checks say (ipvsadm's servers).
    Fixed,
    /// A real server the health checks may know.
    Server(ServerKey),
    /// The sorry server of this virtual server.
    Sorry(String),
}

/// A real server of a rule, with where its weight comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDest {
    pub addr: IpAddr,
    pub port: u16,
    pub method: Method,
    pub weight: u32,
    /// Where the health checks' verdict on it comes from: a real server's key, or the
    /// name of the virtual server whose sorry server it is. `Fixed` for ipvsadm's.
    pub verdict: VerdictOf,
    /// Connection thresholds (uthreshold, lthreshold; ipvsadm -x, -y): 0 none.
    pub u_threshold: u32,
    pub l_threshold: u32,
}

/// One virtual service with its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub key: RuleKey,
    pub scheduler: Scheduler,
    /// Timeout (s) and how clients are grouped.
    pub persistence: Option<(u32, Granularity)>,
    pub ops: bool,
    pub sh_port: bool,
    pub sh_fallback: bool,
    pub mh_port: bool,
    pub mh_fallback: bool,
    /// IPVS's sloppy_tcp, for this service: any TCP segment but a RST may start a
    /// connection (on by default with mh, for directors behind ECMP).
    pub sloppy_tcp: bool,
    pub dests: Vec<RuleDest>,
}

/// The data plane's method for keepalived's: TUN with its tunnel (ipip when none is
/// given) and its outer checksum.
fn method(m: Option<ForwardMethod>, tunnel: Option<TunnelOptions>) -> Method {
    match m.unwrap_or(ForwardMethod::Nat) {
        ForwardMethod::Nat => Method::Nat,
        ForwardMethod::Dr => Method::Dr,
        ForwardMethod::Tun => {
            let t = tunnel.unwrap_or_default();
            Method::Tun(Tunnel {
                kind: match t.kind {
                    TunnelKind::Ipip => TunKind::Ipip,
                    TunnelKind::Gue => TunKind::Gue,
                    TunnelKind::Gre => TunKind::Gre,
                },
                port: t.port.unwrap_or(0),
                csum: match t.csum {
                    TunnelCsum::NoCsum => TunCsum::NoCsum,
                    TunnelCsum::Csum => TunCsum::Csum,
                    TunnelCsum::RemCsum => TunCsum::RemCsum,
                },
            })
        }
    }
}

/// The rules keepalived would give IPVS for these virtual servers. Services that cannot
/// be forwarded here (fwmark, IPv6, SCTP) are left out with a warning naming them.
pub fn rules(k: &KeepalivedConfig) -> (Vec<Rule>, Vec<String>) {
    let mut out: Vec<Rule> = Vec::new();
    let mut warnings = Vec::new();
    for vs in &k.virtual_servers {
        let name = crate::health::service_name(vs);
        let mut keys = Vec::new();
        match &vs.key {
            ConfKey::Address { addr, port } => keys.push((*addr, *port)),
            ConfKey::Fwmark(m) => {
                warnings.push(format!(
                    "virtual_server fwmark {m}: fwmark services cannot be forwarded (there is no netfilter mark before XDP); skipped"
                ));
                continue;
            }
            ConfKey::Group(g) => {
                let Some(group) = k.virtual_server_groups.iter().find(|x| &x.name == g) else {
                    warnings.push(format!("{name}: no virtual_server_group {g}; skipped"));
                    continue;
                };
                for m in &group.members {
                    match m {
                        GroupMember::Address { addr, port } => keys.push((*addr, *port)),
                        GroupMember::Range { first, last, port } => {
                            if let IpAddr::V4(a) = first {
                                let o = a.octets();
                                for d in o[3]..=(*last).min(255) as u8 {
                                    keys.push((
                                        IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], d)),
                                        *port,
                                    ));
                                }
                            } else {
                                keys.push((*first, *port));
                            }
                        }
                        _ => warnings.push(format!(
                            "{name}: fwmark members of group {g} cannot be forwarded; skipped"
                        )),
                    }
                }
            }
        }
        let proto = match vs.protocol() {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => {
                warnings.push(format!(
                    "{name}: SCTP is not forwarded by the data plane; skipped"
                ));
                continue;
            }
        };
        let mut dests = Vec::new();
        for rs in &vs.real_servers {
            let addr = rs.addr;
            let (m, t) = match rs.lvs_method {
                Some(m) => (Some(m), rs.tunnel),
                None => (vs.lb_kind, vs.tunnel),
            };
            dests.push(RuleDest {
                addr,
                port: rs.port.unwrap_or(0),
                method: method(m, t),
                weight: rs.weight.get(),
                verdict: VerdictOf::Server(ServerKey::of(vs, rs)),
                u_threshold: rs.uthreshold.unwrap_or(0),
                l_threshold: rs.lthreshold.unwrap_or(0),
            });
        }
        if let Some((addr, port)) = vs.sorry_server {
            let (m, t) = match vs.sorry_server_lvs_method {
                Some(m) => (Some(m), vs.sorry_server_tunnel),
                None => (vs.lb_kind, vs.tunnel),
            };
            dests.push(RuleDest {
                addr,
                port: port.unwrap_or(0),
                method: method(m, t),
                weight: 1,
                verdict: VerdictOf::Sorry(name.clone()),
                u_threshold: 0,
                l_threshold: 0,
            });
        }
        for (vip, port) in keys {
            // IPVS mixes the families only for TUN (keepalived.conf's check refuses the
            // rest; this keeps ipvsadm-like rules honest too).
            let other = |d: &&RuleDest| {
                d.addr.is_ipv6() != vip.is_ipv6() && !matches!(d.method, Method::Tun(_))
            };
            if let Some(d) = dests.iter().find(other) {
                warnings.push(format!(
                    "{name}: real server {} is not of the family of {vip} (only TUN crosses the families); service skipped",
                    d.addr
                ));
                continue;
            }
            let mut dests = dests.clone();
            for d in &mut dests {
                if d.port == 0 {
                    d.port = port;
                }
            }
            out.push(rule_for(vs, RuleKey { proto, vip, port }, dests));
        }
    }
    (out, warnings)
}

fn rule_for(vs: &VirtualServer, key: RuleKey, dests: Vec<RuleDest>) -> Rule {
    let mask = vs
        .persistence_granularity
        .filter(|g| matches!(g, Granularity::Prefix(_)) == key.vip.is_ipv6())
        .unwrap_or_else(|| Granularity::whole(key.vip.is_ipv6()));
    Rule {
        key,
        scheduler: vs.lb_algo,
        persistence: vs.persistence_timeout.map(|t| (t, mask)),
        ops: vs.ops,
        sh_port: vs.sh_port,
        sh_fallback: vs.sh_fallback,
        mh_port: vs.mh_port,
        mh_fallback: vs.mh_fallback,
        sloppy_tcp: vs.sloppy_tcp(),
        dests,
    }
}
