//! nginx's shared memory, for the state its worker processes share: the limit_req and
//! limit_conn zones, and stub_status's counters (with the `$connection` serial). The
//! master makes each region ([`zone_region`], [`stub_region`]) and passes it to every
//! worker, which hands it to the site it compiles ([`provide`]); a proxy with no master
//! (`master_process off`, tests) keeps the same layout on its heap. Everything here is
//! 64-bit atomic words, so the table code is plain safe Rust; the one lock is a word
//! holding its holder's pid, taken over from a holder that died with it (as nginx's
//! master unlocks a dead worker's mutex).

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fulcrum_nginx_conf::model::LimitZone;
use fulcrum_sys::SharedMemory;
use siphasher::sip128::{Hasher128, SipHasher13};

/// About what nginx's slab allocator spends on one key's state (its rbtree node, queue
/// link and counters, rounded up to a slab size): how many keys a zone of a given size
/// holds.
pub const NODE_BYTES: u64 = 128;

/// A zone's header words: the lock, when a full zone next looks for keys to expire, the
/// keys held, the hash seed (two words) and the slot count (what a worker checks the
/// region it was given against).
const LOCK: usize = 0;
const FULL_UNTIL: usize = 1;
const USED: usize = 2;
const SEED: usize = 3;
const SLOTS: usize = 5;
const HEADER: usize = 8;
/// A slot: the key's 128-bit hash (0, 0 when empty), then three values.
const ENTRY: usize = 5;

/// Where a region's words live.
#[derive(Debug)]
pub enum Words {
    /// One process's own (no workers share it).
    Heap(Box<[AtomicU64]>),
    /// Shared with the other worker processes.
    Shared(Arc<SharedMemory>),
}

impl Words {
    fn heap(n: usize) -> Words {
        Words::Heap((0..n).map(|_| AtomicU64::new(0)).collect())
    }

    fn get(&self) -> &[AtomicU64] {
        match self {
            Words::Heap(w) => w,
            Words::Shared(m) => m.words(),
        }
    }
}

/// Random words from the system (a zone's hash seed).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let random = rustls::crypto::ring::default_provider().secure_random;
    if random.fill(&mut b).is_err() {
        // Still unpredictable enough for a seed: the std hasher's own random keys.
        use std::hash::BuildHasher;
        return std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    }
    u64::from_ne_bytes(b)
}

/// How many keys a zone of this size holds, and its slots (twice that, a power of two,
/// so a probe always ends at an empty slot soon).
fn geometry(z: &LimitZone) -> (usize, usize) {
    let capacity = (z.size / NODE_BYTES).max(1) as usize;
    (capacity, (capacity * 2).next_power_of_two())
}

fn init_zone(w: &[AtomicU64], slots: usize) {
    w[SEED].store(random_u64(), Ordering::Relaxed);
    w[SEED + 1].store(random_u64(), Ordering::Relaxed);
    w[SLOTS].store(slots as u64, Ordering::Relaxed);
}

/// A zone's region, made by the master for its workers.
pub fn zone_region(z: &LimitZone) -> std::io::Result<SharedMemory> {
    let (_, slots) = geometry(z);
    let m = SharedMemory::create(&z.name, HEADER + slots * ENTRY)?;
    init_zone(m.words(), slots);
    Ok(m)
}

/// Regions the master gave this worker, taken by the sites it compiles.
#[derive(Debug, Default)]
struct Provided {
    zones: HashMap<String, Arc<SharedMemory>>,
    stub: Option<(Arc<SharedMemory>, usize)>,
}

static PROVIDED: Mutex<Option<Provided>> = Mutex::new(None);

/// A worker's shared regions: its zones by name, and the stub_status counters with the
/// slot that is this worker's own. Given before its site is compiled.
pub fn provide(zones: Vec<(String, SharedMemory)>, stub: SharedMemory, slot: usize) {
    let mut p = PROVIDED.lock().unwrap_or_else(|e| e.into_inner());
    *p = Some(Provided {
        zones: zones.into_iter().map(|(n, m)| (n, Arc::new(m))).collect(),
        stub: Some((Arc::new(stub), slot)),
    });
}

