//! nginx's upstream balancing, as pure code: which server of an `upstream` block a request
//! goes to, and what a failure does to that server's standing.
//!
//! The rules are nginx's own (ngx_http_upstream_round_robin.c and the least_conn, ip_hash,
//! hash and random modules), including their quirks, because operators' expectations were
//! formed by them:
//!
//! - **Smooth weighted round-robin**: every usable peer adds its effective weight to its
//!   current weight, the largest current weight wins and has the total subtracted; weights
//!   {5, 1, 1} give a a b a c a a.
//! - **Passive health**: a failure raises `fails`, lowers the effective weight by
//!   weight / max_fails (it climbs back by one per pick) and, once `fails` reaches
//!   `max_fails` within `fail_timeout`, skips the peer for `fail_timeout`; a success clears
//!   `fails` only if the peer was picked again after its last failure. A lone server is
//!   never marked down. Backups are used only when no primary is usable.
//! - **least_conn**, **ip_hash** (first three octets of IPv4, all of IPv6), **hash**
//!   (Cache::Memcached's rehashing) and **hash consistent** (ketama, 160 points per weight),
//!   **random** and **random two** (least_conn between two weighted draws); each falls back
//!   to round-robin after 20 fruitless draws, as nginx does.
//!
//! Time is whole seconds (nginx's `ngx_time()`); random draws come from the caller.
//! The proxy calls [`Pool::start`] per request, [`Pool::get`] per try and [`Pool::free`]
//! when a try ends.

mod crc32;

pub use crc32::{crc32, Crc32};

use std::net::{IpAddr, SocketAddr};

/// Where a peer listens: an address and port, or a UNIX-domain socket (`unix:/path`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum PeerAddr {
    Inet(SocketAddr),
    /// The socket's path.
    Unix(String),
}

impl PeerAddr {
    /// The address and port, for a peer that has them.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Inet(a) => Some(*a),
            PeerAddr::Unix(_) => None,
        }
    }
}

/// As nginx names a peer (`$upstream_addr`, the error log): `10.0.0.1:80`, `[::1]:80`,
/// `unix:/run/app.sock`.
impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Inet(a) => a.fmt(f),
            PeerAddr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        PeerAddr::Inet(a)
    }
}

impl PartialEq<SocketAddr> for PeerAddr {
    fn eq(&self, other: &SocketAddr) -> bool {
        matches!(self, PeerAddr::Inet(a) if a == other)
    }
}

use fulcrum_nginx_conf::model::{Balance, Upstream};

/// nginx gives up hashing after this many draws and falls back to round-robin.
const MAX_DRAWS: u32 = 20;

/// A peer: its tier (primary or backup) and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId {
    pub backup: bool,
    pub index: usize,
}

/// One address of one `server` line, with nginx's per-peer state.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The server as written (what `hash ... consistent` hashes).
    pub server: String,
    pub addr: PeerAddr,
    pub weight: i64,
    pub max_fails: u32,
    /// Seconds.
    pub fail_timeout: u64,
    pub max_conns: u32,
    /// `down` in the configuration.
    pub down: bool,
    /// Out of rotation by an active health check (Fulcrum's extension): like `down`.
    pub check_down: bool,
    /// Drained by the operator (`fulcrum ctl drain`): no new requests.
    pub drained: bool,
    /// Requests in flight to it.
    pub conns: u32,
    /// Failures counted toward max_fails.
    pub fails: u32,
    current_weight: i64,
    effective_weight: i64,
    /// When it last failed.
    accessed: u64,
    /// When it last failed, or was picked after fail_timeout had passed.
    checked: u64,
    /// Index of `server` among the distinct servers (for the consistent-hash ring).
    server_id: usize,
}

impl Peer {
    fn new(server: String, addr: PeerAddr, s: &fulcrum_nginx_conf::model::UpstreamServer) -> Peer {
        Peer {
            server,
            addr,
            weight: i64::from(s.weight.max(1)),
            max_fails: s.max_fails,
            fail_timeout: s.fail_timeout.as_secs(),
            max_conns: s.max_conns,
            down: s.down,
            check_down: false,
            drained: false,
            conns: 0,
            fails: 0,
            current_weight: 0,
            effective_weight: i64::from(s.weight.max(1)),
            accessed: 0,
            checked: 0,
            server_id: 0,
        }
    }

    fn is_down(&self) -> bool {
        self.down || self.check_down || self.drained
    }

