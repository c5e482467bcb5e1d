//! The typed model of a keepalived.conf: what the file says, checked and in range, with no
//! source locations (those live in the diagnostics). Defaults are keepalived's; an `Option`
//! is `None` where keepalived's behaviour depends on whether the keyword was written.

use std::net::{IpAddr, Ipv4Addr};

use fulcrum_types::{
    ForwardMethod, Priority, Protocol, Scheduler, Timer, TrackWeight, Vrid, Weight,
};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeepalivedConfig {
    pub global_defs: GlobalDefs,
    pub vrrp_scripts: Vec<VrrpScript>,
    pub track_files: Vec<TrackFile>,
    pub vrrp_sync_groups: Vec<SyncGroup>,
    pub vrrp_instances: Vec<VrrpInstance>,
    pub virtual_server_groups: Vec<VirtualServerGroup>,
    pub virtual_servers: Vec<VirtualServer>,
    /// `fulcrum_bgp { ... }`: Fulcrum's own block (keepalived logs it as unknown).
    pub bgp: Option<Bgp>,
}

/// `fulcrum_bgp`: the VIPs this director announces by BGP, through BIRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    /// `daemon bird`: the only one for now.
    pub daemon: String,
    /// `control PATH`: birdc's socket (default /run/bird/bird.ctl).
    pub control: Option<String>,
    /// `config_file PATH`: the file Fulcrum writes and bird.conf includes (default
    /// /etc/bird/fulcrum.conf).
    pub config_file: Option<String>,
    /// `local_as N`.
    pub local_as: u32,
    pub neighbors: Vec<BgpNeighbor>,
    /// `vips ADDR...`: the VIPs announced; empty, every virtual_server address.
    pub vips: Vec<IpAddr>,
    /// `med N`.
    pub med: Option<u32>,
    /// `community A:B...`.
    pub communities: Vec<(u16, u16)>,
    /// `drain_prepend N` (default 3).
    pub drain_prepend: Option<u8>,
    /// `drain_timeout SECONDS` (default 60).
    pub drain_timeout: Option<u32>,
    /// `liveness_interface NAME` (default fulcrum-bgp).
    pub liveness_interface: Option<String>,
}

impl Bgp {
    /// The tap device the announcements hang on.
    pub fn liveness(&self) -> &str {
        self.liveness_interface.as_deref().unwrap_or("fulcrum-bgp")
    }

    /// birdc's control socket.
    pub fn control(&self) -> &str {
        self.control.as_deref().unwrap_or("/run/bird/bird.ctl")
    }

    /// The file Fulcrum writes for bird.conf to include.
    pub fn config_file(&self) -> &str {
        self.config_file
            .as_deref()
            .unwrap_or("/etc/bird/fulcrum.conf")
    }
}

/// `neighbor ADDR as N [local ADDR] [port N] [hold_time N] [multihop N] [bfd]`.
pub use fulcrum_types::BgpNeighbor;

/// A user, and optionally a group, that a script runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptUser {
    pub user: String,
    pub group: Option<String>,
}

/// A script to run: its command line as written (one quoted word, or the words of the line)
/// and the user it runs as, when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub command: String,
    pub user: Option<ScriptUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalDefs {
    pub router_id: Option<String>,
    pub notification_email: Vec<String>,
    pub notification_email_from: Option<String>,
    pub smtp_server: Option<(String, Option<u16>)>,
    pub smtp_connect_timeout: Option<Timer>,
    pub enable_script_security: bool,
    pub script_user: Option<ScriptUser>,
    pub vrrp_version: Option<VrrpVersion>,
    pub vrrp_strict: bool,
    pub vrrp_mcast_group4: Option<Ipv4Addr>,
    pub vrrp_mcast_group6: Option<IpAddr>,
    pub vrrp_garp_master_delay: Option<Timer>,
    pub vrrp_garp_master_repeat: Option<u32>,
    pub vrrp_garp_master_refresh: Option<Timer>,
    pub vrrp_garp_master_refresh_repeat: Option<u32>,
    pub vrrp_garp_interval: Option<Timer>,
    pub vrrp_gna_interval: Option<Timer>,
    pub vrrp_skip_check_adv_addr: bool,
    pub vrrp_check_unicast_src: bool,
    pub vrrp_notify_fifo: Option<String>,
    pub notify_fifo: Option<String>,
    pub default_interface: Option<String>,
    /// `lvs_timeouts tcp N tcpfin N udp N`.
    pub lvs_timeouts: LvsTimeouts,
    pub checker_log_all_failures: bool,
    /// `fulcrum_xdp_interfaces IF...`: Fulcrum's own keyword (keepalived logs it as
    /// unknown and goes on): the interfaces the XDP data plane attaches to; empty means
    /// every interface of the namespace but loopback.
    pub xdp_interfaces: Vec<String>,
    /// `fulcrum_metrics ADDR:PORT`: Fulcrum's own keyword: where the daemon serves
    /// Prometheus metrics (`fulcrum run --metrics` overrides it).
    pub metrics: Option<std::net::SocketAddr>,
    /// `lvs_sync_daemon IFACE [inst] VRRP_INSTANCE [id N] [maxlen N] [port N] [ttl N]
    /// [group ADDR]`: IPVS's connection synchronisation between directors.
    pub lvs_sync_daemon: Option<LvsSyncDaemon>,
    /// IPVS's sysctls for the sync rate, as Fulcrum's own keywords (keepalived logs them
    /// as unknown and goes on; with IPVS they are `net.ipv4.vs.*` sysctls).
    pub lvs_sync_rate: LvsSyncRate,
}

