//! What the proxy counts for the metrics: requests by server and status, upstream tries by
//! peer and status, retries, passive-health failures, and upstream response times. Kept
//! across reloads (the metrics are counters).

use crate::shm::{Count, Counters};
use fulcrum_upstream::PeerAddr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the upstream response-time histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram: counts per bucket (each observation in the first bucket whose bound it
/// does not exceed; above the last bound, only in `count`), sum and count.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub buckets: [u64; BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// The counters, keyed first by name so that counting a request allocates nothing once
/// the name has been seen.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// server_name → status → requests answered.
    pub requests: HashMap<String, HashMap<u16, u64>>,
    /// upstream → (peer, status) → tries that got a response.
    pub tries: HashMap<String, HashMap<(PeerAddr, u16), u64>>,
    /// upstream → peer → tries that failed (error, timeout, invalid header).
    pub failures: HashMap<String, HashMap<PeerAddr, u64>>,
    /// upstream → tries after the first (proxy_next_upstream).
    pub retries: HashMap<String, u64>,
    /// upstream → time to the response head.
    pub latency: HashMap<String, Histogram>,
}

/// The entry for `key`, made on first use (the only time the name is copied).
fn slot<'a, V: Default>(map: &'a mut HashMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("just made")
}

/// The proxy's counters, shared by every request.
#[derive(Debug, Default)]
pub struct Stats(Mutex<Counts>, pub Connections);

/// stub_status's counters, as nginx keeps them: connections accepted and handled and
/// requests, totals; connections open, and of those the ones reading a request head,
/// writing an answer, and waiting for a request. With worker processes they live in
/// memory the workers share, each counting in a slot of its own ([`crate::shm`]).
#[derive(Debug, Default)]
pub struct Connections(Counters);

/// One of the gauges counted up while this lives.
#[derive(Debug)]
pub struct Counted {
    stats: Arc<Stats>,
    gauge: Gauge,
}

/// Which gauge a [`Counted`] holds.
#[derive(Debug, Clone, Copy)]
pub enum Gauge {
    Active,
    Reading,
    Writing,
    Waiting,
}

impl Gauge {
    fn count(self) -> Count {
        match self {
            Gauge::Active => Count::Active,
            Gauge::Reading => Count::Reading,
            Gauge::Writing => Count::Writing,
            Gauge::Waiting => Count::Waiting,
        }
    }
}

impl Connections {
    /// A gauge across every worker.
    pub fn gauge(&self, g: Gauge) -> i64 {
        self.0.total(g.count()).max(0)
    }

    /// The next connection's serial number (`$connection`).
    pub fn next_serial(&self) -> u64 {
        self.0.next_serial()
    }

    /// The stub_status page's text.
    pub fn page(&self) -> String {
        let t = |c: Count| self.0.total(c).max(0);
        format!(
            "Active connections: {} \nserver accepts handled requests\n {} {} {} \nReading: {} Writing: {} Waiting: {} \n",
            t(Count::Active),
            t(Count::Accepted),
            t(Count::Handled),
            t(Count::Requests),
            t(Count::Reading),
            t(Count::Writing),
            t(Count::Waiting),
        )
    }
}

impl Counted {
    /// Counts `gauge` up until the result goes.
    pub fn new(stats: &Arc<Stats>, gauge: Gauge) -> Counted {
        stats.1 .0.add(gauge.count(), 1);
        Counted {
            stats: stats.clone(),
            gauge,
        }
    }

    /// Moves the count to another gauge (reading to writing).
    pub fn set(&mut self, gauge: Gauge) {
        self.stats.1 .0.add(self.gauge.count(), -1);
        self.stats.1 .0.add(gauge.count(), 1);
        self.gauge = gauge;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.1 .0.add(self.gauge.count(), -1);
    }
}

/// A connection accepted and handled: counted, and active while the result lives.
pub fn accepted(stats: &Arc<Stats>) -> Counted {
    stats.1 .0.add(Count::Accepted, 1);
    stats.1 .0.add(Count::Handled, 1);
    Counted::new(stats, Gauge::Active)
}

/// A request begun: counted, and reading its head while the result lives (then
/// [`Counted::set`] to writing).
pub fn request_started(stats: &Arc<Stats>, gauge: Gauge) -> Counted {
    stats.1 .0.add(Count::Requests, 1);
    Counted::new(stats, gauge)
}

impl Stats {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn request(&self, server: &str, status: u16) {
        self.with(|c| *slot(&mut c.requests, server).entry(status).or_default() += 1);
    }

    pub fn answered(&self, upstream: &str, peer: &PeerAddr, status: u16, took: Duration) {
        self.with(|c| {
            *slot(&mut c.tries, upstream)
                .entry((peer.clone(), status))
                .or_default() += 1;
            slot(&mut c.latency, upstream).observe(took.as_secs_f64());
        });
    }

    pub fn failed(&self, upstream: &str, peer: &PeerAddr) {
        self.with(|c| {
            *slot(&mut c.failures, upstream)
                .entry(peer.clone())
                .or_default() += 1
        });
    }

    pub fn retried(&self, upstream: &str) {
        self.with(|c| *slot(&mut c.retries, upstream) += 1);
    }

    pub fn snapshot(&self) -> Counts {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
