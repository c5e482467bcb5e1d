//! The realip module (the client's address from a trusted balancer's header) and the
//! access module (allow and deny in order), as nginx runs them: realip once the server
//! is known and again for the location if the server's did not apply, access after the
//! rewrite phases.

use std::net::{IpAddr, SocketAddr};

use fulcrum_nginx_conf::model::{AccessRule, Source};

use crate::request::Req;
use crate::site::RealIp;

/// Replaces the request's client address as realip says, unless it was replaced already
/// (`ngx_http_realip_handler`). Returns whether it changed.
pub(crate) fn realip(r: &mut Req, conf: Option<&RealIp>) -> bool {
    let Some(conf) = conf else { return false };
    if r.realip.is_some() {
        return false;
    }
    // The PROXY protocol header's client, with its port.
    if conf.header.eq_ignore_ascii_case("proxy_protocol") {
        let Some(p) = r.conn.proxy else {
            return false;
        };
        let value = p.src.ip().to_string();
        let Some(addr) = forwarded(r.conn.remote.ip(), &value, &conf.from, conf.recursive) else {
            return false;
        };
        r.realip = Some(r.conn.remote);
        r.conn.remote = std::net::SocketAddr::new(addr.ip(), p.src.port());
        return true;
    }
    let value = if conf.header.eq_ignore_ascii_case("x-forwarded-for") {
        // Every X-Forwarded-For line, as one list.
        let all: Vec<String> = r
            .headers
            .get_all("x-forwarded-for")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if all.is_empty() {
            return false;
        }
        all.join(", ")
    } else {
        match r.headers.get(&conf.header) {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => return false,
        }
    };
    let Some(addr) = forwarded(r.conn.remote.ip(), &value, &conf.from, conf.recursive) else {
        return false;
    };
    r.realip = Some(r.conn.remote);
    r.conn.remote = addr;
    true
}

/// nginx's ngx_http_get_forwarded_addr: while the address in hand is trusted, take the
/// last address of the list (leftwards again if `recursive`). None when the connection's
/// address is not trusted or the list names no address.
pub(crate) fn forwarded(
    peer: IpAddr,
    list: &str,
    from: &[Source],
    recursive: bool,
) -> Option<SocketAddr> {
    let mut current = SocketAddr::new(peer, 0);
    let mut found = None;
    let mut rest = list;
    loop {
        if !from.iter().any(|s| s.contains(current.ip())) {
            break;
        }
        let trimmed = rest.trim_end_matches([' ', ',']);
        let start = trimmed.rfind([' ', ',']).map_or(0, |i| i + 1);
        let Some(addr) = parse_addr_port(&trimmed[start..]) else {
            break;
        };
        current = addr;
        found = Some(addr);
        rest = &trimmed[..start.saturating_sub(1)];
        if !recursive || start == 0 {
            break;
        }
    }
    found
}

/// An address with an optional port (`192.0.2.1`, `192.0.2.1:5000`, `[2001:db8::1]:80`,
/// `2001:db8::1`); the port is 0 when absent.
fn parse_addr_port(s: &str) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    s.parse::<SocketAddr>().ok()
}

/// The access module's verdict: the first rule that matches allows (true) or denies;
/// None when none matches (nginx's handler declines, which satisfy any tells apart).
pub(crate) fn verdict(rules: &[AccessRule], client: IpAddr) -> Option<bool> {
    rules
        .iter()
        .find(|rule| rule.source.contains(client))
        .map(|rule| rule.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Source {
        let (a, l) = s.split_once('/').unwrap();
        Source::Net(a.parse().unwrap(), l.parse().unwrap())
    }

    #[test]
    fn forwarded_takes_the_last_untrusted_address() {
        let from = [net("10.0.0.0/8")];
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let list = "203.0.113.9, 10.0.0.7";
        // Not recursive: the last address, trusted or not.
        assert_eq!(
            forwarded(peer, list, &from, false),
            Some("10.0.0.7:0".parse().unwrap())
        );
        // Recursive: past the trusted ones.
        assert_eq!(
            forwarded(peer, list, &from, true),
            Some("203.0.113.9:0".parse().unwrap())
        );
        // An untrusted peer is not believed.
        assert_eq!(
            forwarded("192.0.2.1".parse().unwrap(), list, &from, true),
            None
        );
        // All trusted: the leftmost.
        assert_eq!(
            forwarded(peer, "10.1.1.1,10.2.2.2", &from, true),
            Some("10.1.1.1:0".parse().unwrap())
        );
        assert_eq!(
            forwarded(peer, "192.0.2.5:4000", &from, false),
            Some("192.0.2.5:4000".parse().unwrap())
        );
        assert_eq!(forwarded(peer, "junk", &from, false), None);
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = [
            AccessRule {
                allow: false,
                source: net("10.0.0.5/32"),
            },
            AccessRule {
                allow: true,
                source: net("10.0.0.0/8"),
            },
            AccessRule {
                allow: false,
                source: Source::All,
            },
        ];
        assert_eq!(verdict(&rules, "10.0.0.5".parse().unwrap()), Some(false));
        assert_eq!(verdict(&rules, "10.9.0.5".parse().unwrap()), Some(true));
        assert_eq!(verdict(&rules, "192.0.2.1".parse().unwrap()), Some(false));
        assert_eq!(verdict(&[], "192.0.2.1".parse().unwrap()), None);
    }
}
