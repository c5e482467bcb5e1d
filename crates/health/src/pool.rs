//! Real servers made of checkers, and virtual services made of real servers.
//!
//! A real server is alive while every one of its checkers is up (a server with no checker
//! is always alive). Its weight is the configured one plus the `misc_dynamic` adjustments of
//! its checkers. A virtual service has quorum while the weights of its live servers add up
//! to `quorum`; `hysteresis` dampens flapping: quorum is lost below `quorum - hysteresis`
//! and regained at `quorum + hysteresis`. While quorum is lost, a configured sorry server
//! replaces every real server.

use fulcrum_types::Weight;

use crate::Status;

/// Where a server stands in the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// In the service with this weight (0: kept, inhibited, for existing connections only).
    In(Weight),
    /// Not in the service.
    Out,
}

/// What the operator's scripts hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEvent {
    /// Real server `n` came alive: run its notify_up.
    ServerUp(usize),
    /// Real server `n` died: run its notify_down.
    ServerDown(usize),
    /// Quorum gained: run quorum_up; the sorry server leaves.
    QuorumUp,
    /// Quorum lost: run quorum_down; the sorry server (if any) stands in.
    QuorumDown,
}

/// One real server of a virtual service.
#[derive(Debug, Clone)]
pub struct RealServer {
    weight: Weight,
    inhibit_on_failure: bool,
    checkers: Vec<(Status, i64)>,
}

impl RealServer {
    /// A real server with its configured weight and the initial state of each checker
    /// (down for an `alpha` checker, up otherwise).
    pub fn new(
        weight: Weight,
        inhibit_on_failure: bool,
        checkers: impl IntoIterator<Item = Status>,
    ) -> RealServer {
        RealServer {
            weight,
            inhibit_on_failure,
            checkers: checkers.into_iter().map(|s| (s, 0)).collect(),
        }
    }

    pub fn alive(&self) -> bool {
        self.checkers.iter().all(|(s, _)| *s == Status::Up)
    }

    pub fn configured_weight(&self) -> Weight {
        self.weight
    }

    /// The configured weight moved by every `misc_dynamic` adjustment, kept in 0..=65535.
    pub fn weight(&self) -> Weight {
        let sum = self
            .checkers
            .iter()
            .fold(i64::from(self.weight.get()), |acc, (_, d)| {
                acc.saturating_add(*d)
            });
        let clamped = sum.clamp(0, i64::from(Weight::MAX));
        Weight::new(clamped).expect("clamped into range")
    }
}

/// A virtual service's health: its real servers, its quorum, its sorry server.
#[derive(Debug, Clone)]
pub struct Service {
    quorum: u64,
    hysteresis: u64,
    sorry: Option<(Weight, bool)>,
    servers: Vec<RealServer>,
    quorum_up: bool,
}

impl Service {
    /// A service as it starts. As keepalived does, it starts with quorum and loses it at
    /// once if its live weight is short (every server `alpha`, say): the returned events say
    /// so. `sorry` is the sorry server's weight and `sorry_server_inhibit`.
    pub fn new(
        quorum: u32,
        hysteresis: u32,
        sorry: Option<(Weight, bool)>,
        servers: Vec<RealServer>,
    ) -> (Service, Vec<PoolEvent>) {
        let mut service = Service {
            quorum: u64::from(quorum),
            hysteresis: u64::from(hysteresis),
            sorry,
            servers,
            quorum_up: true,
        };
        let mut events = Vec::new();
        service.update_quorum(&mut events);
        (service, events)
    }

    pub fn servers(&self) -> &[RealServer] {
        &self.servers
    }

    pub fn has_quorum(&self) -> bool {
        self.quorum_up
    }

    /// The sum of the weights of the live servers.
    pub fn live_weight(&self) -> u64 {
        self.servers
            .iter()
            .filter(|s| s.alive())
            .map(|s| u64::from(s.weight().get()))
            .sum()
    }

    /// Feeds a checker's new state or weight adjustment (from [`crate::Action`]).
    pub fn checker_changed(
        &mut self,
        server: usize,
        checker: usize,
        status: Status,
        weight_delta: i64,
    ) -> Vec<PoolEvent> {
        let mut events = Vec::new();
        let rs = &mut self.servers[server];
        let was = rs.alive();
        rs.checkers[checker] = (status, weight_delta);
        let is = rs.alive();
        if was != is {
            events.push(if is {
                PoolEvent::ServerUp(server)
            } else {
                PoolEvent::ServerDown(server)
            });
        }
        self.update_quorum(&mut events);
        events
    }

    fn update_quorum(&mut self, events: &mut Vec<PoolEvent>) {
        let live = self.live_weight();
        if self.quorum_up && (live == 0 || live < self.quorum.saturating_sub(self.hysteresis)) {
            self.quorum_up = false;
            events.push(PoolEvent::QuorumDown);
        } else if !self.quorum_up && live > 0 && live >= self.quorum + self.hysteresis {
            self.quorum_up = true;
            events.push(PoolEvent::QuorumUp);
        }
    }

    /// Where real server `n` belongs in the data plane now.
    pub fn membership(&self, n: usize) -> Membership {
        let rs = &self.servers[n];
        let replaced = !self.quorum_up && self.sorry.is_some();
        if rs.alive() && !replaced {
            Membership::In(rs.weight())
        } else if rs.inhibit_on_failure {
            Membership::In(Weight::new(0).expect("0 is a weight"))
        } else {
            Membership::Out
        }
    }

    /// Where the sorry server belongs, if the service has one.
    pub fn sorry_membership(&self) -> Option<Membership> {
        let (weight, inhibit) = self.sorry?;
        Some(if !self.quorum_up {
            Membership::In(weight)
        } else if inhibit {
            Membership::In(Weight::new(0).expect("0 is a weight"))
        } else {
            Membership::Out
        })
    }
}
