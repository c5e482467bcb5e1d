//! The checker state machine in virtual time: a simulated target answers each check after
//! a latency, refuses, or never answers, and the tests read the transitions off the clock.

// One real instant is the origin of virtual time; nothing reads the clock again.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use fulcrum_health::{Action, CheckKind, Checker, Event, Outcome, Status, Timing};
use fulcrum_keepalived_conf::model::CheckDefaults;
use fulcrum_types::Timer;

/// How the simulated target answers a check started at a given time.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Passes after this latency.
    Ok(Duration),
    /// Fails after this latency (refused, wrong status...).
    Fail(Duration),
    /// Never answers.
    Hang,
}

/// What the test saw: each action with the virtual time it happened at.
struct Run {
    t0: Instant,
    log: Vec<(Duration, Action)>,
}

impl Run {
    fn transitions(&self) -> Vec<(Duration, Status, u32)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Transition { to, retries, .. } => Some((*t, *to, *retries)),
                _ => None,
            })
            .collect()
    }

    fn starts(&self) -> Vec<Duration> {
        self.log
            .iter()
            .filter_map(|(t, a)| matches!(a, Action::StartCheck { .. }).then_some(*t))
            .collect()
    }

    fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|(_, a)| pred(a)).count()
    }
}

/// Drives one checker until `until`, the target answering as `target(time since start)`.
fn drive(
    timing: Timing,
    draw: u32,
    until: Duration,
    target: impl Fn(Duration) -> Answer,
) -> (Checker, Run) {
    let t0 = Instant::now();
    let mut checker = Checker::new(timing, t0, draw);
    let mut run = Run {
        t0,
        log: Vec::new(),
    };
    let mut pending: Option<(Instant, u64, Outcome)> = None;
    loop {
        let timer = checker.poll_timeout();
        let (now, event) = match &pending {
            Some((at, attempt, outcome)) if *at <= timer => {
                let e = Event::Result {
                    attempt: *attempt,
                    outcome: outcome.clone(),
                };
                let at = *at;
                pending = None;
                (at, e)
            }
            _ => (timer, Event::Timer),
        };
        if now.duration_since(t0) > until {
            break;
        }
        for action in checker.handle(now, event) {
            match &action {
                Action::StartCheck { attempt } => match target(now.duration_since(run.t0)) {
                    Answer::Ok(lat) => {
                        pending = Some((now + lat, *attempt, Outcome::Success { weight_delta: 0 }))
                    }
                    Answer::Fail(lat) => {
                        pending = Some((now + lat, *attempt, Outcome::Failure("refused".into())))
                    }
                    Answer::Hang => pending = None,
                },
                Action::Abandon { attempt }
                    if pending.as_ref().is_some_and(|p| p.1 == *attempt) =>
                {
                    pending = None;
                }
                _ => {}
            }
            run.log.push((now.duration_since(t0), action));
        }
    }
    (checker, run)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn timing(delay_loop: f64, timeout: f64, retry: u32, delay_before_retry: f64) -> Timing {
    Timing {
        delay_loop: secs(delay_loop),
        timeout: secs(timeout),
        retry,
        delay_before_retry: secs(delay_before_retry),
        warmup: Duration::ZERO,
        alpha: false,
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn keepalived_defaults_by_kind() {
    let tcp = Timing::defaults(CheckKind::Tcp);
    assert_eq!(tcp.delay_loop, secs(60.0));
    assert_eq!(tcp.timeout, secs(5.0));
    assert_eq!(tcp.retry, 1);
    assert_eq!(tcp.delay_before_retry, secs(1.0));
    assert_eq!(tcp.warmup, secs(60.0), "warmup defaults to delay_loop");
    assert!(!tcp.alpha);
    assert_eq!(
        Timing::defaults(CheckKind::Http).delay_before_retry,
        secs(3.0)
    );
    assert_eq!(
        Timing::defaults(CheckKind::Ssl).delay_before_retry,
        secs(3.0)
    );
    let dns = Timing::defaults(CheckKind::Dns);
    assert_eq!((dns.retry, dns.delay_before_retry), (3, secs(60.0)));
    assert_eq!(Timing::defaults(CheckKind::Misc).retry, 0);
}

#[test]
fn checker_then_real_server_then_virtual_server() {
    let vs = CheckDefaults {
        delay_loop: Some(Timer::from_secs(10)),
        retry: Some(5),
        alpha: Some(true),
        ..CheckDefaults::default()
    };
    let rs = CheckDefaults {
        retry: Some(2),
        connect_timeout: Some(Timer::from_micros(1_500_000)),
        ..CheckDefaults::default()
    };
    let t = Timing::resolve(CheckKind::Tcp, None, &rs, &vs);
    assert_eq!(t.delay_loop, secs(10.0));
    assert_eq!(
        t.retry, 2,
        "the real server's retry beats the virtual server's"
    );
    assert_eq!(t.timeout, secs(1.5));
    assert_eq!(
        t.warmup,
        secs(10.0),
        "warmup follows the resolved delay_loop"
    );
    assert!(t.alpha);
}

#[test]
fn an_up_server_that_refuses_falls_after_its_retries() {
    // delay_loop 2, timeout 1, retry 2 one second apart; the server dies at t = 5.
    let t = timing(2.0, 1.0, 2, 1.0);
    let (checker, run) = drive(t, 0, secs(20.0), |at| {
        if at < secs(5.0) {
            Answer::Ok(MS)
        } else {
            Answer::Fail(MS)
        }
    });
    assert_eq!(checker.status(), Status::Down);
    let falls = run.transitions();
    assert_eq!(falls.len(), 1, "{falls:?}");
    let (at, to, retries) = falls[0];
    assert_eq!((to, retries), (Status::Down, 2));
    assert_eq!(run.count(|a| matches!(a, Action::Retrying { .. })), 2);
    // Checks start at 0, 2.001, 4.002 and 6.003 (fails at 6.004); retries start at 7.004
    // and 8.005, the last failing at 8.006.
    assert_eq!(at, secs(8.006));
    assert!(at - secs(5.0) <= t.detection_bound());
}

#[test]
fn a_hung_server_times_out_each_attempt() {
    let t = timing(2.0, 1.0, 2, 1.0);
    let (checker, run) = drive(t, 0, secs(20.0), |at| {
        if at < secs(5.0) {
            Answer::Ok(MS)
        } else {
            Answer::Hang
        }
    });
    assert_eq!(checker.status(), Status::Down);
    assert!(run.count(|a| matches!(a, Action::Abandon { .. })) >= 3);
    let (at, _, retries) = run.transitions()[0];
    assert_eq!(retries, 2);
    // First hung check starts at 6.003, times out at 7.003; retries at 8.003 and 10.003,
    // the last timing out at 11.003.
    assert_eq!(at, secs(11.003));
    assert!(at - secs(5.0) <= t.detection_bound());
    match &run
        .log
        .iter()
        .find(|(_, a)| matches!(a, Action::Transition { .. }))
        .unwrap()
        .1
    {
        Action::Transition { reason, .. } => assert_eq!(reason, "timed out after 1s"),
        _ => unreachable!(),
    }
}

#[test]
fn one_success_brings_a_down_server_back() {
    let t = timing(2.0, 1.0, 3, 0.5);
    let (checker, run) = drive(t, 0, secs(30.0), |at| {
        if at < secs(10.0) {
            Answer::Fail(MS)
        } else {
            Answer::Ok(MS)
        }
    });
    assert_eq!(checker.status(), Status::Up);
    let tr = run.transitions();
    assert_eq!(tr.len(), 2, "{tr:?}");
    assert_eq!(tr[0].1, Status::Down);
    assert_eq!(tr[1].1, Status::Up);
    assert_eq!(tr[1].2, 0, "no retries on the way up");
    assert!(tr[1].0 - secs(10.0) <= t.delay_loop + t.timeout);
}

#[test]
fn a_down_checker_is_not_retried() {
    let t = timing(2.0, 1.0, 3, 0.5);
    let (_, run) = drive(t, 0, secs(30.0), |_| Answer::Fail(MS));
    let fall = run.transitions()[0].0;
    let after: Vec<Duration> = run.starts().into_iter().filter(|s| *s > fall).collect();
    for pair in after.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            secs(2.001),
            "one delay_loop apart: {after:?}"
        );
    }
    assert_eq!(run.count(|a| matches!(a, Action::Retrying { .. })), 3);
}

#[test]
fn alpha_starts_down_and_needs_one_success() {
    let mut t = timing(2.0, 1.0, 1, 1.0);
    t.alpha = true;
    let (checker, run) = drive(t, 0, secs(1.0), |_| Answer::Ok(MS));
    assert_eq!(checker.status(), Status::Up);
    assert_eq!(run.transitions(), vec![(MS, Status::Up, 0)]);

    // alpha and a dead server: it stays down, nothing is reported, nothing retried.
    let (checker, run) = drive(t, 0, secs(10.0), |_| Answer::Fail(MS));
    assert_eq!(checker.status(), Status::Down);
    assert!(run.transitions().is_empty());
    assert_eq!(run.count(|a| matches!(a, Action::Retrying { .. })), 0);
}

#[test]
fn without_alpha_a_dead_server_falls_after_the_first_checks() {
    let t = timing(2.0, 1.0, 1, 1.0);
    let (_, run) = drive(t, 0, secs(10.0), |_| Answer::Fail(MS));
    assert_eq!(run.transitions(), vec![(secs(1.002), Status::Down, 1)]);
}

#[test]
fn warmup_spreads_first_checks_over_the_warmup() {
    let mut t = timing(10.0, 1.0, 1, 1.0);
    t.warmup = secs(4.0);
    let now = Instant::now();
    let firsts: Vec<Duration> = (0..=100u64)
        .map(|i| {
            let draw = (u64::from(u32::MAX) * i / 100) as u32;
            Checker::new(t, now, draw).poll_timeout() - now
        })
        .collect();
    assert_eq!(firsts[0], Duration::ZERO);
    assert_eq!(firsts[100], secs(4.0));
    assert!((firsts[50].as_secs_f64() - 2.0).abs() < 1e-6);
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]));

    t.warmup = Duration::ZERO;
    assert_eq!(Checker::new(t, now, u32::MAX).poll_timeout(), now);
}