    /// Failed max_fails times within fail_timeout: skipped until it has passed.
    fn is_failed(&self, now: u64) -> bool {
        self.max_fails > 0
            && self.fails >= self.max_fails
            && now.saturating_sub(self.checked) <= self.fail_timeout
    }

    fn is_full(&self) -> bool {
        self.max_conns > 0 && self.conns >= self.max_conns
    }

    fn usable(&self, now: u64) -> bool {
        !self.is_down() && !self.is_failed(now) && !self.is_full()
    }

    pub fn effective_weight(&self) -> i64 {
        self.effective_weight
    }

    fn picked(&mut self, now: u64) {
        if now.saturating_sub(self.checked) > self.fail_timeout {
            self.checked = now;
        }
    }

    /// The smooth round-robin step for a candidate; returns what it adds to the total.
    fn step(&mut self) -> i64 {
        self.current_weight += self.effective_weight;
        let added = self.effective_weight;
        if self.effective_weight < self.weight {
            self.effective_weight += 1;
        }
        added
    }
}

/// The primary peers, or the backups.
#[derive(Debug, Clone)]
struct Tier {
    peers: Vec<Peer>,
    /// Sum of the weights, down peers included (the hash methods walk all of them).
    total_weight: i64,
    /// One peer and no backups: nginx never marks it failed and never retries.
    single: bool,
}

impl Tier {
    fn new(peers: Vec<Peer>) -> Tier {
        Tier {
            total_weight: peers.iter().map(|p| p.weight).sum(),
            single: peers.len() == 1,
            peers,
        }
    }

    /// The peer that `w` (below the total weight) falls on, walking the weights in order.
    fn by_weight(&self, mut w: i64) -> usize {
        let mut p = 0;
        while p + 1 < self.peers.len() && w >= self.peers[p].weight {
            w -= self.peers[p].weight;
            p += 1;
        }
        p
    }
}

/// The balancing method of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash,
    ConsistentHash,
    Random,
    RandomTwo,
}

/// The numbers of one peer's state in [`Pool::state`].
pub const STATE_WORDS: usize = 6;

/// An upstream's peers and their shared state.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub method: Method,
    primary: Tier,
    backup: Option<Tier>,
    /// The ketama ring: (point, server id), sorted, duplicates removed.
    points: Vec<(u32, usize)>,
}

/// The per-request state of the balancer: which peers this request has tried, and the
/// hash methods' position.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Tries left (nginx's `pc->tries`): every peer once, at most proxy_next_upstream_tries.
    pub tries: u32,
    backup: bool,
    tried: Vec<bool>,
    current: Option<PeerId>,
    /// ip_hash: the running hash; hash: the accumulated hash; consistent: the point index.
    hash: u32,
    rehash: u32,
    draws: u32,
    /// ip_hash: the client's address bytes; hash: the key.
    key: Vec<u8>,
}

impl Attempt {
    /// proxy_next_upstream_tries: 0 is unlimited.
    pub fn limit_tries(&mut self, limit: u32) {
        if limit > 0 && self.tries > limit {
            self.tries = limit;
        }
    }

    /// The peer of the try in progress.
    pub fn current(&self) -> Option<PeerId> {
        self.current
    }
}

/// How a try ended, for the peer's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response (or a status nginx does not count as failure).
    Ok,
    /// error, timeout, invalid_header, or a status listed in proxy_next_upstream.
    Failed,
}

