//! vrrp_sync_group: instances that move together. When a member enters MASTER, BACKUP or
//! FAULT on its own (not because its group moved), every other member of its group follows
//! it into that state.

use crate::instance::{Action, Event, Reason, State};

/// The sync groups of a set of instances, numbered as the caller numbers its instances.
#[derive(Debug, Clone, Default)]
pub struct SyncGroups {
    group_of: Vec<Option<usize>>,
}

impl SyncGroups {
    /// `group_of[i]` is the group of instance `i`, if any.
    pub fn new(group_of: Vec<Option<usize>>) -> SyncGroups {
        SyncGroups { group_of }
    }

    /// The events that the other members of `member`'s group must be fed after `member`
    /// carried out `actions`.
    pub fn follow(&self, member: usize, actions: &[Action]) -> Vec<(usize, Event)> {
        let Some(Some(group)) = self.group_of.get(member).copied() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for a in actions {
            let Action::Transition { to, reason, .. } = a else {
                continue;
            };
            if matches!(
                reason,
                Reason::SyncGroup | Reason::Startup | Reason::Shutdown
            ) || !matches!(to, State::Master | State::Backup | State::Fault)
            {
                continue;
            }
            for (other, g) in self.group_of.iter().enumerate() {
                if other != member && *g == Some(group) {
                    out.push((other, Event::SyncGroup(*to)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_follow_their_own_group_only() {
        let g = SyncGroups::new(vec![Some(0), Some(0), None, Some(1)]);
        let moved = [Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown,
        }];
        assert_eq!(
            g.follow(0, &moved),
            vec![(1, Event::SyncGroup(State::Master))]
        );
        assert!(g.follow(2, &moved).is_empty());
        let followed = [Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::SyncGroup,
        }];
        assert!(
            g.follow(1, &followed).is_empty(),
            "following does not cascade"
        );
    }
}
