//! The model back into keepalived.conf text, in a canonical layout. Parsing the output gives
//! the same model again (a property test holds us to it), so this is also how `fulcrum`
//! shows the configuration it runs.

use std::fmt::Write;

use crate::model::*;

/// Quotes a word when keepalived's lexer would otherwise split or drop part of it.
fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '{' | '}' | '#' | '!' | '"' | '\\'))
        && !s.starts_with(['@', '$', '~']);
    if plain {
        s.to_string()
    } else {
        format!("\"{s}\"")
    }
}

struct Out {
    text: String,
    depth: usize,
}

impl Out {
    fn line(&mut self, parts: &[&str]) {
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str(&parts.join(" "));
        self.text.push('\n');
    }

    fn open(&mut self, parts: &[&str]) {
        let mut p = parts.to_vec();
        p.push("{");
        self.line(&p);
        self.depth += 1;
    }

    fn close(&mut self) {
        self.depth -= 1;
        self.line(&["}"]);
    }

    fn opt<T: ToString>(&mut self, key: &str, v: &Option<T>) {
        if let Some(v) = v {
            self.line(&[key, &v.to_string()]);
        }
    }

    fn opt_word(&mut self, key: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.line(&[key, &word(v)]);
        }
    }

    fn flag(&mut self, key: &str, v: bool) {
        if v {
            self.line(&[key]);
        }
    }

    fn opt_flag(&mut self, key: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.line(&[key, if v { "on" } else { "off" }]);
        }
    }

    fn script(&mut self, key: &str, s: &Option<Script>) {
        if let Some(s) = s {
            let mut parts = vec![key.to_string(), format!("\"{}\"", s.command)];
            if let Some(u) = &s.user {
                parts.push(word(&u.user));
                if let Some(g) = &u.group {
                    parts.push(word(g));
                }
            }
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            self.line(&refs);
        }
    }

    fn notify(&mut self, n: &Notify) {
        self.script("notify_master", &n.master);
        self.script("notify_backup", &n.backup);
        self.script("notify_fault", &n.fault);
        self.script("notify_stop", &n.stop);
        self.script("notify", &n.any);
    }

    fn tracked(&mut self, key: &str, list: &[Tracked]) {
        if list.is_empty() {
            return;
        }
        self.open(&[key]);
        for t in list {
            let name = word(&t.name);
            match t.weight {
                Some(w) => {
                    let w = w.to_string();
                    let mut parts = vec![name.as_str(), "weight", w.as_str()];
                    if t.reverse {
                        parts.push("reverse");
                    }
                    self.line(&parts);
                }
                None => self.line(&[&name]),
            }
        }
        self.close();
    }

    fn addresses(&mut self, key: &str, list: &[VirtualAddress]) {
        if list.is_empty() {
            return;
        }
        self.open(&[key]);
        for a in list {
            let mut parts = vec![match a.prefix {
                Some(p) => format!("{}/{p}", a.addr),
                None => a.addr.to_string(),
            }];
            if let Some(b) = a.brd {
                parts.push(format!("brd {b}"));
            }
            if let Some(d) = &a.dev {
                parts.push(format!("dev {}", word(d)));
            }
            if let Some(s) = &a.scope {
                parts.push(format!("scope {s}"));
            }
            if let Some(l) = &a.label {
                parts.push(format!("label {}", word(l)));
            }
            if a.no_track {
                parts.push("no_track".to_string());
            }
            if a.no_prefix_route {
                parts.push("noprefixroute".to_string());
            }
            self.line(&[&parts.join(" ")]);
        }
        self.close();
    }

    fn defaults(&mut self, d: &CheckDefaults) {
        self.opt("delay_loop", &d.delay_loop);
        self.opt("retry", &d.retry);
        self.opt("delay_before_retry", &d.delay_before_retry);
        self.opt("warmup", &d.warmup);
        self.opt("connect_timeout", &d.connect_timeout);
        self.opt_flag("alpha", d.alpha);
        self.opt_flag("inhibit_on_failure", d.inhibit_on_failure);
    }

    fn common(&mut self, c: &CheckerCommon) {
        self.opt("connect_ip", &c.connect_ip);
        self.opt("connect_port", &c.connect_port);
        self.opt("bindto", &c.bindto);
        self.opt("bind_port", &c.bind_port);
        self.opt_word("bind_if", &c.bind_if);
        self.opt("fwmark", &c.fwmark);
        self.opt("connect_timeout", &c.connect_timeout);
        self.opt("retry", &c.retry);
        self.opt("delay_before_retry", &c.delay_before_retry);
        self.opt("warmup", &c.warmup);
        self.opt("delay_loop", &c.delay_loop);
        self.opt_flag("alpha", c.alpha);
        self.opt_flag("log_all_failures", c.log_all_failures);
    }

    fn checker(&mut self, c: &Checker) {
        self.open(&[c.kind.keyword()]);
        self.common(&c.common);
        match &c.kind {
            CheckerKind::Tcp | CheckerKind::Ping => {}
            CheckerKind::Http(h) | CheckerKind::Ssl(h) => {
                for u in &h.urls {
                    self.open(&["url"]);
                    self.line(&["path", &word(&u.path)]);
                    self.opt("digest", &u.digest);
                    if !u.status_code.is_empty() {
                        let codes: Vec<String> =
                            u.status_code.iter().map(ToString::to_string).collect();
                        self.line(&["status_code", &codes.join(" ")]);
                    }
                    self.opt_word("virtualhost", &u.virtualhost);
                    self.opt_word("regex", &u.regex);
                    self.flag("regex_no_match", u.regex_no_match);
                    self.close();
                }
                self.opt_word("virtualhost", &h.virtualhost);
                if let Some(p) = h.http_protocol {
                    self.line(&["http_protocol", p.name()]);
                }
                self.opt_flag("enable_sni", h.enable_sni);
                self.opt_flag("fast_recovery", h.fast_recovery);
            }
            CheckerKind::Misc(m) => {
                self.script("misc_path", &Some(m.misc_path.clone()));
                self.opt("misc_timeout", &m.misc_timeout);
                self.flag("misc_dynamic", m.misc_dynamic);
            }
            CheckerKind::Smtp(s) => {
                self.opt_word("helo_name", &s.helo_name);
                for h in &s.hosts {
                    self.open(&["host"]);
                    self.common(h);
                    self.close();
                }
            }
            CheckerKind::Dns(d) => {
                self.opt("type", &d.query_type);
                self.opt_word("name", &d.name);
            }
            CheckerKind::Udp(u) => {
                self.opt("payload", &u.payload);
                match &u.require_reply {
                    Some(Some(h)) => self.line(&["require_reply", h]),
                    Some(None) => self.line(&["require_reply"]),
                    None => {}
                }
                self.opt("min_reply_length", &u.min_reply_length);
                self.opt("max_reply_length", &u.max_reply_length);
            }
            CheckerKind::File(f) => {
                self.line(&["track_file", &word(&f.track_file)]);
                if let Some((w, rev)) = f.weight {
                    let w = w.to_string();
                    if rev {
                        self.line(&["weight", &w, "reverse"]);
                    } else {
                        self.line(&["weight", &w]);
                    }
                }
            }
        }
        self.close();
    }
}

