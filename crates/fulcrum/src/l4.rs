//! The layer-4 half of the daemon: keepalived.conf's virtual_server blocks become IPVS-style
//! rules ([`rules`], pure), installed in the XDP data plane as a diff ([`Table`]) with the
//! weights the health checks decide, and kept up: connections swept, DR neighbours kept
//! resolved. The control socket reads it for `fulcrum ipvsadm`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum_dataplane::{AttachMode, DataPlane, DestSpec, Link, Method, ServiceKey, ServiceSpec};
use fulcrum_health::Membership;
use fulcrum_keepalived_conf::model::{
    GroupMember, KeepalivedConfig, ServiceKey as ConfKey, VirtualServer,
};
use fulcrum_types::{ForwardMethod, Protocol, Scheduler};
use serde_json::{json, Value};
use tracing::{info, warn};

/// A virtual service as ipvsadm knows it: (protocol, VIP, port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    pub proto: u8,
    pub vip: Ipv4Addr,
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

/// A real server of a rule, with where its weight comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDest {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub method: Method,
    pub weight: u32,
    /// (virtual_server index, real_server index) in the configuration, for the health
    /// checks' verdict; None for a sorry server.
    pub origin: Option<(usize, usize)>,
    pub sorry_of: Option<usize>,
    /// Connection thresholds (uthreshold, lthreshold; ipvsadm -x, -y): 0 none.
    pub u_threshold: u32,
    pub l_threshold: u32,
}

/// One virtual service with its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub key: RuleKey,
    pub scheduler: Scheduler,
    pub persistence: Option<(u32, Ipv4Addr)>,
    pub ops: bool,
    pub sh_port: bool,
    pub sh_fallback: bool,
    pub mh_port: bool,
    pub mh_fallback: bool,
    pub dests: Vec<RuleDest>,
}

fn method(m: Option<ForwardMethod>) -> Result<Method, String> {
    match m.unwrap_or(ForwardMethod::Nat) {
        ForwardMethod::Nat => Ok(Method::Nat),
        ForwardMethod::Dr => Ok(Method::Dr),
        ForwardMethod::Tun => Err("lb_kind TUN is not supported by the XDP data plane".into()),
    }
}