/// `fulcrum_lvs_sync_threshold T P`, `fulcrum_lvs_sync_refresh_period SECONDS`,
/// `fulcrum_lvs_sync_retries N`: IPVS's `sync_threshold`, `sync_refresh_period` and
/// `sync_retries` (unset: IPVS's defaults, 3 50, 0 and 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LvsSyncRate {
    /// (threshold, period): the threshold is below the period, or the period is 0.
    pub threshold: Option<(u16, u16)>,
    pub refresh_period: Option<u32>,
    /// 0 to 3.
    pub retries: Option<u8>,
}

/// IPVS's connection sync daemon as keepalived drives it: the master of `instance` sends
/// its connections, the others receive them; with no instance, every director does both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvsSyncDaemon {
    pub interface: String,
    pub instance: Option<String>,
    /// `id N`: the sync id in every message (default: the instance's VRID, else 0).
    pub syncid: Option<u8>,
    /// `maxlen N`: the largest message, in bytes (default: from the interface's MTU).
    pub maxlen: Option<u16>,
    /// `port N` (default 8848).
    pub port: Option<u16>,
    /// `ttl N` (default 1).
    pub ttl: Option<u8>,
    /// `group ADDR` (default 224.0.0.81, or ff02::81 for IPv6).
    pub group: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LvsTimeouts {
    pub tcp: Option<u32>,
    pub tcpfin: Option<u32>,
    pub udp: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VrrpVersion {
    V2,
    V3,
}

impl VrrpVersion {
    pub fn number(self) -> u8 {
        match self {
            VrrpVersion::V2 => 2,
            VrrpVersion::V3 => 3,
        }
    }
}

/// `vrrp_script NAME { ... }`: a check whose result moves priorities or faults instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpScript {
    pub name: String,
    pub script: Script,
    pub interval: Timer,
    pub timeout: Option<Timer>,
    pub weight: TrackWeight,
    pub weight_reverse: bool,
    pub rise: u32,
    pub fall: u32,
    pub init_fail: bool,
}

impl VrrpScript {
    pub fn new(name: &str, command: &str) -> VrrpScript {
        VrrpScript {
            name: name.to_string(),
            script: Script {
                command: command.to_string(),
                user: None,
            },
            interval: Timer::from_secs(1),
            timeout: None,
            weight: TrackWeight::ZERO,
            weight_reverse: false,
            rise: 1,
            fall: 1,
            init_fail: false,
        }
    }
}

/// `track_file NAME { file PATH; weight N [reverse]; init_file [VALUE] [overwrite] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFile {
    pub name: String,
    pub file: String,
    pub weight: Option<(TrackWeight, bool)>,
    pub init_file: Option<(Option<i64>, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notify {
    pub master: Option<Script>,
    pub backup: Option<Script>,
    pub fault: Option<Script>,
    pub stop: Option<Script>,
    /// `notify`: one script called with keepalived's four arguments on every transition.
    pub any: Option<Script>,
}

/// A tracked interface, script or file, with the weight it moves the priority by.
/// No weight means the instance goes to FAULT when the object fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub name: String,
    pub weight: Option<TrackWeight>,
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    pub group: Vec<String>,
    pub notify: Notify,
    pub smtp_alert: Option<bool>,
    pub track_interfaces: Vec<Tracked>,
    pub track_scripts: Vec<Tracked>,
    pub track_files: Vec<Tracked>,
    pub global_tracking: bool,
    pub sync_group_tracking_weight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    Master,
    Backup,
}

