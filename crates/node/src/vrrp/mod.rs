//! The VRRP runtime: the IO around `fulcrum_vrrp::router::Router`. It owns the raw
//! IP-protocol-112 sockets (one per interface, multicast joined there, TTL 255, no loop),
//! the virtual addresses (added and removed with rtnetlink), gratuitous ARPs (AF_PACKET),
//! tracking (scripts, interfaces, files), notify scripts, and the clock. Which instance a
//! datagram, a tracked change or a timeout concerns, and what it then does, is the
//! router's decision.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fulcrum_keepalived_conf::{
    Authentication, GlobalDefs, InitialState, KeepalivedConfig, VirtualAddress, VrrpInstance,
    VrrpVersion,
};
use fulcrum_vrrp::instance::{Action, Config, Event, Instance, Reason, State};
use fulcrum_vrrp::packet::{self, ChecksumMode, Version};
use fulcrum_vrrp::router::{Datagram, Member, Output, Router, Track, TrackId};
use fulcrum_vrrp::track::{Effect, ScriptState, TrackState};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::events::{Event as NodeEvent, Events};
use crate::scripts::ScriptRun;
use crate::status;

/// The protocol configuration of a keepalived vrrp_instance (IPv4 instances).
pub fn protocol_config(i: &VrrpInstance, globals: &GlobalDefs, primary: IpAddr) -> Config {
    let v6 = i
        .virtual_ipaddress
        .first()
        .is_some_and(|a| a.addr.is_ipv6());
    let version = match i.version.or(globals.vrrp_version) {
        Some(VrrpVersion::V3) => Version::V3,
        // VRRPv2 has no IPv6: keepalived runs IPv6 instances as version 3.
        _ if v6 => Version::V3,
        _ => Version::V2,
    };
    let addresses: Vec<IpAddr> = i.virtual_ipaddress.iter().map(|a| a.addr).collect();
    let mut c = Config::new(i.virtual_router_id, version, primary, addresses);
    c.priority = i.priority;
    let centis = i.advert_int.as_micros() / 10_000;
    c.advert_int_centis = match version {
        // v2 advertises whole seconds (keepalived rounds down, to at least 1 s).
        Version::V2 => ((centis / 100).max(1) * 100) as u16,
        Version::V3 => centis.clamp(1, 4095) as u16,
    };
    c.preempt = !i.nopreempt;
    c.preempt_delay = i.preempt_delay.map(|t| t.as_duration()).unwrap_or_default();
    // Strict mode ignores authentication, as keepalived does.
    let strict = i.strict_mode.unwrap_or(globals.vrrp_strict);
    c.auth = match &i.authentication {
        Some(Authentication::Pass(p)) if version == Version::V2 && !strict => {
            Some(packet::pass_auth_data(p))
        }
        _ => None,
    };
    let g = |own: Option<u32>, global: Option<u32>, default: u32| own.or(global).unwrap_or(default);
    c.garp_repeat = g(i.garp_master_repeat, globals.vrrp_garp_master_repeat, 5);
    c.garp_delay = i
        .garp_master_delay
        .or(globals.vrrp_garp_master_delay)
        .map(|t| t.as_duration())
        .unwrap_or(Duration::from_secs(5));
    c.garp_refresh = i
        .garp_master_refresh
        .or(globals.vrrp_garp_master_refresh)
        .map(|t| t.as_duration())
        .filter(|d| !d.is_zero());
    c.garp_refresh_repeat = g(
        i.garp_master_refresh_repeat,
        globals.vrrp_garp_master_refresh_repeat,
        1,
    );
    c
}

/// Requests the daemon's control socket makes to the runtime.
#[derive(Debug)]
pub enum Request {
    Status(oneshot::Sender<Vec<status::VrrpInstance>>),
    /// A reloaded configuration: unchanged instances keep their state.
    Reload(Box<KeepalivedConfig>, oneshot::Sender<Result<(), String>>),
}

/// A running VRRP runtime: stop it with [`Runtime::stop`] (priority 0, addresses removed).
#[derive(Debug)]
pub struct Runtime {
    requests: mpsc::Sender<Request>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A handle for asking a running runtime for its status; cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
}

