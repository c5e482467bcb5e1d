//! One VRRP instance's state machine (RFC 3768 for v2, RFC 5798 for v3), with keepalived's
//! behaviour where the RFCs leave room. No IO and no clock: feed it `(now, event)` with
//! [`Instance::handle`], call [`Instance::handle_timeout`] at [`Instance::poll_timeout`],
//! and carry out the [`Action`]s it returns, in order.
//!
//! keepalived specifics (shared/docs/REFERENCE.md): every instance starts as BACKUP except
//! the address owner (priority 255), which becomes MASTER at once; an advert of equal
//! priority is won by the higher primary address; a master that hears a lower priority
//! answers with its own advert at once; `nopreempt` and `preempt_delay` keep a backup from
//! taking over from a lower-priority master (forever, or for a while after start); FAULT
//! sends priority 0 and drops the addresses if it was master; becoming master sends a
//! burst of gratuitous ARPs / NAs, again after `garp_master_delay`, and every
//! `garp_master_refresh` if set.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fulcrum_types::{Priority, Vrid};

use crate::packet::{Advert, DropReason, Version};

/// What an instance is configured with (from keepalived.conf's vrrp_instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub vrid: Vrid,
    pub version: Version,
    /// Configured priority; 255 makes this node the address owner.
    pub priority: Priority,
    /// Our advertisement interval in centiseconds (v2: a multiple of 100).
    pub advert_int_centis: u16,
    /// False with `nopreempt`.
    pub preempt: bool,
    /// `preempt_delay`: after start, a lower-priority master is left alone this long.
    pub preempt_delay: Duration,
    pub addresses: Vec<IpAddr>,
    /// v2 PASS authentication data.
    pub auth: Option<[u8; 8]>,
    /// Our primary address (the adverts' source), which breaks priority ties.
    pub primary: IpAddr,
    /// Gratuitous ARPs / NAs sent on becoming master, and again after `garp_delay`.
    pub garp_repeat: u32,
    pub garp_delay: Duration,
    /// Periodic refresh while master, if set, with `garp_refresh_repeat` per refresh.
    pub garp_refresh: Option<Duration>,
    pub garp_refresh_repeat: u32,
}

impl Config {
    /// keepalived's defaults for everything but the identity of the instance.
    pub fn new(vrid: Vrid, version: Version, primary: IpAddr, addresses: Vec<IpAddr>) -> Config {
        Config {
            vrid,
            version,
            priority: Priority::DEFAULT,
            advert_int_centis: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addresses,
            auth: None,
            primary,
            garp_repeat: 5,
            garp_delay: Duration::from_secs(5),
            garp_refresh: None,
            garp_refresh_repeat: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    /// The name keepalived's notify scripts receive.
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// Why a transition happened, for logs, counters and the operator view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Started: every instance but the owner starts as backup.
    Startup,
    /// Priority 255: the address owner is master from the start.
    AddressOwner,
    /// No advert from a master within the master-down interval.
    MasterDown,
    /// The master advertised priority 0 (it is stopping).
    MasterStopping,
    /// Another router advertised a higher priority (or the same from a higher address).
    Preempted {
        by: IpAddr,
        priority: u8,
    },
    Shutdown,
    Fault,
    FaultCleared,
    /// Another instance of the same vrrp_sync_group moved, and this one follows it.
    SyncGroup,
}

/// What happened, fed to [`Instance::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A tracked object without a weight failed (`true`) or recovered (`false`).
    Fault(bool),
    /// The effective priority changed (tracking weights moved it). Ignored by the owner.
    Priority(u8),
    /// Another member of this instance's vrrp_sync_group entered this state: follow it.
    SyncGroup(State),
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 when stopping or faulting).
    SendAdvert { priority: u8 },
    /// Add the virtual addresses to the interface.
    AddAddresses,
    /// Remove them.
    RemoveAddresses,
    /// Send this many gratuitous ARPs (IPv4) or unsolicited NAs (IPv6) for the addresses.
    Announce { count: u32 },
    /// The state changed: log it, count it, run the notify scripts.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
}

/// Counters for the operator view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub priority_zero_sent: u64,
    pub priority_zero_received: u64,
    pub became_master: u64,
    pub released_master: u64,
    /// Adverts whose address list differs from ours (accepted, as keepalived does).
    pub address_mismatch: u64,
    pub dropped: Vec<(DropReason, u64)>,
}

impl Stats {
    fn drop(&mut self, r: DropReason) {
        match self.dropped.iter_mut().find(|(d, _)| *d == r) {
            Some((_, n)) => *n += 1,
            None => self.dropped.push((r, 1)),
        }
    }
}