/// `ADDR[/PREFIX] [brd ADDR] [dev IF] [scope SCOPE] [label LABEL] [no_track]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualAddress {
    pub addr: IpAddr,
    pub prefix: Option<u8>,
    pub brd: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub scope: Option<String>,
    pub label: Option<String>,
    pub no_track: bool,
    /// `noprefixroute`: the kernel adds no route for the address's prefix.
    pub no_prefix_route: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnicastPeer {
    pub addr: IpAddr,
    pub min_ttl: Option<u8>,
    pub max_ttl: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// PASS: the first 8 characters of the password go in the advert.
    Pass(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstance {
    pub name: String,
    pub state: Option<InitialState>,
    pub interface: Option<String>,
    pub virtual_router_id: Vrid,
    pub priority: Priority,
    pub advert_int: Timer,
    pub version: Option<VrrpVersion>,
    pub virtual_ipaddress: Vec<VirtualAddress>,
    pub virtual_ipaddress_excluded: Vec<VirtualAddress>,
    pub authentication: Option<Authentication>,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peers: Vec<UnicastPeer>,
    pub mcast_src_ip: Option<IpAddr>,
    pub track_interfaces: Vec<Tracked>,
    pub track_scripts: Vec<Tracked>,
    pub track_files: Vec<Tracked>,
    pub notify: Notify,
    pub smtp_alert: Option<bool>,
    pub garp_master_delay: Option<Timer>,
    pub garp_master_repeat: Option<u32>,
    pub garp_master_refresh: Option<Timer>,
    pub garp_master_refresh_repeat: Option<u32>,
    /// `use_vmac [NAME]`: a macvlan with the virtual MAC, optionally named.
    pub use_vmac: Option<Option<String>>,
    pub vmac_xmit_base: bool,
    /// `accept` / `no_accept`.
    pub accept: Option<bool>,
    pub nopreempt: bool,
    pub preempt_delay: Option<Timer>,
    pub strict_mode: Option<bool>,
    pub dont_track_primary: bool,
    pub native_ipv6: bool,
    pub check_unicast_src: bool,
    pub v3_checksum_as_v2: bool,
}

impl VrrpInstance {
    /// Whether the instance refuses traffic to its VIPs while master (keepalived's
    /// no_accept): by default when vrrp_strict is set, never for an address owner
    /// (priority 255).
    pub fn refuses_traffic(&self, globals: &GlobalDefs) -> bool {
        self.priority.get() != 255 && !self.accept.unwrap_or(!globals.vrrp_strict)
    }

    /// An instance with keepalived's defaults.
    pub fn new(name: &str, vrid: Vrid) -> VrrpInstance {
        VrrpInstance {
            name: name.to_string(),
            state: None,
            interface: None,
            virtual_router_id: vrid,
            priority: Priority::DEFAULT,
            advert_int: Timer::from_secs(1),
            version: None,
            virtual_ipaddress: Vec::new(),
            virtual_ipaddress_excluded: Vec::new(),
            authentication: None,
            unicast_src_ip: None,
            unicast_peers: Vec::new(),
            mcast_src_ip: None,
            track_interfaces: Vec::new(),
            track_scripts: Vec::new(),
            track_files: Vec::new(),
            notify: Notify::default(),
            smtp_alert: None,
            garp_master_delay: None,
            garp_master_repeat: None,
            garp_master_refresh: None,
            garp_master_refresh_repeat: None,
            use_vmac: None,
            vmac_xmit_base: false,
            accept: None,
            nopreempt: false,
            preempt_delay: None,
            strict_mode: None,
            dont_track_primary: false,
            native_ipv6: false,
            check_unicast_src: false,
            v3_checksum_as_v2: false,
        }
    }
}

/// A member of a `virtual_server_group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMember {
    /// `IP PORT`.
    Address { addr: IpAddr, port: u16 },
    /// `A.B.C.D-E PORT`: the addresses A.B.C.D to A.B.C.E (the last part of an IPv6
    /// address for IPv6).
    Range { first: IpAddr, last: u16, port: u16 },
    /// `fwmark N`.
    Fwmark(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServerGroup {
    pub name: String,
    pub members: Vec<GroupMember>,
}

/// What a `virtual_server` line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKey {
    Address { addr: IpAddr, port: u16 },
    Fwmark(u32),
    Group(String),
}

/// Settings that keepalived accepts on a virtual server and overrides per real server or
/// per checker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckDefaults {
    pub delay_loop: Option<Timer>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Timer>,
    pub warmup: Option<Timer>,
    pub connect_timeout: Option<Timer>,
    pub alpha: Option<bool>,
    pub inhibit_on_failure: Option<bool>,
}

/// IPVS's tunnel types, as keepalived names them after `TUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunnelKind {
    #[default]
    Ipip,
    Gue,
    Gre,
}