impl Pool {
    /// The pool of an `upstream` block, with each server's addresses resolved by `resolve`
    /// (nginx resolves names once, at load; a name with several addresses makes several
    /// peers).
    pub fn new(
        u: &Upstream,
        mut resolve: impl FnMut(&str, u16) -> Vec<PeerAddr>,
    ) -> Result<Pool, String> {
        let mut primary = Vec::new();
        let mut backup = Vec::new();
        let mut servers: Vec<String> = Vec::new();
        for s in &u.servers {
            let written = s.as_written();
            let addrs = resolve(&s.host, s.port);
            if addrs.is_empty() {
                return Err(format!(
                    "host not found in upstream \"{written}\" in upstream \"{}\"",
                    u.name
                ));
            }
            let id = match servers.iter().position(|w| *w == written) {
                Some(i) => i,
                None => {
                    servers.push(written.clone());
                    servers.len() - 1
                }
            };
            for a in addrs {
                let mut p = Peer::new(written.clone(), a, s);
                p.server_id = id;
                if s.backup {
                    backup.push(p);
                } else {
                    primary.push(p);
                }
            }
        }
        if primary.is_empty() {
            return Err(format!("no servers are inside upstream \"{}\"", u.name));
        }
        let method = match &u.balance {
            Balance::RoundRobin => Method::RoundRobin,
            Balance::LeastConn => Method::LeastConn,
            Balance::IpHash => Method::IpHash,
            Balance::Hash {
                consistent: false, ..
            } => Method::Hash,
            Balance::Hash {
                consistent: true, ..
            } => Method::ConsistentHash,
            Balance::Random { two: false, .. } => Method::Random,
            Balance::Random { two: true, .. } => Method::RandomTwo,
        };
        let mut primary = Tier::new(primary);
        let backup = (!backup.is_empty()).then(|| Tier::new(backup));
        if backup.is_some() {
            primary.single = false;
        }
        let points = if method == Method::ConsistentHash {
            ring(&primary.peers)
        } else {
            Vec::new()
        };
        Ok(Pool {
            name: u.name.clone(),
            method,
            primary,
            backup,
            points,
        })
    }

