//! limit_req and limit_conn, as nginx's modules count: the leaky bucket of
//! ngx_http_limit_req_module in milli-requests (rate, excess, burst and delay in the same
//! unit, the clock in milliseconds), and the in-flight count of
//! ngx_http_limit_conn_module, released when the response is done. A zone is shared by
//! every worker thread, as nginx's shared memory is by its workers, and kept across a
//! reload when its name, key, size and rate are unchanged. The arithmetic is pure: the
//! caller passes the time.

use std::sync::Arc;

use fulcrum_nginx_conf::model::{LimitDelay, LimitReq, LimitZone, Template};

use crate::request::Req;
use crate::shm::{Key, Table};
use crate::site::{Level, Resolved, Site};

/// A node's `last` before its first accounting.
const NEVER: u64 = u64::MAX;

/// A limit_req_zone.
#[derive(Debug)]
pub struct ReqZone {
    pub config: LimitZone,
    /// Requests per 1000 s.
    rate: u64,
    /// Each key's node: excess, last, count.
    table: Table,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// Milli-requests above the rate.
    excess: u64,
    /// When excess was last brought up to date (ms); [`NEVER`] for a key first seen by a
    /// limit that is not the request's last (nginx's `last = 0`: long ago).
    last: u64,
    /// Requests between lookup and account (several limits).
    count: u64,
}

impl Node {
    fn of(v: [u64; 3]) -> Node {
        Node {
            excess: v[0],
            last: v[1],
            count: v[2],
        }
    }

    fn values(self) -> [u64; 3] {
        [self.excess, self.last, self.count]
    }
}

/// What a lookup found (ngx_http_limit_req_lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Within burst; accounted (the request's last limit).
    Ok { excess: u64 },
    /// Within burst; to be accounted once every limit has been looked at.
    Again,
    /// Beyond burst.
    Busy { excess: u64 },
    /// The zone is full.
    Full,
}

