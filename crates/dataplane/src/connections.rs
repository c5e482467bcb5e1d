//! The connection table: IPVS's timeouts, the connections and persistence templates
//! as ipvsadm -Lnc lists them, and the sweep that expires them.

use std::os::fd::AsFd;

use super::*;

/// A connection as the control plane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub proto: u8,
    pub client: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub rip: (IpAddr, u16),
    pub state: &'static str,
    /// Time left before it expires.
    pub expires_in: Duration,
    pub service: u32,
    pub slot: u16,
    /// The state as the program numbers it (IPVS's TCP states; STATE_UDP for UDP).
    pub state_code: u8,
    pub method: Method,
    /// The state's timeout, seconds.
    pub timeout: u32,
    /// Its deadline on the program's clock (ns): moves when traffic goes by.
    pub deadline: u64,
    /// Packets from the client so far, wrapping at 16 bits.
    pub packets: u16,
}

/// A persistence template as the program holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub service: u32,
    /// The client's network (address & persistence mask, or an IPv6 address's prefix).
    pub client: IpAddr,
    pub slot: u32,
    pub expires_in: Duration,
    /// Its deadline on the program's clock (ns): moves when a new connection uses it.
    pub deadline: u64,
}

/// Removes the persistence templates of a template map that ran out by `now`.
fn drop_stale<K: aya::Pod>(map: &mut Map, now: u64) -> Result<(), Error> {
    let mut templates: HashMap<&mut MapData, K, PersistValue> = HashMap::try_from(map)?;
    let stale: Vec<K> = templates
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| v.expires <= now)
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        let _ = templates.remove(&k);
    }
    Ok(())
}

/// A connection a sync master sent, resolved to this director's service and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub proto: u8,
    /// All three of one family.
    pub client: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub rip: (IpAddr, u16),
    /// The program's numbering (IPVS's TCP states; STATE_UDP for UDP).
    pub state: u8,
    pub service: u32,
    pub slot: u16,
    pub method: Method,
    /// Seconds from now until it runs out (the state's timeout, as the master sent it).
    pub timeout: u32,
}

/// What adopting a synced connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    Installed,
    Updated,
    /// The connection table is full: not installed (counted as table_full).
    Full,
}

pub(crate) fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// One of the two connection tables, each with its own maps (conntab.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    V4 = 0,
    V6 = 1,
}

impl Table {
    /// Its slots' map and its live counts' map.
    pub(crate) fn maps(self) -> (&'static str, &'static str) {
        match self {
            Table::V4 => ("conn_slots", "conn_chunks"),
            Table::V6 => ("conn_slots6", "conn_chunks6"),
        }
    }

    pub(crate) fn slot_bytes(self) -> usize {
        match self {
            Table::V4 => std::mem::size_of::<ConnSlot>(),
            Table::V6 => std::mem::size_of::<ConnSlot6>(),
        }
    }
}

impl DataPlane {
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

