//! Connection sync between directors (keepalived's `lvs_sync_daemon`, IPVS's sync daemon):
//! the master sends its connections and persistence templates in IPVS's sync protocol
//! version 1 to the multicast group, and the backups install what they receive, so that
//! when VRRP moves the VIP the new master already holds every connection.
//!
//! With an instance named, the director is the sync master while that instance is
//! MASTER and a backup otherwise (keepalived switches IPVS's daemons the same way); with
//! none, it is both at once. Which connections go when is [`fulcrum_lvs_sync::Master`]'s
//! pure decision; this thread reads the table once a second (less often when the read
//! takes more than a fifth of that), sends, and receives.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum_dataplane::{abi, Adopted, DataPlane, Method, Synced};
use fulcrum_keepalived_conf::model::KeepalivedConfig;
use fulcrum_lvs_sync::{flags, tcp_state, wire, Master, Record, Seen};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::table::Table;
use super::Forwarding;

/// The sync daemon's settings, resolved from keepalived.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub interface: String,
    /// The VRRP instance whose state makes this director master or backup.
    pub instance: Option<String>,
    pub syncid: u8,
    pub maxlen: Option<u16>,
    pub port: u16,
    pub ttl: u8,
    pub group: Ipv4Addr,
    /// IPVS's sync_refresh_period (0: half of each state's timeout).
    pub refresh_period: Duration,
}

impl SyncConfig {
    /// keepalived's defaults: the instance's VRID as the sync id (0 with no instance),
    /// group 224.0.0.81, port 8848, TTL 1. An IPv6 group is refused: the data plane
    /// carries IPv4 connections only.
    pub fn from_keepalived(k: &KeepalivedConfig) -> Result<Option<SyncConfig>, String> {
        let Some(d) = &k.global_defs.lvs_sync_daemon else {
            return Ok(None);
        };
        let vrid = d.instance.as_ref().and_then(|name| {
            k.vrrp_instances
                .iter()
                .find(|i| &i.name == name)
                .map(|i| i.virtual_router_id.get())
        });
        let group = match d.group {
            None => wire::GROUP_V4,
            Some(std::net::IpAddr::V4(g)) => g,
            Some(g) => {
                return Err(format!(
                    "lvs_sync_daemon group {g}: only IPv4 groups are supported"
                ))
            }
        };
        Ok(Some(SyncConfig {
            interface: d.interface.clone(),
            instance: d.instance.clone(),
            syncid: d.syncid.or(vrid).unwrap_or(0),
            maxlen: d.maxlen,
            port: d.port.unwrap_or(wire::PORT),
            ttl: d.ttl.unwrap_or(1),
            group,
            refresh_period: Duration::ZERO,
        }))
    }
}

/// What the sync daemon is doing, for `ctl services` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub interface: String,
    pub syncid: u8,
    pub group: String,
    pub master: bool,
    pub backup: bool,
    pub sent_messages: u64,
    pub sent_records: u64,
    pub received_messages: u64,
    /// Records installed as new connections or templates.
    pub adopted: u64,
    /// Records that brought a held connection up to date.
    pub updated: u64,
    /// Records for no service or real server of this director, of another sync id,
    /// IPv6, or skipped as IPVS skips them.
    pub ignored: u64,
    /// Datagrams dropped whole (malformed, wrong version).
    pub malformed: u64,
    /// Records refused because the connection table is full.
    pub table_full: u64,
}

/// The sync daemon's share of the layer-4 state, behind the runtime's lock.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    pub config: Option<SyncConfig>,
    pub master: bool,
    pub backup: bool,
    pub status: SyncStatus,
}

impl SyncState {
    /// A new or reloaded configuration: with an instance, a backup until VRRP says
    /// master; with none, both.
    pub fn configure(&mut self, config: Option<SyncConfig>) {
        if self.config == config {
            return;
        }
        let both = config.as_ref().is_some_and(|c| c.instance.is_none());
        self.master = both;
        self.backup = config.is_some();
        if let Some(c) = &config {
            self.status.interface = c.interface.clone();
            self.status.syncid = c.syncid;
            self.status.group = format!("{}:{}", c.group, c.port);
        }
        self.config = config;
    }