#[test]
fn a_single_failure_between_successes_is_absorbed_by_retry() {
    let t = timing(1.0, 0.5, 1, 0.2);
    // Every third check fails: each failure is retried and the retry passes.
    let n = std::cell::Cell::new(0u32);
    let (checker, run) = drive(t, 0, secs(60.0), |_| {
        n.set(n.get() + 1);
        if n.get().is_multiple_of(3) {
            Answer::Fail(MS)
        } else {
            Answer::Ok(MS)
        }
    });
    assert_eq!(checker.status(), Status::Up);
    assert!(run.transitions().is_empty());
    assert!(run.count(|a| matches!(a, Action::Retrying { .. })) > 10);
}

#[test]
fn flapping_server_follows_every_settled_change() {
    // Down for 5 s, up for 5 s, five times over; delay_loop 1 with retry 1.
    let t = timing(1.0, 0.5, 1, 0.2);
    let (_, run) = drive(t, 0, secs(50.0), |at| {
        if (at.as_secs() / 5) % 2 == 1 {
            Answer::Fail(MS)
        } else {
            Answer::Ok(MS)
        }
    });
    let tr = run.transitions();
    assert_eq!(tr.len(), 9, "{tr:?}");
    for (i, (_, to, _)) in tr.iter().enumerate() {
        assert_eq!(*to, if i % 2 == 0 { Status::Down } else { Status::Up });
    }
}

