//! The installed services: rules applied to the data plane as a diff, so unchanged
//! services keep their connections, with IPVS's rate estimator and its listing.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fulcrum_dataplane::{DataPlane, DestSpec, Link, Method, ServiceKey, ServiceSpec};
use tracing::info;

use super::rules::{Rule, RuleKey, VerdictOf};
use crate::health::Verdicts;
use crate::status;
use fulcrum_health::Membership;

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

    fn rates(&self) -> status::Rates {
        let r = |i: usize| self.avg[i].round() as u64;
        status::Rates {
            cps: r(0),
            inpps: r(1),
            outpps: r(2),
            inbps: r(3),
            outbps: r(4),
        }
    }
}

/// A rule as installed: its id and the slot of each real server.
#[derive(Debug, Clone)]
struct Installed {
    id: u32,
    rule: Rule,
    spec: ServiceSpec,
}

/// What [`Table::apply`] changes in the data plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// Services to remove: their rule key, id and data-plane key.
    pub removed: Vec<(RuleKey, u32, ServiceKey)>,
    /// Services to write, with their id and slots.
    pub put: Vec<(Rule, ServiceSpec)>,
}

/// The installed services, applied to the data plane as a diff.
#[derive(Debug, Default)]
pub struct Table {
    installed: HashMap<RuleKey, Installed>,
    /// Rate estimators by (service id, real-server slot; None for the service).
    rates: HashMap<(u32, Option<usize>), Estimator>,
    /// Where DR real servers are on the link, from the neighbour table.
    pub(super) links: HashMap<IpAddr, Link>,
    /// Real servers the operator drained (`fulcrum ctl drain`): weight 0.
    pub(super) drained: Vec<(IpAddr, Option<u16>)>,
}

impl Table {
    /// The installed services by their data-plane id.
    fn by_id(&self) -> HashMap<u32, &Installed> {
        self.installed.values().map(|i| (i.id, i)).collect()
    }

    /// For persistence templates: a lookup from (service id, slot) to the service's key
    /// and persistence timeout, and the real server, over the services indexed once.
    pub(super) fn templates_of(
        &self,
    ) -> impl Fn(u32, u32) -> Option<(RuleKey, u32, DestSpec)> + '_ {
        let by_id = self.by_id();
        move |service, slot| {
            let i = by_id.get(&service)?;
            let d = i.spec.dests.get(slot as usize).copied().flatten()?;
            Some((i.rule.key, i.spec.persistence?.0, d))
        }
    }

    /// Where a synced connection to `vip:vport` through `rip:rport` goes here: the
    /// service's id, the real server's slot and its forwarding method (a connection
    /// takes its server's, as in IPVS). A port-0 persistent service takes every port.
    pub(super) fn synced_slot(
        &self,
        proto: u8,
        vip: IpAddr,
        vport: u16,
        rip: IpAddr,
        rport: u16,
    ) -> Option<(u32, u16, Method)> {
        let exact = RuleKey {
            proto,
            vip,
            port: vport,
        };
        let any_port = RuleKey {
            proto,
            vip,
            port: 0,
        };
        let i = self.installed.get(&exact).or_else(|| {
            self.installed
                .get(&any_port)
                .filter(|i| i.spec.persistence.is_some())
        })?;
        let slot =
            i.spec.dests.iter().position(|d| {
                d.is_some_and(|d| d.addr == rip && (d.port == rport || d.port == 0))
            })?;
        let d = i.spec.dests[slot]?;
        Some((i.id, slot as u16, d.method))
    }
}

/// The address this host sends from towards `rip`, as the kernel's routing chooses it:
/// a TUN tunnel's outer source, as IPVS takes it from the route (a UDP socket connected
/// there, nothing sent).
pub fn tunnel_source(rip: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match rip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(any).ok()?;
    sock.connect((rip, 9)).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

/// The index of interface `name` and the unicast MACs frames on it may be addressed to:
/// its own, and those of the devices stacked on it (a bridge or bond it is a port of, its
/// VLANs and macvlans, VRRP's vmacs), from /sys/class/net. None if it is gone.
pub fn host_macs(name: &str) -> Option<(u32, Vec<[u8; 6]>)> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let ifindex = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mac_of = |d: &std::path::Path| {
        std::fs::read_to_string(d.join("address"))
            .ok()
            .and_then(|m| parse_mac(&m))
            .filter(|m| m[0] & 1 == 0)
    };
    let mut macs: Vec<[u8; 6]> = mac_of(&dir).into_iter().collect();
    let stacked = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("upper_") || n == "master"
        })
        .filter_map(|e| std::fs::canonicalize(e.path()).ok());
    for upper in stacked {
        if let Some(m) = mac_of(&upper).filter(|m| !macs.contains(m)) {
            macs.push(m);
        }
    }
    Some((ifindex, macs))
}

