//! The program's clock: CLOCK_MONOTONIC to the tick, from jiffies, so that connection
//! deadlines written by the program and read here agree.

use super::*;

/// One reading of the program's clocks (`xdp_clock`).
#[derive(Debug, Clone, Copy)]
pub struct ClockSample {
    pub jiffies: u64,
    /// CLOCK_MONOTONIC_COARSE, ns.
    pub coarse: u64,
    /// The data plane's own clock, ns: what its connection deadlines are in.
    pub now: u64,
}

/// The tick length for a measured one: the kernel's TICK_NSEC for the nearest common HZ
/// (a measurement off by even 1% would drift the clock by minutes a day), else for the HZ
/// the measurement gives.
pub(crate) fn tick_length(measured_ns: u64) -> u64 {
    let tick = |hz: u64| (1_000_000_000 + hz / 2) / hz;
    let near = [100u64, 250, 300, 1000]
        .into_iter()
        .map(tick)
        .find(|t| measured_ns.abs_diff(*t) * 10 < *t);
    near.unwrap_or_else(|| tick((1_000_000_000 / measured_ns.max(1)).max(1)))
}

impl DataPlane {
    /// The kernel's tick as measured at load, ns (0: not measured; the program then uses
    /// the coarse clock).
    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// Now on the program's clock, which its deadlines are in (the monotonic clock if it
    /// cannot be read).
    pub(crate) fn now(&self) -> u64 {
        self.clock()
            .map(|c| c.now)
            .unwrap_or_else(|_| fulcrum_sys::monotonic_ns())
    }

    /// Reads the program's clocks.
    pub fn clock(&self) -> Result<ClockSample, Error> {
        let out = self.run(CLOCK, &[0u8; 14 + 24], 1)?;
        let word = |i: usize| {
            out.frame
                .get(14 + 8 * i..22 + 8 * i)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
        };
        match (word(0), word(1), word(2)) {
            (Some(jiffies), Some(coarse), Some(now)) if out.verdict == Verdict::Pass => {
                Ok(ClockSample {
                    jiffies,
                    coarse,
                    now,
                })
            }
            _ => Err(Error::Limit(format!(
                "xdp_clock gave {:?} with {} bytes",
                out.verdict,
                out.frame.len()
            ))),
        }
    }

    /// Sets the program's clock, jiffies * tick - base, to CLOCK_MONOTONIC rounded down
    /// to the tick (see `clock_now` in maps.h), give or take how late the kernel ran the
    /// tick it was set at. The tick length is measured once, from
    /// how far the coarse clock moves per jiffy over twenty jiffies (both move at each
    /// tick; 80 ms at HZ=250, 200 ms at HZ=100); later calls only set the base again. If
    /// jiffies do not move in 300 ms the program keeps the coarse clock, which is always
    /// right, only dearer.
    pub fn set_clock(&mut self) -> Result<(), Error> {
        let mut s = self.clock()?;
        if self.tick_ns == 0 {
            let first = s;
            // Twenty jiffies: the two clocks can disagree by a jiffy at either end (on a
            // tickless kernel a late tick is caught up in one step), which over four
            // jiffies was a quarter off; over twenty it is within the 10% that
            // tick_length needs to recognise the kernel's HZ.
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            while s.jiffies.wrapping_sub(first.jiffies) < 20 && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
                s = self.clock()?;
            }
            let ticks = s.jiffies.wrapping_sub(first.jiffies);
            if ticks < 8 {
                return Ok(());
            }
            self.tick_ns = tick_length(s.coarse.saturating_sub(first.coarse) / ticks);
        }
        let tick_ns = self.tick_ns;
        let base = s.jiffies.wrapping_mul(tick_ns).wrapping_sub(s.coarse);
        let mut map: Array<&mut MapData, Clock> = Array::try_from(self.map_mut("clock")?)?;
        let old = map.get(&0, 0)?;
        // Never backwards: a deadline already written must not come later than it did.
        if old.tick_ns == tick_ns && base >= old.base {
            return Ok(());
        }
        map.set(0, Clock { tick_ns, base }, 0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::tick_length;

    #[test]
    fn a_measured_tick_snaps_to_the_kernels_tick_nsec() {
        assert_eq!(tick_length(4_000_000), 4_000_000);
        assert_eq!(tick_length(3_900_000), 4_000_000);
        assert_eq!(tick_length(3_333_334), 3_333_333);
        assert_eq!(tick_length(10_000_000), 10_000_000);
        assert_eq!(tick_length(1_020_000), 1_000_000);
        // HZ=500 is not among the common ones: taken as measured.
        assert_eq!(tick_length(2_000_000), 2_000_000);
    }
}