fn provided_zone(name: &str) -> Option<Arc<SharedMemory>> {
    let p = PROVIDED.lock().unwrap_or_else(|e| e.into_inner());
    p.as_ref()?.zones.get(name).cloned()
}

fn provided_stub() -> Option<(Arc<SharedMemory>, usize)> {
    let p = PROVIDED.lock().unwrap_or_else(|e| e.into_inner());
    p.as_ref()?.stub.clone()
}

/// Takes the lock word: spins a little, then yields; a holder that no longer exists
/// (a worker killed inside) loses it.
fn lock_word(w: &AtomicU64) {
    let me = u64::from(std::process::id());
    let mut tries = 0u32;
    loop {
        match w.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return,
            Err(holder) => {
                tries = tries.wrapping_add(1);
                if tries < 64 {
                    std::hint::spin_loop();
                    continue;
                }
                std::thread::yield_now();
                if tries.is_multiple_of(1024)
                    && holder != 0
                    && holder != me
                    && !u32::try_from(holder).is_ok_and(fulcrum_sys::process_exists)
                {
                    let _ = w.compare_exchange(holder, 0, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A zone's table of keys: open addressing by a seeded 128-bit SipHash of the key (a
/// collision, one client sharing another's state, is as likely as guessing the seed),
/// three values per key.
#[derive(Debug)]
pub struct Table {
    words: Words,
    slots: usize,
    capacity: usize,
    seed: (u64, u64),
}

/// A key's hash as the table stores it (never the empty slot's 0, 0).
pub type Key = (u64, u64);

impl Table {
    /// The zone's table: in the region the master made for it, else on the heap.
    pub fn for_zone(z: &LimitZone) -> Result<Table, String> {
        Table::with(z, provided_zone(&z.name))
    }

    fn with(z: &LimitZone, shared: Option<Arc<SharedMemory>>) -> Result<Table, String> {
        let (capacity, slots) = geometry(z);
        let words = match shared {
            Some(m) => {
                let w = m.words();
                if w.len() != HEADER + slots * ENTRY
                    || w[SLOTS].load(Ordering::Relaxed) != slots as u64
                {
                    return Err(format!(
                        "the shared memory of zone \"{}\" does not match its size",
                        z.name
                    ));
                }
                Words::Shared(m)
            }
            None => {
                let w = Words::heap(HEADER + slots * ENTRY);
                init_zone(w.get(), slots);
                w
            }
        };
        let w = words.get();
        let seed = (
            w[SEED].load(Ordering::Relaxed),
            w[SEED + 1].load(Ordering::Relaxed),
        );
        Ok(Table {
            words,
            slots,
            capacity,
            seed,
        })
    }

    /// How many keys it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn key(&self, key: &[u8]) -> Key {
        let mut h = SipHasher13::new_with_keys(self.seed.0, self.seed.1);
        h.write(key);
        let h = h.finish128();
        (h.h1, h.h2 | 1)
    }

    pub fn lock(&self) -> Held<'_> {
        let w = self.words.get();
        lock_word(&w[LOCK]);
        Held { w, t: self }
    }
}

/// The table, locked.
#[derive(Debug)]
pub struct Held<'a> {
    w: &'a [AtomicU64],
    t: &'a Table,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.w[LOCK].store(0, Ordering::Release);
    }
}

impl Held<'_> {
    fn at(&self, slot: usize) -> usize {
        HEADER + slot * ENTRY
    }

    fn key_at(&self, slot: usize) -> Key {
        let i = self.at(slot);
        (
            self.w[i].load(Ordering::Relaxed),
            self.w[i + 1].load(Ordering::Relaxed),
        )
    }

    fn mask(&self) -> usize {
        self.t.slots - 1
    }

    /// The keys held.
    fn len(&self) -> usize {
        self.w[USED].load(Ordering::Relaxed) as usize
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.t.capacity
    }

    /// When a full zone may next look for keys to expire (ms).
    pub fn full_until(&self) -> u64 {
        self.w[FULL_UNTIL].load(Ordering::Relaxed)
    }

    pub fn set_full_until(&self, ms: u64) {
        self.w[FULL_UNTIL].store(ms, Ordering::Relaxed);
    }

    /// The slot holding `k`.
    pub fn find(&self, k: Key) -> Option<usize> {
        let mut s = k.0 as usize & self.mask();
        loop {
            match self.key_at(s) {
                (0, 0) => return None,
                x if x == k => return Some(s),
                _ => s = (s + 1) & self.mask(),
            }
        }
    }

    pub fn get(&self, slot: usize) -> [u64; 3] {
        let i = self.at(slot) + 2;
        [0, 1, 2].map(|f| self.w[i + f].load(Ordering::Relaxed))
    }

    pub fn set(&self, slot: usize, v: [u64; 3]) {
        let i = self.at(slot) + 2;
        for (f, x) in v.into_iter().enumerate() {
            self.w[i + f].store(x, Ordering::Relaxed);
        }
    }

    fn put(&self, slot: usize, k: Key, v: [u64; 3]) {
        let i = self.at(slot);
        self.w[i].store(k.0, Ordering::Relaxed);
        self.w[i + 1].store(k.1, Ordering::Relaxed);
        self.set(slot, v);
    }

    /// Adds `k` (not held yet; the caller checked [`Held::is_full`]).
    pub fn insert(&mut self, k: Key, v: [u64; 3]) -> usize {
        debug_assert!(!self.is_full() && self.find(k).is_none());
        let mut s = k.0 as usize & self.mask();
        while self.key_at(s) != (0, 0) {
            s = (s + 1) & self.mask();
        }
        self.put(s, k, v);
        self.w[USED].fetch_add(1, Ordering::Relaxed);
        s
    }

    /// Removes the key in `slot`, moving later keys of its probe run back into the hole.
    pub fn remove(&mut self, slot: usize) {
        let mask = self.mask();
        let mut hole = slot;
        let mut j = slot;
        loop {
            j = (j + 1) & mask;
            let k = self.key_at(j);
            if k == (0, 0) {
                break;
            }
            let home = k.0 as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                let v = self.get(j);
                self.put(hole, k, v);
                hole = j;
            }
        }
        self.put(hole, (0, 0), [0; 3]);
        self.w[USED].fetch_sub(1, Ordering::Relaxed);
    }

    /// Keeps the keys whose values `keep` approves.
    pub fn retain(&mut self, mut keep: impl FnMut([u64; 3]) -> bool) {
        let mut kept = Vec::new();
        for s in 0..self.t.slots {
            let k = self.key_at(s);
            if k != (0, 0) {
                let v = self.get(s);
                if keep(v) {
                    kept.push((k, v));
                }
                self.put(s, (0, 0), [0; 3]);
            }
        }
        self.w[USED].store(0, Ordering::Relaxed);
        for (k, v) in kept {
            self.insert(k, v);
        }
    }
}