    /// The primary peers, then the backups.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        let primary = self.primary.peers.iter().enumerate().map(|(index, p)| {
            (
                PeerId {
                    backup: false,
                    index,
                },
                p,
            )
        });
        let backup = self.backup.iter().flat_map(|t| {
            t.peers.iter().enumerate().map(|(index, p)| {
                (
                    PeerId {
                        backup: true,
                        index,
                    },
                    p,
                )
            })
        });
        primary.chain(backup)
    }

    pub fn peer(&self, id: PeerId) -> &Peer {
        &self.tier(id.backup).peers[id.index]
    }

    /// How many numbers [`Pool::state`] gives: [`STATE_WORDS`] per peer.
    pub fn state_len(&self) -> usize {
        self.peers().count() * STATE_WORDS
    }

    /// The balancer's changing state as numbers, [`STATE_WORDS`] a peer in
    /// [`Pool::peers`] order: what nginx's `zone` keeps in shared memory so that every
    /// worker balances as one (requests in flight, failures, the smooth weighted round
    /// robin's weights, when it last failed and was checked).
    pub fn state(&self) -> Vec<u64> {
        let mut state = vec![0; self.state_len()];
        self.store_state(|i, v| state[i] = v);
        state
    }

    /// [`Pool::state`] without a copy: each number to `put`, by its index.
    pub fn store_state(&self, mut put: impl FnMut(usize, u64)) {
        for (n, (_, p)) in self.peers().enumerate() {
            let words = [
                u64::from(p.conns),
                u64::from(p.fails),
                p.current_weight as u64,
                p.effective_weight as u64,
                p.accessed,
                p.checked,
            ];
            for (k, v) in words.into_iter().enumerate() {
                put(n * STATE_WORDS + k, v);
            }
        }
    }

    /// Takes the state [`Pool::state`] gave (maybe another process's); a slice of
    /// another length is ignored.
    pub fn set_state(&mut self, state: &[u64]) {
        self.load_state(state.len(), |i| state[i]);
    }

    /// [`Pool::set_state`] without a copy: `len` numbers, each from `get` by its index.
    pub fn load_state(&mut self, len: usize, get: impl Fn(usize) -> u64) {
        if len != self.state_len() {
            return;
        }
        let tiers = std::iter::once(&mut self.primary).chain(self.backup.as_mut());
        let peers = tiers.flat_map(|t| t.peers.iter_mut());
        for (n, p) in peers.enumerate() {
            let at = |k: usize| get(n * STATE_WORDS + k);
            p.conns = at(0) as u32;
            p.fails = at(1) as u32;
            p.current_weight = at(2) as i64;
            p.effective_weight = at(3) as i64;
            p.accessed = at(4);
            p.checked = at(5);
        }
    }

    /// Active health checks (Fulcrum's extension): peers at `addr` leave the rotation
    /// while `down`, as if marked `down` in the configuration.
    pub fn set_check_down(&mut self, addr: SocketAddr, down: bool) -> bool {
        let mut found = false;
        let backups = self.backup.iter_mut().flat_map(|t| t.peers.iter_mut());
        for p in self.primary.peers.iter_mut().chain(backups) {
            if p.addr == addr {
                p.check_down = down;
                found = true;
            }
        }
        found
    }

    /// The operator's drain (`fulcrum ctl drain`): peers at `ip` (and `port`, if given)
    /// take no new requests while drained. How many peers it touched.
    pub fn set_drained(&mut self, ip: IpAddr, port: Option<u16>, drained: bool) -> usize {
        let mut n = 0;
        let backups = self.backup.iter_mut().flat_map(|t| t.peers.iter_mut());
        for p in self.primary.peers.iter_mut().chain(backups) {
            let Some(a) = p.addr.inet() else {
                continue;
            };
            if a.ip() == ip && port.is_none_or(|port| a.port() == port) {
                p.drained = drained;
                n += 1;
            }
        }
        n
    }

    fn tier(&self, backup: bool) -> &Tier {
        match (backup, &self.backup) {
            (true, Some(t)) => t,
            _ => &self.primary,
        }
    }

    fn tier_mut(&mut self, backup: bool) -> &mut Tier {
        match (backup, &mut self.backup) {
            (true, Some(t)) => t,
            _ => &mut self.primary,
        }
    }

    /// A request's balancer state. `client` feeds ip_hash, `key` (the evaluated `hash`
    /// key) the hash methods.
    pub fn start(&self, client: IpAddr, key: &[u8]) -> Attempt {
        let tries = self.primary.peers.len() + self.backup.as_ref().map_or(0, |b| b.peers.len());
        let mut a = Attempt {
            tries: tries as u32,
            backup: false,
            tried: vec![false; self.primary.peers.len()],
            current: None,
            hash: 0,
            rehash: 0,
            draws: 0,
            key: Vec::new(),
        };
        match self.method {
            Method::IpHash => {
                a.hash = 89;
                a.key = match client {
                    IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
            }
            Method::Hash => a.key = key.to_vec(),
            Method::ConsistentHash => {
                a.key = key.to_vec();
                let h = crc32(key);
                a.hash = self.points.partition_point(|(p, _)| *p < h) as u32;
            }
            _ => {}
        }
        a
    }

    /// The peer for the next try, or None: no live upstreams (nginx answers 502).
    pub fn get(
        &mut self,
        a: &mut Attempt,
        now: u64,
        rng: &mut dyn FnMut() -> u32,
    ) -> Option<PeerId> {
        a.current = None;
        let got = match self.method {
            Method::RoundRobin => self.get_round_robin(a, now),
            Method::LeastConn => self.get_least_conn(a, now),
            Method::IpHash => self.get_ip_hash(a, now),
            Method::Hash => self.get_hash(a, now),
            Method::ConsistentHash => self.get_consistent(a, now),
            Method::Random => self.get_random(a, now, rng),
            Method::RandomTwo => self.get_random_two(a, now, rng),
        }?;
        let id = PeerId {
            backup: a.backup,
            index: got,
        };
        self.tier_mut(a.backup).peers[got].conns += 1;
        a.current = Some(id);
        Some(id)
    }

    /// Ends the current try. Returns true when this failure took the peer out of rotation
    /// ("upstream server temporarily disabled").
    pub fn free(&mut self, a: &mut Attempt, outcome: Outcome, now: u64) -> bool {
        let Some(id) = a.current.take() else {
            return false;
        };
        let tier = self.tier_mut(id.backup);
        let single = tier.single;
        let p = &mut tier.peers[id.index];
        p.conns = p.conns.saturating_sub(1);
        if single {
            a.tries = 0;
            return false;
        }
        let mut disabled = false;
        match outcome {
            Outcome::Failed => {
                p.fails += 1;
                p.accessed = now;
                p.checked = now;
                if p.max_fails > 0 {
                    p.effective_weight -= p.weight / i64::from(p.max_fails);
                    disabled = p.fails >= p.max_fails;
                }
                p.effective_weight = p.effective_weight.max(0);
            }
            Outcome::Ok => {
                if p.accessed < p.checked {
                    p.fails = 0;
                }
            }
        }
        a.tries = a.tries.saturating_sub(1);
        disabled
    }

    /// Moves a request to the backups once no primary is usable; false if there are none
    /// (or it is there already).
    fn enter_backups(&mut self, a: &mut Attempt) -> bool {
        match &self.backup {
            Some(b) if !a.backup => {
                a.backup = true;
                a.tried = vec![false; b.peers.len()];
                true
            }
            _ => false,
        }
    }

    fn get_round_robin(&mut self, a: &mut Attempt, now: u64) -> Option<usize> {
        loop {
            let tier = self.tier_mut(a.backup);
            let found = if tier.single {
                let p = &tier.peers[0];
                (!p.is_down() && !p.is_full()).then_some(0)
            } else {
                smooth(tier, &mut a.tried, now)
            };
            if found.is_some() {
                return found;
            }
            if !self.enter_backups(a) {
                return None;
            }
        }
    }

    fn get_least_conn(&mut self, a: &mut Attempt, now: u64) -> Option<usize> {
        if self.tier(a.backup).single {
            return self.get_round_robin(a, now);
        }
        let tier = self.tier_mut(a.backup);
        let mut best: Option<usize> = None;
        let mut many = false;
        for (i, p) in tier.peers.iter().enumerate() {
            if a.tried[i] || !p.usable(now) {
                continue;
            }
            match best {
                None => {
                    best = Some(i);
                    many = false;
                }
                Some(b) => {
                    let bp = &tier.peers[b];
                    let (mine, theirs) = (
                        i64::from(p.conns) * bp.weight,
                        i64::from(bp.conns) * p.weight,
                    );
                    if mine < theirs {
                        best = Some(i);
                        many = false;
                    } else if mine == theirs {
                        many = true;
                    }
                }
            }
        }
        let Some(mut b) = best else {
            if self.enter_backups(a) {
                return self.get_least_conn(a, now);
            }
            return None;
        };
        if many {
            // Ties go by smooth round-robin among the peers as loaded as the best.
            let mut total = 0;
            let first = b;
            for i in first..tier.peers.len() {
                if a.tried[i] {
                    continue;
                }
                let (bc, bw) = (i64::from(tier.peers[b].conns), tier.peers[b].weight);
                let p = &mut tier.peers[i];
                if i64::from(p.conns) * bw != bc * p.weight || !p.usable(now) {
                    continue;
                }
                total += p.step();
                if p.current_weight > tier.peers[b].current_weight {
                    b = i;
                }
            }
            tier.peers[b].current_weight -= total;
            tier.peers[b].picked(now);
        }
        a.tried[b] = true;
        Some(b)
    }

    fn get_ip_hash(&mut self, a: &mut Attempt, now: u64) -> Option<usize> {
        if a.draws > MAX_DRAWS || self.primary.single {
            return self.get_round_robin(a, now);
        }
        let tier = &mut self.primary;
        let mut hash = a.hash;
        let p = loop {
            for &b in &a.key {
                hash = (hash * 113 + u32::from(b)) % 6271;
            }
            let p = tier.by_weight(i64::from(hash) % tier.total_weight);
            if !a.tried[p] && tier.peers[p].usable(now) {
                break p;
            }
            a.draws += 1;
            if a.draws > MAX_DRAWS {
                return self.get_round_robin(a, now);
            }
        };
        tier.peers[p].picked(now);
        a.tried[p] = true;
        a.hash = hash;
        Some(p)
    }

    fn get_hash(&mut self, a: &mut Attempt, now: u64) -> Option<usize> {
        if a.draws > MAX_DRAWS || self.primary.single {
            return self.get_round_robin(a, now);
        }
        let tier = &mut self.primary;
        let p = loop {
            // Cache::Memcached: ((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV_HASH.
            let mut c = Crc32::new();
            if a.rehash > 0 {
                c = c.update(a.rehash.to_string().as_bytes());
            }
            let h = (c.update(&a.key).finish() >> 16) & 0x7fff;
            a.hash = a.hash.wrapping_add(h);
            a.rehash += 1;
            let p = tier.by_weight(i64::from(a.hash) % tier.total_weight);
            if !a.tried[p] && tier.peers[p].usable(now) {
                break p;
            }
            a.draws += 1;
            if a.draws > MAX_DRAWS {
                return self.get_round_robin(a, now);
            }
        };
        tier.peers[p].picked(now);
        a.tried[p] = true;
        Some(p)
    }

    fn get_consistent(&mut self, a: &mut Attempt, now: u64) -> Option<usize> {
        if a.draws > MAX_DRAWS || self.primary.single {
            return self.get_round_robin(a, now);
        }
        let tier = &mut self.primary;
        loop {
            let server = self.points[a.hash as usize % self.points.len()].1;
            let mut best: Option<usize> = None;
            let mut total = 0;
            for i in 0..tier.peers.len() {
                let p = &mut tier.peers[i];
                if a.tried[i] || !p.usable(now) || p.server_id != server {
                    continue;
                }
                total += p.step();
                if best.is_none_or(|b| tier.peers[i].current_weight > tier.peers[b].current_weight)
                {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                tier.peers[b].current_weight -= total;
                tier.peers[b].picked(now);
                a.tried[b] = true;
                return Some(b);
            }
            a.hash = a.hash.wrapping_add(1);
            a.draws += 1;
            if a.draws > MAX_DRAWS {
                return self.get_round_robin(a, now);
            }
        }
    }

    /// A weighted draw: the peer whose range holds `rng() % total_weight`.
    fn peek(&self, rng: &mut dyn FnMut() -> u32) -> usize {
        let x = i64::from(rng()) % self.primary.total_weight;
        self.primary.by_weight(x)
    }

    fn get_random(
        &mut self,
        a: &mut Attempt,
        now: u64,
        rng: &mut dyn FnMut() -> u32,
    ) -> Option<usize> {
        if a.draws > MAX_DRAWS || self.primary.single {
            return self.get_round_robin(a, now);
        }
        let p = loop {
            let p = self.peek(rng);
            if !a.tried[p] && self.primary.peers[p].usable(now) {
                break p;
            }
            a.draws += 1;
            if a.draws > MAX_DRAWS {
                return self.get_round_robin(a, now);
            }
        };
        self.primary.peers[p].picked(now);
        a.tried[p] = true;
        Some(p)
    }

    fn get_random_two(
        &mut self,
        a: &mut Attempt,
        now: u64,
        rng: &mut dyn FnMut() -> u32,
    ) -> Option<usize> {
        if a.draws > MAX_DRAWS || self.primary.single {
            return self.get_round_robin(a, now);
        }
        let mut first: Option<usize> = None;
        let second = loop {
            let p = self.peek(rng);
            if first != Some(p) && !a.tried[p] && self.primary.peers[p].usable(now) {
                if first.is_some() {
                    break p;
                }
                first = Some(p);
            }
            a.draws += 1;
            if a.draws > MAX_DRAWS {
                return self.get_round_robin(a, now);
            }
        };
        let first = first.expect("set before the second draw");
        // The less loaded of the two, by conns / weight; the second on a tie.
        let (f, s) = (&self.primary.peers[first], &self.primary.peers[second]);
        let p = if i64::from(s.conns) * f.weight > i64::from(f.conns) * s.weight {
            first
        } else {
            second
        };
        self.primary.peers[p].picked(now);
        a.tried[p] = true;
        Some(p)
    }
}

/// nginx's ngx_http_upstream_get_peer: smooth weighted round-robin over the usable,
/// untried peers of a tier.
fn smooth(tier: &mut Tier, tried: &mut [bool], now: u64) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut total = 0;
    for (i, tried) in tried.iter().enumerate() {
        if *tried || !tier.peers[i].usable(now) {
            continue;
        }
        total += tier.peers[i].step();
        if best.is_none_or(|b| tier.peers[i].current_weight > tier.peers[b].current_weight) {
            best = Some(i);
        }
    }
    let b = best?;
    tier.peers[b].current_weight -= total;
    tier.peers[b].picked(now);
    tried[b] = true;
    Some(b)
}

