//! The TUN decapsulator for real servers (`fulcrum decap IFACE`): bpf/decap.c attached to
//! an interface, its link and maps pinned in a directory so it stays attached when the
//! command ends, and its counters read back.

use super::*;

/// The decapsulator, 8-byte aligned as aya needs.
static DECAP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.bpf.o"));

const DECAP_PROGRAM: &str = "xdp_decap";

/// What the decapsulator counted: `enum decap_stat` in bpf/decap.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecapCounters {
    pub ipip: u64,
    pub gue: u64,
    pub gre: u64,
    /// Tunnel packets too short or of an unknown form, passed as they were.
    pub malformed: u64,
    /// Everything else, passed.
    pub other: u64,
}

/// Attaches the decapsulator to `ifname` (native mode where the driver has it, else
/// generic), taking off gue on `gue_ports`, with its link and maps pinned in `dir`. A
/// decapsulator already pinned there is replaced atomically (its counters kept). Returns
/// the mode.
pub fn attach_decap(dir: &Path, ifname: &str, gue_ports: &[u16]) -> Result<AttachMode, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Pin(dir.into(), e.to_string()))?;
    let mut loader = EbpfLoader::new();
    for name in ["decap_stats", "decap_gue_ports"] {
        loader.map_pin_path(name, dir.join(name));
    }
    let mut ebpf = loader.load(DECAP)?;
    set_gue_ports(&mut ebpf, gue_ports)?;
    let program: &mut Xdp = ebpf
        .program_mut(DECAP_PROGRAM)
        .ok_or(Error::Missing("the decapsulator"))?
        .try_into()?;
    crate::load::load_retrying(program)?;
    let link_path = dir.join("link");
    let pin_err = |e: String| Error::Pin(link_path.clone(), e);
    if link_path.exists() {
        let pinned = PinnedLink::from_pin(&link_path).map_err(|e| pin_err(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(e.to_string()))?;
        program.attach_to_link(link)?;
        return Ok(AttachMode::Adopted);
    }
    let (id, mode) = match program.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, AttachMode::Native),
        Err(_) => (program.attach(ifname, XdpMode::Skb)?, AttachMode::Generic),
    };
    let link = program.take_link(id)?;
    let fd = FdLink::try_from(link).map_err(|e| pin_err(e.to_string()))?;
    fd.pin(&link_path).map_err(|e| pin_err(e.to_string()))?;
    Ok(mode)
}

/// The gue ports become exactly `gue_ports` (a pinned map may hold an earlier run's).
fn set_gue_ports(ebpf: &mut Ebpf, gue_ports: &[u16]) -> Result<(), Error> {
    let mut ports: HashMap<&mut MapData, u16, u8> = HashMap::try_from(
        ebpf.map_mut("decap_gue_ports")
            .ok_or(Error::Missing("decap_gue_ports map"))?,
    )?;
    let old: Vec<u16> = ports.keys().filter_map(Result::ok).collect();
    for p in old {
        let _ = ports.remove(&p);
    }
    for p in gue_ports {
        ports.insert(p.to_be(), 1, 0)?;
    }
    Ok(())
}

/// Detaches the decapsulator pinned in `dir` and removes its pins. Whether there was one.
pub fn detach_decap(dir: &Path) -> Result<bool, Error> {
    if !dir.join("link").exists() {
        return Ok(false);
    }
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::Pin(dir.into(), e.to_string()))?
        .flatten()
    {
        let _ = std::fs::remove_file(e.path());
    }
    let _ = std::fs::remove_dir(dir);
    Ok(true)
}

/// The counters of the decapsulator pinned in `dir`, summed over the CPUs.
pub fn decap_counters(dir: &Path) -> Result<DecapCounters, Error> {
    let path = dir.join("decap_stats");
    let data = MapData::from_pin(&path).map_err(|e| Error::Pin(path.clone(), e.to_string()))?;
    let map = Map::PerCpuArray(data);
    let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(&map)?;
    let sum = |i: u32| -> Result<u64, Error> { Ok(stats.get(&i, 0)?.iter().sum()) };
    Ok(DecapCounters {
        ipip: sum(0)?,
        gue: sum(1)?,
        gre: sum(2)?,
        malformed: sum(3)?,
        other: sum(4)?,
    })
}

/// Runs the decapsulator once on a frame (BPF_PROG_TEST_RUN), unattached and unpinned:
/// for tests. The verdict and the frame as it left it.
pub fn decap_test_run(frame: &[u8], gue_ports: &[u16]) -> Result<TestOutcome, Error> {
    let mut ebpf = EbpfLoader::new().load(DECAP)?;
    set_gue_ports(&mut ebpf, gue_ports)?;
    let program: &mut Xdp = ebpf
        .program_mut(DECAP_PROGRAM)
        .ok_or(Error::Missing("the decapsulator"))?
        .try_into()?;
    crate::load::load_retrying(program)?;
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = program.test_run(opts)?;
    out.truncate(r.data_size_out as usize);
    Ok(TestOutcome {
        verdict: Verdict::from(r.return_value),
        frame: out,
        per_run: r.duration,
    })
}
