//! upstream blocks: servers, balancing methods and keepalive.

use super::*;

impl Builder<'_> {
    pub(super) fn upstream(&mut self, d: &Directive) -> Option<Upstream> {
        let mut u = Upstream {
            name: d.args[0].text.clone(),
            servers: Vec::new(),
            balance: Balance::RoundRobin,
            keepalive: None,
            keepalive_requests: None,
            keepalive_timeout: None,
            zone: None,
        };
        let mut balance_span: Option<Span> = None;
        let mut backup_span: Option<Span> = None;
        let mut bad_server = false;
        for e in d.block.as_deref().unwrap_or_default() {
            if !self.check(e, Ctx::Upstream) {
                continue;
            }
            let method =
                |b: &mut Builder<'_>, bal: Balance, u: &mut Upstream, span: &mut Option<Span>| {
                    if span.is_some() {
                        b.error(e.name.span, "load balancing method redefined");
                    }
                    *span = Some(e.name.span);
                    u.balance = bal;
                };
            match e.name.text.as_str() {
                "server" => match self.upstream_server(e) {
                    Some(s) => {
                        if s.backup && backup_span.is_none() {
                            backup_span = Some(e.name.span);
                        }
                        u.servers.push(s);
                    }
                    None => bad_server = true,
                },
                "least_conn" => method(self, Balance::LeastConn, &mut u, &mut balance_span),
                "ip_hash" => method(self, Balance::IpHash, &mut u, &mut balance_span),
                "hash" => {
                    let consistent = match e.args.get(1) {
                        None => false,
                        Some(w) if w.text == "consistent" => true,
                        Some(w) => {
                            self.error(w.span, format!("invalid parameter \"{}\"", w.text));
                            false
                        }
                    };
                    let bal = Balance::Hash {
                        key: Template(e.args[0].text.clone()),
                        consistent,
                    };
                    method(self, bal, &mut u, &mut balance_span);
                }
                "random" => {
                    let words: Vec<&str> = e.args.iter().map(|w| w.text.as_str()).collect();
                    let bal = match words.as_slice() {
                        [] => Some(Balance::Random {
                            two: false,
                            least_conn: false,
                        }),
                        ["two"] => Some(Balance::Random {
                            two: true,
                            least_conn: false,
                        }),
                        ["two", "least_conn"] => Some(Balance::Random {
                            two: true,
                            least_conn: true,
                        }),
                        _ => {
                            let bad = e
                                .args
                                .iter()
                                .find(|w| w.text != "two")
                                .unwrap_or(&e.args[0]);
                            self.error(bad.span, format!("invalid parameter \"{}\"", bad.text));
                            None
                        }
                    };
                    if let Some(bal) = bal {
                        method(self, bal, &mut u, &mut balance_span);
                    }
                }
                "keepalive" => match e.args[0].text.parse::<u32>() {
                    Ok(n) if n > 0 => u.keepalive = Some(n),
                    _ => self.error(
                        e.args[0].span,
                        format!(
                            "invalid value \"{}\" in \"keepalive\" directive",
                            e.args[0].text
                        ),
                    ),
                },
                "keepalive_requests" => u.keepalive_requests = self.number(&e.args[0]),
                "keepalive_timeout" => u.keepalive_timeout = self.time(e, &e.args[0]),
                "zone" => {
                    // ngx_http_upstream_zone: a size, when given, of at least 8 pages.
                    let size = match e.args.get(1) {
                        None => Some(None),
                        Some(w) => match parse_size(&w.text) {
                            None => {
                                self.error(w.span, format!("invalid zone size \"{}\"", w.text));
                                None
                            }
                            Some(n) if n < 8 * 4096 => {
                                self.error(
                                    w.span,
                                    format!("zone \"{}\" is too small", e.args[0].text),
                                );
                                None
                            }
                            Some(n) => Some(Some(n)),
                        },
                    };
                    if let Some(size) = size {
                        u.zone = Some((e.args[0].text.clone(), size));
                        self.upstream_spans.insert(u.name.clone(), e.args[0].span);
                    }
                }
                _ => {}
            }
        }
        if let (Some(span), true) = (
            backup_span,
            matches!(
                u.balance,
                Balance::IpHash | Balance::Hash { .. } | Balance::Random { .. }
            ),
        ) {
            self.error(
                span,
                "balancing method does not support parameter \"backup\"",
            );
        }
        // (A server already refused says enough: nginx stops at it.)
        if u.servers.is_empty() && !bad_server {
            self.error(
                d.name.span,
                format!("no servers are inside upstream \"{}\"", u.name),
            );
            return None;
        }
        Some(u)
    }

    pub(super) fn upstream_server(&mut self, e: &Directive) -> Option<UpstreamServer> {
        let addr = &e.args[0];
        // `unix:PATH`: the whole text is the host, with no port.
        let unix = super::strip_unix(&addr.text);
        if let Some(e) = unix.and_then(super::unix_path_error) {
            self.error(addr.span, format!("{e} in upstream \"{}\"", addr.text));
            return None;
        }
        let split = match unix {
            Some(_) => Some((addr.text.clone(), None)),
            None => split_host_port(&addr.text),
        };
        let (host, port) = match split {
            Some(hp) => hp,
            None => {
                self.error(
                    addr.span,
                    format!("invalid host in upstream \"{}\"", addr.text),
                );
                return None;
            }
        };
        let mut s = UpstreamServer::new(&host, port.unwrap_or(80));
        s.port_written = port.is_some();
        for p in &e.args[1..] {
            let (key, value) = p.text.split_once('=').unwrap_or((p.text.as_str(), ""));
            let bad =
                |b: &mut Builder<'_>| b.error(p.span, format!("invalid parameter \"{}\"", p.text));
            match key {
                "weight" => match value.parse::<u32>() {
                    Ok(w) if w > 0 => s.weight = w,
                    _ => bad(self),
                },
                "max_fails" => match value.parse::<u32>() {
                    Ok(v) => s.max_fails = v,
                    _ => bad(self),
                },
                "max_conns" => match value.parse::<u32>() {
                    Ok(v) => s.max_conns = v,
                    _ => bad(self),
                },
                "fail_timeout" => match parse_time(value).filter(|_| !value.contains("ms")) {
                    Some(t) => s.fail_timeout = t,
                    None => bad(self),
                },
                "backup" if value.is_empty() && !p.text.contains('=') => s.backup = true,
                "down" if value.is_empty() && !p.text.contains('=') => s.down = true,
                _ => bad(self),
            }
        }
        Some(s)
    }
}