/// Prints a configuration as keepalived.conf text.
pub fn print(cfg: &KeepalivedConfig) -> String {
    let mut o = Out {
        text: String::new(),
        depth: 0,
    };
    global_defs(&mut o, &cfg.global_defs);
    for t in &cfg.track_files {
        o.open(&["track_file", &word(&t.name)]);
        o.line(&["file", &word(&t.file)]);
        if let Some((w, rev)) = t.weight {
            let w = w.to_string();
            if rev {
                o.line(&["weight", &w, "reverse"]);
            } else {
                o.line(&["weight", &w]);
            }
        }
        if let Some((v, overwrite)) = t.init_file {
            let mut parts = vec!["init_file".to_string()];
            if let Some(v) = v {
                parts.push(v.to_string());
            }
            if overwrite {
                parts.push("overwrite".to_string());
            }
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            o.line(&refs);
        }
        o.close();
    }
    for s in &cfg.vrrp_scripts {
        o.open(&["vrrp_script", &word(&s.name)]);
        o.script("script", &Some(s.script.clone()));
        o.line(&["interval", &s.interval.to_string()]);
        o.opt("timeout", &s.timeout);
        let w = s.weight.to_string();
        if s.weight_reverse {
            o.line(&["weight", &w, "reverse"]);
        } else {
            o.line(&["weight", &w]);
        }
        o.line(&["rise", &s.rise.to_string()]);
        o.line(&["fall", &s.fall.to_string()]);
        o.flag("init_fail", s.init_fail);
        o.close();
    }
    for g in &cfg.vrrp_sync_groups {
        o.open(&["vrrp_sync_group", &word(&g.name)]);
        o.open(&["group"]);
        for i in &g.group {
            o.line(&[&word(i)]);
        }
        o.close();
        o.notify(&g.notify);
        o.opt_flag("smtp_alert", g.smtp_alert);
        o.tracked("track_interface", &g.track_interfaces);
        o.tracked("track_script", &g.track_scripts);
        o.tracked("track_file", &g.track_files);
        o.flag("global_tracking", g.global_tracking);
        o.flag("sync_group_tracking_weight", g.sync_group_tracking_weight);
        o.close();
    }
    for i in &cfg.vrrp_instances {
        vrrp_instance(&mut o, i);
    }
    for g in &cfg.virtual_server_groups {
        o.open(&["virtual_server_group", &word(&g.name)]);
        for m in &g.members {
            match m {
                GroupMember::Address { addr, port } => {
                    o.line(&[&addr.to_string(), &port.to_string()])
                }
                GroupMember::Range { first, last, port } => {
                    let last = if first.is_ipv4() {
                        last.to_string()
                    } else {
                        format!("{last:x}")
                    };
                    o.line(&[&format!("{first}-{last}"), &port.to_string()])
                }
                GroupMember::Fwmark(m) => o.line(&["fwmark", &m.to_string()]),
            }
        }
        o.close();
    }
    for vs in &cfg.virtual_servers {
        virtual_server(&mut o, vs);
    }
    if let Some(b) = &cfg.bgp {
        bgp(&mut o, b);
    }
    o.text
}