impl ReqZone {
    /// The zone, in the shared memory the master made for it (else this process's).
    pub fn new(config: LimitZone) -> Result<ReqZone, String> {
        Ok(ReqZone {
            rate: config.rate.unwrap_or(1000),
            table: Table::for_zone(&config)?,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn key(&self) -> &Template {
        &self.config.key
    }

    /// The excess `key` would have at `now`, one more request counted.
    fn decayed(&self, n: &Node, now: u64) -> u64 {
        if n.last == NEVER {
            return 0;
        }
        let ms = now.saturating_sub(n.last);
        (n.excess + 1000).saturating_sub(self.rate.saturating_mul(ms) / 1000)
    }

    /// Looks `key` up at `now` against `burst` (milli-requests); `account`: this is the
    /// request's last limit, whose state is updated at once.
    pub fn lookup(&self, key: &[u8], now: u64, burst: u64, account: bool) -> Lookup {
        let k = self.table.key(key);
        let mut t = self.table.lock();
        if let Some(slot) = t.find(k) {
            let mut n = Node::of(t.get(slot));
            let excess = self.decayed(&n, now);
            if excess > burst {
                return Lookup::Busy { excess };
            }
            if account {
                n.excess = excess;
                n.last = now;
                t.set(slot, n.values());
                return Lookup::Ok { excess };
            }
            n.count += 1;
            t.set(slot, n.values());
            return Lookup::Again;
        }
        if t.is_full() && !self.expire(&mut t, now) {
            return Lookup::Full;
        }
        let n = Node {
            excess: 0,
            last: if account { now } else { NEVER },
            count: u64::from(!account),
        };
        t.insert(k, n.values());
        if account {
            Lookup::Ok { excess: 0 }
        } else {
            Lookup::Again
        }
    }

    /// A key looked up with [`Lookup::Again`]: its excess brought up to date at `now`
    /// (ngx_http_limit_req_account); returns it.
    pub fn account(&self, key: &[u8], now: u64) -> u64 {
        let k = self.table.key(key);
        let t = self.table.lock();
        let Some(slot) = t.find(k) else {
            return 0;
        };
        let mut n = Node::of(t.get(slot));
        let excess = self.decayed(&n, now);
        n.last = now;
        n.excess = excess;
        n.count = n.count.saturating_sub(1);
        t.set(slot, n.values());
        excess
    }

    /// A key looked up with [`Lookup::Again`] when a later limit refused the request.
    pub fn unlock(&self, key: &[u8]) {
        let k = self.table.key(key);
        let t = self.table.lock();
        if let Some(slot) = t.find(k) {
            let mut n = Node::of(t.get(slot));
            n.count = n.count.saturating_sub(1);
            t.set(slot, n.values());
        }
    }

    /// A full zone drops the keys whose excess has run out a minute ago or more, as
    /// nginx's expiry does; when there are none, new keys are refused for a second
    /// (so that a flood of new keys does not scan the zone on every request).
    fn expire(&self, t: &mut crate::shm::Held<'_>, now: u64) -> bool {
        if now < t.full_until() {
            return false;
        }
        let rate = self.rate;
        t.retain(|v| {
            let n = Node::of(v);
            let ms = if n.last == NEVER {
                u64::MAX
            } else {
                now.saturating_sub(n.last)
            };
            n.count > 0 || ms < 60_000 || n.excess > rate.saturating_mul(ms) / 1000
        });
        if t.is_full() {
            t.set_full_until(now + 1000);
            return false;
        }
        true
    }

    /// A limit's delay threshold, as nginx stores it (milli-requests).
    pub fn delay_of(delay: LimitDelay) -> u64 {
        match delay {
            LimitDelay::All => 0,
            LimitDelay::After(n) => u64::from(n) * 1000,
            LimitDelay::Never => u64::MAX,
        }
    }

    /// How long a request with `excess` waits under `delay` (ms).
    pub fn wait(&self, excess: u64, delay: u64) -> u64 {
        if excess <= delay {
            0
        } else {
            (excess - delay) * 1000 / self.rate
        }
    }
}

/// A limit_conn_zone.
#[derive(Debug)]
pub struct ConnZone {
    pub config: LimitZone,
    /// Each key's connections in the first value.
    table: Table,
}

impl ConnZone {
    /// The zone, in the shared memory the master made for it (else this process's).
    pub fn new(config: LimitZone) -> Result<ConnZone, String> {
        Ok(ConnZone {
            table: Table::for_zone(&config)?,
            config,
        })
    }

    /// Takes one of `max` places for `key`; None when they are all taken or the zone is
    /// full. The place is given back when the guard goes.
    pub fn acquire(self: &Arc<Self>, key: &[u8], max: u32) -> Result<ConnGuard, ConnRefused> {
        let k = self.table.key(key);
        let mut t = self.table.lock();
        match t.find(k) {
            Some(slot) => {
                let [n, ..] = t.get(slot);
                if n >= u64::from(max) {
                    return Err(ConnRefused::Limit);
                }
                t.set(slot, [n + 1, 0, 0]);
            }
            None if t.is_full() => return Err(ConnRefused::Full),
            None => {
                t.insert(k, [1, 0, 0]);
            }
        }
        Ok(ConnGuard {
            zone: self.clone(),
            key: k,
        })
    }

    #[cfg(test)]
    fn count(&self, key: &[u8]) -> u64 {
        let t = self.table.lock();
        t.find(self.table.key(key)).map_or(0, |s| t.get(s)[0])
    }
}

/// Why limit_conn refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefused {
    Limit,
    Full,
}

/// One request counted by a limit_conn zone until it is done.
#[derive(Debug)]
pub struct ConnGuard {
    zone: Arc<ConnZone>,
    key: Key,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut t = self.zone.table.lock();
        if let Some(slot) = t.find(self.key) {
            match t.get(slot)[0] {
                0 | 1 => t.remove(slot),
                n => t.set(slot, [n - 1, 0, 0]),
            }
        }
    }
}

/// The milliseconds of the limit modules' clock: CLOCK_MONOTONIC, which every worker
/// process reads alike (their zones are shared).
pub fn now_ms() -> u64 {
    fulcrum_sys::monotonic_ns() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::NODE_BYTES;

    fn zone(rate: u64) -> ReqZone {
        ReqZone::new(LimitZone {
            name: "z".into(),
            key: Template::new("$binary_remote_addr"),
            size: 1 << 20,
            rate: Some(rate),
        })
        .unwrap()
    }

    #[test]
    fn a_burst_fills_then_drains_at_the_rate() {
        // 10r/s, burst=5: at one instant the first passes, five more wait, the seventh
        // is refused; 100 ms later one place has drained.
        let z = zone(10_000);
        let burst = 5_000;
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(z.lookup(b"a", 1000, burst, true));
        }
        assert_eq!(seen[0], Lookup::Ok { excess: 0 });
        assert_eq!(seen[5], Lookup::Ok { excess: 5000 });
        assert_eq!(seen[6], Lookup::Busy { excess: 6000 });
        // Each waits (excess - delay) / rate: the fifth beyond the rate 500 ms.
        assert_eq!(z.wait(5000, 0), 500);
        assert_eq!(z.wait(5000, ReqZone::delay_of(LimitDelay::After(3))), 200);
        assert_eq!(z.wait(5000, ReqZone::delay_of(LimitDelay::Never)), 0);
        assert_eq!(
            z.lookup(b"a", 1100, burst, true),
            Lookup::Ok { excess: 5000 }
        );
        assert_eq!(
            z.lookup(b"a", 1100, burst, true),
            Lookup::Busy { excess: 6000 }
        );
        // Another key has its own bucket.
        assert_eq!(z.lookup(b"b", 1100, 0, true), Lookup::Ok { excess: 0 });
        assert_eq!(z.lookup(b"b", 1100, 0, true), Lookup::Busy { excess: 1000 });
        // Idle long enough, the bucket is empty again.
        assert_eq!(z.lookup(b"a", 10_000, 0, true), Lookup::Ok { excess: 0 });
    }