/// The rules keepalived would give IPVS for these virtual servers. Services that cannot
/// be forwarded here (fwmark, IPv6, TUN, SCTP) are left out with a warning naming them.
pub fn rules(k: &KeepalivedConfig) -> (Vec<Rule>, Vec<String>) {
    let mut out: Vec<Rule> = Vec::new();
    let mut warnings = Vec::new();
    for (v, vs) in k.virtual_servers.iter().enumerate() {
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
        let mut bad = None;
        for (r, rs) in vs.real_servers.iter().enumerate() {
            let IpAddr::V4(addr) = rs.addr else {
                bad = Some(format!(
                    "{name}: IPv6 real server {} is not forwarded yet",
                    rs.addr
                ));
                break;
            };
            match method(rs.lvs_method.or(vs.lb_kind)) {
                Ok(m) => dests.push(RuleDest {
                    addr,
                    port: rs.port.unwrap_or(0),
                    method: m,
                    weight: rs.weight.get(),
                    origin: Some((v, r)),
                    sorry_of: None,
                    u_threshold: rs.uthreshold.unwrap_or(0),
                    l_threshold: rs.lthreshold.unwrap_or(0),
                }),
                Err(e) => {
                    bad = Some(format!("{name}: {e}"));
                    break;
                }
            }
        }
        if let Some((IpAddr::V4(addr), port)) = vs.sorry_server {
            if let Ok(m) = method(vs.sorry_server_lvs_method.or(vs.lb_kind)) {
                dests.push(RuleDest {
                    addr,
                    port: port.unwrap_or(0),
                    method: m,
                    weight: 1,
                    origin: None,
                    sorry_of: Some(v),
                    u_threshold: 0,
                    l_threshold: 0,
                });
            }
        }
        if let Some(b) = bad {
            warnings.push(format!("{b}; service skipped"));
            continue;
        }
        for (addr, port) in keys {
            let IpAddr::V4(vip) = addr else {
                warnings.push(format!(
                    "{name}: IPv6 services are not forwarded yet; skipped"
                ));
                continue;
            };
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
    let mask = match vs.persistence_granularity {
        Some(IpAddr::V4(m)) => m,
        _ => Ipv4Addr::BROADCAST,
    };
    Rule {
        key,
        scheduler: vs.lb_algo,
        persistence: vs.persistence_timeout.map(|t| (t, mask)),
        ops: vs.ops,
        sh_port: vs.sh_port,
        sh_fallback: vs.sh_fallback,
        mh_port: vs.mh_port,
        mh_fallback: vs.mh_fallback,
        dests,
    }
}

/// IPVS's rate estimator: every 2 s, the rates over the last 2 s are folded into a moving
/// average with weight 1/4 (ip_vs_est.c), per service and per real server.
#[derive(Debug, Default, Clone)]
pub struct Estimator {
    last: Option<fulcrum_dataplane::Traffic>,
    /// cps, inpps, outpps, inbps, outbps
    avg: [f64; 5],
}

impl Estimator {
    pub const TICK: Duration = Duration::from_secs(2);

    fn tick(&mut self, now: fulcrum_dataplane::Traffic) {
        if let Some(last) = self.last {
            let secs = Self::TICK.as_secs_f64();
            let d = [
                now.conns.saturating_sub(last.conns),
                now.inpkts.saturating_sub(last.inpkts),
                now.outpkts.saturating_sub(last.outpkts),
                now.inbytes.saturating_sub(last.inbytes),
                now.outbytes.saturating_sub(last.outbytes),
            ];
            for (a, d) in self.avg.iter_mut().zip(d) {
                *a += (d as f64 / secs - *a) / 4.0;
            }
        }
        self.last = Some(now);
    }

    fn json(&self) -> Value {
        let r = |i: usize| self.avg[i].round() as u64;
        json!({"cps": r(0), "inpps": r(1), "outpps": r(2), "inbps": r(3), "outbps": r(4)})
    }
}

/// The health checks' verdicts: per virtual_server, each real server's membership and
/// the sorry server's.
pub type Verdicts = Vec<(Vec<Membership>, Option<Membership>)>;

/// A rule as installed: its id and the slot of each real server.
#[derive(Debug, Clone)]
struct Installed {
    id: u32,
    rule: Rule,
    spec: ServiceSpec,
}

/// The installed services, applied to the data plane as a diff.
#[derive(Debug, Default)]
pub struct Table {
    installed: HashMap<RuleKey, Installed>,
    /// Rate estimators by (service id, real-server slot; None for the service).
    rates: HashMap<(u32, Option<usize>), Estimator>,
    /// Where DR real servers are on the link, from the neighbour table.
    links: HashMap<Ipv4Addr, Link>,
    /// Real servers the operator drained (`fulcrum ctl drain`): weight 0.
    drained: Vec<(Ipv4Addr, Option<u16>)>,
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

/// The resolved IPv4 neighbours of this network namespace (/proc/net/arp), with the
/// index and MAC of the interface each is on: what DR rewrites frames with.
pub fn read_links() -> HashMap<Ipv4Addr, Link> {
    let mut links = HashMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return links;
    };
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ip, _, flags, mac, _, dev] = f[..] else {
            continue;
        };
        let complete =
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 0x2 != 0);
        let (Ok(ip), Some(mac), true) = (ip.parse::<Ipv4Addr>(), parse_mac(mac), complete) else {
            continue;
        };
        let Ok(ifindex) = fulcrum_sys::if_index(dev) else {
            continue;
        };
        let Some(smac) = std::fs::read_to_string(format!("/sys/class/net/{dev}/address"))
            .ok()
            .and_then(|m| parse_mac(&m))
        else {
            continue;
        };
        links.insert(ip, Link { mac, ifindex, smac });
    }
    links
}

