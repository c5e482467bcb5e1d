//! A simulated LAN of VRRP routers in virtual time: each node is a [`Router`], as the
//! daemon runs one; adverts are encoded to bytes, carried with a latency (or dropped across
//! a partition), and handed to the receiving router as a datagram. Nothing sleeps; a minute
//! of protocol time runs in microseconds.

// One real instant is the origin of virtual time; nothing reads the clock again.
#![allow(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use fulcrum_types::{Priority, Vrid};
use fulcrum_vrrp::instance::{Action, Config, Event, Instance, Reason, State};
use fulcrum_vrrp::packet::{self, ChecksumMode, DropReason, Version};
use fulcrum_vrrp::router::{Datagram, Member, Output, Router, Track, TrackId};
use fulcrum_vrrp::track::TrackState;

const LATENCY: Duration = Duration::from_micros(200);

struct Node {
    name: &'static str,
    /// The node's instances; `inst` is the first, for single-instance tests.
    router: Router,
    up: bool,
    /// Whether the node holds each instance's virtual addresses now.
    holds: Vec<bool>,
    /// (when, instance, state, reason)
    transitions: Vec<(Duration, usize, State, Reason)>,
}

impl Node {
    fn inst(&self) -> &Instance {
        self.at(0)
    }

    fn at(&self, k: usize) -> &Instance {
        &self.router.members()[k].instance
    }
}

/// A router of fresh (not started) instances.
fn router(configs: Vec<Config>, groups: Vec<Option<usize>>) -> Router {
    let members = configs
        .into_iter()
        .zip(groups)
        .map(|(c, group)| {
            let source = c.primary;
            let mut m = Member::new(Instance::new(c), 0, source, ChecksumMode::PseudoHeader);
            m.group = group;
            m
        })
        .collect();
    Router::new(members, [])
}

