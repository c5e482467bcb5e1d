//! The packets Fulcrum writes and reads by hand, without IO: one Internet checksum
//! ([`checksum`], RFC 1071, with the IPv4 and IPv6 pseudo-headers), and for each header a
//! zero-copy view in the smoltcp style (`new_checked` first, then accessors that cannot
//! panic) and a builder that writes the header with its checksum. VRRP (`fulcrum_vrrp`),
//! gratuitous ARP and neighbour advertisements, PING_CHECK, the data plane's tests and the
//! benchmarks all use these; the golden bytes in the tests are frames as tcpdump shows them.

#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;

/// Why bytes could not be read as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header, or than the length the header announces.
    Truncated,
    /// Not the version, type or kind this view reads.
    Malformed,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::Malformed => "malformed",
        })
    }
}

impl std::error::Error for Error {}
