//! VRRP as keepalived speaks it, without IO: the wire format ([`packet`]) and the protocol
//! state machine ([`instance`]), fed `(now, event)` and answering with actions. The daemon
//! owns sockets, addresses and clocks; this crate owns what VRRP decides.

#![forbid(unsafe_code)]

pub mod instance;
pub mod packet;
pub mod router;
pub mod sync;
pub mod track;