impl Handle {
    /// Applies a reloaded configuration as keepalived does on SIGHUP: an instance whose
    /// configuration (and what it tracks) did not change keeps its state, addresses and
    /// timers, with no advert burst and no transition; a removed one stops as on
    /// shutdown (priority 0, addresses removed); a new or changed one starts as backup.
    pub async fn reload(&self, cfg: &KeepalivedConfig) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Reload(Box::new(cfg.clone()), tx))
            .await
            .map_err(|_| "the VRRP runtime has stopped".to_string())?;
        rx.await
            .map_err(|_| "the VRRP runtime has stopped".to_string())?
    }

    /// What `ctl vrrp` shows: every instance.
    pub async fn status(&self) -> Vec<status::VrrpInstance> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Status(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

impl Runtime {
    pub fn handle(&self) -> Handle {
        Handle {
            requests: self.requests.clone(),
        }
    }

    /// Stops every instance as keepalived does on SIGTERM: masters send priority 0 (so a
    /// backup takes over within its skew) and remove their addresses.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Interface {
    name: String,
    index: u32,
    mac: [u8; 6],
    /// The interface's first IPv4 address and its VRRP socket, once an IPv4 instance uses it.
    v4: Option<(Ipv4Addr, Arc<fulcrum_sys::AsyncSocket>)>,
    /// Its link-local address and IPv6 VRRP socket, once an IPv6 instance uses it.
    v6: Option<(Ipv6Addr, Arc<fulcrum_sys::AsyncSocket>)>,
    arp: Option<fulcrum_sys::PacketSocket>,
    ndisc: Option<fulcrum_sys::PacketSocket>,
    /// The link-local source of its neighbour advertisements.
    ndisc_source: Option<Ipv6Addr>,
}

/// The index of the entry for interface `name`, added if new.
fn interface_entry(interfaces: &mut Vec<Interface>, name: &str) -> anyhow::Result<usize> {
    if let Some(idx) = interfaces.iter().position(|f| f.name == name) {
        return Ok(idx);
    }
    let index = fulcrum_sys::if_index(name).with_context(|| format!("interface {name}"))?;
    interfaces.push(Interface {
        name: name.to_string(),
        index,
        mac: mac_of(name)?,
        v4: None,
        v6: None,
        arp: None,
        ndisc: None,
        ndisc_source: None,
    });
    Ok(interfaces.len() - 1)
}

/// Opens what announces VIPs on the interface: the gratuitous ARP socket for IPv4, the
/// neighbour advertisement socket and its link-local source for IPv6.
async fn announcer(
    handle: &rtnetlink::Handle,
    iface: &mut Interface,
    v6: bool,
) -> anyhow::Result<()> {
    let name = &iface.name;
    if v6 && iface.ndisc.is_none() {
        let source = link_local(handle, iface.index)
            .await
            .with_context(|| format!("interface {name}"))?;
        iface.ndisc_source = Some(source);
        iface.ndisc = fulcrum_sys::PacketSocket::open(iface.index, fulcrum_sys::ETH_P_IPV6)
            .map_err(|e| warn!("{name}: no neighbour advertisements: {e}"))
            .ok();
    }
    if !v6 && iface.arp.is_none() {
        iface.arp = fulcrum_sys::PacketSocket::open(iface.index, fulcrum_sys::ETH_P_ARP)
            .map_err(|e| warn!("{name}: no gratuitous ARP: {e}"))
            .ok();
    }
    Ok(())
}

/// The IO half of an instance (the protocol half is its router member, same number): where
/// its adverts and addresses go, its scripts, and what it showed last.
struct InstanceIo {
    name: String,
    /// Where its adverts go out and come in.
    iface: usize,
    /// Where its VIPs are added and announced: the same, or its VMAC with vmac_xmit_base.
    vip_iface: usize,
    vips: Vec<VirtualAddress>,
    peers: Vec<IpAddr>,
    source: IpAddr,
    mode: ChecksumMode,
    notify: fulcrum_keepalived_conf::Notify,
    /// uid/gid for notify scripts, per script user.
    globals: GlobalDefs,
    last: Option<(u64, State, String)>,
    /// no_accept: while master, traffic to its IPv4 VIPs is refused by the data plane.
    no_accept: bool,
    /// State transitions so far, for the metrics.
    transitions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackKey {
    Script(usize),
    Interface(usize),
    File(usize),
}

impl TrackKey {
    /// The router's number for it.
    fn id(self) -> TrackId {
        match self {
            TrackKey::Script(i) => TrackId(3 * i),
            TrackKey::Interface(i) => TrackId(3 * i + 1),
            TrackKey::File(i) => TrackId(3 * i + 2),
        }
    }
}

/// A tracked object changed.
#[derive(Debug)]
enum TrackUpdate {
    Script(usize, bool),
    Interface(usize, bool),
    File(usize, i64),
}

/// Scripts and interfaces being tracked, shared by the instances that track them.
#[derive(Debug, Default)]
struct Trackers {
    scripts: Vec<(String, ScriptState)>,
    interfaces: Vec<(String, bool)>,
    /// track_file blocks: name, path, the value read last.
    files: Vec<(String, String, i64)>,
}

impl Trackers {
    fn script(&mut self, cfg: &KeepalivedConfig, name: &str) -> Option<usize> {
        if let Some(i) = self.scripts.iter().position(|(n, _)| n == name) {
            return Some(i);
        }
        let s = cfg.vrrp_scripts.iter().find(|s| s.name == name)?;
        self.scripts.push((
            name.to_string(),
            ScriptState::new(s.rise, s.fall, s.init_fail),
        ));
        Some(self.scripts.len() - 1)
    }

    fn interface(&mut self, name: &str) -> usize {
        if let Some(i) = self.interfaces.iter().position(|(n, _)| n == name) {
            return i;
        }
        self.interfaces.push((name.to_string(), interface_up(name)));
        self.interfaces.len() - 1
    }

    fn file(&mut self, cfg: &KeepalivedConfig, name: &str) -> Option<usize> {
        if let Some(i) = self.files.iter().position(|(n, _, _)| n == name) {
            return Some(i);
        }
        let f = cfg.track_files.iter().find(|f| f.name == name)?;
        crate::track_file::init(f);
        self.files.push((
            name.to_string(),
            f.file.clone(),
            crate::track_file::read(&f.file),
        ));
        Some(self.files.len() - 1)
    }

    fn state(&self, key: TrackKey) -> TrackState {
        match key {
            TrackKey::Script(i) => TrackState::Up(self.scripts[i].1.is_up()),
            TrackKey::Interface(i) => TrackState::Up(self.interfaces[i].1),
            TrackKey::File(i) => TrackState::Value(self.files[i].2),
        }
    }

    /// Every tracked object's state now, as the router takes them.
    fn objects(&self) -> Vec<(TrackId, TrackState)> {
        let keys = (0..self.scripts.len())
            .map(TrackKey::Script)
            .chain((0..self.interfaces.len()).map(TrackKey::Interface))
            .chain((0..self.files.len()).map(TrackKey::File));
        keys.map(|k| (k.id(), self.state(k))).collect()
    }
}

/// A track_file's number: its first word; a missing or unreadable file counts as 0.
/// Watches track files, reporting changed values.
async fn watch_files(paths: Vec<String>, mut values: Vec<i64>, tx: mpsc::Sender<TrackUpdate>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, path) in paths.iter().enumerate() {
            let now = crate::track_file::read(path);
            if now != values[i] {
                values[i] = now;
                if tx.send(TrackUpdate::File(i, now)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Up unless the kernel says the link is down (veths and most NICs report "up"; some
/// report "unknown" and still carry traffic).
fn interface_up(name: &str) -> bool {
    match std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")) {
        Ok(s) => !matches!(s.trim(), "down" | "lowerlayerdown" | "notpresent"),
        Err(_) => false,
    }
}

/// Runs a vrrp_script every `interval`, killed after `timeout`, and reports each result.
/// The weight a tracked object moves an instance by: the instance's own for it, else the
/// object's (its vrrp_script or track_file block), else 0.
fn weight_of(
    t: &fulcrum_keepalived_conf::Tracked,
    object: Option<(i32, bool)>,
) -> (Option<i32>, bool) {
    match t.weight {
        Some(w) => (Some(w.get()), t.reverse),
        None => {
            let (w, reverse) = object.unwrap_or((0, false));
            (Some(w), reverse)
        }
    }
}

async fn run_script(
    index: usize,
    script: ScriptRun,
    interval: Duration,
    timeout: Duration,
    tx: mpsc::Sender<TrackUpdate>,
) {
    loop {
        let child = script
            .command()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        let success =
            matches!(tokio::time::timeout(timeout, child).await, Ok(Ok(s)) if s.success());
        if tx.send(TrackUpdate::Script(index, success)).await.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Watches tracked interfaces' link state, reporting changes.
async fn watch_interfaces(names: Vec<String>, mut up: Vec<bool>, tx: mpsc::Sender<TrackUpdate>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, name) in names.iter().enumerate() {
            let now = interface_up(name);
            if now != up[i] {
                up[i] = now;
                if tx.send(TrackUpdate::Interface(i, now)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A received advert: interface index in our table, source, destination, TTL, message.
struct Received {
    iface: usize,
    src: IpAddr,
    /// The IPv4 header's destination; IPv6 raw sockets do not say (the multicast group, or
    /// our own address for unicast peers).
    dst: Option<IpAddr>,
    ttl: u8,
    message: Vec<u8>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac_of(name: &str) -> anyhow::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .with_context(|| format!("cannot read the MAC address of {name}"))?;
    let mut mac = [0u8; 6];
    for (i, part) in text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).context("bad MAC address")?;
    }
    Ok(mac)
}

async fn primary_v4(handle: &rtnetlink::Handle, index: u32) -> anyhow::Result<Ipv4Addr> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream.try_next().await? {
        for a in msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(v4)) = a {
                return Ok(v4);
            }
        }
    }
    bail!("no IPv4 address on the interface (needed as the adverts' source)")
}

/// keepalived's virtual MAC: 00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6.
fn virtual_mac(vrid: u8, v6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if v6 { 0x02 } else { 0x01 }, vrid]
}

/// Sets `net.ipv4.conf.IFACE.KEY` (interface names may contain dots, so the path is built
/// directly).
fn ipv4_conf(iface: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
    if let Err(e) = std::fs::write(&path, value) {
        warn!("cannot set net.ipv4.conf.{iface}.{key}={value}: {e}");
    }
}

/// Creates (or re-creates) the macvlan that carries an instance's virtual MAC, as
/// keepalived's use_vmac: private mode on the base interface, up, and ARP set so that only
/// the macvlan answers for the addresses it holds.
async fn ensure_vmac(
    handle: &rtnetlink::Handle,
    name: &str,
    base: &str,
    base_index: u32,
    mac: [u8; 6],
) -> anyhow::Result<u32> {
    use rtnetlink::packet_route::link::MacVlanMode;
    if let Ok(index) = fulcrum_sys::if_index(name) {
        if mac_of(name).ok() == Some(mac) {
            return Ok(index);
        }
        handle.link().del(index).execute().await?;
    }
    let msg = rtnetlink::LinkMacVlan::new(name, base_index, MacVlanMode::Private)
        .address(mac.to_vec())
        .up()
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("cannot create the VMAC interface {name} on {base}"))?;
    // The base must neither answer ARP for the VIPs nor announce them with its own MAC when
    // it resolves a neighbour for traffic sent from a VIP.
    ipv4_conf(base, "arp_ignore", "1");
    ipv4_conf(base, "arp_announce", "2");
    ipv4_conf(name, "arp_ignore", "1");
    ipv4_conf(name, "rp_filter", "0");
    ipv4_conf(name, "accept_local", "1");
    fulcrum_sys::if_index(name).with_context(|| format!("VMAC interface {name}"))
}

/// The interface's usable link-local IPv6 address (not tentative: DAD finished).
async fn link_local(handle: &rtnetlink::Handle, index: u32) -> anyhow::Result<Ipv6Addr> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
    for _ in 0..50 {
        let mut stream = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = stream.try_next().await? {
            let tentative = msg.header.flags.contains(AddressHeaderFlags::Tentative);
            for a in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V6(v6)) = a {
                    if v6.is_unicast_link_local() && !tentative {
                        return Ok(*v6);
                    }
                }
            }
        }
        // Duplicate address detection may still be running on a fresh link.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no usable link-local IPv6 address (needed as the adverts' source)")
}

fn open_socket_v6(
    name: &str,
    index: u32,
    source: Ipv6Addr,
) -> anyhow::Result<fulcrum_sys::AsyncSocket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(i32::from(packet::PROTOCOL))),
    )
    .context("cannot open a raw IPv6 VRRP socket (needs CAP_NET_RAW)")?;
    s.bind_device(Some(name.as_bytes()))?;
    s.bind(&SocketAddr::V6(SocketAddrV6::new(source, 0, 0, index)).into())?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_hops_v6(u32::from(packet::TTL))?;
    s.set_unicast_hops_v6(u32::from(packet::TTL))?;
    s.set_multicast_loop_v6(false)?;
    s.set_recv_hoplimit_v6(true)?;
    s.join_multicast_v6(&packet::MULTICAST_V6, index)?;
    Ok(fulcrum_sys::AsyncSocket::new(s)?)
}