    /// Calls `f` with the words of each live slot of a connection table, read through a
    /// mapping of the table (no system call per entry), skipping the chunks whose live
    /// count is zero. A slot is taken only if its tag reads the same before and after
    /// its entry: one that changed meanwhile is left out of this reading.
    fn each_live_slot(&self, table: Table, mut f: impl FnMut(&[u64])) -> Result<(), Error> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let words_per_slot = table.slot_bytes() / 8;
        let (slots, chunks) = self.conn_view(table)?;
        let words = slots.words();
        // Room for the larger slot, IPv6's.
        let mut copy = [0u64; std::mem::size_of::<ConnSlot6>() / 8];
        let copy = &mut copy[..words_per_slot];
        for (chunk, live) in chunks.words().iter().enumerate() {
            if live.load(Relaxed) == 0 {
                continue;
            }
            let from = chunk * CONN_CHUNK as usize * words_per_slot;
            let to = (from + CONN_CHUNK as usize * words_per_slot).min(words.len());
            for w in words
                .get(from..to)
                .unwrap_or_default()
                .chunks_exact(words_per_slot)
            {
                let tag = w[0].load(Acquire);
                if tag & SLOT_STATE != SLOT_LIVE {
                    continue;
                }
                for (c, word) in copy.iter_mut().zip(w) {
                    *c = word.load(Relaxed);
                }
                if w[0].load(Acquire) != tag {
                    continue;
                }
                copy[0] = tag;
                f(copy);
            }
        }
        Ok(())
    }

    /// Calls `f` with each live slot of the IPv4 table (see `each_live_slot`).
    pub(crate) fn each_slot(&self, mut f: impl FnMut(&ConnSlot)) -> Result<(), Error> {
        self.each_live_slot(Table::V4, |w| {
            let mut c = [0u8; 72];
            for (i, word) in w[4..].iter().enumerate() {
                c[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
            }
            f(&ConnSlot {
                tag: w[0],
                w0: w[1],
                w1: w[2],
                reach: w[3] as u32,
                pad: (w[3] >> 32) as u32,
                c: Conn::from_bytes(&c),
            });
        })
    }

    /// Calls `f` with the entry of each live slot of the IPv6 table.
    pub(crate) fn each_slot6(&self, mut f: impl FnMut(&Conn6)) -> Result<(), Error> {
        self.each_live_slot(Table::V6, |w| {
            let mut c = [0u8; 120];
            for (i, word) in w[4..].iter().enumerate() {
                c[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
            }
            f(&Conn6::from_bytes(&c));
        })
    }

    fn conn_view(
        &self,
        table: Table,
    ) -> Result<&(fulcrum_sys::SharedMemory, fulcrum_sys::SharedMemory), Error> {
        let view = &self.conn_views[table as usize];
        if let Some(v) = view.get() {
            return Ok(v);
        }
        let map = |name: &'static str, bytes: usize| -> Result<fulcrum_sys::SharedMemory, Error> {
            let Map::Array(data) = self.map(name)? else {
                return Err(Error::Missing(name));
            };
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::Limit(format!("{name}: {e}")))?;
            fulcrum_sys::SharedMemory::map_len(fd, bytes)
                .map_err(|e| Error::Limit(format!("mapping {name}: {e}")))
        };
        let (slots_map, chunks_map) = table.maps();
        let slots = self.slots_of(table) as usize;
        let slots_view = map(slots_map, slots * table.slot_bytes())?;
        let chunks = map(chunks_map, (slots / CONN_CHUNK as usize + 1) * 8)?;
        Ok(view.get_or_init(|| (slots_view, chunks)))
    }

    /// The tracked connections (one per flow), IPv4 then IPv6, as ipvsadm -Lnc lists them.
    pub fn connections(&self) -> Result<Vec<Connection>, Error> {
        let now = self.now();
        // The client's entries that have not run out (a NAT reply entry is the same
        // connection), as the IPv6 ones are chosen below.
        let mut v4 = Vec::new();
        self.each_slot(|s| {
            if s.c.flags & CONN_F_REPLY == 0 && s.c.expires > now {
                v4.push(s.c);
            }
        })?;
        let mut v6 = Vec::new();
        self.each_slot6(|c| {
            if c.c.flags & CONN_F_REPLY == 0 && c.c.expires > now {
                v6.push(*c);
            }
        })?;
        // An IPv4 service's IPv6 real server (TUN): its address from dests6. Each slot is
        // read once a listing (a table holds many connections of few slots).
        let dests: Array<&MapData, Dest> = Array::try_from(self.map("dests")?)?;
        let dests6: Array<&MapData, [u8; 16]> = Array::try_from(self.map("dests6")?)?;
        let mut v6_slots: std::collections::HashMap<u32, Option<(u32, IpAddr)>> =
            std::collections::HashMap::new();
        let mut rip_of = |c: &Conn| -> IpAddr {
            let k = super::services::slot_index(c.svc, c.dest as usize);
            let slot = *v6_slots.entry(k).or_insert_with(|| {
                let d = dests.get(&k, 0).ok().filter(|d| d.flags & DEST_F_V6 != 0)?;
                let a = dests6.get(&k, 0).ok()?;
                Some((d.addr, std::net::Ipv6Addr::from(a).into()))
            });
            match slot {
                Some((folded, ip)) if folded == c.rip => ip,
                _ => addr(c.rip).into(),
            }
        };
        let entries = v4
            .into_iter()
            .map(|c| {
                let a = |x: u32| IpAddr::from(addr(x));
                (c, [a(c.client), a(c.vip), rip_of(&c)])
            })
            .chain(v6.into_iter().map(|c| {
                let a = |x: [u8; 16]| IpAddr::from(std::net::Ipv6Addr::from(x));
                // An IPv4 real server of an IPv6 service (TUN) is held IPv4-mapped.
                let rip = std::net::Ipv6Addr::from(c.rip);
                let rip = rip.to_ipv4_mapped().map_or(IpAddr::V6(rip), IpAddr::V4);
                (c.c, [a(c.client), a(c.vip), rip])
            }));
        let mut out = Vec::new();
        for (c, [client, vip, rip]) in entries {
            if c.flags & CONN_F_REPLY != 0 || c.expires <= now {
                continue;
            }
            out.push(Connection {
                proto: c.proto,
                client: (client, u16::from_be(c.cport)),
                vip: (vip, u16::from_be(c.vport)),
                rip: (rip, u16::from_be(c.rport)),
                state: STATE_NAMES.get(c.state as usize).copied().unwrap_or("?"),
                expires_in: Duration::from_nanos(c.expires - now),
                service: c.svc,
                slot: c.dest,
                state_code: c.state,
                // A TUN connection's tunnel is its real server's.
                method: match c.method {
                    METHOD_DR => Method::Dr,
                    METHOD_TUN => Method::Tun(Default::default()),
                    _ => Method::Nat,
                },
                timeout: c.timeout,
                deadline: c.expires,
                packets: c.in_pkts,
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
        let mut due: Vec<FlowKey> = Vec::new();
        self.each_slot(|s| {
            if s.c.expires <= now {
                due.push(s.key());
            }
        })?;
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
        let mut due6: Vec<FlowKey6> = Vec::new();
        self.each_slot6(|c| {
            if c.c.expires <= now {
                due6.push(c.key());
            }
        })?;
        let mut frame = [0u8; 14 + 40];
        for key in due6 {
            frame[14..30].copy_from_slice(&key.src);
            frame[30..46].copy_from_slice(&key.dst);
            frame[46..48].copy_from_slice(&key.sport.to_ne_bytes());
            frame[48..50].copy_from_slice(&key.dport.to_ne_bytes());
            frame[50] = key.proto;
            if self.run(EXPIRE6, &frame, 1)?.verdict == Verdict::Drop {
                expired += 1;
            }
        }
        drop_stale::<PersistKey>(self.map_mut("persist")?, now)?;
        drop_stale::<PersistKey6>(self.map_mut("persist6")?, now)?;
        Ok(expired)
    }

    /// The persistence templates that have not run out, IPv4 and IPv6.
    pub fn templates(&self) -> Result<Vec<Template>, Error> {
        let now = self.now();
        let live = |v: &PersistValue| v.expires > now;
        let template = |service, client, v: PersistValue| Template {
            service,
            client,
            slot: v.dest,
            expires_in: Duration::from_nanos(v.expires - now),
            deadline: v.expires,
        };
        let map: HashMap<&MapData, PersistKey, PersistValue> =
            HashMap::try_from(self.map("persist")?)?;
        let mut out: Vec<Template> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| live(v))
            .map(|(k, v)| template(k.svc, addr(k.client).into(), v))
            .collect();
        let map6: HashMap<&MapData, PersistKey6, PersistValue> =
            HashMap::try_from(self.map("persist6")?)?;
        out.extend(
            map6.iter()
                .filter_map(Result::ok)
                .filter(|(_, v)| live(v))
                .map(|(k, v)| template(k.svc, std::net::Ipv6Addr::from(k.client).into(), v)),
        );
        Ok(out)
    }

    /// Installs a connection a sync master sent, or brings the entry there up to it, with
    /// the real server's counts moved atomically with the data path (the program's
    /// `xdp_adopt`).
    pub fn adopt(&mut self, c: &Synced) -> Result<Adopted, Error> {
        let expires = self.now() + u64::from(c.timeout) * 1_000_000_000;
        let v6 = match (c.client.0, c.vip.0, c.rip.0) {
            (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) => false,
            (IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(_)) => true,
            _ => {
                return Err(Error::Limit(
                    "a synced connection's addresses are of two families".into(),
                ))
            }
        };
        // struct conn (or conn6: conn with the addresses folded, then the addresses) after
        // 14 bytes of padding; addresses and ports in network order.
        let mut frame = [0u8; 14 + 120];
        let f = &mut frame[14..];
        f[0..8].copy_from_slice(&expires.to_ne_bytes());
        f[8..12].copy_from_slice(&super::services::folded(c.client.0).to_ne_bytes());
        f[12..16].copy_from_slice(&super::services::folded(c.vip.0).to_ne_bytes());
        f[16..20].copy_from_slice(&super::services::folded(c.rip.0).to_ne_bytes());
        for (i, a) in [c.client.0, c.vip.0, c.rip.0].into_iter().enumerate() {
            if let IpAddr::V6(a) = a {
                f[72 + 16 * i..88 + 16 * i].copy_from_slice(&a.octets());
            }
        }
        f[20..22].copy_from_slice(&c.client.1.to_be_bytes());
        f[22..24].copy_from_slice(&c.vip.1.to_be_bytes());
        f[24..26].copy_from_slice(&c.rip.1.to_be_bytes());
        f[26] = c.proto;
        f[27] = c.state;
        f[28..32].copy_from_slice(&c.service.to_ne_bytes());
        f[32..34].copy_from_slice(&c.slot.to_ne_bytes());
        f[34] = match c.method {
            Method::Nat => METHOD_NAT,
            Method::Dr => METHOD_DR,
            Method::Tun(_) => METHOD_TUN,
        };
        f[36..40].copy_from_slice(&c.timeout.to_ne_bytes());
        let (program, len) = if v6 {
            (ADOPT6, 14 + 120)
        } else {
            (ADOPT, 14 + 72)
        };
        Ok(match self.run(program, &frame[..len], 1)?.verdict {
            Verdict::Tx => Adopted::Installed,
            Verdict::Pass => Adopted::Updated,
            _ => Adopted::Full,
        })
    }

    /// Installs a persistence template a sync master sent: the client network goes to
    /// the server in `slot` (at `rip`) for `timeout`.
    pub fn adopt_template(
        &mut self,
        service: u32,
        client: IpAddr,
        slot: u32,
        rip: IpAddr,
        timeout: Duration,
    ) -> Result<(), Error> {
        let value = PersistValue {
            expires: self.now() + timeout.as_nanos() as u64,
            dest: slot,
            rip: super::services::folded(rip),
        };
        match client {
            IpAddr::V4(client) => {
                let mut persist: HashMap<&mut MapData, PersistKey, PersistValue> =
                    HashMap::try_from(self.map_mut("persist")?)?;
                let key = PersistKey {
                    svc: service,
                    client: u32::from_ne_bytes(client.octets()),
                };
                persist.insert(key, value, 0)?;
            }
            IpAddr::V6(client) => {
                let mut persist: HashMap<&mut MapData, PersistKey6, PersistValue> =
                    HashMap::try_from(self.map_mut("persist6")?)?;
                let key = PersistKey6 {
                    svc: service,
                    pad: 0,
                    client: client.octets(),
                };
                persist.insert(key, value, 0)?;
            }
        }
        Ok(())
    }
}
