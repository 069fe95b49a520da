//! The rollout rules as pure functions of stored records: which wave is open, when the rollout advances, pauses
//! or completes, and what a checking-in device is offered. No I/O and no clock reads: `driver` feeds them.
//!
//! Today's gate is the first one the brief names: a wave opens when every device of the previous wave succeeded,
//! and any failure pauses the rollout. Thresholds, soak times, approvals, windows and caps extend `decide` and
//! `offer` with more inputs; the shape stays.

use super::state::ActionState;
use crate::store::{ActionRecord, RolloutRecord};

/// Where the devices of one wave stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub in_progress: u32,
    /// Members without an action yet (not offered).
    pub pending: u32,
}

impl Tally {
    /// Count one member device by its action state (`None`: never offered).
    pub fn add(&mut self, state: Option<ActionState>) {
        self.total += 1;
        match state {
            None | Some(ActionState::Pending) => self.pending += 1,
            Some(s) if s.is_success() => self.succeeded += 1,
            Some(s) if s.is_failure() => self.failed += 1,
            Some(ActionState::Cancelled) => {}
            Some(_) => self.in_progress += 1,
        }
    }

    pub fn all_succeeded(&self) -> bool {
        self.succeeded == self.total
    }
}

/// What the engine wants done to a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep waiting.
    Wait,
    /// Open the given wave.
    OpenWave(u32),
    /// Every wave is done.
    Complete,
    /// Stop: a device failed.
    Pause(String),
}

/// Decide the next step of a running rollout from the tallies of its waves (index = wave).
pub fn decide(rollout: &RolloutRecord, tallies: &[Tally]) -> Decision {
    let open = rollout.current_wave as usize;
    let failed: u32 = tallies.iter().take(open + 1).map(|t| t.failed).sum();
    if failed > 0 {
        let first = tallies.iter().position(|t| t.failed > 0).unwrap_or(0);
        return Decision::Pause(format!(
            "{failed} device(s) failed (first in wave {}); fix and resume with `rollcall rollout start {}`",
            first + 1,
            rollout.id
        ));
    }
    match tallies.get(open) {
        Some(t) if !t.all_succeeded() => Decision::Wait,
        _ if open + 1 < rollout.waves.len() => Decision::OpenWave(open as u32 + 1),
        // Done only when every wave is: a late joiner of an earlier wave still counts.
        _ if tallies.iter().all(Tally::all_succeeded) => Decision::Complete,
        _ => Decision::Wait,
    }
}

/// What a device checking in gets from one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Nothing: not a member, wave not open, or already finished.
    Nothing,
    /// Offer the package (first time, or again while the device has not finished it).
    Offer { wave: u32 },
    /// The package does not support the device's platform.
    Skip { wave: u32 },
}