/// Reads adverts from one interface's IPv6 socket into the runtime.
async fn receive_v6(
    iface: usize,
    socket: Arc<fulcrum_sys::AsyncSocket>,
    tx: mpsc::Sender<Received>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, src, hops) = match socket.recv_v6(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!("IPv6 VRRP socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let r = Received {
            iface,
            src: IpAddr::V6(src),
            dst: None,
            // No hop limit reported: treat as not 255, so it is dropped and counted.
            ttl: hops.unwrap_or(0),
            message: buf[..n].to_vec(),
        };
        if tx.send(r).await.is_err() {
            return;
        }
    }
}

fn open_socket(
    name: &str,
    index: u32,
    primary: Ipv4Addr,
) -> anyhow::Result<fulcrum_sys::AsyncSocket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(packet::PROTOCOL))),
    )
    .context("cannot open a raw VRRP socket (needs CAP_NET_RAW)")?;
    s.bind_device(Some(name.as_bytes()))?;
    // The bound device decides where multicast leaves; naming the address as well is only a
    // hint, refused on a VMAC (whose source address lives on the base interface).
    let _ = s.set_multicast_if_v4(&primary);
    s.set_multicast_ttl_v4(u32::from(packet::TTL))?;
    s.set_ttl_v4(u32::from(packet::TTL))?;
    s.set_multicast_loop_v4(false)?;
    s.join_multicast_v4_n(
        &packet::MULTICAST_V4,
        &InterfaceIndexOrAddress::Index(index),
    )?;
    Ok(fulcrum_sys::AsyncSocket::new(s)?)
}

