//! IPVS's connection synchronisation between directors (`ipvsadm --start-daemon`,
//! keepalived's `lvs_sync_daemon`): the wire format of sync protocol version 1
//! ([`wire`]), and which connections a master sends when ([`master`]). Pure code: the
//! daemon reads its connection table, sends and receives the datagrams, and installs
//! what a backup receives.

pub mod master;
pub mod wire;

pub use master::{Master, Seen, Settings};
pub use wire::{decode, encode, flags, tcp_state, Error, Message, Record};

#[cfg(test)]
mod tests;