/// The MAC of an interface, by its index (from /sys/class/net).
fn interface_mac(ifindex: u32) -> Option<[u8; 6]> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::read_to_string(e.path().join("ifindex"))
                .is_ok_and(|i| i.trim().parse() == Ok(ifindex))
        })
        .and_then(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .and_then(|m| parse_mac(&m))
}

/// The resolved IPv6 neighbours of this network namespace (a netlink dump: IPv6 has no
/// /proc file for them), as `read_links` gives the IPv4 ones.
fn read_links6(links: &mut HashMap<IpAddr, Link>) {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };
    // A runtime of its own on a thread of its own: this is called from the daemon's
    // runtime as well as from the data plane's maintenance thread.
    let dump = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .ok()?;
        Some(rt.block_on(async {
            let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
                return Vec::new();
            };
            tokio::spawn(conn);
            let mut dump = handle
                .neighbours()
                .get()
                .set_address_family(rtnetlink::packet_route::AddressFamily::Inet6)
                .execute();
            let mut out = Vec::new();
            while let Ok(Some(m)) = dump.try_next().await {
                let usable = matches!(
                    m.header.state,
                    NeighbourState::Reachable
                        | NeighbourState::Stale
                        | NeighbourState::Delay
                        | NeighbourState::Probe
                        | NeighbourState::Permanent
                );
                let mut ip = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                            ip = Some(*a)
                        }
                        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                            mac = <[u8; 6]>::try_from(&l[..]).ok().filter(|m| *m != [0; 6]);
                        }
                        _ => {}
                    }
                }
                if let (true, Some(ip), Some(mac)) = (usable, ip, mac) {
                    out.push((ip, mac, m.header.ifindex));
                }
            }
            out
        }))
    });
    let found: Vec<(std::net::Ipv6Addr, [u8; 6], u32)> =
        dump.join().ok().flatten().unwrap_or_default();
    for (ip, mac, ifindex) in found {
        if let Some(smac) = interface_mac(ifindex) {
            links.insert(ip.into(), Link { mac, ifindex, smac });
        }
    }
}