/// A gue or gre tunnel's outer checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunnelCsum {
    #[default]
    NoCsum,
    Csum,
    RemCsum,
}

/// `TUN [type ipip|gue|gre] [port N] [nocsum|csum|remcsum]` after lb_kind or lvs_method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelOptions {
    pub kind: TunnelKind,
    /// gue: the real server's UDP port (required for gue, refused otherwise).
    pub port: Option<u16>,
    pub csum: TunnelCsum,
}

impl TunnelOptions {
    /// The words after `TUN`, as keepalived reads them back.
    pub fn words(&self) -> Vec<String> {
        let mut w = Vec::new();
        match self.kind {
            TunnelKind::Ipip => {}
            TunnelKind::Gue => w.extend(["type".to_string(), "gue".to_string()]),
            TunnelKind::Gre => w.extend(["type".to_string(), "gre".to_string()]),
        }
        if let Some(p) = self.port {
            w.extend(["port".to_string(), p.to_string()]);
        }
        match self.csum {
            TunnelCsum::NoCsum => {}
            TunnelCsum::Csum => w.push("csum".into()),
            TunnelCsum::RemCsum => w.push("remcsum".into()),
        }
        w
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    pub key: ServiceKey,
    /// As written; see [`VirtualServer::protocol`] for the one in force.
    pub protocol: Option<Protocol>,
    pub lb_algo: Scheduler,
    pub lb_kind: Option<ForwardMethod>,
    /// `lb_kind TUN type ... port ... csum`: the tunnel real servers take by default.
    pub tunnel: Option<TunnelOptions>,
    pub persistence_timeout: Option<u32>,
    /// A netmask for an IPv4 service, a prefix length for an IPv6 one.
    pub persistence_granularity: Option<fulcrum_types::Granularity>,
    pub virtualhost: Option<String>,
    pub omega: bool,
    pub quorum: u32,
    pub hysteresis: u32,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    pub sorry_server: Option<(IpAddr, Option<u16>)>,
    pub sorry_server_inhibit: bool,
    pub sorry_server_lvs_method: Option<ForwardMethod>,
    pub sorry_server_tunnel: Option<TunnelOptions>,
    pub ha_suspend: bool,
    pub ops: bool,
    pub sh_port: bool,
    pub sh_fallback: bool,
    pub mh_port: bool,
    pub mh_fallback: bool,
    /// `fulcrum_sloppy_tcp on|off`: Fulcrum's own keyword, IPVS's sysctl sloppy_tcp for
    /// this service alone (a connection may start on any TCP segment but a RST). Unset,
    /// it is on with `lb_algo mh` (directors behind ECMP then keep flows that move
    /// between them) and off otherwise; see `VirtualServer::sloppy_tcp`.
    pub sloppy_tcp_set: Option<bool>,
    pub defaults: CheckDefaults,
    pub real_servers: Vec<RealServer>,
}

impl VirtualServer {
    /// Whether any TCP segment but a RST may start a connection: as set, else on for mh.
    pub fn sloppy_tcp(&self) -> bool {
        self.sloppy_tcp_set.unwrap_or(self.lb_algo == Scheduler::Mh)
    }

    pub fn new(key: ServiceKey) -> VirtualServer {
        VirtualServer {
            key,
            protocol: None,
            lb_algo: Scheduler::default(),
            lb_kind: None,
            tunnel: None,
            persistence_timeout: None,
            persistence_granularity: None,
            virtualhost: None,
            omega: false,
            quorum: 1,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            sorry_server: None,
            sorry_server_inhibit: false,
            sorry_server_lvs_method: None,
            sorry_server_tunnel: None,
            ha_suspend: false,
            ops: false,
            sh_port: false,
            sh_fallback: false,
            mh_port: false,
            mh_fallback: false,
            sloppy_tcp_set: None,
            defaults: CheckDefaults::default(),
            real_servers: Vec::new(),
        }
    }

