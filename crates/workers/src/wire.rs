//! The control channel between the master and a worker: a Unix stream socket (the
//! worker's standard input) carrying length-prefixed JSON frames, and the listening
//! sockets and shared memory once, as SCM_RIGHTS after the start message.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use fulcrum_proxy::stats::{Counts, Histogram};
use fulcrum_proxy::{PeerAddr, PeerView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest frame either side accepts.
const MAX_FRAME: usize = 64 << 20;

/// What the master asks of a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Start(Box<Start>),
    Stats,
    Peers,
    CheckDown {
        addr: SocketAddr,
        down: bool,
    },
    Drained {
        ip: IpAddr,
        port: Option<u16>,
        on: bool,
    },
    Reopen,
    /// A graceful stop, answered with [`FromWorker::Quit`] once done: nginx's QUIT
    /// (`idle`: idle connections close at once), or a worker a reload replaced.
    Quit {
        grace_ms: u64,
        idle: bool,
    },
}

/// Everything a worker needs to serve: the configuration to load (checked against the
/// master's by its printed form), which of the workers it is, the listening sockets that
/// follow (how many for each address, in order), the shared memory that follows them
/// (stub_status's counters, then the limit zones named), whom to run as, and what health
/// checks and drains hold out.
#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    pub conf: PathBuf,
    pub globals: Option<String>,
    pub printed: u64,
    /// Its number among the workers (worker_cpu_affinity's), from 0.
    pub index: usize,
    /// Its own slot in the counters' region.
    pub slot: usize,
    pub listeners: Vec<(SocketAddr, usize)>,
    pub zones: Vec<String>,
    /// uid and gid to switch to; None: stay who the master is (not root).
    pub user: Option<(u32, u32)>,
    pub rlimit_nofile: Option<u64>,
    pub check_down: Vec<(SocketAddr, bool)>,
    pub drained: Vec<(IpAddr, Option<u16>)>,
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// Serving; the log files it writes (the master makes them the worker's at reopen).
    Ready {
        logs: Vec<String>,
    },
    Failed(String),
    Stats(WireCounts),
    Peers(Vec<PeerView>),
    Found(bool),
    Touched(usize),
    Done,
    /// The graceful stop is over: connections still open then, and the last counts.
    Quit {
        left: usize,
        stats: WireCounts,
    },
}

/// Writes one frame.
pub fn send<T: Serialize>(w: &mut impl Write, m: &T) -> io::Result<()> {
    let body = serde_json::to_vec(m).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

/// Reads one frame; None at the end of the stream.
pub fn recv<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

/// The proxy's counters as they cross: maps keyed by tuples become lists.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WireCounts {
    requests: Vec<(String, u16, u64)>,
    tries: Vec<(String, PeerAddr, u16, u64)>,
    failures: Vec<(String, PeerAddr, u64)>,
    retries: Vec<(String, u64)>,
    latency: Vec<(String, Vec<u64>, f64, u64)>,
}

impl From<&Counts> for WireCounts {
    fn from(c: &Counts) -> WireCounts {
        let mut w = WireCounts::default();
        for (server, by) in &c.requests {
            w.requests
                .extend(by.iter().map(|(s, n)| (server.clone(), *s, *n)));
        }
        for (up, by) in &c.tries {
            w.tries
                .extend(by.iter().map(|((p, s), n)| (up.clone(), p.clone(), *s, *n)));
        }
        for (up, by) in &c.failures {
            w.failures
                .extend(by.iter().map(|(p, n)| (up.clone(), p.clone(), *n)));
        }
        w.retries = c.retries.iter().map(|(u, n)| (u.clone(), *n)).collect();
        w.latency = c
            .latency
            .iter()
            .map(|(u, h)| (u.clone(), h.buckets.to_vec(), h.sum, h.count))
            .collect();
        w
    }
}

impl From<WireCounts> for Counts {
    fn from(w: WireCounts) -> Counts {
        let mut c = Counts::default();
        for (server, s, n) in w.requests {
            *c.requests.entry(server).or_default().entry(s).or_default() += n;
        }
        for (up, p, s, n) in w.tries {
            *c.tries.entry(up).or_default().entry((p, s)).or_default() += n;
        }
        for (up, p, n) in w.failures {
            *c.failures.entry(up).or_default().entry(p).or_default() += n;
        }
        for (up, n) in w.retries {
            *c.retries.entry(up).or_default() += n;
        }
        for (up, buckets, sum, count) in w.latency {
            let h = c.latency.entry(up).or_default();
            for (a, b) in h.buckets.iter_mut().zip(buckets) {
                *a += b;
            }
            h.sum += sum;
            h.count += count;
        }
        c
    }
}

/// Adds `from`'s counts to `into`'s.
pub fn add(into: &mut Counts, from: &Counts) {
    fn sum<K: Clone + Eq + std::hash::Hash>(into: &mut HashMap<K, u64>, from: &HashMap<K, u64>) {
        for (k, n) in from {
            *into.entry(k.clone()).or_default() += n;
        }
    }
    for (k, by) in &from.requests {
        sum(into.requests.entry(k.clone()).or_default(), by);
    }
    for (k, by) in &from.tries {
        sum(into.tries.entry(k.clone()).or_default(), by);
    }
    for (k, by) in &from.failures {
        sum(into.failures.entry(k.clone()).or_default(), by);
    }
    sum(&mut into.retries, &from.retries);
    for (k, h) in &from.latency {
        let to: &mut Histogram = into.latency.entry(k.clone()).or_default();
        for (a, b) in to.buckets.iter_mut().zip(h.buckets) {
            *a += b;
        }
        to.sum += h.sum;
        to.count += h.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cross_whole_and_add_up() {
        let mut c = Counts::default();
        let peer = PeerAddr::Inet("10.0.0.1:80".parse().unwrap());
        let unix = PeerAddr::Unix("/run/app.sock".into());
        c.requests.entry("a".into()).or_default().insert(200, 3);
        c.tries
            .entry("u".into())
            .or_default()
            .insert((peer.clone(), 502), 2);
        c.tries
            .entry("u".into())
            .or_default()
            .insert((unix.clone(), 200), 1);
        c.failures
            .entry("u".into())
            .or_default()
            .insert(peer.clone(), 1);
        c.retries.insert("u".into(), 4);
        let h = c.latency.entry("u".into()).or_default();
        h.buckets[2] = 5;
        h.sum = 0.5;
        h.count = 5;
        let mut buf = Vec::new();
        send(&mut buf, &WireCounts::from(&c)).unwrap();
        let back: Counts = recv::<WireCounts>(&mut &buf[..]).unwrap().unwrap().into();
        let mut twice = back.clone();
        add(&mut twice, &c);
        assert_eq!(twice.requests["a"][&200], 6);
        assert_eq!(twice.tries["u"][&(peer.clone(), 502)], 4);
        assert_eq!(twice.tries["u"][&(unix, 200)], 2);
        assert_eq!(twice.failures["u"][&peer], 2);
        assert_eq!(twice.retries["u"], 8);
        assert_eq!(twice.latency["u"].buckets[2], 10);
        assert_eq!(twice.latency["u"].count, 10);
        assert!(recv::<WireCounts>(&mut &b""[..]).unwrap().is_none());
    }
}
