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

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use abi::*;
pub use abi::{Conn, FlowKey, ServiceKey, Traffic};

pub use fulcrum_sched::Kind as Scheduler;

/// The program, 8-byte aligned as aya needs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum.bpf.o"));

const MAIN: &str = "xdp_fulcrum";
const EXPIRE: &str = "xdp_expire";
const CLOCK: &str = "xdp_clock";

/// Every map of the program that holds state: pinned by name under the instance's
/// directory, so a restarted daemon adopts them.
pub const PINNED_MAPS: [&str; 15] = [
    "services",
    "dests",
    "dest_conns",
    "svc_traffic",
    "dest_traffic",
    "sched_state",
    "sched_tables",
    "locality",
    "conns",
    "persist",
    "timeouts",
    "settings",
    "stats",
    "no_accept",
    "no_accept6",
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
}

impl Reason {
    pub const ALL: [Reason; 19] = [
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

/// How a real server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Nat,
    Dr,
}

/// A real server in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestSpec {
    pub addr: Ipv4Addr,
    /// 0 for a port-0 service's servers: the client's port is kept.
    pub port: u16,
    pub method: Method,
    pub weight: u32,
    pub overloaded: bool,
    /// Connection thresholds (ipvsadm -x, -y; keepalived uthreshold, lthreshold): 0 none.
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// DR: where the real server is on the link: its MAC (from the neighbour table; None
    /// until resolved), the interface's index and the interface's own MAC.
    pub link: Option<Link>,
}

/// A DR real server's place on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub smac: [u8; 6],
}

/// A virtual service as the data plane holds it. `dests` are slots: a real server keeps
/// its slot for its life, a deleted one leaves `None`, so connections keep pointing at
/// the right server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    /// 0..MAX_SERVICES, unique among the loaded services.
    pub id: u32,
    pub scheduler: Scheduler,
    pub sh_port: bool,
    pub sh_fallback: bool,
    pub mh_port: bool,
    pub mh_fallback: bool,
    /// One-packet scheduling (UDP).
    pub ops: bool,
    /// Persistence timeout in seconds, and the client netmask it groups by.
    pub persistence: Option<(u32, Ipv4Addr)>,
    pub dests: Vec<Option<DestSpec>>,
}

/// The fourteen schedulers in the order of `enum sched_kind` (bpf/include/constants.h):
/// a scheduler's code in the program is its index here.
pub const SCHEDULERS: [Scheduler; 14] = [
    Scheduler::Rr,
    Scheduler::Wrr,
    Scheduler::Lc,
    Scheduler::Wlc,
    Scheduler::Lblc,
    Scheduler::Lblcr,
    Scheduler::Dh,
    Scheduler::Sh,
    Scheduler::Sed,
    Scheduler::Nq,
    Scheduler::Fo,
    Scheduler::Ovf,
    Scheduler::Mh,
    Scheduler::Twos,
];

fn sched_code(kind: Scheduler) -> u8 {
    SCHEDULERS
        .iter()
        .position(|k| *k == kind)
        .expect("every scheduler is listed") as u8
}

/// The seed twos starts from: the reference model's default, so the two agree.
pub const TWOS_SEED: u64 = 0x5eed_f01c_2026;

impl ServiceSpec {
    /// A service with no real server, no persistence and no scheduler flags.
    pub fn new(key: ServiceKey, id: u32, scheduler: Scheduler) -> ServiceSpec {
        ServiceSpec {
            key,
            id,
            scheduler,
            sh_port: false,
            sh_fallback: false,
            mh_port: false,
            mh_fallback: false,
            ops: false,
            persistence: None,
            dests: Vec::new(),
        }
    }

    /// The present servers in slot order, as the reference model sees them, with the slot
    /// of each.
    pub fn model_dests(&self) -> Vec<(usize, fulcrum_sched::Dest)> {
        self.dests
            .iter()
            .enumerate()
            .filter_map(|(slot, d)| {
                d.map(|d| {
                    let mut m =
                        fulcrum_sched::Dest::new(std::net::IpAddr::V4(d.addr), d.port, d.weight);
                    m.overloaded = d.overloaded;
                    (slot, m)
                })
            })
            .collect()
    }