    /// The protocol in force: as written, else UDP, as keepalived (and the kernel) default.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Udp)
    }

    /// The forwarding method in force: lb_kind, or keepalived's default, NAT.
    pub fn forward_method(&self) -> ForwardMethod {
        self.lb_kind.unwrap_or(ForwardMethod::Nat)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub weight: Weight,
    pub lvs_method: Option<ForwardMethod>,
    /// `lvs_method TUN type ... port ... csum`.
    pub tunnel: Option<TunnelOptions>,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub uthreshold: Option<u32>,
    pub lthreshold: Option<u32>,
    pub defaults: CheckDefaults,
    pub checkers: Vec<Checker>,
}

impl RealServer {
    pub fn new(addr: IpAddr, port: Option<u16>) -> RealServer {
        RealServer {
            addr,
            port,
            weight: Weight::DEFAULT,
            lvs_method: None,
            tunnel: None,
            notify_up: None,
            notify_down: None,
            uthreshold: None,
            lthreshold: None,
            defaults: CheckDefaults::default(),
            checkers: Vec::new(),
        }
    }
}

/// Options every checker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckerCommon {
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub bind_port: Option<u16>,
    pub bind_if: Option<String>,
    pub fwmark: Option<u32>,
    pub connect_timeout: Option<Timer>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Timer>,
    pub warmup: Option<Timer>,
    pub delay_loop: Option<Timer>,
    pub alpha: Option<bool>,
    pub log_all_failures: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checker {
    pub common: CheckerCommon,
    pub kind: CheckerKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckerKind {
    Tcp,
    Http(HttpCheck),
    Ssl(HttpCheck),
    Misc(MiscCheck),
    Smtp(SmtpCheck),
    Dns(DnsCheck),
    Udp(UdpCheck),
    Ping,
    File(FileCheck),
}

impl CheckerKind {
    /// The keyword that opens this checker's block.
    pub fn keyword(&self) -> &'static str {
        match self {
            CheckerKind::Tcp => "TCP_CHECK",
            CheckerKind::Http(_) => "HTTP_GET",
            CheckerKind::Ssl(_) => "SSL_GET",
            CheckerKind::Misc(_) => "MISC_CHECK",
            CheckerKind::Smtp(_) => "SMTP_CHECK",
            CheckerKind::Dns(_) => "DNS_CHECK",
            CheckerKind::Udp(_) => "UDP_CHECK",
            CheckerKind::Ping => "PING_CHECK",
            CheckerKind::File(_) => "FILE_CHECK",
        }
    }
}

/// An inclusive range of HTTP status codes (`200` is `200..=200`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub first: u16,
    pub last: u16,
}

impl std::fmt::Display for StatusRange {
    /// As keepalived.conf writes it: `200` or `200-299`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlCheck {
    pub path: String,
    /// MD5 of the body, 32 lowercase hex digits.
    pub digest: Option<String>,
    pub status_code: Vec<StatusRange>,
    pub virtualhost: Option<String>,
    pub regex: Option<String>,
    pub regex_no_match: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    V1_0,
    V1_0C,
    V1_1,
}

impl HttpProtocol {
    pub fn name(self) -> &'static str {
        match self {
            HttpProtocol::V1_0 => "1.0",
            HttpProtocol::V1_0C => "1.0C",
            HttpProtocol::V1_1 => "1.1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpCheck {
    pub urls: Vec<UrlCheck>,
    pub virtualhost: Option<String>,
    pub http_protocol: Option<HttpProtocol>,
    pub enable_sni: Option<bool>,
    pub fast_recovery: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiscCheck {
    pub misc_path: Script,
    pub misc_timeout: Option<Timer>,
    pub misc_dynamic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmtpCheck {
    pub helo_name: Option<String>,
    /// Old-style `host { ... }` blocks: each one more address to check.
    pub hosts: Vec<CheckerCommon>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsCheck {
    pub query_type: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpCheck {
    /// Hex digits of the payload to send.
    pub payload: Option<String>,
    /// `require_reply [HEX]`: a reply is needed, and must start with these bytes if given.
    pub require_reply: Option<Option<String>>,
    pub min_reply_length: Option<u32>,
    pub max_reply_length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    pub track_file: String,
    pub weight: Option<(TrackWeight, bool)>,
}
