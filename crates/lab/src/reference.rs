//! The four reference deployments of shared/docs/MISSION.md, built by name, with its
//! addresses, and a fifth beyond them, LVS-TUN. The client is 10.1.10.2 on the outside
//! segment in every deployment.
//!
//! Directors and proxies get an XDP_PASS stub on the switch side of each of their links, so
//! that the data plane's XDP_TX and redirects are delivered.

use std::net::Ipv4Addr;

use crate::{Agent, Host, Lab, Result, Switch};

/// Which reference deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// 1. LVS-NAT: VIP 10.1.10.65 (director outside), DIP 192.168.184.128 (inside),
    ///    RIP1 .129 and RIP2 .130, whose default gateway is the DIP.
    LvsNat,
    /// 2. LVS-DR: VIP 10.1.10.88, DIP 10.1.10.65, RIP1 .66 and RIP2 .67 on one segment; the
    ///    real servers hold the VIP on `lo` with arp_ignore=1, arp_announce=2.
    LvsDr,
    /// 3. Keepalived HA for LVS: directors 10.1.10.65 and 10.1.10.68 (VRRP decides who holds
    ///    VIP1 10.1.10.88 and VIP2 10.1.10.99), DR real servers .66 and .67 holding both VIPs.
    KeepalivedHa,
    /// 4. Nginx HA: proxies 10.1.10.65 and 10.1.10.68 sharing VIP1 and VIP2 by VRRP, proxying
    ///    to back ends .66 and .67.
    NginxHa,
    /// 5. LVS-TUN (not one of MISSION.md's four): director 10.1.10.65 holding VIP
    ///    10.1.10.88; real servers 10.2.20.11 and .12 on another subnet behind a router
    ///    (10.1.10.1 outside, 10.2.20.1 inside), holding the VIP on `lo` (arp_ignore=1,
    ///    arp_announce=2) and answering the client straight through the router. They
    ///    decapsulate with `fulcrum decap` ([`Reference::decapsulate`]): this kernel has no
    ///    ipip, fou or gre.
    LvsTun,
}

impl Deployment {
    pub const ALL: [Deployment; 5] = [
        Deployment::LvsNat,
        Deployment::LvsDr,
        Deployment::KeepalivedHa,
        Deployment::NginxHa,
        Deployment::LvsTun,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Deployment::LvsNat => "nat",
            Deployment::LvsDr => "dr",
            Deployment::KeepalivedHa => "keepalived-ha",
            Deployment::NginxHa => "nginx-ha",
            Deployment::LvsTun => "tun",
        }
    }

    pub fn from_name(name: &str) -> Option<Deployment> {
        Deployment::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn title(self) -> &'static str {
        match self {
            Deployment::LvsNat => "1. LVS-NAT",
            Deployment::LvsDr => "2. LVS-DR",
            Deployment::KeepalivedHa => "3. Keepalived HA for LVS",
            Deployment::NginxHa => "4. Nginx HA",
            Deployment::LvsTun => "5. LVS-TUN (beyond MISSION.md's four)",
        }
    }
}

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 2);
pub const VIP1: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 88);
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 99);
pub const DIP1: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 65);
pub const DIP2: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 68);
pub const NAT_DIP: Ipv4Addr = Ipv4Addr::new(192, 168, 184, 128);
pub const NAT_RIPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 184, 129),
    Ipv4Addr::new(192, 168, 184, 130),
];
pub const RIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 10, 66), Ipv4Addr::new(10, 1, 10, 67)];
/// LVS-TUN: the router's addresses outside and inside, and the real servers behind it.
pub const ROUTER_OUT: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 1);
pub const ROUTER_IN: Ipv4Addr = Ipv4Addr::new(10, 2, 20, 1);
pub const TUN_RIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 2, 20, 11), Ipv4Addr::new(10, 2, 20, 12)];
/// LVS-TUN: the UDP port the real servers take GUE on (`lb_kind TUN type gue port 6080`).
pub const TUN_GUE_PORT: u16 = 6080;

