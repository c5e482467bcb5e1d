//! virtual_server_group, virtual_server and real_server, as keepalived's check_parser.c
//! reads them.

use super::*;

/// IPVS's persistence timeout when `persistence_timeout` is given no value.
const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;

/// Where a check setting is written: keepalived reads some of them differently there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    VirtualServer,
    RealServer,
}

impl Builder<'_> {
    /// `lb_kind`, `lvs_method`, `sorry_server_lvs_method`: NAT, DR or TUN, and for TUN
    /// keepalived's tunnel options `type ipip|gue|gre`, `port N`, `nocsum|csum|remcsum`,
    /// with its refusals (gue needs a port and only gue takes one; ipip takes no checksum
    /// option; gre no remcsum).
    fn forwarding(&mut self, n: &Node) -> (Option<ForwardMethod>, Option<TunnelOptions>) {
        self.no_block(n);
        let Some(method) = self.enum_at::<ForwardMethod>(n, 0, "forwarding method") else {
            return (None, None);
        };
        let mut t = TunnelOptions::default();
        let mut i = 1;
        while i < n.args.len() {
            let word = n.args[i].text.clone();
            let span = n.args[i].span;
            match word.as_str() {
                "type" => {
                    match n.args.get(i + 1).map(|a| a.text.as_str()) {
                        Some("ipip") => t.kind = TunnelKind::Ipip,
                        Some("gue") => t.kind = TunnelKind::Gue,
                        Some("gre") => t.kind = TunnelKind::Gre,
                        Some(other) => {
                            self.error(
                                Self::arg_span(n, i + 1),
                                format!("unknown tunnel type '{other}': expected ipip, gue or gre"),
                            );
                            return (None, None);
                        }
                        None => {
                            self.error(span, "'type' needs a tunnel type: ipip, gue or gre");
                            return (None, None);
                        }
                    }
                    i += 2;
                }
                "port" => {
                    let Some(port) = self.int_at(n, i + 1, "gue tunnel port", 1, 65535) else {
                        return (None, None);
                    };
                    t.port = Some(port as u16);
                    i += 2;
                }
                "nocsum" => {
                    t.csum = TunnelCsum::NoCsum;
                    i += 1;
                }
                "csum" => {
                    t.csum = TunnelCsum::Csum;
                    i += 1;
                }
                "remcsum" => {
                    t.csum = TunnelCsum::RemCsum;
                    i += 1;
                }
                _ => {
                    self.error(span, format!("invalid tunnel option '{word}': expected type, port, nocsum, csum or remcsum"));
                    return (None, None);
                }
            }
        }
        if method != ForwardMethod::Tun {
            if n.args.len() > 1 {
                self.error(
                    Self::arg_span(n, 1),
                    format!("tunnel options are for TUN, not {}", method.name()),
                );
                return (None, None);
            }
            return (Some(method), None);
        }
        let problem = if (t.kind == TunnelKind::Gue) != t.port.is_some() {
            Some("gue tunnels require a port, and other tunnels cannot have one")
        } else if t.kind == TunnelKind::Ipip && t.csum != TunnelCsum::NoCsum {
            Some("ipip tunnels do not support a checksum option")
        } else if t.kind == TunnelKind::Gre && t.csum == TunnelCsum::RemCsum {
            Some("gre tunnels do not support the remote checksum option")
        } else {
            None
        };
        if let Some(p) = problem {
            self.error(n.span(), p);
            return (None, None);
        }
        (Some(method), Some(t))
    }

    pub(super) fn server_group(&mut self, n: &Node) -> Option<VirtualServerGroup> {
        let name = self.name_arg(n)?;
        let mut g = VirtualServerGroup {
            name,
            members: Vec::new(),
        };
        for line in self.block(n) {
            self.no_block(line);
            if line.name() == "fwmark" {
                if let Some(m) = self.int_at(line, 0, "fwmark", 1, i64::from(u32::MAX)) {
                    self.error(
                        line.keyword.span,
                        "fwmark members are not supported: fulcrum's XDP data plane runs before netfilter sets marks",
                    );
                    g.members.push(GroupMember::Fwmark(m as u32));
                }
                continue;
            }
            self.at_most(line, 1);
            let Some(port) = self.port_at(line, 0) else {
                continue;
            };
            let text = &line.keyword.text;
            if let Ok(addr) = text.parse::<IpAddr>() {
                g.members.push(GroupMember::Address { addr, port });
                continue;
            }
            // A.B.C.D-E: a range over the last part of the address.
            let parsed = text.rsplit_once('-').and_then(|(first, last)| {
                let first: IpAddr = first.parse().ok()?;
                let last = if first.is_ipv4() {
                    last.parse::<u8>().ok().map(u16::from)?
                } else {
                    u16::from_str_radix(last, 16).ok()?
                };
                Some((first, last))
            });
            match parsed {
                Some((first, last)) => {
                    let low = match first {
                        IpAddr::V4(a) => u16::from(a.octets()[3]),
                        IpAddr::V6(a) => a.segments()[7],
                    };
                    if last < low {
                        self.error(line.keyword.span, format!("address range '{text}' ends before it starts"));
                        continue;
                    }
                    g.members.push(GroupMember::Range { first, last, port });
                }
                None => self.error(
                    line.keyword.span,
                    format!("invalid virtual_server_group member '{text}': expected 'IP PORT', 'IP-LAST PORT' or 'fwmark N'"),
                ),
            }
        }
        Some(g)
    }

    pub(super) fn virtual_server(&mut self, n: &Node) -> Option<VirtualServer> {
        let key = match n.args.first().map(|t| t.text.as_str()) {
            Some("fwmark") => {
                self.at_most(n, 2);
                let mark = self.int_at(n, 1, "fwmark", 1, i64::from(u32::MAX))? as u32;
                self.error(
                    n.args[0].span,
                    "fwmark virtual servers are not supported: fulcrum's XDP data plane runs before netfilter sets marks; use 'virtual_server IP PORT' or a virtual_server_group",
                );
                ServiceKey::Fwmark(mark)
            }
            Some("group") => {
                self.at_most(n, 2);
                let name = self.arg(n, 1, "a virtual_server_group name")?.to_string();
                self.refs.push(Reference {
                    kind: RefKind::ServerGroup,
                    name: name.clone(),
                    span: n.args[1].span,
                });
                ServiceKey::Group(name)
            }
            Some(_) => {
                self.at_most(n, 2);
                let addr = self.ip_at(n, 0)?;
                let port = self.port_at(n, 1)?;
                ServiceKey::Address { addr, port }
            }
            None => {
                self.error(
                    n.span(),
                    "'virtual_server' needs 'IP PORT', 'fwmark N' or 'group NAME'",
                );
                return None;
            }
        };
        let mut vs = VirtualServer::new(key);
        let mut rs_spans = Vec::new();
        for c in self.block(n) {
            if self.check_default(c, &mut vs.defaults, Level::VirtualServer) {
                continue;
            }
            match c.name() {
                "lb_algo" | "lvs_sched" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    if let Some(s) = self.enum_at::<Scheduler>(c, 0, "scheduler") {
                        vs.lb_algo = s;
                    }
                }
                "lb_kind" | "lvs_method" => {
                    (vs.lb_kind, vs.tunnel) = self.forwarding(c);
                }
                "protocol" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    // keepalived compares the name without case (strcasecmp).
                    let name = c.args.first().map(|a| a.text.to_ascii_uppercase());
                    match name.as_deref().map(str::parse::<Protocol>) {
                        Some(Ok(p)) => vs.protocol = Some(p),
                        _ => {
                            if let Some(p) = self.enum_at::<Protocol>(c, 0, "protocol") {
                                vs.protocol = Some(p);
                            }
                        }
                    }
                }
                // Without a value, keepalived takes IPVS's default of 360 seconds.
                "persistence_timeout" if c.args.is_empty() && c.block.is_none() => {
                    vs.persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT)
                }
                "persistence_timeout" => {
                    vs.persistence_timeout = self
                        .int(c, "persistence_timeout", 1, 86400 * 31)
                        .map(|v| v as u32)
                }
                "persistence_granularity" => {
                    self.no_block(c);
                    // As keepalived: by the service's family (a group or fwmark guessed
                    // from the value), a netmask for IPv4, a prefix length for IPv6.
                    if let Some(text) = self.arg(c, 0, "netmask") {
                        let ipv6 = match vs.key {
                            ServiceKey::Address { addr, .. } => addr.is_ipv6(),
                            _ => !text.contains('.'),
                        };
                        match fulcrum_types::Granularity::parse(text, ipv6) {
                            Some(g) => vs.persistence_granularity = Some(g),
                            None => self.error(
                                Self::arg_span(c, 0),
                                format!(
                                    "Invalid {} persistence_granularity specified - {text}",
                                    if ipv6 { "IPv6" } else { "IPv4" }
                                ),
                            ),
                        }
                    }
                }
                "persistence_engine" => self.unsupported(c),
                "virtualhost" => vs.virtualhost = self.string(c, "a host name"),
                "omega" => vs.omega = self.flag(c).unwrap_or(false),
                "quorum" => vs.quorum = self.int(c, "quorum", 1, 65535).map_or(1, |v| v as u32),
                "hysteresis" => {
                    vs.hysteresis = self.int(c, "hysteresis", 0, 65535).map_or(0, |v| v as u32)
                }
                "quorum_up" => vs.quorum_up = self.script(c),
                "quorum_down" => vs.quorum_down = self.script(c),
                "sorry_server" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(ip) = self.ip_at(c, 0) {
                        let port = if c.args.len() > 1 {
                            self.port_at(c, 1)
                        } else {
                            None
                        };
                        vs.sorry_server = Some((ip, port));
                    }
                }
                "sorry_server_inhibit" => vs.sorry_server_inhibit = self.flag(c).unwrap_or(false),
                "sorry_server_lvs_method" => {
                    (vs.sorry_server_lvs_method, vs.sorry_server_tunnel) = self.forwarding(c);
                }
                "ha_suspend" => vs.ha_suspend = self.flag(c).unwrap_or(false),
                "ops" | "one_packet_scheduling" => vs.ops = self.flag(c).unwrap_or(false),
                "sh-port" => vs.sh_port = self.flag(c).unwrap_or(false),
                "sh-fallback" => vs.sh_fallback = self.flag(c).unwrap_or(false),
                "mh-port" => vs.mh_port = self.flag(c).unwrap_or(false),
                "mh-fallback" => vs.mh_fallback = self.flag(c).unwrap_or(false),
                "fulcrum_sloppy_tcp" => vs.sloppy_tcp_set = self.flag(c),
                "hashed" | "flag-1" | "flag-2" | "flag-3" | "lvs_flags" => self.unsupported(c),
                "real_server" => {
                    if let Some(rs) = self.real_server(c) {
                        rs_spans.push(c.span());
                        vs.real_servers.push(rs);
                    }
                }
                _ => self.unknown(c, "virtual_server"),
            }
        }
        self.check_service(n, &vs, &rs_spans);
        Some(vs)
    }

    pub(super) fn check_service(&mut self, n: &Node, vs: &VirtualServer, rs_spans: &[Span]) {
        if let ServiceKey::Address { port: 0, .. } = vs.key {
            if vs.persistence_timeout.is_none() {
                self.error(
                    Self::arg_span(n, 1),
                    "port 0 (all ports) needs persistence: add 'persistence_timeout'",
                );
            }
        }
        if (vs.sh_port || vs.sh_fallback) && vs.lb_algo != Scheduler::Sh {
            self.warn(
                n.span(),
                format!(
                    "sh-port and sh-fallback apply to lb_algo sh, not {}",
                    vs.lb_algo
                ),
            );
        }
        if (vs.mh_port || vs.mh_fallback) && vs.lb_algo != Scheduler::Mh {
            self.warn(
                n.span(),
                format!(
                    "mh-port and mh-fallback apply to lb_algo mh, not {}",
                    vs.lb_algo
                ),
            );
        }
        if vs.protocol.is_none() && !matches!(vs.key, ServiceKey::Fwmark(_)) {
            self.diags.push(
                Diagnostic::warning(
                    n.span(),
                    "no protocol set: keepalived (and the kernel) default to UDP",
                )
                .with_help("add 'protocol TCP' for a TCP service"),
            );
        }
        if vs.ops && vs.protocol() != Protocol::Udp {
            self.warn(
                n.span(),
                "one-packet scheduling ('ops') applies to UDP services only",
            );
        }
        let service_port = match vs.key {
            ServiceKey::Address { port, .. } => Some(port),
            _ => None,
        };
        for (rs, span) in vs.real_servers.iter().zip(rs_spans) {
            let method = rs.lvs_method.unwrap_or(vs.forward_method());
            if let (Some(sp), Some(rp)) = (service_port, rs.port) {
                if method != ForwardMethod::Nat && sp != 0 && rp != sp {
                    self.error(
                        *span,
                        format!(
                            "real_server {} port {rp} differs from the service port {sp}: {} forwarding cannot change the port (use lb_kind NAT)",
                            rs.addr, method
                        ),
                    );
                }
            }
            if rs.addr.is_ipv4() != vs_family_v4(vs).unwrap_or(rs.addr.is_ipv4())
                && method != ForwardMethod::Tun
            {
                self.error(
                    *span,
                    format!(
                        "real_server {} is not of the virtual server's address family",
                        rs.addr
                    ),
                );
            }
        }
    }

    /// `alpha` as keepalived reads it: on a virtual_server any value (or none) turns it on;
    /// on a real_server a boolean sets it, and anything else is an error.
    fn alpha(&mut self, c: &Node, level: Level) -> Option<bool> {
        self.no_block(c);
        self.at_most(c, 1);
        let Some(arg) = c.args.first() else {
            return Some(true);
        };
        match (is_bool_word(&arg.text), level) {
            (Some(true), _) => Some(true),
            (Some(false), Level::RealServer) => Some(false),
            (_, Level::VirtualServer) => {
                self.note(
                    arg.span,
                    format!(
                        "keepalived turns alpha on for a virtual_server whatever follows it; '{}' is ignored",
                        arg.text
                    ),
                );
                Some(true)
            }
            // keepalived -t counts this as an error (its daemon logs and ignores it).
            (None, Level::RealServer) => {
                self.error(
                    arg.span,
                    format!(
                        "invalid boolean '{}' for 'alpha': expected on, off, yes, no, true or false",
                        arg.text
                    ),
                );
                None
            }
        }
    }

    /// Check settings that a virtual server or real server can hold for its checkers.
    pub(super) fn check_default(&mut self, c: &Node, d: &mut CheckDefaults, level: Level) -> bool {
        match c.name() {
            "alpha" => d.alpha = self.alpha(c, level),
            "delay_loop" => d.delay_loop = self.timer(c),
            "retry" => d.retry = self.u32_value(c, "retry"),
            "delay_before_retry" => d.delay_before_retry = self.timer(c),
            "warmup" => d.warmup = self.timer(c),
            "connect_timeout" => d.connect_timeout = self.timer(c),
            "inhibit_on_failure" => d.inhibit_on_failure = self.flag(c),
            _ => return false,
        }
        true
    }

    pub(super) fn real_server(&mut self, n: &Node) -> Option<RealServer> {
        self.at_most(n, 2);
        let addr = self.ip_at(n, 0)?;
        let port = if n.args.len() > 1 {
            self.port_at(n, 1)
        } else {
            None
        };
        let mut rs = RealServer::new(addr, port);
        for c in self.block(n) {
            if self.check_default(c, &mut rs.defaults, Level::RealServer) {
                continue;
            }
            match c.name() {
                "weight" => {
                    if let Some(w) = self
                        .int(c, "weight", i64::from(Weight::MIN), i64::from(Weight::MAX))
                        .and_then(|v| Weight::new(v).ok())
                    {
                        rs.weight = w;
                    }
                }
                "lvs_method" => {
                    (rs.lvs_method, rs.tunnel) = self.forwarding(c);
                }
                "notify_up" => rs.notify_up = self.script(c),
                "notify_down" => rs.notify_down = self.script(c),
                "uthreshold" => rs.uthreshold = self.u32_value(c, "uthreshold"),
                "lthreshold" => rs.lthreshold = self.u32_value(c, "lthreshold"),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "SMTP_CHECK"
                | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK" | "FILE_CHECK" => {
                    if let Some(ch) = self.checker(c) {
                        rs.checkers.push(ch);
                    }
                }
                "BFD_CHECK" => self.note(
                    c.span(),
                    "BFD_CHECK is not supported by fulcrum; this checker is ignored",
                ),
                _ => self.unknown(c, "real_server"),
            }
        }
        if let (Some(u), Some(l)) = (rs.uthreshold, rs.lthreshold) {
            if l > u {
                self.error(n.span(), format!("lthreshold {l} is above uthreshold {u}"));
            }
        }
        Some(rs)
    }
}