/// A node: its name, its instances, and each instance's sync group.
type NodeSpec = (&'static str, Vec<Config>, Vec<Option<usize>>);

/// A packet on the wire: (deliver at, sequence, from, to, source address, bytes).
type InFlight = Reverse<(Instant, u64, usize, usize, IpAddr, Vec<u8>)>;

struct Lan {
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    inflight: BinaryHeap<InFlight>,
    seq: u64,
    cut: HashSet<(usize, usize)>,
}

fn config(last_octet: u8, priority: u8, version: Version, centis: u16) -> Config {
    let mut c = Config::new(
        Vrid::new(51).unwrap(),
        version,
        IpAddr::from([10, 1, 10, last_octet]),
        vec![IpAddr::from([10, 1, 10, 88])],
    );
    c.priority = Priority::new(i64::from(priority)).unwrap();
    c.advert_int_centis = centis;
    if version == Version::V2 {
        c.auth = Some(packet::pass_auth_data("secret12"));
    }
    c
}

impl Lan {
    fn new(nodes: Vec<(&'static str, Config)>) -> Lan {
        Lan::multi(
            nodes
                .into_iter()
                .map(|(n, c)| (n, vec![c], vec![None]))
                .collect(),
        )
    }

    /// Nodes with several instances each, and each instance's sync group.
    fn multi(nodes: Vec<NodeSpec>) -> Lan {
        let t0 = Instant::now();
        Lan {
            t0,
            now: t0,
            nodes: nodes
                .into_iter()
                .map(|(name, cs, groups)| Node {
                    name,
                    holds: vec![false; cs.len()],
                    router: router(cs, groups),
                    up: false,
                    transitions: Vec::new(),
                })
                .collect(),
            inflight: BinaryHeap::new(),
            seq: 0,
            cut: HashSet::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Carries out what node `i`'s router said, in order.
    fn apply(&mut self, i: usize, out: Output) {
        for (k, a) in out {
            match a {
                Action::SendAdvert { priority } => {
                    let inst = self.nodes[i].at(k);
                    let src = inst.config().primary;
                    let dst = IpAddr::V4(packet::MULTICAST_V4);
                    let mut buf = [0u8; 1024];
                    let n =
                        inst.advert(priority)
                            .emit(&mut buf, src, dst, ChecksumMode::PseudoHeader);
                    for j in 0..self.nodes.len() {
                        if j != i && !self.cut.contains(&(i, j)) {
                            self.seq += 1;
                            self.inflight.push(Reverse((
                                self.now + LATENCY,
                                self.seq,
                                i,
                                j,
                                src,
                                buf[..n].to_vec(),
                            )));
                        }
                    }
                }
                Action::AddAddresses => self.nodes[i].holds[k] = true,
                Action::RemoveAddresses => self.nodes[i].holds[k] = false,
                Action::Announce { .. } => {}
                Action::Transition { to, reason, .. } => {
                    let t = self.elapsed();
                    self.nodes[i].transitions.push((t, k, to, reason));
                }
            }
        }
    }

    /// Node `i`'s router rebuilt with changed members (tracked objects all up).
    fn rebuild(&mut self, i: usize, change: impl FnOnce(&mut Vec<Member>)) {
        let old = std::mem::replace(&mut self.nodes[i].router, Router::new(vec![], []));
        let mut members = old.into_members();
        change(&mut members);
        self.nodes[i].router = Router::new(members, []);
    }

    /// Starts node `i`: every instance from scratch, as a new process would.
    fn start(&mut self, i: usize) {
        self.nodes[i].up = true;
        self.rebuild(i, |members| {
            members.iter_mut().for_each(|m| m.effect = None)
        });
        let out = self.nodes[i].router.start(self.now);
        self.apply(i, out);
    }

    /// A tracked object of node `i` changes.
    fn track(&mut self, i: usize, id: TrackId, state: TrackState) {
        let out = self.nodes[i].router.handle_track(self.now, id, state);
        self.apply(i, out);
    }

    /// Starts every node at the same instant.
    fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    fn event(&mut self, i: usize, e: Event) {
        self.event_on(i, 0, e);
    }

    fn event_on(&mut self, i: usize, k: usize, e: Event) {
        let out = self.nodes[i].router.handle_event(self.now, k, e);
        self.apply(i, out);
    }

    /// SIGKILL: no goodbye, and the addresses go with the process's host... as far as the
    /// LAN is concerned, nobody answers for them any more.
    fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = false;
        n.holds.iter_mut().for_each(|h| *h = false);
        let members = n.router.members();
        let configs = members
            .iter()
            .map(|m| m.instance.config().clone())
            .collect();
        let groups = members.iter().map(|m| m.group).collect();
        n.router = router(configs, groups);
    }

    /// SIGTERM: priority 0, then gone.
    fn stop(&mut self, i: usize) {
        let out = self.nodes[i].router.shutdown(self.now);
        self.apply(i, out);
        self.nodes[i].up = false;
    }

    fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.up)
                .filter_map(|(i, n)| n.router.poll_timeout().map(|t| (t, i)))
                .min();
            let next_packet = self.inflight.peek().map(|Reverse(p)| p.0);
            let next = match (next_timer, next_packet) {
                (Some((t, _)), Some(p)) => t.min(p),
                (Some((t, _)), None) => t,
                (None, Some(p)) => p,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = next;
            if next_packet == Some(next) {
                let Reverse((_, _, _, to, src, bytes)) = self.inflight.pop().unwrap();
                if !self.nodes[to].up {
                    continue;
                }
                let datagram = Datagram {
                    iface: 0,
                    src,
                    dst: Some(IpAddr::V4(packet::MULTICAST_V4)),
                    ttl: packet::TTL,
                    bytes: &bytes,
                };
                let out = self.nodes[to].router.handle_datagram(self.now, datagram);
                self.apply(to, out);
            } else if let Some((_, i)) = next_timer {
                let out = self.nodes[i].router.handle_timeout(self.now);
                self.apply(i, out);
            }
        }
        self.now = end;
    }

    fn masters(&self) -> Vec<&'static str> {
        self.masters_of(0)
    }

    /// Nodes whose instance `k` is master.
    fn masters_of(&self, k: usize) -> Vec<&'static str> {
        self.nodes
            .iter()
            .filter(|n| n.up && n.at(k).state() == State::Master)
            .map(|n| n.name)
            .collect()
    }

    fn holders(&self) -> Vec<&'static str> {
        self.nodes
            .iter()
            .filter(|n| n.up && n.holds[0])
            .map(|n| n.name)
            .collect()
    }

    /// When node `i`'s first instance last became master, since the start.
    fn became_master_at(&self, i: usize) -> Option<Duration> {
        self.nodes[i]
            .transitions
            .iter()
            .rev()
            .find(|(_, k, s, _)| *k == 0 && *s == State::Master)
            .map(|(t, _, _, _)| *t)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn the_highest_priority_is_elected_and_alone_holds_the_addresses() {
    let mut lan = Lan::new(vec![
        ("a", config(65, 100, Version::V2, 100)),
        ("b", config(66, 150, Version::V2, 100)),
        ("c", config(67, 120, Version::V2, 100)),
    ]);
    lan.start_all();
    lan.run_for(secs(10.0));
    assert_eq!(lan.masters(), vec!["b"]);
    assert_eq!(lan.holders(), vec!["b"]);
    // b became master when its master-down timer ran out: 3 s + (256-150)/256 s.
    let t = lan.became_master_at(1).unwrap();
    assert!((secs(3.41)..secs(3.42)).contains(&t), "{t:?}");
    assert_eq!(
        lan.nodes[0].inst().master().map(|m| m.0),
        Some(IpAddr::from([10, 1, 10, 66]))
    );
}

#[test]
fn sigkill_of_the_master_fails_over_within_master_down_interval() {
    let mut lan = Lan::new(vec![
        ("primary", config(65, 150, Version::V2, 100)),
        ("backup", config(68, 100, Version::V2, 100)),
    ]);
    lan.start_all();
    lan.run_for(secs(10.0));
    assert_eq!(lan.masters(), vec!["primary"]);
    let killed = lan.elapsed();
    lan.kill(0);
    lan.run_for(secs(10.0));
    assert_eq!(lan.masters(), vec!["backup"]);
    assert_eq!(lan.holders(), vec!["backup"]);
    let failover = lan.became_master_at(1).unwrap() - killed;
    // 3 x advert_int + skew = 3.609 s at worst, measured from the last advert heard.
    assert!(failover <= secs(3.61), "{failover:?}");
    assert!(failover >= secs(2.6), "{failover:?}");
}

#[test]
fn a_graceful_stop_hands_over_in_about_the_skew() {
    let mut lan = Lan::new(vec![
        ("primary", config(65, 150, Version::V2, 100)),
        ("backup", config(68, 100, Version::V2, 100)),
    ]);
    lan.start_all();
    lan.run_for(secs(10.0));
    let stopped = lan.elapsed();
    lan.stop(0);
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["backup"]);
    let handover = lan.became_master_at(1).unwrap() - stopped;
    // (256 - 100)/256 s = 0.609 s, plus one hop.
    assert!(handover <= secs(0.61), "{handover:?}");
    assert!(lan.nodes[1]
        .transitions
        .iter()
        .any(|(_, _, s, r)| *s == State::Master && *r == Reason::MasterStopping));
}