/// Decide what `rollout` offers a device at `site` on `platform`, given the device's existing action.
pub fn offer(
    rollout: &RolloutRecord,
    site: &str,
    platform_supported: bool,
    existing: Option<&ActionRecord>,
) -> Offer {
    if rollout.state != super::state::RolloutState::Running {
        return Offer::Nothing;
    }
    let Some(wave) = rollout.wave_of(site) else {
        return Offer::Nothing;
    };
    if wave > rollout.current_wave {
        return Offer::Nothing;
    }
    match existing {
        Some(a) if a.state.is_terminal() => Offer::Nothing,
        Some(_) => Offer::Offer { wave },
        None if !platform_supported => Offer::Skip { wave },
        None => Offer::Offer { wave },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::state::RolloutState;

    fn rollout(current_wave: u32, state: RolloutState) -> RolloutRecord {
        let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["a"], &["b", "c"]]);
        r.current_wave = current_wave;
        r.state = state;
        r
    }

    fn tally(states: &[Option<ActionState>]) -> Tally {
        let mut t = Tally::default();
        for s in states {
            t.add(*s);
        }
        t
    }

    fn action(state: ActionState) -> ActionRecord {
        ActionRecord {
            id: "r1/x".into(),
            rollout_id: "r1".into(),
            agent_id: "x".into(),
            wave: 0,
            state,
            attempt: 1,
            exit_code: None,
            detail: String::new(),
            output_tail: String::new(),
            bytes_done: 0,
            bytes_total: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn wave_opens_only_when_every_device_succeeded() {
        let r = rollout(0, RolloutState::Running);
        let waiting = [
            tally(&[Some(ActionState::Succeeded), Some(ActionState::Installing)]),
            tally(&[None]),
        ];
        assert_eq!(decide(&r, &waiting), Decision::Wait);
        let unoffered = [tally(&[Some(ActionState::Succeeded), None]), tally(&[None])];
        assert_eq!(decide(&r, &unoffered), Decision::Wait);
        let done = [
            tally(&[Some(ActionState::Succeeded), Some(ActionState::Skipped)]),
            tally(&[None]),
        ];
        assert_eq!(decide(&r, &done), Decision::OpenWave(1));
    }

    #[test]
    fn last_wave_done_completes() {
        let r = rollout(1, RolloutState::Running);
        let t = [
            tally(&[Some(ActionState::Succeeded)]),
            tally(&[Some(ActionState::Succeeded)]),
        ];
        assert_eq!(decide(&r, &t), Decision::Complete);
    }

    #[test]
    fn a_late_joiner_of_an_earlier_wave_holds_completion() {
        let r = rollout(1, RolloutState::Running);
        let t = [
            tally(&[Some(ActionState::Succeeded), Some(ActionState::Downloading)]),
            tally(&[Some(ActionState::Succeeded)]),
        ];
        assert_eq!(decide(&r, &t), Decision::Wait);
    }

    #[test]
    fn any_failure_in_an_open_wave_pauses() {
        let r = rollout(1, RolloutState::Running);
        let t = [
            tally(&[Some(ActionState::Succeeded), Some(ActionState::RolledBack)]),
            tally(&[Some(ActionState::Succeeded)]),
        ];
        match decide(&r, &t) {
            Decision::Pause(reason) => assert!(
                reason.contains("1 device(s) failed (first in wave 1)"),
                "{reason}"
            ),
            other => panic!("expected pause, got {other:?}"),
        }
    }

    #[test]
    fn empty_wave_passes() {
        let r = rollout(0, RolloutState::Running);
        assert_eq!(
            decide(&r, &[Tally::default(), Tally::default()]),
            Decision::OpenWave(1)
        );
    }

    #[test]
    fn offers_follow_open_waves_and_membership() {
        let running = rollout(0, RolloutState::Running);
        assert_eq!(offer(&running, "a", true, None), Offer::Offer { wave: 0 });
        assert_eq!(
            offer(&running, "b", true, None),
            Offer::Nothing,
            "wave 2 not open yet"
        );
        assert_eq!(
            offer(&running, "zzz", true, None),
            Offer::Nothing,
            "not a member"
        );
        assert_eq!(offer(&running, "a", false, None), Offer::Skip { wave: 0 });
        let wider = rollout(1, RolloutState::Running);
        assert_eq!(offer(&wider, "c", true, None), Offer::Offer { wave: 1 });
        assert_eq!(
            offer(&wider, "a", true, None),
            Offer::Offer { wave: 0 },
            "late joiner of an earlier wave"
        );
        assert_eq!(
            offer(&wider, "a", true, Some(&action(ActionState::Downloading))),
            Offer::Offer { wave: 0 },
            "resent until finished"
        );
        assert_eq!(
            offer(&wider, "a", true, Some(&action(ActionState::Succeeded))),
            Offer::Nothing
        );
        for state in [
            RolloutState::Draft,
            RolloutState::Paused,
            RolloutState::Completed,
            RolloutState::Cancelled,
        ] {
            assert_eq!(
                offer(&rollout(1, state), "a", true, None),
                Offer::Nothing,
                "{state:?}"
            );
        }
    }
}