impl Table {
    /// The spec for a rule, keeping the slots of real servers that stay, with the weight
    /// the health checks give each (out of the pool: no slot).
    fn spec(&self, rule: &Rule, id: u32, verdicts: &Verdicts) -> ServiceSpec {
        let old = self.installed.get(&rule.key);
        let mut slots: Vec<Option<DestSpec>> = Vec::new();
        let mut wanted: Vec<DestSpec> = Vec::new();
        for d in &rule.dests {
            let membership = match (d.origin, d.sorry_of) {
                (Some((v, r)), _) => verdicts.get(v).and_then(|(m, _)| m.get(r).copied()),
                (None, Some(v)) => match verdicts.get(v) {
                    Some((_, m)) => *m,
                    // Without health checks, the sorry server stays out.
                    None => Some(Membership::Out),
                },
                _ => None,
            };
            let weight = match membership {
                None => d.weight,
                Some(Membership::In(w)) => w.get(),
                Some(Membership::Out) => continue,
            };
            let drained = self
                .drained
                .iter()
                .any(|(a, p)| *a == d.addr && p.is_none_or(|p| p == d.port));
            let weight = if drained { 0 } else { weight };
            wanted.push(DestSpec {
                addr: d.addr,
                port: d.port,
                method: d.method,
                weight,
                overloaded: false,
                u_threshold: d.u_threshold,
                l_threshold: d.l_threshold,
                link: match d.method {
                    Method::Dr => self.links.get(&d.addr).copied(),
                    Method::Nat => None,
                },
            });
        }
        // Slots of the servers already in, then free slots for the new ones.
        if let Some(old) = old {
            slots = old
                .spec
                .dests
                .iter()
                .map(|s| {
                    s.and_then(|s| {
                        wanted
                            .iter()
                            .find(|w| (w.addr, w.port) == (s.addr, s.port))
                            .copied()
                    })
                })
                .collect();
        }
        for w in wanted {
            if slots
                .iter()
                .flatten()
                .any(|s| (s.addr, s.port) == (w.addr, w.port))
            {
                continue;
            }
            match slots.iter().position(Option::is_none) {
                Some(i) => slots[i] = Some(w),
                None => slots.push(w.into()),
            }
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        ServiceSpec {
            key: ServiceKey::v4(rule.key.vip, rule.key.port, rule.key.proto),
            id,
            scheduler: rule.scheduler,
            sh_port: rule.sh_port,
            sh_fallback: rule.sh_fallback,
            mh_port: rule.mh_port,
            mh_fallback: rule.mh_fallback,
            ops: rule.ops,
            persistence: rule.persistence,
            dests: slots,
        }
    }

    /// Brings the data plane to `rules` with `verdicts`: new services added, changed ones
    /// rewritten in place (connections kept), removed ones removed. Unchanged services are
    /// not touched.
    pub fn apply(
        &mut self,
        dp: &mut DataPlane,
        rules: &[Rule],
        verdicts: &Verdicts,
    ) -> Result<(), fulcrum_dataplane::Error> {
        let wanted: HashMap<RuleKey, &Rule> = rules.iter().map(|r| (r.key, r)).collect();
        let gone: Vec<RuleKey> = self
            .installed
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(old) = self.installed.remove(&key) {
                dp.remove_service(&old.spec.key, old.id)?;
                info!(service = %format!("{}:{} {}", key.vip, key.port, key.proto_name()), "virtual service removed");
            }
        }
        for rule in rules {
            let id = match self.installed.get(&rule.key) {
                Some(i) => i.id,
                None => (0..fulcrum_dataplane::abi::MAX_SERVICES)
                    .find(|id| self.installed.values().all(|i| i.id != *id))
                    .ok_or_else(|| {
                        fulcrum_dataplane::Error::Limit(format!(
                            "at most {} virtual services",
                            fulcrum_dataplane::abi::MAX_SERVICES
                        ))
                    })?,
            };
            let spec = self.spec(rule, id, verdicts);
            if self
                .installed
                .get(&rule.key)
                .is_some_and(|i| i.spec == spec && i.rule == *rule)
            {
                continue;
            }
            dp.put_service(&spec)?;
            // Estimators start from the counters as they are now, so traffic before the
            // first tick counts.
            for (slot, d) in spec.dests.iter().enumerate() {
                if d.is_some() {
                    let t = dp.dest_traffic(id, slot).unwrap_or_default();
                    self.rates.entry((id, Some(slot))).or_insert(Estimator {
                        last: Some(t),
                        avg: [0.0; 5],
                    });
                }
            }
            let t = dp.service_traffic(id).unwrap_or_default();
            self.rates.entry((id, None)).or_insert(Estimator {
                last: Some(t),
                avg: [0.0; 5],
            });
            self.installed.insert(
                rule.key,
                Installed {
                    id,
                    rule: rule.clone(),
                    spec,
                },
            );
        }
        Ok(())
    }

