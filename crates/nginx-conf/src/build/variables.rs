//! split_clients and geo: blocks that define a variable, like map, checked as nginx -t
//! checks them.

use super::*;

impl Builder<'_> {
    /// `split_clients STRING $VARIABLE { ... }`.
    pub(super) fn split_clients(&mut self, d: &Directive) -> Option<SplitClients> {
        let Some(var) = d.args[1].text.strip_prefix('$') else {
            self.error(
                d.args[1].span,
                format!("invalid variable name \"{}\"", d.args[1].text),
            );
            return None;
        };
        let mut parts = Vec::new();
        let mut sum = 0u32;
        for e in d.block.as_deref().unwrap_or_default() {
            if e.block.is_some() {
                self.error(e.name.span, "unexpected \"{\"");
                return None;
            }
            if e.args.len() != 1 {
                self.error(
                    e.name.span,
                    "invalid number of the split_clients parameters",
                );
                return None;
            }
            let percent = if e.name.text == "*" {
                0
            } else {
                match e.name.text.strip_suffix('%').and_then(hundredths) {
                    Some(n) if n > 0 => n,
                    _ => {
                        self.error(
                            e.name.span,
                            format!("invalid percent value \"{}\"", e.name.text),
                        );
                        return None;
                    }
                }
            };
            sum = if percent == 0 { 10_000 } else { sum + percent };
            if sum > 10_000 {
                self.error(e.name.span, "percent total is greater than 100%");
                return None;
            }
            parts.push((percent, e.args[0].text.clone()));
        }
        Some(SplitClients {
            source: Template(d.args[0].text.clone()),
            variable: var.to_string(),
            parts,
        })
    }

    /// `geo [$ADDRESS] $VARIABLE { ... }`.
    pub(super) fn geo(&mut self, d: &Directive) -> Option<Geo> {
        let var_word = d.args.last()?;
        let Some(var) = var_word.text.strip_prefix('$') else {
            self.error(
                var_word.span,
                format!("invalid variable name \"{}\"", var_word.text),
            );
            return None;
        };
        let mut geo = Geo {
            variable: var.to_string(),
            ..Geo::default()
        };
        if d.args.len() == 2 {
            let a = &d.args[0];
            let Some(name) = a.text.strip_prefix('$') else {
                self.error(a.span, format!("invalid variable name \"{}\"", a.text));
                return None;
            };
            geo.address = Some(name.to_string());
        }
        for e in d.block.as_deref().unwrap_or_default() {
            if e.block.is_some() {
                self.error(e.name.span, "unexpected \"{\"");
                return None;
            }
            let n = e.args.len();
            match (e.name.text.as_str(), n) {
                ("ranges", 0) => geo.ranges = true,
                ("proxy_recursive", 0) => geo.proxy_recursive = true,
                ("default", 1) => geo.default = Some(e.args[0].text.clone()),
                ("proxy", 1) => {
                    let (addr, len) = self.net(&e.args[0], "network")?;
                    geo.proxies.push(Source::Net(addr, len));
                }
                ("delete", 1) => {
                    let key = self.geo_key(&e.args[0], geo.ranges)?;
                    let before = geo.entries.len();
                    geo.entries.retain(|(k, _)| *k != key);
                    if geo.entries.len() == before {
                        self.diags.push(Diagnostic::warning(
                            e.args[0].span,
                            format!("no network \"{}\" to delete", e.args[0].text),
                        ));
                    }
                }
                (_, 1) => {
                    let key = self.geo_key(&e.name, geo.ranges)?;
                    let value = e.args[0].text.clone();
                    if let Some(old) = geo.entries.iter_mut().find(|(k, _)| *k == key) {
                        self.diags.push(Diagnostic::warning(
                            e.name.span,
                            format!(
                                "duplicate network \"{}\", value: \"{value}\", old value: \"{}\"",
                                e.name.text, old.1
                            ),
                        ));
                        old.1 = value;
                    } else {
                        geo.entries.push((key, value));
                    }
                }
                _ => {
                    self.error(e.name.span, "invalid number of the geo parameters");
                    return None;
                }
            }
        }
        Some(geo)
    }

    /// A geo entry's key: a network, or with `ranges` an IPv4 range `A-B`.
    fn geo_key(&mut self, w: &Word, ranges: bool) -> Option<GeoKey> {
        if !ranges {
            return self
                .net(w, "network")
                .map(|(addr, len)| GeoKey::Net(addr, len));
        }
        let range = w.text.split_once('-').and_then(|(a, b)| {
            let (a, b) = (
                a.parse::<std::net::Ipv4Addr>().ok()?,
                b.parse::<std::net::Ipv4Addr>().ok()?,
            );
            (a <= b).then_some(GeoKey::Range(a, b))
        });
        if range.is_none() {
            self.error(w.span, format!("invalid range \"{}\"", w.text));
        }
        range
    }
}

/// ngx_atofp(text, 2): a decimal with at most two places, in hundredths.
fn hundredths(text: &str) -> Option<u32> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 2 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int: u32 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u32 = format!("{frac:0<2}").parse().ok()?;
    int.checked_mul(100)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percents_in_hundredths() {
        use super::hundredths;
        assert_eq!(hundredths("50"), Some(5000));
        assert_eq!(hundredths("0.5"), Some(50));
        assert_eq!(hundredths("12.34"), Some(1234));
        assert_eq!(hundredths(".5"), Some(50));
        assert_eq!(hundredths("0.555"), None);
        assert_eq!(hundredths("x"), None);
        assert_eq!(hundredths(""), None);
    }
}