/// A built reference deployment. Drops (and cleans up) with its lab.
#[derive(Debug)]
pub struct Reference {
    pub deployment: Deployment,
    pub lab: Lab,
    pub client: Host,
    /// Directors (1-3) or proxies (4), primary first.
    pub directors: Vec<Host>,
    pub real_servers: Vec<Host>,
    /// Addresses of the real servers as the directors reach them.
    pub rips: Vec<Ipv4Addr>,
    /// Addresses of the directors on the client's segment.
    pub dips: Vec<Ipv4Addr>,
    /// The virtual addresses clients use.
    pub vips: Vec<Ipv4Addr>,
    pub switches: Vec<Switch>,
    /// Routers between the segments (LVS-TUN).
    pub routers: Vec<Host>,
}

fn on_segment(
    lab: &mut Lab,
    host: &Host,
    ifname: &str,
    sw: &Switch,
    cidr: &str,
    stub: bool,
) -> Result<()> {
    let port = lab.attach(host, ifname, sw)?;
    lab.addr(host, ifname, cidr)?;
    if stub {
        lab.xdp_pass_stub(&sw.netns, &port)?;
    }
    Ok(())
}

/// DR real servers answer for the VIPs they hold on `lo` but never ARP for them.
fn dr_real_server(lab: &Lab, host: &Host, vips: &[Ipv4Addr]) -> Result<()> {
    for v in vips {
        lab.addr(host, "lo", &format!("{v}/32"))?;
    }
    for scope in ["all", "lo"] {
        lab.sysctl(host, &format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
        lab.sysctl(host, &format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
    }
    Ok(())
}

/// Builds a reference deployment in a new lab labelled `label`.
pub fn build(deployment: Deployment, label: &str, agent: Option<Agent>) -> Result<Reference> {
    let mut lab = Lab::new(label)?;
    if let Some(a) = agent {
        lab = lab.with_agent(a);
    }
    let client = lab.host("client")?;
    let outside = lab.switch("out")?;
    on_segment(
        &mut lab,
        &client,
        "eth0",
        &outside,
        &format!("{CLIENT}/24"),
        false,
    )?;
    let mut r = Reference {
        deployment,
        client,
        directors: Vec::new(),
        real_servers: Vec::new(),
        rips: Vec::new(),
        dips: Vec::new(),
        vips: Vec::new(),
        switches: vec![outside.clone()],
        routers: Vec::new(),
        lab,
    };
    match deployment {
        Deployment::LvsNat => {
            let inside = r.lab.switch("in")?;
            let d = r.lab.host("director")?;
            on_segment(
                &mut r.lab,
                &d,
                "eth0",
                &outside,
                &format!("{DIP1}/24"),
                true,
            )?;
            on_segment(
                &mut r.lab,
                &d,
                "eth1",
                &inside,
                &format!("{NAT_DIP}/24"),
                true,
            )?;
            r.lab.sysctl(&d, "net.ipv4.ip_forward", "1")?;
            for (i, rip) in NAT_RIPS.iter().enumerate() {
                let rs = r.lab.host(&format!("rs{}", i + 1))?;
                on_segment(
                    &mut r.lab,
                    &rs,
                    "eth0",
                    &inside,
                    &format!("{rip}/24"),
                    false,
                )?;
                r.lab.ip(
                    &rs,
                    &["route", "add", "default", "via", &NAT_DIP.to_string()],
                )?;
                r.real_servers.push(rs);
            }
            r.directors.push(d);
            r.rips = NAT_RIPS.to_vec();
            r.dips = vec![NAT_DIP];
            r.vips = vec![DIP1];
            r.switches.push(inside);
        }
        Deployment::LvsDr => {
            let d = r.lab.host("director")?;
            on_segment(
                &mut r.lab,
                &d,
                "eth0",
                &outside,
                &format!("{DIP1}/24"),
                true,
            )?;
            r.lab.addr(&d, "eth0", &format!("{VIP1}/32"))?;
            for (i, rip) in RIPS.iter().enumerate() {
                let rs = r.lab.host(&format!("rs{}", i + 1))?;
                on_segment(
                    &mut r.lab,
                    &rs,
                    "eth0",
                    &outside,
                    &format!("{rip}/24"),
                    false,
                )?;
                dr_real_server(&r.lab, &rs, &[VIP1])?;
                r.real_servers.push(rs);
            }
            r.directors.push(d);
            r.rips = RIPS.to_vec();
            r.dips = vec![DIP1];
            r.vips = vec![VIP1];
        }
        Deployment::LvsTun => {
            let inside = r.lab.switch("in")?;
            let d = r.lab.host("director")?;
            on_segment(
                &mut r.lab,
                &d,
                "eth0",
                &outside,
                &format!("{DIP1}/24"),
                true,
            )?;
            r.lab.addr(&d, "eth0", &format!("{VIP1}/32"))?;
            r.lab.sysctl(&d, "net.ipv4.ip_forward", "1")?;
            let router = r.lab.host("router")?;
            on_segment(
                &mut r.lab,
                &router,
                "eth0",
                &outside,
                &format!("{ROUTER_OUT}/24"),
                false,
            )?;
            on_segment(
                &mut r.lab,
                &router,
                "eth1",
                &inside,
                &format!("{ROUTER_IN}/24"),
                false,
            )?;
            r.lab.sysctl(&router, "net.ipv4.ip_forward", "1")?;
            let inside_net = "10.2.20.0/24";
            r.lab.route(&d, inside_net, &ROUTER_OUT.to_string())?;
            r.lab
                .route(&r.client.clone(), inside_net, &ROUTER_OUT.to_string())?;
            for (i, rip) in TUN_RIPS.iter().enumerate() {
                let rs = r.lab.host(&format!("rs{}", i + 1))?;
                on_segment(
                    &mut r.lab,
                    &rs,
                    "eth0",
                    &inside,
                    &format!("{rip}/24"),
                    false,
                )?;
                r.lab.ip(
                    &rs,
                    &["route", "add", "default", "via", &ROUTER_IN.to_string()],
                )?;
                dr_real_server(&r.lab, &rs, &[VIP1])?;
                r.real_servers.push(rs);
            }
            r.directors.push(d);
            r.routers.push(router);
            r.rips = TUN_RIPS.to_vec();
            r.dips = vec![DIP1];
            r.vips = vec![VIP1];
            r.switches.push(inside);
        }
        Deployment::KeepalivedHa | Deployment::NginxHa => {
            let lvs = deployment == Deployment::KeepalivedHa;
            for (i, dip) in [DIP1, DIP2].iter().enumerate() {
                let name = if lvs { "director" } else { "proxy" };
                let d = r.lab.host(&format!("{name}{}", i + 1))?;
                on_segment(&mut r.lab, &d, "eth0", &outside, &format!("{dip}/24"), lvs)?;
                r.directors.push(d);
            }
            for (i, rip) in RIPS.iter().enumerate() {
                let rs = r.lab.host(&format!("rs{}", i + 1))?;
                on_segment(
                    &mut r.lab,
                    &rs,
                    "eth0",
                    &outside,
                    &format!("{rip}/24"),
                    false,
                )?;
                if lvs {
                    dr_real_server(&r.lab, &rs, &[VIP1, VIP2])?;
                }
                r.real_servers.push(rs);
            }
            r.rips = RIPS.to_vec();
            r.dips = vec![DIP1, DIP2];
            r.vips = vec![VIP1, VIP2];
        }
    }
    Ok(r)
}

/// IPv6 beside a deployment's IPv4 (LVS-NAT and LVS-DR): the VIP, the real servers'
/// addresses, and where each real server listens for it.
#[derive(Debug, Clone)]
pub struct Ipv6 {
    pub vip: String,
    pub rips: Vec<String>,
    /// The addresses each real server listens on for IPv6 (its own; for DR also the VIP
    /// it holds on `lo`), beside the IPv4 wildcard it may already serve on.
    pub listen: Vec<Vec<String>>,
}

impl Ipv6 {
    /// A plan whose real servers hold the VIP themselves (DR, TUN): each listens on its
    /// own address and on the VIP.
    fn holding_vip(vip: &str, rips: Vec<String>) -> Ipv6 {
        Ipv6 {
            vip: vip.into(),
            listen: rips
                .iter()
                .map(|r| vec![r.clone(), vip.to_string()])
                .collect(),
            rips,
        }
    }
}

impl Reference {
    /// Adds IPv6 to an LVS-NAT, LVS-DR or LVS-TUN deployment: 2001:db8:10::/64 on the
    /// client's segment, the NAT real servers' 2001:db8:184::/64 behind the director
    /// (forwarding, and their default route through it), for DR the VIP 2001:db8:10::88 on
    /// the director and on the real servers' `lo`, for TUN the same VIP and the real
    /// servers' 2001:db8:20::/64 behind the router. Added without duplicate address detection,
    /// and returns once no address of those hosts is tentative (a host sends no neighbour
    /// solicitation before, so a first connection would wait for it).
    pub fn add_ipv6(&self) -> Result<Ipv6> {
        let nat = match self.deployment {
            Deployment::LvsNat => true,
            Deployment::LvsDr => false,
            Deployment::LvsTun => return self.add_ipv6_tun(),
            other => {
                return Err(crate::LabError::NotReady(format!(
                    "no IPv6 plan for {}",
                    other.name()
                )))
            }
        };
        let (client, director) = (&self.client, &self.directors[0]);
        let mut addrs: Vec<(&Host, &str, String)> = vec![
            (client, "eth0", "2001:db8:10::2/64".into()),
            (director, "eth0", "2001:db8:10::65/64".into()),
        ];
        let plan = if nat {
            addrs.push((director, "eth1", "2001:db8:184::128/64".into()));
            let rips: Vec<String> = (0..self.real_servers.len())
                .map(|i| format!("2001:db8:184::{}", 129 + i))
                .collect();
            for (rs, rip) in self.real_servers.iter().zip(&rips) {
                addrs.push((rs, "eth0", format!("{rip}/64")));
            }
            Ipv6 {
                vip: "2001:db8:10::65".into(),
                listen: rips.iter().map(|r| vec![r.clone()]).collect(),
                rips,
            }
        } else {
            let vip = "2001:db8:10::88";
            addrs.push((director, "eth0", format!("{vip}/128")));
            let rips: Vec<String> = (0..self.real_servers.len())
                .map(|i| format!("2001:db8:10::{}", 66 + i))
                .collect();
            for (rs, rip) in self.real_servers.iter().zip(&rips) {
                addrs.push((rs, "eth0", format!("{rip}/64")));
                addrs.push((rs, "lo", format!("{vip}/128")));
            }
            Ipv6::holding_vip(vip, rips)
        };
        for (host, ifname, cidr) in &addrs {
            self.lab
                .ip(host, &["-6", "addr", "add", cidr, "dev", ifname, "nodad"])?;
        }
        self.settle(addrs.iter().map(|(h, _, _)| *h))?;
        if nat {
            self.lab
                .sysctl(director, "net.ipv6.conf.all.forwarding", "1")?;
            for rs in &self.real_servers {
                self.lab.ip(
                    rs,
                    &["-6", "route", "add", "default", "via", "2001:db8:184::128"],
                )?;
            }
        }
        Ok(plan)
    }

    /// LVS-TUN's IPv6: the router between 2001:db8:10::/64 (::fe) and the real servers'
    /// 2001:db8:20::/64 (::fe, the servers ::11 and ::12 with the VIP on `lo` and their
    /// default route through it), the director (forwarding, which its FIB lookups need)
    /// and the client routed to the servers' network through it.
    fn add_ipv6_tun(&self) -> Result<Ipv6> {
        let (client, director) = (&self.client, &self.directors[0]);
        let router = &self.routers[0];
        let vip = "2001:db8:10::88";
        let rips: Vec<String> = (0..self.real_servers.len())
            .map(|i| format!("2001:db8:20::{}", 11 + i))
            .collect();
        let mut addrs: Vec<(&Host, &str, String)> = vec![
            (client, "eth0", "2001:db8:10::2/64".into()),
            (director, "eth0", "2001:db8:10::65/64".into()),
            (router, "eth0", "2001:db8:10::fe/64".into()),
            (router, "eth1", "2001:db8:20::fe/64".into()),
        ];
        for (rs, rip) in self.real_servers.iter().zip(&rips) {
            addrs.push((rs, "eth0", format!("{rip}/64")));
            addrs.push((rs, "lo", format!("{vip}/128")));
        }
        for (host, ifname, cidr) in &addrs {
            self.lab
                .ip(host, &["-6", "addr", "add", cidr, "dev", ifname, "nodad"])?;
        }
        // The VIP deprecated on the director, so that the route to the servers does not
        // choose it as the source (IPv6 source selection avoids deprecated addresses):
        // the tunnels' outer source is what the route chooses, as IPVS's, and a real
        // server drops a tunnel packet from an address it holds itself.
        self.lab.ip(
            director,
            &[
                "-6",
                "addr",
                "add",
                &format!("{vip}/128"),
                "dev",
                "eth0",
                "nodad",
                "preferred_lft",
                "0",
            ],
        )?;
        self.settle(addrs.iter().map(|(h, _, _)| *h))?;
        for host in [router, director] {
            self.lab.sysctl(host, "net.ipv6.conf.all.forwarding", "1")?;
        }
        for host in [client, director] {
            self.lab.ip(
                host,
                &[
                    "-6",
                    "route",
                    "add",
                    "2001:db8:20::/64",
                    "via",
                    "2001:db8:10::fe",
                ],
            )?;
        }
        for rs in &self.real_servers {
            self.lab.ip(
                rs,
                &["-6", "route", "add", "default", "via", "2001:db8:20::fe"],
            )?;
        }
        Ok(Ipv6::holding_vip(vip, rips))
    }

    /// Waits until no IPv6 address of `hosts` is tentative.
    fn settle<'a>(&self, hosts: impl Iterator<Item = &'a Host>) -> Result<()> {
        for host in hosts {
            let settled = crate::wait_for(std::time::Duration::from_secs(5), || {
                self.lab
                    .ip(host, &["-6", "addr", "show", "tentative"])
                    .is_ok_and(|o| o.stdout.is_empty())
            });
            if settled.is_none() {
                return Err(crate::LabError::NotReady(format!(
                    "{}: IPv6 addresses still tentative",
                    host.name
                )));
            }
        }
        Ok(())
    }

    /// A one-screen description of the deployment: hosts, addresses, roles.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} (namespaces {}-*)\n",
            self.deployment.title(),
            self.lab.prefix()
        );
        s.push_str(&format!("  client      {}\n", CLIENT));
        for (i, d) in self.directors.iter().enumerate() {
            let addr = match self.deployment {
                Deployment::LvsNat => format!("{DIP1} (VIP, outside), {NAT_DIP} (DIP, inside)"),
                Deployment::LvsDr | Deployment::LvsTun => format!("{DIP1} (DIP), {VIP1} (VIP)"),
                _ => format!("{} (DIP{})", self.dips[i], i + 1),
            };
            s.push_str(&format!("  {:<11} {addr}\n", d.name));
        }
        for r in &self.routers {
            s.push_str(&format!(
                "  {:<11} {ROUTER_OUT} (outside), {ROUTER_IN} (inside)\n",
                r.name
            ));
        }
        for (i, rs) in self.real_servers.iter().enumerate() {
            s.push_str(&format!(
                "  {:<11} {} (RIP{})\n",
                rs.name,
                self.rips[i],
                i + 1
            ));
        }
        if matches!(
            self.deployment,
            Deployment::KeepalivedHa | Deployment::NginxHa
        ) {
            s.push_str(&format!("  VIPs        {VIP1} and {VIP2}, moved by VRRP\n"));
        }
        s
    }
}

impl Reference {
    /// LVS-TUN: attaches `fulcrum decap` (the binary `fulcrum`) to each real server's eth0,
    /// taking ipip, gre and GUE on [`TUN_GUE_PORT`], pinned under `pins` (a directory on a
    /// bpffs, such as a [`crate::Bpffs`]: under `ip netns exec` /sys is private to the
    /// command, so a pin under the default directory would go with it).
    pub fn decapsulate(&self, fulcrum: &std::path::Path, pins: &std::path::Path) -> Result<()> {
        for rs in &self.real_servers {
            let port = TUN_GUE_PORT.to_string();
            self.lab.exec(
                &rs.netns,
                [
                    fulcrum.as_os_str(),
                    "decap".as_ref(),
                    "eth0".as_ref(),
                    "--gue-port".as_ref(),
                    port.as_ref(),
                    "--bpf-dir".as_ref(),
                    pins.join(&rs.name).as_os_str(),
                ],
            )?;
        }
        Ok(())
    }
}