    /// Folds the traffic of the last tick into every estimator (every 2 s).
    pub fn estimate(&mut self, dp: &DataPlane) {
        let mut live = std::collections::HashSet::new();
        for i in self.installed.values() {
            let t = dp.service_traffic(i.id).unwrap_or_default();
            self.rates.entry((i.id, None)).or_default().tick(t);
            live.insert((i.id, None));
            for (slot, d) in i.spec.dests.iter().enumerate() {
                if d.is_some() {
                    let t = dp.dest_traffic(i.id, slot).unwrap_or_default();
                    self.rates.entry((i.id, Some(slot))).or_default().tick(t);
                    live.insert((i.id, Some(slot)));
                }
            }
        }
        self.rates.retain(|k, _| live.contains(k));
    }

    fn rate(&self, id: u32, slot: Option<usize>) -> Value {
        self.rates
            .get(&(id, slot))
            .map_or_else(|| Estimator::default().json(), Estimator::json)
    }

    /// The services as `fulcrum ipvsadm` lists them, with counters.
    ///
    /// The connection table (up to a million entries) is read only when `connections` asks
    /// for it (`ipvsadm -Lnc`), not for every listing.
    pub fn listing(&self, dp: &DataPlane, connections: bool) -> Value {
        let mut keys: Vec<&RuleKey> = self.installed.keys().collect();
        keys.sort();
        let traffic = |t: fulcrum_dataplane::Traffic| {
            json!({"conns": t.conns, "inpkts": t.inpkts, "outpkts": t.outpkts,
                   "inbytes": t.inbytes, "outbytes": t.outbytes})
        };
        let services: Vec<Value> = keys
            .into_iter()
            .map(|k| {
                let i = &self.installed[k];
                let dests: Vec<Value> = i
                    .spec
                    .dests
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, d)| {
                        let d = (*d)?;
                        let (active, inactive) = dp.dest_conns(i.id, slot).unwrap_or((0, 0));
                        Some(json!({
                            "address": d.addr.to_string(),
                            "port": d.port,
                            "forward": match d.method { Method::Nat => "Masq", Method::Dr => "Route" },
                            "weight": d.weight,
                            "u_threshold": d.u_threshold,
                            "l_threshold": d.l_threshold,
                            "active": active,
                            "inactive": inactive,
                            "stats": traffic(dp.dest_traffic(i.id, slot).unwrap_or_default()),
                            "rate": self.rate(i.id, Some(slot)),
                        }))
                    })
                    .collect();
                json!({
                    "protocol": k.proto_name(),
                    "address": k.vip.to_string(),
                    "port": k.port,
                    "scheduler": i.rule.scheduler.name(),
                    "persistent": i.rule.persistence.map(|(t, _)| t),
                    "netmask": i.rule.persistence.map(|(_, m)| m.to_string()),
                    "ops": i.rule.ops,
                    "stats": traffic(dp.service_traffic(i.id).unwrap_or_default()),
                    "rate": self.rate(i.id, None),
                    "dests": dests,
                })
            })
            .collect();
        let all = if connections {
            dp.connections().unwrap_or_default()
        } else {
            Vec::new()
        };
        let conns: Vec<Value> = all
            .into_iter()
            .map(|c| {
                json!({
                    "protocol": if c.proto == 17 { "UDP" } else { "TCP" },
                    "expires_ms": c.expires_in.as_millis() as u64,
                    "state": c.state,
                    "source": SocketAddr::from(c.client).to_string(),
                    "virtual": SocketAddr::from(c.vip).to_string(),
                    "destination": SocketAddr::from(c.rip).to_string(),
                })
            })
            .collect();
        let by_id: HashMap<u32, &Installed> = self.installed.values().map(|i| (i.id, i)).collect();
        let templates = if connections {
            dp.templates().unwrap_or_default()
        } else {
            Vec::new()
        };
        let templates: Vec<Value> = templates
            .into_iter()
            .filter_map(|(svc, client, slot, left)| {
                let i = by_id.get(&svc)?;
                let d = i.spec.dests.get(slot as usize).copied().flatten()?;
                Some(json!({
                    "protocol": i.rule.key.proto_name(),
                    "expires_ms": left.as_millis() as u64,
                    "state": "NONE",
                    "source": format!("{client}:0"),
                    "virtual": format!("{}:{}", i.rule.key.vip, i.rule.key.port),
                    "destination": format!("{}:{}", d.addr, d.port),
                }))
            })
            .collect();
        let t = dp
            .timeouts()
            .unwrap_or(fulcrum_dataplane::abi::DEFAULT_TIMEOUTS);
        let packets: serde_json::Map<String, Value> = fulcrum_dataplane::Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), json!(dp.count(*r).unwrap_or(0))))
            .collect();
        let mut neighbours: Vec<String> = self
            .links
            .iter()
            .map(|(ip, l)| {
                let m = l.mac;
                format!(
                    "{ip} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} if{}",
                    m[0], m[1], m[2], m[3], m[4], m[5], l.ifindex
                )
            })
            .collect();
        neighbours.sort();
        json!({
            "neighbours": neighbours,
            "packets": packets,
            "size": dp.max_connections(),
            "services": services,
            "connections": conns,
            "templates": templates,
            "timeout": {"tcp": t[1], "tcpfin": t[4], "udp": t[11]},
        })
    }

    /// Takes over the services a previous run left in the data plane, with their ids and
    /// slots, so the next apply keeps their connections.
    pub fn adopt(&mut self, specs: Vec<ServiceSpec>) {
        for spec in specs {
            let a = spec.key.addr;
            let key = RuleKey {
                proto: spec.key.proto,
                vip: Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                port: u16::from_be(spec.key.port),
            };
            let rule = Rule {
                key,
                scheduler: spec.scheduler,
                persistence: spec.persistence,
                ops: spec.ops,
                sh_port: spec.sh_port,
                sh_fallback: spec.sh_fallback,
                mh_port: spec.mh_port,
                mh_fallback: spec.mh_fallback,
                dests: Vec::new(),
            };
            self.installed.insert(
                key,
                Installed {
                    id: spec.id,
                    rule,
                    spec,
                },
            );
        }
    }

    /// The ids of one installed service, or of all.
    fn ids(&self, key: Option<&RuleKey>) -> Vec<u32> {
        self.installed
            .iter()
            .filter(|(k, _)| key.is_none_or(|key| key == *k))
            .map(|(_, i)| i.id)
            .collect()
    }

    /// Real servers reached by DR: their MAC must be in the neighbour table.
    fn dr_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .installed
            .values()
            .flat_map(|i| i.spec.dests.iter().flatten())
            .filter(|d| d.method == Method::Dr)
            .map(|d| d.addr)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// What `ipvs` answers when no virtual service is configured.
