//! The fourteen IPVS schedulers as plain Rust reference models: for the same real servers,
//! counters and sequence of new connections they choose what the kernel's
//! `net/netfilter/ipvs/ip_vs_*.c` choose. The XDP data plane must make the same choices
//! (a differential test holds it to that). No IO, no clock except what the caller passes.
//!
//! `dests` is always the service's list in the kernel's order: the newest real server
//! first (ip_vs_add_dest puts a server at the head of the service's list). Walks start
//! there and ties go to the first, as in the kernel.
//!
//! Every scheduler skips real servers with weight 0 or flagged overloaded. The "overhead"
//! of a server is `active * 256 + inactive`; weighted comparisons cross-multiply, as the
//! kernel does, so no division loses precision.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use fulcrum_types::Scheduler as Kind;

/// A real server as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// Connections in ESTABLISHED.
    pub active: u32,
    /// Every other tracked connection.
    pub inactive: u32,
    /// Flagged overloaded (upper threshold reached).
    pub overloaded: bool,
}

impl Dest {
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> Dest {
        Dest {
            addr,
            port,
            weight,
            active: 0,
            inactive: 0,
            overloaded: false,
        }
    }

    /// `active * 256 + inactive`, as `ip_vs_dest_conn_overhead`.
    pub fn overhead(&self) -> u64 {
        u64::from(self.active) * 256 + u64::from(self.inactive)
    }

    fn usable(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }
}

/// What a scheduler may look at of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// Scheduler flags (ipvsadm -b, keepalived sh-port, sh-fallback, mh-port, mh-fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub sh_port: bool,
    pub sh_fallback: bool,
    pub mh_port: bool,
    pub mh_fallback: bool,
}

/// Size of the dh and sh tables (IP_VS_DH_TAB_BITS, IP_VS_SH_TAB_BITS = 8).
pub const HASH_TABLE_SIZE: usize = 256;
/// Maglev table size: a prime well above 100 x the servers of a large service.
pub const MAGLEV_TABLE_SIZE: usize = 65537;
/// lblc and lblcr forget a destination address after this long unused (the kernel's
/// default expiration is 24 h).
pub const LOCALITY_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// The kernel's `hash_32(val, bits)`.
fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// IPv4 as a host-order integer; IPv6 folded by XOR of its four words, as IPVS does.
fn fold(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            (0..4).fold(0u32, |acc, i| {
                acc ^ u32::from_be_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]])
            })
        }
    }
}

/// `a.overhead / a.weight > b.overhead / b.weight`, by cross-multiplication.
fn heavier(a_overhead: u64, a_weight: u32, b_overhead: u64, b_weight: u32) -> bool {
    u128::from(a_overhead) * u128::from(b_weight) > u128::from(b_overhead) * u128::from(a_weight)
}

/// xorshift64*: a small deterministic generator, so twos is reproducible in tests and the
/// data plane can be compared against it when seeded alike.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// A scheduler with its state (round-robin position, tables, locality sets).
#[derive(Debug, Clone)]
pub struct Scheduler {
    kind: Kind,
    flags: Flags,
    /// rr: index of the last chosen server. wrr: the kernel's `cl` (None is the list head).
    position: Option<usize>,
    /// wrr: current weight, max weight (minus gcd - 1), gcd.
    cw: i64,
    mw: i64,
    di: i64,
    /// dh, sh: bucket -> server index. mh: slot -> server index.
    table: Vec<Option<usize>>,
    /// lblc: destination address -> (server, last used). lblcr: -> (set, last change, last used).
    locality: HashMap<IpAddr, (usize, Instant)>,
    sets: HashMap<IpAddr, (Vec<usize>, Instant, Instant)>,
    rng: Rng,
}

impl Scheduler {
    pub fn new(kind: Kind, flags: Flags, dests: &[Dest]) -> Scheduler {
        let mut s = Scheduler {
            kind,
            flags,
            position: None,
            cw: 0,
            mw: 0,
            di: 1,
            table: Vec::new(),
            locality: HashMap::new(),
            sets: HashMap::new(),
            rng: Rng::new(0x5eed_f01c_2026),
        };
        s.update(dests);
        s.cw = s.mw;
        s
    }

