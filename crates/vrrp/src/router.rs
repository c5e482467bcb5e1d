//! The instances of one host together, without IO: a received datagram goes to the
//! instances it is for, a tracked object's change to the instances that track it, and each
//! transition to the other members of its sync group. The daemon feeds `(now, input)` and
//! carries out the `(member, action)` pairs in the order given; a simulated LAN drives the
//! same router in virtual time, so the routing that runs in production is the routing
//! that is tested.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::instance::{Action, Event, Instance};
use crate::packet::{self, Advert, ChecksumMode, DropReason};
use crate::sync::SyncGroups;
use crate::track::{self, Effect, TrackState, Tracked};

/// A tracked object (a script, an interface, a file), numbered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub usize);

/// One object an instance tracks, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub object: TrackId,
    /// `None`: the instance goes to FAULT while the object is down.
    pub weight: Option<i32>,
    pub reverse: bool,
}

/// An instance with what routing needs to know of it.
#[derive(Debug, Clone)]
pub struct Member {
    pub instance: Instance,
    /// The interface (the caller's number) its adverts arrive on.
    pub iface: usize,
    /// Its own address: the family of adverts it takes, and the destination of unicast
    /// IPv6 adverts (whose destination the socket does not tell).
    pub source: IpAddr,
    pub mode: ChecksumMode,
    /// Its vrrp_sync_group, numbered by the caller.
    pub group: Option<usize>,
    pub tracks: Vec<Track>,
    /// What tracking last made of it; `None` until it has started.
    pub effect: Option<Effect>,
}

impl Member {
    /// A member that has not started, tracking nothing, in no group.
    pub fn new(instance: Instance, iface: usize, source: IpAddr, mode: ChecksumMode) -> Member {
        Member {
            instance,
            iface,
            source,
            mode,
            group: None,
            tracks: Vec::new(),
            effect: None,
        }
    }
}

/// A VRRP datagram as a raw socket delivers it.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    pub iface: usize,
    pub src: IpAddr,
    /// The destination, when the socket tells it (IPv4 does, IPv6 does not).
    pub dst: Option<IpAddr>,
    pub ttl: u8,
    /// The VRRP message, from its version byte.
    pub bytes: &'a [u8],
}

/// What the members said to do, in the order to do it.
pub type Output = Vec<(usize, Action)>;

/// The instances of one host.
#[derive(Debug, Clone)]
pub struct Router {
    members: Vec<Member>,
    groups: SyncGroups,
    objects: HashMap<TrackId, TrackState>,
}

impl Router {
    /// The members (numbered by their position) and the tracked objects' current states.
    pub fn new(
        members: Vec<Member>,
        objects: impl IntoIterator<Item = (TrackId, TrackState)>,
    ) -> Router {
        let groups = SyncGroups::new(members.iter().map(|m| m.group).collect());
        Router {
            members,
            groups,
            objects: objects.into_iter().collect(),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The members back, to carry those a reload keeps into a new router.
    pub fn into_members(self) -> Vec<Member> {
        self.members
    }

    /// A tracked object's last known state.
    pub fn object(&self, id: TrackId) -> Option<TrackState> {
        self.objects.get(&id).copied()
    }

    /// Starts every member that has not started (carried-over members keep their state),
    /// then applies what tracking makes of every member.
    pub fn start(&mut self, now: Instant) -> Output {
        let mut out = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].effect.is_some() {
                continue;
            }
            let acts = self.members[i].instance.handle(now, Event::Startup);
            self.feed(now, i, acts, &mut out);
            let priority = self.members[i].instance.config().priority.get();
            self.members[i].effect = Some(Effect::Priority(priority));
        }
        for i in 0..self.members.len() {
            self.retrack(now, i, &mut out);
        }
        out
    }