/// An upstream's region (its `zone`): the lock, the length of the state, whether a
/// worker has written it yet, then [`fulcrum_upstream::Pool::state`].
const UP_LOCK: usize = 0;
const UP_LEN: usize = 1;
const UP_WRITTEN: usize = 2;
const UP_HEADER: usize = 8;

/// The name an upstream's region goes by among the regions a worker is given.
pub fn upstream_zone_name(upstream: &str) -> String {
    format!("upstream/{upstream}")
}

/// An upstream's region, made by the master for a balancer state of `len` numbers.
pub fn upstream_region(upstream: &str, len: usize) -> std::io::Result<SharedMemory> {
    let m = SharedMemory::create(&upstream_zone_name(upstream), UP_HEADER + len.max(1))?;
    m.words()[UP_LEN].store(len as u64, Ordering::Relaxed);
    Ok(m)
}

/// The balancer state of an upstream with `zone`, shared by every worker: each use of
/// the pool takes the state in, under the region's lock, and puts it back.
#[derive(Debug)]
pub struct SharedBalancer {
    words: Words,
    len: usize,
}

impl SharedBalancer {
    /// The region the master made for `upstream`, if it did and it fits `len`.
    pub fn for_upstream(upstream: &str, len: usize) -> Option<SharedBalancer> {
        let m = provided_zone(&upstream_zone_name(upstream))?;
        let w = m.words();
        if w.len() < UP_HEADER + len || w[UP_LEN].load(Ordering::Relaxed) != len as u64 {
            tracing::warn!(
                upstream,
                "the shared memory of its zone does not fit its peers"
            );
            return None;
        }
        Some(SharedBalancer {
            words: Words::Shared(m),
            len,
        })
    }

