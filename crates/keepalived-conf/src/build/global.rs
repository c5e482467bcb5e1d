//! global_defs, as keepalived's global_parser.c reads it.

use super::*;

const UNSUPPORTED_GLOBAL: &[&str] = &[
    "enable_traps",
    "enable_snmp_vrrp",
    "enable_snmp_checker",
    "enable_snmp_rfc",
    "enable_snmp_rfcv2",
    "enable_snmp_rfcv3",
    "snmp_socket",
    "enable_dbus",
    "enable_dbus_object",
    "dynamic_interfaces",
    "vrrp_iptables",
    "vrrp_ipsets",
    "vrrp_nftables",
    "nftables",
    "lvs_flush",
    "lvs_flush_onstop",
    "vrrp_lower_prio_no_advert",
    "vrrp_higher_prio_send_advert",
    "vrrp_priority",
    "checker_priority",
    "bfd_priority",
    "vrrp_no_swap",
    "checker_no_swap",
    "vrrp_rt_priority",
    "checker_rt_priority",
    "vrrp_rlimit_rttime",
    "checker_rlimit_rttime",
    "vrrp_netlink_cmd_rcv_bufs",
    "vrrp_netlink_monitor_rcv_bufs",
    "lvs_netlink_cmd_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs",
    "process_monitor_rcv_bufs",
    "max_auto_priority",
    "min_auto_priority_delay",
    "smtp_helo_name",
    "smtp_alert",
    "smtp_alert_vrrp",
    "smtp_alert_checker",
    "no_email_faults",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_min_garp",
    "vrrp_dont_track_primary",
    "vrrp_startup_delay",
    "vrrp_version_3_checksum_as_v2",
    "vrrp_skip_check_adv_addr_on_change",
    "notify_fifo_script",
    "vrrp_notify_fifo_script",
    "lvs_notify_fifo",
    "lvs_notify_fifo_script",
    "script_security",
    "child_wait_time",
    "linkbeat_interfaces",
    "vrrp_rx_bufs_policy",
    "vrrp_rx_bufs_multiplier",
    "random_seed",
    "reload_time_file",
    "reload_check_config",
    "config_save_dir",
    "tmp_config_directory",
    "umask",
    "use_symlink_paths",
];