pub fn empty_listing() -> Value {
    let t = fulcrum_dataplane::abi::DEFAULT_TIMEOUTS;
    json!({
        "size": 1_048_576,
        "services": [],
        "connections": [],
        "templates": [],
        "timeout": {"tcp": t[1], "tcpfin": t[4], "udp": t[11]},
        "interfaces": [],
    })
}

/// /sys/fs/bpf/fulcrum/net-INODE: one directory per network namespace, so daemons in
/// different namespaces of one machine never share pins. bpffs is mounted on /sys/fs/bpf
/// when it is not there (under `ip netns exec`, /sys is private to the command, so pins
/// there end with it: pass --bpf-dir on a bpffs mounted outside to survive a restart).
fn default_bpf_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/sys/fs/bpf");
    if !fulcrum_sys::is_bpffs(root) {
        std::fs::create_dir_all(root)?;
        fulcrum_sys::mount_bpffs(root)
            .map_err(|e| anyhow::anyhow!("cannot mount bpffs on {}: {e}", root.display()))?;
        info!("mounted bpffs on /sys/fs/bpf");
    }
    Ok(root
        .join("fulcrum")
        .join(format!("net-{}", fulcrum_sys::netns_inode()?)))
}

/// The running layer-4 forwarding.
#[derive(Debug)]
pub struct Runtime {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dp: DataPlane,
    table: Table,
    /// The running rules: keepalived.conf's, with ipvsadm's edits.
    rules: Vec<Rule>,
    /// The health checks' verdicts last applied, and where they come from.
    verdicts: Verdicts,
    health: Option<crate::health::Handle>,
    interfaces: Vec<(String, AttachMode)>,
}