    /// Runs `f` on `pool` with the state every worker shares.
    pub fn with<R>(
        &self,
        pool: &mut fulcrum_upstream::Pool,
        f: impl FnOnce(&mut fulcrum_upstream::Pool) -> R,
    ) -> R {
        let w = self.words.get();
        lock_word(&w[UP_LOCK]);
        // Released however `f` ends (a panic must not leave every worker spinning).
        let _held = Unlock(&w[UP_LOCK]);
        let state = &w[UP_HEADER..UP_HEADER + self.len];
        // Read and written in place: no copy on the request path.
        if w[UP_WRITTEN].load(Ordering::Relaxed) == 1 {
            pool.load_state(state.len(), |i| state[i].load(Ordering::Relaxed));
        }
        let r = f(pool);
        pool.store_state(|i, v| {
            if let Some(x) = state.get(i) {
                x.store(v, Ordering::Relaxed);
            }
        });
        w[UP_WRITTEN].store(1, Ordering::Relaxed);
        r
    }
}

/// Frees a lock word when it goes.
struct Unlock<'a>(&'a AtomicU64);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// stub_status's counters, in nginx's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Accepted = 0,
    Handled,
    Requests,
    Active,
    Reading,
    Writing,
    Waiting,
}

/// The counters' region: the connection serial, the slot count, then a slot of counters
/// per worker (slot 0 holds what workers gone counted).
const STUB_SERIAL: usize = 0;
const STUB_SLOTS: usize = 1;
const STUB_HEADER: usize = 8;
const STUB_SLOT: usize = 8;
/// The totals (a dead worker's are kept); the rest are gauges (a dead worker's go).
const TOTALS: [Count; 3] = [Count::Accepted, Count::Handled, Count::Requests];
const GAUGES: [Count; 4] = [
    Count::Active,
    Count::Reading,
    Count::Writing,
    Count::Waiting,
];

/// The counters' region, made by the master for `workers` worker slots (1 to `workers`).
pub fn stub_region(workers: usize) -> std::io::Result<SharedMemory> {
    let m = SharedMemory::create("stub_status", STUB_HEADER + (workers + 1) * STUB_SLOT)?;
    m.words()[STUB_SLOTS].store(workers as u64 + 1, Ordering::Relaxed);
    Ok(m)
}

/// A worker gone: its totals join slot 0's, its gauges end, and the slot is free again.
pub fn stub_fold(m: &SharedMemory, slot: usize) {
    let w = m.words();
    let at = |s: usize, c: Count| STUB_HEADER + s * STUB_SLOT + c as usize;
    if slot == 0 || at(slot, Count::Waiting) >= w.len() {
        return;
    }
    for c in TOTALS {
        let v = w[at(slot, c)].swap(0, Ordering::Relaxed);
        w[at(0, c)].fetch_add(v, Ordering::Relaxed);
    }
    for c in GAUGES {
        w[at(slot, c)].store(0, Ordering::Relaxed);
    }
}

/// One worker's view of the counters: it counts in its own slot and reads them all.
#[derive(Debug)]
pub struct Counters {
    words: Words,
    slot: usize,
}

impl Counters {
    /// The counters the master gave this worker, else its own.
    pub fn new() -> Counters {
        match provided_stub() {
            Some((m, slot)) if STUB_HEADER + (slot + 1) * STUB_SLOT <= m.words().len() => {
                Counters {
                    words: Words::Shared(m),
                    slot,
                }
            }
            _ => {
                let words = Words::heap(STUB_HEADER + 2 * STUB_SLOT);
                words.get()[STUB_SLOTS].store(2, Ordering::Relaxed);
                Counters { words, slot: 1 }
            }
        }
    }

    fn word(&self, slot: usize, c: Count) -> &AtomicU64 {
        &self.words.get()[STUB_HEADER + slot * STUB_SLOT + c as usize]
    }