/// Reads adverts from one interface's socket into the runtime.
async fn receive(iface: usize, socket: Arc<fulcrum_sys::AsyncSocket>, tx: mpsc::Sender<Received>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                warn!("VRRP socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Raw IPv4 sockets deliver the IP header too.
        let Ok(ip) = fulcrum_wire::ipv4::Packet::new_checked(&buf[..n]) else {
            continue;
        };
        let r = Received {
            iface,
            src: IpAddr::V4(ip.src()),
            dst: Some(IpAddr::V4(ip.dst())),
            ttl: ip.ttl(),
            message: ip.payload().to_vec(),
        };
        if tx.send(r).await.is_err() {
            return;
        }
    }
}

/// Starts the runtime for every IPv4 vrrp_instance of the configuration.
pub async fn start(
    cfg: &KeepalivedConfig,
    l4: Option<crate::l4::Handle>,
    events: Events,
) -> anyhow::Result<Runtime> {
    if l4.is_none()
        && cfg
            .vrrp_instances
            .iter()
            .any(|i| i.refuses_traffic(&cfg.global_defs))
    {
        warn!("no_accept is not enforced: the XDP data plane is not running (--no-forwarding)");
    }
    let (connection, handle, _) = rtnetlink::new_connection().context("netlink")?;
    tokio::spawn(connection);
    let (rx_tx, rx) = mpsc::channel::<Received>(1024);
    let (track_tx, track_rx) = mpsc::channel(256);
    let mut io = HostIo {
        interfaces: Vec::new(),
        handle,
        vmacs: Vec::new(),
        l4,
        events,
    };
    let built = build(cfg, &mut io, &rx_tx, &track_tx).await?;
    let (req_tx, req_rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(
        io,
        built,
        cfg.clone(),
        Channels {
            rx,
            track_rx,
            requests: req_rx,
            stop: stop_rx,
            rx_tx,
            track_tx,
        },
    ));
    Ok(Runtime {
        requests: req_tx,
        stop: stop_tx,
        task,
    })
}