/// A cheap handle for the control socket.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Mutex<Shared>>,
}

impl Handle {
    pub fn listing(&self, connections: bool) -> Value {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = s.table.listing(&s.dp, connections);
        v["interfaces"] = s
            .interfaces
            .iter()
            .map(|(name, mode)| json!({"name": name, "mode": mode.name()}))
            .collect();
        v
    }

    /// Drains (weight 0: existing connections go on, no new ones) or undrains the real
    /// servers at `addr` (and `port`) in every virtual service. How many it touched.
    pub fn set_drained(
        &self,
        addr: Ipv4Addr,
        port: Option<u16>,
        on: bool,
    ) -> Result<usize, String> {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Shared {
            dp,
            table,
            rules,
            verdicts,
            ..
        } = &mut *s;
        table.drained.retain(|x| *x != (addr, port));
        if on {
            table.drained.push((addr, port));
        }
        let touched = rules
            .iter()
            .flat_map(|r| r.dests.iter())
            .filter(|d| d.addr == addr && port.is_none_or(|p| p == d.port))
            .count();
        table
            .apply(dp, rules, verdicts)
            .map_err(|e| e.to_string())?;
        Ok(touched)
    }

    /// no_accept: traffic to `addr` that no virtual service takes is dropped (`on`), or
    /// accepted again.
    pub fn set_no_accept(&self, addr: std::net::IpAddr, on: bool) -> Result<(), String> {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.dp.set_no_accept(addr, on).map_err(|e| e.to_string())
    }

    /// A reload changed the virtual servers: the rules become the configuration's (edits
    /// made with ipvsadm are replaced), applied as a diff, with the new health checks'
    /// verdicts.
    pub fn set_rules(&self, k: &KeepalivedConfig, health: Option<crate::health::Handle>) {
        let (rules, warnings) = rules(k);
        for w in &warnings {
            warn!("{w}");
        }
        let verdicts = health.as_ref().map(|h| h.verdicts()).unwrap_or_default();
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Shared { dp, table, .. } = &mut *s;
        if let Err(e) = table.apply(dp, &rules, &verdicts) {
            warn!("cannot apply the reloaded virtual servers: {e}");
            return;
        }
        info!(services = rules.len(), "layer-4 rules reloaded");
        s.rules = rules;
        s.verdicts = verdicts;
        s.health = health;
    }