    /// Priority 0 from every master, addresses removed.
    pub fn shutdown(&mut self, now: Instant) -> Output {
        let mut out = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            let acts = m.instance.handle(now, Event::Shutdown);
            out.extend(acts.into_iter().map(|a| (i, a)));
        }
        out
    }

    /// A datagram goes to every member on its interface with its VRID and family; one that
    /// does not parse is counted as dropped by each of them.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Output {
        let mut out = Vec::new();
        let vrid = d.bytes.get(1).copied();
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if m.iface != d.iface
                || Some(m.instance.config().vrid.get()) != vrid
                || m.source.is_ipv6() != d.src.is_ipv6()
            {
                continue;
            }
            // IPv6 does not tell the destination: the group, or us for unicast peers.
            let group = IpAddr::V6(packet::MULTICAST_V6);
            let dst = d.dst.unwrap_or(group);
            let mut parsed = Advert::parse(d.bytes, d.src, dst, d.ttl, m.mode);
            if d.dst.is_none() && parsed == Err(DropReason::Checksum) {
                parsed = Advert::parse(d.bytes, d.src, m.source, d.ttl, m.mode);
            }
            match parsed {
                Ok(advert) => {
                    if let Ok(acts) = m.instance.handle_advert(now, d.src, &advert) {
                        self.feed(now, i, acts, &mut out);
                    }
                }
                Err(reason) => m.instance.count_drop(reason),
            }
        }
        out
    }

    /// A tracked object changed: every member tracking it is re-evaluated.
    pub fn handle_track(&mut self, now: Instant, id: TrackId, state: TrackState) -> Output {
        let mut out = Vec::new();
        self.objects.insert(id, state);
        for i in 0..self.members.len() {
            if self.members[i].tracks.iter().any(|t| t.object == id) {
                self.retrack(now, i, &mut out);
            }
        }
        out
    }

    /// Every member whose timer is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Output {
        let mut out = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i]
                .instance
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                let acts = self.members[i].instance.handle_timeout(now);
                self.feed(now, i, acts, &mut out);
            }
        }
        out
    }

    /// When [`Router::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.members
            .iter()
            .filter_map(|m| m.instance.poll_timeout())
            .min()
    }

    /// An event for one member (its sync group follows its transitions).
    pub fn handle_event(&mut self, now: Instant, i: usize, event: Event) -> Output {
        let mut out = Vec::new();
        let acts = self.members[i].instance.handle(now, event);
        self.feed(now, i, acts, &mut out);
        out
    }

    /// Member `i`'s actions, then its sync group following its transitions.
    fn feed(&mut self, now: Instant, i: usize, actions: Vec<Action>, out: &mut Output) {
        let follow = self.groups.follow(i, &actions);
        out.extend(actions.into_iter().map(|a| (i, a)));
        for (j, event) in follow {
            let acts = self.members[j].instance.handle(now, event);
            out.extend(acts.into_iter().map(|a| (j, a)));
        }
    }

    /// Applies what tracking makes of member `i` now.
    fn retrack(&mut self, now: Instant, i: usize, out: &mut Output) {
        let m = &self.members[i];
        let tracked: Vec<Tracked> = m
            .tracks
            .iter()
            .map(|t| Tracked {
                weight: t.weight,
                reverse: t.reverse,
                state: self
                    .objects
                    .get(&t.object)
                    .copied()
                    .unwrap_or(TrackState::Up(true)),
            })
            .collect();
        let effect = track::effect(m.instance.config().priority.get(), &tracked);
        let Some(before) = m.effect else {
            return;
        };
        if effect == before {
            return;
        }
        self.members[i].effect = Some(effect);
        let inst = &mut self.members[i].instance;
        let mut acts = Vec::new();
        match (before, effect) {
            (_, Effect::Fault) => acts.extend(inst.handle(now, Event::Fault(true))),
            (Effect::Fault, Effect::Priority(p)) => {
                acts.extend(inst.handle(now, Event::Priority(p)));
                acts.extend(inst.handle(now, Event::Fault(false)));
            }
            (Effect::Priority(_), Effect::Priority(p)) => {
                acts.extend(inst.handle(now, Event::Priority(p)));
            }
        }
        self.feed(now, i, acts, out);
    }
}

