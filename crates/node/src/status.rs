//! What a node shows of itself, as typed snapshots: the one input of the control socket,
//! the metrics and the dashboard. Each serializes to the JSON the control protocol has
//! always carried (docs/control-protocol.md), and reads back from it, so the clients of the
//! socket (`fulcrum ctl`, `fulcrum ipvsadm`) are typed too; JSON exists only at the edge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `ctl status`: the daemon and the configuration in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    pub version: String,
    pub pid: u32,
    /// Unix time.
    pub started_at: u64,
    pub config: ConfigState,
    pub counts: Counts,
}

/// The configuration in force, and how reloads went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    pub keepalived: Option<String>,
    pub nginx: Option<String>,
    /// The configuration's hash, 16 hex digits.
    pub hash: String,
    /// Unix time.
    pub loaded_at: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_error: Option<String>,
}

/// How much the configuration holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub vrrp_instances: usize,
    pub virtual_servers: usize,
    pub real_servers: usize,
    pub upstreams: usize,
    pub servers: usize,
}

/// `ctl vrrp`: one VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// INIT, BACKUP, MASTER or FAULT.
    pub state: String,
    pub priority: u8,
    pub effective_priority: u8,
    pub master: Option<String>,
    pub virtual_ipaddress: Vec<String>,
    pub last_transition: Option<Transition>,
    pub adverts_sent: u64,
    pub transitions: u64,
    pub adverts_received: u64,
    pub dropped: Vec<Dropped>,
}

/// An instance's last state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Unix time.
    pub at: u64,
    pub state: String,
    pub reason: String,
}

/// Adverts dropped for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub reason: String,
    pub count: u64,
}

/// `ctl health`: one virtual server's checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// `ADDR:PORT PROTO`, `fwmark N` or `group NAME`, as logs name it.
    pub virtual_server: String,
    pub quorum: u32,
    pub hysteresis: u32,
    pub has_quorum: bool,
    pub live_weight: u64,
    pub sorry_server: Option<SorryServer>,
    pub real_servers: Vec<ServerHealth>,
}

/// Where a server belongs in the pool now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    #[serde(rename = "in")]
    pub is_in: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A virtual server's sorry server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SorryServer {
    pub address: String,
    pub membership: Option<Member>,
}

/// One real server's checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    pub address: String,
    pub alive: bool,
    pub weight: u32,
    pub membership: Member,
    pub checkers: Vec<CheckerHealth>,
    /// Unix time of its last up/down change (when checking started, until one).
    #[serde(default)]
    pub changed_at: u64,
}

/// One checker of a real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerHealth {
    /// TCP_CHECK, HTTP_GET, ...
    pub kind: String,
    pub target: String,
    /// `up`, `down` or `not run`.
    pub state: String,
    pub checks: u64,
    pub failures: u64,
    pub last_ok: Option<bool>,
    pub last_reason: Option<String>,
    pub latency_us: Option<u64>,
    /// Unix time.
    pub last_check_at: Option<u64>,
    /// Unix time.
    pub changed_at: u64,
    pub transitions: u64,
}

/// `ctl upstreams`: one peer of an nginx upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamPeer {
    pub upstream: String,
    /// The `server` line's name.
    pub server: String,
    pub address: String,
    pub backup: bool,
    pub weight: i64,
    pub effective_weight: i64,
    pub down: bool,
    pub check_down: bool,
    pub drained: bool,
    pub conns: u32,
    pub fails: u32,
    pub max_fails: u32,
}

impl UpstreamPeer {
    /// `drained`, `down` (marked down, or by its health check) or `up`.
    pub fn state(&self) -> &'static str {
        if self.drained {
            "drained"
        } else if self.down || self.check_down {
            "down"
        } else {
            "up"
        }
    }
}

/// `ipvs`: the layer-4 table as `ipvsadm -L` reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// Resolved DR neighbours, `IP MAC ifN`.
    #[serde(default)]
    pub neighbours: Vec<String>,
    /// Packets the XDP program saw, by the reason for its verdict.
    #[serde(default)]
    pub packets: BTreeMap<String, u64>,
    /// The connection table's size.
    pub size: u32,
    /// The kernel memory the data plane's maps hold (their memlock), in bytes.
    #[serde(default)]
    pub memory: u64,
    pub services: Vec<IpvsService>,
    pub connections: Vec<IpvsConnection>,
    pub templates: Vec<IpvsConnection>,
    pub timeout: Timeouts,
    #[serde(default)]
    pub interfaces: Vec<XdpInterface>,
    /// The connection sync daemon, when keepalived.conf has lvs_sync_daemon.
    #[serde(default)]
    pub sync: Option<crate::l4::sync::SyncStatus>,
}

