//! One checker's state machine: when to check, and what a result means.
//!
//! keepalived's rule, which this follows: a failed check of an **up** checker is retried
//! `retry` times, `delay_before_retry` apart, and the checker goes down only when the last
//! retry fails too; a failed check of a **down** checker is not retried (the next check is a
//! `delay_loop` away); one successful check brings a down checker back at once. The next
//! check is scheduled when the previous one has finished, so a slow check never overlaps
//! the next.

use std::time::{Duration, Instant};

use crate::Timing;

/// Whether a checker (or a real server) counts as alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    Down,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed. `weight_delta` is MISC_CHECK's `misc_dynamic` adjustment (exit
    /// status - 2 - configured weight), 0 for every other checker.
    Success { weight_delta: i64 },
    /// The check failed, with the reason an operator reads in the log, such as
    /// `TCP connection to 192.168.184.130:80 refused`.
    Failure(String),
}

/// What happened, fed to [`Checker::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The time in [`Checker::poll_timeout`] has come.
    Timer,
    /// The check started by `StartCheck { attempt }` has finished.
    Result { attempt: u64, outcome: Outcome },
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a check now; report it with `Event::Result` carrying the same `attempt`.
    StartCheck { attempt: u64 },
    /// The check `attempt` ran out of time and already counts as failed: stop it (close
    /// its socket, kill its process); a late result for it is ignored.
    Abandon { attempt: u64 },
    /// A check of an up checker failed; `retry` of `of` comes after `delay_before_retry`.
    Retrying { reason: String, retry: u32, of: u32 },
    /// The checker changed state. `retries` is how many retries failed before a fall.
    Transition {
        to: Status,
        reason: String,
        retries: u32,
    },
    /// The checker stayed up but its `misc_dynamic` weight adjustment changed.
    WeightChanged { weight_delta: i64 },
}

/// The last finished check, for `ctl health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastResult {
    pub at: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

/// One checker of one real server.
#[derive(Debug, Clone)]
pub struct Checker {
    timing: Timing,
    status: Status,
    /// Whether a check has finished since start.
    has_run: bool,
    /// Failed attempts of the current retry sequence.
    retry_it: u32,
    /// When the next check starts (idle), or `None` while one is in flight.
    next_at: Option<Instant>,
    /// The check in flight: its number, start and deadline.
    in_flight: Option<(u64, Instant, Instant)>,
    attempts: u64,
    /// Checks finished, and of those failed (timeouts included).
    finished: u64,
    failed: u64,
    weight_delta: i64,
    last: Option<LastResult>,
    changed_at: Instant,
}

impl Checker {
    /// A checker created at `now`. `warmup_draw` is a uniformly random `u32` from the
    /// daemon: the first check starts at `warmup * warmup_draw / u32::MAX`, which spreads
    /// the checks of many servers over the first delay_loop as keepalived does.
    pub fn new(timing: Timing, now: Instant, warmup_draw: u32) -> Checker {
        let spread = timing
            .warmup
            .mul_f64(f64::from(warmup_draw) / f64::from(u32::MAX));
        Checker {
            timing,
            status: if timing.alpha {
                Status::Down
            } else {
                Status::Up
            },
            has_run: false,
            retry_it: 0,
            next_at: Some(now + spread),
            in_flight: None,
            attempts: 0,
            finished: 0,
            failed: 0,
            weight_delta: 0,
            last: None,
            changed_at: now,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The `misc_dynamic` weight adjustment of the last success.
    pub fn weight_delta(&self) -> i64 {
        self.weight_delta
    }

    pub fn last(&self) -> Option<&LastResult> {
        self.last.as_ref()
    }

    /// When the state last changed (or the checker was created).
    pub fn changed_at(&self) -> Instant {
        self.changed_at
    }

    /// Whether any check has finished yet.
    pub fn has_run(&self) -> bool {
        self.has_run
    }

    /// How many checks have finished.
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// How many finished checks failed (timeouts included).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Whether a check is in flight.
    pub fn checking(&self) -> bool {
        self.in_flight.is_some()
    }

    /// When [`Event::Timer`] is due: the next check's start, or the deadline of the one in
    /// flight.
    pub fn poll_timeout(&self) -> Instant {
        match (self.in_flight, self.next_at) {
            (Some((_, _, deadline)), _) => deadline,
            (None, Some(at)) => at,
            // One of the two is always set.
            (None, None) => unreachable!("checker neither idle nor checking"),
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Timer => {
                if let Some((attempt, started, deadline)) = self.in_flight {
                    if now >= deadline {
                        out.push(Action::Abandon { attempt });
                        let reason = format!("timed out after {}", secs(self.timing.timeout));
                        self.finish(now, started, Outcome::Failure(reason), &mut out);
                    }
                } else if self.next_at.is_some_and(|at| now >= at) {
                    self.attempts += 1;
                    let attempt = self.attempts;
                    self.in_flight = Some((attempt, now, now + self.timing.timeout));
                    self.next_at = None;
                    out.push(Action::StartCheck { attempt });
                }
            }
            Event::Result { attempt, outcome } => {
                if let Some((current, started, _)) = self.in_flight {
                    if current == attempt {
                        self.finish(now, started, outcome, &mut out);
                    }
                }
            }
        }
        out
    }

    fn finish(&mut self, now: Instant, started: Instant, outcome: Outcome, out: &mut Vec<Action>) {
        self.in_flight = None;
        self.last = Some(LastResult {
            at: now,
            latency: now.saturating_duration_since(started),
            outcome: outcome.clone(),
        });
        self.has_run = true;
        self.finished += 1;
        if matches!(outcome, Outcome::Failure(_)) {
            self.failed += 1;
        }
        let mut delay = self.timing.delay_loop;
        match outcome {
            Outcome::Success { weight_delta } => {
                let retries = self.retry_it;
                self.retry_it = 0;
                let delta_changed = weight_delta != self.weight_delta;
                self.weight_delta = weight_delta;
                if self.status == Status::Down {
                    self.set(now, Status::Up, "check succeeded".into(), retries, out);
                } else if delta_changed {
                    out.push(Action::WeightChanged { weight_delta });
                }
            }
            Outcome::Failure(reason) => {
                if self.status == Status::Up && self.retry_it < self.timing.retry {
                    self.retry_it += 1;
                    delay = self.timing.delay_before_retry;
                    out.push(Action::Retrying {
                        reason,
                        retry: self.retry_it,
                        of: self.timing.retry,
                    });
                } else {
                    let retries = self.retry_it;
                    self.retry_it = 0;
                    if self.status == Status::Up {
                        self.set(now, Status::Down, reason, retries, out);
                    }
                }
            }
        }
        self.next_at = Some(now + delay);
    }

    fn set(
        &mut self,
        now: Instant,
        to: Status,
        reason: String,
        retries: u32,
        out: &mut Vec<Action>,
    ) {
        self.status = to;
        self.changed_at = now;
        out.push(Action::Transition {
            to,
            reason,
            retries,
        });
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}
