//! Fulcrum's XDP data plane: the BPF program (bpf/, C, built by build.rs with clang) and
//! its loader. This crate and fulcrum-sys are the only ones with `unsafe`: here only to
//! tell aya that the structs shared with the program are plain old data (src/abi.rs).
//!
//! The program forwards layer-4 virtual services the way IPVS does: a new flow is
//! scheduled (by the fourteen schedulers of include/sched.h, held to the reference models
//! of `fulcrum-sched`), tracked in a connection table with IPVS's TCP states and timeouts,
//! and sent by NAT or DR. The control plane here writes services and real servers, reads
//! counters and connections, and expires old connections. Fixtures run through
//! `BPF_PROG_TEST_RUN` (tests/).

pub mod abi;
#[cfg(test)]
mod btf;
mod clock;
mod connections;
mod decap;
mod load;
mod services;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use abi::*;
pub use abi::{Conn, FlowKey, ServiceKey, Traffic};
pub use clock::ClockSample;
pub use connections::{Adopted, Connection, Synced, Template};
pub use decap::{attach_decap, decap_counters, decap_test_run, detach_decap, DecapCounters};
pub use load::AttachMode;
pub use services::{
    DestSpec, Link, Method, ServiceSpec, TunCsum, TunKind, Tunnel, SCHEDULERS, TWOS_SEED,
};

pub use fulcrum_sched::Kind as Scheduler;
pub use fulcrum_types::Granularity;

/// The program, 8-byte aligned as aya needs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum.bpf.o"));

const MAIN: &str = "xdp_fulcrum";
const EXPIRE: &str = "xdp_expire";
const CLOCK: &str = "xdp_clock";
const ADOPT: &str = "xdp_adopt";
const MAIN6: &str = "xdp_fulcrum6";
const EXPIRE6: &str = "xdp_expire6";
const ADOPT6: &str = "xdp_adopt6";

/// Every map of the program that holds state: pinned by name under the instance's
/// directory, so a restarted daemon adopts them.
pub const PINNED_MAPS: [&str; 30] = [
    "services",
    "dests",
    "dests6",
    "sched_order",
    "dest_conns",
    "svc_retired",
    "dest_traffic",
    "sched_state",
    "sched_tables",
    "locality",
    "conn_slots",
    "conn_hash",
    "conn_stash",
    "conn_chunks",
    "conn_locks",
    "conn_slots6",
    "conn_hash6",
    "conn_stash6",
    "conn_chunks6",
    "conn_locks6",
    "progs",
    "persist",
    "persist6",
    "timeouts",
    "settings",
    "stats",
    "no_accept",
    "no_accept6",
    "tun_src6",
    "host_macs",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the object has no {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Limit(String),
    #[error("pinning in {0}: {1}")]
    Pin(PathBuf, String),
}

/// Why a packet got its verdict: `enum stat_reason` in bpf/include/constants.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Reason {
    NotIp = 0,
    Malformed = 1,
    Fragment = 2,
    IpOptions = 3,
    Ipv6 = 4,
    NoService = 5,
    Service = 6,
    OtherL4 = 7,
    NatIn = 8,
    NatOut = 9,
    Dr = 10,
    NotSyn = 11,
    NoDest = 12,
    FibPass = 13,
    NoNeigh = 14,
    DestGone = 15,
    NewConn = 16,
    IcmpNat = 17,
    NoAccept = 18,
    DupSyn = 19,
    TableFull = 20,
    Tun = 21,
    TunFail = 22,
    TunFragNeeded = 23,
    TunTooBig = 24,
    NatTooBig = 25,
    NatFragNeeded = 26,
    TtlExceeded = 27,
    OtherHost = 28,
    TunIcmp = 29,
}

impl Reason {
    pub const ALL: [Reason; 30] = [
        Reason::NotIp,
        Reason::Malformed,
        Reason::Fragment,
        Reason::IpOptions,
        Reason::Ipv6,
        Reason::NoService,
        Reason::Service,
        Reason::OtherL4,
        Reason::NatIn,
        Reason::NatOut,
        Reason::Dr,
        Reason::NotSyn,
        Reason::NoDest,
        Reason::FibPass,
        Reason::NoNeigh,
        Reason::DestGone,
        Reason::NewConn,
        Reason::IcmpNat,
        Reason::NoAccept,
        Reason::DupSyn,
        Reason::TableFull,
        Reason::Tun,
        Reason::TunFail,
        Reason::TunFragNeeded,
        Reason::TunTooBig,
        Reason::NatTooBig,
        Reason::NatFragNeeded,
        Reason::TtlExceeded,
        Reason::OtherHost,
        Reason::TunIcmp,
    ];

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NotIp => "not_ip",
            Reason::Malformed => "malformed",
            Reason::Fragment => "fragment",
            Reason::IpOptions => "ip_options",
            Reason::Ipv6 => "ipv6",
            Reason::NoService => "no_service",
            Reason::Service => "service",
            Reason::OtherL4 => "other_l4",
            Reason::NatIn => "nat_in",
            Reason::NatOut => "nat_out",
            Reason::Dr => "dr",
            Reason::NotSyn => "not_syn",
            Reason::NoDest => "no_dest",
            Reason::FibPass => "fib_pass",
            Reason::NoNeigh => "no_neigh",
            Reason::DestGone => "dest_gone",
            Reason::NewConn => "new_conn",
            Reason::IcmpNat => "icmp_nat",
            Reason::NoAccept => "no_accept",
            Reason::DupSyn => "dup_syn",
            Reason::TableFull => "table_full",
            Reason::Tun => "tun",
            Reason::TunFail => "tun_fail",
            Reason::TunFragNeeded => "tun_frag_needed",
            Reason::TunTooBig => "tun_too_big",
            Reason::NatTooBig => "nat_too_big",
            Reason::NatFragNeeded => "nat_frag_needed",
            Reason::TtlExceeded => "ttl_exceeded",
            Reason::OtherHost => "other_host",
            Reason::TunIcmp => "tun_icmp",
        }
    }
}

/// XDP verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl From<u32> for Verdict {
    fn from(v: u32) -> Verdict {
        match v {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            other => Verdict::Other(other),
        }
    }
}

/// What one test run of the program did.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub verdict: Verdict,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Average time per run.
    pub per_run: Duration,
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct DataPlane {
    ebpf: Ebpf,
    /// Table slots written per service id, to delete them when they change.
    table_sizes: std::collections::HashMap<u32, u32>,
    /// The slots holding a real server, per service id, as last put (bit n: slot n):
    /// the slots whose counts make up the service's. Unknown (a service adopted and not
    /// put since): every slot is read.
    present_slots: std::collections::HashMap<u32, u128>,
    /// Where maps and links are pinned, when they are.
    pin_dir: Option<PathBuf>,
    /// The kernel's tick in ns, once measured (see [`DataPlane::set_clock`]).
    tick_ns: u64,
    /// Each connection table (IPv4's, IPv6's) and its live counts per chunk, mapped into
    /// this process once read.
    conn_views: [std::sync::OnceLock<(fulcrum_sys::SharedMemory, fulcrum_sys::SharedMemory)>; 2],
}

impl DataPlane {
    pub(crate) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, Error> {
        self.ebpf.map_mut(name).ok_or(Error::Missing(name))
    }

    pub(crate) fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.ebpf.map(name).ok_or(Error::Missing(name))
    }
}
