//! Connection sync between directors (keepalived's `lvs_sync_daemon`, IPVS's sync daemon):
//! the master sends its connections and persistence templates in IPVS's sync protocol
//! version 1 to the multicast group, and the backups install what they receive, so that
//! when VRRP moves the VIP the new master already holds every connection.
//!
//! As in IPVS, a master daemon and a backup daemon start and stop each on its own
//! (`ipvsadm --start-daemon`, `--stop-daemon`). keepalived.conf's lvs_sync_daemon drives
//! them as keepalived does: with an instance named, the master runs while that instance is
//! MASTER and the backup otherwise; with none, both run. Which connections go when is [`fulcrum_lvs_sync::Master`]'s
//! pure decision; this thread reads the table once a second (less often when the read
//! takes more than a fifth of that), sends, and receives.

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum_dataplane::{abi, Adopted, DataPlane, Method, Synced};
use fulcrum_keepalived_conf::model::KeepalivedConfig;
use fulcrum_lvs_sync::{flags, tcp_state, wire, Master, Record, Seen, Settings};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::table::Table;
use super::Forwarding;

/// Which of IPVS's two sync daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRole {
    Master,
    Backup,
}

/// One sync daemon's settings, as `ipvsadm --start-daemon` gives them to IPVS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    pub interface: String,
    pub syncid: u8,
    /// `--sync-maxlen`; None: IPVS's default.
    pub maxlen: Option<u16>,
    /// IPv4 (224.0.0.81 by default) or IPv6 (given: IPVS has no IPv6 default).
    pub group: IpAddr,
    pub port: u16,
    pub ttl: u8,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            interface: String::new(),
            syncid: 0,
            maxlen: None,
            group: wire::GROUP_V4.into(),
            port: wire::PORT,
            ttl: 1,
        }
    }
}

impl Daemon {
    /// The message size IPVS gives the daemon (what `ipvsadm -L --daemon` shows).
    pub fn maxlen_shown(&self, role: SyncRole, mtu: u32) -> usize {
        wire::daemon_maxlen(
            role == SyncRole::Backup,
            self.maxlen,
            mtu,
            self.group.is_ipv6(),
        )
    }
}

/// The sync daemon keepalived.conf asks for (`lvs_sync_daemon`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub daemon: Daemon,
    /// The VRRP instance whose state makes this director master or backup; None: both.
    pub instance: Option<String>,
}

impl SyncConfig {
    /// keepalived's defaults: the instance's VRID as the sync id (0 with no instance),
    /// group 224.0.0.81, port 8848, TTL 1.
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
            None => wire::GROUP_V4.into(),
            Some(g) if g.is_multicast() => g,
            Some(g) => {
                return Err(format!(
                    "lvs_sync_daemon group {g} is not a multicast group"
                ))
            }
        };
        Ok(Some(SyncConfig {
            daemon: Daemon {
                interface: d.interface.clone(),
                syncid: d.syncid.or(vrid).unwrap_or(0),
                maxlen: d.maxlen,
                port: d.port.unwrap_or(wire::PORT),
                ttl: d.ttl.unwrap_or(1),
                group,
            },
            instance: d.instance.clone(),
        }))
    }
}

/// A running sync daemon, as `ipvsadm -L --daemon` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub interface: String,
    pub syncid: u8,
    pub maxlen: usize,
    pub group: String,
    pub port: u16,
    pub ttl: u8,
}

/// What the sync daemons are doing, for `ipvsadm -L --daemon`, `ctl services` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub master: Option<DaemonStatus>,
    pub backup: Option<DaemonStatus>,
    #[serde(flatten)]
    pub counters: SyncCounters,
}

/// What the sync daemons sent and received since the data plane started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounters {
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

/// The sync daemons, as IPVS holds them (a master and a backup, each started and stopped
/// on its own), behind the runtime's lock. keepalived.conf's lvs_sync_daemon starts and
/// stops them as keepalived does; `ipvsadm --start-daemon`/`--stop-daemon` too.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    keepalived: Option<SyncConfig>,
    pub master: Option<Daemon>,
    pub backup: Option<Daemon>,
    pub counters: SyncCounters,
    /// The master's sync rate (IPVS's sysctls, from global_defs).
    pub settings: Settings,
}

