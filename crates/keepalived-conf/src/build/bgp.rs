//! `fulcrum_bgp { ... }`: Fulcrum's own block, the VIPs a director announces by BGP
//! through BIRD (keepalived has no such block and logs it as unknown).

use std::net::IpAddr;

use super::Builder;
use crate::model::{Bgp, BgpNeighbor};
use crate::tree::Node;

impl Builder<'_> {
    pub(super) fn bgp(&mut self, n: &Node) -> Option<Bgp> {
        self.at_most(n, 0);
        let mut b = Bgp {
            daemon: "bird".into(),
            control: None,
            config_file: None,
            local_as: 0,
            neighbors: Vec::new(),
            vips: Vec::new(),
            med: None,
            communities: Vec::new(),
            drain_prepend: None,
            drain_timeout: None,
            liveness_interface: None,
        };
        let mut local_as = None;
        let mut any_neighbor = false;
        for c in self.block(n) {
            match c.name() {
                "daemon" => {
                    if let Some(d) = self.string(c, "a BGP daemon") {
                        match d.as_str() {
                            "bird" => b.daemon = d,
                            "frr" => self.error(
                                Self::arg_span(c, 0),
                                "daemon frr is not supported yet: use bird (BIRD 2)",
                            ),
                            _ => self.error(
                                Self::arg_span(c, 0),
                                format!("unknown BGP daemon '{d}': expected bird"),
                            ),
                        }
                    }
                }
                "control" => b.control = self.string(c, "birdc's socket path"),
                "config_file" => b.config_file = self.string(c, "a file path"),
                "local_as" => local_as = self.int(c, "AS number", 1, i64::from(u32::MAX)),
                "neighbor" => {
                    any_neighbor = true;
                    if let Some(nb) = self.bgp_neighbor(c) {
                        if b.neighbors.iter().any(|o| o.addr == nb.addr) {
                            self.error(
                                Self::arg_span(c, 0),
                                format!("neighbor {} is given twice", nb.addr),
                            );
                        } else {
                            b.neighbors.push(nb);
                        }
                    }
                }
                "vips" => {
                    self.bgp_vips_span = Some(c.span());
                    self.no_block(c);
                    if c.args.is_empty() {
                        self.error(c.span(), "'vips' needs at least one address");
                    }
                    for i in 0..c.args.len() {
                        if let Some(a) = self.ip_at(c, i) {
                            b.vips.push(a);
                        }
                    }
                }
                "med" => b.med = self.u32_value(c, "MED"),
                "community" => {
                    self.no_block(c);
                    if c.args.is_empty() {
                        self.error(c.span(), "'community' needs at least one A:B");
                    }
                    for t in &c.args {
                        let parsed = t
                            .text
                            .split_once(':')
                            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                        match parsed {
                            Some(v) => b.communities.push(v),
                            None => self.error(
                                t.span,
                                format!(
                                    "invalid community '{}': expected A:B, each 0..65535",
                                    t.text
                                ),
                            ),
                        }
                    }
                }
                "drain_prepend" => {
                    b.drain_prepend = self.int(c, "AS-path prepend", 0, 16).map(|v| v as u8)
                }
                "drain_timeout" => {
                    b.drain_timeout = self.int(c, "drain timeout", 1, 86400).map(|v| v as u32)
                }
                "liveness_interface" => {
                    if let Some(i) = self.string(c, "an interface name") {
                        if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '"']) {
                            self.error(
                                Self::arg_span(c, 0),
                                format!("invalid interface name '{i}': at most 15 characters, no '/', space or quote"),
                            );
                        } else {
                            b.liveness_interface = Some(i);
                        }
                    }
                }
                _ => self.unknown(c, "fulcrum_bgp"),
            }
        }
        match local_as {
            Some(a) => b.local_as = a as u32,
            None => self.error(n.span(), "fulcrum_bgp needs 'local_as N'"),
        }
        if !any_neighbor {
            self.error(
                n.span(),
                "fulcrum_bgp needs at least one 'neighbor ADDR as N'",
            );
        }
        Some(b)
    }

    fn bgp_neighbor(&mut self, n: &Node) -> Option<BgpNeighbor> {
        self.no_block(n);
        let addr: IpAddr = self.ip_at(n, 0)?;
        let mut nb = BgpNeighbor {
            addr,
            remote_as: 0,
            local: None,
            port: None,
            hold_time: None,
            multihop: None,
            bfd: false,
        };
        let mut remote_as = None;
        let mut i = 1;
        while i < n.args.len() {
            let key = n.args[i].text.clone();
            if key == "bfd" {
                nb.bfd = true;
                i += 1;
                continue;
            }
            if n.args.get(i + 1).is_none() {
                self.error(n.args[i].span, format!("neighbor: '{key}' needs a value"));
                break;
            }
            match key.as_str() {
                "as" => remote_as = self.int_at(n, i + 1, "AS number", 1, i64::from(u32::MAX)),
                "local" => nb.local = self.ip_at(n, i + 1),
                "port" => nb.port = self.int_at(n, i + 1, "port", 1, 65535).map(|v| v as u16),
                // BGP's hold time is 0 or at least 3 seconds (RFC 4271).
                "hold_time" => {
                    nb.hold_time = self
                        .int_at(n, i + 1, "hold time", 3, 65535)
                        .map(|v| v as u16)
                }
                "multihop" => {
                    nb.multihop = self.int_at(n, i + 1, "multihop TTL", 1, 255).map(|v| v as u8)
                }
                _ => self.error(
                    n.args[i].span,
                    format!("unknown neighbor option '{key}': expected as, local, port, hold_time, multihop or bfd"),
                ),
            }
            i += 2;
        }
        match remote_as {
            Some(a) => nb.remote_as = a as u32,
            None => {
                self.error(n.span(), format!("neighbor {addr} needs 'as N'"));
                return None;
            }
        }
        if let Some(l) = nb.local {
            if l.is_ipv4() != addr.is_ipv4() {
                self.error(
                    n.span(),
                    format!("neighbor {addr}: local {l} is of another address family"),
                );
            }
        }
        if nb.bfd && nb.multihop.is_some() && nb.local.is_none() {
            self.error(
                n.span(),
                format!("neighbor {addr}: bfd with multihop needs 'local ADDR' (as BIRD does)"),
            );
        }
        Some(nb)
    }
}