    #[test]
    fn per_minute_rates_drain_slowly() {
        // 30r/m: one request every two seconds.
        let z = zone(500);
        assert_eq!(z.lookup(b"a", 0, 0, true), Lookup::Ok { excess: 0 });
        assert_eq!(z.lookup(b"a", 1999, 0, true), Lookup::Busy { excess: 1 });
        assert_eq!(z.lookup(b"a", 2000, 0, true), Lookup::Ok { excess: 0 });
    }

    #[test]
    fn several_limits_account_after_the_last() {
        let z = zone(1000);
        assert_eq!(z.lookup(b"a", 0, 0, false), Lookup::Again);
        assert_eq!(z.account(b"a", 0), 0);
        assert_eq!(z.lookup(b"a", 0, 0, false), Lookup::Busy { excess: 1000 });
        // Refused by a later limit: nothing counted.
        assert_eq!(z.lookup(b"c", 0, 0, false), Lookup::Again);
        z.unlock(b"c");
        assert_eq!(z.lookup(b"c", 0, 0, true), Lookup::Ok { excess: 0 });
    }

    #[test]
    fn a_full_zone_expires_idle_keys_or_refuses() {
        let z = ReqZone::new(LimitZone {
            name: "z".into(),
            key: Template::new("$k"),
            size: 2 * NODE_BYTES,
            rate: Some(1000),
        })
        .unwrap();
        assert_eq!(z.lookup(b"a", 0, 0, true), Lookup::Ok { excess: 0 });
        assert_eq!(z.lookup(b"b", 0, 0, true), Lookup::Ok { excess: 0 });
        assert_eq!(z.lookup(b"c", 10, 0, true), Lookup::Full);
        assert_eq!(z.lookup(b"c", 500, 0, true), Lookup::Full);
        assert_eq!(z.lookup(b"c", 61_000, 0, true), Lookup::Ok { excess: 0 });
    }

    #[test]
    fn connections_count_until_the_guard_goes() {
        let z = Arc::new(
            ConnZone::new(LimitZone {
                name: "c".into(),
                key: Template::new("$k"),
                size: 1 << 20,
                rate: None,
            })
            .unwrap(),
        );
        let a = z.acquire(b"k", 2).unwrap();
        let b = z.acquire(b"k", 2).unwrap();
        assert_eq!(z.acquire(b"k", 2).unwrap_err(), ConnRefused::Limit);
        drop(a);
        assert_eq!(z.count(b"k"), 1);
        let _c = z.acquire(b"k", 2).unwrap();
        drop(b);
        assert_eq!(z.count(b"k"), 1);
    }
}

/// What the preaccess phase decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pre {
    Go,
    /// limit_req_status (or limit_conn_status).
    Refuse(u16),
    /// limit_req's delay, in ms; the phases go on after it.
    Wait(u64),
}

/// A level one lower (what nginx logs delays at): error is logged as warn, info stays.
fn lower(l: Level) -> Level {
    match l {
        Level::Error => Level::Warn,
        Level::Warn => Level::Notice,
        _ => Level::Info,
    }
}

