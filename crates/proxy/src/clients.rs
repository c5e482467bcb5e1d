//! Variables by client: split_clients (a share of clients by MurmurHash2 of a string,
//! nginx's thresholds in the 32-bit hash space) and geo (a value by address: the longest
//! network that holds it, or the range, else the default; the client's address, through
//! trusted proxies' X-Forwarded-For, or a variable's).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use fulcrum_nginx_conf::model::{Geo, GeoKey, Source, SplitClients, Template};

/// A split_clients block, its percents as nginx's cumulative thresholds.
#[derive(Debug)]
pub struct Split {
    pub source: Template,
    /// (threshold, value); 0 is `*`, which takes whatever comes to it.
    parts: Vec<(u32, String)>,
}

impl Split {
    pub fn new(s: &SplitClients) -> Split {
        let mut last: u32 = 0;
        let parts = s
            .parts
            .iter()
            .map(|(percent, value)| {
                if *percent == 0 {
                    return (0, value.clone());
                }
                last = last.wrapping_add((u64::from(*percent) * 0xffff_ffff / 10_000) as u32);
                (last, value.clone())
            })
            .collect();
        Split {
            source: s.source.clone(),
            parts,
        }
    }

    /// The value for the evaluated source string; empty when no part takes it.
    pub fn value(&self, key: &[u8]) -> &str {
        let hash = murmur2(key);
        self.parts
            .iter()
            .find(|(t, _)| *t == 0 || hash < *t)
            .map_or("", |(_, v)| v)
    }
}

/// MurmurHash2, 32 bits, seeded with the length (ngx_murmur_hash2).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A geo block, ready for lookups.
#[derive(Debug)]
pub struct GeoTable {
    /// The variable whose value is the address; None: the client's.
    pub address: Option<String>,
    default: String,
    /// Networks by prefix length, longest first: (length, masked address → value).
    v4: Vec<(u8, HashMap<u32, String>)>,
    v6: Vec<(u8, HashMap<u128, String>)>,
    /// With `ranges`: start → (end, value), not overlapping.
    ranges: BTreeMap<u32, (u32, String)>,
    pub proxies: Vec<Source>,
    pub proxy_recursive: bool,
}

impl GeoTable {
    pub fn new(g: &Geo) -> GeoTable {
        let mut v4: BTreeMap<u8, HashMap<u32, String>> = BTreeMap::new();
        let mut v6: BTreeMap<u8, HashMap<u128, String>> = BTreeMap::new();
        let mut ranges = BTreeMap::new();
        for (key, value) in &g.entries {
            match *key {
                GeoKey::Net(IpAddr::V4(a), len) => {
                    v4.entry(len)
                        .or_default()
                        .insert(u32::from(a), value.clone());
                }
                GeoKey::Net(IpAddr::V6(a), len) => {
                    v6.entry(len)
                        .or_default()
                        .insert(u128::from(a), value.clone());
                }
                GeoKey::Range(a, b) => insert_range(&mut ranges, u32::from(a), u32::from(b), value),
            }
        }
        GeoTable {
            address: g.address.clone(),
            default: g.default.clone().unwrap_or_default(),
            v4: v4.into_iter().rev().collect(),
            v6: v6.into_iter().rev().collect(),
            ranges,
            proxies: g.proxies.clone(),
            proxy_recursive: g.proxy_recursive,
        }
    }

    /// The value for `addr` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn value(&self, addr: IpAddr) -> &str {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            a => a,
        };
        let found = match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                if self.ranges.is_empty() {
                    self.v4.iter().find_map(|(len, nets)| {
                        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                        nets.get(&(a & mask))
                    })
                } else {
                    self.ranges
                        .range(..=a)
                        .next_back()
                        .filter(|(_, (end, _))| a <= *end)
                        .map(|(_, (_, v))| v)
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().find_map(|(len, nets)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    nets.get(&(a & mask))
                })
            }
        };
        found.map_or(&self.default, |v| v)
    }
}

