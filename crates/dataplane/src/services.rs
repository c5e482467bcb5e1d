//! Virtual services and their real-server slots as the control plane writes them, with
//! their scheduler tables and state, and the counters read back.

use super::connections::addr;
use super::*;

/// How a real server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Nat,
    Dr,
    Tun(Tunnel),
}

impl Method {
    /// ipvsadm's name for it (`Masq`, `Route`, `Tunnel`).
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Method::Nat => "Masq",
            Method::Dr => "Route",
            Method::Tun(_) => "Tunnel",
        }
    }
}

/// IPVS's tunnel types (ipvsadm --tun-type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunKind {
    #[default]
    Ipip,
    Gue,
    Gre,
}

impl TunKind {
    pub fn name(self) -> &'static str {
        match self {
            TunKind::Ipip => "ipip",
            TunKind::Gue => "gue",
            TunKind::Gre => "gre",
        }
    }
}

/// The outer checksum of a gue or gre tunnel (ipvsadm --tun-nocsum, --tun-csum,
/// --tun-remcsum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunCsum {
    #[default]
    NoCsum,
    Csum,
    RemCsum,
}

impl TunCsum {
    pub fn name(self) -> &'static str {
        match self {
            TunCsum::NoCsum => "nocsum",
            TunCsum::Csum => "csum",
            TunCsum::RemCsum => "remcsum",
        }
    }
}

/// A TUN real server's tunnel: its type, the UDP port (gue) and the checksum option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tunnel {
    pub kind: TunKind,
    /// gue: the port the real server decapsulates on; 0 otherwise.
    pub port: u16,
    pub csum: TunCsum,
}

/// A real server in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestSpec {
    /// Of the service's family (IPv6 real servers for an IPv6 service).
    pub addr: IpAddr,
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
    /// TUN: the outer source address, the director's own towards the server (None until
    /// the route to it is known).
    pub tun_source: Option<IpAddr>,
}

