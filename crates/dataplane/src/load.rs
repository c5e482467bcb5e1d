//! Loading the program, pinning and adopting its maps, attaching it to interfaces,
//! and running it on a frame (`BPF_PROG_TEST_RUN`).

use super::*;
use crate::connections::Table;

/// The IPv4 table's slots for `max_connections` connections: two entries each (NAT's
/// replies), the most the program lets in, and a fifth of the slots that always stay
/// free, so that few entries land outside their window and a free slot is always near.
pub(crate) fn conn_slots_for(max_connections: u32) -> u32 {
    (u64::from(max_connections) * 5 / 2).clamp(1024, u64::from(u32::MAX / 2)) as u32
}

/// Room for `max_connections` connections of each family (see [`conn_slots_for`]), and a
/// persistence template per two.
pub(crate) fn size_tables(loader: &mut EbpfLoader, max_connections: u32) {
    let slots = conn_slots_for(max_connections);
    for (table, stash, chunks) in [
        ("conn_slots", "conn_stash", "conn_chunks"),
        ("conn_slots6", "conn_stash6", "conn_chunks6"),
    ] {
        loader.map_max_entries(table, slots);
        // A window rarely overflows (about one entry in a hundred at the limit's fill):
        // the stash's hash buckets, allocated up front, need not be many.
        loader.map_max_entries(stash, (slots / 16).max(64));
        loader.map_max_entries(chunks, slots / CONN_CHUNK + 1);
    }
    loader.map_max_entries("persist", (max_connections / 2).max(1024));
    loader.map_max_entries("persist6", (max_connections / 2).max(1024));
}

/// Loads one program, again when the kernel says EAGAIN: the verifier gives up with it
/// when a signal arrives for the loading thread (a child process of the daemon exiting,
/// say), and a large program on a loaded machine verifies long enough to meet one. libbpf
/// retries the same way.
pub(crate) fn load_retrying(program: &mut Xdp) -> Result<(), Error> {
    const EAGAIN: i32 = 11;
    let mut tries = 0;
    loop {
        match program.load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(EAGAIN) && tries < 5 =>
            {
                tries += 1;
            }
            other => return Ok(other?),
        }
    }
}

