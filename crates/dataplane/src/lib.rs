//! Fulcrum's XDP data plane: the BPF program (bpf/, C, built by build.rs with clang) and
//! its loader. This crate and fulcrum-sys are the only ones with `unsafe`: here only to
//! tell aya that the structs shared with the program are plain old data.
//!
//! Today the program classifies every packet (not IP, malformed, fragment, IP options,
//! IPv6, no service, service) and counts it, and passes everything to the kernel: the
//! forwarding of layer-4 services (NAT, DR) is the next step. Fixtures run through
//! `BPF_PROG_TEST_RUN` (see tests/fixtures.rs).

use std::net::Ipv4Addr;
use std::time::Duration;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, Pod};

/// The program, 8-byte aligned as aya needs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fulcrum.bpf.o"));

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
}

/// A virtual service key: `struct service_key` in bpf/include/structs.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// `struct service_value` in bpf/include/structs.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceValue {
    pub id: u32,
    pub flags: u32,
}

// The C side asserts the same sizes with _Static_assert.
const _: () = assert!(std::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(std::mem::offset_of!(ServiceKey, port) == 16);
const _: () = assert!(std::mem::offset_of!(ServiceKey, proto) == 18);
const _: () = assert!(std::mem::offset_of!(ServiceKey, family) == 19);
const _: () = assert!(std::mem::size_of::<ServiceValue>() == 8);

// SAFETY: both are repr(C), made only of integers, with no padding (sizes asserted above),
// so every bit pattern is valid and they can be copied to and from the kernel as bytes.
unsafe impl Pod for ServiceKey {}
// SAFETY: as above.
unsafe impl Pod for ServiceValue {}

impl ServiceKey {
    pub fn v4(addr: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        ServiceKey {
            addr: a,
            port: port.to_be(),
            proto,
            family: 4,
        }
    }
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
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::NotIp,
        Reason::Malformed,
        Reason::Fragment,
        Reason::IpOptions,
        Reason::Ipv6,
        Reason::NoService,
        Reason::Service,
        Reason::OtherL4,
    ];
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

/// The loaded program and its maps (not attached to any interface).
#[derive(Debug)]
pub struct DataPlane {
    ebpf: Ebpf,
}

impl DataPlane {
    /// Loads the program into the kernel (CAP_BPF / root).
    pub fn load() -> Result<DataPlane, Error> {
        let mut ebpf = Ebpf::load(PROGRAM)?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_fulcrum")
            .ok_or(Error::Missing("xdp_fulcrum program"))?
            .try_into()?;
        program.load()?;
        Ok(DataPlane { ebpf })
    }

    fn program(&self) -> Result<&Xdp, Error> {
        Ok(self
            .ebpf
            .program("xdp_fulcrum")
            .ok_or(Error::Missing("xdp_fulcrum program"))?
            .try_into()?)
    }

    /// Runs the program on a frame with BPF_PROG_TEST_RUN, `repeat` times.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestOutcome, Error> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat.max(1);
        let r = self.program()?.test_run(opts)?;
        out.truncate(r.data_size_out as usize);
        Ok(TestOutcome {
            verdict: Verdict::from(r.return_value),
            frame: out,
            per_run: r.duration,
        })
    }

    /// Adds a virtual service.
    pub fn add_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), Error> {
        let map = self
            .ebpf
            .map_mut("services")
            .ok_or(Error::Missing("services map"))?;
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceValue> = HashMap::try_from(map)?;
        services.insert(key, value, 0)?;
        Ok(())
    }

    /// The packets counted for a reason, summed over CPUs.
    pub fn count(&self, reason: Reason) -> Result<u64, Error> {
        let map = self.ebpf.map("stats").ok_or(Error::Missing("stats map"))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(stats.get(&(reason as u32), 0)?.iter().sum())
    }
}