/// One VRRP instance.
#[derive(Debug, Clone)]
pub struct Instance {
    cfg: Config,
    state: State,
    /// Configured priority moved by tracking weights (1..254), or 255 for the owner.
    effective: u8,
    /// The interval the current master advertises (v3 backups adopt it).
    master_adv_centis: u16,
    /// The master we last heard, and its priority.
    master: Option<(IpAddr, u8)>,
    adver_at: Option<Instant>,
    master_down_at: Option<Instant>,
    garp_at: Option<Instant>,
    /// Whether the next announcement is the delayed repeat (else a refresh).
    garp_repeat_pending: bool,
    preempt_until: Option<Instant>,
    stats: Stats,
}

fn micros(d: u64) -> Duration {
    Duration::from_micros(d)
}

impl Instance {
    pub fn new(cfg: Config) -> Instance {
        let effective = cfg.priority.get();
        let master_adv_centis = cfg.advert_int_centis;
        Instance {
            cfg,
            state: State::Init,
            effective,
            master_adv_centis,
            master: None,
            adver_at: None,
            master_down_at: None,
            garp_at: None,
            garp_repeat_pending: false,
            preempt_until: None,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn effective_priority(&self) -> u8 {
        self.effective
    }

    /// The master we last heard (address, priority), or ourselves when master.
    pub fn master(&self) -> Option<(IpAddr, u8)> {
        match self.state {
            State::Master => Some((self.cfg.primary, self.effective)),
            _ => self.master,
        }
    }

    /// The interval in force: our own as master, the master's (v3) as backup.
    pub fn master_adv_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.master_adv_centis) * 10)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn is_owner(&self) -> bool {
        self.cfg.priority == Priority::OWNER
    }

    /// Skew time: v2 (256 - priority)/256 s; v3 ((256 - priority) x interval)/256.
    pub fn skew(&self) -> Duration {
        let p = 256 - u64::from(self.effective);
        match self.cfg.version {
            Version::V2 => micros(p * 1_000_000 / 256),
            Version::V3 => micros(p * u64::from(self.master_adv_centis) * 10_000 / 256),
        }
    }

    /// Master-down interval: 3 x the master's advert interval + skew.
    pub fn master_down_interval(&self) -> Duration {
        let interval = match self.cfg.version {
            Version::V2 => micros(u64::from(self.cfg.advert_int_centis) * 10_000),
            Version::V3 => micros(u64::from(self.master_adv_centis) * 10_000),
        };
        interval * 3 + self.skew()
    }

    fn advert_interval(&self) -> Duration {
        micros(u64::from(self.cfg.advert_int_centis) * 10_000)
    }