#[test]
fn a_returning_higher_priority_preempts_unless_nopreempt() {
    for nopreempt in [false, true] {
        let mut primary = config(65, 150, Version::V2, 100);
        primary.preempt = !nopreempt;
        let mut lan = Lan::new(vec![
            ("primary", primary),
            ("backup", config(68, 100, Version::V2, 100)),
        ]);
        lan.start(1);
        lan.run_for(secs(10.0));
        assert_eq!(lan.masters(), vec!["backup"]);
        lan.start(0);
        lan.run_for(secs(10.0));
        if nopreempt {
            assert_eq!(
                lan.masters(),
                vec!["backup"],
                "nopreempt leaves the lower master alone"
            );
        } else {
            assert_eq!(lan.masters(), vec!["primary"]);
            assert_eq!(lan.holders(), vec!["primary"]);
            let b = &lan.nodes[1].transitions;
            assert!(b.iter().any(|(_, _, s, r)| *s == State::Backup
                && matches!(r, Reason::Preempted { priority: 150, .. })));
        }
    }
}

#[test]
fn preempt_delay_waits_before_taking_over() {
    let mut primary = config(65, 150, Version::V2, 100);
    primary.preempt_delay = secs(8.0);
    let mut lan = Lan::new(vec![
        ("primary", primary),
        ("backup", config(68, 100, Version::V2, 100)),
    ]);
    lan.start(1);
    lan.run_for(secs(10.0));
    let started = lan.elapsed();
    lan.start(0);
    lan.run_for(secs(7.0));
    assert_eq!(lan.masters(), vec!["backup"]);
    lan.run_for(secs(10.0));
    assert_eq!(lan.masters(), vec!["primary"]);
    let took = lan.became_master_at(0).unwrap() - started;
    assert!(
        took >= secs(8.0) && took <= secs(8.0) + secs(3.42),
        "{took:?}"
    );
}

