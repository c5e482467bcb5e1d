//! ipvsadm's rule-editing commands, parsed (pure) and applied to a rule set: -A -E -D -C
//! -a -e -d --set -Z. Validation happens before anything changes; an error is ipvsadm's
//! style of message and leaves the rules as they were.

use std::net::{IpAddr, Ipv4Addr};

use fulcrum_dataplane::{Method, TunCsum, TunKind, Tunnel};
use fulcrum_types::{Granularity, Scheduler};

use super::rules::{Rule, RuleDest, RuleKey, VerdictOf};
use super::sync::{Daemon, SyncRole};

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    AddService(Rule),
    ChangeService(Rule),
    DeleteService(RuleKey),
    Clear,
    AddServer(RuleKey, RuleDest),
    ChangeServer(RuleKey, RuleDest),
    DeleteServer(RuleKey, IpAddr, u16),
    /// tcp, tcpfin, udp in seconds; 0 keeps a value.
    SetTimeouts(u32, u32, u32),
    Zero(Option<RuleKey>),
    /// `--start-daemon master|backup` with its settings.
    StartDaemon(SyncRole, Daemon),
    /// `--stop-daemon master|backup`.
    StopDaemon(SyncRole),
}

/// An address and port as ipvsadm takes them: `A.B.C.D[:PORT]`, or for IPv6
/// `[ADDR][:PORT]`.
fn host_port(text: &str, default_port: Option<u16>) -> Result<(IpAddr, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("Invalid IPv6 address: {text} (no closing ']')"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("Invalid port specified: {after}")),
        };
        let a = h
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("Invalid IPv6 address: {h}"))?;
        (IpAddr::V6(a), port)
    } else {
        let (h, p) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        let a = h
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("Invalid IPv4 address: {h}"))?;
        (IpAddr::V4(a), p)
    };
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("Invalid port specified: {p}"))?,
        ),
        None => None,
    };
    let port = port
        .or(default_port)
        .ok_or_else(|| format!("Invalid port specified: {text} needs a port"))?;
    Ok((host, port))
}

