//! The connection table: IPVS's timeouts, the connections and persistence templates
//! as ipvsadm -Lnc lists them, and the sweep that expires them.

use super::*;

/// A connection as the control plane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub proto: u8,
    pub client: (Ipv4Addr, u16),
    pub vip: (Ipv4Addr, u16),
    pub rip: (Ipv4Addr, u16),
    pub state: &'static str,
    /// Time left before it expires.
    pub expires_in: Duration,
    pub service: u32,
    pub slot: u16,
}

pub(crate) fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

impl DataPlane {
    /// Connection timeouts in seconds by state (abi::STATE_NAMES order).
    pub fn set_timeouts(&mut self, seconds: &[u32; 12]) -> Result<(), Error> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut("timeouts")
                .ok_or(Error::Missing("timeouts map"))?,
        )?;
        for (i, t) in seconds.iter().enumerate() {
            map.set(i as u32, t, 0)?;
        }
        Ok(())
    }

    pub fn timeouts(&self) -> Result<[u32; 12], Error> {
        let map: Array<&MapData, u32> = Array::try_from(
            self.ebpf
                .map("timeouts")
                .ok_or(Error::Missing("timeouts map"))?,
        )?;
        let mut t = [0; 12];
        for (i, v) in t.iter_mut().enumerate() {
            *v = map.get(&(i as u32), 0)?;
        }
        Ok(t)
    }

    /// The tracked connections (one per flow), as ipvsadm -Lnc lists them.
    pub fn connections(&self) -> Result<Vec<Connection>, Error> {
        let now = self.now();
        let map: HashMap<&MapData, FlowKey, Conn> = HashMap::try_from(self.map("conns")?)?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let Ok((_, c)) = entry else { continue };
            if c.flags & CONN_F_REPLY != 0 || c.expires <= now {
                continue;
            }
            out.push(Connection {
                proto: c.proto,
                client: (addr(c.client), u16::from_be(c.cport)),
                vip: (addr(c.vip), u16::from_be(c.vport)),
                rip: (addr(c.rip), u16::from_be(c.rport)),
                state: STATE_NAMES.get(c.state as usize).copied().unwrap_or("?"),
                expires_in: Duration::from_nanos(c.expires - now),
                service: c.svc,
                slot: c.dest,
            });
        }
        Ok(out)
    }

    /// Expires the connections whose time is up (and orphaned reply entries), through the
    /// program's own `xdp_expire` so the per-server counts change atomically with the data
    /// path. Also drops expired persistence templates. Returns how many expired.
    pub fn sweep(&mut self) -> Result<usize, Error> {
        // Re-based if it can be; a sweep does not depend on it.
        let _ = self.set_clock();
        let now = self.now();
        let due: Vec<FlowKey> = {
            let map: HashMap<&MapData, FlowKey, Conn> = HashMap::try_from(self.map("conns")?)?;
            map.iter()
                .filter_map(Result::ok)
                .filter(|(_, c)| c.expires <= now)
                .map(|(k, _)| k)
                .collect()
        };
        let mut expired = 0;
        let mut frame = [0u8; 14 + 16];
        for key in due {
            frame[14..18].copy_from_slice(&key.src.to_ne_bytes());
            frame[18..22].copy_from_slice(&key.dst.to_ne_bytes());
            frame[22..24].copy_from_slice(&key.sport.to_ne_bytes());
            frame[24..26].copy_from_slice(&key.dport.to_ne_bytes());
            frame[26] = key.proto;
            if self.run(EXPIRE, &frame, 1)?.verdict == Verdict::Drop {
                expired += 1;
            }
        }
        let mut persist: HashMap<&mut MapData, PersistKey, PersistValue> =
            HashMap::try_from(self.map_mut("persist")?)?;
        let stale: Vec<PersistKey> = persist
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.expires <= now)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = persist.remove(&k);
        }
        Ok(expired)
    }

    /// Persistence templates: (service id, client network, slot, time left).
    pub fn templates(&self) -> Result<Vec<(u32, Ipv4Addr, u32, Duration)>, Error> {
        let now = self.now();
        let map: HashMap<&MapData, PersistKey, PersistValue> =
            HashMap::try_from(self.map("persist")?)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.expires > now)
            .map(|(k, v)| {
                (
                    k.svc,
                    addr(k.client),
                    v.dest,
                    Duration::from_nanos(v.expires - now),
                )
            })
            .collect())
    }
}