    /// Seeds the generator twos uses.
    pub fn with_seed(mut self, seed: u64) -> Scheduler {
        self.rng = Rng::new(seed);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The real servers changed (added, removed, weight changed): rebuild what depends on
    /// them, as the kernel's add_dest/del_dest/upd_dest hooks do.
    pub fn update(&mut self, dests: &[Dest]) {
        match self.kind {
            Kind::Wrr => {
                self.position = None;
                self.di = gcd_weight(dests);
                self.mw =
                    i64::from(dests.iter().map(|d| d.weight).max().unwrap_or(0)) - (self.di - 1);
                if self.cw > self.mw || self.cw == 0 {
                    self.cw = self.mw;
                } else if self.di > 1 {
                    self.cw = (self.cw / self.di) * self.di + 1;
                }
            }
            Kind::Rr if self.position.is_some_and(|p| p >= dests.len()) => self.position = None,
            Kind::Dh | Kind::Sh | Kind::Mh => {
                self.table = lookup_table(self.kind, dests).unwrap_or_default()
            }
            Kind::Lblc => self.locality.retain(|_, (i, _)| *i < dests.len()),
            Kind::Lblcr => {
                for (set, _, _) in self.sets.values_mut() {
                    set.retain(|i| *i < dests.len());
                }
            }
            _ => {}
        }
    }

    /// Chooses a real server (an index into `dests`) for a new connection, or None.
    pub fn schedule(&mut self, now: Instant, dests: &[Dest], flow: &Flow) -> Option<usize> {
        match self.kind {
            Kind::Rr => self.rr(dests),
            Kind::Wrr => self.wrr(dests),
            Kind::Lc => least(dests, |d| (d.overhead(), 1)),
            Kind::Wlc => least(dests, |d| (d.overhead(), d.weight)),
            Kind::Sed => least(dests, |d| (u64::from(d.active) + 1, d.weight)),
            Kind::Nq => dests
                .iter()
                .position(|d| d.usable() && d.active == 0)
                .or_else(|| least(dests, |d| (u64::from(d.active) + 1, d.weight))),
            Kind::Fo => {
                let mut best: Option<usize> = None;
                for (i, d) in dests.iter().enumerate() {
                    if d.usable() && best.is_none_or(|b| d.weight > dests[b].weight) {
                        best = Some(i);
                    }
                }
                best
            }
            Kind::Ovf => {
                let mut best: Option<usize> = None;
                for (i, d) in dests.iter().enumerate() {
                    if d.usable()
                        && d.active <= d.weight
                        && best.is_none_or(|b| d.weight > dests[b].weight)
                    {
                        best = Some(i);
                    }
                }
                best
            }
            Kind::Dh => {
                let bucket =
                    (fold(flow.dst).wrapping_mul(2_654_435_761) as usize) & (HASH_TABLE_SIZE - 1);
                self.table
                    .get(bucket)
                    .copied()
                    .flatten()
                    .filter(|&i| dests.get(i).is_some_and(Dest::usable))
            }
            Kind::Sh => self.sh(dests, flow),
            Kind::Mh => self.mh(dests, flow),
            Kind::Twos => self.twos(dests),
            Kind::Lblc => self.lblc(now, dests, flow),
            Kind::Lblcr => self.lblcr(now, dests, flow),
        }
    }

    fn rr(&mut self, dests: &[Dest]) -> Option<usize> {
        let n = dests.len();
        let start = self.position.map_or(0, |p| p + 1);
        for k in 0..n {
            let i = (start + k) % n;
            if dests[i].usable() {
                self.position = Some(i);
                return Some(i);
            }
        }
        None
    }

    /// The kernel's walk: from the last choice on, the first server whose weight reaches the
    /// current weight; at the end of the list the current weight drops by the gcd, and
    /// wraps to the maximum.
    fn wrr(&mut self, dests: &[Dest]) -> Option<usize> {
        if self.mw <= 0 || dests.is_empty() {
            return None;
        }
        let mut from = self.position.map_or(0, |p| p + 1);
        // Bounded: a full cycle of cw values over the whole list finds any usable server.
        let cycles = (self.mw / self.di.max(1) + 2) as usize;
        for _ in 0..cycles {
            for (i, d) in dests.iter().enumerate().skip(from) {
                if !d.overloaded && i64::from(d.weight) >= self.cw && d.weight > 0 {
                    self.position = Some(i);
                    return Some(i);
                }
            }
            from = 0;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
            }
        }
        self.position = None;
        None
    }

    fn sh(&mut self, dests: &[Dest], flow: &Flow) -> Option<usize> {
        let port = if self.flags.sh_port {
            u32::from(flow.sport)
        } else {
            0
        };
        let key = |offset: usize| {
            (offset + hash_32(port.wrapping_add(fold(flow.src)), 8) as usize)
                & (HASH_TABLE_SIZE - 1)
        };
        let first = key(0);
        let dest = self.table.get(first).copied().flatten()?;
        if dests.get(dest).is_some_and(Dest::usable) {
            return Some(dest);
        }
        if !self.flags.sh_fallback {
            return None;
        }
        for offset in 0..HASH_TABLE_SIZE {
            let b = key((offset + first) % HASH_TABLE_SIZE);
            if let Some(i) = self.table.get(b).copied().flatten() {
                if dests.get(i).is_some_and(Dest::usable) {
                    return Some(i);
                }
            }
        }
        None
    }