/// The sync rate global_defs asks for (`fulcrum_lvs_sync_*`), IPVS's defaults for the rest.
pub(super) fn settings(k: &KeepalivedConfig) -> Settings {
    let rate = &k.global_defs.lvs_sync_rate;
    let d = Settings::default();
    let (threshold, period) = rate.threshold.unwrap_or((d.threshold, d.period));
    Settings {
        threshold,
        period,
        refresh_period: Duration::from_secs(rate.refresh_period.map_or(0, u64::from)),
        retries: rate.retries.unwrap_or(d.retries),
    }
}

impl SyncState {
    /// A new or reloaded lvs_sync_daemon: what the old one started stops; with an
    /// instance, a backup until VRRP says master; with none, both.
    pub fn configure(&mut self, config: Option<SyncConfig>) {
        if self.keepalived == config {
            return;
        }
        if let Some(old) = self.keepalived.take() {
            if self.master.as_ref() == Some(&old.daemon) {
                self.master = None;
            }
            if self.backup.as_ref() == Some(&old.daemon) {
                self.backup = None;
            }
        }
        if let Some(c) = &config {
            if c.instance.is_none() {
                self.master = Some(c.daemon.clone());
            }
            self.backup = Some(c.daemon.clone());
        }
        self.keepalived = config;
    }

    /// A VRRP instance changed state: keepalived's ipvs_syncd_master / ipvs_syncd_backup.
    pub fn vrrp(&mut self, instance: &str, master: bool) {
        let Some(c) = &self.keepalived else {
            return;
        };
        if c.instance.as_deref() != Some(instance) {
            return;
        }
        if master != self.master.is_some() {
            info!(
                instance,
                role = if master { "master" } else { "backup" },
                "connection sync role"
            );
        }
        let d = c.daemon.clone();
        if master {
            self.backup = None;
            self.master = Some(d);
        } else {
            self.master = None;
            self.backup = Some(d);
        }
    }

    /// The status with the daemons as they run now.
    pub fn status(&self) -> SyncStatus {
        let shown = |d: &Daemon, role| DaemonStatus {
            interface: d.interface.clone(),
            syncid: d.syncid,
            maxlen: d.maxlen_shown(role, mtu(&d.interface)),
            group: d.group.to_string(),
            port: d.port,
            ttl: d.ttl,
        };
        SyncStatus {
            master: self.master.as_ref().map(|d| shown(d, SyncRole::Master)),
            backup: self.backup.as_ref().map(|d| shown(d, SyncRole::Backup)),
            counters: self.counters.clone(),
        }
    }
}