#[test]
fn equal_priority_is_won_by_the_higher_primary_address() {
    let mut lan = Lan::new(vec![
        ("low", config(65, 100, Version::V2, 100)),
        ("high", config(68, 100, Version::V2, 100)),
    ]);
    // Both become master after a partition; the tie is settled when they meet.
    lan.partition(&[0], &[1]);
    lan.start_all();
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["low", "high"]);
    lan.heal();
    lan.run_for(secs(3.0));
    assert_eq!(lan.masters(), vec!["high"]);
    assert_eq!(lan.holders(), vec!["high"]);
}

#[test]
fn split_brain_heals_to_the_higher_priority() {
    let mut lan = Lan::new(vec![
        ("a", config(65, 200, Version::V3, 100)),
        ("b", config(66, 150, Version::V3, 100)),
        ("c", config(67, 100, Version::V3, 100)),
    ]);
    lan.start_all();
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["a"]);
    lan.partition(&[0], &[1, 2]);
    lan.run_for(secs(5.0));
    assert_eq!(
        lan.masters(),
        vec!["a", "b"],
        "each side of the split elects a master"
    );
    lan.heal();
    lan.run_for(secs(2.0));
    assert_eq!(lan.masters(), vec!["a"]);
    assert_eq!(lan.holders(), vec!["a"]);
}

#[test]
fn tracking_weights_move_mastership() {
    let mut lan = Lan::new(vec![
        ("primary", config(65, 150, Version::V2, 100)),
        ("backup", config(68, 100, Version::V2, 100)),
    ]);
    let script = TrackId(0);
    lan.rebuild(0, |m| {
        m[0].tracks.push(Track {
            object: script,
            weight: Some(-60),
            reverse: false,
        })
    });
    lan.start_all();
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["primary"]);
    // A tracked script with weight -60 fails on the primary: 150 - 60 = 90 < 100.
    lan.track(0, script, TrackState::Up(false));
    assert_eq!(lan.nodes[0].inst().effective_priority(), 90);
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["backup"]);
    // It recovers: the primary preempts again.
    lan.track(0, script, TrackState::Up(true));
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["primary"]);
}

#[test]
fn a_fault_hands_over_at_once_and_recovery_returns_as_backup_first() {
    let mut lan = Lan::new(vec![
        ("primary", config(65, 150, Version::V2, 100)),
        ("backup", config(68, 100, Version::V2, 100)),
    ]);
    // The primary's interface is tracked without a weight: down is a fault.
    let link = TrackId(1);
    lan.rebuild(0, |m| {
        m[0].tracks.push(Track {
            object: link,
            weight: None,
            reverse: false,
        })
    });
    lan.start_all();
    lan.run_for(secs(5.0));
    let t = lan.elapsed();
    lan.track(0, link, TrackState::Up(false));
    lan.run_for(secs(2.0));
    assert_eq!(lan.nodes[0].inst().state(), State::Fault);
    assert_eq!(lan.masters(), vec!["backup"]);
    assert!(
        lan.became_master_at(1).unwrap() - t <= secs(0.61),
        "priority 0 on fault"
    );
    lan.track(0, link, TrackState::Up(true));
    assert_eq!(lan.nodes[0].inst().state(), State::Backup);
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["primary"]);
}

#[test]
fn v3_backups_adopt_the_masters_interval() {
    // The master advertises every 10 ms; the backup is configured for 1 s but adopts 10 ms,
    // so it detects a dead master in 3 x 10 ms + skew, not in 3 s.
    let mut lan = Lan::new(vec![
        ("primary", config(65, 200, Version::V3, 1)),
        ("backup", config(68, 100, Version::V3, 100)),
    ]);
    lan.start(1);
    lan.run_for(secs(0.05));
    lan.start(0);
    lan.run_for(secs(5.0));
    assert_eq!(lan.masters(), vec!["primary"]);
    assert_eq!(
        lan.nodes[1].inst().master_adv_interval(),
        Duration::from_millis(10)
    );
    let killed = lan.elapsed();
    lan.kill(0);
    lan.run_for(secs(1.0));
    assert_eq!(lan.masters(), vec!["backup"]);
    let detect = lan.became_master_at(1).unwrap() - killed;
    // 3 x 10 ms + (256-100) x 10 ms / 256 = 36.1 ms.
    assert!(detect <= Duration::from_micros(36_100), "{detect:?}");
}