/// ipvsadm's `--timeout`, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcpfin: u32,
    pub udp: u32,
}

/// An interface the data plane is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpInterface {
    pub name: String,
    /// native or generic.
    pub mode: String,
}

/// Counters of a service or real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

/// IPVS's estimated rates, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A virtual service as installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpvsService {
    /// TCP or UDP.
    pub protocol: String,
    pub address: String,
    pub port: u16,
    pub scheduler: String,
    /// Persistence timeout in seconds.
    pub persistent: Option<u32>,
    pub netmask: Option<String>,
    pub ops: bool,
    /// Scheduler flags as ipvsadm names them (`sh-fallback`, `sh-port`, `mh-...`, or
    /// `flag-N` for a scheduler that has none), in ipvsadm's order.
    #[serde(default)]
    pub flags: Vec<String>,
    pub stats: Traffic,
    pub rate: Rates,
    pub dests: Vec<IpvsDest>,
}

/// A real server as installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpvsDest {
    pub address: String,
    pub port: u16,
    /// Masq, Route or Tunnel, as ipvsadm prints it.
    pub forward: String,
    /// A Tunnel's type, port (gue) and checksum option.
    #[serde(default)]
    pub tunnel: Option<IpvsTunnel>,
    pub weight: u32,
    #[serde(default)]
    pub u_threshold: u32,
    #[serde(default)]
    pub l_threshold: u32,
    pub active: u64,
    pub inactive: u64,
    pub stats: Traffic,
    pub rate: Rates,
}

/// A TUN real server's tunnel, as ipvsadm names its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsTunnel {
    /// ipip, gue or gre.
    pub kind: String,
    /// gue's UDP port; 0 otherwise.
    pub port: u16,
    /// nocsum, csum or remcsum.
    pub csum: String,
}

/// A connection (or persistence template) of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsConnection {
    pub protocol: String,
    pub expires_ms: u64,
    pub state: String,
    pub source: String,
    #[serde(rename = "virtual")]
    pub virtual_: String,
    pub destination: String,
}

/// What `drain` and `undrain` touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drained {
    pub real_servers: usize,
    pub upstream_peers: usize,
}

/// The daemon's process, as Prometheus client libraries report their own (`process_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    /// Unix time.
    pub start_time_seconds: f64,
}

impl Process {
    /// This process, from /proc/self (zeros where a file cannot be read).
    pub fn read() -> Process {
        let mut p = Process::default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // The fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, so utime (14) is at index 11 here.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let ticks = fulcrum_sys::clock_ticks_per_second() as f64;
        p.cpu_seconds = (field(11) + field(12)) as f64 / ticks;
        p.virtual_bytes = field(20);
        p.resident_bytes = field(21) * fulcrum_sys::page_size();
        let boot = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        p.start_time_seconds = boot as f64 + field(19) as f64 / ticks;
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        p.max_fds = std::fs::read_to_string("/proc/self/limits")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .unwrap_or(0);
        p
    }
}

/// Everything at once: what a metrics scrape and the dashboard read.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub daemon: Daemon,
    pub vrrp: Vec<VrrpInstance>,
    pub health: Vec<ServiceHealth>,
    pub l4: Listing,
    pub upstreams: Vec<UpstreamPeer>,
    /// The layer-7 proxy's counters, while it runs.
    pub l7: Option<fulcrum_proxy::stats::Counts>,
    pub process: Process,
    /// BGP announcements, with keepalived.conf's fulcrum_bgp.
    pub bgp: Option<Bgp>,
}

/// `ctl bgp`: what this director announces by BGP, and its sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bgp {
    pub daemon: String,
    pub local_as: u32,
    /// The tap device the announcements hang on, and whether it exists.
    pub liveness_interface: String,
    pub liveness_up: bool,
    pub draining: bool,
    /// The drain has withdrawn every VIP.
    pub drained: bool,
    pub sessions: Vec<BgpSession>,
    pub routes: Vec<BgpRoute>,
    /// The last failure to hand BIRD its configuration, while it lasts.
    pub last_error: Option<String>,
}

/// A BGP session as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSession {
    pub neighbor: String,
    pub remote_as: u32,
    /// BGP's state (Established, Active, Connect, ...), or "unknown".
    pub state: String,
    pub established: bool,
    pub since: String,
}

/// A VIP's route: announced or not, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoute {
    pub vip: String,
    pub announced: bool,
    /// Extra copies of the local AS (a drain).
    pub prepend: u8,
    pub why: String,
    /// Active (ESTABLISHED) connections to the VIP through this director.
    #[serde(default)]
    pub active: u64,
}
