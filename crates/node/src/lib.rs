//! The Fulcrum daemon as a library. A [`Node`] runs what one host's configuration asks for:
//! VRRP ([`vrrp`]), keepalived's health checks ([`health`]), the layer-4 data plane
//! ([`l4`]) and the nginx-compatible proxy (`fulcrum_proxy`); it is started, reloaded,
//! asked and stopped through its methods. The protocol decisions live in the sans-IO crates
//! (`fulcrum_vrrp`, `fulcrum_health`, `fulcrum_sched`, `fulcrum_upstream`); this crate is
//! their IO: sockets, netlink, BPF maps, scripts and the clock.
//!
//! The binary around it (`fulcrum`) keeps the command line, signals, logging, the control
//! socket's server, metrics and the dashboard.

mod bgp;
pub mod config;
pub mod events;
pub mod health;
pub mod host_facts;
pub mod l4;
mod node;
mod proxy;
mod scripts;
pub mod status;
mod track_file;
pub mod vrrp;

pub use config::{Config, Report, Sources, Subsystems};
pub use events::Event;
pub use node::{Applied, Command, CommandError, Node, Options, Refused, Reply};
pub use status::Status;