impl Builder<'_> {
    pub(super) fn global_defs(&mut self, n: &Node, g: &mut GlobalDefs) {
        self.at_most(n, 0);
        for c in self.block(n) {
            match c.name() {
                "router_id" => g.router_id = self.string(c, "a router id"),
                "notification_email" => {
                    for line in self.block(c) {
                        g.notification_email.push(line.keyword.text.clone());
                        for a in &line.args {
                            g.notification_email.push(a.text.clone());
                        }
                    }
                }
                "notification_email_from" => {
                    g.notification_email_from = self.string(c, "an address")
                }
                "smtp_server" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(host) = self.arg(c, 0, "a server") {
                        let host = host.to_string();
                        let port = if c.args.len() > 1 {
                            self.port_at(c, 1)
                        } else {
                            None
                        };
                        g.smtp_server = Some((host, port));
                    }
                }
                "smtp_connect_timeout" => g.smtp_connect_timeout = self.timer(c),
                "enable_script_security" => g.enable_script_security = self.presence(c),
                "script_user" => g.script_user = self.script_user(c),
                "vrrp_version" => g.vrrp_version = self.version(c),
                "vrrp_strict" => g.vrrp_strict = self.presence(c),
                "vrrp_mcast_group4" => {
                    self.no_block(c);
                    g.vrrp_mcast_group4 = self.parse_at(c, 0, "IPv4 multicast address")
                }
                "vrrp_mcast_group6" => g.vrrp_mcast_group6 = self.ip(c),
                "vrrp_garp_master_delay" => g.vrrp_garp_master_delay = self.whole_seconds(c),
                "vrrp_garp_master_repeat" => {
                    g.vrrp_garp_master_repeat = self.u32_value(c, "repeat count")
                }
                "vrrp_garp_master_refresh" => g.vrrp_garp_master_refresh = self.whole_seconds(c),
                "vrrp_garp_master_refresh_repeat" => {
                    g.vrrp_garp_master_refresh_repeat = self.u32_value(c, "repeat count")
                }
                "vrrp_garp_interval" => g.vrrp_garp_interval = self.timer(c),
                "vrrp_gna_interval" => g.vrrp_gna_interval = self.timer(c),
                "vrrp_skip_check_adv_addr" => {
                    g.vrrp_skip_check_adv_addr = self.flag(c).unwrap_or(false)
                }
                "vrrp_check_unicast_src" => {
                    g.vrrp_check_unicast_src = self.flag(c).unwrap_or(false)
                }
                "vrrp_notify_fifo" => g.vrrp_notify_fifo = self.string(c, "a fifo path"),
                "notify_fifo" => g.notify_fifo = self.string(c, "a fifo path"),
                "default_interface" => {
                    g.default_interface = self.string(c, "an interface");
                    if let Some(name) = &g.default_interface {
                        self.interface_ref(&name.clone(), Self::arg_span(c, 0));
                    }
                }
                "lvs_timeouts" => self.lvs_timeouts(c, &mut g.lvs_timeouts),
                "checker_log_all_failures" => {
                    g.checker_log_all_failures = self.flag(c).unwrap_or(false)
                }
                "fulcrum_xdp_interfaces" => {
                    self.no_block(c);
                    if c.args.is_empty() {
                        self.arg(c, 0, "an interface");
                    }
                    for (i, a) in c.args.iter().enumerate() {
                        g.xdp_interfaces.push(a.text.clone());
                        self.interface_ref(&a.text.clone(), Self::arg_span(c, i));
                    }
                }
                "fulcrum_metrics" => {
                    self.no_block(c);
                    match c.args.first() {
                        None => {
                            self.arg(c, 0, "an address and port");
                        }
                        Some(a) => match a.text.parse::<std::net::SocketAddr>() {
                            Ok(addr) => g.metrics = Some(addr),
                            Err(_) => self.error(
                                Self::arg_span(c, 0),
                                format!("fulcrum_metrics: '{}' is not ADDR:PORT", a.text),
                            ),
                        },
                    }
                }
                "fulcrum_lvs_sync_threshold" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    let t = self.int_at(c, 0, "sync threshold", 0, 65535);
                    let p = self.int_at(c, 1, "sync period", 0, 65535);
                    if let (Some(t), Some(p)) = (t, p) {
                        if p > 0 && t >= p {
                            self.error(
                                Self::arg_span(c, 0),
                                format!(
                                    "fulcrum_lvs_sync_threshold: the threshold {t} must be below the period {p} (or the period 0), as IPVS's sync_threshold"
                                ),
                            );
                        } else {
                            g.lvs_sync_rate.threshold = Some((t as u16, p as u16));
                        }
                    }
                }
                "fulcrum_lvs_sync_refresh_period" => {
                    g.lvs_sync_rate.refresh_period = self.u32_value(c, "sync refresh period");
                }
                "fulcrum_lvs_sync_retries" => {
                    g.lvs_sync_rate.retries = self.int(c, "sync retries", 0, 3).map(|v| v as u8);
                }
                "lvs_sync_daemon" => {
                    if let Some(d) = self.lvs_sync_daemon(c) {
                        if let Some(first) = &g.lvs_sync_daemon {
                            self.warn(
                                c.span(),
                                format!(
                                    "lvs_sync_daemon has already been given as {}; this one is ignored",
                                    first.interface
                                ),
                            );
                        } else {
                            g.lvs_sync_daemon = Some(d);
                            self.sync_daemon_span = Some(c.span());
                        }
                    }
                }
                k if UNSUPPORTED_GLOBAL.contains(&k) => self.unsupported(c),
                _ => self.unknown(c, "global_defs"),
            }
        }
    }

    /// keepalived's lvs_sync_daemon_handler: an interface, then the instance (after
    /// `inst`, or second, as before `inst` existed) and options in any order; a bad option
    /// is reported and skipped, as keepalived does.
    pub(super) fn lvs_sync_daemon(&mut self, n: &Node) -> Option<LvsSyncDaemon> {
        self.no_block(n);
        let interface = self.arg(n, 0, "an interface")?.to_string();
        self.interface_ref(&interface, Self::arg_span(n, 0));
        let mut d = LvsSyncDaemon {
            interface,
            instance: None,
            syncid: None,
            maxlen: None,
            port: None,
            ttl: None,
            group: None,
        };
        let mut i = 1;
        while i < n.args.len() {
            let key = n.args[i].text.clone();
            let value = n.args.get(i + 1).map(|a| a.text.clone());
            match key.as_str() {
                "inst" | "id" | "maxlen" | "port" | "ttl" | "group" if value.is_none() => {
                    self.error(
                        n.args[i].span,
                        format!("lvs_sync_daemon: '{key}' needs a value"),
                    );
                }
                "inst" => d.instance = value,
                "id" => d.syncid = self.int_at(n, i + 1, "sync id", 0, 255).map(|v| v as u8),
                "maxlen" => {
                    d.maxlen = self
                        .int_at(n, i + 1, "sync maxlen", 1, 65535 - 20 - 8)
                        .map(|v| v as u16)
                }
                "port" => {
                    d.port = self
                        .int_at(n, i + 1, "sync port", 1, 65535)
                        .map(|v| v as u16)
                }
                "ttl" => d.ttl = self.int_at(n, i + 1, "sync ttl", 1, 255).map(|v| v as u8),
                "group" => match value.as_deref().map(str::parse::<IpAddr>) {
                    Some(Ok(a)) if a.is_multicast() => d.group = Some(a),
                    _ => self.error(
                        Self::arg_span(n, i + 1),
                        format!(
                            "lvs_sync_daemon group '{}' is not a multicast address",
                            value.unwrap_or_default()
                        ),
                    ),
                },
                // The old form: IFACE VRRP_INSTANCE [SYNCID].
                _ if i == 1 => {
                    d.instance = Some(key);
                    i += 1;
                    continue;
                }
                _ if i == 2 && d.instance.is_some() && key.parse::<u8>().is_ok() => {
                    self.warn(
                        n.args[i].span,
                        "please use the keyword 'id' before the lvs_sync_daemon sync id",
                    );
                    d.syncid = key.parse().ok();
                    i += 1;
                    continue;
                }
                _ => {
                    self.error(
                        n.args[i].span,
                        format!("unknown lvs_sync_daemon option '{key}'"),
                    );
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        Some(d)
    }

    pub(super) fn lvs_timeouts(&mut self, n: &Node, t: &mut LvsTimeouts) {
        self.no_block(n);
        let mut i = 0;
        while i < n.args.len() {
            let key = n.args[i].text.clone();
            let value = self
                .int_at(n, i + 1, &format!("{key} timeout"), 0, 86400 * 31)
                .map(|v| v as u32);
            match key.as_str() {
                "tcp" => t.tcp = value,
                "tcpfin" => t.tcpfin = value,
                "udp" => t.udp = value,
                _ => self.error(
                    n.args[i].span,
                    format!("unknown lvs_timeouts protocol '{key}': expected tcp, tcpfin or udp"),
                ),
            }
            i += 2;
        }
    }

    pub(super) fn version(&mut self, n: &Node) -> Option<VrrpVersion> {
        match self.int(n, "VRRP version", 2, 3)? {
            2 => Some(VrrpVersion::V2),
            _ => Some(VrrpVersion::V3),
        }
    }
}