#[test]
fn a_late_result_after_a_timeout_is_ignored() {
    let t = timing(2.0, 1.0, 0, 1.0);
    let now = Instant::now();
    let mut c = Checker::new(t, now, 0);
    let a = c.handle(now, Event::Timer);
    assert_eq!(a, vec![Action::StartCheck { attempt: 1 }]);
    let a = c.handle(now + secs(1.0), Event::Timer);
    assert_eq!(a[0], Action::Abandon { attempt: 1 });
    assert_eq!(c.status(), Status::Down);
    let late = c.handle(
        now + secs(1.5),
        Event::Result {
            attempt: 1,
            outcome: Outcome::Success { weight_delta: 0 },
        },
    );
    assert!(late.is_empty());
    assert_eq!(c.status(), Status::Down);
    assert_eq!(
        (c.finished(), c.failed()),
        (1, 1),
        "the late result is not counted"
    );
    assert_eq!(c.poll_timeout(), now + secs(3.0));
}

#[test]
fn misc_dynamic_weight_changes_are_reported() {
    let t = timing(1.0, 0.5, 0, 0.2);
    let now = Instant::now();
    let mut c = Checker::new(t, now, 0);
    let mut step = |at: Duration, delta: i64| {
        let start = c.handle(now + at, Event::Timer);
        let Action::StartCheck { attempt } = start[0] else {
            panic!("{start:?}")
        };
        c.handle(
            now + at + MS,
            Event::Result {
                attempt,
                outcome: Outcome::Success {
                    weight_delta: delta,
                },
            },
        )
    };
    assert!(step(Duration::ZERO, 0).is_empty());
    assert_eq!(
        step(secs(1.001), 8),
        vec![Action::WeightChanged { weight_delta: 8 }]
    );
    assert!(step(secs(2.002), 8).is_empty());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the results, an up checker falls only after exactly retry + 1 failures in
        /// a row, a down checker rises on its first success, and checks never overlap.
        #[test]
        fn falls_and_rises_by_the_rule(
            results in proptest::collection::vec(any::<bool>(), 1..200),
            retry in 0u32..4,
            alpha in any::<bool>(),
        ) {
            let mut t = timing(1.0, 0.5, retry, 0.25);
            t.alpha = alpha;
            let now0 = Instant::now();
            let mut c = Checker::new(t, now0, 0);
            let mut now = now0;
            let mut fails_in_a_row = 0u32;
            for ok in results {
                now = now.max(c.poll_timeout());
                let start = c.handle(now, Event::Timer);
                let Action::StartCheck { attempt } = start[0] else { panic!("{start:?}") };
                prop_assert!(c.checking());
                prop_assert!(c.handle(now, Event::Timer).is_empty(), "no second check in flight");
                let before = c.status();
                now += MS;
                let outcome = if ok {
                    Outcome::Success { weight_delta: 0 }
                } else {
                    Outcome::Failure("x".into())
                };
                let actions = c.handle(now, Event::Result { attempt, outcome });
                let fell = actions.iter().any(|a| matches!(a, Action::Transition { to: Status::Down, .. }));
                let rose = actions.iter().any(|a| matches!(a, Action::Transition { to: Status::Up, .. }));
                if before == Status::Up && !ok {
                    fails_in_a_row += 1;
                } else {
                    fails_in_a_row = 0;
                }
                prop_assert_eq!(fell, before == Status::Up && fails_in_a_row == retry + 1);
                prop_assert_eq!(rose, before == Status::Down && ok);
                if fell {
                    fails_in_a_row = 0;
                }
            }
        }
    }
}