/// The ketama ring of `hash ... consistent`: for each peer, weight x 160 points, each the
/// CRC-32 of `HOST \0 PORT` followed by the previous point (little-endian), sorted, with
/// duplicates dropped (Cache::Memcached::Fast's scheme, as nginx builds it).
fn ring(peers: &[Peer]) -> Vec<(u32, usize)> {
    let mut points = Vec::new();
    for p in peers {
        let s = p.server.as_bytes();
        let (host, port): (&[u8], &[u8]) = if s.len() >= 5 && s[..5].eq_ignore_ascii_case(b"unix:")
        {
            (&s[5..], &[])
        } else {
            let digits = s.iter().rev().take_while(|c| c.is_ascii_digit()).count();
            if digits < s.len() && s[s.len() - digits - 1] == b':' {
                (&s[..s.len() - digits - 1], &s[s.len() - digits..])
            } else {
                (s, &[])
            }
        };
        let base = Crc32::new().update(host).update(&[0]).update(port);
        let mut prev = 0u32;
        for _ in 0..p.weight * 160 {
            let h = base.update(&prev.to_le_bytes()).finish();
            points.push((h, p.server_id));
            prev = h;
        }
    }
    points.sort_by_key(|(h, _)| *h);
    points.dedup_by_key(|(h, _)| *h);
    points
}

#[cfg(test)]
mod tests;
