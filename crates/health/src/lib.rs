//! Health checking as keepalived's checker process does it, with no IO.
//!
//! Three layers, each a pure state machine fed `(now, event)` and returning actions:
//!
//! - [`Timing`]: the schedule of one checker, resolved from keepalived.conf the way keepalived
//!   resolves it (checker, then real_server, then virtual_server, then keepalived's default).
//! - [`Checker`]: when to start a check, when a check in flight has timed out, and what a
//!   result means: `retry` more attempts `delay_before_retry` apart before an up checker is
//!   declared down, one success to bring a down checker back, `alpha` to start down, a random
//!   `warmup` spread before the first check.
//! - [`RealServer`] and [`Service`]: a real server is alive while every one of its checkers
//!   is up (MISC_CHECK's `misc_dynamic` moves its weight); a virtual service keeps quorum
//!   with hysteresis, and swaps in its sorry server when quorum is lost.
//!
//! The daemon runs the checks (sockets, processes), owns the clock and turns the resulting
//! membership into data-plane map updates.

#![forbid(unsafe_code)]

mod checker;
mod pool;
mod timing;

pub use checker::{Action, Checker, Event, Outcome, Status};
pub use pool::{Membership, PoolEvent, RealServer, Service};
pub use timing::{CheckKind, Timing};
