//! `fulcrum ipvsadm ARGS` (and the binary invoked as `ipvsadm`): ipvsadm's command line
//! against the running daemon. Listing commands print ipvsadm's formats byte for byte
//! (ipvsadm.c's row formats; see ../shared/docs/REFERENCE.md); they read the daemon's
//! `ipvs` control command.
//!
//! Editing commands (-A -E -D -C -a -e -d --set -Z, and -R reading ipvsadm -S's format
//! from standard input) are sent to the daemon, which checks them all before changing
//! anything (`fulcrum_node::l4::edit`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fulcrum_node::status::{IpvsDest, IpvsService, Listing as Ipvs, Rates, Traffic};

use crate::control::{call_with, DEFAULT_SOCKET};

/// What a listing shows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Listing {
    connections: bool,
    stats: bool,
    rate: bool,
    timeout: bool,
    save: bool,
    exact: bool,
    /// `-n`: addresses and ports as numbers, not names.
    numeric: bool,
    /// `-L -t|-u VIP:PORT`: one service.
    service: Option<(String, String)>,
    /// `-L --daemon`: the connection sync daemons.
    daemon: bool,
    /// `--tun-info`: a TunnelInfo column.
    tun_info: bool,
    /// `--nosort`: real servers in the table's own order (IPVS's list order, the newest
    /// first), not by address.
    nosort: bool,
}

fn usage(message: &str) -> ExitCode {
    eprintln!("{message}");
    eprintln!(
        "Usage: ipvsadm -A|-E -t|-u service-address [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-o]\n       ipvsadm -D -t|-u service-address\n       ipvsadm -C\n       ipvsadm -R < rules\n       ipvsadm -a|-e -t|-u service-address -r server-address [-g|-m] [-w weight] [-x upper] [-y lower]\n       ipvsadm -d -t|-u service-address -r server-address\n       ipvsadm -L|-l [-n] [-c] [--stats|--rate|--timeout] [--exact] [--nosort] [-t|-u service-address]\n       ipvsadm -v\n       ipvsadm -S|--save [-n]\n       ipvsadm -Z [-t|-u service-address]\n       ipvsadm --set tcp tcpfin udp\n       ipvsadm --start-daemon master|backup --mcast-interface IF [--syncid N] [--sync-maxlen N] [--mcast-group ADDR] [--mcast-port N] [--mcast-ttl N]\n       ipvsadm --stop-daemon master|backup\n       ipvsadm -L --daemon\n       ipvsadm --control SOCKET ... (or FULCRUM_CONTROL)"
    );
    ExitCode::from(2)
}