/// Parses one ipvsadm command line (without the program name).
pub fn parse(args: &[String]) -> Result<Edit, String> {
    let mut command: Option<&str> = None;
    let mut service: Option<(u8, String)> = None;
    let mut server: Option<String> = None;
    let mut scheduler = Scheduler::Wlc;
    let mut persistent: Option<u32> = None;
    // -M's text: a netmask or a prefix length, by the service's family (known once the
    // whole line is read).
    let mut mask: Option<String> = None;
    let mut flags: Vec<String> = Vec::new();
    let mut ops = false;
    let mut method = Method::Dr;
    let mut tunnel = Tunnel::default();
    let mut csum_flag: Option<String> = None;
    let mut weight: u32 = 1;
    let mut u_threshold: u32 = 0;
    let mut l_threshold: u32 = 0;
    let mut set: Vec<u32> = Vec::new();
    let mut role: Option<SyncRole> = None;
    // ipvsadm's DEF_MCAST_IFN: the interface when --mcast-interface is not given.
    let mut daemon = Daemon {
        interface: "eth0".into(),
        ..Daemon::default()
    };
    let mut it = args.iter().peekable();
    let set_command = |c: &mut Option<&str>, new: &'static str| -> Result<(), String> {
        match c {
            Some(old) if *old != new => Err(format!("ipvsadm: {old} and {new} cannot be combined")),
            _ => {
                *c = Some(new);
                Ok(())
            }
        }
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("ipvsadm: option {name} requires an argument"))
        };
        match a.as_str() {
            "-A" | "--add-service" => set_command(&mut command, "-A")?,
            "-E" | "--edit-service" => set_command(&mut command, "-E")?,
            "-D" | "--delete-service" => set_command(&mut command, "-D")?,
            "-C" | "--clear" => set_command(&mut command, "-C")?,
            "-a" | "--add-server" => set_command(&mut command, "-a")?,
            "-e" | "--edit-server" => set_command(&mut command, "-e")?,
            "-d" | "--delete-server" => set_command(&mut command, "-d")?,
            "-Z" | "--zero" => set_command(&mut command, "-Z")?,
            "--set" => {
                set_command(&mut command, "--set")?;
                for name in ["tcp", "tcpfin", "udp"] {
                    let v = value("--set")?;
                    set.push(
                        v.parse()
                            .map_err(|_| format!("ipvsadm: invalid {name} timeout: {v}"))?,
                    );
                }
            }
            "-t" | "--tcp-service" => service = Some((6, value(a)?)),
            "-u" | "--udp-service" => service = Some((17, value(a)?)),
            "-f" | "--fwmark-service" => {
                return Err(
                    "ipvsadm: fwmark services cannot be forwarded: there is no netfilter mark before XDP"
                        .into(),
                )
            }
            "--sctp-service" => {
                return Err("ipvsadm: SCTP services are not forwarded by the data plane".into())
            }
            "-s" | "--scheduler" => {
                let v = value(a)?;
                scheduler = v
                    .parse()
                    .map_err(|_| format!("ipvsadm: Scheduler not found: ip_vs_{v}"))?;
            }
            "-p" | "--persistent" => {
                // IPVS_SVC_PERSISTENT_TIMEOUT: 6 minutes.
                persistent = Some(360);
                if let Some(next) = it.peek() {
                    if let Ok(t) = next.parse::<u32>() {
                        persistent = Some(t);
                        it.next();
                    }
                }
            }
            "-M" | "--netmask" => mask = Some(value(a)?),
            "-b" | "--sched-flags" => {
                flags = value(a)?.split(',').map(str::to_string).collect();
            }
            "-o" | "--ops" => ops = true,
            "-r" | "--real-server" => server = Some(value(a)?),
            "-g" | "--gatewaying" => method = Method::Dr,
            "-m" | "--masquerading" => method = Method::Nat,
            "-i" | "--ipip" => method = Method::Tun(Tunnel::default()),
            "--tun-type" => {
                let v = value(a)?;
                tunnel.kind = match v.as_str() {
                    "ipip" => TunKind::Ipip,
                    "gue" => TunKind::Gue,
                    "gre" => TunKind::Gre,
                    _ => return Err(format!("illegal tunnel type specified: {v}")),
                };
            }
            "--tun-port" => {
                let v = value(a)?;
                tunnel.port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| "illegal tunnel port specified".to_string())?;
            }
            "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => {
                tunnel.csum = match a.as_str() {
                    "--tun-nocsum" => TunCsum::NoCsum,
                    "--tun-csum" => TunCsum::Csum,
                    _ => TunCsum::RemCsum,
                };
                csum_flag = Some(a.trim_start_matches("--").to_string());
            }
            "-w" | "--weight" => {
                let v = value(a)?;
                weight = v
                    .parse::<i64>()
                    .ok()
                    .filter(|w| (0..=i64::from(i32::MAX)).contains(w))
                    .ok_or_else(|| format!("ipvsadm: illegal weight specified: {v}"))?
                    as u32;
            }
            "-x" | "--u-threshold" | "-y" | "--l-threshold" => {
                let v = value(a)?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("ipvsadm: illegal threshold specified: {v}"))?;
                if matches!(a.as_str(), "-x" | "--u-threshold") {
                    u_threshold = n;
                } else {
                    l_threshold = n;
                }
            }
            "--start-daemon" | "--stop-daemon" => {
                let start = a == "--start-daemon";
                set_command(&mut command, if start { "--start-daemon" } else { "--stop-daemon" })?;
                let v = value(a)?;
                role = Some(match v.as_str() {
                    "master" => SyncRole::Master,
                    "backup" => SyncRole::Backup,
                    _ if start => return Err("illegal start-daemon parameter specified".into()),
                    _ => return Err("illegal stop-daemon parameter specified".into()),
                });
            }
            "--mcast-interface" => daemon.interface = value(a)?,
            "--syncid" => {
                let v = value(a)?;
                daemon.syncid = v
                    .parse()
                    .map_err(|_| "illegal syncid specified".to_string())?;
            }
            "--sync-maxlen" => {
                let v = value(a)?;
                daemon.maxlen = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|m| *m > 0)
                        .ok_or_else(|| "illegal sync-maxlen specified".to_string())?,
                );
            }
            "--mcast-group" => {
                let v = value(a)?;
                // As ipvsadm: IPv6 when it has a colon, and a multicast group either way.
                let family = if v.contains(':') { "IPv6" } else { "IPv4" };
                daemon.group = v
                    .parse::<IpAddr>()
                    .ok()
                    .filter(|g| g.is_multicast() && g.is_ipv6() == v.contains(':'))
                    .ok_or_else(|| format!("invalid {family} mcast-group `{v}'"))?;
            }
            "--mcast-port" => {
                let v = value(a)?;
                daemon.port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| "illegal mcast-port specified".to_string())?;
            }
            "--mcast-ttl" => {
                let v = value(a)?;
                daemon.ttl = v
                    .parse::<u8>()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| "illegal mcast-ttl specified".to_string())?;
            }
            "-n" | "--numeric" => {}
            other => return Err(format!("ipvsadm: invalid option -- '{other}'")),
        }
    }
    let Some(command) = command else {
        return Err("ipvsadm: no command given".into());
    };
    let key = |required: bool| -> Result<Option<RuleKey>, String> {
        match &service {
            Some((proto, text)) => {
                let (vip, port) = host_port(text, None)?;
                Ok(Some(RuleKey {
                    proto: *proto,
                    vip,
                    port,
                }))
            }
            None if required => Err("ipvsadm: no service specified (-t or -u)".into()),
            None => Ok(None),
        }
    };
    if let Method::Tun(_) = method {
        // ipvsadm's checks of the tunnel options, in its words.
        let kind = tunnel.kind.name();
        if tunnel.kind == TunKind::Gue && tunnel.port == 0 {
            return Err(
                "You need to supply the 'tun-port' option for the 'gue' tunnel type".into(),
            );
        }
        if tunnel.kind != TunKind::Gue && tunnel.port != 0 {
            return Err(format!(
                "Illegal 'tun-port' option with the '{kind}' tunnel type"
            ));
        }
        if let Some(flag) = &csum_flag {
            if tunnel.kind == TunKind::Ipip
                || (tunnel.kind == TunKind::Gre && tunnel.csum == TunCsum::RemCsum)
            {
                return Err(format!(
                    "Illegal '{flag}' option with the '{kind}' tunnel type"
                ));
            }
        }
        method = Method::Tun(tunnel);
    }
    let dest = |key: RuleKey| -> Result<RuleDest, String> {
        let text = server
            .as_deref()
            .ok_or("ipvsadm: no real server specified (-r)")?;
        let (addr, port) = host_port(text, Some(key.port))?;
        if addr.is_ipv6() != key.vip.is_ipv6() && !matches!(method, Method::Tun(_)) {
            // ipvsadm's own words, before it asks the kernel.
            return Err("Different address family is allowed only for tunneling servers".into());
        }
        if method != Method::Nat && port != key.port && key.port != 0 {
            let how = if method == Method::Dr {
                "direct routing (-g)"
            } else {
                "tunnelling (-i)"
            };
            return Err(format!(
                "ipvsadm: {text}: {how} needs the real server's port to equal the service's ({})",
                key.port
            ));
        }
        Ok(RuleDest {
            addr,
            port,
            method,
            weight,
            verdict: VerdictOf::Fixed,
            u_threshold,
            l_threshold,
        })
    };
    Ok(match command {
        "--start-daemon" => Edit::StartDaemon(role.expect("set with the command"), daemon),
        "--stop-daemon" => Edit::StopDaemon(role.expect("set with the command")),
        "-C" => Edit::Clear,
        "--set" => Edit::SetTimeouts(set[0], set[1], set[2]),
        "-Z" => Edit::Zero(key(false)?),
        "-D" => Edit::DeleteService(key(true)?.expect("required")),
        "-A" | "-E" => {
            let key = key(true)?.expect("required");
            if key.port == 0 && persistent.is_none() {
                return Err("ipvsadm: port 0 is only valid for a persistent service (-p)".into());
            }
            let ipv6 = key.vip.is_ipv6();
            let granularity = match &mask {
                None => Granularity::whole(ipv6),
                Some(m) => Granularity::parse(m, ipv6).ok_or_else(|| {
                    if ipv6 {
                        "illegal ipv6 netmask specified".to_string()
                    } else {
                        "illegal virtual server persistent mask specified".to_string()
                    }
                })?,
            };
            let mut rule = Rule {
                key,
                scheduler,
                persistence: persistent.map(|t| (t, granularity)),
                ops,
                sh_port: false,
                sh_fallback: false,
                mh_port: false,
                mh_fallback: false,
                // IPVS's sloppy_tcp is a sysctl; Fulcrum has it per service, on with mh
                // (ipvsadm has no word for it: keepalived.conf's fulcrum_sloppy_tcp sets it).
                sloppy_tcp: scheduler == Scheduler::Mh,
                dests: Vec::new(),
            };
            // IPVS keeps bits, not names: sh-fallback and mh-fallback are one bit
            // (flag-1), sh-port and mh-port another (flag-2); each scheduler reads its own.
            for f in flags.iter().filter(|f| !f.is_empty()) {
                // ipvsadm takes a scheduler's named flags only with that scheduler.
                let wants = f
                    .split_once('-')
                    .map(|(s, _)| s)
                    .filter(|s| *s == "sh" || *s == "mh");
                if wants.is_some_and(|s| s != scheduler.name()) {
                    return Err(format!("incompatible scheduler flag `{f}'"));
                }
                match f.as_str() {
                    "sh-fallback" | "mh-fallback" | "flag-1" => {
                        (rule.sh_fallback, rule.mh_fallback) = (true, true)
                    }
                    "sh-port" | "mh-port" | "flag-2" => (rule.sh_port, rule.mh_port) = (true, true),
                    other => return Err(format!("ipvsadm: invalid scheduler flag: {other}")),
                }
            }
            if command == "-A" {
                Edit::AddService(rule)
            } else {
                Edit::ChangeService(rule)
            }
        }
        "-a" => {
            let key = key(true)?.expect("required");
            Edit::AddServer(key, dest(key)?)
        }
        "-e" => {
            let key = key(true)?.expect("required");
            Edit::ChangeServer(key, dest(key)?)
        }
        "-d" => {
            let key = key(true)?.expect("required");
            let d = dest(key)?;
            Edit::DeleteServer(key, d.addr, d.port)
        }
        _ => unreachable!("every command is matched"),
    })
}