/// The instances of a configuration, with what they track, on `io`'s interfaces (opened
/// as needed; kept across reloads).
struct Instances {
    /// The instances' IO side, numbered as the router's members.
    running: Vec<InstanceIo>,
    members: Vec<Member>,
    trackers: Trackers,
    /// The tracking tasks (scripts, files, interfaces), aborted when a reload replaces them.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn build(
    cfg: &KeepalivedConfig,
    io: &mut HostIo,
    rx_tx: &mpsc::Sender<Received>,
    track_tx: &mpsc::Sender<TrackUpdate>,
) -> anyhow::Result<Instances> {
    let handle = io.handle.clone();
    let interfaces = &mut io.interfaces;
    let vmacs = &mut io.vmacs;
    let mut running: Vec<InstanceIo> = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    let mut trackers = Trackers::default();
    let mut tasks = Vec::new();
    for i in &cfg.vrrp_instances {
        let ifname = i
            .interface
            .clone()
            .or_else(|| cfg.global_defs.default_interface.clone())
            .with_context(|| format!("vrrp_instance {}: no interface", i.name))?;
        let v6 = i
            .virtual_ipaddress
            .first()
            .is_some_and(|a| a.addr.is_ipv6());
        // With use_vmac the instance lives on its macvlan; adverts keep the base
        // interface's address as their source. With vmac_xmit_base the adverts go out
        // (and come in) on the base interface, and only the VIPs live on the macvlan.
        let mut base_source = None;
        let mut vip_ifname = None;
        let ifname = match &i.use_vmac {
            None => ifname,
            Some(name) => {
                let vrid = i.virtual_router_id.get();
                let vmac = name
                    .clone()
                    .unwrap_or_else(|| format!("{}.{vrid}", if v6 { "vrrp6" } else { "vrrp" }));
                let base_index = fulcrum_sys::if_index(&ifname)
                    .with_context(|| format!("interface {ifname}"))?;
                ensure_vmac(&handle, &vmac, &ifname, base_index, virtual_mac(vrid, v6)).await?;
                vmacs.push(vmac.clone());
                if i.vmac_xmit_base {
                    vip_ifname = Some(vmac);
                    ifname
                } else {
                    if !v6 {
                        base_source = Some(primary_v4(&handle, base_index).await?);
                    }
                    vmac
                }
            }
        };
        let idx = interface_entry(interfaces, &ifname)?;
        let vip_idx = match &vip_ifname {
            None => idx,
            Some(name) => {
                let k = interface_entry(interfaces, name)?;
                announcer(&handle, &mut interfaces[k], v6).await?;
                k
            }
        };
        let iface = &mut interfaces[idx];
        if v6 && iface.v6.is_none() {
            let source = link_local(&handle, iface.index)
                .await
                .with_context(|| format!("interface {ifname}"))?;
            let socket = Arc::new(open_socket_v6(&ifname, iface.index, source)?);
            tokio::spawn(receive_v6(idx, Arc::clone(&socket), rx_tx.clone()));
            iface.v6 = Some((source, socket));
            announcer(&handle, iface, true).await?;
        }
        if !v6 && iface.v4.is_none() {
            let primary = match base_source {
                Some(p) => p,
                None => primary_v4(&handle, iface.index)
                    .await
                    .with_context(|| format!("interface {ifname}"))?,
            };
            let socket = Arc::new(open_socket(&ifname, iface.index, primary)?);
            tokio::spawn(receive(idx, Arc::clone(&socket), rx_tx.clone()));
            iface.v4 = Some((primary, socket));
            announcer(&handle, iface, false).await?;
        }
        let source: IpAddr = match (v6, i.unicast_src_ip.or(i.mcast_src_ip)) {
            (false, Some(a @ IpAddr::V4(_))) | (true, Some(a @ IpAddr::V6(_))) => a,
            (false, _) => IpAddr::V4(
                interfaces[idx]
                    .v4
                    .as_ref()
                    .map(|v| v.0)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
            ),
            (true, _) => IpAddr::V6(
                interfaces[idx]
                    .v6
                    .as_ref()
                    .map(|v| v.0)
                    .unwrap_or(Ipv6Addr::UNSPECIFIED),
            ),
        };
        let mut config = protocol_config(i, &cfg.global_defs, source);
        if i.state == Some(InitialState::Master) && i.priority.get() < 255 {
            debug!(instance = %i.name, "state MASTER: starts as backup, as keepalived does");
        }
        config.addresses = i.virtual_ipaddress.iter().map(|a| a.addr).collect();
        let mode = if i.v3_checksum_as_v2 {
            ChecksumMode::MessageOnly
        } else {
            ChecksumMode::PseudoHeader
        };
        running.push(InstanceIo {
            name: i.name.clone(),
            iface: idx,
            vip_iface: vip_idx,
            vips: i.virtual_ipaddress.clone(),
            peers: i.unicast_peers.iter().map(|p| p.addr).collect(),
            source,
            mode,
            notify: i.notify.clone(),
            globals: cfg.global_defs.clone(),
            last: None,
            no_accept: i.refuses_traffic(&cfg.global_defs),
            transitions: 0,
        });
        members.push(Member::new(Instance::new(config), idx, source, mode));
        let r = members.last_mut().expect("just pushed");
        let group = cfg
            .vrrp_sync_groups
            .iter()
            .position(|g| g.group.contains(&i.name));
        r.group = group;
        let group_cfg = group.map(|g| &cfg.vrrp_sync_groups[g]);
        // keepalived tracks the instance's own interface unless dont_track_primary.
        if !i.dont_track_primary {
            r.tracks.push(Track {
                object: TrackKey::Interface(trackers.interface(&ifname)).id(),
                weight: None,
                reverse: false,
            });
        }
        let interfaces_tracked = i.track_interfaces.iter().chain(
            group_cfg
                .into_iter()
                .flat_map(|g| g.track_interfaces.iter()),
        );
        for t in interfaces_tracked {
            r.tracks.push(Track {
                object: TrackKey::Interface(trackers.interface(&t.name)).id(),
                weight: t.weight.map(|w| w.get()),
                reverse: t.reverse,
            });
        }
        let scripts_tracked = i
            .track_scripts
            .iter()
            .chain(group_cfg.into_iter().flat_map(|g| g.track_scripts.iter()));
        for t in scripts_tracked {
            let Some(k) = trackers.script(cfg, &t.name) else {
                continue;
            };
            // The track_script's weight, else the script's own (0: fault when down).
            let own = cfg
                .vrrp_scripts
                .iter()
                .find(|s| s.name == t.name)
                .map(|s| (s.weight.get(), s.weight_reverse));
            let (weight, reverse) = weight_of(t, own);
            r.tracks.push(Track {
                object: TrackKey::Script(k).id(),
                weight,
                reverse,
            });
        }
        let files_tracked = i
            .track_files
            .iter()
            .chain(group_cfg.into_iter().flat_map(|g| g.track_files.iter()));
        for t in files_tracked {
            let Some(k) = trackers.file(cfg, &t.name) else {
                continue;
            };
            // The instance's weight, else the track_file block's (0: non-zero is a fault).
            let own = cfg
                .track_files
                .iter()
                .find(|f| f.name == t.name)
                .and_then(|f| f.weight)
                .map(|(w, rev)| (w.get(), rev));
            let (weight, reverse) = weight_of(t, own);
            r.tracks.push(Track {
                object: TrackKey::File(k).id(),
                weight,
                reverse,
            });
        }
    }
    for (index, (name, _)) in trackers.scripts.iter().enumerate() {
        if let Some(s) = cfg.vrrp_scripts.iter().find(|s| &s.name == name) {
            let interval = s.interval.as_duration().max(Duration::from_millis(10));
            let timeout = s.timeout.map(|t| t.as_duration()).unwrap_or(interval);
            // A script that may not run is left out of tracking, as keepalived disables it.
            let Some(run) = ScriptRun::checked(
                s.script.command.clone(),
                s.script.user.as_ref(),
                &cfg.global_defs,
            ) else {
                for m in &mut members {
                    m.tracks
                        .retain(|t| t.object != TrackKey::Script(index).id());
                }
                continue;
            };
            tasks.push(tokio::spawn(run_script(
                index,
                run,
                interval,
                timeout,
                track_tx.clone(),
            )));
        }
    }
    if !trackers.files.is_empty() {
        let paths = trackers.files.iter().map(|(_, p, _)| p.clone()).collect();
        let values = trackers.files.iter().map(|(_, _, v)| *v).collect();
        tasks.push(tokio::spawn(watch_files(paths, values, track_tx.clone())));
    }
    if !trackers.interfaces.is_empty() {
        let names = trackers.interfaces.iter().map(|(n, _)| n.clone()).collect();
        let up = trackers.interfaces.iter().map(|(_, u)| *u).collect();
        tasks.push(tokio::spawn(watch_interfaces(names, up, track_tx.clone())));
    }
    Ok(Instances {
        running,
        members,
        trackers,
        tasks,
    })
}