    fn mh(&mut self, dests: &[Dest], flow: &Flow) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let port = if self.flags.mh_port { flow.sport } else { 0 };
        let h = mix(u64::from(fold(flow.src)) << 16 | u64::from(port), SEED_FLOW);
        let m = self.table.len();
        let first = (h % m as u64) as usize;
        let pick =
            |slot: usize| self.table[slot].filter(|&i| dests.get(i).is_some_and(Dest::usable));
        if let Some(i) = pick(first) {
            return Some(i);
        }
        if !self.flags.mh_fallback {
            return None;
        }
        // Walk the table from the flow's slot, as IPVS's mh-fallback does.
        (1..m).find_map(|k| pick((first + k) % m))
    }

    fn twos(&mut self, dests: &[Dest]) -> Option<usize> {
        let total: u64 = dests
            .iter()
            .filter(|d| d.usable())
            .map(|d| u64::from(d.weight))
            .sum();
        if total == 0 {
            return None;
        }
        // The kernel draws in [0, total]: total + 1 values.
        let mut r1 = i64::from(self.rng.next_u32()) % (total as i64 + 1);
        let mut r2 = i64::from(self.rng.next_u32()) % (total as i64 + 1);
        let (mut c1, mut c2) = (None, None);
        for (i, d) in dests.iter().enumerate() {
            if !d.usable() {
                continue;
            }
            r1 -= i64::from(d.weight);
            r2 -= i64::from(d.weight);
            if r1 <= 0 && c1.is_none() {
                c1 = Some(i);
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some(i);
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (c1, c2) = (c1?, c2.unwrap_or(c1?));
        let (a, b) = (&dests[c1], &dests[c2]);
        if heavier(a.overhead(), a.weight, b.overhead(), b.weight) {
            Some(c2)
        } else {
            Some(c1)
        }
    }

    /// lblc: keep each destination address on its server unless that one is overloaded
    /// (more active connections than its weight) while another is at half load.
    fn lblc(&mut self, now: Instant, dests: &[Dest], flow: &Flow) -> Option<usize> {
        self.locality
            .retain(|_, (_, used)| now.duration_since(*used) < LOCALITY_EXPIRY);
        let current = self.locality.get(&flow.dst).map(|(i, _)| *i).filter(|&i| {
            dests
                .get(i)
                .is_some_and(|d| d.usable() && !overloaded_vs_others(d, dests))
        });
        let chosen = match current {
            Some(i) => i,
            None => least(dests, |d| (d.overhead(), d.weight))?,
        };
        self.locality.insert(flow.dst, (chosen, now));
        Some(chosen)
    }

    /// lblcr: a set of servers per destination address; its least loaded serves, a new one
    /// joins when that is overloaded, and the most loaded leaves once the set has not
    /// changed for a while. The set is kept in server order, so ties go to the first
    /// server of the list (the kernel's list puts the newest member first; the data plane
    /// keeps the set as a bitmap, and both follow this model).
    fn lblcr(&mut self, now: Instant, dests: &[Dest], flow: &Flow) -> Option<usize> {
        self.sets
            .retain(|_, (_, _, used)| now.duration_since(*used) < LOCALITY_EXPIRY);
        let entry = self
            .sets
            .entry(flow.dst)
            .or_insert_with(|| (Vec::new(), now, now));
        entry.0.retain(|&i| dests.get(i).is_some_and(Dest::usable));
        let set_min = least_of(dests, &entry.0);
        let chosen = match set_min {
            Some(i) if !overloaded_vs_others(&dests[i], dests) => i,
            _ => {
                let i = least(dests, |d| (d.overhead(), d.weight))?;
                if let Err(at) = entry.0.binary_search(&i) {
                    entry.0.insert(at, i);
                    entry.1 = now;
                }
                i
            }
        };
        // A set that has been stable for the expiry shrinks by its most loaded member.
        if entry.0.len() > 1 && now.duration_since(entry.1) >= LOCALITY_EXPIRY {
            if let Some(max) = most_of(dests, &entry.0) {
                if max != chosen {
                    entry.0.retain(|&i| i != max);
                    entry.1 = now;
                }
            }
        }
        entry.2 = now;
        Some(chosen)
    }
}

/// The first usable server with the least `load.0 / load.1` (cross-multiplied; the first
/// wins ties, as the kernel keeps the first it finds).
fn least(dests: &[Dest], load: impl Fn(&Dest) -> (u64, u32)) -> Option<usize> {
    let mut best: Option<(usize, u64, u32)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.usable() {
            continue;
        }
        let (o, w) = load(d);
        match best {
            Some((_, bo, bw)) if !heavier(bo, bw, o, w) => {}
            _ => best = Some((i, o, w)),
        }
    }
    best.map(|(i, _, _)| i)
}