pub fn run(args: Vec<String>) -> ExitCode {
    let mut socket = std::env::var_os("FULCRUM_CONTROL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--control" {
            match it.next() {
                Some(p) => socket = PathBuf::from(p),
                None => return usage("--control needs a socket path"),
            }
        } else {
            rest.push(a);
        }
    }
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        usage("ipvsadm's command line against the running fulcrum daemon");
        return ExitCode::SUCCESS;
    }
    let lists = |a: &String| {
        matches!(
            a.as_str(),
            "-L" | "-l" | "--list" | "-S" | "--save" | "--timeout"
        ) || (a.starts_with('-') && !a.starts_with("--") && a[1..].starts_with(['L', 'l', 'S']))
    };
    if rest.iter().any(|a| a == "-v" || a == "--version") {
        // ipvsadm's own line, then who serves it.
        println!(
            "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1), served by fulcrum {}",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    // A bare `ipvsadm` lists, as the real one does.
    if rest.is_empty() || rest.iter().any(lists) {
        return list(&socket, &rest);
    }
    let lines = if rest.iter().any(|a| a == "-R" || a == "--restore") {
        // ipvsadm-restore: -C, then every line of standard input (ipvsadm -S's format).
        let mut lines = vec![vec!["-C".to_string()]];
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            if !words.is_empty() && !words[0].starts_with('#') {
                lines.push(words);
            }
        }
        lines
    } else {
        vec![rest]
    };
    // The command line is read here first, as ipvsadm reads it before asking the kernel:
    // what it refuses exits 2; what the kernel (the daemon) refuses, 255, in IPVS's words.
    for line in &lines {
        if let Err(e) = fulcrum_node::l4::edit::parse(line) {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    match call_with(&socket, "ipvsadm", lines) {
        Ok(r) if r.ok => ExitCode::SUCCESS,
        Ok(r) => {
            let e = r.error.unwrap_or_else(|| "the daemon refused".into());
            eprintln!("{e}");
            ExitCode::from(255)
        }
        Err(e) => {
            eprintln!("ipvsadm: {e:#}; nothing was changed");
            ExitCode::from(2)
        }
    }
}

fn list(socket: &Path, args: &[String]) -> ExitCode {
    let mut l = Listing::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            flag @ ("-t" | "--tcp-service" | "-u" | "--udp-service") => {
                let proto = if flag.contains('u') { "UDP" } else { "TCP" };
                match it.next() {
                    Some(addr) => l.service = Some((proto.to_string(), addr.clone())),
                    None => {
                        return usage(&format!("ipvsadm: option '{flag}' requires an argument"))
                    }
                }
            }
            "-L" | "-l" | "--list" => {}
            "-n" | "--numeric" => l.numeric = true,
            "-S" | "--save" => l.save = true,
            "--timeout" => l.timeout = true,
            "-c" | "--connection" => l.connections = true,
            "--stats" => l.stats = true,
            "--rate" => l.rate = true,
            "--exact" => l.exact = true,
            "--daemon" => l.daemon = true,
            "--tun-info" => l.tun_info = true,
            "--nosort" => l.nosort = true,
            s if s.starts_with('-') && !s.starts_with("--") && s.len() > 2 => {
                // Bundled short options, as getopt takes them: -Ln, -Lnc, -Sn.
                for c in s[1..].chars() {
                    match c {
                        'L' | 'l' => {}
                        'n' => l.numeric = true,
                        'S' => l.save = true,
                        'c' => l.connections = true,
                        other => return usage(&format!("ipvsadm: invalid option -- '{other}'")),
                    }
                }
            }
            other => return usage(&format!("ipvsadm: invalid option -- '{other}'")),
        }
    }
    let args = if l.connections {
        vec![vec!["connections".to_string()]]
    } else {
        Vec::new()
    };
    let response = match call_with(socket, "ipvs", args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipvsadm: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !response.ok {
        eprintln!(
            "ipvsadm: {}",
            response.error.as_deref().unwrap_or("the daemon refused")
        );
        return ExitCode::from(2);
    }
    match serde_json::from_value::<Ipvs>(response.result.unwrap_or_default()) {
        Ok(mut r) => {
            if let Some((proto, addr)) = &l.service {
                // As ipvsadm takes it: A.B.C.D:PORT or [IPV6]:PORT.
                let wanted = addr.parse::<SocketAddr>().ok();
                r.services.retain(|s| {
                    s.protocol == *proto
                        && (format!("{}:{}", s.address, s.port) == *addr
                            || wanted.is_some_and(|w| {
                                s.address.parse::<IpAddr>().ok() == Some(w.ip())
                                    && s.port == w.port()
                            }))
                });
                if r.services.is_empty() {
                    eprintln!("No such service");
                    return ExitCode::from(1);
                }
            }
            print!("{}", render(&r, &l));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipvsadm: unreadable answer from the daemon: {e}");
            ExitCode::from(2)
        }
    }
}

/// Real servers in ipvsadm's order (libipvs's ipvs_cmp_dests: by address, then port), or
/// with `--nosort` as the daemon lists them (IPVS's list order).
fn sorted(dests: &[IpvsDest], nosort: bool) -> Vec<&IpvsDest> {
    if nosort {
        return dests.iter().collect();
    }
    c_sorted(dests, |a, b| match cmp_addrs(&a.address, &b.address) {
        0 => i32::from(a.port) - i32::from(b.port),
        r => r,
    })
}

/// `ntohl(a) - ntohl(b)` as libipvs computes it: the difference of two unsigned words
/// taken as an int (so two addresses 2^31 or more apart compare the wrong way round,
/// and ipvsadm lists 192.168.0.1 before 10.0.0.1; so do we).
fn c_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// libipvs's address comparison: IPv4 as one word, IPv6 word by word.
fn cmp_addrs(a: &str, b: &str) -> i32 {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(IpAddr::V4(x)), Ok(IpAddr::V4(y))) => c_diff(u32::from(x), u32::from(y)),
        (Ok(IpAddr::V6(x)), Ok(IpAddr::V6(y))) => {
            let (x, y) = (x.octets(), y.octets());
            (0..4)
                .map(|i| {
                    let w = |o: &[u8; 16]| {
                        u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                    };
                    c_diff(w(&x), w(&y))
                })
                .find(|r| *r != 0)
                .unwrap_or(0)
        }
        _ => match a.cmp(b) {
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => 1,
        },
    }
}