/// What the runtime loop listens to.
struct Channels {
    rx: mpsc::Receiver<Received>,
    track_rx: mpsc::Receiver<TrackUpdate>,
    requests: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
    /// For the receive and tracking tasks of a reload.
    rx_tx: mpsc::Sender<Received>,
    track_tx: mpsc::Sender<TrackUpdate>,
}

/// Carries out what the router's members said, in order.
async fn carry(io: &HostIo, running: &mut [InstanceIo], router: &Router, out: Output) {
    for (i, action) in out {
        let inst = &router.members()[i].instance;
        io.carry_out(&mut running[i], inst, vec![action]).await;
    }
}

/// What tracking makes of each member, to log priority changes tracking causes.
fn effects(router: &Router) -> Vec<Option<Effect>> {
    router.members().iter().map(|m| m.effect).collect()
}

fn log_retracked(running: &[InstanceIo], before: &[Option<Effect>], router: &Router) {
    for ((r, b), m) in running.iter().zip(before).zip(router.members()) {
        if let (Some(Effect::Priority(_)), Some(Effect::Priority(p))) = (b, m.effect) {
            if *b != m.effect {
                info!(instance = %r.name, priority = p, "effective priority changed by tracking");
            }
        }
    }
}

async fn run(mut io: HostIo, built: Instances, mut cfg: KeepalivedConfig, mut ch: Channels) {
    let Instances {
        mut running,
        members,
        mut trackers,
        mut tasks,
    } = built;
    // VIPs left on the interfaces by a run that was killed before it could remove them
    // would answer ARP beside the real master: every instance that does not own its
    // addresses starts without them, as keepalived does.
    for (r, m) in running.iter().zip(&members) {
        if m.instance.config().priority.get() == 255 {
            continue;
        }
        let index = io.interfaces[r.vip_iface].index;
        for v in &r.vips {
            if let Err(e) = io.remove(v, index).await {
                debug!(instance = %r.name, vip = %v.addr, "no stale address removed: {e}");
            }
        }
    }
    let mut router = Router::new(members, trackers.objects());
    let out = router.start(Instant::now());
    carry(&io, &mut running, &router, out).await;
    loop {
        let next = router.poll_timeout();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                let out = router.handle_timeout(Instant::now());
                carry(&io, &mut running, &router, out).await;
            }
            Some(p) = ch.rx.recv() => {
                let datagram = Datagram {
                    iface: p.iface,
                    src: p.src,
                    dst: p.dst,
                    ttl: p.ttl,
                    bytes: &p.message,
                };
                let out = router.handle_datagram(Instant::now(), datagram);
                carry(&io, &mut running, &router, out).await;
            }
            Some(u) = ch.track_rx.recv() => {
                let changed = match u {
                    TrackUpdate::Script(k, ok) => {
                        let (name, state) = &mut trackers.scripts[k];
                        let changed = state.record(ok);
                        if let Some(up) = changed {
                            info!(script = %name, "vrrp_script {}", if up { "succeeded: up" } else { "failed: down" });
                        }
                        changed.map(|up| (TrackKey::Script(k), TrackState::Up(up)))
                    }
                    TrackUpdate::File(k, value) => {
                        let (name, _, v) = &mut trackers.files[k];
                        *v = value;
                        info!(track_file = %name, value, "track_file changed");
                        Some((TrackKey::File(k), TrackState::Value(value)))
                    }
                    TrackUpdate::Interface(k, up) => {
                        let (name, state) = &mut trackers.interfaces[k];
                        *state = up;
                        info!(interface = %name, "tracked interface is {}", if up { "up" } else { "down" });
                        Some((TrackKey::Interface(k), TrackState::Up(up)))
                    }
                };
                if let Some((key, state)) = changed {
                    let before = effects(&router);
                    let out = router.handle_track(Instant::now(), key.id(), state);
                    log_retracked(&running, &before, &router);
                    carry(&io, &mut running, &router, out).await;
                }
            }
            Some(req) = ch.requests.recv() => match req {
                Request::Reload(new_cfg, tx) => {
                    let result = match build(&new_cfg, &mut io, &ch.rx_tx, &ch.track_tx).await {
                        Err(e) => Err(format!("{e:#}")),
                        Ok(b) => {
                            for t in tasks.drain(..) {
                                t.abort();
                            }
                            let old = Old { cfg: &cfg, running, router, trackers: &trackers };
                            let kept = apply_reload(&io, old, &new_cfg, b).await;
                            running = kept.0;
                            router = kept.1;
                            trackers = kept.2;
                            tasks = kept.3;
                            cfg = *new_cfg;
                            Ok(())
                        }
                    };
                    let _ = tx.send(result);
                }
                Request::Status(tx) => {
                    let shown = running
                        .iter()
                        .zip(router.members())
                        .map(|(r, m)| show(&io, r, &m.instance))
                        .collect();
                    let _ = tx.send(shown);
                }
            },
            _ = ch.stop.changed() => {
                let out = router.shutdown(Instant::now());
                carry(&io, &mut running, &router, out).await;
                for name in &io.vmacs {
                    if let Ok(index) = fulcrum_sys::if_index(name) {
                        if let Err(e) = io.handle.link().del(index).execute().await {
                            warn!(vmac = %name, "cannot delete: {e}");
                        }
                    }
                }
                return;
            }
        }
    }
}