// Tests take one real instant as the origin of virtual time; nothing reads the clock again.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::instance::{Config, State};
    use crate::packet::{Version, MULTICAST_V4};
    use fulcrum_types::{Priority, Vrid};

    fn member(vrid: u8, priority: u8, iface: usize) -> Member {
        let mut c = Config::new(
            Vrid::new(i64::from(vrid)).unwrap(),
            Version::V3,
            IpAddr::from([10, 0, 0, 1]),
            vec![IpAddr::from([10, 0, 0, 100 + vrid])],
        );
        c.priority = Priority::new(i64::from(priority)).unwrap();
        Member::new(
            Instance::new(c),
            iface,
            IpAddr::from([10, 0, 0, 1]),
            ChecksumMode::PseudoHeader,
        )
    }

    fn advert_bytes(vrid: u8, priority: u8, src: IpAddr) -> Vec<u8> {
        let m = member(vrid, priority, 0);
        let mut buf = [0u8; 256];
        let n = m.instance.advert(priority).emit(
            &mut buf,
            src,
            IpAddr::V4(MULTICAST_V4),
            ChecksumMode::PseudoHeader,
        );
        buf[..n].to_vec()
    }

    fn states(r: &Router) -> Vec<State> {
        r.members().iter().map(|m| m.instance.state()).collect()
    }

    #[test]
    fn a_datagram_reaches_only_its_interface_and_vrid() {
        let t0 = Instant::now();
        let mut r = Router::new(
            vec![member(1, 100, 0), member(2, 100, 0), member(1, 100, 1)],
            [],
        );
        r.start(t0);
        let bytes = advert_bytes(1, 200, IpAddr::from([10, 0, 0, 2]));
        let d = Datagram {
            iface: 0,
            src: IpAddr::from([10, 0, 0, 2]),
            dst: Some(IpAddr::V4(MULTICAST_V4)),
            ttl: packet::TTL,
            bytes: &bytes,
        };
        r.handle_datagram(t0, d);
        let received: Vec<u64> = r
            .members()
            .iter()
            .map(|m| m.instance.stats().adverts_received)
            .collect();
        assert_eq!(received, vec![1, 0, 0]);
        // A corrupt one is counted against the instance it was for.
        let mut bad = bytes.clone();
        bad[7] ^= 0xff;
        r.handle_datagram(t0, Datagram { bytes: &bad, ..d });
        assert_eq!(r.members()[0].instance.stats().dropped.len(), 1);
        assert!(r.members()[1].instance.stats().dropped.is_empty());
    }

    #[test]
    fn tracking_faults_the_tracker_and_its_group_follows() {
        let t0 = Instant::now();
        let mut a = member(1, 100, 0);
        a.group = Some(0);
        a.tracks = vec![Track {
            object: TrackId(7),
            weight: None,
            reverse: false,
        }];
        let mut b = member(2, 100, 0);
        b.group = Some(0);
        let c = member(3, 100, 0);
        let mut r = Router::new(vec![a, b, c], [(TrackId(7), TrackState::Up(true))]);
        r.start(t0);
        assert_eq!(states(&r), vec![State::Backup; 3]);
        let out = r.handle_track(t0, TrackId(7), TrackState::Up(false));
        assert_eq!(states(&r), vec![State::Fault, State::Fault, State::Backup]);
        // The tracker's actions come before its group's.
        let order: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
        r.handle_track(t0, TrackId(7), TrackState::Up(true));
        assert_eq!(r.members()[0].effect, Some(Effect::Priority(100)));
    }

    #[test]
    fn a_weight_moves_the_priority_and_carried_members_keep_their_state() {
        let t0 = Instant::now();
        let mut a = member(1, 100, 0);
        a.tracks = vec![Track {
            object: TrackId(0),
            weight: Some(-30),
            reverse: false,
        }];
        let mut r = Router::new(vec![a], [(TrackId(0), TrackState::Up(true))]);
        r.start(t0);
        r.handle_track(t0, TrackId(0), TrackState::Up(false));
        assert_eq!(r.members()[0].effect, Some(Effect::Priority(70)));
        assert_eq!(r.members()[0].instance.effective_priority(), 70);
        // Carried into a new router, it does not start again.
        let later = t0 + std::time::Duration::from_secs(5);
        let mut r = Router::new(r.into_members(), [(TrackId(0), TrackState::Up(false))]);
        let out = r.start(later);
        assert!(out.is_empty(), "{out:?}");
    }
}
