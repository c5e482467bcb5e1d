//! vrrp_script, track_file, vrrp_sync_group and vrrp_instance, as keepalived's
//! vrrp_parser.c reads them.

use super::*;

const UNSUPPORTED_INSTANCE: &[&str] = &[
    "virtual_routes",
    "virtual_rules",
    "track_process",
    "track_bfd",
    "debug",
    "kernel_rx_buf_size",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "vmac_xmit_base_name",
    "use_ipvlan",
    "notify_master_rx_lower_pri",
    "notify_deleted",
    "no_accept_deleted",
    "linkbeat_use_polling",
    "mcast_dst_ip",
    "unicast_ttl",
    "unicast_fault_no_peer",
];

impl Builder<'_> {
    pub(super) fn name_arg(&mut self, n: &Node) -> Option<String> {
        self.at_most(n, 1);
        self.arg(n, 0, "a name").map(str::to_string)
    }

    pub(super) fn vrrp_script(&mut self, n: &Node) -> Option<VrrpScript> {
        let name = self.name_arg(n)?;
        let mut s = VrrpScript::new(&name, "");
        let mut have_script = false;
        for c in self.block(n) {
            match c.name() {
                "script" => {
                    if let Some(sc) = self.script(c) {
                        s.script = sc;
                        have_script = true;
                    }
                }
                "interval" => s.interval = self.timer(c).unwrap_or(s.interval),
                "timeout" => s.timeout = self.timer(c),
                "weight" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(w) = self.track_weight_at(c, 0) {
                        s.weight = w;
                    }
                    s.weight_reverse = self.reverse_at(c, 1);
                }
                "rise" => s.rise = self.int(c, "rise", 1, 1_000_000).map_or(1, |v| v as u32),
                "fall" => s.fall = self.int(c, "fall", 1, 1_000_000).map_or(1, |v| v as u32),
                "user" => s.script.user = self.script_user(c),
                "init_fail" => s.init_fail = self.flag(c).unwrap_or(false),
                _ => self.unknown(c, "vrrp_script"),
            }
        }
        if !have_script {
            self.error(n.span(), format!("vrrp_script '{name}' has no 'script'"));
            return None;
        }
        Some(s)
    }

    pub(super) fn reverse_at(&mut self, n: &Node, i: usize) -> bool {
        match n.args.get(i) {
            None => false,
            Some(t) if t.text == "reverse" => true,
            Some(t) => {
                self.error(t.span, format!("expected 'reverse', found '{}'", t.text));
                false
            }
        }
    }

    pub(super) fn track_file(&mut self, n: &Node) -> Option<TrackFile> {
        let name = self.name_arg(n)?;
        let mut file = None;
        let mut weight = None;
        let mut init_file = None;
        for c in self.block(n) {
            match c.name() {
                "file" => file = self.string(c, "a file path"),
                "weight" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(w) = self.track_weight_at(c, 0) {
                        weight = Some((w, self.reverse_at(c, 1)));
                    }
                }
                "init_file" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    let mut value = None;
                    let mut overwrite = false;
                    for a in &c.args {
                        if a.text == "overwrite" {
                            overwrite = true;
                        } else {
                            match a.text.parse::<i64>() {
                                Ok(v) => value = Some(v),
                                Err(_) => self
                                    .error(a.span, format!("invalid init_file value '{}'", a.text)),
                            }
                        }
                    }
                    init_file = Some((value, overwrite));
                }
                _ => self.unknown(c, "track_file"),
            }
        }
        let Some(file) = file else {
            self.error(n.span(), format!("track_file '{name}' has no 'file'"));
            return None;
        };
        Some(TrackFile {
            name,
            file,
            weight,
            init_file,
        })
    }

    // === vrrp_sync_group ===

    pub(super) fn notify_keyword(&mut self, c: &Node, notify: &mut Notify) -> bool {
        let slot = match c.name() {
            "notify_master" => &mut notify.master,
            "notify_backup" => &mut notify.backup,
            "notify_fault" => &mut notify.fault,
            "notify_stop" => &mut notify.stop,
            "notify" => &mut notify.any,
            _ => return false,
        };
        *slot = self.script(c);
        true
    }

    pub(super) fn sync_group(&mut self, n: &Node) -> Option<SyncGroup> {
        let name = self.name_arg(n)?;
        let mut g = SyncGroup {
            name,
            group: Vec::new(),
            notify: Notify::default(),
            smtp_alert: None,
            track_interfaces: Vec::new(),
            track_scripts: Vec::new(),
            track_files: Vec::new(),
            global_tracking: false,
            sync_group_tracking_weight: false,
        };
        for c in self.block(n) {
            if self.notify_keyword(c, &mut g.notify) {
                continue;
            }
            match c.name() {
                "group" => {
                    for line in self.block(c) {
                        for t in std::iter::once(&line.keyword).chain(&line.args) {
                            g.group.push(t.text.clone());
                            self.refs.push(Reference {
                                kind: RefKind::Instance,
                                name: t.text.clone(),
                                span: t.span,
                            });
                        }
                    }
                }
                "smtp_alert" => g.smtp_alert = self.flag(c),
                "track_interface" => g.track_interfaces = self.tracked(c, RefKindOf::Interface),
                "track_script" => g.track_scripts = self.tracked(c, RefKindOf::Script),
                "track_file" => g.track_files = self.tracked(c, RefKindOf::File),
                "global_tracking" => {
                    self.warn(c.span(), "global_tracking is deprecated; use track_interface, track_script and track_file on the sync group");
                    g.global_tracking = self.flag(c).unwrap_or(false);
                }
                "sync_group_tracking_weight" => {
                    g.sync_group_tracking_weight = self.flag(c).unwrap_or(false)
                }
                "track_process" | "track_bfd" => self.unsupported(c),
                _ => self.unknown(c, "vrrp_sync_group"),
            }
        }
        if g.group.is_empty() {
            self.error(
                n.span(),
                format!("vrrp_sync_group '{}' has no 'group'", g.name),
            );
            return None;
        }
        Some(g)
    }

    /// `track_interface|track_script|track_file { NAME [weight N [reverse]] ... }`.
    pub(super) fn tracked(&mut self, n: &Node, kind: RefKindOf) -> Vec<Tracked> {
        let mut out = Vec::new();
        for line in self.block(n) {
            self.no_block(line);
            let name = line.keyword.text.clone();
            match kind {
                RefKindOf::Interface => self.interface_ref(&name, line.keyword.span),
                RefKindOf::Script => self.refs.push(Reference {
                    kind: RefKind::Script,
                    name: name.clone(),
                    span: line.keyword.span,
                }),
                RefKindOf::File => self.refs.push(Reference {
                    kind: RefKind::TrackFile,
                    name: name.clone(),
                    span: line.keyword.span,
                }),
            }
            let mut weight = None;
            let mut reverse = false;
            match line.args.first().map(|t| t.text.as_str()) {
                None => {}
                Some("weight") => {
                    self.at_most(line, 3);
                    weight = self.track_weight_at(line, 1);
                    reverse = self.reverse_at(line, 2);
                }
                Some(other) => {
                    let span = line.args[0].span;
                    self.error(span, format!("expected 'weight', found '{other}'"));
                }
            }
            if out.iter().any(|t: &Tracked| t.name == name) {
                self.warn(
                    line.keyword.span,
                    format!("duplicate {} '{name}' ignored", n.name()),
                );
                continue;
            }
            out.push(Tracked {
                name,
                weight,
                reverse,
            });
        }
        out
    }

    // === vrrp_instance ===

    pub(super) fn vrrp_instance(&mut self, n: &Node) -> Option<(VrrpInstance, InstanceSpans)> {
        let name = self.name_arg(n)?;
        if let Some(first) = self.instance_spans.get(&name) {
            let first = *first;
            self.error(
                n.args[0].span,
                format!(
                    "vrrp_instance '{name}' is defined twice (first at line {})",
                    first.line
                ),
            );
            return None;
        }
        self.instance_spans.insert(name.clone(), n.args[0].span);
        if n.block.is_none() {
            self.block(n);
            return None;
        }
        let placeholder = Vrid::new(1).ok()?;
        let mut i = VrrpInstance::new(&name, placeholder);
        let mut vrid = None;
        let mut vrid_written = false;
        let mut vips_written = false;
        let mut state_span = None;
        let mut nopreempt_span = None;
        let mut preempt_delay_span = None;
        let mut advert_span = None;
        let mut auth_span = None;
        for c in self.block(n) {
            if self.notify_keyword(c, &mut i.notify) {
                continue;
            }
            match c.name() {
                "state" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    state_span = Some(c.span());
                    match self.arg(c, 0, "MASTER or BACKUP") {
                        Some("MASTER") => i.state = Some(InitialState::Master),
                        Some("BACKUP") => i.state = Some(InitialState::Backup),
                        Some(other) => {
                            let msg = format!("invalid state '{other}': expected MASTER or BACKUP");
                            self.error(c.args[0].span, msg);
                        }
                        None => {}
                    }
                }
                "interface" => {
                    i.interface = self.string(c, "an interface");
                    if let Some(name) = i.interface.clone() {
                        self.interface_ref(&name, Self::arg_span(c, 0));
                    }
                }
                "virtual_router_id" => {
                    vrid_written = true;
                    vrid = self
                        .int(c, "virtual_router_id", 1, 255)
                        .and_then(|v| Vrid::new(v).ok())
                }
                "priority" => {
                    if let Some(p) = self
                        .int(c, "priority", 1, 255)
                        .and_then(|v| Priority::new(v).ok())
                    {
                        i.priority = p;
                    }
                }
                "advert_int" => {
                    advert_span = Some(Self::arg_span(c, 0));
                    i.advert_int = self.timer(c).unwrap_or(i.advert_int);
                }
                "version" => i.version = self.version(c),
                "virtual_ipaddress" => {
                    vips_written = true;
                    i.virtual_ipaddress = self.addresses(c);
                }
                "virtual_ipaddress_excluded" => i.virtual_ipaddress_excluded = self.addresses(c),
                "authentication" => {
                    auth_span = Some(c.span());
                    i.authentication = self.authentication(c);
                }
                "unicast_src_ip" => i.unicast_src_ip = self.ip(c),
                "unicast_peer" => i.unicast_peers = self.unicast_peers(c),
                "mcast_src_ip" => i.mcast_src_ip = self.ip(c),
                "track_interface" => i.track_interfaces = self.tracked(c, RefKindOf::Interface),
                "track_script" => i.track_scripts = self.tracked(c, RefKindOf::Script),
                "track_file" => i.track_files = self.tracked(c, RefKindOf::File),
                "smtp_alert" => i.smtp_alert = self.flag(c),
                "garp_master_delay" => i.garp_master_delay = self.whole_seconds(c),
                "garp_master_repeat" => i.garp_master_repeat = self.u32_value(c, "repeat count"),
                "garp_master_refresh" => i.garp_master_refresh = self.whole_seconds(c),
                "garp_master_refresh_repeat" => {
                    i.garp_master_refresh_repeat = self.u32_value(c, "repeat count")
                }
                "use_vmac" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    i.use_vmac = Some(c.args.first().map(|t| t.text.clone()));
                }
                "vmac_xmit_base" => i.vmac_xmit_base = self.presence(c),
                "accept" => i.accept = Some(self.presence(c)),
                "no_accept" => i.accept = Some(!self.presence(c)),
                "nopreempt" => {
                    nopreempt_span = Some(c.span());
                    i.nopreempt = self.presence(c);
                }
                "preempt" => i.nopreempt = !self.presence(c),
                "preempt_delay" => {
                    preempt_delay_span = Some(c.span());
                    i.preempt_delay = self.timer(c);
                    if i.preempt_delay.is_some_and(|t| t > Timer::from_secs(1000)) {
                        self.error(
                            Self::arg_span(c, 0),
                            "preempt_delay is out of range 0..1000 seconds",
                        );
                    }
                }
                "strict_mode" => i.strict_mode = self.flag(c),
                "dont_track_primary" => i.dont_track_primary = self.presence(c),
                "native_ipv6" => i.native_ipv6 = self.presence(c),
                "check_unicast_src" => i.check_unicast_src = self.flag(c).unwrap_or(false),
                "v3_checksum_as_v2" => i.v3_checksum_as_v2 = self.flag(c).unwrap_or(false),
                // keepalived 1.x's form, still read (with a warning) by 2.x: the global
                // lvs_sync_daemon on that interface, driven by this instance.
                "lvs_sync_daemon_interface" => {
                    self.no_block(c);
                    if let Some(iface) = self.arg(c, 0, "an interface") {
                        let iface = iface.to_string();
                        self.warn(
                            c.span(),
                            format!(
                                "lvs_sync_daemon_interface in a vrrp_instance is deprecated; use 'lvs_sync_daemon {iface} {name}' in global_defs"
                            ),
                        );
                        self.interface_ref(&iface, Self::arg_span(c, 0));
                        if self.instance_sync_daemon.is_none() {
                            self.instance_sync_daemon = Some((iface, name.clone(), c.span()));
                        }
                    }
                }
                k if UNSUPPORTED_INSTANCE.contains(&k) => self.unsupported(c),
                _ => self.unknown(c, "vrrp_instance"),
            }
        }
        let Some(vrid) = vrid else {
            if !vrid_written {
                self.error(
                    n.span(),
                    format!("vrrp_instance '{name}' has no virtual_router_id"),
                );
            }
            return None;
        };
        if !vips_written {
            self.warn(
                n.args[0].span,
                format!("vrrp_instance '{name}' has no virtual_ipaddress"),
            );
        }
        i.virtual_router_id = vrid;
        let spans = InstanceSpans {
            state: state_span,
            nopreempt: nopreempt_span,
            preempt_delay: preempt_delay_span,
            advert: advert_span,
            auth: auth_span,
        };
        Some((i, spans))
    }

    pub(super) fn check_instance(
        &mut self,
        i: &VrrpInstance,
        globals: &GlobalDefs,
        spans: InstanceSpans,
    ) {
        let InstanceSpans {
            state: state_span,
            nopreempt: nopreempt_span,
            preempt_delay: preempt_delay_span,
            advert: advert_span,
            auth: auth_span,
        } = spans;
        let master = i.state == Some(InitialState::Master);
        if master && i.nopreempt {
            if let Some(span) = nopreempt_span {
                self.warn(
                    span,
                    "nopreempt needs 'state BACKUP'; keepalived ignores it with state MASTER",
                );
            }
        }
        if master && i.preempt_delay.is_some() {
            if let Some(span) = preempt_delay_span {
                self.warn(
                    span,
                    "preempt_delay needs 'state BACKUP'; keepalived ignores it with state MASTER",
                );
            }
        }
        if i.nopreempt && i.preempt_delay.is_some() {
            if let Some(span) = preempt_delay_span {
                self.warn(span, "preempt_delay has no effect with nopreempt");
            }
        }
        let strict = i.strict_mode.unwrap_or(globals.vrrp_strict);
        if let Some(&span) = self.instance_spans.get(&i.name) {
            if strict && i.authentication.is_some() {
                self.warn(span, format!("'{}': strict mode does not support authentication; keepalived ignores it, and so does fulcrum", i.name));
            }
            if strict && (i.priority == Priority::OWNER) != (i.state == Some(InitialState::Master))
            {
                self.warn(span, format!("'{}': in strict mode, state MASTER goes with priority 255 (the address owner) and only with it", i.name));
            }
            if i.priority == Priority::OWNER && i.nopreempt {
                self.warn(
                    span,
                    format!(
                        "'{}': nopreempt is incompatible with priority 255; keepalived resets it",
                        i.name
                    ),
                );
            }
        }
        if globals.vrrp_strict && i.preempt_delay.is_some() {
            if let Some(span) = preempt_delay_span {
                self.warn(
                    span,
                    "preempt_delay is incompatible with vrrp_strict; keepalived resets it",
                );
            }
        }
        if let Some(&span) = self.instance_spans.get(&i.name) {
            if i.unicast_peers.is_empty() && (i.unicast_src_ip.is_some() || i.check_unicast_src) {
                self.warn(span, format!("vrrp_instance '{}' has unicast settings but no unicast_peer: it advertises by multicast", i.name));
            }
        }
        let version = i
            .version
            .or(globals.vrrp_version)
            .unwrap_or(VrrpVersion::V2);
        if let Some(span) = advert_span {
            match version {
                VrrpVersion::V2 => {
                    if i.advert_int < Timer::from_secs(1) || i.advert_int > Timer::from_secs(255) {
                        self.error(
                            span,
                            format!(
                                "advert_int {} is out of range 1..255 seconds for VRRP version 2",
                                i.advert_int
                            ),
                        );
                    } else if !i.advert_int.is_whole_seconds() {
                        self.warn(span, format!("VRRP version 2 advertises whole seconds; advert_int {} is rounded down", i.advert_int));
                    }
                }
                VrrpVersion::V3 => {
                    if i.advert_int < Timer::from_micros(10_000)
                        || i.advert_int > Timer::from_micros(40_950_000)
                    {
                        self.error(span, format!("advert_int {} is out of range 0.01..40.95 seconds for VRRP version 3", i.advert_int));
                    } else if !i.advert_int.as_micros().is_multiple_of(10_000) {
                        self.warn(span, format!("VRRP version 3 advertises centiseconds; advert_int {} is rounded down", i.advert_int));
                    }
                }
            }
        }
        if version == VrrpVersion::V3 && i.authentication.is_some() {
            if let Some(span) = auth_span {
                self.warn(
                    span,
                    "VRRP version 3 has no authentication; keepalived ignores it",
                );
            }
        }
        if i.priority == Priority::OWNER && i.state == Some(InitialState::Backup) {
            if let Some(span) = state_span {
                self.warn(
                    span,
                    "priority 255 is the address owner, which always starts as MASTER",
                );
            }
        }
        if let Some(first) = i.virtual_ipaddress.first() {
            if let std::net::IpAddr::V6(a) = first.addr {
                if !a.is_unicast_link_local() {
                    if let Some(&span) = self.instance_spans.get(&i.name) {
                        self.warn(
                            span,
                            format!(
                                "the first IPv6 virtual_ipaddress of '{}' should be link-local (RFC 5798 5.2.9); keepalived warns too",
                                i.name
                            ),
                        );
                    }
                }
            }
        }
        if let (Some(v4), Some(v6)) = (
            i.virtual_ipaddress.iter().find(|a| a.addr.is_ipv4()),
            i.virtual_ipaddress.iter().find(|a| a.addr.is_ipv6()),
        ) {
            if let Some(&span) = self.instance_spans.get(&i.name) {
                self.error(
                    span,
                    format!(
                        "vrrp_instance '{}' mixes IPv4 ({}) and IPv6 ({}) in virtual_ipaddress: use virtual_ipaddress_excluded for the other family",
                        i.name, v4.addr, v6.addr
                    ),
                );
            }
        }
    }

    pub(super) fn authentication(&mut self, n: &Node) -> Option<Authentication> {
        self.at_most(n, 0);
        let mut kind: Option<(String, Span)> = None;
        let mut pass: Option<String> = None;
        for c in self.block(n) {
            match c.name() {
                "auth_type" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    if let Some(t) = self.arg(c, 0, "PASS or AH") {
                        kind = Some((t.to_string(), Self::arg_span(c, 0)));
                    }
                }
                "auth_pass" => {
                    pass = self.string(c, "a password");
                    if let Some(p) = &pass {
                        if p.chars().count() > 8 {
                            self.warn(
                                Self::arg_span(c, 0),
                                "auth_pass is longer than 8 characters; only the first 8 are used",
                            );
                        }
                    }
                }
                _ => self.unknown(c, "authentication"),
            }
        }
        match kind {
            Some((k, _)) if k == "PASS" => match pass {
                Some(p) => Some(Authentication::Pass(p)),
                None => {
                    self.error(n.span(), "authentication PASS needs 'auth_pass'");
                    None
                }
            },
            Some((k, span)) if k == "AH" => {
                self.error(span, "auth_type AH is not supported: it is deprecated (RFC 3768) and keepalived's AH interoperates with nothing else; use PASS or none");
                None
            }
            Some((k, span)) => {
                self.error(
                    span,
                    format!("invalid auth_type '{k}': expected PASS or AH"),
                );
                None
            }
            None => {
                self.error(n.span(), "authentication needs 'auth_type'");
                None
            }
        }
    }

    pub(super) fn addresses(&mut self, n: &Node) -> Vec<VirtualAddress> {
        self.at_most(n, 0);
        let mut out = Vec::new();
        for line in self.block(n) {
            self.no_block(line);
            if let Some(a) = self.address(line) {
                out.push(a);
            }
        }
        out
    }

    /// `ADDR[/PREFIX] [brd ADDR|+|-] [dev IF] [scope SCOPE] [label LABEL] [no_track]
    /// [noprefixroute]`.
    pub(super) fn address(&mut self, line: &Node) -> Option<VirtualAddress> {
        let text = &line.keyword.text;
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.as_str(), None),
        };
        let Ok(addr) = addr_text.parse::<IpAddr>() else {
            self.error(
                line.keyword.span,
                format!("invalid IP address '{addr_text}'"),
            );
            return None;
        };
        let max_prefix = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => None,
            Some(p) => match p.parse::<u8>() {
                Ok(v) if v <= max_prefix => Some(v),
                _ => {
                    self.error(
                        line.keyword.span,
                        format!("invalid prefix length '/{p}': expected 0..{max_prefix}"),
                    );
                    return None;
                }
            },
        };
        let mut a = VirtualAddress {
            addr,
            prefix,
            brd: None,
            dev: None,
            scope: None,
            label: None,
            no_track: false,
            no_prefix_route: false,
        };
        let mut i = 0;
        while i < line.args.len() {
            let key = line.args[i].text.as_str();
            let span = line.args[i].span;
            match key {
                "no_track" => {
                    a.no_track = true;
                    i += 1;
                    continue;
                }
                "noprefixroute" => {
                    a.no_prefix_route = true;
                    i += 1;
                    continue;
                }
                // `+` and `-`, as ip(8) takes them: the prefix's host bits set, or cleared.
                "brd" | "broadcast" => {
                    match (line.args.get(i + 1).map(|w| w.text.as_str()), addr) {
                        (Some(sign @ ("+" | "-")), IpAddr::V4(v4)) => {
                            let host = u32::MAX
                                .checked_shr(u32::from(prefix.unwrap_or(32)))
                                .unwrap_or(0);
                            let bits = u32::from(v4);
                            a.brd = Some(Ipv4Addr::from(if sign == "+" {
                                bits | host
                            } else {
                                bits & !host
                            }));
                        }
                        _ => a.brd = self.parse_at(line, i + 1, "broadcast address"),
                    }
                }
                "dev" => {
                    if let Some(dev) = self.arg(line, i + 1, "an interface after 'dev'") {
                        let dev = dev.to_string();
                        self.interface_ref(&dev, Self::arg_span(line, i + 1));
                        a.dev = Some(dev);
                    }
                }
                "scope" => {
                    match self.arg(line, i + 1, "a scope after 'scope'") {
                        Some(s @ ("site" | "link" | "host" | "nowhere" | "global")) => {
                            a.scope = Some(s.to_string())
                        }
                        Some(s) => {
                            let span = Self::arg_span(line, i + 1);
                            self.error(span, format!("invalid scope '{s}': expected global, site, link, host or nowhere"));
                        }
                        None => {}
                    }
                }
                "label" => {
                    a.label = self
                        .arg(line, i + 1, "a label after 'label'")
                        .map(str::to_string)
                }
                _ => {
                    self.error(span, format!("unknown virtual address option '{key}'"));
                    return None;
                }
            }
            i += 2;
        }
        Some(a)
    }

    pub(super) fn unicast_peers(&mut self, n: &Node) -> Vec<UnicastPeer> {
        self.at_most(n, 0);
        let mut out = Vec::new();
        for line in self.block(n) {
            self.no_block(line);
            let Ok(addr) = line.keyword.text.parse::<IpAddr>() else {
                self.error(
                    line.keyword.span,
                    format!("invalid IP address '{}'", line.keyword.text),
                );
                continue;
            };
            let mut peer = UnicastPeer {
                addr,
                min_ttl: None,
                max_ttl: None,
            };
            let mut i = 0;
            while i < line.args.len() {
                let key = line.args[i].text.clone();
                let v = self.int_at(line, i + 1, &key, 0, 255).map(|v| v as u8);
                match key.as_str() {
                    "min_ttl" => peer.min_ttl = v,
                    "max_ttl" => peer.max_ttl = v,
                    _ => self.error(
                        line.args[i].span,
                        format!("unknown unicast_peer option '{key}': expected min_ttl or max_ttl"),
                    ),
                }
                i += 2;
            }
            out.push(peer);
        }
        out
    }
}