fn mtu(interface: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu"))
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

/// The records the master would send for everything its table holds.
pub(super) fn table_records(table: &Table, dp: &DataPlane) -> Vec<Seen> {
    let mut out = Vec::new();
    let fwd = |m: Method| match m {
        Method::Nat => flags::MASQ,
        Method::Dr => flags::DROUTE | flags::NOOUTPUT,
        Method::Tun(_) => flags::TUNNEL | flags::NOOUTPUT,
    };
    for c in dp.connections().unwrap_or_default() {
        // IPVS's sync format has one address family per record: a connection TUN made
        // across the families (IPv6 in IPv4, IPv4 in IPv6) cannot be told; not sent.
        if c.rip.0.is_ipv4() != c.vip.0.is_ipv4() {
            continue;
        }
        let udp = c.state_code as usize == abi::STATE_UDP;
        let inactive = udp || u16::from(c.state_code) != tcp_state::ESTABLISHED;
        out.push(Seen {
            record: Record {
                protocol: c.proto,
                flags: fwd(c.method) | if inactive { flags::INACTIVE } else { 0 },
                state: if udp { 0 } else { u16::from(c.state_code) },
                client: SocketAddr::new(c.client.0, c.client.1),
                virt: SocketAddr::new(c.vip.0, c.vip.1),
                dest: SocketAddr::new(c.rip.0, c.rip.1),
                fwmark: 0,
                timeout: c.timeout,
                seq: None,
            },
            deadline: Duration::from_nanos(c.deadline),
            packets: c.packets,
        });
    }
    let template_of = table.templates_of();
    for t in dp.templates().unwrap_or_default() {
        let Some((key, persistence, dest)) = template_of(t.service, t.slot) else {
            continue;
        };
        out.push(Seen {
            record: Record {
                protocol: key.proto,
                flags: flags::TEMPLATE | fwd(dest.method) | flags::INACTIVE,
                state: 0,
                client: SocketAddr::new(t.client, 0),
                virt: SocketAddr::new(key.vip, key.port),
                dest: SocketAddr::new(dest.addr, dest.port),
                fwmark: 0,
                timeout: persistence,
                seq: None,
            },
            deadline: Duration::from_nanos(t.deadline),
            packets: 0,
        });
    }
    out
}

/// What a backup does with one record.
fn adopt(table: &Table, dp: &mut DataPlane, r: &Record, status: &mut SyncCounters) {
    let (client, virt, dest) = (r.client, r.virt, r.dest);
    if client.is_ipv4() != virt.is_ipv4() || dest.is_ipv4() != virt.is_ipv4() {
        status.ignored += 1;
        return;
    }
    let Some((service, slot, method)) =
        table.synced_slot(r.protocol, virt.ip(), virt.port(), dest.ip(), dest.port())
    else {
        status.ignored += 1;
        return;
    };
    if r.is_template() {
        let timeout = Duration::from_secs(u64::from(r.timeout.max(1)));
        match dp.adopt_template(service, client.ip(), u32::from(slot), dest.ip(), timeout) {
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
    // 0: this director's own timeout for the state, as IPVS does.
    let timeout = match r.timeout {
        0 => dp.timeouts().unwrap_or(abi::DEFAULT_TIMEOUTS)[state as usize],
        t => t,
    };
    let synced = Synced {
        proto: r.protocol,
        client: (client.ip(), client.port()),
        vip: (virt.ip(), virt.port()),
        rip: (dest.ip(), dest.port()),
        state,
        service,
        slot,
        method,
        timeout,
    };
    match dp.adopt(&synced) {
        Ok(Adopted::Installed) => status.adopted += 1,
        Ok(Adopted::Updated) => status.updated += 1,
        Ok(Adopted::Full) => status.table_full += 1,
        Err(e) => warn!("connection sync: cannot install a connection: {e}"),
    }
}

/// The master's socket: sends to the group from the interface.
struct Sender {
    daemon: Daemon,
    socket: UdpSocket,
    /// The largest datagram: the daemon's maxlen, within what the link carries.
    maxlen: usize,
}

/// The backup's socket: joined to the group on the interface.
struct Receiver {
    daemon: Daemon,
    socket: UdpSocket,
}

fn open_sender(d: &Daemon) -> std::io::Result<Sender> {
    use socket2::{Domain, Protocol, Socket, Type};
    let tx = Socket::new(
        Domain::for_address(SocketAddr::new(d.group, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    tx.bind_device(Some(d.interface.as_bytes()))?;
    if d.group.is_ipv6() {
        // As IPVS's make_send_sock: the interface for multicasts, no loop, the TTL as
        // hops.
        tx.set_multicast_if_v6(fulcrum_sys::if_index(&d.interface)?)?;
        tx.set_multicast_loop_v6(false)?;
        tx.set_multicast_hops_v6(u32::from(d.ttl))?;
    } else {
        tx.set_multicast_loop_v4(false)?;
        tx.set_multicast_ttl_v4(u32::from(d.ttl))?;
    }
    let mtu = mtu(&d.interface);
    let maxlen = wire::datagram_limit(
        d.maxlen_shown(SyncRole::Master, mtu),
        mtu,
        d.group.is_ipv6(),
    );
    Ok(Sender {
        daemon: d.clone(),
        socket: tx.into(),
        maxlen,
    })
}

fn open_receiver(d: &Daemon) -> std::io::Result<Receiver> {
    use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
    let index = fulcrum_sys::if_index(&d.interface)?;
    let at = SocketAddr::new(d.group, d.port);
    let rx = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
    rx.set_reuse_address(true)?;
    rx.bind_device(Some(d.interface.as_bytes()))?;
    match d.group {
        IpAddr::V4(g) => {
            rx.bind(&at.into())?;
            rx.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(index))?;
        }
        IpAddr::V6(g) => {
            rx.set_only_v6(true)?;
            rx.bind(&SocketAddr::V6(SocketAddrV6::new(g, d.port, 0, index)).into())?;
            rx.join_multicast_v6(&g, index)?;
        }
    }
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(Receiver {
        daemon: d.clone(),
        socket: rx.into(),
    })
}

/// Keeps a socket open for the daemon that should run: reopened when its settings change,
/// closed when it stops; a failure is logged and retried every 5 s (the interface may
/// come later).
fn keep<S>(
    what: &str,
    slot: &mut Option<S>,
    wanted: Option<&Daemon>,
    current: impl Fn(&S) -> &Daemon,
    open: impl Fn(&Daemon) -> std::io::Result<S>,
    failed: &mut Option<(Daemon, Instant)>,
) -> bool {
    if slot.as_ref().map(&current) == wanted {
        return false;
    }
    *slot = None;
    let Some(d) = wanted else {
        info!("connection sync: {what} daemon stopped");
        return true;
    };
    let retry = failed
        .as_ref()
        .is_none_or(|(f, at)| f != d || at.elapsed() >= Duration::from_secs(5));
    if !retry {
        return false;
    }
    match open(d) {
        Ok(s) => {
            info!(
                interface = %d.interface,
                syncid = d.syncid,
                group = %d.group,
                port = d.port,
                "connection sync: {what} daemon started"
            );
            *failed = None;
            *slot = Some(s);
        }
        Err(e) => {
            warn!(interface = %d.interface, "connection sync: {what} daemon: {e}");
            *failed = Some((d.clone(), Instant::now()));
        }
    }
    true
}

/// The sync thread: receives while a backup runs, sends once a second while a master
/// runs.
pub(super) fn run(shared: Arc<Mutex<Forwarding>>, stop: Arc<AtomicBool>) {
    let mut sender: Option<Sender> = None;
    let mut receiver: Option<Receiver> = None;
    let (mut send_failed, mut receive_failed) = (None, None);
    let mut master = Master::default();
    let mut ticked = Instant::now();
    let mut read_cost = Duration::ZERO;
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (want_master, want_backup) = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            (s.sync.master.clone(), s.sync.backup.clone())
        };
        if keep(
            "master",
            &mut sender,
            want_master.as_ref(),
            |s| &s.daemon,
            open_sender,
            &mut send_failed,
        ) {
            // A new master sends everything it holds.
            master.reset();
        }
        keep(
            "backup",
            &mut receiver,
            want_backup.as_ref(),
            |r| &r.daemon,
            open_receiver,
            &mut receive_failed,
        );
        // Receive for up to 100 ms.
        match &receiver {
            Some(r) => match r.socket.recv_from(&mut buf) {
                Ok((n, _)) => receive(&shared, &buf[..n], r.daemon.syncid),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    warn!("connection sync: receiving: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            },
            None => std::thread::sleep(Duration::from_millis(100)),
        }
        let Some(tx) = &sender else {
            continue;
        };
        // Once a second, or less often when reading the table takes long (a large
        // table): the master spends at most a fifth of a core on it.
        if ticked.elapsed() < Duration::from_secs(1).max(read_cost * 5) {
            continue;
        }
        ticked = Instant::now();
        let records = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            master.settings = s.sync.settings;
            master.tick(start.elapsed(), table_records(&s.table, &s.dp))
        };
        read_cost = ticked.elapsed();
        if records.is_empty() {
            continue;
        }
        let to = match tx.daemon.group {
            IpAddr::V4(g) => SocketAddr::V4(SocketAddrV4::new(g, tx.daemon.port)),
            // A link-scope group needs its interface.
            IpAddr::V6(g) => SocketAddr::V6(SocketAddrV6::new(
                g,
                tx.daemon.port,
                0,
                fulcrum_sys::if_index(&tx.daemon.interface).unwrap_or(0),
            )),
        };
        let datagrams = wire::encode(tx.daemon.syncid, &records, tx.maxlen);
        let mut sent = 0;
        for d in &datagrams {
            match tx.socket.send_to(d, to) {
                Ok(_) => sent += 1,
                Err(e) => warn!("connection sync: sending: {e}"),
            }
        }
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.sync.counters.sent_messages += sent;
        s.sync.counters.sent_records += records.len() as u64;
    }
}

fn receive(shared: &Arc<Mutex<Forwarding>>, datagram: &[u8], syncid: u8) {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let Forwarding {
        dp, table, sync, ..
    } = &mut *s;
    let status = &mut sync.counters;
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