/// Applies an edit to a copy of the rules, with ipvsadm's messages for what the kernel
/// refuses. Timeouts, zeroing and the sync daemons are not rule changes: the caller does
/// them.
pub fn apply(rules: &[Rule], edit: &Edit) -> Result<Vec<Rule>, String> {
    let mut rules = rules.to_vec();
    let find = |rules: &[Rule], key: &RuleKey| rules.iter().position(|r| r.key == *key);
    match edit {
        Edit::Clear => rules.clear(),
        Edit::AddService(rule) => {
            if find(&rules, &rule.key).is_some() {
                return Err("Service already exists".into());
            }
            rules.push(rule.clone());
        }
        Edit::ChangeService(rule) => {
            let i = find(&rules, &rule.key).ok_or("No such service")?;
            let dests = std::mem::take(&mut rules[i].dests);
            rules[i] = Rule {
                dests,
                ..rule.clone()
            };
        }
        Edit::DeleteService(key) => {
            let i = find(&rules, key).ok_or("No such service")?;
            rules.remove(i);
        }
        Edit::AddServer(key, d) => {
            let i = find(&rules, key).ok_or("Service not defined")?;
            if rules[i]
                .dests
                .iter()
                .any(|x| (x.addr, x.port) == (d.addr, d.port))
            {
                return Err("Destination already exists".into());
            }
            if rules[i].dests.len() >= fulcrum_dataplane::abi::MAX_DESTS as usize {
                return Err(format!(
                    "at most {} real servers per virtual service",
                    fulcrum_dataplane::abi::MAX_DESTS
                ));
            }
            rules[i].dests.push(d.clone());
        }
        Edit::ChangeServer(key, d) => {
            let i = find(&rules, key).ok_or("Service not defined")?;
            let x = rules[i]
                .dests
                .iter_mut()
                .find(|x| (x.addr, x.port) == (d.addr, d.port))
                .ok_or("No such destination")?;
            *x = d.clone();
        }
        Edit::DeleteServer(key, addr, port) => {
            let i = find(&rules, key).ok_or("Service not defined")?;
            let before = rules[i].dests.len();
            rules[i]
                .dests
                .retain(|x| (x.addr, x.port) != (*addr, *port));
            if rules[i].dests.len() == before {
                return Err("No such destination".into());
            }
        }
        Edit::SetTimeouts(..) | Edit::Zero(_) | Edit::StartDaemon(..) | Edit::StopDaemon(_) => {}
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn key() -> RuleKey {
        RuleKey {
            proto: 6,
            vip: Ipv4Addr::new(10, 1, 10, 65).into(),
            port: 80,
        }
    }

    #[test]
    fn ipv6_services_and_servers_in_brackets() {
        let mut rules = Vec::new();
        for line in [
            "-A -t [2001:db8::88]:80 -s rr",
            "-a -t [2001:db8::88]:80 -r [2001:db8::66]:80 -g",
            "-a -t [2001:db8::88]:80 -r [2001:db8::67] -g -w 2",
            "-d -t [2001:db8::88]:80 -r [2001:db8::66]:80",
        ] {
            rules = apply(&rules, &parse(&args(line)).unwrap()).unwrap();
        }
        let r = &rules[0];
        assert_eq!(r.key.vip, "2001:db8::88".parse::<IpAddr>().unwrap());
        assert_eq!(r.key.port, 80);
        let dests: Vec<(IpAddr, u16, u32)> =
            r.dests.iter().map(|d| (d.addr, d.port, d.weight)).collect();
        assert_eq!(dests, vec![("2001:db8::67".parse().unwrap(), 80, 2)]);
        for bad in [
            "-A -t [2001:db8::88:80 -s rr",
            "-A -t [2001:db8::zz]:80 -s rr",
            "-A -t 2001:db8::88:80 -s rr",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ipv6_service_takes_an_ipv4_tunnel_server() {
        let mut rules = Vec::new();
        for line in [
            "-A -t [2001:db8::88]:80 -s rr",
            "-a -t [2001:db8::88]:80 -r 10.2.20.11:80 -i",
        ] {
            rules = apply(&rules, &parse(&args(line)).unwrap()).unwrap();
        }
        let d = &rules[0].dests[0];
        assert_eq!(d.addr, IpAddr::V4(Ipv4Addr::new(10, 2, 20, 11)));
        assert!(matches!(d.method, fulcrum_dataplane::Method::Tun(_)));
        assert_eq!(
            parse(&args("-a -t [2001:db8::88]:80 -r 10.2.20.12:80 -g")).err(),
            Some("Different address family is allowed only for tunneling servers".into())
        );
    }

    #[test]
    fn a_session_of_edits() {
        let mut rules = Vec::new();
        for line in [
            "-A -t 10.1.10.65:80 -s rr",
            "-a -t 10.1.10.65:80 -r 192.168.184.129:80 -m",
            "-a -t 10.1.10.65:80 -r 192.168.184.130 -m -w 2",
            "-e -t 10.1.10.65:80 -r 192.168.184.129:80 -m -w 0",
            "-E -t 10.1.10.65:80 -s wrr -p 60 -M 255.255.255.0",
        ] {
            rules = apply(&rules, &parse(&args(line)).unwrap()).unwrap();
        }
        let r = &rules[0];
        assert_eq!(r.key, key());
        assert_eq!(r.scheduler, Scheduler::Wrr);
        assert_eq!(
            r.persistence,
            Some((60, Granularity::Mask(Ipv4Addr::new(255, 255, 255, 0))))
        );
        // IPv6: a prefix length, 128 (each client) by default.
        let v6 = |line: &str| {
            parse(&args(line)).map(|e| match e {
                Edit::AddService(r) | Edit::ChangeService(r) => r.persistence,
                _ => None,
            })
        };
        assert_eq!(
            v6("-A -t [2001:db8::88]:80 -p 60 -M 64"),
            Ok(Some((60, Granularity::Prefix(64))))
        );
        assert_eq!(
            v6("-A -t [2001:db8::88]:80 -p"),
            Ok(Some((360, Granularity::Prefix(128))))
        );
        assert_eq!(
            v6("-A -t [2001:db8::88]:80 -p -M 255.255.255.0"),
            Err("illegal ipv6 netmask specified".into())
        );
        assert_eq!(
            v6("-A -t 10.1.10.65:80 -p -M 64"),
            Err("illegal virtual server persistent mask specified".into())
        );
        let w: Vec<(u16, u32, Method)> = r
            .dests
            .iter()
            .map(|d| (d.port, d.weight, d.method))
            .collect();
        assert_eq!(w, vec![(80, 0, Method::Nat), (80, 2, Method::Nat)]);
        rules = apply(
            &rules,
            &parse(&args("-d -t 10.1.10.65:80 -r 192.168.184.129:80")).unwrap(),
        )
        .unwrap();
        assert_eq!(rules[0].dests.len(), 1);
        rules = apply(&rules, &parse(&args("-D -t 10.1.10.65:80")).unwrap()).unwrap();
        assert!(rules.is_empty());
    }

    #[test]
    fn errors_name_the_problem_and_change_nothing() {
        let rules = apply(&[], &parse(&args("-A -t 10.1.10.65:80")).unwrap()).unwrap();
        for (line, message) in [
            ("-A -t 10.1.10.65:80", "Service already exists"),
            ("-D -t 10.1.10.65:81", "No such service"),
            ("-d -t 10.1.10.65:80 -r 10.0.0.1:80", "No such destination"),
            ("-a -t 10.1.10.66:80 -r 10.0.0.1:80", "Service not defined"),
        ] {
            assert_eq!(
                apply(&rules, &parse(&args(line)).unwrap()).unwrap_err(),
                message,
                "{line}"
            );
        }
        for (line, part) in [
            ("-A -t 10.1.10.65:0", "port 0 is only valid"),
            ("-a -t 10.1.10.65:80 -r 10.0.0.1:8080 -g", "direct routing"),
            ("-A -f 1", "fwmark"),
            ("-A -t 10.1.10.65:80 -s fastest", "Scheduler not found"),
            ("-a -t 10.1.10.65:80 -r 10.0.0.1 -w -1", "illegal weight"),
            (
                "-a -t 10.1.10.65:80 -r 10.0.0.1 -x ten",
                "illegal threshold",
            ),
            ("-t 10.1.10.65:80", "no command"),
            ("-A -a -t 10.1.10.65:80", "cannot be combined"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(part), "{line}: {e}");
        }
        assert_eq!(
            parse(&args("-A -t 10.1.10.65:0 -p")).unwrap(),
            Edit::AddService(Rule {
                key: RuleKey { port: 0, ..key() },
                scheduler: Scheduler::Wlc,
                persistence: Some((360, Granularity::Mask(Ipv4Addr::BROADCAST))),
                ops: false,
                sh_port: false,
                sh_fallback: false,
                mh_port: false,
                mh_fallback: false,
                sloppy_tcp: false,
                dests: Vec::new(),
            })
        );
        assert_eq!(
            parse(&args("--set 0 30 0")).unwrap(),
            Edit::SetTimeouts(0, 30, 0)
        );
    }

    #[test]
    fn sync_daemon_commands_parse_as_ipvsadm_reads_them() {
        use super::super::sync::{Daemon, SyncRole};
        assert_eq!(
            parse(&args("--start-daemon master")).unwrap(),
            Edit::StartDaemon(
                SyncRole::Master,
                Daemon {
                    interface: "eth0".into(),
                    ..Daemon::default()
                }
            )
        );
        assert_eq!(
            parse(&args(
                "--start-daemon backup --mcast-interface eth1 --syncid 7 --sync-maxlen 1000 --mcast-group 239.1.1.1 --mcast-port 9000 --mcast-ttl 3"
            ))
            .unwrap(),
            Edit::StartDaemon(
                SyncRole::Backup,
                Daemon {
                    interface: "eth1".into(),
                    syncid: 7,
                    maxlen: Some(1000),
                    group: Ipv4Addr::new(239, 1, 1, 1).into(),
                    port: 9000,
                    ttl: 3,
                }
            )
        );
        assert_eq!(
            parse(&args("--stop-daemon backup")).unwrap(),
            Edit::StopDaemon(SyncRole::Backup)
        );
        for (line, error) in [
            (
                "--start-daemon both",
                "illegal start-daemon parameter specified",
            ),
            (
                "--start-daemon master --syncid 256",
                "illegal syncid specified",
            ),
            (
                "--start-daemon master --sync-maxlen 70000",
                "illegal sync-maxlen specified",
            ),
            // The real ipvsadm's words (held to it in the VM test).
            (
                "--start-daemon master --mcast-group 10.0.0.1",
                "invalid IPv4 mcast-group `10.0.0.1'",
            ),
            (
                "--start-daemon master --mcast-group 2001:db8::1",
                "invalid IPv6 mcast-group `2001:db8::1'",
            ),
            (
                "--start-daemon master --mcast-ttl 0",
                "illegal mcast-ttl specified",
            ),
        ] {
            assert_eq!(parse(&args(line)).unwrap_err(), error, "{line}");
        }
    }
}
