//! Which connections a master sends, and when. IPVS decides per packet
//! (`ip_vs_sync_conn_needed`); Fulcrum's data plane counts each connection's packets from
//! the client (16 bits, wrapping) and the master looks at its table on every tick, deciding
//! from what changed since the last copy, by IPVS's sysctls ([`Settings`]):
//!
//! - A TCP connection is sent on every move to FIN_WAIT, CLOSE_WAIT, CLOSE or TIME_WAIT
//!   (IPVS's forced updates); the handshake states are never sent.
//! - An ESTABLISHED TCP connection, or a UDP one, is sent once its client has sent
//!   `sync_threshold` packets, then again each time `sync_period` more have gone by (with
//!   `sync_period` 0, only once).
//! - With `sync_refresh_period` set, it is sent again only once its timer has moved that
//!   far (or half its timeout, at least 10 s, if less) since the last copy, and each copy
//!   is repeated `sync_retries` times, an eighth of the period apart; with `sync_period`
//!   0 as well, the packet counts no longer matter.
//! - Persistence templates are sent when first seen, and again when their timer has moved
//!   and the last copy is half their timeout old (or `sync_refresh_period`, if less).
//! - Beyond IPVS: with the default settings (no refresh period, a packet period), a
//!   connection whose timer has moved is also sent again once its last copy is half its
//!   timeout old, so a backup's copy never runs out while the connection lives on the
//!   master on too little traffic to reach the next packet period (IPVS's can).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::wire::{tcp_state, Record};

/// A connection as the master's table reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub record: Record,
    /// When it runs out on the master (any clock, the one `now` is on): it moves when
    /// traffic goes by.
    pub deadline: Duration,
    /// Packets from the client so far, wrapping at 16 bits (0 for templates).
    pub packets: u16,
}

/// IPVS's sysctls for the sync rate (`net.ipv4.vs.*`, Documentation/networking/
/// ipvs-sysctl.rst), as settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `sync_threshold`, its first value: packets from the client before a connection is
    /// first sent (below the period unless that is 0: keepalived-conf checks it, as IPVS's
    /// sysctl does).
    pub threshold: u16,
    /// `sync_threshold`, its second value (`sync_period`): sent again every so many more
    /// packets; 0: once.
    pub period: u16,
    /// `sync_refresh_period`: sent again only once its timer has moved this far; zero:
    /// off.
    pub refresh_period: Duration,
    /// `sync_retries`, 0 to 3: with a refresh period, each copy sent this many more times.
    pub retries: u8,
}

impl Default for Settings {
    /// IPVS's defaults: `sync_threshold` 3 50, `sync_refresh_period` 0, `sync_retries` 0.
    fn default() -> Self {
        Settings {
            threshold: 3,
            period: 50,
            refresh_period: Duration::ZERO,
            retries: 0,
        }
    }
}

type Key = (u8, bool, SocketAddr, SocketAddr);

#[derive(Debug, Clone, Copy)]
struct Sent {
    state: u16,
    at: Duration,
    deadline: Duration,
    packets: u16,
    /// Repeats of this copy sent so far.
    retries: u8,
}

/// What the master has sent, to send only what changed.
#[derive(Debug, Default)]
pub struct Master {
    sent: HashMap<Key, Sent>,
    pub settings: Settings,
}

const MIN_REFRESH: Duration = Duration::from_secs(10);

/// What one record needs this tick.
enum Send {
    No,
    /// A new copy.
    Copy,
    /// The last copy once more (`sync_retries`).
    Repeat,
}

impl Master {
    pub fn new(settings: Settings) -> Self {
        Master {
            sent: HashMap::new(),
            settings,
        }
    }

    /// The records to send now, given every connection and template the table holds.
    /// Those no longer there are forgotten.
    pub fn tick(&mut self, now: Duration, table: impl IntoIterator<Item = Seen>) -> Vec<Record> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(self.sent.len());
        for s in table {
            let r = &s.record;
            let key = (r.protocol, r.is_template(), r.client, r.virt);
            let before = self.sent.get(&key).copied();
            let decision = if syncable(r) {
                self.decide(now, &s, before.as_ref())
            } else {
                Send::No
            };
            match (decision, before) {
                (Send::Copy, _) => {
                    next.insert(
                        key,
                        Sent {
                            state: r.state,
                            at: now,
                            deadline: s.deadline,
                            packets: s.packets,
                            retries: 0,
                        },
                    );
                    out.push(s.record);
                }
                (Send::Repeat, Some(b)) => {
                    next.insert(
                        key,
                        Sent {
                            at: now,
                            retries: b.retries + 1,
                            ..b
                        },
                    );
                    out.push(s.record);
                }
                (_, Some(b)) => {
                    next.insert(key, b);
                }
                (_, None) => {}
            }
        }
        self.sent = next;
        out
    }

    /// Forgets what was sent: the next tick sends everything due (a new master, or
    /// backups that may have lost what they had).
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    fn decide(&self, now: Duration, s: &Seen, before: Option<&Sent>) -> Send {
        let r = &s.record;
        let cfg = &self.settings;
        let forced =
            r.protocol == PROTO_TCP && !r.is_template() && r.state != tcp_state::ESTABLISHED;
        let Some(b) = before else {
            // With a refresh period and no packet period, packets do not count.
            let by_packets = cfg.period != 0 || cfg.refresh_period.is_zero();
            return if r.is_template() || forced || !by_packets || s.packets >= cfg.threshold {
                Send::Copy
            } else {
                Send::No
            };
        };
        if forced && b.state != r.state {
            return Send::Copy;
        }
        let moved = s.deadline.abs_diff(b.deadline);
        let half = (Duration::from_secs(u64::from(r.timeout)) / 2).max(MIN_REFRESH);
        if r.is_template() {
            let refresh = if cfg.refresh_period.is_zero() {
                half
            } else {
                cfg.refresh_period.min(half)
            };
            return if !moved.is_zero() && now >= b.at + refresh {
                Send::Copy
            } else {
                Send::No
            };
        }
        let packets_due = cfg.period > 0 && s.packets.wrapping_sub(b.packets) >= cfg.period;
        if !cfg.refresh_period.is_zero() {
            let packets_ok = cfg.period == 0 || packets_due;
            if !packets_ok {
                return Send::No;
            }
            if moved >= cfg.refresh_period.min(half) {
                return Send::Copy;
            }
            if b.retries < cfg.retries && now >= b.at + cfg.refresh_period / 8 {
                return Send::Repeat;
            }
            return Send::No;
        }
        if packets_due || (cfg.period > 0 && !moved.is_zero() && now >= b.at + half) {
            Send::Copy
        } else {
            Send::No
        }
    }
}

const PROTO_TCP: u8 = 6;

/// IPVS syncs TCP connections only in these states.
fn syncable(r: &Record) -> bool {
    if r.is_template() || r.protocol != PROTO_TCP {
        return true;
    }
    matches!(
        r.state,
        tcp_state::ESTABLISHED
            | tcp_state::FIN_WAIT
            | tcp_state::CLOSE
            | tcp_state::CLOSE_WAIT
            | tcp_state::TIME_WAIT
    )
}