fn bgp(o: &mut Out, b: &Bgp) {
    o.open(&["fulcrum_bgp"]);
    o.line(&["daemon", &b.daemon]);
    o.opt_word("control", &b.control);
    o.opt_word("config_file", &b.config_file);
    o.line(&["local_as", &b.local_as.to_string()]);
    for n in &b.neighbors {
        let mut parts = vec![
            "neighbor".to_string(),
            n.addr.to_string(),
            "as".into(),
            n.remote_as.to_string(),
        ];
        for (key, v) in [
            ("local", n.local.map(|l| l.to_string())),
            ("port", n.port.map(|p| p.to_string())),
            ("hold_time", n.hold_time.map(|h| h.to_string())),
            ("multihop", n.multihop.map(|m| m.to_string())),
        ] {
            if let Some(v) = v {
                parts.push(key.into());
                parts.push(v);
            }
        }
        if n.bfd {
            parts.push("bfd".into());
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        o.line(&refs);
    }
    if !b.vips.is_empty() {
        let vips: Vec<String> = b.vips.iter().map(ToString::to_string).collect();
        let mut parts = vec!["vips"];
        parts.extend(vips.iter().map(String::as_str));
        o.line(&parts);
    }
    o.opt("med", &b.med);
    if !b.communities.is_empty() {
        let c: Vec<String> = b
            .communities
            .iter()
            .map(|(x, y)| format!("{x}:{y}"))
            .collect();
        let mut parts = vec!["community"];
        parts.extend(c.iter().map(String::as_str));
        o.line(&parts);
    }
    o.opt("drain_prepend", &b.drain_prepend);
    o.opt("drain_timeout", &b.drain_timeout);
    o.opt_word("liveness_interface", &b.liveness_interface);
    o.close();
}

fn global_defs(o: &mut Out, g: &GlobalDefs) {
    if *g == GlobalDefs::default() {
        return;
    }
    o.open(&["global_defs"]);
    o.opt_word("router_id", &g.router_id);
    if !g.notification_email.is_empty() {
        o.open(&["notification_email"]);
        for e in &g.notification_email {
            o.line(&[&word(e)]);
        }
        o.close();
    }
    o.opt_word("notification_email_from", &g.notification_email_from);
    if let Some((host, port)) = &g.smtp_server {
        match port {
            Some(p) => o.line(&["smtp_server", &word(host), &p.to_string()]),
            None => o.line(&["smtp_server", &word(host)]),
        }
    }
    o.opt("smtp_connect_timeout", &g.smtp_connect_timeout);
    o.flag("enable_script_security", g.enable_script_security);
    if let Some(u) = &g.script_user {
        match &u.group {
            Some(gr) => o.line(&["script_user", &word(&u.user), &word(gr)]),
            None => o.line(&["script_user", &word(&u.user)]),
        }
    }
    if let Some(v) = g.vrrp_version {
        o.line(&["vrrp_version", &v.number().to_string()]);
    }
    o.flag("vrrp_strict", g.vrrp_strict);
    o.opt("vrrp_mcast_group4", &g.vrrp_mcast_group4);
    o.opt("vrrp_mcast_group6", &g.vrrp_mcast_group6);
    o.opt("vrrp_garp_master_delay", &g.vrrp_garp_master_delay);
    o.opt("vrrp_garp_master_repeat", &g.vrrp_garp_master_repeat);
    o.opt("vrrp_garp_master_refresh", &g.vrrp_garp_master_refresh);
    o.opt(
        "vrrp_garp_master_refresh_repeat",
        &g.vrrp_garp_master_refresh_repeat,
    );
    o.opt("vrrp_garp_interval", &g.vrrp_garp_interval);
    o.opt("vrrp_gna_interval", &g.vrrp_gna_interval);
    o.flag("vrrp_skip_check_adv_addr", g.vrrp_skip_check_adv_addr);
    o.flag("vrrp_check_unicast_src", g.vrrp_check_unicast_src);
    o.opt_word("vrrp_notify_fifo", &g.vrrp_notify_fifo);
    o.opt_word("notify_fifo", &g.notify_fifo);
    o.opt_word("default_interface", &g.default_interface);
    let t = g.lvs_timeouts;
    if t != LvsTimeouts::default() {
        let mut line = String::from("lvs_timeouts");
        for (k, v) in [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)] {
            if let Some(v) = v {
                let _ = write!(line, " {k} {v}");
            }
        }
        o.line(&[&line]);
    }
    o.flag("checker_log_all_failures", g.checker_log_all_failures);
    if !g.xdp_interfaces.is_empty() {
        let mut parts = vec!["fulcrum_xdp_interfaces"];
        parts.extend(g.xdp_interfaces.iter().map(String::as_str));
        o.line(&parts);
    }
    if let Some(addr) = g.metrics {
        let addr = addr.to_string();
        o.line(&["fulcrum_metrics", &addr]);
    }
    let rate = &g.lvs_sync_rate;
    if let Some((t, p)) = rate.threshold {
        o.line(&["fulcrum_lvs_sync_threshold", &t.to_string(), &p.to_string()]);
    }
    if let Some(s) = rate.refresh_period {
        o.line(&["fulcrum_lvs_sync_refresh_period", &s.to_string()]);
    }
    if let Some(n) = rate.retries {
        o.line(&["fulcrum_lvs_sync_retries", &n.to_string()]);
    }
    if let Some(d) = &g.lvs_sync_daemon {
        let mut parts = vec![word(&d.interface)];
        if let Some(i) = &d.instance {
            parts.extend(["inst".to_string(), word(i)]);
        }
        for (k, v) in [
            ("id", d.syncid.map(|v| v.to_string())),
            ("maxlen", d.maxlen.map(|v| v.to_string())),
            ("port", d.port.map(|v| v.to_string())),
            ("ttl", d.ttl.map(|v| v.to_string())),
            ("group", d.group.map(|v| v.to_string())),
        ] {
            if let Some(v) = v {
                parts.extend([k.to_string(), v]);
            }
        }
        let mut line = vec!["lvs_sync_daemon"];
        line.extend(parts.iter().map(String::as_str));
        o.line(&line);
    }
    o.close();
}