    fn value(&self) -> ServiceValue {
        let mut flags = 0;
        for (on, f) in [
            (self.persistence.is_some(), SVC_F_PERSISTENT),
            (self.ops, SVC_F_OPS),
            (self.sh_port, SVC_F_SH_PORT),
            (self.sh_fallback, SVC_F_SH_FALLBACK),
            (self.mh_port, SVC_F_MH_PORT),
            (self.mh_fallback, SVC_F_MH_FALLBACK),
        ] {
            if on {
                flags |= f;
            }
        }
        let weights: Vec<u32> = self.dests.iter().flatten().map(|d| d.weight).collect();
        let di = weights
            .iter()
            .filter(|w| **w > 0)
            .fold(0u32, |g, &w| if g == 0 { w } else { gcd(g, w) })
            .max(1);
        let max = weights.iter().copied().max().unwrap_or(0);
        let (timeout, mask) = self.persistence.unwrap_or((0, Ipv4Addr::UNSPECIFIED));
        ServiceValue {
            id: self.id,
            sched: sched_code(self.scheduler),
            flags,
            ndests: self.dests.len() as u16,
            persist_timeout: timeout,
            persist_mask: u32::from_ne_bytes(mask.octets()),
            wrr_mw: max as i32 - (di as i32 - 1),
            wrr_di: di as i32,
            table_size: match self.scheduler {
                Scheduler::Mh => fulcrum_sched::MAGLEV_TABLE_SIZE as u32,
                Scheduler::Dh | Scheduler::Sh => fulcrum_sched::HASH_TABLE_SIZE as u32,
                _ => 0,
            },
            pad: 0,
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn slot_index(id: u32, slot: usize) -> u32 {
    id * MAX_DESTS + slot as u32
}

/// Where the program runs on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// In the generic path (XDP_FLAGS_SKB_MODE): any device, slower.
    Generic,
    /// A pinned link left by a previous run now runs this program (in the mode it had).
    Adopted,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Adopted => "adopted",
        }
    }
}

/// A connection as the control plane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub proto: u8,
    pub client: (Ipv4Addr, u16),
    pub vip: (Ipv4Addr, u16),
    pub rip: (Ipv4Addr, u16),
    pub state: &'static str,
    /// Time left before it expires.
    pub expires_in: Duration,
    pub service: u32,
    pub slot: u16,
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// Room for `max_connections` connections: two entries each (NAT's replies), and a
/// persistence template per two.
fn size_tables(loader: &mut EbpfLoader, max_connections: u32) {
    loader.map_max_entries("conns", max_connections.saturating_mul(2).max(1024));
    loader.map_max_entries("persist", (max_connections / 2).max(1024));
}

/// Loads both entry points of the object into the kernel.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), Error> {
    for name in [MAIN, EXPIRE, CLOCK] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(Error::Missing("an XDP program"))?
            .try_into()?;
        program.load()?;
    }
    Ok(())
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct DataPlane {
    ebpf: Ebpf,
    /// Table slots written per service id, to delete them when they change.
    table_sizes: std::collections::HashMap<u32, u32>,
    /// Where maps and links are pinned, when they are.
    pin_dir: Option<PathBuf>,
    /// The kernel's tick in ns, once measured (see [`DataPlane::set_clock`]).
    tick_ns: u64,
}

/// One reading of the program's clocks (`xdp_clock`).
#[derive(Debug, Clone, Copy)]
pub struct ClockSample {
    pub jiffies: u64,
    /// CLOCK_MONOTONIC_COARSE, ns.
    pub coarse: u64,
    /// The data plane's own clock, ns: what its connection deadlines are in.
    pub now: u64,
}

/// The tick length for a measured one: the kernel's TICK_NSEC for the nearest common HZ
/// (a measurement off by even 1% would drift the clock by minutes a day), else for the HZ
/// the measurement gives.
fn tick_length(measured_ns: u64) -> u64 {
    let tick = |hz: u64| (1_000_000_000 + hz / 2) / hz;
    let near = [100u64, 250, 300, 1000]
        .into_iter()
        .map(tick)
        .find(|t| measured_ns.abs_diff(*t) * 10 < *t);
    near.unwrap_or_else(|| tick((1_000_000_000 / measured_ns.max(1)).max(1)))
}

