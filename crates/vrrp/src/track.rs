//! Tracking, as keepalived does it: scripts that pass or fail (with rise and fall),
//! interfaces that are up or down, and how their weights move an instance's priority or put
//! it in FAULT. No IO: the daemon runs the scripts and watches the interfaces.

/// A `vrrp_script`'s state: it changes after `rise` successes in a row (to up) or `fall`
/// failures in a row (to down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptState {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

impl ScriptState {
    /// A script starts up, or down with `init_fail`.
    pub fn new(rise: u32, fall: u32, init_fail: bool) -> ScriptState {
        ScriptState {
            rise: rise.max(1),
            fall: fall.max(1),
            up: !init_fail,
            streak: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one run's result; `Some(new state)` when the state changes.
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if success == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = success;
            self.streak = 0;
            Some(self.up)
        } else {
            None
        }
    }
}

/// One tracked object as an instance sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// `None`: the instance goes to FAULT while the object is down.
    pub weight: Option<i32>,
    /// keepalived's `reverse`: the weight applies while the object is in the other state
    /// (for a track_file: the value is negated).
    pub reverse: bool,
    pub state: TrackState,
}

/// What a tracked object reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    /// Scripts and interfaces: up or down.
    Up(bool),
    /// A track_file: the number it holds.
    Value(i64),
}

/// What tracking makes of an instance: FAULT, or a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Fault,
    Priority(u8),
}

/// keepalived's rule: a positive weight is added while the object is up, a negative one
/// while it is down (`reverse` swaps up and down); an object without a weight (or with
/// weight 0) faults the instance while down. A track_file's value is multiplied by the
/// weight (negated with `reverse`) and added; with weight 0 a non-zero value is a fault, and
/// so is a product below -253. The result stays within 1..254; the address owner (255) is
/// not moved.
pub fn effect(base: u8, tracked: &[Tracked]) -> Effect {
    let mut priority = i64::from(base);
    for t in tracked {
        match t.state {
            TrackState::Up(is_up) => {
                let up = is_up != t.reverse;
                match t.weight {
                    None | Some(0) => {
                        if !is_up {
                            return Effect::Fault;
                        }
                    }
                    Some(w) if w > 0 && up => priority += i64::from(w),
                    Some(w) if w < 0 && !up => priority += i64::from(w),
                    Some(_) => {}
                }
            }
            TrackState::Value(v) => match t.weight.unwrap_or(0) {
                0 => {
                    if v != 0 {
                        return Effect::Fault;
                    }
                }
                w => {
                    let delta = v.saturating_mul(i64::from(w)) * if t.reverse { -1 } else { 1 };
                    if delta < -253 {
                        return Effect::Fault;
                    }
                    priority = priority.saturating_add(delta);
                }
            },
        }
    }
    if base == 255 {
        return Effect::Priority(255);
    }
    Effect::Priority(priority.clamp(1, 254) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut s = ScriptState::new(2, 3, false);
        assert!(s.is_up());
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None, "a success breaks the streak");
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(false), "three failures in a row");
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(true), "two successes in a row");
        assert!(
            !ScriptState::new(1, 1, true).is_up(),
            "init_fail starts down"
        );
    }

    fn t(weight: Option<i32>, reverse: bool, up: bool) -> Tracked {
        Tracked {
            weight,
            reverse,
            state: TrackState::Up(up),
        }
    }

    fn file(weight: Option<i32>, reverse: bool, value: i64) -> Tracked {
        Tracked {
            weight,
            reverse,
            state: TrackState::Value(value),
        }
    }

    #[test]
    fn track_files_like_keepalived() {
        assert_eq!(
            effect(100, &[file(Some(0), false, 0)]),
            Effect::Priority(100)
        );
        assert_eq!(
            effect(100, &[file(None, false, 3)]),
            Effect::Fault,
            "weight 0: non-zero fails"
        );
        assert_eq!(
            effect(100, &[file(Some(-10), false, 3)]),
            Effect::Priority(70)
        );
        assert_eq!(
            effect(100, &[file(Some(10), true, 3)]),
            Effect::Priority(70),
            "reverse"
        );
        assert_eq!(
            effect(100, &[file(Some(5), false, 4)]),
            Effect::Priority(120)
        );
        assert_eq!(
            effect(100, &[file(Some(-254), false, 1)]),
            Effect::Fault,
            "below -253"
        );
    }

    #[test]
    fn weights_move_the_priority_like_keepalived() {
        assert_eq!(
            effect(100, &[t(Some(-60), false, true)]),
            Effect::Priority(100)
        );
        assert_eq!(
            effect(100, &[t(Some(-60), false, false)]),
            Effect::Priority(40)
        );
        assert_eq!(
            effect(100, &[t(Some(20), false, true)]),
            Effect::Priority(120)
        );
        assert_eq!(
            effect(100, &[t(Some(20), false, false)]),
            Effect::Priority(100)
        );
        assert_eq!(
            effect(100, &[t(Some(-60), true, true)]),
            Effect::Priority(40),
            "reverse"
        );
        assert_eq!(effect(100, &[t(None, false, false)]), Effect::Fault);
        assert_eq!(effect(100, &[t(Some(0), false, false)]), Effect::Fault);
        assert_eq!(
            effect(200, &[t(Some(100), false, true)]),
            Effect::Priority(254)
        );
        assert_eq!(
            effect(10, &[t(Some(-100), false, false)]),
            Effect::Priority(1)
        );
        assert_eq!(
            effect(255, &[t(Some(-100), false, false)]),
            Effect::Priority(255)
        );
    }
}
