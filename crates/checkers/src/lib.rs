//! keepalived's health checkers as async checks (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK,
//! SMTP_CHECK, UDP_CHECK, DNS_CHECK, PING_CHECK), run by the daemon under the timing of
//! [`fulcrum_health::Checker`] (which owns the timeouts: a check that overstays is dropped).
//!
//! Each check returns a [`fulcrum_health::Outcome`] whose failure reason is what an operator
//! reads in the log. Reads are capped, so a hostile server cannot grow our memory.

#![forbid(unsafe_code)]

pub mod dns;
pub mod http;
pub mod misc;
pub mod ping;
pub mod smtp;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use dns::check_dns;
pub use http::{check_http, fetch, open, HttpResponse, Limits, Request, Stream, Transport};
pub use misc::{check_misc, MiscCommand};
pub use ping::check_ping;
pub use smtp::check_smtp;
pub use tcp::{check_tcp, connect, Target};
pub use udp::{check_udp, unhex, UdpProbe};
