//! Typed values in the words of LVS and keepalived, shared by every Fulcrum crate.
//!
//! A value of one of these types is always in range: the constructors check, so code that
//! holds a `Vrid` or a `Weight` never re-validates it. Parsing text into them (with file
//! locations) is the configuration crates' job; this crate has no IO.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A value outside the range its type allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value} is out of range {min}..{max}")]
pub struct OutOfRange {
    pub what: &'static str,
    pub value: i64,
    pub min: i64,
    pub max: i64,
}

macro_rules! ranged {
    ($(#[$doc:meta])* $name:ident($inner:ty), $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($inner);

        impl $name {
            pub const MIN: $inner = $min;
            pub const MAX: $inner = $max;

            pub fn new(value: i64) -> Result<$name, OutOfRange> {
                if value < Self::MIN as i64 || value > Self::MAX as i64 {
                    return Err(OutOfRange { what: $what, value, min: Self::MIN as i64, max: Self::MAX as i64 });
                }
                Ok($name(value as $inner))
            }

            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

ranged!(
    /// Virtual router identifier of a VRRP instance (1..255).
    Vrid(u8), "virtual_router_id", 1, 255
);
ranged!(
    /// Configured VRRP priority (1..255; 255 is the address owner). Priority 0 exists only on
    /// the wire, sent by a master that is stopping.
    Priority(u8), "priority", 1, 255
);
ranged!(
    /// Real-server weight (0..65535); 0 quiesces the server.
    Weight(u32), "weight", 0, 65535
);
ranged!(
    /// Weight by which a tracked script, interface or file moves a VRRP priority.
    TrackWeight(i32), "weight", -254, 254
);

impl Priority {
    pub const OWNER: Priority = Priority(255);
    pub const DEFAULT: Priority = Priority(100);
}

impl TrackWeight {
    pub const ZERO: TrackWeight = TrackWeight(0);
}

impl Weight {
    pub const DEFAULT: Weight = Weight(1);
}

/// A duration written in seconds with up to six decimals, as keepalived's timers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timer {
    micros: u64,
}

/// Text that is not a non-negative decimal number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid number of seconds '{0}'")]
pub struct BadTimer(pub String);

impl Timer {
    pub const fn from_secs(secs: u64) -> Timer {
        Timer {
            micros: secs * 1_000_000,
        }
    }

    pub const fn from_micros(micros: u64) -> Timer {
        Timer { micros }
    }

    pub fn as_micros(self) -> u64 {
        self.micros
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_micros(self.micros)
    }

    /// True when the timer is a whole number of seconds.
    pub fn is_whole_seconds(self) -> bool {
        self.micros.is_multiple_of(1_000_000)
    }
}

impl FromStr for Timer {
    type Err = BadTimer;

    fn from_str(s: &str) -> Result<Timer, BadTimer> {
        let bad = || BadTimer(s.to_string());
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if frac.len() > 6 {
            return Err(bad());
        }
        let secs: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut frac_micros: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        for _ in frac.len()..6 {
            frac_micros *= 10;
        }
        secs.checked_mul(1_000_000)
            .and_then(|m| m.checked_add(frac_micros))
            .map(Timer::from_micros)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.micros / 1_000_000;
        let frac = self.micros % 1_000_000;
        if frac == 0 {
            write!(f, "{secs}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{secs}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Text that names none of the values of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}', expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<$name, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        value: s.to_string(),
                        expected: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// The fourteen IPVS schedulers, by their ipvsadm and keepalived names.
    Scheduler, "scheduler", {
        /// Round robin.
        Rr => "rr",
        /// Weighted round robin.
        Wrr => "wrr",
        /// Least connection.
        Lc => "lc",
        /// Weighted least connection (the default).
        Wlc => "wlc",
        /// Locality-based least connection.
        Lblc => "lblc",
        /// Locality-based least connection with replication.
        Lblcr => "lblcr",
        /// Destination hashing.
        Dh => "dh",
        /// Source hashing.
        Sh => "sh",
        /// Shortest expected delay.
        Sed => "sed",
        /// Never queue.
        Nq => "nq",
        /// Weighted failover.
        Fo => "fo",
        /// Weighted overflow.
        Ovf => "ovf",
        /// Maglev hashing.
        Mh => "mh",
        /// Weighted random twos choice.
        Twos => "twos",
    }
);

// Declared by hand: the enum comes from a macro shared with enums that have no default.
#[allow(clippy::derivable_impls)]
impl Default for Scheduler {
    fn default() -> Scheduler {
        Scheduler::Wlc
    }
}

named_enum!(
    /// How a director forwards to a real server, by keepalived's `lb_kind` names.
    ForwardMethod, "lb_kind", {
        /// Masquerading (`-m`, "Masq").
        Nat => "NAT",
        /// Direct routing (`-g`, "Route").
        Dr => "DR",
        /// IP-in-IP tunnelling (`-i`, "Tunnel").
        Tun => "TUN",
    }
);

named_enum!(
    /// Transport protocol of a virtual service.
    Protocol, "protocol", {
        Tcp => "TCP",
        Udp => "UDP",
        Sctp => "SCTP",
    }
);

/// One BGP neighbour a director announces its VIPs to (keepalived.conf's `fulcrum_bgp`
/// `neighbor ADDR as N [local ADDR] [port N] [hold_time N] [multihop N] [bfd]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpNeighbor {
    pub addr: std::net::IpAddr,
    pub remote_as: u32,
    /// The local address of the session; the BGP daemon picks one when None.
    pub local: Option<std::net::IpAddr>,
    pub port: Option<u16>,
    /// Seconds; the daemon's default (BIRD's 240) when None.
    pub hold_time: Option<u16>,
    /// eBGP multihop TTL; a directly connected neighbour when None.
    pub multihop: Option<u8>,
    /// Bidirectional forwarding detection on the session; with multihop, BIRD needs
    /// `local`.
    pub bfd: bool,
}

/// How a persistent virtual service groups its clients (ipvsadm's `-M`, keepalived's
/// `persistence_granularity`): an IPv4 service by netmask, an IPv6 one by prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Mask(std::net::Ipv4Addr),
    /// 1..=128.
    Prefix(u8),
}

impl Granularity {
    /// Each client alone: IPVS's default for the family.
    pub fn whole(ipv6: bool) -> Granularity {
        if ipv6 {
            Granularity::Prefix(128)
        } else {
            Granularity::Mask(std::net::Ipv4Addr::BROADCAST)
        }
    }

    /// Whether it groups each client alone (ipvsadm then prints no mask).
    pub fn is_whole(self) -> bool {
        matches!(self, Granularity::Prefix(128))
            || self == Granularity::Mask(std::net::Ipv4Addr::BROADCAST)
    }

    /// As ipvsadm takes `-M` for a service of the family: a netmask (IPv4), a prefix
    /// length 1..128 (IPv6).
    pub fn parse(text: &str, ipv6: bool) -> Option<Granularity> {
        if ipv6 {
            text.parse::<u8>()
                .ok()
                .filter(|p| (1..=128).contains(p))
                .map(Granularity::Prefix)
        } else {
            text.parse().ok().map(Granularity::Mask)
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Granularity::Mask(m) => write!(f, "{m}"),
            Granularity::Prefix(p) => write!(f, "{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert!(Vrid::new(0).is_err());
        assert_eq!(Vrid::new(255).unwrap().get(), 255);
        assert_eq!(
            Priority::new(256).unwrap_err().to_string(),
            "priority 256 is out of range 1..255"
        );
        assert!(TrackWeight::new(-254).is_ok());
        assert!(TrackWeight::new(255).is_err());
    }

    #[test]
    fn timers() {
        assert_eq!("1".parse::<Timer>().unwrap(), Timer::from_secs(1));
        assert_eq!("0.01".parse::<Timer>().unwrap(), Timer::from_micros(10_000));
        assert_eq!(".5".parse::<Timer>().unwrap(), Timer::from_micros(500_000));
        assert_eq!("3.".parse::<Timer>().unwrap(), Timer::from_secs(3));
        assert!("-1".parse::<Timer>().is_err());
    }

    #[test]
    fn granularity_reads_as_ipvsadm_takes_it() {
        assert_eq!(
            Granularity::parse("255.255.255.0", false),
            Some(Granularity::Mask(std::net::Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            Granularity::parse("64", true),
            Some(Granularity::Prefix(64))
        );
        assert_eq!(Granularity::parse("0", true), None);
        assert_eq!(Granularity::parse("129", true), None);
        assert_eq!(Granularity::parse("64", false), None);
        assert!(Granularity::whole(true).is_whole() && Granularity::whole(false).is_whole());
        assert_eq!(Granularity::Prefix(48).to_string(), "48");
        assert!("1e3".parse::<Timer>().is_err());
        assert!(".".parse::<Timer>().is_err());
        assert!("0.0000001".parse::<Timer>().is_err());
        assert_eq!(Timer::from_micros(1_250_000).to_string(), "1.25");
    }

    #[test]
    fn names() {
        assert_eq!("mh".parse::<Scheduler>().unwrap(), Scheduler::Mh);
        assert_eq!(Scheduler::ALL.len(), 14);
        let err = "xx".parse::<ForwardMethod>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown lb_kind 'xx', expected one of: NAT DR TUN"
        );
    }

    proptest! {
        #[test]
        fn timer_display_round_trips(micros in 0u64..1_000_000_000_000) {
            let t = Timer::from_micros(micros);
            prop_assert_eq!(t.to_string().parse::<Timer>().unwrap(), t);
        }
    }
}