    /// The advert this instance sends with `priority`.
    pub fn advert(&self, priority: u8) -> Advert {
        Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_centis: self.cfg.advert_int_centis,
            addresses: self.cfg.addresses.clone(),
            auth: if self.cfg.version == Version::V2 {
                self.cfg.auth
            } else {
                None
            },
        }
    }

    /// When [`Instance::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.adver_at, self.master_down_at, self.garp_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn transition(&mut self, to: State, reason: Reason, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        if to == State::Master {
            self.stats.became_master += 1;
        }
        if from == State::Master && to != State::Master {
            self.stats.released_master += 1;
        }
        out.push(Action::Transition { from, to, reason });
    }

    fn send(&mut self, priority: u8, out: &mut Vec<Action>) {
        self.stats.adverts_sent += 1;
        if priority == 0 {
            self.stats.priority_zero_sent += 1;
        }
        out.push(Action::SendAdvert { priority });
    }

    fn become_master(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        self.send(self.effective, out);
        out.push(Action::AddAddresses);
        out.push(Action::Announce {
            count: self.cfg.garp_repeat,
        });
        self.master_down_at = None;
        self.adver_at = Some(now + self.advert_interval());
        self.master_adv_centis = self.cfg.advert_int_centis;
        self.master = None;
        if self.cfg.garp_delay > Duration::ZERO && self.cfg.garp_repeat > 0 {
            self.garp_at = Some(now + self.cfg.garp_delay);
            self.garp_repeat_pending = true;
        } else {
            self.garp_at = self.cfg.garp_refresh.map(|r| now + r);
            self.garp_repeat_pending = false;
        }
        self.transition(State::Master, reason, out);
    }

    /// Stops advertising: a master says goodbye (priority 0) and drops its addresses, and
    /// every timer stops.
    fn release(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Master {
            self.send(0, out);
            out.push(Action::RemoveAddresses);
        }
        self.adver_at = None;
        self.master_down_at = None;
        self.garp_at = None;
    }

    fn become_fault(&mut self, reason: Reason, out: &mut Vec<Action>) {
        if matches!(self.state, State::Master | State::Backup) {
            self.release(out);
            self.transition(State::Fault, reason, out);
        }
    }

    fn become_backup(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::RemoveAddresses);
        }
        self.adver_at = None;
        self.garp_at = None;
        self.master_down_at = Some(now + self.master_down_interval());
        self.transition(State::Backup, reason, out);
    }

    /// Feeds an event; returns what to do.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if self.state != State::Init {
                    return out;
                }
                self.preempt_until =
                    (self.cfg.preempt_delay > Duration::ZERO).then(|| now + self.cfg.preempt_delay);
                if self.is_owner() {
                    self.become_master(now, Reason::AddressOwner, &mut out);
                } else {
                    self.master_adv_centis = self.cfg.advert_int_centis;
                    self.become_backup(now, Reason::Startup, &mut out);
                }
            }
            Event::Shutdown => {
                self.release(&mut out);
                if self.state != State::Init {
                    self.transition(State::Init, Reason::Shutdown, &mut out);
                }
            }
            Event::Fault(true) => self.become_fault(Reason::Fault, &mut out),
            Event::Fault(false) => {
                if self.state == State::Fault {
                    if self.is_owner() {
                        self.become_master(now, Reason::FaultCleared, &mut out);
                    } else {
                        self.become_backup(now, Reason::FaultCleared, &mut out);
                    }
                }
            }
            Event::Priority(p) => {
                if !self.is_owner() {
                    self.effective = p.clamp(1, 254);
                }
            }
            Event::SyncGroup(to) => match (self.state, to) {
                (State::Backup, State::Master) => {
                    self.become_master(now, Reason::SyncGroup, &mut out)
                }
                (State::Master, State::Backup) => {
                    self.become_backup(now, Reason::SyncGroup, &mut out)
                }
                (_, State::Fault) => self.become_fault(Reason::SyncGroup, &mut out),
                (State::Fault, State::Backup) => {
                    self.become_backup(now, Reason::SyncGroup, &mut out)
                }
                _ => {}
            },
        }
        out
    }

    /// Feeds a received advert (already parsed and checked by [`Advert::parse`]) from
    /// `src`. An advert this instance must not act on is dropped with its reason.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        advert: &Advert,
    ) -> Result<Vec<Action>, DropReason> {
        let mut out = Vec::new();
        if let Err(r) = self.accepts(advert) {
            self.stats.drop(r);
            return Err(r);
        }
        self.stats.adverts_received += 1;
        if advert.priority == 0 {
            self.stats.priority_zero_received += 1;
        }
        if advert.addresses != self.cfg.addresses {
            self.stats.address_mismatch += 1;
        }
        match self.state {
            State::Init | State::Fault => {}
            State::Backup => {
                if advert.priority == 0 {
                    // The master is stopping: take over after the skew only.
                    self.master_down_at = Some(now + self.skew());
                    self.master = None;
                } else {
                    let in_preempt_delay = self.preempt_until.is_some_and(|t| now < t);
                    if !self.cfg.preempt || in_preempt_delay || advert.priority >= self.effective {
                        if self.cfg.version == Version::V3 {
                            self.master_adv_centis = advert.interval_centis.max(1);
                        }
                        self.master = Some((src, advert.priority));
                        self.master_down_at = Some(now + self.master_down_interval());
                    }
                    // Else: a lower priority and we may preempt: let the timer run out.
                }
            }
            State::Master => {
                let wins = advert.priority > self.effective
                    || (advert.priority == self.effective && src > self.cfg.primary);
                if advert.priority == 0 {
                    self.send(self.effective, &mut out);
                    self.adver_at = Some(now + self.advert_interval());
                } else if wins {
                    if self.cfg.version == Version::V3 {
                        self.master_adv_centis = advert.interval_centis.max(1);
                    }
                    self.master = Some((src, advert.priority));
                    self.become_backup(
                        now,
                        Reason::Preempted {
                            by: src,
                            priority: advert.priority,
                        },
                        &mut out,
                    );
                } else {
                    // keepalived answers a lower priority at once, so the other side
                    // learns there is a master without waiting for our next advert.
                    self.send(self.effective, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Counts an advert for this instance that failed [`Advert::parse`] (bad checksum,
    /// TTL, version...), so that the operator view shows every drop.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drop(reason);
    }

    /// Whether an advert is for this instance and acceptable to it.
    fn accepts(&self, advert: &Advert) -> Result<(), DropReason> {
        if advert.vrid != self.cfg.vrid {
            return Err(DropReason::Vrid);
        }
        if advert.version != self.cfg.version {
            return Err(DropReason::Version);
        }
        if self.cfg.version == Version::V2 {
            if advert.auth != self.cfg.auth {
                return Err(DropReason::Auth);
            }
            // RFC 3768: a v2 advert with another interval is discarded, so two routers
            // never disagree about when the master is down.
            if advert.interval_centis != self.cfg.advert_int_centis {
                return Err(DropReason::Interval);
            }
        }
        Ok(())
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.master_down_at.is_some_and(|t| t <= now) && self.state == State::Backup {
            let reason = if self.master.is_none() && self.stats.priority_zero_received > 0 {
                Reason::MasterStopping
            } else {
                Reason::MasterDown
            };
            self.become_master(now, reason, &mut out);
        }
        if self.adver_at.is_some_and(|t| t <= now) && self.state == State::Master {
            self.send(self.effective, &mut out);
            self.adver_at = Some(now + self.advert_interval());
        }
        if self.garp_at.is_some_and(|t| t <= now) && self.state == State::Master {
            if self.garp_repeat_pending {
                out.push(Action::Announce {
                    count: self.cfg.garp_repeat,
                });
                self.garp_repeat_pending = false;
            } else {
                out.push(Action::Announce {
                    count: self.cfg.garp_refresh_repeat,
                });
            }
            self.garp_at = self.cfg.garp_refresh.map(|r| now + r);
        }
        out
    }
}

// Tests take one real instant as the origin of virtual time; nothing reads the clock again.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn cfg(prio: u8, version: Version, centis: u16) -> Config {
        let mut c = Config::new(
            Vrid::new(51).unwrap(),
            version,
            "10.1.10.65".parse().unwrap(),
            vec!["10.1.10.88".parse().unwrap()],
        );
        c.priority = Priority::new(i64::from(prio)).unwrap();
        c.advert_int_centis = centis;
        c
    }

    #[test]
    fn timers_follow_the_rfcs() {
        // v2, advert_int 1, priority 100: skew (256-100)/256 s = 0.609375 s.
        let i = Instance::new(cfg(100, Version::V2, 100));
        assert_eq!(i.skew(), Duration::from_micros(609_375));
        assert_eq!(i.master_down_interval(), Duration::from_micros(3_609_375));
        // v3, 10 ms interval, priority 200: skew 56 x 10 ms / 256 = 2.1875 ms.
        let i = Instance::new(cfg(200, Version::V3, 1));
        assert_eq!(i.skew(), Duration::from_micros(2_187));
        assert_eq!(i.master_down_interval(), Duration::from_micros(32_187));
    }

    #[test]
    fn the_owner_is_master_at_once_others_start_as_backup() {
        let t0 = Instant::now();
        let mut owner = Instance::new(cfg(255, Version::V2, 100));
        let acts = owner.handle(t0, Event::Startup);
        assert_eq!(owner.state(), State::Master);
        assert_eq!(acts[0], Action::SendAdvert { priority: 255 });
        assert!(acts.contains(&Action::AddAddresses));
        assert!(acts.contains(&Action::Announce { count: 5 }));
        let mut b = Instance::new(cfg(254, Version::V2, 100));
        b.handle(t0, Event::Startup);
        assert_eq!(b.state(), State::Backup);
        assert_eq!(b.poll_timeout(), Some(t0 + b.master_down_interval()));
    }

    #[test]
    fn sync_group_members_follow() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(100, Version::V2, 100));
        i.handle(t0, Event::Startup);
        let acts = i.handle(t0, Event::SyncGroup(State::Master));
        assert_eq!(i.state(), State::Master);
        assert!(acts.contains(&Action::AddAddresses));
        let acts = i.handle(t0, Event::SyncGroup(State::Fault));
        assert_eq!(i.state(), State::Fault);
        assert_eq!(acts[0], Action::SendAdvert { priority: 0 });
        assert!(acts.contains(&Action::RemoveAddresses));
        i.handle(t0, Event::SyncGroup(State::Backup));
        assert_eq!(i.state(), State::Backup);
        i.handle(t0, Event::SyncGroup(State::Backup));
        assert_eq!(i.state(), State::Backup, "already there: nothing happens");
    }

    #[test]
    fn garp_bursts_on_mastership_then_after_the_delay_then_refresh() {
        let t0 = Instant::now();
        let mut c = cfg(255, Version::V2, 100);
        c.garp_refresh = Some(Duration::from_secs(60));
        c.garp_refresh_repeat = 2;
        let mut m = Instance::new(c);
        m.handle(t0, Event::Startup);
        let at5 = m.handle_timeout(t0 + Duration::from_secs(5));
        assert!(at5.contains(&Action::Announce { count: 5 }), "{at5:?}");
        let at65 = m.handle_timeout(t0 + Duration::from_secs(65));
        assert!(at65.contains(&Action::Announce { count: 2 }), "{at65:?}");
    }
}