impl DataPlane {
    /// Loads the programs into the kernel (CAP_BPF / root), with IPVS's default timeouts,
    /// unpinned and with a connection table of 32,768 connections: for tests and tools.
    /// The daemon uses [`DataPlane::load_pinned`].
    pub fn load() -> Result<DataPlane, Error> {
        DataPlane::load_sized(32_768)
    }

    /// As [`DataPlane::load`], with room for `max_connections` connections.
    pub fn load_sized(max_connections: u32) -> Result<DataPlane, Error> {
        let mut loader = EbpfLoader::new();
        size_tables(&mut loader, max_connections);
        let mut ebpf = loader.load(PROGRAM)?;
        load_programs(&mut ebpf)?;
        let mut dp = DataPlane {
            ebpf,
            table_sizes: Default::default(),
            tick_ns: 0,
            pin_dir: None,
        };
        dp.set_timeouts(&DEFAULT_TIMEOUTS)?;
        dp.set_clock()?;
        Ok(dp)
    }

    /// Loads the programs with their maps pinned in `dir` (a directory on a bpffs): maps a
    /// previous run left there are adopted with their contents (services, connections,
    /// counters), so forwarding continues across a restart. Returns whether it adopted.
    ///
    /// `max_connections` sizes the connection table (two entries per connection, for NAT's
    /// replies); None keeps the default of 1,048,576 connections. An adopted table keeps
    /// the size it was made with.
    pub fn load_pinned(
        dir: &Path,
        max_connections: Option<u32>,
    ) -> Result<(DataPlane, bool), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Pin(dir.into(), e.to_string()))?;
        let adopted = dir.join("conns").exists();
        let paths: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|n| (*n, dir.join(n))).collect();
        let mut loader = EbpfLoader::new();
        if let Some(n) = max_connections {
            size_tables(&mut loader, n);
        }
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(PROGRAM)?;
        load_programs(&mut ebpf)?;
        let mut dp = DataPlane {
            ebpf,
            table_sizes: Default::default(),
            tick_ns: 0,
            pin_dir: Some(dir.to_path_buf()),
        };
        if adopted {
            let mut sizes = std::collections::HashMap::new();
            let map: HashMap<&MapData, TableKey, u32> = HashMap::try_from(dp.map("sched_tables")?)?;
            for k in map.keys().filter_map(Result::ok) {
                let e = sizes.entry(k.svc).or_insert(0);
                *e = (*e).max(k.slot + 1);
            }
            dp.table_sizes = sizes;
        } else {
            dp.set_timeouts(&DEFAULT_TIMEOUTS)?;
        }
        dp.set_clock()?;
        Ok((dp, adopted))
    }

    /// Removes the pins (maps and links): once this program is dropped, nothing is left
    /// attached or allocated.
    pub fn unpin(&mut self) -> Result<(), Error> {
        let Some(dir) = self.pin_dir.take() else {
            return Ok(());
        };
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::Pin(dir.clone(), e.to_string()))?;
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// The services a previous run left in the pinned maps, as specs (slots and all).
    pub fn installed(&self) -> Result<Vec<ServiceSpec>, Error> {
        let services: HashMap<&MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map("services")?)?;
        let dests: Array<&MapData, Dest> = Array::try_from(self.map("dests")?)?;
        let mut out = Vec::new();
        for (key, v) in services.iter().filter_map(Result::ok) {
            let mut spec = ServiceSpec::new(
                key,
                v.id,
                SCHEDULERS
                    .get(v.sched as usize)
                    .copied()
                    .unwrap_or_default(),
            );
            spec.sh_port = v.flags & SVC_F_SH_PORT != 0;
            spec.sh_fallback = v.flags & SVC_F_SH_FALLBACK != 0;
            spec.mh_port = v.flags & SVC_F_MH_PORT != 0;
            spec.mh_fallback = v.flags & SVC_F_MH_FALLBACK != 0;
            spec.ops = v.flags & SVC_F_OPS != 0;
            if v.flags & SVC_F_PERSISTENT != 0 {
                spec.persistence = Some((v.persist_timeout, addr(v.persist_mask)));
            }
            for slot in 0..usize::from(v.ndests) {
                let d = dests.get(&slot_index(v.id, slot), 0)?;
                spec.dests
                    .push((d.flags & DEST_F_PRESENT != 0).then(|| DestSpec {
                        addr: addr(d.addr),
                        port: u16::from_be(d.port),
                        method: if d.method == METHOD_DR {
                            Method::Dr
                        } else {
                            Method::Nat
                        },
                        weight: d.weight,
                        overloaded: false,
                        u_threshold: d.u_threshold,
                        l_threshold: d.l_threshold,
                        link: (d.mac != [0; 6]).then_some(Link {
                            mac: d.mac,
                            ifindex: d.ifindex,
                            smac: d.smac,
                        }),
                    }));
            }
            out.push(spec);
        }
        Ok(out)
    }

    fn program(&self, name: &'static str) -> Result<&Xdp, Error> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or(Error::Missing("an XDP program"))?
            .try_into()?)
    }

    /// Attaches the forwarding program to an interface of the caller's network namespace:
    /// native mode where the driver has it, else generic.
    /// With pinning, the link is pinned too (so the program stays attached when the daemon
    /// dies), and a link a previous run pinned is taken over: the new program replaces the
    /// old one atomically, with no moment without forwarding.
    pub fn attach(&mut self, ifname: &str) -> Result<AttachMode, Error> {
        let link_path = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link-{ifname}")));
        let program: &mut Xdp = self
            .ebpf
            .program_mut(MAIN)
            .ok_or(Error::Missing("an XDP program"))?
            .try_into()?;
        if let Some(path) = link_path.as_ref().filter(|p| p.exists()) {
            let pin_err = |e: String| Error::Pin(path.clone(), e);
            let pinned = PinnedLink::from_pin(path).map_err(|e| pin_err(e.to_string()))?;
            let link =
                XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(e.to_string()))?;
            program.attach_to_link(link)?;
            return Ok(AttachMode::Adopted);
        }
        let (id, mode) = match program.attach(ifname, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Native),
            Err(_) => (program.attach(ifname, XdpMode::Skb)?, AttachMode::Generic),
        };
        if let Some(path) = link_path {
            let pin_err = |e: String| Error::Pin(path.clone(), e);
            let link = program.take_link(id)?;
            let fd = FdLink::try_from(link).map_err(|e| pin_err(e.to_string()))?;
            fd.pin(&path).map_err(|e| pin_err(e.to_string()))?;
        }
        Ok(mode)
    }

    /// Runs the forwarding program on a frame with BPF_PROG_TEST_RUN, `repeat` times.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestOutcome, Error> {
        self.run(MAIN, frame, repeat)
    }

    fn run(&self, name: &'static str, frame: &[u8], repeat: u32) -> Result<TestOutcome, Error> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat.max(1);
        let r = self.program(name)?.test_run(opts)?;
        out.truncate(r.data_size_out as usize);
        Ok(TestOutcome {
            verdict: Verdict::from(r.return_value),
            frame: out,
            per_run: r.duration,
        })
    }

    /// The kernel's tick as measured at load, ns (0: not measured; the program then uses
    /// the coarse clock).
    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// Now on the program's clock, which its deadlines are in (the monotonic clock if it
    /// cannot be read).
    fn now(&self) -> u64 {
        self.clock()
            .map(|c| c.now)
            .unwrap_or_else(|_| fulcrum_sys::monotonic_ns())
    }

    /// Reads the program's clocks.
    pub fn clock(&self) -> Result<ClockSample, Error> {
        let out = self.run(CLOCK, &[0u8; 14 + 24], 1)?;
        let word = |i: usize| {
            out.frame
                .get(14 + 8 * i..22 + 8 * i)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
        };
        match (word(0), word(1), word(2)) {
            (Some(jiffies), Some(coarse), Some(now)) if out.verdict == Verdict::Pass => {
                Ok(ClockSample {
                    jiffies,
                    coarse,
                    now,
                })
            }
            _ => Err(Error::Limit(format!(
                "xdp_clock gave {:?} with {} bytes",
                out.verdict,
                out.frame.len()
            ))),
        }
    }

    /// Sets the program's clock, jiffies * tick - base, to CLOCK_MONOTONIC rounded down
    /// to the tick (see `clock_now` in maps.h), give or take how late the kernel ran the
    /// tick it was set at. The tick length is measured once, from
    /// how far the coarse clock moves per jiffy over twenty jiffies (both move at each
    /// tick; 80 ms at HZ=250, 200 ms at HZ=100); later calls only set the base again. If
    /// jiffies do not move in 300 ms the program keeps the coarse clock, which is always
    /// right, only dearer.
    pub fn set_clock(&mut self) -> Result<(), Error> {
        let mut s = self.clock()?;
        if self.tick_ns == 0 {
            let first = s;
            // Twenty jiffies: the two clocks can disagree by a jiffy at either end (on a
            // tickless kernel a late tick is caught up in one step), which over four
            // jiffies was a quarter off; over twenty it is within the 10% that
            // tick_length needs to recognise the kernel's HZ.
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            while s.jiffies.wrapping_sub(first.jiffies) < 20 && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
                s = self.clock()?;
            }
            let ticks = s.jiffies.wrapping_sub(first.jiffies);
            if ticks < 8 {
                return Ok(());
            }
            self.tick_ns = tick_length(s.coarse.saturating_sub(first.coarse) / ticks);
        }
        let tick_ns = self.tick_ns;
        let base = s.jiffies.wrapping_mul(tick_ns).wrapping_sub(s.coarse);
        let mut map: Array<&mut MapData, Clock> = Array::try_from(self.map_mut("clock")?)?;
        let old = map.get(&0, 0)?;
        // Never backwards: a deadline already written must not come later than it did.
        if old.tick_ns == tick_ns && base >= old.base {
            return Ok(());
        }
        map.set(0, Clock { tick_ns, base }, 0)?;
        Ok(())
    }

    /// Connection timeouts in seconds by state (abi::STATE_NAMES order).
    pub fn set_timeouts(&mut self, seconds: &[u32; 12]) -> Result<(), Error> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut("timeouts")
                .ok_or(Error::Missing("timeouts map"))?,
        )?;
        for (i, t) in seconds.iter().enumerate() {
            map.set(i as u32, t, 0)?;
        }
        Ok(())
    }

    pub fn timeouts(&self) -> Result<[u32; 12], Error> {
        let map: Array<&MapData, u32> = Array::try_from(
            self.ebpf
                .map("timeouts")
                .ok_or(Error::Missing("timeouts map"))?,
        )?;
        let mut t = [0; 12];
        for (i, v) in t.iter_mut().enumerate() {
            *v = map.get(&(i as u32), 0)?;
        }
        Ok(t)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, Error> {
        self.ebpf.map_mut(name).ok_or(Error::Missing(name))
    }

    fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.ebpf.map(name).ok_or(Error::Missing(name))
    }

    /// Adds a service or replaces one with the same id: real servers, scheduler table and
    /// state, then the service itself, so a packet never sees a service without servers.
    /// Connections, counters and traffic of unchanged slots are kept.
    pub fn put_service(&mut self, spec: &ServiceSpec) -> Result<(), Error> {
        if spec.id >= MAX_SERVICES {
            return Err(Error::Limit(format!(
                "at most {MAX_SERVICES} virtual services"
            )));
        }
        if spec.dests.len() > MAX_DESTS as usize {
            return Err(Error::Limit(format!(
                "at most {MAX_DESTS} real servers per virtual service"
            )));
        }
        let id = spec.id;
        {
            let mut dests: Array<&mut MapData, Dest> = Array::try_from(self.map_mut("dests")?)?;
            for slot in 0..MAX_DESTS as usize {
                let index = slot_index(id, slot);
                let before = dests.get(&index, 0)?;
                let d = match spec.dests.get(slot).copied().flatten() {
                    Some(d) => {
                        let addr = u32::from_ne_bytes(d.addr.octets());
                        // The program sets and clears the overload of thresholds; a
                        // rewrite keeps it while the server and its thresholds stay.
                        let overloaded = d.overloaded
                            || (before.flags & DEST_F_OVERLOADED != 0
                                && before.addr == addr
                                && before.port == d.port.to_be()
                                && d.u_threshold != 0
                                && before.u_threshold >= d.u_threshold);
                        Dest {
                            addr,
                            port: d.port.to_be(),
                            method: match d.method {
                                Method::Nat => METHOD_NAT,
                                Method::Dr => METHOD_DR,
                            },
                            flags: DEST_F_PRESENT | if overloaded { DEST_F_OVERLOADED } else { 0 },
                            weight: d.weight,
                            ifindex: d.link.map_or(0, |l| l.ifindex),
                            mac: d.link.map_or([0; 6], |l| l.mac),
                            smac: d.link.map_or([0; 6], |l| l.smac),
                            u_threshold: d.u_threshold,
                            l_threshold: d.l_threshold,
                            pad: 0,
                        }
                    }
                    None => Dest::default(),
                };
                // Unchanged slots (most of them, on a weight change) are not rewritten.
                if d == before {
                    continue;
                }
                dests.set(index, d, 0)?;
            }
        }
        self.write_table(spec)?;
        self.update_sched_state(spec)?;
        let value = spec.value();
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.map_mut("services")?)?;
        services.insert(spec.key, value, 0)?;
        Ok(())
    }

    fn write_table(&mut self, spec: &ServiceSpec) -> Result<(), Error> {
        let id = spec.id;
        let model = spec.model_dests();
        let compact: Vec<fulcrum_sched::Dest> = model.iter().map(|(_, d)| d.clone()).collect();
        let table = fulcrum_sched::lookup_table(spec.scheduler, &compact);
        let old = self.table_sizes.remove(&id).unwrap_or(0);
        let mut map: HashMap<&mut MapData, TableKey, u32> =
            HashMap::try_from(self.map_mut("sched_tables")?)?;
        let new_len = table.as_ref().map_or(0, |t| t.len() as u32);
        for slot in new_len..old {
            let _ = map.remove(&TableKey { svc: id, slot });
        }
        if let Some(table) = table {
            for (i, entry) in table.iter().enumerate() {
                let key = TableKey {
                    svc: id,
                    slot: i as u32,
                };
                match entry {
                    Some(c) => map.insert(key, model[*c].0 as u32, 0)?,
                    None => {
                        let _ = map.remove(&key);
                    }
                }
            }
            self.table_sizes.insert(id, new_len);
        }
        Ok(())
    }

    /// The scheduler state after a change of servers, as the model's `update` leaves it:
    /// rr forgets a position past the end; wrr restarts its walk with the current weight
    /// kept in range; twos is seeded once.
    fn update_sched_state(&mut self, spec: &ServiceSpec) -> Result<(), Error> {
        let value = spec.value();
        let mut map: Array<&mut MapData, SchedState> =
            Array::try_from(self.map_mut("sched_state")?)?;
        let mut st = map.get(&spec.id, 0)?;
        if st.rr as usize > spec.dests.len() {
            st.rr = 0;
        }
        let mut cw = st.wrr as u32 as i32;
        if cw > value.wrr_mw || cw <= 0 {
            cw = value.wrr_mw;
        } else if value.wrr_di > 1 {
            cw = (cw / value.wrr_di) * value.wrr_di + 1;
        }
        st.wrr = cw.max(0) as u32 as u64;
        if st.rng == 0 {
            st.rng = TWOS_SEED;
        }
        map.set(spec.id, st, 0)?;
        Ok(())
    }

    /// Removes a service: it stops matching at once; its connections expire as their real
    /// servers are gone (expire_nodest_conn).
    pub fn remove_service(&mut self, key: &ServiceKey, id: u32) -> Result<(), Error> {
        {
            let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
                HashMap::try_from(self.map_mut("services")?)?;
            let _ = services.remove(key);
        }
        let empty = ServiceSpec::new(*key, id, Scheduler::Rr);
        {
            let mut dests: Array<&mut MapData, Dest> = Array::try_from(self.map_mut("dests")?)?;
            for slot in 0..MAX_DESTS as usize {
                dests.set(slot_index(id, slot), Dest::default(), 0)?;
            }
        }
        self.write_table(&empty)?;
        let mut state: Array<&mut MapData, SchedState> =
            Array::try_from(self.map_mut("sched_state")?)?;
        state.set(id, SchedState::default(), 0)?;
        Ok(())
    }

    /// Tells the program that routes or neighbours changed: next hops cached in
    /// connections are looked up again.
    pub fn bump_route_generation(&mut self) -> Result<(), Error> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(self.map_mut("settings")?)?;
        let g = map.get(&0, 0)?;
        map.set(0, g.wrapping_add(1), 0)?;
        Ok(())
    }

    /// Drops (or stops dropping) traffic to `addr` that no virtual service takes: a VIP of
    /// a VRRP master in no_accept mode. For an IPv6 address, VRRP and neighbour
    /// discovery still pass.
    pub fn set_no_accept(&mut self, addr: IpAddr, on: bool) -> Result<(), Error> {
        match addr {
            IpAddr::V4(a) => {
                let mut map: HashMap<&mut MapData, u32, u8> =
                    HashMap::try_from(self.map_mut("no_accept")?)?;
                let key = u32::from_ne_bytes(a.octets());
                if on {
                    map.insert(key, 1, 0)?;
                } else {
                    let _ = map.remove(&key);
                }
            }
            IpAddr::V6(a) => {
                let mut map: HashMap<&mut MapData, [u8; 16], u8> =
                    HashMap::try_from(self.map_mut("no_accept6")?)?;
                let key = a.octets();
                if on {
                    map.insert(key, 1, 0)?;
                } else {
                    let _ = map.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// Forgets every no_accept address (at start: VRRP sets them again as it goes).
    pub fn clear_no_accept(&mut self) -> Result<(), Error> {
        let mut map: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(self.map_mut("no_accept")?)?;
        let keys: Vec<u32> = map.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = map.remove(&k);
        }
        let mut map: HashMap<&mut MapData, [u8; 16], u8> =
            HashMap::try_from(self.map_mut("no_accept6")?)?;
        let keys: Vec<[u8; 16]> = map.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = map.remove(&k);
        }
        Ok(())
    }

    /// Active and inactive connections of a real-server slot.
    pub fn dest_conns(&self, id: u32, slot: usize) -> Result<(u32, u32), Error> {
        let map: Array<&MapData, DestConns> = Array::try_from(self.map("dest_conns")?)?;
        let c = map.get(&slot_index(id, slot), 0)?;
        Ok((c.active, c.inactive))
    }

    fn traffic(&self, map: &'static str, index: u32) -> Result<Traffic, Error> {
        let map: PerCpuArray<&MapData, Traffic> = PerCpuArray::try_from(self.map(map)?)?;
        let mut sum = Traffic::default();
        for t in map.get(&index, 0)?.iter() {
            sum += *t;
        }
        Ok(sum)
    }

    /// Traffic of a service, summed over CPUs.
    pub fn service_traffic(&self, id: u32) -> Result<Traffic, Error> {
        self.traffic("svc_traffic", id)
    }

    /// Traffic of a real-server slot, summed over CPUs.
    pub fn dest_traffic(&self, id: u32, slot: usize) -> Result<Traffic, Error> {
        self.traffic("dest_traffic", slot_index(id, slot))
    }

    /// Zeroes the traffic counters of a service and its slots (ipvsadm -Z).
    pub fn zero_traffic(&mut self, id: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Limit(e.to_string()))?;
        let zero = || {
            aya::maps::PerCpuValues::try_from(vec![Traffic::default(); cpus])
                .map_err(|e| Error::Limit(e.to_string()))
        };
        {
            let mut m: PerCpuArray<&mut MapData, Traffic> =
                PerCpuArray::try_from(self.map_mut("svc_traffic")?)?;
            m.set(id, zero()?, 0)?;
        }
        let mut m: PerCpuArray<&mut MapData, Traffic> =
            PerCpuArray::try_from(self.map_mut("dest_traffic")?)?;
        for slot in 0..MAX_DESTS as usize {
            m.set(slot_index(id, slot), zero()?, 0)?;
        }
        Ok(())
    }

    /// The tracked connections (one per flow), as ipvsadm -Lnc lists them.
    pub fn connections(&self) -> Result<Vec<Connection>, Error> {
        let now = self.now();
        let map: HashMap<&MapData, FlowKey, Conn> = HashMap::try_from(self.map("conns")?)?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let Ok((_, c)) = entry else { continue };
            if c.flags & CONN_F_REPLY != 0 || c.expires <= now {
                continue;
            }
            out.push(Connection {
                proto: c.proto,
                client: (addr(c.client), u16::from_be(c.cport)),
                vip: (addr(c.vip), u16::from_be(c.vport)),
                rip: (addr(c.rip), u16::from_be(c.rport)),
                state: STATE_NAMES.get(c.state as usize).copied().unwrap_or("?"),
                expires_in: Duration::from_nanos(c.expires - now),
                service: c.svc,
                slot: c.dest,
            });
        }
        Ok(out)
    }

    /// Expires the connections whose time is up (and orphaned reply entries), through the
    /// program's own `xdp_expire` so the per-server counts change atomically with the data
    /// path. Also drops expired persistence templates. Returns how many expired.
    pub fn sweep(&mut self) -> Result<usize, Error> {
        // Re-based if it can be; a sweep does not depend on it.
        let _ = self.set_clock();
        let now = self.now();
        let due: Vec<FlowKey> = {
            let map: HashMap<&MapData, FlowKey, Conn> = HashMap::try_from(self.map("conns")?)?;
            map.iter()
                .filter_map(Result::ok)
                .filter(|(_, c)| c.expires <= now)
                .map(|(k, _)| k)
                .collect()
        };
        let mut expired = 0;
        let mut frame = [0u8; 14 + 16];
        for key in due {
            frame[14..18].copy_from_slice(&key.src.to_ne_bytes());
            frame[18..22].copy_from_slice(&key.dst.to_ne_bytes());
            frame[22..24].copy_from_slice(&key.sport.to_ne_bytes());
            frame[24..26].copy_from_slice(&key.dport.to_ne_bytes());
            frame[26] = key.proto;
            if self.run(EXPIRE, &frame, 1)?.verdict == Verdict::Drop {
                expired += 1;
            }
        }
        let mut persist: HashMap<&mut MapData, PersistKey, PersistValue> =
            HashMap::try_from(self.map_mut("persist")?)?;
        let stale: Vec<PersistKey> = persist
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.expires <= now)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = persist.remove(&k);
        }
        Ok(expired)
    }

    /// Persistence templates: (service id, client network, slot, time left).
    pub fn templates(&self) -> Result<Vec<(u32, Ipv4Addr, u32, Duration)>, Error> {
        let now = self.now();
        let map: HashMap<&MapData, PersistKey, PersistValue> =
            HashMap::try_from(self.map("persist")?)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.expires > now)
            .map(|(k, v)| {
                (
                    k.svc,
                    addr(k.client),
                    v.dest,
                    Duration::from_nanos(v.expires - now),
                )
            })
            .collect())
    }

    /// How many connections the table holds (two entries each, for NAT's replies).
    pub fn max_connections(&self) -> u32 {
        match self.ebpf.map("conns") {
            Some(Map::LruHashMap(d)) => d.info().map_or(0, |i| i.max_entries() / 2),
            _ => 0,
        }
    }

    /// The kernel memory each map holds (its `memlock` in fdinfo), largest first.
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        use std::os::fd::{AsFd, AsRawFd};
        let mut out = Vec::new();
        for name in PINNED_MAPS {
            let data = match self.ebpf.map(name) {
                Some(
                    Map::Array(d)
                    | Map::HashMap(d)
                    | Map::LruHashMap(d)
                    | Map::PerCpuArray(d)
                    | Map::PerCpuHashMap(d),
                ) => d,
                _ => continue,
            };
            let Ok(fd) = data.info().and_then(|i| i.fd()) else {
                continue;
            };
            let raw = fd.as_fd().as_raw_fd();
            let bytes = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("memlock:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0);
            out.push((name, bytes));
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.1));
        out
    }

    /// The packets counted for a reason, summed over CPUs.
    pub fn count(&self, reason: Reason) -> Result<u64, Error> {
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map("stats")?)?;
        Ok(stats.get(&(reason as u32), 0)?.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::tick_length;

    #[test]
    fn a_measured_tick_snaps_to_the_kernels_tick_nsec() {
        assert_eq!(tick_length(4_000_000), 4_000_000);
        assert_eq!(tick_length(3_900_000), 4_000_000);
        assert_eq!(tick_length(3_333_334), 3_333_333);
        assert_eq!(tick_length(10_000_000), 10_000_000);
        assert_eq!(tick_length(1_020_000), 1_000_000);
        // HZ=500 is not among the common ones: taken as measured.
        assert_eq!(tick_length(2_000_000), 2_000_000);
    }
}