    /// Applies ipvsadm command lines together: all are checked first, and an error
    /// changes nothing.
    pub fn edit(&self, lines: &[Vec<String>]) -> Result<(), String> {
        use crate::ipvsadm_edit::{apply, parse, Edit};
        let edits = lines
            .iter()
            .map(|l| parse(l))
            .collect::<Result<Vec<Edit>, String>>()?;
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut rules = s.rules.clone();
        for e in &edits {
            rules = apply(&rules, e)?;
            if let Edit::Zero(Some(key)) = e {
                if !rules.iter().any(|r| r.key == *key) {
                    return Err("No such service".into());
                }
            }
        }
        let Shared {
            dp,
            table,
            verdicts,
            ..
        } = &mut *s;
        table
            .apply(dp, &rules, verdicts)
            .map_err(|e| e.to_string())?;
        for e in &edits {
            match e {
                Edit::SetTimeouts(tcp, fin, udp) => {
                    let mut t = dp.timeouts().map_err(|e| e.to_string())?;
                    for (i, v) in [
                        (fulcrum_dataplane::abi::STATE_ESTABLISHED, tcp),
                        (fulcrum_dataplane::abi::STATE_FIN_WAIT, fin),
                        (fulcrum_dataplane::abi::STATE_UDP, udp),
                    ] {
                        if *v > 0 {
                            t[i] = *v;
                        }
                    }
                    dp.set_timeouts(&t).map_err(|e| e.to_string())?;
                }
                Edit::Zero(key) => {
                    for id in table.ids(key.as_ref()) {
                        dp.zero_traffic(id).map_err(|e| e.to_string())?;
                    }
                }
                _ => {}
            }
        }
        info!(commands = lines.len(), "ipvsadm rules applied");
        s.rules = rules;
        Ok(())
    }
}

/// Sends one empty datagram to the discard port of each address, so the kernel resolves
/// (or refreshes) its neighbour entry, which the data plane's FIB lookup reads for DR.
fn prod_neighbours(addrs: &[Ipv4Addr]) {
    let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
        return;
    };
    for a in addrs {
        let _ = sock.send_to(&[], SocketAddr::new(IpAddr::V4(*a), 9));
    }
}

/// Loads the data plane, attaches it to every interface of this network namespace but
/// loopback, installs the rules and keeps them up with the health checks' verdicts.
pub fn start(
    k: &KeepalivedConfig,
    health: Option<crate::health::Handle>,
    bpf_dir: Option<PathBuf>,
    max_connections: u32,
) -> anyhow::Result<Option<Runtime>> {
    let (rules, warnings) = rules(k);
    for w in &warnings {
        warn!("{w}");
    }
    // The data plane also serves VRRP's no_accept masters.
    let no_accept = k
        .vrrp_instances
        .iter()
        .any(|i| crate::vrrp::no_accept(k, i));
    if rules.is_empty() && !no_accept {
        return Ok(None);
    }
    let dir = match bpf_dir {
        Some(d) => d,
        None => default_bpf_dir()?,
    };
    let (mut dp, adopted) = DataPlane::load_pinned(&dir, Some(max_connections))?;
    // VRRP refuses its VIPs again as its instances become master.
    dp.clear_no_accept()?;
    let mut table = Table::default();
    if adopted {
        let specs = dp.installed()?;
        info!(
            dir = %dir.display(),
            services = specs.len(),
            connections = dp.connections().map(|c| c.len()).unwrap_or(0),
            "adopted the data plane a previous run left pinned"
        );
        table.adopt(specs);
    }
    // IPVS's timeouts from global_defs (lvs_timeouts tcp N tcpfin N udp N), unless adopted
    // ones are running (ipvsadm --set may have changed them).
    if !adopted {
        let lt = k.global_defs.lvs_timeouts;
        let mut t = dp.timeouts()?;
        for (i, v) in [
            (fulcrum_dataplane::abi::STATE_ESTABLISHED, lt.tcp),
            (fulcrum_dataplane::abi::STATE_FIN_WAIT, lt.tcpfin),
            (fulcrum_dataplane::abi::STATE_UDP, lt.udp),
        ] {
            if let Some(v) = v.filter(|v| *v > 0) {
                t[i] = v;
            }
        }
        dp.set_timeouts(&t)?;
    }
    let wanted = &k.global_defs.xdp_interfaces;
    let mut interfaces = Vec::new();
    for name in fulcrum_sys::interfaces()? {
        if name == "lo" || (!wanted.is_empty() && !wanted.contains(&name)) {
            continue;
        }
        let mode = dp
            .attach(&name)
            .map_err(|e| anyhow::anyhow!("cannot attach the XDP program to {name}: {e}"))?;
        info!(interface = %name, mode = mode.name(), "XDP data plane attached");
        interfaces.push((name, mode));
    }
    let verdicts = health.as_ref().map(|h| h.verdicts()).unwrap_or_default();
    let dr: Vec<Ipv4Addr> = rules
        .iter()
        .flat_map(|r| &r.dests)
        .filter(|d| d.method == Method::Dr)
        .map(|d| d.addr)
        .collect();
    if !dr.is_empty() {
        prod_neighbours(&dr);
        let resolved = |l: &HashMap<Ipv4Addr, Link>| dr.iter().all(|a| l.contains_key(a));
        let deadline = Instant::now() + Duration::from_millis(500);
        while !resolved(&read_links()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        table.links = read_links();
    }
    table.apply(&mut dp, &rules, &verdicts)?;
    info!(services = rules.len(), "layer-4 services installed");
    let shared = Arc::new(Mutex::new(Shared {
        dp,
        table,
        rules,
        verdicts: verdicts.clone(),
        health,
        interfaces,
    }));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("fulcrum-l4".into())
            .spawn(move || keep_up(shared, stop))?
    };
    Ok(Some(Runtime {
        shared,
        stop,
        thread: Some(thread),
    }))
}

