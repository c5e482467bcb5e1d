//! The end-to-end tests: the fulcrum binary in network namespaces (crates/lab), with real
//! traffic, against Debian's keepalived, nginx and HAProxy. They need root: without it each
//! prints a SKIP line, and under `CI` it fails instead. One test binary for them all.

mod active_active;
mod as_keepalived;
mod as_nginx;
mod demo;
mod health;
mod ipvs_peer;
mod l4;
mod l7;
mod l7_diff;
mod package;
mod peers;
mod vrrp;
