//! The layer-4 half of the daemon: keepalived.conf's virtual_server blocks become IPVS-style
//! rules ([`rules`], pure), installed in the XDP data plane as a diff ([`Table`]) with the
//! weights the health checks decide, and kept up: connections swept, DR neighbours kept
//! resolved. The control socket reads it for `fulcrum ipvsadm`.

pub mod edit;
pub mod rules;
pub mod sync;
pub mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum_dataplane::{AttachMode, DataPlane, Link, Method};
use fulcrum_keepalived_conf::model::KeepalivedConfig;
use tracing::{info, warn};

pub use rules::{rules, Rule, RuleDest, RuleKey};
pub use table::{empty_listing, read_links, Estimator, Table};

use crate::health::Verdicts;

/// /sys/fs/bpf/fulcrum/net-INODE: one directory per network namespace, so daemons in
/// different namespaces of one machine never share pins. bpffs is mounted on /sys/fs/bpf
/// when it is not there (under `ip netns exec`, /sys is private to the command, so pins
/// there end with it: pass --bpf-dir on a bpffs mounted outside to survive a restart).
pub fn default_bpf_dir() -> anyhow::Result<PathBuf> {
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
    shared: Arc<Mutex<Forwarding>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    sync_thread: Option<std::thread::JoinHandle<()>>,
}

/// The data plane with its table and rules, behind the runtime's lock.
#[derive(Debug)]
struct Forwarding {
    dp: DataPlane,
    table: Table,
    /// The running rules: keepalived.conf's, with ipvsadm's edits.
    rules: Vec<Rule>,
    /// The services keepalived.conf made: a reload replaces these and keeps the ones
    /// added with ipvsadm, as keepalived removes only what it created.
    configured: std::collections::HashSet<RuleKey>,
    /// The health checks' verdicts last applied.
    verdicts: Verdicts,
    interfaces: Vec<(String, AttachMode)>,
    /// The connection sync daemon's configuration, role and counters.
    sync: sync::SyncState,
}

/// A cheap handle for the control socket.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Mutex<Forwarding>>,
}

impl Handle {
    pub fn listing(&self, connections: bool) -> crate::status::Listing {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = s.table.listing(&s.dp, connections);
        v.interfaces = s
            .interfaces
            .iter()
            .map(|(name, mode)| crate::status::XdpInterface {
                name: name.clone(),
                mode: mode.name().to_string(),
            })
            .collect();
        v.sync = Some(s.sync.status());
        v
    }