impl DestSpec {
    /// A real server with no thresholds, not overloaded, its link and tunnel source not
    /// known yet.
    pub fn new(addr: impl Into<IpAddr>, port: u16, method: Method, weight: u32) -> DestSpec {
        DestSpec {
            addr: addr.into(),
            port,
            method,
            weight,
            overloaded: false,
            u_threshold: 0,
            l_threshold: 0,
            link: None,
            tun_source: None,
        }
    }
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
    /// IPVS's sloppy_tcp for this service: a TCP segment other than a SYN (but not a
    /// RST) with no connection entry is scheduled instead of handed to the kernel, so a
    /// flow moved here mid-way (ECMP over several directors) keeps going with mh.
    pub sloppy_tcp: bool,
    /// One-packet scheduling (UDP).
    pub ops: bool,
    /// Persistence timeout in seconds, and how it groups clients (a netmask for IPv4, a
    /// prefix length for IPv6).
    pub persistence: Option<(u32, Granularity)>,
    pub dests: Vec<Option<DestSpec>>,
    /// IPVS's list order of the present slots, the newest real server first: the kernel
    /// puts a server it adds at the head of the service's list, and the schedulers that
    /// walk the list (rr, wrr, the least-connection family, fo, ovf, lblc, lblcr, twos)
    /// and the dh and sh tables follow that order. Present slots missing here follow,
    /// highest slot first (the order of servers added in slot order).
    pub list: Vec<usize>,
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

pub(crate) fn sched_code(kind: Scheduler) -> u8 {
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
            sloppy_tcp: false,
            ops: false,
            persistence: None,
            dests: Vec::new(),
            list: Vec::new(),
        }
    }

    /// Every slot in the order the schedulers scan them: the present ones in list order
    /// (see `list`), then the holes.
    pub fn scan_order(&self) -> Vec<usize> {
        let present = |slot: usize| self.dests.get(slot).is_some_and(Option::is_some);
        let mut order: Vec<usize> = Vec::with_capacity(self.dests.len());
        for &slot in &self.list {
            if present(slot) && !order.contains(&slot) {
                order.push(slot);
            }
        }
        let unlisted: Vec<usize> = (0..self.dests.len())
            .rev()
            .filter(|s| present(*s) && !order.contains(s))
            .collect();
        order.extend(unlisted);
        order.extend((0..self.dests.len()).filter(|s| !present(*s)));
        order
    }

    /// The present servers in list order, as the reference model sees them, with the
    /// slot of each.
    pub fn model_dests(&self) -> Vec<(usize, fulcrum_sched::Dest)> {
        self.scan_order()
            .into_iter()
            .filter_map(|slot| {
                self.dests[slot].map(|d| {
                    let mut m = fulcrum_sched::Dest::new(d.addr, d.port, d.weight);
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
            (self.sloppy_tcp, SVC_F_SLOPPY_TCP),
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
        let (timeout, mask) = match self.persistence {
            None => (0, 0),
            Some((t, Granularity::Mask(m))) => (t, u32::from_ne_bytes(m.octets())),
            // The IPv6 path reads the prefix length as a number.
            Some((t, Granularity::Prefix(p))) => (t, u32::from(p)),
        };
        ServiceValue {
            id: self.id,
            sched: sched_code(self.scheduler),
            flags,
            ndests: self.dests.len() as u16,
            persist_timeout: timeout,
            persist_mask: mask,
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

/// An address as the program keeps it in 32 bits: IPv4 as it lies in the packet; IPv6
/// folded as IPVS folds it for its hashes (the XOR of its four words), as the program's
/// `fold6`.
pub(crate) fn folded(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |x, w| x ^ w),
    }
}

pub(crate) fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(crate) fn slot_index(id: u32, slot: usize) -> u32 {
    id * MAX_DESTS + slot as u32
}

impl DataPlane {
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
            spec.sloppy_tcp = v.flags & SVC_F_SLOPPY_TCP != 0;
            spec.ops = v.flags & SVC_F_OPS != 0;
            if v.flags & SVC_F_PERSISTENT != 0 {
                let g = if key.family == 6 {
                    Granularity::Prefix(v.persist_mask.clamp(1, 128) as u8)
                } else {
                    Granularity::Mask(addr(v.persist_mask))
                };
                spec.persistence = Some((v.persist_timeout, g));
            }
            let dests6: Array<&MapData, [u8; 16]> = Array::try_from(self.map("dests6")?)?;
            let tun_src6: Array<&MapData, [u8; 16]> = Array::try_from(self.map("tun_src6")?)?;
            for slot in 0..usize::from(v.ndests) {
                let d = dests.get(&slot_index(v.id, slot), 0)?;
                let source6 = std::net::Ipv6Addr::from(tun_src6.get(&slot_index(v.id, slot), 0)?);
                let ip: IpAddr = if key.family == 6 {
                    let a = std::net::Ipv6Addr::from(dests6.get(&slot_index(v.id, slot), 0)?);
                    a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)
                } else if d.flags & DEST_F_V6 != 0 {
                    std::net::Ipv6Addr::from(dests6.get(&slot_index(v.id, slot), 0)?).into()
                } else {
                    addr(d.addr).into()
                };
                spec.dests
                    .push((d.flags & DEST_F_PRESENT != 0).then(|| DestSpec {
                        addr: ip,
                        port: u16::from_be(d.port),
                        method: match d.method {
                            METHOD_DR => Method::Dr,
                            METHOD_TUN => Method::Tun(Tunnel {
                                kind: match d.tun_type {
                                    TUN_GUE => TunKind::Gue,
                                    TUN_GRE => TunKind::Gre,
                                    _ => TunKind::Ipip,
                                },
                                port: u16::from_be(d.tun_port),
                                csum: if d.tun_flags & TUN_F_REMCSUM != 0 {
                                    TunCsum::RemCsum
                                } else if d.tun_flags & TUN_F_CSUM != 0 {
                                    TunCsum::Csum
                                } else {
                                    TunCsum::NoCsum
                                },
                            }),
                            _ => Method::Nat,
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
                        tun_source: match ip {
                            IpAddr::V6(_) => (!source6.is_unspecified()).then_some(source6.into()),
                            IpAddr::V4(_) => {
                                (d.tun_saddr != 0).then(|| IpAddr::V4(addr(d.tun_saddr)))
                            }
                        },
                    }));
            }
            let order: Array<&MapData, u32> = Array::try_from(self.map("sched_order")?)?;
            for pos in 0..spec.dests.len() {
                let slot = order.get(&slot_index(v.id, pos), 0)? as usize;
                if slot > 0 && spec.dests.get(slot - 1).is_some_and(Option::is_some) {
                    spec.list.push(slot - 1);
                }
            }
            out.push(spec);
        }
        Ok(out)
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
        let v6 = spec.key.family == 6;
        // IPVS mixes the families only for TUN (IPv6 in IPv4, IPv4 in IPv6).
        if spec
            .dests
            .iter()
            .flatten()
            .any(|d| d.addr.is_ipv6() != v6 && !matches!(d.method, Method::Tun(_)))
        {
            return Err(Error::Limit(
                "a real server of the other address family than its service is reached only by TUN (as IPVS)".into(),
            ));
        }
        {
            let mut dests6: Array<&mut MapData, [u8; 16]> =
                Array::try_from(self.map_mut("dests6")?)?;
            for (slot, d) in spec.dests.iter().enumerate() {
                // An IPv6 service's IPv4 real server (TUN) as an IPv4-mapped address.
                match d.map(|d| d.addr) {
                    Some(IpAddr::V6(a)) => dests6.set(slot_index(id, slot), a.octets(), 0)?,
                    Some(IpAddr::V4(a)) if v6 => {
                        dests6.set(slot_index(id, slot), a.to_ipv6_mapped().octets(), 0)?
                    }
                    _ => {}
                }
            }
            let mut tun_src6: Array<&mut MapData, [u8; 16]> =
                Array::try_from(self.map_mut("tun_src6")?)?;
            for (slot, d) in spec.dests.iter().enumerate() {
                let source = match d.and_then(|d| d.tun_source) {
                    Some(IpAddr::V6(a)) => a.octets(),
                    _ => [0; 16],
                };
                let index = slot_index(id, slot);
                if tun_src6.get(&index, 0)? != source {
                    tun_src6.set(index, source, 0)?;
                }
            }
        }
        let mut moved = false;
        // Slots whose server goes (out, or another server in its place), and the slots
        // holding one after.
        let mut retired = Vec::new();
        let mut present = 0u128;
        {
            let mut dests: Array<&mut MapData, Dest> = Array::try_from(self.map_mut("dests")?)?;
            for slot in 0..MAX_DESTS as usize {
                let index = slot_index(id, slot);
                let before = dests.get(&index, 0)?;
                let d = match spec.dests.get(slot).copied().flatten() {
                    Some(d) => {
                        let addr = folded(d.addr);
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
                                Method::Tun(_) => METHOD_TUN,
                            },
                            flags: DEST_F_PRESENT
                                | if overloaded { DEST_F_OVERLOADED } else { 0 }
                                | if d.addr.is_ipv6() && !v6 {
                                    DEST_F_V6
                                } else {
                                    0
                                },
                            weight: d.weight,
                            ifindex: d.link.map_or(0, |l| l.ifindex),
                            mac: d.link.map_or([0; 6], |l| l.mac),
                            smac: d.link.map_or([0; 6], |l| l.smac),
                            u_threshold: d.u_threshold,
                            l_threshold: d.l_threshold,
                            tun_saddr: match d.tun_source {
                                Some(IpAddr::V4(a)) => u32::from_ne_bytes(a.octets()),
                                _ => 0,
                            },
                            tun_port: match d.method {
                                Method::Tun(t) => t.port.to_be(),
                                _ => 0,
                            },
                            tun_type: match d.method {
                                Method::Tun(t) => match t.kind {
                                    TunKind::Ipip => TUN_IPIP,
                                    TunKind::Gue => TUN_GUE,
                                    TunKind::Gre => TUN_GRE,
                                },
                                _ => 0,
                            },
                            tun_flags: match d.method {
                                Method::Tun(t) => match t.csum {
                                    TunCsum::NoCsum => 0,
                                    TunCsum::Csum => TUN_F_CSUM,
                                    TunCsum::RemCsum => TUN_F_REMCSUM,
                                },
                                _ => 0,
                            },
                        }
                    }
                    None => Dest::default(),
                };
                if d.flags & DEST_F_PRESENT != 0 {
                    present |= 1 << slot;
                }
                if before.flags & DEST_F_PRESENT != 0
                    && (d.flags & DEST_F_PRESENT == 0
                        || (d.addr, d.port) != (before.addr, before.port))
                {
                    retired.push(slot);
                }
                // Unchanged slots (most of them, on a weight change) are not rewritten.
                if d == before {
                    continue;
                }
                moved |= (d.addr, d.flags & DEST_F_PRESENT, d.ifindex, d.mac, d.smac)
                    != (
                        before.addr,
                        before.flags & DEST_F_PRESENT,
                        before.ifindex,
                        before.mac,
                        before.smac,
                    );
                dests.set(index, d, 0)?;
            }
        }
        // DR connections keep their server's next hop: told it changed.
        if moved {
            self.bump_route_generation()?;
        }
        for slot in retired {
            self.retire_traffic(id, slot)?;
        }
        self.present_slots.insert(id, present);
        {
            let mut order: Array<&mut MapData, u32> =
                Array::try_from(self.map_mut("sched_order")?)?;
            for (pos, slot) in spec.scan_order().into_iter().enumerate() {
                let index = slot_index(id, pos);
                let value = slot as u32 + 1;
                if order.get(&index, 0)? != value {
                    order.set(index, value, 0)?;
                }
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

    pub(crate) fn write_table(&mut self, spec: &ServiceSpec) -> Result<(), Error> {
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
    pub(crate) fn update_sched_state(&mut self, spec: &ServiceSpec) -> Result<(), Error> {
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
        self.bump_route_generation()?;
        // A service added later in this id starts from nothing, as a new one in IPVS.
        self.zero_traffic(id)?;
        self.present_slots.remove(&id);
        {
            let mut order: Array<&mut MapData, u32> =
                Array::try_from(self.map_mut("sched_order")?)?;
            for pos in 0..MAX_DESTS as usize {
                order.set(slot_index(id, pos), 0, 0)?;
            }
        }
        self.write_table(&empty)?;
        let mut state: Array<&mut MapData, SchedState> =
            Array::try_from(self.map_mut("sched_state")?)?;
        state.set(id, SchedState::default(), 0)?;
        Ok(())
    }

    /// Tells the program that routes, neighbours or real servers changed: next hops
    /// cached in connections are looked up again.
    pub fn bump_route_generation(&mut self) -> Result<(), Error> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(self.map_mut("settings")?)?;
        let g = map.get(&0, 0)?;
        map.set(0, g.wrapping_add(1), 0)?;
        Ok(())
    }

    /// Drops (or stops dropping) traffic to `addr` that no virtual service takes: a VIP of
    /// a VRRP master in no_accept mode. For an IPv6 address, VRRP and neighbour
    /// discovery still pass.
    /// The unicast MACs frames on interface `ifindex` may be addressed to, for the program
    /// to leave frames to any other MAC to the kernel (which drops them, as not this
    /// host's). Empty, or more than the program holds (8): every frame is taken. Two
    /// interfaces whose indexes share a slot (modulo 1024): the later one wins, the other
    /// takes every frame.
    pub fn set_host_macs(&mut self, ifindex: u32, macs: &[[u8; 6]]) -> Result<(), Error> {
        let mut value = HostMacs {
            ifindex,
            ..HostMacs::default()
        };
        if macs.len() <= value.mac.len() {
            value.n = macs.len() as u32;
            for (slot, mac) in value.mac.iter_mut().zip(macs) {
                slot[..6].copy_from_slice(mac);
            }
        }
        let mut map: Array<&mut MapData, HostMacs> = Array::try_from(self.map_mut("host_macs")?)?;
        let key = ifindex % HOST_MAC_SLOTS;
        if map.get(&key, 0)? != value {
            map.set(key, value, 0)?;
        }
        Ok(())
    }

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

    pub(crate) fn traffic(&self, map: &'static str, index: u32) -> Result<Traffic, Error> {
        let map: PerCpuArray<&MapData, Traffic> = PerCpuArray::try_from(self.map(map)?)?;
        let mut sum = Traffic::default();
        for t in map.get(&index, 0)?.iter() {
            sum += *t;
        }
        Ok(sum)
    }

    /// Traffic of a service: its real servers' summed, and what the servers it had
    /// before carried (IPVS counts each packet to the server and to its service).
    pub fn service_traffic(&self, id: u32) -> Result<Traffic, Error> {
        Ok(self.service_traffic_by_slot(id)?.0)
    }

    /// [`DataPlane::service_traffic`], with the traffic of each slot holding a real server
    /// that went into it: each slot read once, for callers that want both.
    pub fn service_traffic_by_slot(
        &self,
        id: u32,
    ) -> Result<(Traffic, Vec<(usize, Traffic)>), Error> {
        let retired: Array<&MapData, Traffic> = Array::try_from(self.map("svc_retired")?)?;
        let mut sum = retired.get(&id, 0)?;
        let present = self.present_slots.get(&id).copied().unwrap_or(u128::MAX);
        let mut slots = Vec::new();
        for slot in (0..MAX_DESTS as usize).filter(|s| present & (1 << s) != 0) {
            let t = self.dest_traffic(id, slot)?;
            sum += t;
            slots.push((slot, t));
        }
        Ok((sum, slots))
    }

    /// Moves the counts of the server leaving `slot` of service `id` into the service's
    /// retired counts, and zeroes the slot for the server that may take it next. A packet
    /// the program counts to the slot between the two (one already on its way as the
    /// server went) is lost to both.
    fn retire_traffic(&mut self, id: u32, slot: usize) -> Result<(), Error> {
        let carried = self.dest_traffic(id, slot)?;
        {
            let mut retired: Array<&mut MapData, Traffic> =
                Array::try_from(self.map_mut("svc_retired")?)?;
            let mut sum = retired.get(&id, 0)?;
            sum += carried;
            retired.set(id, sum, 0)?;
        }
        self.zero_dest_traffic(id, [slot])
    }

    /// Zeroes the traffic counts of `slots` of service `id`, on every CPU.
    fn zero_dest_traffic(
        &mut self,
        id: u32,
        slots: impl IntoIterator<Item = usize>,
    ) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Limit(e.to_string()))?;
        let mut m: PerCpuArray<&mut MapData, Traffic> =
            PerCpuArray::try_from(self.map_mut("dest_traffic")?)?;
        for slot in slots {
            let zero = aya::maps::PerCpuValues::try_from(vec![Traffic::default(); cpus])
                .map_err(|e| Error::Limit(e.to_string()))?;
            m.set(slot_index(id, slot), zero, 0)?;
        }
        Ok(())
    }

    /// Traffic of a real-server slot, summed over CPUs.
    pub fn dest_traffic(&self, id: u32, slot: usize) -> Result<Traffic, Error> {
        self.traffic("dest_traffic", slot_index(id, slot))
    }

    /// Zeroes the traffic counters of a service and its slots (ipvsadm -Z).
    pub fn zero_traffic(&mut self, id: u32) -> Result<(), Error> {
        {
            let mut m: Array<&mut MapData, Traffic> =
                Array::try_from(self.map_mut("svc_retired")?)?;
            m.set(id, Traffic::default(), 0)?;
        }
        self.zero_dest_traffic(id, 0..MAX_DESTS as usize)
    }

    /// The packets counted for a reason, summed over CPUs.
    pub fn count(&self, reason: Reason) -> Result<u64, Error> {
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map("stats")?)?;
        Ok(stats.get(&(reason as u32), 0)?.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(present: &[bool], list: &[usize]) -> ServiceSpec {
        let d = |i: usize| {
            DestSpec::new(
                Ipv4Addr::new(192, 168, 184, 129 + i as u8),
                80,
                Method::Nat,
                1,
            )
        };
        ServiceSpec {
            dests: (0..present.len())
                .map(|i| present[i].then(|| d(i)))
                .collect(),
            list: list.to_vec(),
            ..ServiceSpec::new(
                ServiceKey::v4(Ipv4Addr::new(10, 1, 10, 65), 80, 6),
                0,
                Scheduler::Rr,
            )
        }
    }

    #[test]
    fn the_scan_order_is_the_list_then_the_rest_newest_first_then_the_holes() {
        // No list: servers added in slot order, so the highest slot is the newest.
        assert_eq!(spec(&[true, true, true], &[]).scan_order(), vec![2, 1, 0]);
        assert_eq!(
            spec(&[true, true, true], &[0, 2]).scan_order(),
            vec![0, 2, 1]
        );
        // Holes, repeats and slots out of range in the list are left out of it.
        assert_eq!(
            spec(&[true, false, true], &[1, 0, 0, 7]).scan_order(),
            vec![0, 2, 1]
        );
        let s = spec(&[true, false, true], &[2, 0]);
        let slots: Vec<usize> = s.model_dests().into_iter().map(|(slot, _)| slot).collect();
        assert_eq!(slots, vec![2, 0]);
    }
}
