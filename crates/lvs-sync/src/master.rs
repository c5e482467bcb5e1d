//! Which connections a master sends, and when: IPVS decides per packet
//! (`ip_vs_sync_conn_needed`); Fulcrum's data plane counts no packets per connection, so
//! the master looks at its table on every tick and decides from what changed.
//!
//! - A TCP connection is sent once it is ESTABLISHED, and again on every move to
//!   FIN_WAIT, CLOSE_WAIT, CLOSE or TIME_WAIT (IPVS's forced updates); the handshake
//!   states are never sent, as with IPVS.
//! - UDP connections and persistence templates are sent when first seen.
//! - Any of them is sent again when it has seen traffic and the last copy is older than
//!   the refresh period: `sync_refresh_period` when set, else half the state's timeout
//!   (at least 10 s, IPVS's floor), so a backup's copy never runs out while the
//!   connection is alive on the master.

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
}

type Key = (u8, bool, SocketAddr, SocketAddr);

#[derive(Debug, Clone, Copy)]
struct Sent {
    state: u16,
    at: Duration,
    deadline: Duration,
}

/// What the master has sent, to send only what changed.
#[derive(Debug, Default)]
pub struct Master {
    sent: HashMap<Key, Sent>,
    /// `sync_refresh_period`; zero: half the timeout.
    pub refresh_period: Duration,
}

const MIN_REFRESH: Duration = Duration::from_secs(10);

impl Master {
    pub fn new(refresh_period: Duration) -> Self {
        Master {
            sent: HashMap::new(),
            refresh_period,
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
            if !syncable(r) {
                if let Some(b) = before {
                    next.insert(key, b);
                }
                continue;
            }
            let send = match before {
                None => true,
                Some(b) if b.state != r.state => true,
                Some(b) => s.deadline != b.deadline && now >= b.at + self.refresh(r),
            };
            if send {
                next.insert(
                    key,
                    Sent {
                        state: r.state,
                        at: now,
                        deadline: s.deadline,
                    },
                );
                out.push(s.record);
            } else if let Some(b) = before {
                next.insert(key, b);
            }
        }
        self.sent = next;
        out
    }

    /// Forgets what was sent: the next tick sends everything (a new master, or backups
    /// that may have lost what they had).
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    fn refresh(&self, r: &Record) -> Duration {
        let half = (Duration::from_secs(u64::from(r.timeout)) / 2).max(MIN_REFRESH);
        if self.refresh_period.is_zero() {
            half
        } else {
            self.refresh_period.min(half)
        }
    }
}

/// IPVS syncs TCP connections only in these states.
fn syncable(r: &Record) -> bool {
    if r.is_template() || r.protocol != 6 {
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