#[test]
fn resolved_from_a_keepalived_conf() {
    use fulcrum_keepalived_conf::{parse_str, LoadOptions};
    let text = "
virtual_server 10.0.0.1 80 {
    delay_loop 3
    retry 4
    protocol TCP
    real_server 10.0.1.1 80 {
        delay_before_retry 0.5
        HTTP_GET {
            url { path / status_code 200 }
            connect_timeout 2
            retry 2
        }
        MISC_CHECK {
            misc_path /bin/true
        }
    }
}
";
    let loaded = parse_str(
        std::path::Path::new("t.conf"),
        text,
        &LoadOptions::default(),
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let config = loaded.config.unwrap();
    let vs = &config.virtual_servers[0];
    let rs = &vs.real_servers[0];
    let timings: Vec<Timing> = rs
        .checkers
        .iter()
        .map(|c| Timing::resolve(CheckKind::of(&c.kind), Some(c), &rs.defaults, &vs.defaults))
        .collect();
    assert_eq!(
        timings[0],
        Timing {
            delay_loop: secs(3.0),
            timeout: secs(2.0),
            retry: 2,
            delay_before_retry: secs(0.5),
            warmup: secs(3.0),
            alpha: false,
        }
    );
    // MISC_CHECK: retry from the virtual server, timeout = delay_loop without misc_timeout.
    assert_eq!((timings[1].retry, timings[1].timeout), (4, secs(3.0)));
    assert_eq!(timings[0].detection_bound(), secs(3.0 + 2.0 + 2.0 * 2.5));
}