fn vrrp_instance(o: &mut Out, i: &VrrpInstance) {
    o.open(&["vrrp_instance", &word(&i.name)]);
    match i.state {
        Some(InitialState::Master) => o.line(&["state", "MASTER"]),
        Some(InitialState::Backup) => o.line(&["state", "BACKUP"]),
        None => {}
    }
    o.opt_word("interface", &i.interface);
    o.line(&["virtual_router_id", &i.virtual_router_id.to_string()]);
    o.line(&["priority", &i.priority.to_string()]);
    o.line(&["advert_int", &i.advert_int.to_string()]);
    if let Some(v) = i.version {
        o.line(&["version", &v.number().to_string()]);
    }
    if let Some(Authentication::Pass(p)) = &i.authentication {
        o.open(&["authentication"]);
        o.line(&["auth_type", "PASS"]);
        o.line(&["auth_pass", &word(p)]);
        o.close();
    }
    o.opt("unicast_src_ip", &i.unicast_src_ip);
    if !i.unicast_peers.is_empty() {
        o.open(&["unicast_peer"]);
        for p in &i.unicast_peers {
            let mut line = p.addr.to_string();
            if let Some(t) = p.min_ttl {
                let _ = write!(line, " min_ttl {t}");
            }
            if let Some(t) = p.max_ttl {
                let _ = write!(line, " max_ttl {t}");
            }
            o.line(&[&line]);
        }
        o.close();
    }
    o.opt("mcast_src_ip", &i.mcast_src_ip);
    o.addresses("virtual_ipaddress", &i.virtual_ipaddress);
    o.addresses("virtual_ipaddress_excluded", &i.virtual_ipaddress_excluded);
    o.tracked("track_interface", &i.track_interfaces);
    o.tracked("track_script", &i.track_scripts);
    o.tracked("track_file", &i.track_files);
    o.notify(&i.notify);
    o.opt_flag("smtp_alert", i.smtp_alert);
    o.opt("garp_master_delay", &i.garp_master_delay);
    o.opt("garp_master_repeat", &i.garp_master_repeat);
    o.opt("garp_master_refresh", &i.garp_master_refresh);
    o.opt("garp_master_refresh_repeat", &i.garp_master_refresh_repeat);
    match &i.use_vmac {
        Some(Some(name)) => o.line(&["use_vmac", &word(name)]),
        Some(None) => o.line(&["use_vmac"]),
        None => {}
    }
    o.flag("vmac_xmit_base", i.vmac_xmit_base);
    match i.accept {
        Some(true) => o.line(&["accept"]),
        Some(false) => o.line(&["no_accept"]),
        None => {}
    }
    o.flag("nopreempt", i.nopreempt);
    o.opt("preempt_delay", &i.preempt_delay);
    o.opt_flag("strict_mode", i.strict_mode);
    o.flag("dont_track_primary", i.dont_track_primary);
    o.flag("native_ipv6", i.native_ipv6);
    o.flag("check_unicast_src", i.check_unicast_src);
    o.flag("v3_checksum_as_v2", i.v3_checksum_as_v2);
    o.close();
}

