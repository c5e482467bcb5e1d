//! Active-active directors announce their VIPs by BGP, through a BGP daemon that runs
//! beside Fulcrum (BIRD 2 here; FRR would sit behind the same [`Speaker`] shape). Fulcrum
//! never speaks BGP itself.
//!
//! - [`announce`]: which VIPs to announce, with which attributes, and why or why not:
//!   pure code fed `(now, inputs)` (quorum, the data plane, drain, stop).
//! - [`bird`]: the BIRD configuration include those routes become, and BIRD's
//!   `show protocols` read back into session states.

pub mod announce;
pub mod bird;

pub use announce::{Announcer, Attrs, Inputs, Policy, Route, VipInput, Why};
pub use bird::{Bird, Neighbor, Session, Speaker};