/// The resolved neighbours of this network namespace (IPv4 from /proc/net/arp; with
/// `ipv6`, IPv6 ones too, from the kernel by netlink), with the index and MAC of the
/// interface each is on: what DR rewrites frames with.
pub fn read_links(ipv6: bool) -> HashMap<IpAddr, Link> {
    let mut links = HashMap::new();
    if ipv6 {
        read_links6(&mut links);
    }
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
        links.insert(ip.into(), Link { mac, ifindex, smac });
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
            let membership = match &d.verdict {
                VerdictOf::Server(key) => verdicts.server(key),
                VerdictOf::Sorry(service) => verdicts.sorry(service),
                VerdictOf::Fixed => None,
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
                    Method::Nat | Method::Tun(_) => None,
                },
                tun_source: match d.method {
                    Method::Tun(_) => tunnel_source(d.addr),
                    _ => None,
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
        // IPVS's list order: the servers that stay keep theirs, and each one added goes to
        // the head of the list (ip_vs_add_dest), in the order the rule adds them.
        let kept: Vec<usize> = old.map_or_else(Vec::new, |old| {
            old.spec
                .scan_order()
                .into_iter()
                .filter(|&s| slots.get(s).is_some_and(Option::is_some))
                .collect()
        });
        let mut added = Vec::new();
        for w in wanted {
            if slots
                .iter()
                .flatten()
                .any(|s| (s.addr, s.port) == (w.addr, w.port))
            {
                continue;
            }
            let slot = match slots.iter().position(Option::is_none) {
                Some(i) => {
                    slots[i] = Some(w);
                    i
                }
                None => {
                    slots.push(w.into());
                    slots.len() - 1
                }
            };
            added.push(slot);
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        ServiceSpec {
            key: match rule.key.vip {
                IpAddr::V4(a) => ServiceKey::v4(a, rule.key.port, rule.key.proto),
                IpAddr::V6(a) => ServiceKey::v6(a, rule.key.port, rule.key.proto),
            },
            id,
            scheduler: rule.scheduler,
            sh_port: rule.sh_port,
            sh_fallback: rule.sh_fallback,
            mh_port: rule.mh_port,
            mh_fallback: rule.mh_fallback,
            sloppy_tcp: rule.sloppy_tcp,
            ops: rule.ops,
            persistence: rule.persistence,
            dests: slots,
            list: added.into_iter().rev().chain(kept).collect(),
        }
    }

    /// What bringing the data plane to `rules` with `verdicts` takes, computed without
    /// touching it: the services to remove, and those to write (new, or changed in their
    /// rule or slots). Unchanged services are left out, so they keep their connections.
    pub fn diff(
        &self,
        rules: &[Rule],
        verdicts: &Verdicts,
    ) -> Result<Diff, fulcrum_dataplane::Error> {
        let wanted: HashSet<RuleKey> = rules.iter().map(|r| r.key).collect();
        let mut removed: Vec<(RuleKey, u32, ServiceKey)> = self
            .installed
            .iter()
            .filter(|(k, _)| !wanted.contains(k))
            .map(|(k, i)| (*k, i.id, i.spec.key))
            .collect();
        removed.sort_by_key(|r| r.0);
        // The ids of removed services are free again.
        let mut used: HashSet<u32> = self
            .installed
            .iter()
            .filter(|(k, _)| wanted.contains(k))
            .map(|(_, i)| i.id)
            .collect();
        let mut put = Vec::new();
        for rule in rules {
            let id = match self.installed.get(&rule.key) {
                Some(i) => i.id,
                None => {
                    let id = (0..fulcrum_dataplane::abi::MAX_SERVICES)
                        .find(|id| !used.contains(id))
                        .ok_or_else(|| {
                            fulcrum_dataplane::Error::Limit(format!(
                                "at most {} virtual services",
                                fulcrum_dataplane::abi::MAX_SERVICES
                            ))
                        })?;
                    used.insert(id);
                    id
                }
            };
            let spec = self.spec(rule, id, verdicts);
            if self
                .installed
                .get(&rule.key)
                .is_some_and(|i| i.spec == spec && i.rule == *rule)
            {
                continue;
            }
            put.push((rule.clone(), spec));
        }
        Ok(Diff { removed, put })
    }

    /// Records a diff as applied, without a data plane: what [`Table::apply`] does to its
    /// own books.
    #[cfg(test)]
    pub(super) fn record(&mut self, diff: &Diff) {
        for (key, _, _) in &diff.removed {
            self.installed.remove(key);
        }
        for (rule, spec) in &diff.put {
            let (id, rule, spec) = (spec.id, rule.clone(), spec.clone());
            self.installed
                .insert(rule.key, Installed { id, rule, spec });
        }
    }

    /// Brings the data plane to `rules` with `verdicts`: new services added, changed ones
    /// rewritten in place (connections kept), removed ones removed; unchanged services are
    /// not touched ([`Table::diff`]).
    pub fn apply(
        &mut self,
        dp: &mut DataPlane,
        rules: &[Rule],
        verdicts: &Verdicts,
    ) -> Result<(), fulcrum_dataplane::Error> {
        let diff = self.diff(rules, verdicts)?;
        for (key, id, service) in &diff.removed {
            dp.remove_service(service, *id)?;
            self.installed.remove(key);
            info!(service = %format!("{}:{} {}", key.vip, key.port, key.proto_name()), "virtual service removed");
        }
        for (rule, spec) in diff.put {
            dp.put_service(&spec)?;
            let id = spec.id;
            // Estimators start from the counters as they are now, so traffic before the
            // first tick counts.
            let (t, slots) = dp.service_traffic_by_slot(id).unwrap_or_default();
            for (slot, t) in slots {
                self.rates.entry((id, Some(slot))).or_insert(Estimator {
                    last: Some(t),
                    avg: [0.0; 5],
                });
            }
            self.rates.entry((id, None)).or_insert(Estimator {
                last: Some(t),
                avg: [0.0; 5],
            });
            self.installed
                .insert(rule.key, Installed { id, rule, spec });
        }
        Ok(())
    }

    /// Folds the traffic of the last tick into every estimator (every 2 s).
    pub fn estimate(&mut self, dp: &DataPlane) {
        let mut live = std::collections::HashSet::new();
        for i in self.installed.values() {
            let (t, slots) = dp.service_traffic_by_slot(i.id).unwrap_or_default();
            self.rates.entry((i.id, None)).or_default().tick(t);
            live.insert((i.id, None));
            for (slot, t) in slots {
                self.rates.entry((i.id, Some(slot))).or_default().tick(t);
                live.insert((i.id, Some(slot)));
            }
        }
        self.rates.retain(|k, _| live.contains(k));
    }

    fn rate(&self, id: u32, slot: Option<usize>) -> status::Rates {
        self.rates
            .get(&(id, slot))
            .map_or_else(status::Rates::default, Estimator::rates)
    }

    /// The services as `fulcrum ipvsadm` lists them, with counters.
    ///
    /// The connection table (up to a million entries) is read only when `connections` asks
    /// for it (`ipvsadm -Lnc`), not for every listing.
    pub fn listing(&self, dp: &DataPlane, connections: bool) -> status::Listing {
        let mut keys: Vec<&RuleKey> = self.installed.keys().collect();
        keys.sort();
        let traffic = |t: fulcrum_dataplane::Traffic| status::Traffic {
            conns: t.conns,
            inpkts: t.inpkts,
            outpkts: t.outpkts,
            inbytes: t.inbytes,
            outbytes: t.outbytes,
        };
        let services = keys
            .into_iter()
            .map(|k| {
                let i = &self.installed[k];
                let (total, by_slot) = dp.service_traffic_by_slot(i.id).unwrap_or_default();
                // In IPVS's list order (the newest first), which `ipvsadm --nosort` shows.
                let dests = i
                    .spec
                    .scan_order()
                    .into_iter()
                    .filter_map(|slot| {
                        let d = (*i.spec.dests.get(slot)?)?;
                        let (active, inactive) = dp.dest_conns(i.id, slot).unwrap_or((0, 0));
                        Some(status::IpvsDest {
                            address: d.addr.to_string(),
                            port: d.port,
                            forward: d.method.ipvsadm_name().to_string(),
                            tunnel: match d.method {
                                Method::Tun(t) => Some(status::IpvsTunnel {
                                    kind: t.kind.name().to_string(),
                                    port: t.port,
                                    csum: t.csum.name().to_string(),
                                }),
                                _ => None,
                            },
                            weight: d.weight,
                            u_threshold: d.u_threshold,
                            l_threshold: d.l_threshold,
                            active: active.into(),
                            inactive: inactive.into(),
                            stats: traffic(
                                by_slot
                                    .iter()
                                    .find(|(s, _)| *s == slot)
                                    .map_or_else(Default::default, |(_, t)| *t),
                            ),
                            rate: self.rate(i.id, Some(slot)),
                        })
                    })
                    .collect();
                status::IpvsService {
                    protocol: k.proto_name().to_string(),
                    address: k.vip.to_string(),
                    port: k.port,
                    scheduler: i.rule.scheduler.name().to_string(),
                    persistent: i.rule.persistence.map(|(t, _)| t),
                    netmask: i.rule.persistence.map(|(_, m)| m.to_string()),
                    ops: i.rule.ops,
                    flags: sched_flags(&i.rule),
                    stats: traffic(total),
                    rate: self.rate(i.id, None),
                    dests,
                }
            })
            .collect();
        let all = if connections {
            dp.connections().unwrap_or_default()
        } else {
            Vec::new()
        };
        let conns = all
            .into_iter()
            .map(|c| status::IpvsConnection {
                protocol: if c.proto == 17 { "UDP" } else { "TCP" }.to_string(),
                expires_ms: c.expires_in.as_millis() as u64,
                state: c.state.to_string(),
                source: SocketAddr::from(c.client).to_string(),
                virtual_: SocketAddr::from(c.vip).to_string(),
                destination: SocketAddr::from(c.rip).to_string(),
            })
            .collect();
        let by_id = self.by_id();
        let templates = if connections {
            dp.templates().unwrap_or_default()
        } else {
            Vec::new()
        };
        let templates = templates
            .into_iter()
            .filter_map(|t| {
                let i = by_id.get(&t.service)?;
                let d = i.spec.dests.get(t.slot as usize).copied().flatten()?;
                Some(status::IpvsConnection {
                    protocol: i.rule.key.proto_name().to_string(),
                    expires_ms: t.expires_in.as_millis() as u64,
                    state: "NONE".to_string(),
                    source: SocketAddr::new(t.client, 0).to_string(),
                    virtual_: SocketAddr::new(i.rule.key.vip, i.rule.key.port).to_string(),
                    destination: SocketAddr::new(d.addr, d.port).to_string(),
                })
            })
            .collect();
        let t = dp
            .timeouts()
            .unwrap_or(fulcrum_dataplane::abi::DEFAULT_TIMEOUTS);
        let packets = fulcrum_dataplane::Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), dp.count(*r).unwrap_or(0)))
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
        status::Listing {
            neighbours,
            packets,
            size: dp.max_connections(),
            memory: dp.memory().iter().map(|(_, b)| b).sum(),
            services,
            connections: conns,
            templates,
            timeout: timeouts(&t),
            interfaces: Vec::new(),
            sync: None,
        }
    }

    /// Takes over the services a previous run left in the data plane, with their ids and
    /// slots, so the next apply keeps their connections.
    pub fn adopt(&mut self, specs: Vec<ServiceSpec>) {
        for spec in specs {
            let key = RuleKey {
                proto: spec.key.proto,
                vip: spec.key.ip(),
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
                sloppy_tcp: spec.sloppy_tcp,
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
    pub(super) fn ids(&self, key: Option<&RuleKey>) -> Vec<u32> {
        self.installed
            .iter()
            .filter(|(k, _)| key.is_none_or(|key| key == *k))
            .map(|(_, i)| i.id)
            .collect()
    }

    /// Real servers reached by DR: their MAC must be in the neighbour table.
    /// The DR and TUN real servers: the addresses whose neighbour (or next hop) the
    /// data plane needs resolved.
    /// Whether any IPv6 service is installed.
    pub(super) fn has_ipv6(&self) -> bool {
        self.installed.values().any(|i| i.spec.key.family == 6)
    }

    pub(super) fn dr_addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .installed
            .values()
            .flat_map(|i| i.spec.dests.iter().flatten())
            .filter(|d| d.method != Method::Nat)
            .map(|d| d.addr)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// ipvsadm's three timeouts out of the data plane's table of them.
fn timeouts(t: &[u32]) -> status::Timeouts {
    use fulcrum_dataplane::abi::{STATE_ESTABLISHED, STATE_FIN_WAIT, STATE_UDP};
    status::Timeouts {
        tcp: t[STATE_ESTABLISHED],
        tcpfin: t[STATE_FIN_WAIT],
        udp: t[STATE_UDP],
    }
}

/// IPVS's scheduler flag bits as ipvsadm's print_sched_flags names them: bit 1 is the
/// fallback, bit 2 the port (sh and mh name them, other schedulers say flag-N).
fn sched_flags(r: &Rule) -> Vec<String> {
    let (fallback, port) = (r.sh_fallback || r.mh_fallback, r.sh_port || r.mh_port);
    let prefix = match r.scheduler.name() {
        "sh" => Some("sh"),
        "mh" => Some("mh"),
        _ => None,
    };
    let mut out = Vec::new();
    for (on, what, bit) in [(fallback, "fallback", 1), (port, "port", 2)] {
        if on {
            out.push(match prefix {
                Some(p) => format!("{p}-{what}"),
                None => format!("flag-{bit}"),
            });
        }
    }
    out
}

/// What `ipvs` answers before the data plane runs: no service, the table's size to be.
pub fn empty_listing(size: u32) -> status::Listing {
    status::Listing {
        size,
        timeout: timeouts(&fulcrum_dataplane::abi::DEFAULT_TIMEOUTS),
        ..Default::default()
    }
}