fn virtual_server(o: &mut Out, vs: &VirtualServer) {
    match &vs.key {
        ServiceKey::Address { addr, port } => {
            o.open(&["virtual_server", &addr.to_string(), &port.to_string()])
        }
        ServiceKey::Fwmark(m) => o.open(&["virtual_server", "fwmark", &m.to_string()]),
        ServiceKey::Group(g) => o.open(&["virtual_server", "group", &word(g)]),
    }
    o.defaults(&vs.defaults);
    o.line(&["lb_algo", vs.lb_algo.name()]);
    if let Some(k) = vs.lb_kind {
        let tun = vs.tunnel.map(|t| t.words()).unwrap_or_default();
        let mut line = vec!["lb_kind", k.name()];
        line.extend(tun.iter().map(String::as_str));
        o.line(&line);
    }
    if let Some(p) = vs.protocol {
        o.line(&["protocol", p.name()]);
    }
    o.opt("persistence_timeout", &vs.persistence_timeout);
    o.opt("persistence_granularity", &vs.persistence_granularity);
    o.opt_word("virtualhost", &vs.virtualhost);
    o.flag("omega", vs.omega);
    o.line(&["quorum", &vs.quorum.to_string()]);
    o.line(&["hysteresis", &vs.hysteresis.to_string()]);
    o.script("quorum_up", &vs.quorum_up);
    o.script("quorum_down", &vs.quorum_down);
    if let Some((ip, port)) = vs.sorry_server {
        match port {
            Some(p) => o.line(&["sorry_server", &ip.to_string(), &p.to_string()]),
            None => o.line(&["sorry_server", &ip.to_string()]),
        }
    }
    o.flag("sorry_server_inhibit", vs.sorry_server_inhibit);
    if let Some(k) = vs.sorry_server_lvs_method {
        let tun = vs
            .sorry_server_tunnel
            .map(|t| t.words())
            .unwrap_or_default();
        let mut line = vec!["sorry_server_lvs_method", k.name()];
        line.extend(tun.iter().map(String::as_str));
        o.line(&line);
    }
    o.flag("ha_suspend", vs.ha_suspend);
    o.flag("ops", vs.ops);
    o.flag("sh-port", vs.sh_port);
    o.flag("sh-fallback", vs.sh_fallback);
    o.flag("mh-port", vs.mh_port);
    o.flag("mh-fallback", vs.mh_fallback);
    if let Some(on) = vs.sloppy_tcp_set {
        o.line(&["fulcrum_sloppy_tcp", if on { "on" } else { "off" }]);
    }
    for rs in &vs.real_servers {
        let addr = rs.addr.to_string();
        match rs.port {
            Some(p) => o.open(&["real_server", &addr, &p.to_string()]),
            None => o.open(&["real_server", &addr]),
        }
        o.line(&["weight", &rs.weight.to_string()]);
        if let Some(k) = rs.lvs_method {
            let tun = rs.tunnel.map(|t| t.words()).unwrap_or_default();
            let mut line = vec!["lvs_method", k.name()];
            line.extend(tun.iter().map(String::as_str));
            o.line(&line);
        }
        o.script("notify_up", &rs.notify_up);
        o.script("notify_down", &rs.notify_down);
        o.opt("uthreshold", &rs.uthreshold);
        o.opt("lthreshold", &rs.lthreshold);
        o.defaults(&rs.defaults);
        for c in &rs.checkers {
            o.checker(c);
        }
        o.close();
    }
    o.close();
}