/// What makes an instance the same across a reload: its own block, the global settings,
/// its sync group, and the scripts and files it may track.
fn same_instance(old: &KeepalivedConfig, new: &KeepalivedConfig, name: &str) -> bool {
    let part = |c: &KeepalivedConfig| {
        let i = c.vrrp_instances.iter().find(|i| i.name == name)?;
        let group = c
            .vrrp_sync_groups
            .iter()
            .find(|g| g.group.iter().any(|n| n == name));
        Some((
            i.clone(),
            c.global_defs.clone(),
            group.cloned(),
            c.vrrp_scripts.clone(),
            c.track_files.clone(),
        ))
    };
    part(old).is_some() && part(old) == part(new)
}

/// The running set a reload replaces.
struct Old<'a> {
    cfg: &'a KeepalivedConfig,
    running: Vec<InstanceIo>,
    router: Router,
    trackers: &'a Trackers,
}

/// Moves a running set of instances to a rebuilt one: unchanged instances carry their
/// protocol state over, removed and changed ones stop (priority 0, addresses removed),
/// new and changed ones start; tracking carries its last results over by name.
async fn apply_reload(
    io: &HostIo,
    old: Old<'_>,
    new_cfg: &KeepalivedConfig,
    mut b: Instances,
) -> (
    Vec<InstanceIo>,
    Router,
    Trackers,
    Vec<tokio::task::JoinHandle<()>>,
) {
    for (name, state) in &mut b.trackers.scripts {
        if let Some((_, s)) = old.trackers.scripts.iter().find(|(n, _)| n == name) {
            *state = s.clone();
        }
    }
    for (name, up) in &mut b.trackers.interfaces {
        if let Some((_, u)) = old.trackers.interfaces.iter().find(|(n, _)| n == name) {
            *up = *u;
        }
    }
    let now = Instant::now();
    let mut old_running = old.running;
    let mut old_members = old.router.into_members();
    for (r, m) in b.running.iter_mut().zip(&mut b.members) {
        let kept = old_running
            .iter()
            .position(|o| o.name == r.name && same_instance(old.cfg, new_cfg, &r.name));
        match kept {
            Some(k) => {
                let o = old_running.remove(k);
                let om = old_members.remove(k);
                m.instance = om.instance;
                m.effect = om.effect;
                r.last = o.last;
                r.transitions = o.transitions;
                debug!(instance = %r.name, "unchanged by the reload: state kept");
            }
            None => info!(instance = %r.name, "started by the reload"),
        }
    }
    // What is left of the old set was removed or changed: it stops as on shutdown.
    for (mut o, mut om) in old_running.into_iter().zip(old_members) {
        info!(instance = %o.name, "removed or changed by the reload: stopping");
        let acts = om.instance.handle(now, Event::Shutdown);
        io.carry_out(&mut o, &om.instance, acts).await;
    }
    let mut router = Router::new(b.members, b.trackers.objects());
    let out = router.start(now);
    carry(io, &mut b.running, &router, out).await;
    (b.running, router, b.trackers, b.tasks)
}

fn show(io: &HostIo, r: &InstanceIo, inst: &Instance) -> status::VrrpInstance {
    let st = inst.stats();
    status::VrrpInstance {
        name: r.name.clone(),
        interface: io.interfaces[r.iface].name.clone(),
        vrid: inst.config().vrid.get(),
        state: inst.state().name().to_string(),
        priority: inst.config().priority.get(),
        effective_priority: inst.effective_priority(),
        master: inst.master().map(|m| m.0.to_string()),
        virtual_ipaddress: r
            .vips
            .iter()
            .map(|v| match v.prefix {
                Some(p) => format!("{}/{p}", v.addr),
                None => v.addr.to_string(),
            })
            .collect(),
        last_transition: r.last.as_ref().map(|(at, st, why)| status::Transition {
            at: *at,
            state: st.name().to_string(),
            reason: why.clone(),
        }),
        adverts_sent: st.adverts_sent,
        transitions: r.transitions,
        adverts_received: st.adverts_received,
        dropped: st
            .dropped
            .iter()
            .map(|(r, n)| status::Dropped {
                reason: format!("{r:?}").to_lowercase(),
                count: *n,
            })
            .collect(),
    }
}

/// What the runtime touches on the host: interfaces and their sockets, netlink, the VMACs
/// it made, the data plane (no_accept), and the node's events.
struct HostIo {
    interfaces: Vec<Interface>,
    handle: rtnetlink::Handle,
    /// VMAC interfaces this runtime created, deleted when it stops.
    vmacs: Vec<String>,
    /// The data plane, which refuses the VIPs of no_accept masters.
    l4: Option<crate::l4::Handle>,
    events: Events,
}

fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Startup => "started".into(),
        Reason::AddressOwner => "address owner (priority 255)".into(),
        Reason::MasterDown => "no advert within the master-down interval".into(),
        Reason::MasterStopping => "the master advertised priority 0".into(),
        Reason::Preempted { by, priority } => format!("{by} advertised priority {priority}"),
        Reason::Shutdown => "shutting down".into(),
        Reason::Fault => "fault".into(),
        Reason::FaultCleared => "fault cleared".into(),
        Reason::SyncGroup => "its vrrp_sync_group moved".into(),
    }
}