/// libipvs's ipvs_cmp_services: address family (AF_INET before AF_INET6), protocol (TCP
/// before UDP), address, port.
fn cmp_services(a: &IpvsService, b: &IpvsService) -> i32 {
    let af = |s: &IpvsService| if s.address.contains(':') { 10 } else { 2 };
    let proto = |s: &IpvsService| if s.protocol == "UDP" { 17 } else { 6 };
    [
        af(a) - af(b),
        proto(a) - proto(b),
        cmp_addrs(&a.address, &b.address),
        i32::from(a.port) - i32::from(b.port),
    ]
    .into_iter()
    .find(|r| *r != 0)
    .unwrap_or(0)
}

/// `items` in the order glibc's qsort gives them under the C comparator `cmp`: its
/// merge sort (msort: halves sorted, then merged taking the left one while
/// `cmp(left, right) <= 0`), which ipvsadm's qsort runs. Written out rather than
/// `sort_by`, since libipvs's comparison is not a total order (see [`c_diff`]).
fn c_sorted<T>(items: &[T], cmp: impl Fn(&T, &T) -> i32 + Copy) -> Vec<&T> {
    if items.len() <= 1 {
        return items.iter().collect();
    }
    let (l, r) = items.split_at(items.len() / 2);
    let (l, r) = (c_sorted(l, cmp), c_sorted(r, cmp));
    let mut out = Vec::with_capacity(items.len());
    let (mut i, mut j) = (0, 0);
    while i < l.len() && j < r.len() {
        if cmp(l[i], r[j]) <= 0 {
            out.push(l[i]);
            i += 1;
        } else {
            out.push(r[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&l[i..]);
    out.extend_from_slice(&r[j..]);
    out
}

/// A persistence granularity ipvsadm does not print: each client alone (an IPv4
/// service's 255.255.255.255, an IPv6 one's 128).
fn whole_mask(m: &str) -> bool {
    m == "255.255.255.255" || m == "128"
}

/// `print_largenum`: nine columns, with K/M/G/T above 10^8 unless --exact.
fn largenum(n: u64, exact: bool) -> String {
    if exact {
        let len = n.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        return format!("{n:>width$}");
    }
    if n < 100_000_000 {
        format!("{n:>9}")
    } else if n < 1_000_000_000 {
        format!("{:>8}K", n / 1000)
    } else if n < 100_000_000_000 {
        format!("{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        format!("{:>8}G", n / 1_000_000_000)
    } else {
        format!("{:>8}T", n / 1_000_000_000_000)
    }
}

/// A host's name and a port's service name through the system's NSS (getnameinfo, which
/// falls back to numbers): what gethostbyaddr and getservbyport give ipvsadm.
fn nss_names(addr: SocketAddr, udp: bool) -> (String, String) {
    let flags = if udp { libc::NI_DGRAM } else { 0 };
    dns_lookup::getnameinfo(&addr, flags)
        .unwrap_or_else(|_| (addr.ip().to_string(), addr.port().to_string()))
}

/// An address and port as ipvsadm writes them (addrport_to_anyname): numbers with -n,
/// else the host's and the service's names where the system has them; an IPv6 host in
/// brackets; cut at 59 bytes, as ipvsadm's buffer cuts it.
fn addr_port(
    addr: &str,
    port: u16,
    protocol: &str,
    numeric: bool,
    names: &dyn Fn(SocketAddr, bool) -> (String, String),
) -> String {
    let Ok(ip) = addr.trim_matches(['[', ']']).parse::<IpAddr>() else {
        return format!("{addr}:{port}");
    };
    let (host, service) = if numeric {
        (ip.to_string(), port.to_string())
    } else {
        names(SocketAddr::new(ip, port), protocol == "UDP")
    };
    let mut out = match ip {
        IpAddr::V4(_) => format!("{host}:{service}"),
        IpAddr::V6(_) => format!("[{host}]:{service}"),
    };
    if out.len() > 59 {
        let mut cut = 59;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// `ip:port` (or `[ip]:port`) as the daemon lists a connection's ends, written as ipvsadm
/// writes them.
fn end(
    text: &str,
    protocol: &str,
    numeric: bool,
    names: &dyn Fn(SocketAddr, bool) -> (String, String),
) -> String {
    match text.parse::<SocketAddr>() {
        Ok(a) => addr_port(&a.ip().to_string(), a.port(), protocol, numeric, names),
        Err(_) => text.to_string(),
    }
}

/// The listing ipvsadm would print for this answer of the `ipvs` control command.
fn render(r: &Ipvs, l: &Listing) -> String {
    render_with(r, l, &nss_names)
}

/// [`render`], with names from `names` (when not -n).
fn render_with(
    r: &Ipvs,
    l: &Listing,
    names: &dyn Fn(SocketAddr, bool) -> (String, String),
) -> String {
    let name =
        |addr: &str, port: u16, protocol: &str| addr_port(addr, port, protocol, l.numeric, names);
    let mut out = String::new();
    let services = if l.nosort {
        r.services.iter().collect()
    } else {
        c_sorted(&r.services, cmp_services)
    };
    if l.daemon {
        // ipvsadm's print_daemon: the master's line, then the backup's.
        if let Some(s) = &r.sync {
            for (role, d) in [("master", &s.master), ("backup", &s.backup)] {
                if let Some(d) = d {
                    out += &format!(
                        "{role} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl={})\n",
                        d.interface, d.syncid, d.maxlen, d.group, d.port, d.ttl
                    );
                }
            }
        }
        return out;
    }
    if l.timeout {
        let t = &r.timeout;
        out += &format!(
            "Timeout (tcp tcpfin udp): {} {} {}\n",
            t.tcp, t.tcpfin, t.udp
        );
        return out;
    }
    if l.save {
        for svc in &services {
            let opt = if svc.protocol == "UDP" { "-u" } else { "-t" };
            let vaddr = name(&svc.address, svc.port, &svc.protocol);
            out += &format!("-A {opt} {vaddr} -s {}", svc.scheduler);
            if let Some(p) = svc.persistent {
                out += &format!(" -p {p}");
                if let Some(m) = svc.netmask.as_ref().filter(|m| !whole_mask(m)) {
                    out += &format!(" -M {m}");
                }
            }
            if svc.ops {
                out += " -o";
            }
            if !svc.flags.is_empty() {
                out += &format!(" -b {}", svc.flags.join(","));
            }
            out += "\n";
            // ipvsadm -S writes no thresholds (-x, -y).
            for d in sorted(&svc.dests, l.nosort) {
                let fwd = match d.forward.as_str() {
                    "Masq" => "-m",
                    "Tunnel" => "-i",
                    _ => "-g",
                };
                out += &format!(
                    "-a {opt} {vaddr} -r {} {fwd} -w {}",
                    name(&d.address, d.port, &svc.protocol),
                    d.weight
                );
                if let Some(t) = &d.tunnel {
                    out += &format!(" --tun-type {}", t.kind);
                    if t.kind == "gue" {
                        out += &format!(" --tun-port {}", t.port);
                    }
                    if t.kind != "ipip" {
                        out += &format!(" --tun-{}", t.csum);
                    }
                }
                out += "\n";
            }
        }
        return out;
    }
    if l.connections {
        out += "IPVS connection entries\n";
        out += "pro expire state       source             virtual            destination\n";
        let rows = r.templates.iter().chain(&r.connections);
        for c in rows {
            let secs = c.expires_ms / 1000;
            out += &format!(
                "{:<3} {:02}:{:02}  {:<11} {:<18} {:<18} {}\n",
                c.protocol,
                secs / 60,
                secs % 60,
                c.state,
                end(&c.source, &c.protocol, l.numeric, names),
                end(&c.virtual_, &c.protocol, l.numeric, names),
                end(&c.destination, &c.protocol, l.numeric, names),
            );
        }
        return out;
    }
    // Listing one service (-L -t|-u) prints no version line.
    if l.service.is_none() {
        out += &format!("IP Virtual Server version 1.2.1 (size={})\n", r.size);
    }
    if l.stats {
        out += "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n";
        out += "  -> RemoteAddress:Port\n";
    } else if l.rate {
        out += "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n";
        out += "  -> RemoteAddress:Port\n";
    } else {
        out += "Prot LocalAddress:Port Scheduler Flags\n";
        if l.tun_info {
            out += "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n";
        } else {
            out += "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";
        }
    }
    let stats = |t: &Traffic| {
        [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes]
            .iter()
            .map(|n| largenum(*n, l.exact))
            .collect::<String>()
    };
    let rates = |r: &Rates| {
        [r.cps, r.inpps, r.outpps, r.inbps, r.outbps]
            .iter()
            .map(|n| format!(" {n:>8}"))
            .collect::<String>()
    };
    for svc in &services {
        let vaddr = name(&svc.address, svc.port, &svc.protocol);
        let head = format!("{:<4} {vaddr}", svc.protocol);
        if l.stats {
            out += &format!("{head:<33}{}\n", stats(&svc.stats));
        } else if l.rate {
            out += &format!("{head:<33}{}\n", rates(&svc.rate));
        } else {
            out += &format!("{head} {}", svc.scheduler);
            if !svc.flags.is_empty() {
                out += &format!(" ({})", svc.flags.join(","));
            }
            if let Some(p) = svc.persistent {
                out += &format!(" persistent {p}");
                if let Some(m) = svc.netmask.as_ref().filter(|m| !whole_mask(m)) {
                    out += &format!(" mask {m}");
                }
            }
            if svc.ops {
                out += " ops";
            }
            out += "\n";
        }
        for d in sorted(&svc.dests, l.nosort) {
            let raddr = name(&d.address, d.port, &svc.protocol);
            if l.stats {
                out += &format!("  -> {raddr:<28}{}\n", stats(&d.stats));
            } else if l.rate {
                out += &format!("  -> {raddr:<28}{}\n", rates(&d.rate));
            } else {
                let tun = if l.tun_info {
                    // ipvsadm's TunnelInfo: the type, gue's port, the checksum option.
                    let info = match &d.tunnel {
                        None => "n/a".to_string(),
                        Some(t) => {
                            let csum = match t.csum.as_str() {
                                "csum" => "+c",
                                "remcsum" => "r+c",
                                _ => "-c",
                            };
                            match t.kind.as_str() {
                                "gue" => format!("gue:{}:{csum}", t.port),
                                "gre" => format!("gre:{csum}"),
                                k => k.to_string(),
                            }
                        }
                    };
                    format!("{info:<13} ")
                } else {
                    String::new()
                };
                out += &format!(
                    "  -> {raddr:<28} {:<7} {tun}{:<6} {:<10} {:<10}\n",
                    d.forward, d.weight, d.active, d.inactive
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `-n`, as every listing in REFERENCE.md is.
    fn numeric() -> Listing {
        Listing {
            numeric: true,
            ..Listing::default()
        }
    }

    fn answer() -> Ipvs {
        serde_json::from_value(json!({
            "size": 4096,
            "services": [{
                "protocol": "TCP", "address": "10.0.0.92", "port": 80, "scheduler": "rr",
                "persistent": null, "netmask": null, "ops": false,
                "stats": {"conns": 14209, "inpkts": 111769, "outpkts": 74613, "inbytes": 7207174, "outbytes": 8334358},
                "rate": {"cps": 0, "inpps": 2, "outpps": 0, "inbps": 193, "outbps": 0},
                "dests": [{
                    "address": "172.17.0.2", "port": 937, "forward": "Masq", "weight": 1,
                    "active": 0, "inactive": 0,
                    "stats": {"conns": 2, "inpkts": 12, "outpkts": 8, "inbytes": 774, "outbytes": 894},
                    "rate": {"cps": 0, "inpps": 0, "outpps": 0, "inbps": 54, "outbps": 0},
                }],
            }],
            "connections": [{
                "protocol": "TCP", "expires_ms": 899_500, "state": "ESTABLISHED",
                "source": "10.142.81.39:49715", "virtual": "10.40.25.43:18000",
                "destination": "10.40.25.16:18000",
            }],
            "templates": [],
            "timeout": {"tcp": 900, "tcpfin": 120, "udp": 300},
        }))
        .expect("the control protocol's listing")
    }

    /// Services and real servers in the order libipvs's comparisons and glibc's qsort
    /// give: IPv4 before IPv6, TCP before UDP, and addresses compared by the int
    /// difference of their words, which puts 192.168.0.1 before 10.0.0.1.
    #[test]
    fn listings_sort_as_libipvs_compares() {
        let svc = |protocol: &str, address: &str, port: u16| {
            serde_json::from_value::<IpvsService>(json!({
                "protocol": protocol, "address": address, "port": port, "scheduler": "rr",
                "persistent": null, "netmask": null, "ops": false,
                "stats": {"conns": 0, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0},
                "rate": {"cps": 0, "inpps": 0, "outpps": 0, "inbps": 0, "outbps": 0},
                "dests": [],
            }))
            .unwrap()
        };
        let all = [
            svc("UDP", "10.0.0.1", 53),
            svc("TCP", "2001:db8::1", 80),
            svc("TCP", "10.0.0.1", 443),
            svc("TCP", "192.168.0.1", 80),
            svc("TCP", "10.0.0.1", 80),
            svc("TCP", "10.0.0.2", 80),
        ];
        let order: Vec<String> = c_sorted(&all, cmp_services)
            .iter()
            .map(|s| format!("{} {}:{}", s.protocol, s.address, s.port))
            .collect();
        assert_eq!(
            order,
            [
                "TCP 192.168.0.1:80",
                "TCP 10.0.0.1:80",
                "TCP 10.0.0.1:443",
                "TCP 10.0.0.2:80",
                "UDP 10.0.0.1:53",
                "TCP 2001:db8::1:80",
            ]
        );
    }

    /// The examples of REFERENCE.md, byte for byte.
    #[test]
    fn listings_match_ipvsadm() {
        assert_eq!(
            render(&answer(), &numeric()),
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.0.0.92:80 rr\n\
             \x20 -> 172.17.0.2:937               Masq    1      0          0         \n"
        );
        let stats = render(
            &answer(),
            &Listing {
                stats: true,
                ..numeric()
            },
        );
        assert_eq!(
            stats,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
             \x20 -> RemoteAddress:Port\n\
             TCP  10.0.0.92:80                    14209   111769    74613  7207174  8334358\n\
             \x20 -> 172.17.0.2:937                      2       12        8      774      894\n"
        );
        assert_eq!(
            render(
                &answer(),
                &Listing {
                    rate: true,
                    ..numeric()
                }
            ),
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
             \x20 -> RemoteAddress:Port\n\
             TCP  10.0.0.92:80                        0        2        0      193        0\n\
             \x20 -> 172.17.0.2:937                      0        0        0       54        0\n"
        );
        assert_eq!(
            render(
                &answer(),
                &Listing {
                    connections: true,
                    ..numeric()
                }
            ),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 14:59  ESTABLISHED 10.142.81.39:49715 10.40.25.43:18000  10.40.25.16:18000\n"
        );
        assert_eq!(
            render(
                &answer(),
                &Listing {
                    timeout: true,
                    ..numeric()
                }
            ),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
        assert_eq!(
            render(
                &answer(),
                &Listing {
                    save: true,
                    ..numeric()
                }
            ),
            "-A -t 10.0.0.92:80 -s rr\n-a -t 10.0.0.92:80 -r 172.17.0.2:937 -m -w 1\n"
        );
    }

    #[test]
    fn large_numbers_shrink_unless_exact() {
        assert_eq!(largenum(99_999_999, false), " 99999999");
        assert_eq!(largenum(123_456_789, false), "  123456K");
        assert_eq!(largenum(123_456_789, true), " 123456789");
        assert_eq!(largenum(5_000_000_000, false), "    5000M");
    }

    /// Without -n: names where the system has them, numbers where it has none, an IPv6
    /// host in brackets, the service by protocol.
    #[test]
    fn listings_without_n_name_hosts_and_services() {
        let names = |a: SocketAddr, udp: bool| {
            let host = match a.ip().to_string().as_str() {
                "10.0.0.92" => "www.example.com".to_string(),
                ip => ip.to_string(),
            };
            let service = match (a.port(), udp) {
                (80, false) => "http".to_string(),
                (53, true) => "domain".to_string(),
                (p, _) => p.to_string(),
            };
            (host, service)
        };
        let out = render_with(&answer(), &Listing::default(), &names);
        assert!(out.contains("\nTCP  www.example.com:http rr\n"), "{out}");
        assert!(
            out.contains(&format!("\n  -> {:<28} Masq    1", "172.17.0.2:937")),
            "{out}"
        );
        assert_eq!(
            addr_port("2001:db8::1", 53, "UDP", false, &names),
            "[2001:db8::1]:domain"
        );
        assert_eq!(
            addr_port("2001:db8::1", 53, "UDP", true, &names),
            "[2001:db8::1]:53"
        );
        let long = |_: SocketAddr, _: bool| ("h".repeat(80), "http".to_string());
        assert_eq!(addr_port("10.0.0.1", 80, "TCP", false, &long).len(), 59);
        let saved = render_with(
            &answer(),
            &Listing {
                save: true,
                ..Listing::default()
            },
            &names,
        );
        assert!(
            saved.starts_with("-A -t www.example.com:http -s rr\n"),
            "{saved}"
        );
        let conns = render_with(
            &answer(),
            &Listing {
                connections: true,
                ..Listing::default()
            },
            &names,
        );
        assert!(conns.contains("10.142.81.39:49715"), "{conns}");
    }

    /// The system's own answer for the loopback address and port 80 (/etc/hosts and
    /// /etc/services, no network).
    #[test]
    fn names_come_from_the_system() {
        let (host, service) = nss_names("127.0.0.1:80".parse().unwrap(), false);
        assert!(!host.is_empty());
        let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
        if services
            .lines()
            .any(|l| l.starts_with("http") && l.contains("80/tcp"))
        {
            assert_eq!(service, "http");
        } else {
            assert_eq!(service, "80");
        }
        // A port no service has stays a number.
        assert_eq!(
            nss_names("127.0.0.1:65001".parse().unwrap(), true).1,
            "65001"
        );
    }
}