/// Loads the entry points of the object into the kernel, and puts the IPv6 one where the
/// IPv4 one tail-calls it. Each is loaded on a thread of its own: the kernel's verifier
/// takes most of a start (about 1.3 s for the seven on the AMD host of 2026-12-07, one
/// after the other), and checks each program on the calling thread.
pub(crate) fn load_programs(ebpf: &mut Ebpf) -> Result<(), Error> {
    const NAMES: [&str; 7] = [MAIN, MAIN6, EXPIRE, EXPIRE6, CLOCK, ADOPT, ADOPT6];
    let mut programs = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        if NAMES.contains(&name) {
            let program: &mut Xdp = program.try_into()?;
            programs.push(program);
        }
    }
    if programs.len() != NAMES.len() {
        return Err(Error::Missing("an XDP program"));
    }
    std::thread::scope(|s| {
        let loads: Vec<_> = programs
            .into_iter()
            .map(|program| s.spawn(move || load_retrying(program)))
            .collect();
        loads.into_iter().try_for_each(|l| {
            l.join()
                .unwrap_or_else(|_| Err(Error::Limit("loading a program panicked".into())))
        })
    })?;
    let fd = {
        let program: &Xdp = ebpf
            .program(MAIN6)
            .ok_or(Error::Missing("an XDP program"))?
            .try_into()?;
        program
            .fd()?
            .try_clone()
            .map_err(|e| Error::Limit(e.to_string()))?
    };
    let mut progs: ProgramArray<&mut MapData> = ProgramArray::try_from(
        ebpf.map_mut("progs")
            .ok_or(Error::Missing("the progs map"))?,
    )?;
    progs.set(0, &fd, 0)?;
    Ok(())
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
            present_slots: Default::default(),
            tick_ns: 0,
            pin_dir: None,
            conn_views: Default::default(),
        };
        dp.init_conn_table(Some(max_connections))?;
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
        let adopted = dir.join("conn_slots").exists() && dir.join("conn_slots6").exists();
        let paths: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|n| (*n, dir.join(n))).collect();
        if !adopted {
            // Maps without the connection tables they belong with (a build whose IPv4
            // table was a hash map named `conns`, or whose IPv6 table was `conns6`): their
            // counts of connections that are not carried over would be wrong from the start.
            let old = [dir.join("conns"), dir.join("conns6")];
            for path in paths.iter().map(|(_, p)| p).chain(&old) {
                let _ = std::fs::remove_file(path);
            }
        }
        // A map no build uses any more (services' counts, which the program kept before
        // they became their servers' summed): left pinned, it would stay allocated.
        let _ = std::fs::remove_file(dir.join("svc_traffic"));
        let load = || -> Result<aya::Ebpf, Error> {
            let mut loader = EbpfLoader::new();
            if let Some(n) = max_connections {
                size_tables(&mut loader, n);
            }
            for (name, path) in &paths {
                loader.map_pin_path(name, path.as_path());
            }
            let mut ebpf = loader.load(PROGRAM)?;
            load_programs(&mut ebpf)?;
            Ok(ebpf)
        };
        let (ebpf, adopted) = match load() {
            Ok(ebpf) => (ebpf, adopted),
            // Maps pinned by another build whose layout this program does not take (an
            // upgrade that changed a map's value): start afresh rather than not at all.
            // Their connections are lost, as IPVS's are when its module reloads.
            Err(e) if adopted => {
                tracing::warn!(
                    dir = %dir.display(),
                    "the pinned data plane does not fit this build ({e}); starting a fresh one: its connections are lost"
                );
                for (_, path) in &paths {
                    let _ = std::fs::remove_file(path);
                }
                (load()?, false)
            }
            Err(e) => return Err(e),
        };
        let mut dp = DataPlane {
            ebpf,
            table_sizes: Default::default(),
            present_slots: Default::default(),
            tick_ns: 0,
            pin_dir: Some(dir.to_path_buf()),
            conn_views: Default::default(),
        };
        // A table adopted keeps its hash and size (its entries sit where they hash to).
        dp.init_conn_table(max_connections)?;
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

    pub(crate) fn program(&self, name: &'static str) -> Result<&Xdp, Error> {
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

    pub(crate) fn run(
        &self,
        name: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestOutcome, Error> {
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

    /// How many connections the table holds (two entries each, for NAT's replies; see
    /// [`conn_slots_for`]).
    pub fn max_connections(&self) -> u32 {
        self.conn_hash().map_or(0, |h| h.limit / 2)
    }

    /// The IPv4 connection table's slots, and how many of its entries sit outside their
    /// window (found through the stash).
    pub fn conn_table(&self) -> Result<(u32, u64), Error> {
        Ok((self.conn_slots(), self.conn_hash()?.stashed))
    }

    /// [`DataPlane::conn_table`] for the IPv6 table.
    pub fn conn_table6(&self) -> Result<(u32, u64), Error> {
        let map: Array<&MapData, ConnHash6> = Array::try_from(self.map("conn_hash6")?)?;
        Ok((self.slots_of(Table::V6), map.get(&0, 0)?.h.stashed))
    }

    fn conn_hash(&self) -> Result<ConnHash, Error> {
        let map: Array<&MapData, ConnHash> = Array::try_from(self.map("conn_hash")?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Gives the empty IPv4 table a chosen hash (two odd multipliers, and the mixing
    /// one, whose 0 sends every key to the first slot's window): for tests and
    /// benchmarks that need flows to share a window. Refused when the table holds
    /// entries, which sit where the old hash put them.
    pub fn set_conn_hash(&mut self, mul0: u64, mul1: u64, mul2: u64) -> Result<(), Error> {
        let mut map: Array<&mut MapData, ConnHash> = Array::try_from(self.map_mut("conn_hash")?)?;
        let h = chosen_hash(map.get(&0, 0)?, mul0, mul1, mul2)?;
        map.set(0, h, 0)?;
        Ok(())
    }

    /// [`DataPlane::set_conn_hash`] for the IPv6 table (its address multipliers stay).
    pub fn set_conn_hash6(&mut self, mul0: u64, mul1: u64, mul2: u64) -> Result<(), Error> {
        let mut map: Array<&mut MapData, ConnHash6> = Array::try_from(self.map_mut("conn_hash6")?)?;
        let h = map.get(&0, 0)?;
        let h = ConnHash6 {
            h: chosen_hash(h.h, mul0, mul1, mul2)?,
            ..h
        };
        map.set(0, h, 0)?;
        Ok(())
    }

    /// The slots of the IPv4 connection table.
    pub(crate) fn conn_slots(&self) -> u32 {
        self.slots_of(Table::V4)
    }

    /// The slots of a connection table.
    pub(crate) fn slots_of(&self, table: Table) -> u32 {
        match self.ebpf.map(table.maps().0) {
            Some(Map::Array(d)) => d.info().map_or(0, |i| i.max_entries()),
            _ => 0,
        }
    }

    /// Gives each new connection table (IPv4's, IPv6's) its size, its limit (two entries
    /// per connection of `max_connections`; None: the default the table was sized for)
    /// and a random hash (odd multipliers); one adopted from a previous run already has
    /// them (its entries sit where they put them).
    fn init_conn_table(&mut self, max_connections: Option<u32>) -> Result<(), Error> {
        let random = || {
            random_u64()
                .map(|m| m | 1)
                .map_err(|e| Error::Limit(format!("a random hash for the connection table: {e}")))
        };
        let fresh = |slots: u32| -> Result<ConnHash, Error> {
            Ok(ConnHash {
                mul0: random()?,
                mul1: random()?,
                mul2: random()?,
                stashed: 0,
                live: 0,
                slots,
                limit: max_connections
                    .map_or(u64::from(slots) * 4 / 5, |m| u64::from(m) * 2)
                    .min(u64::from(slots)) as u32,
            })
        };
        let slots = self.slots_of(Table::V4);
        let mut map: Array<&mut MapData, ConnHash> = Array::try_from(self.map_mut("conn_hash")?)?;
        if map.get(&0, 0)?.slots != slots {
            map.set(0, fresh(slots)?, 0)?;
        }
        let slots = self.slots_of(Table::V6);
        let mut map: Array<&mut MapData, ConnHash6> = Array::try_from(self.map_mut("conn_hash6")?)?;
        if map.get(&0, 0)?.h.slots != slots {
            let params = ConnHash6 {
                h: fresh(slots)?,
                amul: [random()?, random()?, random()?, random()?],
            };
            map.set(0, params, 0)?;
        }
        Ok(())
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
}

/// Table parameters `h` with a chosen hash (see [`DataPlane::set_conn_hash`]).
fn chosen_hash(h: ConnHash, mul0: u64, mul1: u64, mul2: u64) -> Result<ConnHash, Error> {
    if h.live != 0 || mul0 & mul1 & 1 == 0 {
        return Err(Error::Limit(
            "a new hash needs an empty table and odd multipliers".into(),
        ));
    }
    Ok(ConnHash {
        mul0,
        mul1,
        mul2,
        ..h
    })
}

/// Eight bytes from the kernel's random source.
fn random_u64() -> std::io::Result<u64> {
    use std::io::Read;
    let mut b = [0; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}