/// Applies health verdicts as they change (polled every 100 ms); every second sweeps
/// expired connections and picks up neighbour changes for DR; every 10 s asks the kernel
/// to refresh the DR real servers' neighbour entries.
fn keep_up(shared: Arc<Mutex<Shared>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut swept = Instant::now();
    let mut prodded = Instant::now();
    let mut estimated = Instant::now();
    // Routes and resolved neighbours as last seen: when they change, next hops cached by
    // NAT connections are dropped, and DR slots get the new MACs.
    let mut last_routing = (String::new(), read_links());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let health = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .health
            .clone();
        let now = health.as_ref().map(|h| h.verdicts());
        // The files are read before taking the lock, once a second.
        let tick = swept.elapsed() >= Duration::from_secs(1);
        let routing = tick.then(|| {
            (
                std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
                read_links(),
            )
        });
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let Shared {
            dp,
            table,
            rules,
            verdicts,
            ..
        } = &mut *s;
        if let Some(now) = now.filter(|n| n != verdicts) {
            if let Err(e) = table.apply(dp, rules, &now) {
                warn!("cannot apply health-check changes to the data plane: {e}");
            }
            *verdicts = now;
        }
        if let Some(routing) = routing {
            if routing != last_routing {
                if let Err(e) = dp.bump_route_generation() {
                    warn!("cannot refresh cached next hops: {e}");
                }
                if routing.1 != table.links && !table.dr_addresses().is_empty() {
                    table.links = routing.1.clone();
                    if let Err(e) = table.apply(dp, rules, verdicts) {
                        warn!("cannot apply neighbour changes to the data plane: {e}");
                    }
                }
                last_routing = routing;
            }
            if let Err(e) = dp.sweep() {
                warn!("connection sweep: {e}");
            }
            swept = Instant::now();
        }
        if estimated.elapsed() >= Estimator::TICK {
            table.estimate(dp);
            estimated = Instant::now();
        }
        if prodded.elapsed() >= Duration::from_secs(10) {
            prod_neighbours(&table.dr_addresses());
            prodded = Instant::now();
        }
    }
}

impl Runtime {
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops keeping up. With `release`, the pins are removed, so dropping the data plane
    /// detaches the program and frees its maps; without, forwarding goes on for the next
    /// run to adopt.
    pub fn stop(mut self, release: bool) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if release {
            if let Err(e) = s.dp.unpin() {
                warn!("cannot release the data plane: {e}");
            }
        } else {
            info!("forwarding left running (--keep-forwarding)");
        }
    }
}