    /// A VRRP instance changed state: the sync daemon follows the instance it names.
    pub fn vrrp_transition(&self, instance: &str, master: bool) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.sync.vrrp(instance, master);
    }

    /// Drains (weight 0: existing connections go on, no new ones) or undrains the real
    /// servers at `addr` (and `port`) in every virtual service. How many it touched.
    pub fn set_drained(&self, addr: IpAddr, port: Option<u16>, on: bool) -> Result<usize, String> {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Forwarding {
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

    /// The health checks changed a verdict: applied as a diff.
    pub fn set_verdicts(&self, verdicts: Verdicts) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.verdicts == verdicts {
            return;
        }
        let Forwarding {
            dp, table, rules, ..
        } = &mut *s;
        if let Err(e) = table.apply(dp, rules, &verdicts) {
            warn!("cannot apply health-check changes to the data plane: {e}");
        }
        s.verdicts = verdicts;
    }

    /// A reload changed the virtual servers: the services keepalived.conf made become the
    /// new configuration's, those added with ipvsadm stay (as keepalived with IPVS),
    /// applied as a diff with the new health checks' verdicts.
    pub fn set_rules(&self, k: &KeepalivedConfig, verdicts: Verdicts) {
        let (configured, _) = rules(k);
        let keys = configured.iter().map(|r| r.key).collect();
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let rules = merge(&s.rules, &s.configured, configured);
        let Forwarding { dp, table, .. } = &mut *s;
        if let Err(e) = table.apply(dp, &rules, &verdicts) {
            warn!("cannot apply the reloaded virtual servers: {e}");
            return;
        }
        info!(services = rules.len(), "layer-4 rules reloaded");
        prod_neighbours(&table.dr_addresses());
        s.rules = rules;
        s.configured = keys;
        s.verdicts = verdicts;
        match sync::SyncConfig::from_keepalived(k) {
            Ok(c) => s.sync.configure(c),
            Err(e) => warn!("{e}; connection sync left as it was"),
        }
        s.sync.settings = sync::settings(k);
    }

    /// Applies ipvsadm command lines together: all are checked first, and an error
    /// changes nothing.
    pub fn edit(&self, lines: &[Vec<String>]) -> Result<(), String> {
        use edit::{apply, parse, Edit};
        let edits = lines
            .iter()
            .map(|l| parse(l))
            .collect::<Result<Vec<Edit>, String>>()?;
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        // The sync daemons' edits (--start-daemon, --stop-daemon) are checked on a copy
        // first, like the rules, with IPVS's answers when it refuses.
        let mut daemons = (s.sync.master.clone(), s.sync.backup.clone());
        for e in &edits {
            let (role, start) = match e {
                Edit::StartDaemon(role, d) => (*role, Some(d.clone())),
                Edit::StopDaemon(role) => (*role, None),
                _ => continue,
            };
            let slot = match role {
                sync::SyncRole::Master => &mut daemons.0,
                sync::SyncRole::Backup => &mut daemons.1,
            };
            if let Some(d) = &start {
                // IPVS binds the daemon to the interface at once.
                if fulcrum_sys::if_index(&d.interface).is_err() {
                    return Err("No such device".into());
                }
            }
            match (start, slot.is_some()) {
                (Some(_), true) => return Err("Daemon has already run".into()),
                (None, false) => return Err("No daemon is running".into()),
                (start, _) => *slot = start,
            }
        }
        let mut rules = s.rules.clone();
        for e in &edits {
            rules = apply(&rules, e)?;
            if let Edit::Zero(Some(key)) = e {
                if !rules.iter().any(|r| r.key == *key) {
                    return Err("No such service".into());
                }
            }
        }
        let Forwarding {
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
        prod_neighbours(&table.dr_addresses());
        s.rules = rules;
        (s.sync.master, s.sync.backup) = daemons;
        Ok(())
    }
}

/// Kernel memory per connection in the data plane's maps: two and a half slots of each
/// connection table (two entries for NAT's reply, a fifth of the table kept free), 104
/// bytes each for IPv4 and 152 for IPv6, their share of the persistence tables and of the
/// stashes' buckets.
pub const BYTES_PER_CONNECTION: u64 = 690;

/// The connection tables' default size (the same for IPv4 and IPv6): together a 32nd of
/// the machine's memory, at least 65,536 and at most 1,048,576 connections each (the most
/// when the memory is unknown).
pub fn default_connections(memory: Option<u64>) -> u32 {
    const MIN: u64 = 65_536;
    const MAX: u64 = 1_048_576;
    memory.map_or(MAX, |m| (m / 32 / BYTES_PER_CONNECTION).clamp(MIN, MAX)) as u32
}

/// The kernel memory a table of `connections` takes, about.
pub fn table_bytes(connections: u32) -> u64 {
    u64::from(connections) * BYTES_PER_CONNECTION
}

/// A reload's rules: the new configuration's, then the running ones no configuration
/// made (added with ipvsadm), unless the new configuration has their key.
fn merge(
    running: &[Rule],
    configured: &std::collections::HashSet<RuleKey>,
    new: Vec<Rule>,
) -> Vec<Rule> {
    let mut out = new;
    for r in running {
        if !configured.contains(&r.key) && !out.iter().any(|n| n.key == r.key) {
            out.push(r.clone());
        }
    }
    out
}

/// Sends one empty datagram to the discard port of each address, so the kernel resolves
/// (or refreshes) its neighbour entry, which the data plane's FIB lookup reads for DR.
fn prod_neighbours(addrs: &[IpAddr]) {
    let v4 = UdpSocket::bind("0.0.0.0:0").ok();
    let v6 = UdpSocket::bind("[::]:0").ok();
    for a in addrs {
        let sock = if a.is_ipv4() { &v4 } else { &v6 };
        if let Some(sock) = sock {
            let _ = sock.send_to(&[], SocketAddr::new(*a, 9));
        }
    }
}

/// Loads the data plane, attaches it to every interface of this network namespace but
/// loopback, installs the rules with the health checks' verdicts (later ones arrive by
/// [`Handle::set_verdicts`]) and keeps them up. With nothing to forward it starts only
/// when `always` (ipvsadm's first edit on a daemon with no virtual_server).
pub fn start(
    k: &KeepalivedConfig,
    verdicts: Verdicts,
    bpf_dir: Option<PathBuf>,
    max_connections: u32,
    always: bool,
) -> anyhow::Result<Option<Runtime>> {
    // What cannot be forwarded is in the configuration report (Sources::load), which
    // `fulcrum check` prints and `fulcrum run` logs.
    let (rules, _) = rules(k);
    // The data plane also serves VRRP's no_accept masters.
    let no_accept = k
        .vrrp_instances
        .iter()
        .any(|i| i.refuses_traffic(&k.global_defs));
    let sync_config = match sync::SyncConfig::from_keepalived(k) {
        Ok(c) => c,
        Err(e) => {
            warn!("{e}; no connection sync");
            None
        }
    };
    if rules.is_empty() && !no_accept && !always && sync_config.is_none() {
        return Ok(None);
    }
    let configured = rules.iter().map(|r| r.key).collect();
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
    // DR needs the servers' MACs (waited for, briefly); TUN the next hop towards them.
    let dr: Vec<IpAddr> = rules
        .iter()
        .flat_map(|r| &r.dests)
        .filter(|d| d.method == Method::Dr)
        .map(|d| d.addr)
        .collect();
    let tun: Vec<IpAddr> = rules
        .iter()
        .flat_map(|r| &r.dests)
        .filter(|d| matches!(d.method, Method::Tun(_)))
        .map(|d| d.addr)
        .collect();
    prod_neighbours(&tun);
    if !dr.is_empty() {
        prod_neighbours(&dr);
        let resolved = |l: &HashMap<IpAddr, Link>| dr.iter().all(|a| l.contains_key(a));
        let deadline = Instant::now() + Duration::from_millis(500);
        let ipv6 = dr.iter().any(IpAddr::is_ipv6);
        while !resolved(&read_links(ipv6)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        table.links = read_links(ipv6);
    }
    table.apply(&mut dp, &rules, &verdicts)?;
    info!(services = rules.len(), "layer-4 services installed");
    // Attached only now, every service and real server in the maps: from the first
    // packet, a SYN for a virtual service is forwarded, never passed to the local stack
    // (which answers a NAT VIP, the director's own address, with a RST), as IPVS never
    // lets it through.
    let wanted = &k.global_defs.xdp_interfaces;
    let mut interfaces = Vec::new();
    // Not the tap BGP announcements hang on (fulcrum_bgp's liveness interface).
    let liveness = k.bgp.as_ref().map(|b| b.liveness());
    for name in fulcrum_sys::interfaces()? {
        if name == "lo"
            || liveness == Some(name.as_str())
            || (!wanted.is_empty() && !wanted.contains(&name))
        {
            continue;
        }
        let mode = dp
            .attach(&name)
            .map_err(|e| anyhow::anyhow!("cannot attach the XDP program to {name}: {e}"))?;
        info!(interface = %name, mode = mode.name(), "XDP data plane attached");
        interfaces.push((name, mode));
    }
    set_host_macs(&mut dp, &interfaces);
    let shared = Arc::new(Mutex::new(Forwarding {
        dp,
        table,
        rules,
        configured,
        verdicts,
        interfaces,
        sync: sync::SyncState::default(),
    }));
    {
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.sync.configure(sync_config);
        s.sync.settings = sync::settings(k);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("fulcrum-l4".into())
            .spawn(move || maintain(shared, stop))?
    };
    let sync_thread = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("fulcrum-sync".into())
            .spawn(move || sync::run(shared, stop))?
    };
    Ok(Some(Runtime {
        shared,
        stop,
        thread: Some(thread),
        sync_thread: Some(sync_thread),
    }))
}

/// Every second sweeps expired connections and picks up route and neighbour changes for
/// DR; every 2 s estimates rates; every 10 s asks the kernel to refresh the DR real
/// servers' neighbour entries.
fn maintain(shared: Arc<Mutex<Forwarding>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut swept = Instant::now();
    let mut prodded = Instant::now();
    let mut estimated = Instant::now();
    // Routes and resolved neighbours as last seen: when they change, next hops cached by
    // NAT connections are dropped, and DR slots get the new MACs.
    // Whether any IPv6 service is installed: only then are IPv6's routes and neighbours
    // read (the neighbours by netlink, where IPv4's are a file read), for the next hops
    // NAT and TUN connections cache and for DR's MACs. As of the last round.
    let mut want6 = shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .table
        .has_ipv6();
    let mut last_routing = (String::new(), read_links(want6));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        // The files are read before taking the lock, once a second.
        let tick = swept.elapsed() >= Duration::from_secs(1);
        let routing = tick.then(|| {
            let mut routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
            if want6 {
                routes.push_str(&ipv6_routes());
            }
            (routes, read_links(want6))
        });
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let Forwarding {
            dp,
            table,
            rules,
            verdicts,
            interfaces,
            ..
        } = &mut *s;
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
            // A vmac VRRP made, a VLAN added, a bridge joined: their MACs are this host's.
            set_host_macs(dp, interfaces);
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
        want6 = table.has_ipv6();
    }
}

/// Tells the program which unicast MACs each attached interface takes frames for (see
/// table::host_macs), so that it leaves other hosts' frames to the kernel.
fn set_host_macs(dp: &mut DataPlane, interfaces: &[(String, AttachMode)]) {
    for (name, _) in interfaces {
        if let Some((ifindex, macs)) = table::host_macs(name) {
            if let Err(e) = dp.set_host_macs(ifindex, &macs) {
                warn!(interface = %name, "cannot set the MACs it takes frames for: {e}");
            }
        }
    }
}

/// The IPv6 routing table as /proc/net/ipv6_route lists it, without the columns that
/// move with use (reference and use counts): what a route change changes.
fn ipv6_routes() -> String {
    routes_without_counts(&std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default())
}

/// /proc/net/ipv6_route's text without its reference and use counts (columns 7 and 8).
fn routes_without_counts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        for (i, field) in line.split_whitespace().enumerate() {
            if i != 6 && i != 7 {
                out.push_str(field);
                out.push(' ');
            }
        }
        out.push('\n');
    }
    out
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
        for t in [self.thread.take(), self.sync_thread.take()]
            .into_iter()
            .flatten()
        {
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