    /// A VRRP instance changed state.
    pub fn vrrp(&mut self, instance: &str, master: bool) {
        if self
            .config
            .as_ref()
            .and_then(|c| c.instance.as_deref())
            .is_some_and(|i| i == instance)
        {
            if self.master != master {
                info!(
                    instance,
                    role = if master { "master" } else { "backup" },
                    "connection sync role"
                );
            }
            self.master = master;
            self.backup = !master;
        }
    }
}

/// The records the master would send for everything its table holds.
pub(super) fn table_records(table: &Table, dp: &DataPlane) -> Vec<Seen> {
    let mut out = Vec::new();
    let inet = |a: Ipv4Addr, p: u16| SocketAddr::V4(SocketAddrV4::new(a, p));
    let fwd = |m: Method| match m {
        Method::Nat => flags::MASQ,
        Method::Dr => flags::DROUTE | flags::NOOUTPUT,
    };
    for c in dp.connections().unwrap_or_default() {
        let udp = c.state_code as usize == abi::STATE_UDP;
        let inactive = udp || u16::from(c.state_code) != tcp_state::ESTABLISHED;
        out.push(Seen {
            record: Record {
                protocol: c.proto,
                flags: fwd(c.method) | if inactive { flags::INACTIVE } else { 0 },
                state: if udp { 0 } else { u16::from(c.state_code) },
                client: inet(c.client.0, c.client.1),
                virt: inet(c.vip.0, c.vip.1),
                dest: inet(c.rip.0, c.rip.1),
                fwmark: 0,
                timeout: c.timeout,
                seq: None,
            },
            deadline: Duration::from_nanos(c.deadline),
        });
    }
    for t in dp.templates().unwrap_or_default() {
        let Some((key, persistence, dest)) = table.template_of(t.service, t.slot) else {
            continue;
        };
        out.push(Seen {
            record: Record {
                protocol: key.proto,
                flags: flags::TEMPLATE | fwd(dest.method) | flags::INACTIVE,
                state: 0,
                client: inet(t.client, 0),
                virt: inet(key.vip, key.port),
                dest: inet(dest.addr, dest.port),
                fwmark: 0,
                timeout: persistence,
                seq: None,
            },
            deadline: Duration::from_nanos(t.deadline),
        });
    }
    out
}

/// What a backup does with one record.
fn adopt(table: &Table, dp: &mut DataPlane, r: &Record, status: &mut SyncStatus) {
    let (SocketAddr::V4(client), SocketAddr::V4(virt), SocketAddr::V4(dest)) =
        (r.client, r.virt, r.dest)
    else {
        status.ignored += 1;
        return;
    };
    let Some((service, slot, method)) =
        table.synced_slot(r.protocol, *virt.ip(), virt.port(), *dest.ip(), dest.port())
    else {
        status.ignored += 1;
        return;
    };
    if r.is_template() {
        let timeout = Duration::from_secs(u64::from(r.timeout.max(1)));
        match dp.adopt_template(service, *client.ip(), u32::from(slot), *dest.ip(), timeout) {
            Ok(()) => status.adopted += 1,
            Err(e) => {
                warn!("connection sync: cannot install a persistence template: {e}");
                status.table_full += 1;
            }
        }
        return;
    }
    let state = if r.protocol == 17 {
        abi::STATE_UDP as u8
    } else {
        r.state as u8
    };
    let timeouts = dp.timeouts().unwrap_or(abi::DEFAULT_TIMEOUTS);
    let synced = Synced {
        proto: r.protocol,
        client: (*client.ip(), client.port()),
        vip: (*virt.ip(), virt.port()),
        rip: (*dest.ip(), dest.port()),
        state,
        service,
        slot,
        method,
        // 0: this director's own timeout for the state, as IPVS does.
        timeout: if r.timeout > 0 {
            r.timeout
        } else {
            timeouts[state as usize]
        },
    };
    match dp.adopt(&synced) {
        Ok(Adopted::Installed) => status.adopted += 1,
        Ok(Adopted::Updated) => status.updated += 1,
        Ok(Adopted::Full) => status.table_full += 1,
        Err(e) => warn!("connection sync: cannot install a connection: {e}"),
    }
}

struct Sockets {
    config: SyncConfig,
    rx: UdpSocket,
    tx: UdpSocket,
    maxlen: usize,
}