impl HostIo {
    /// Carries out an instance's actions, in order.
    async fn carry_out(&self, r: &mut InstanceIo, inst: &Instance, actions: Vec<Action>) {
        let iface = &self.interfaces[r.iface];
        let vip_iface = &self.interfaces[r.vip_iface];
        for a in actions {
            match a {
                Action::SendAdvert { priority } => {
                    let advert = inst.advert(priority);
                    let src = r.source;
                    let (group, socket) = if src.is_ipv6() {
                        (
                            IpAddr::V6(packet::MULTICAST_V6),
                            iface.v6.as_ref().map(|v| &v.1),
                        )
                    } else {
                        (
                            IpAddr::V4(packet::MULTICAST_V4),
                            iface.v4.as_ref().map(|v| &v.1),
                        )
                    };
                    let Some(socket) = socket else { continue };
                    let targets: Vec<IpAddr> = if r.peers.is_empty() {
                        vec![group]
                    } else {
                        r.peers.clone()
                    };
                    for dst in targets {
                        let mut buf = vec![0u8; advert.message_len()];
                        let n = advert.emit(&mut buf, src, dst, r.mode);
                        let to = match dst {
                            IpAddr::V6(a) => {
                                SocketAddr::V6(SocketAddrV6::new(a, 0, 0, iface.index))
                            }
                            IpAddr::V4(_) => SocketAddr::new(dst, 0),
                        };
                        if let Err(e) = socket.send_to(&buf[..n], to) {
                            warn!(instance = %r.name, %dst, "advert not sent: {e}");
                        }
                    }
                }
                Action::AddAddresses => {
                    for v in &r.vips {
                        let prefix = v.prefix.unwrap_or(if v.addr.is_ipv4() { 32 } else { 128 });
                        let index = match &v.dev {
                            Some(d) => fulcrum_sys::if_index(d).unwrap_or(vip_iface.index),
                            None => vip_iface.index,
                        };
                        let mut req = self.handle.address().add(index, v.addr, prefix);
                        let attrs = &mut req.message_mut().attributes;
                        if let (Some(brd), IpAddr::V4(_)) = (v.brd, v.addr) {
                            attrs.retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
                            attrs.push(AddressAttribute::Broadcast(brd));
                        }
                        if v.no_prefix_route {
                            attrs.push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
                        }
                        match req.execute().await {
                            Ok(()) => {}
                            Err(e) if e.to_string().contains("File exists") => {}
                            Err(e) => warn!(instance = %r.name, vip = %v.addr, "cannot add: {e}"),
                        }
                    }
                    self.refuse(r, true);
                }
                Action::RemoveAddresses => {
                    self.refuse(r, false);
                    for v in &r.vips {
                        if let Err(e) = self.remove(v, vip_iface.index).await {
                            warn!(instance = %r.name, vip = %v.addr, "cannot remove: {e}");
                        }
                    }
                }
                Action::Announce { count } => {
                    for _ in 0..count {
                        for v in &r.vips {
                            let announcer =
                                (&vip_iface.arp, &vip_iface.ndisc, vip_iface.ndisc_source);
                            let mac = vip_iface.mac;
                            let sent = match (v.addr, announcer) {
                                (IpAddr::V4(ip), (Some(arp), _, _)) => {
                                    arp.send(&fulcrum_wire::arp::gratuitous(mac, ip))
                                }
                                (IpAddr::V6(ip), (_, Some(nd), Some(src))) => {
                                    nd.send(&fulcrum_wire::icmp::unsolicited_na(mac, src, ip))
                                }
                                _ => continue,
                            };
                            if let Err(e) = sent {
                                warn!(instance = %r.name, vip = %v.addr, "announcement not sent: {e}");
                            }
                        }
                    }
                }
                Action::Transition { from, to, reason } => {
                    let why = reason_text(&reason);
                    info!(
                        instance = %r.name,
                        from = from.name(),
                        to = to.name(),
                        priority = inst.effective_priority(),
                        "VRRP transition: {why}"
                    );
                    self.events.send(NodeEvent::Vrrp {
                        instance: r.name.clone(),
                        from: from.name().to_string(),
                        to: to.name().to_string(),
                        reason: why.clone(),
                    });
                    r.last = Some((unix_now(), to, why));
                    r.transitions += 1;
                    if let Some(l4) = &self.l4 {
                        l4.vrrp_transition(&r.name, to == State::Master);
                    }
                    self.notify(r, inst, to);
                }
            }
        }
    }

    /// no_accept: the data plane refuses (or accepts again) traffic to the VIPs.
    fn refuse(&self, r: &InstanceIo, on: bool) {
        let (true, Some(l4)) = (r.no_accept, &self.l4) else {
            return;
        };
        for v in &r.vips {
            if let Err(e) = l4.set_no_accept(v.addr, on) {
                warn!(instance = %r.name, vip = %v.addr, "no_accept: {e}");
            }
        }
    }

    async fn remove(&self, v: &VirtualAddress, default_index: u32) -> anyhow::Result<()> {
        let prefix = v.prefix.unwrap_or(if v.addr.is_ipv4() { 32 } else { 128 });
        let index = match &v.dev {
            Some(d) => fulcrum_sys::if_index(d).unwrap_or(default_index),
            None => default_index,
        };
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(v.addr)
            .set_prefix_length_filter(prefix)
            .execute();
        while let Some(msg) = stream.try_next().await? {
            self.handle.address().del(msg).execute().await?;
        }
        Ok(())
    }

    /// keepalived's notify scripts: the state's own script, then `notify` with
    /// INSTANCE, name, state and priority.
    fn notify(&self, r: &InstanceIo, inst: &Instance, state: State) {
        let specific = match state {
            State::Master => &r.notify.master,
            State::Backup => &r.notify.backup,
            State::Fault => &r.notify.fault,
            State::Init => &r.notify.stop,
        };
        let mut runs: Vec<ScriptRun> = Vec::new();
        if let Some(s) = specific {
            runs.extend(ScriptRun::checked(
                s.command.clone(),
                s.user.as_ref(),
                &r.globals,
            ));
        }
        if let Some(s) = &r.notify.any {
            runs.extend(ScriptRun::checked(
                format!(
                    "{} INSTANCE {} {} {}",
                    s.command,
                    r.name,
                    // keepalived's notify states: MASTER, BACKUP, FAULT, STOP.
                    if state == State::Init {
                        "STOP"
                    } else {
                        state.name()
                    },
                    inst.effective_priority()
                ),
                s.user.as_ref(),
                &r.globals,
            ));
        }
        for run in runs {
            let name = r.name.clone();
            tokio::spawn(async move {
                let cmd = run.command.clone();
                match run.command().status().await {
                    Ok(s) if s.success() => {}
                    Ok(s) => warn!(instance = %name, "notify script `{cmd}` exited with {s}"),
                    Err(e) => warn!(instance = %name, "notify script `{cmd}`: {e}"),
                }
            });
        }
    }
}