#[test]
fn v2_interval_or_password_mismatch_is_dropped_and_counted() {
    let mut other = config(68, 100, Version::V2, 200);
    other.auth = Some(packet::pass_auth_data("secret12"));
    let mut wrong_pass = config(69, 100, Version::V2, 100);
    wrong_pass.auth = Some(packet::pass_auth_data("nope"));
    let mut lan = Lan::new(vec![
        ("a", config(65, 150, Version::V2, 100)),
        ("interval", other),
        ("password", wrong_pass),
    ]);
    lan.start_all();
    lan.run_for(secs(10.0));
    // They cannot hear each other, so each is master: what RFC 3768 and keepalived do.
    assert_eq!(lan.masters(), vec!["a", "interval", "password"]);
    let dropped = &lan.nodes[0].inst().stats().dropped;
    assert!(
        dropped
            .iter()
            .any(|(r, n)| *r == DropReason::Interval && *n > 0),
        "{dropped:?}"
    );
    assert!(
        dropped
            .iter()
            .any(|(r, n)| *r == DropReason::Auth && *n > 0),
        "{dropped:?}"
    );
}

#[test]
fn the_address_owner_takes_over_at_once_and_ignores_weights() {
    let mut lan = Lan::new(vec![
        ("backup", config(68, 200, Version::V2, 100)),
        ("owner", config(65, 255, Version::V2, 100)),
    ]);
    lan.start(0);
    lan.run_for(secs(10.0));
    assert_eq!(lan.masters(), vec!["backup"]);
    lan.start(1);
    assert_eq!(
        lan.nodes[1].inst().state(),
        State::Master,
        "priority 255 is master at start"
    );
    lan.run_for(secs(0.01));
    assert_eq!(lan.masters(), vec!["owner"]);
    lan.event(1, Event::Priority(10));
    assert_eq!(lan.nodes[1].inst().effective_priority(), 255);
}

fn config_vrid(last_octet: u8, vrid: i64, priority: u8) -> Config {
    let mut c = config(last_octet, priority, Version::V3, 100);
    c.vrid = Vrid::new(vrid).unwrap();
    c.addresses = vec![IpAddr::from([10, 1, 10, 80 + vrid as u8])];
    c
}

#[test]
fn a_sync_group_moves_as_one() {
    // Two nodes, each with VI_1 (VRID 51) and VI_2 (VRID 52) in one sync group. The primary
    // is master of both; a fault on its VI_1 alone takes both instances to the backup.
    let mut lan = Lan::multi(vec![
        (
            "primary",
            vec![config_vrid(65, 51, 150), config_vrid(65, 52, 150)],
            vec![Some(0), Some(0)],
        ),
        (
            "backup",
            vec![config_vrid(68, 51, 100), config_vrid(68, 52, 100)],
            vec![Some(0), Some(0)],
        ),
    ]);
    lan.start_all();
    lan.run_for(secs(5.0));
    assert_eq!(
        (lan.masters_of(0), lan.masters_of(1)),
        (vec!["primary"], vec!["primary"])
    );
    lan.event_on(0, 0, Event::Fault(true));
    assert_eq!(
        lan.nodes[0].at(1).state(),
        State::Fault,
        "VI_2 follows VI_1 into FAULT"
    );
    lan.run_for(secs(2.0));
    assert_eq!(
        (lan.masters_of(0), lan.masters_of(1)),
        (vec!["backup"], vec!["backup"])
    );
    // Without a sync group, only the faulty instance would have moved.
    let mut lone = Lan::multi(vec![
        (
            "primary",
            vec![config_vrid(65, 51, 150), config_vrid(65, 52, 150)],
            vec![None, None],
        ),
        (
            "backup",
            vec![config_vrid(68, 51, 100), config_vrid(68, 52, 100)],
            vec![None, None],
        ),
    ]);
    lone.start(0);
    lone.start(1);
    lone.run_for(secs(5.0));
    lone.event_on(0, 0, Event::Fault(true));
    lone.run_for(secs(2.0));
    assert_eq!(
        (lone.masters_of(0), lone.masters_of(1)),
        (vec!["backup"], vec!["primary"])
    );
}