fn open(c: &SyncConfig) -> std::io::Result<Sockets> {
    use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
    let index = fulcrum_sys::if_index(&c.interface)?;
    let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    rx.set_reuse_address(true)?;
    rx.bind_device(Some(c.interface.as_bytes()))?;
    rx.bind(&SocketAddr::V4(SocketAddrV4::new(c.group, c.port)).into())?;
    rx.join_multicast_v4_n(&c.group, &InterfaceIndexOrAddress::Index(index))?;
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    tx.bind_device(Some(c.interface.as_bytes()))?;
    tx.set_multicast_loop_v4(false)?;
    tx.set_multicast_ttl_v4(u32::from(c.ttl))?;
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", c.interface))
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500);
    Ok(Sockets {
        config: c.clone(),
        rx: rx.into(),
        tx: tx.into(),
        maxlen: wire::maxlen(c.maxlen, mtu),
    })
}

/// The sync thread: (re)opens its sockets when the configuration changes, receives while
/// a backup, and sends once a second while the master.
pub(super) fn run(shared: Arc<Mutex<Forwarding>>, stop: Arc<AtomicBool>) {
    let mut sockets: Option<Sockets> = None;
    let mut failed: Option<(SyncConfig, Instant)> = None;
    let mut master = Master::default();
    let mut ticked = Instant::now();
    let mut read_cost = Duration::ZERO;
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (config, is_master, is_backup) = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            (s.sync.config.clone(), s.sync.master, s.sync.backup)
        };
        if sockets.as_ref().map(|s| &s.config) != config.as_ref() {
            sockets = None;
            master = Master::new(config.as_ref().map_or(Duration::ZERO, |c| c.refresh_period));
            if let Some(c) = &config {
                // A failure is retried every 5 s (the interface may come later).
                let retry = failed
                    .as_ref()
                    .is_none_or(|(f, at)| f != c || at.elapsed() >= Duration::from_secs(5));
                if retry {
                    match open(c) {
                        Ok(s) => {
                            info!(
                                interface = %c.interface,
                                syncid = c.syncid,
                                group = %c.group,
                                port = c.port,
                                maxlen = s.maxlen,
                                "connection sync daemon started"
                            );
                            failed = None;
                            sockets = Some(s);
                        }
                        Err(e) => {
                            warn!(interface = %c.interface, "connection sync daemon: {e}");
                            failed = Some((c.clone(), Instant::now()));
                        }
                    }
                }
            }
        }
        let Some(socks) = &sockets else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        // Receive for up to 100 ms (drained and dropped while not a backup).
        match socks.rx.recv_from(&mut buf) {
            Ok((n, _)) if is_backup => receive(&shared, &buf[..n], socks.config.syncid),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                warn!("connection sync: receiving: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !is_master {
            // A new master sends everything it holds.
            master.reset();
            continue;
        }
        // Once a second, or less often when reading the table takes long (a large
        // table): the master spends at most a fifth of a core on it.
        if ticked.elapsed() < Duration::from_secs(1).max(read_cost * 5) {
            continue;
        }
        ticked = Instant::now();
        let records = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            master.tick(start.elapsed(), table_records(&s.table, &s.dp))
        };
        read_cost = ticked.elapsed();
        if records.is_empty() {
            continue;
        }
        let to = SocketAddr::V4(SocketAddrV4::new(socks.config.group, socks.config.port));
        let datagrams = wire::encode(socks.config.syncid, &records, socks.maxlen);
        let mut sent = 0;
        for d in &datagrams {
            match socks.tx.send_to(d, to) {
                Ok(_) => sent += 1,
                Err(e) => warn!("connection sync: sending: {e}"),
            }
        }
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.sync.status.sent_messages += sent;
        s.sync.status.sent_records += records.len() as u64;
    }
}

fn receive(shared: &Arc<Mutex<Forwarding>>, datagram: &[u8], syncid: u8) {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let Forwarding {
        dp, table, sync, ..
    } = &mut *s;
    let status = &mut sync.status;
    let m = match wire::decode(datagram) {
        Ok(m) => m,
        Err(e) => {
            status.malformed += 1;
            tracing::debug!("connection sync: datagram dropped: {e}");
            return;
        }
    };
    status.received_messages += 1;
    // IPVS's backup takes any sync id when its own is 0.
    if syncid != 0 && m.syncid != syncid {
        status.ignored += m.records.len() as u64;
        return;
    }
    status.ignored += m.skipped as u64;
    for r in &m.records {
        adopt(table, dp, r, status);
    }
}