fn least_of(dests: &[Dest], set: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in set {
        let d = &dests[i];
        if best
            .is_none_or(|b| heavier(dests[b].overhead(), dests[b].weight, d.overhead(), d.weight))
        {
            best = Some(i);
        }
    }
    best
}

fn most_of(dests: &[Dest], set: &[usize]) -> Option<usize> {
    let mut worst: Option<usize> = None;
    for &i in set {
        let d = &dests[i];
        if worst
            .is_none_or(|w| heavier(d.overhead(), d.weight, dests[w].overhead(), dests[w].weight))
        {
            worst = Some(i);
        }
    }
    worst
}

/// lblc/lblcr's is_overloaded: more active connections than weight, while some other
/// server is below half its weight.
fn overloaded_vs_others(d: &Dest, dests: &[Dest]) -> bool {
    d.active > d.weight
        && dests
            .iter()
            .any(|o| o.usable() && u64::from(o.active) * 2 < u64::from(o.weight))
}

/// The gcd of the positive weights (1 when there are none).
fn gcd_weight(dests: &[Dest]) -> i64 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = dests
        .iter()
        .map(|d| d.weight)
        .filter(|&w| w > 0)
        .fold(0, |g, w| if g == 0 { w } else { gcd(w, g) });
    i64::from(g.max(1))
}

/// The lookup table of a hashing scheduler over `dests` (dh and sh: 256 buckets; mh: the
/// Maglev table), as the scheduler builds it: what the data plane is loaded with. None
/// for the schedulers without a table.
pub fn lookup_table(kind: Kind, dests: &[Dest]) -> Option<Vec<Option<usize>>> {
    match kind {
        Kind::Dh => Some(fill_round_robin(dests, HASH_TABLE_SIZE, |_| 1)),
        Kind::Sh => Some(fill_round_robin(dests, HASH_TABLE_SIZE, |d| d.weight)),
        Kind::Mh => Some(maglev(dests, MAGLEV_TABLE_SIZE)),
        _ => None,
    }
}

/// dh and sh tables: buckets given to servers in list order, `turns(d)` buckets each (at
/// least one), cycling, as ip_vs_dh_reassign / ip_vs_sh_reassign fill them.
fn fill_round_robin(
    dests: &[Dest],
    size: usize,
    turns: impl Fn(&Dest) -> u32,
) -> Vec<Option<usize>> {
    if dests.is_empty() {
        return vec![None; size];
    }
    let mut table = Vec::with_capacity(size);
    let (mut p, mut count) = (0usize, 0u32);
    for _ in 0..size {
        table.push(Some(p));
        count += 1;
        if count >= turns(&dests[p]) {
            p = (p + 1) % dests.len();
            count = 0;
        }
    }
    table
}

const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEED_FLOW: u64 = 0x1656_67b1_9e37_79f9;

/// splitmix64 over a value and a fixed seed: the same on every director and every build.
fn mix(v: u64, seed: u64) -> u64 {
    let mut z = v ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn dest_key(d: &Dest) -> u64 {
    u64::from(fold(d.addr)) << 16 | u64::from(d.port)
}

/// Maglev (NSDI 2016) with weights: each server has a preference list
/// `(offset + j * skip) mod m`; servers take turns claiming their next free slot, a server
/// of weight w taking w / gcd turns per round, until the table is full. Fixed seeds make
/// every director build the same table.
pub fn maglev(dests: &[Dest], m: usize) -> Vec<Option<usize>> {
    let live: Vec<usize> = (0..dests.len()).filter(|&i| dests[i].weight > 0).collect();
    if live.is_empty() || m < 2 {
        return vec![None; m];
    }
    let g = gcd_weight(dests) as u32;
    let turns: Vec<u32> = live.iter().map(|&i| (dests[i].weight / g).max(1)).collect();
    let offset: Vec<usize> = live
        .iter()
        .map(|&i| (mix(dest_key(&dests[i]), SEED_OFFSET) % m as u64) as usize)
        .collect();
    let skip: Vec<usize> = live
        .iter()
        .map(|&i| (mix(dest_key(&dests[i]), SEED_SKIP) % (m as u64 - 1)) as usize + 1)
        .collect();
    let mut next = vec![0usize; live.len()];
    let mut table = vec![None; m];
    let mut filled = 0;
    'fill: loop {
        for k in 0..live.len() {
            for _ in 0..turns[k] {
                let mut c = (offset[k] + next[k] * skip[k]) % m;
                while table[c].is_some() {
                    next[k] += 1;
                    c = (offset[k] + next[k] * skip[k]) % m;
                }
                table[c] = Some(live[k]);
                next[k] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

// Tests take one real instant as the origin of virtual time; nothing reads the clock again.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests;