/// ngx_http_limit_req_handler for one request, against `res`'s limit_req list.
pub(crate) fn limit_req(
    site: &Site,
    res: &Resolved,
    r: &mut Req,
    server: &str,
    log: &mut dyn FnMut(Level, String),
) -> Pre {
    if r.limit_req_status.is_some() || res.limit_req.is_empty() {
        return Pre::Go;
    }
    let now = now_ms();
    let dry = if res.limit_req_dry_run {
        ", dry run"
    } else {
        ""
    };
    // (zone, key, limit) of the limits looked up with Again, then the one that stopped.
    let mut looked: Vec<(&Arc<ReqZone>, Vec<u8>, &LimitReq)> = Vec::new();
    let mut outcome = None;
    let last = res.limit_req.len() - 1;
    for (n, l) in res.limit_req.iter().enumerate() {
        let Some(zone) = site.req_zones.get(&l.zone) else {
            continue;
        };
        let key = r.ctx(site, server, "").eval(zone.key()).into_bytes();
        if key.is_empty() {
            continue;
        }
        if key.len() > 65535 {
            log(
                Level::Error,
                format!(
                    "the value of the \"{}\" key is more than 65535 bytes: \"{}\"",
                    zone.key().as_str(),
                    String::from_utf8_lossy(&key)
                ),
            );
            continue;
        }
        let found = zone.lookup(&key, now, u64::from(l.burst) * 1000, n == last);
        if found == Lookup::Again {
            looked.push((zone, key, l));
            continue;
        }
        outcome = Some((found, zone, l));
        break;
    }
    let refuse = |looked: &[(&Arc<ReqZone>, Vec<u8>, &LimitReq)], r: &mut Req| {
        for (zone, key, _) in looked {
            zone.unlock(key);
        }
        if res.limit_req_dry_run {
            r.limit_req_status = Some("REJECTED_DRY_RUN");
            Pre::Go
        } else {
            r.limit_req_status = Some("REJECTED");
            Pre::Refuse(res.limit_req_status)
        }
    };
    // The excess and limit the delay is worked out from: the last limit's, unless it
    // was skipped.
    let (mut excess, mut by) = match outcome {
        None if looked.is_empty() => return Pre::Go,
        None => (0, None),
        Some((Lookup::Busy { excess }, zone, _)) => {
            log(
                res.limit_req_log_level,
                format!(
                    "limiting requests{dry}, excess: {}.{:03} by zone \"{}\"",
                    excess / 1000,
                    excess % 1000,
                    zone.name()
                ),
            );
            return refuse(&looked, r);
        }
        Some((Lookup::Full, zone, _)) => {
            log(
                Level::Alert,
                format!(
                    "could not allocate node in limit_req zone \"{}\"",
                    zone.name()
                ),
            );
            return refuse(&looked, r);
        }
        Some((Lookup::Ok { excess }, zone, l)) => (excess, Some((zone, l))),
        Some((Lookup::Again, ..)) => unreachable!("Again continues the loop"),
    };
    let mut wait = by.map_or(0, |(zone, l)| zone.wait(excess, ReqZone::delay_of(l.delay)));
    for (zone, key, l) in looked.iter().rev() {
        let e = zone.account(key, now);
        let w = zone.wait(e, ReqZone::delay_of(l.delay));
        if w > wait {
            wait = w;
            excess = e;
            by = Some((zone, l));
        }
    }
    if wait == 0 {
        r.limit_req_status = Some("PASSED");
        return Pre::Go;
    }
    let name = by.map_or("", |(zone, _)| zone.name());
    log(
        lower(res.limit_req_log_level),
        format!(
            "delaying request{dry}, excess: {}.{:03}, by zone \"{name}\"",
            excess / 1000,
            excess % 1000
        ),
    );
    if res.limit_req_dry_run {
        r.limit_req_status = Some("DELAYED_DRY_RUN");
        return Pre::Go;
    }
    r.limit_req_status = Some("DELAYED");
    Pre::Wait(wait)
}

/// ngx_http_limit_conn_handler: a place in each zone of `res`'s limit_conn list, held by
/// the request until its response is done.
pub(crate) fn limit_conn(
    site: &Site,
    res: &Resolved,
    r: &mut Req,
    server: &str,
    log: &mut dyn FnMut(Level, String),
) -> Pre {
    if r.limit_conn_status.is_some() || res.limit_conn.is_empty() {
        return Pre::Go;
    }
    for (name, max) in &res.limit_conn {
        let Some(zone) = site.conn_zones.get(name) else {
            continue;
        };
        let key = r.ctx(site, server, "").eval(&zone.config.key).into_bytes();
        if key.is_empty() {
            continue;
        }
        if key.len() > 255 {
            log(
                Level::Error,
                format!(
                    "the value of the \"{}\" key is more than 255 bytes: \"{}\"",
                    zone.config.key.as_str(),
                    String::from_utf8_lossy(&key)
                ),
            );
            continue;
        }
        r.limit_conn_status = Some("PASSED");
        match zone.acquire(&key, *max) {
            Ok(guard) => {
                if let Ok(mut held) = r.limit_conn.lock() {
                    held.push(guard);
                }
            }
            Err(why) => {
                let dry = if res.limit_conn_dry_run {
                    ", dry run"
                } else {
                    ""
                };
                match why {
                    ConnRefused::Limit => log(
                        res.limit_conn_log_level,
                        format!("limiting connections{dry} by zone \"{name}\""),
                    ),
                    ConnRefused::Full => log(
                        Level::Alert,
                        format!("could not allocate node in limit_conn zone \"{name}\""),
                    ),
                }
                if let Ok(mut held) = r.limit_conn.lock() {
                    held.clear();
                }
                if res.limit_conn_dry_run {
                    r.limit_conn_status = Some("REJECTED_DRY_RUN");
                    return Pre::Go;
                }
                r.limit_conn_status = Some("REJECTED");
                return Pre::Refuse(res.limit_conn_status);
            }
        }
    }
    Pre::Go
}