    /// Counts `c` up (or down) in this worker's slot.
    pub fn add(&self, c: Count, delta: i64) {
        self.word(self.slot, c)
            .fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// `c` across every worker.
    pub fn total(&self, c: Count) -> i64 {
        let w = self.words.get();
        let slots = (w[STUB_SLOTS].load(Ordering::Relaxed) as usize)
            .min((w.len() - STUB_HEADER) / STUB_SLOT);
        (0..slots)
            .map(|s| self.word(s, c).load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add) as i64
    }

    /// The next connection's serial number (`$connection`), unique across workers as
    /// nginx's ngx_connection_counter.
    pub fn next_serial(&self) -> u64 {
        self.words.get()[STUB_SERIAL].fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Default for Counters {
    fn default() -> Counters {
        Counters::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_nginx_conf::model::Template;

    fn zone(size: u64) -> LimitZone {
        LimitZone {
            name: "t".into(),
            key: Template::new("$k"),
            size,
            rate: Some(1000),
        }
    }

    #[test]
    fn keys_stay_findable_through_removals() {
        // A small table, many keys in and out: every key held is found, none removed is.
        let t = Table::with(&zone(64 * NODE_BYTES), None).unwrap();
        let mut held = std::collections::BTreeSet::new();
        let mut g = t.lock();
        for round in 0u32..2000 {
            let name = (round * 7919) % 97;
            let k = t.key(&name.to_be_bytes());
            match g.find(k) {
                Some(s) => {
                    assert_eq!(g.get(s)[0], u64::from(name));
                    g.remove(s);
                    held.remove(&name);
                }
                None if !g.is_full() => {
                    g.insert(k, [u64::from(name), 0, 0]);
                    held.insert(name);
                }
                None => {}
            }
            assert_eq!(g.len(), held.len());
            for n in 0u32..97 {
                let found = g.find(t.key(&n.to_be_bytes()));
                assert_eq!(
                    found.is_some(),
                    held.contains(&n),
                    "key {n} at round {round}"
                );
            }
        }
        g.retain(|v| v[0] % 2 == 0);
        for n in 0u32..97 {
            let found = g.find(t.key(&n.to_be_bytes())).is_some();
            assert_eq!(found, held.contains(&n) && n % 2 == 0);
        }
    }

    #[test]
    fn a_zone_region_is_one_table_for_every_worker() {
        let z = zone(1 << 16);
        let m = zone_region(&z).unwrap();
        let mine = SharedMemory::map(m.fd().try_clone_to_owned().unwrap()).unwrap();
        let a = Table::with(&z, Some(Arc::new(m))).unwrap();
        let b = Table::with(&z, Some(Arc::new(mine))).unwrap();
        // Same seed, same table: what one inserts the other finds.
        assert_eq!(a.key(b"x"), b.key(b"x"));
        let s = a.lock().insert(a.key(b"x"), [5, 6, 7]);
        let g = b.lock();
        assert_eq!(g.find(b.key(b"x")), Some(s));
        assert_eq!(g.get(s), [5, 6, 7]);
        drop(g);
        // A heap table has its own seed.
        let c = Table::with(&z, None).unwrap();
        assert_ne!(c.key(b"x"), a.key(b"x"));
    }

    #[test]
    fn counters_add_up_across_slots_and_a_gone_worker_keeps_its_totals() {
        let m = stub_region(2).unwrap();
        let view = |slot| Counters {
            words: Words::Shared(Arc::new(
                SharedMemory::map(m.fd().try_clone_to_owned().unwrap()).unwrap(),
            )),
            slot,
        };
        let (a, b) = (view(1), view(2));
        a.add(Count::Accepted, 3);
        a.add(Count::Active, 2);
        b.add(Count::Accepted, 4);
        b.add(Count::Active, 1);
        b.add(Count::Active, -1);
        assert_eq!(a.total(Count::Accepted), 7);
        assert_eq!(b.total(Count::Active), 2);
        assert_eq!((a.next_serial(), b.next_serial()), (1, 2));
        stub_fold(&m, 1);
        assert_eq!(b.total(Count::Accepted), 7);
        assert_eq!(b.total(Count::Active), 0);
    }

    #[test]
    fn a_lock_held_by_a_process_gone_is_taken_over() {
        let t = Table::with(&zone(1 << 12), None).unwrap();
        // pid_max is at most 2^22: no such process.
        t.words.get()[LOCK].store(u64::from(u32::MAX - 1), Ordering::Relaxed);
        let g = t.lock();
        assert_eq!(g.len(), 0);
    }
}