/// Adds [a, b] with `value` over whatever it overlaps (a later range wins).
fn insert_range(map: &mut BTreeMap<u32, (u32, String)>, a: u32, b: u32, value: &str) {
    // A range that starts before `a` and reaches into it keeps its part before `a`, and
    // its part after `b` if it goes on past it.
    if let Some((&s, (e, v))) = map.range(..a).next_back() {
        if *e >= a {
            let (e, v) = (*e, v.clone());
            map.insert(s, (a - 1, v.clone()));
            if e > b {
                map.insert(b + 1, (e, v));
            }
        }
    }
    let inside: Vec<u32> = map.range(a..=b).map(|(s, _)| *s).collect();
    for s in inside {
        if let Some((e, v)) = map.remove(&s) {
            if e > b {
                map.insert(b + 1, (e, v));
            }
        }
    }
    map.insert(a, (b, value.to_string()));
}

/// A geo block's address from a variable's value: an address, else nginx's
/// 255.255.255.255.
pub fn parse_address(v: &str) -> IpAddr {
    v.parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_as_nginx_hashes() {
        // Reference values of MurmurHash2 (seed = length).
        assert_eq!(murmur2(b""), 0);
        assert_eq!(murmur2(b"a"), 0x92685f5e);
        assert_eq!(murmur2(b"abcd"), 0x26873021);
        assert_eq!(murmur2(b"hello world"), 0x44a81419);
    }

    #[test]
    fn split_thresholds_are_cumulative() {
        let s = Split::new(&SplitClients {
            source: Template::new("$remote_addr"),
            variable: "v".into(),
            parts: vec![(5000, "a".into()), (2500, "b".into()), (0, "c".into())],
        });
        assert_eq!(s.parts[0].0, 0x7fff_ffff);
        assert_eq!(s.parts[1].0, 0xbfff_fffe);
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for i in 0..10_000 {
            *seen
                .entry(s.value(format!("10.0.{}.{}", i / 256, i % 256).as_bytes()))
                .or_default() += 1;
        }
        assert!((4500..5500).contains(&seen["a"]), "{seen:?}");
        assert!((2000..3000).contains(&seen["b"]), "{seen:?}");
    }

    #[test]
    fn geo_takes_the_longest_network_or_the_range() {
        let net = |s: &str, l| GeoKey::Net(s.parse().unwrap(), l);
        let g = GeoTable::new(&Geo {
            variable: "g".into(),
            default: Some("none".into()),
            entries: vec![
                (net("10.0.0.0", 8), "ten".into()),
                (net("10.1.0.0", 16), "ten-one".into()),
                (net("2001:db8::", 32), "doc".into()),
            ],
            ..Geo::default()
        });
        assert_eq!(g.value("10.2.3.4".parse().unwrap()), "ten");
        assert_eq!(g.value("10.1.3.4".parse().unwrap()), "ten-one");
        assert_eq!(g.value("::ffff:10.1.3.4".parse().unwrap()), "ten-one");
        assert_eq!(g.value("2001:db8::1".parse().unwrap()), "doc");
        assert_eq!(g.value("192.0.2.1".parse().unwrap()), "none");
        let r = |a: &str, b: &str| GeoKey::Range(a.parse().unwrap(), b.parse().unwrap());
        let g = GeoTable::new(&Geo {
            variable: "g".into(),
            ranges: true,
            entries: vec![
                (r("10.0.0.0", "10.0.0.255"), "a".into()),
                (r("10.0.0.100", "10.0.0.110"), "b".into()),
            ],
            ..Geo::default()
        });
        assert_eq!(g.value("10.0.0.99".parse().unwrap()), "a");
        assert_eq!(g.value("10.0.0.105".parse().unwrap()), "b");
        assert_eq!(g.value("10.0.0.111".parse().unwrap()), "a");
        assert_eq!(g.value("10.0.1.0".parse().unwrap()), "");
    }
}
