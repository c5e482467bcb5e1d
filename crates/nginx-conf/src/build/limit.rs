//! limit_req and limit_conn: their zones (http level) and the limits that name them,
//! checked as nginx -t checks them.

use super::*;

/// nginx's smallest shared zone: eight pages.
const MIN_ZONE: u64 = 8 * 4096;

impl Builder<'_> {
    /// limit_req_zone KEY zone=NAME:SIZE rate=RATE [sync], or limit_conn_zone KEY
    /// zone=NAME:SIZE.
    pub(super) fn limit_zone(&mut self, d: &Directive, zones: &mut Vec<LimitZone>) {
        let is_req = d.name.text == "limit_req_zone";
        let key = Template(d.args[0].text.clone());
        let (mut name, mut size, mut rate) = (None, 0, None);
        for a in &d.args[1..] {
            if let Some(z) = a.text.strip_prefix("zone=") {
                let parsed = z
                    .rsplit_once(':')
                    .and_then(|(n, s)| Some((n, parse_size(s)?)))
                    .filter(|(n, _)| !n.is_empty());
                let Some((n, s)) = parsed else {
                    self.error(a.span, format!("invalid zone size \"{}\"", a.text));
                    return;
                };
                if s < MIN_ZONE {
                    self.error(a.span, format!("zone \"{}\" is too small", a.text));
                    return;
                }
                name = Some(n.to_string());
                size = s;
            } else if let (true, Some(r)) = (is_req, a.text.strip_prefix("rate=")) {
                let per = if let Some(n) = r.strip_suffix("r/s") {
                    n.parse::<u64>().ok().map(|n| n * 1000)
                } else if let Some(n) = r.strip_suffix("r/m") {
                    n.parse::<u64>().ok().map(|n| n * 1000 / 60)
                } else {
                    None
                };
                match per.filter(|p| *p > 0) {
                    Some(p) => rate = Some(p),
                    None => {
                        self.error(a.span, format!("invalid rate \"{}\"", a.text));
                        return;
                    }
                }
            } else if is_req && a.text == "sync" {
                // nginx Plus's zone synchronisation: one node here, nothing to do.
            } else {
                self.error(a.span, format!("invalid parameter \"{}\"", a.text));
                return;
            }
        }
        let Some(name) = name else {
            self.error(
                d.name.span,
                format!("\"{}\" must have \"zone\" parameter", d.name.text),
            );
            return;
        };
        if is_req && rate.is_none() {
            self.error(
                d.name.span,
                "invalid number of arguments in \"limit_req_zone\" directive",
            );
            return;
        }
        if let Some(z) = zones.iter().find(|z| z.name == name) {
            let msg = if z.rate.is_some() != is_req {
                format!("the shared memory zone \"{name}\" is already declared for a different use")
            } else if z.size != size {
                format!(
                    "the size {size} of shared memory zone \"{name}\" conflicts with already declared size {}",
                    z.size
                )
            } else {
                format!(
                    "{} \"{name}\" is already bound to key \"{}\"",
                    d.name.text,
                    z.key.as_str()
                )
            };
            self.error(d.name.span, msg);
            return;
        }
        zones.push(LimitZone {
            name,
            key,
            size,
            rate,
        });
    }

    /// limit_req, limit_conn and their settings. True when `d` was one.
    pub(super) fn limit_setting(&mut self, d: &Directive, st: &mut Settings) -> bool {
        match d.name.text.as_str() {
            "limit_req" => {
                let (mut zone, mut burst, mut delay) = (None, 0, LimitDelay::All);
                for a in &d.args {
                    if let Some(z) = a.text.strip_prefix("zone=") {
                        zone = Some(z.to_string());
                    } else if let Some(b) = a.text.strip_prefix("burst=") {
                        match b.parse::<u32>() {
                            Ok(n) if n > 0 => burst = n,
                            _ => {
                                self.error(a.span, format!("invalid burst value \"{}\"", a.text));
                                return true;
                            }
                        }
                    } else if let Some(v) = a.text.strip_prefix("delay=") {
                        match v.parse::<u32>() {
                            Ok(n) if n > 0 => delay = LimitDelay::After(n),
                            _ => {
                                self.error(a.span, format!("invalid delay value \"{}\"", a.text));
                                return true;
                            }
                        }
                    } else if a.text == "nodelay" {
                        delay = LimitDelay::Never;
                    } else {
                        self.error(a.span, format!("invalid parameter \"{}\"", a.text));
                        return true;
                    }
                }
                let Some(zone) = zone else {
                    self.error(d.name.span, "\"limit_req\" must have \"zone\" parameter");
                    return true;
                };
                let list = st.limit_req.get_or_insert_with(Vec::new);
                if list.iter().any(|l| l.zone == zone) {
                    self.error(d.name.span, "\"limit_req\" directive is duplicate");
                    return true;
                }
                self.limit_zone_refs
                    .push((zone.clone(), true, d.args[0].span));
                list.push(LimitReq { zone, burst, delay });
            }
            "limit_conn" => {
                let zone = d.args[0].text.clone();
                let n = match d.args[1].text.parse::<u32>() {
                    Ok(n) if n > 0 && n <= 65535 => n,
                    _ => {
                        self.error(
                            d.args[1].span,
                            format!("invalid number of connections \"{}\"", d.args[1].text),
                        );
                        return true;
                    }
                };
                let list = st.limit_conn.get_or_insert_with(Vec::new);
                if list.iter().any(|(z, _)| *z == zone) {
                    self.error(d.name.span, "\"limit_conn\" directive is duplicate");
                    return true;
                }
                self.limit_zone_refs
                    .push((zone.clone(), false, d.args[0].span));
                list.push((zone, n));
            }
            "limit_req_status" | "limit_conn_status" => {
                let slot = if d.name.text == "limit_req_status" {
                    &mut st.limit_req_status
                } else {
                    &mut st.limit_conn_status
                };
                if self.dup(slot, d) {
                    return true;
                }
                match d.args[0].text.parse::<u16>() {
                    Ok(n) if (400..=599).contains(&n) => *slot = Some(n),
                    Ok(_) => self.error(d.args[0].span, "value must be between 400 and 599"),
                    Err(_) => self.error(
                        d.args[0].span,
                        format!("\"{}\" directive invalid number", d.name.text),
                    ),
                }
            }
            "limit_req_log_level" | "limit_conn_log_level" => {
                let slot = if d.name.text == "limit_req_log_level" {
                    &mut st.limit_req_log_level
                } else {
                    &mut st.limit_conn_log_level
                };
                if self.dup(slot, d) {
                    return true;
                }
                let v = d.args[0].text.as_str();
                if matches!(v, "info" | "notice" | "warn" | "error") {
                    *slot = Some(v.to_string());
                } else {
                    self.error(d.args[0].span, format!("invalid value \"{v}\""));
                }
            }
            "limit_req_dry_run" | "limit_conn_dry_run" => {
                let slot = if d.name.text == "limit_req_dry_run" {
                    &mut st.limit_req_dry_run
                } else {
                    &mut st.limit_conn_dry_run
                };
                if self.dup(slot, d) {
                    return true;
                }
                *slot = self.flag(d);
            }
            _ => return false,
        }
        true
    }

    /// Every zone a limit names must be declared by its kind of zone directive.
    pub(super) fn check_limit_zones(&mut self, zones: &[LimitZone]) {
        let refs = std::mem::take(&mut self.limit_zone_refs);
        for (name, is_req, span) in refs {
            let ok = zones
                .iter()
                .any(|z| z.name == name && z.rate.is_some() == is_req);
            if !ok {
                self.error(span, format!("zero size shared memory zone \"{name}\""));
            }
        }
    }
}
