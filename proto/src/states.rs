//! The two lifecycles every part of rollcall speaks about — a rollout's and a device action's — each a plain enum
//! with one transition function, and the one mapping from each state to its name (CLI, JSON, state files) and its
//! wire value (`rollcall.v1`). The agent, the controller's model and the CLI all use these; nothing else maps.

use serde::{Deserialize, Serialize};

use crate::v1;

/// The one table of a state enum: its variants with their names and wire values. It defines the enum (serde uses
/// the same names), `ALL`, `as_str`, `parse`, `to_proto`, `from_proto`, `name_of` and `Display`, from a single list,
/// so the enum, its names and its wire values can never disagree.
macro_rules! state_enum {
    ($(#[$meta:meta])* $ty:ident => $wire:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $ty {
            $(#[serde(rename = $name)] $variant),+
        }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            pub fn parse(name: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|s| s.as_str() == name)
            }

            pub fn to_proto(self) -> v1::$wire {
                match self {
                    $($ty::$variant => v1::$wire::$variant),+
                }
            }

            /// `None` for `UNSPECIFIED` or a value this build does not know.
            pub fn from_proto(value: i32) -> Option<$ty> {
                Self::ALL.iter().copied().find(|s| s.to_proto() as i32 == value)
            }

            /// The name of a wire value, "unknown" for one this build does not know.
            pub fn name_of(value: i32) -> &'static str {
                Self::from_proto(value).map_or("unknown", Self::as_str)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(
    /// `draft → running ⇄ paused → completed | cancelled`, plus `scheduled` (started, waiting for its start time)
    /// and `waiting-approval` (between waves).
    RolloutState => RolloutState {
        Draft = "draft",
        Scheduled = "scheduled",
        Running = "running",
        Paused = "paused",
        WaitingApproval = "waiting-approval",
        Completed = "completed",
        Cancelled = "cancelled",
    }
);

/// What can happen to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutEvent {
    /// Admin starts a draft now (or a scheduled rollout before its time).
    Start,
    /// Admin starts a draft with a start time in the future.
    Schedule,
    /// The start time of a scheduled rollout came.
    Due,
    /// Admin pauses.
    Pause,
    /// A wave's error threshold was reached: the rollout stops where it is.
    ErrorThreshold,
    /// Admin resumes a paused rollout.
    Resume,
    /// The next wave needs an admin's approval.
    WaitApproval,
    /// Admin approves the next wave.
    Approve,
    /// Every wave passed its gate.
    Finished,
    /// Admin cancels.
    Cancel,
}

impl RolloutState {
    /// The state after `event`, or `None` when the event is not allowed in this state.
    pub fn on(self, event: RolloutEvent) -> Option<RolloutState> {
        use RolloutEvent as E;
        use RolloutState as S;
        match (self, event) {
            (S::Draft | S::Scheduled, E::Start) => Some(S::Running),
            (S::Draft, E::Schedule) => Some(S::Scheduled),
            (S::Scheduled, E::Due) => Some(S::Running),
            (S::Running | S::WaitingApproval | S::Scheduled, E::Pause) => Some(S::Paused),
            (S::Running | S::WaitingApproval, E::ErrorThreshold) => Some(S::Paused),
            (S::Paused, E::Resume) => Some(S::Running),
            (S::Running, E::WaitApproval) => Some(S::WaitingApproval),
            (S::WaitingApproval, E::Approve) => Some(S::Running),
            (S::Running, E::Finished) => Some(S::Completed),
            (
                S::Draft
                | S::Scheduled
                | S::Running
                | S::Paused
                | S::WaitingApproval
                | S::Completed,
                E::Cancel,
            ) => Some(S::Cancelled),
            _ => None,
        }
    }

    /// Whether devices of open waves are offered the package: also while waiting for approval (late joiners of
    /// open waves) and after completion (desired state for devices that join later).
    pub fn offers(self) -> bool {
        matches!(
            self,
            RolloutState::Running | RolloutState::WaitingApproval | RolloutState::Completed
        )
    }
}

state_enum!(
    /// `pending → offered → downloading → downloaded → installing → [reboot-pending →] succeeded | failed |
    /// rolled-back | cancelled | skipped`.
    ActionState => ActionState {
        Pending = "pending",
        Offered = "offered",
        Downloading = "downloading",
        Downloaded = "downloaded",
        Installing = "installing",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled-back",
        Cancelled = "cancelled",
        Skipped = "skipped",
        RebootPending = "reboot-pending",
    }
);

impl ActionState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionState::Succeeded
                | ActionState::Failed
                | ActionState::RolledBack
                | ActionState::Cancelled
                | ActionState::Skipped
        )
    }

    /// Installed and verified. Nothing else is ever counted as success (skipped is not).
    pub fn is_success(self) -> bool {
        self == ActionState::Succeeded
    }

    pub fn is_failure(self) -> bool {
        matches!(self, ActionState::Failed | ActionState::RolledBack)
    }

    /// Offered and not finished: the device is working on it (or about to).
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            ActionState::Offered
                | ActionState::Downloading
                | ActionState::Downloaded
                | ActionState::Installing
                | ActionState::RebootPending
        )
    }

    /// The install command has started (or finished and waits for its reboot): a cancel no longer stops it.
    pub fn install_began(self) -> bool {
        matches!(self, ActionState::Installing | ActionState::RebootPending)
    }

    /// The state a finished-but-failed device goes back to when it gets a new attempt: `pending`, so it is
    /// offered again (with a higher attempt number). Only failures are retried.
    pub fn retry(self) -> Option<ActionState> {
        self.is_failure().then_some(ActionState::Pending)
    }

    fn rank(self) -> u8 {
        match self {
            ActionState::Pending => 0,
            ActionState::Offered => 1,
            ActionState::Downloading => 2,
            ActionState::Downloaded => 3,
            ActionState::Installing => 4,
            ActionState::RebootPending => 5,
            _ => 6,
        }
    }

    /// Whether a device action may move from `self` to `next`. Progress only moves forward (a repeated
    /// `downloading` carries byte counts); nothing goes back to `pending` (a retry is a new attempt, see
    /// [`ActionState::retry`]); terminal states are final, except that a `cancelled` action whose install had
    /// already started when the cancel was decided still records how that install ended: counts never lie.
    pub fn can_become(self, next: ActionState) -> bool {
        if next == ActionState::Pending {
            return false;
        }
        if self == ActionState::Cancelled {
            return matches!(
                next,
                ActionState::Succeeded
                    | ActionState::Failed
                    | ActionState::RolledBack
                    | ActionState::RebootPending
            );
        }
        // An install announced but not started (its window closed meanwhile) goes back to waiting.
        if self == ActionState::Installing && next == ActionState::Downloaded {
            return true;
        }
        if self.is_terminal() {
            return false;
        }
        // Repeated reports of a long step carry progress: byte counts, "rebooting now", "back from the reboot".
        if self == next && matches!(self, ActionState::Downloading | ActionState::RebootPending) {
            return true;
        }
        next.rank() > self.rank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_transitions_table() {
        use RolloutEvent as E;
        use RolloutState as S;
        let all_events = [
            E::Start,
            E::Schedule,
            E::Due,
            E::Pause,
            E::ErrorThreshold,
            E::Resume,
            E::WaitApproval,
            E::Approve,
            E::Finished,
            E::Cancel,
        ];
        let legal = [
            (S::Draft, E::Start, S::Running),
            (S::Scheduled, E::Start, S::Running),
            (S::Draft, E::Schedule, S::Scheduled),
            (S::Scheduled, E::Due, S::Running),
            (S::Running, E::Pause, S::Paused),
            (S::WaitingApproval, E::Pause, S::Paused),
            (S::Scheduled, E::Pause, S::Paused),
            (S::Running, E::ErrorThreshold, S::Paused),
            (S::WaitingApproval, E::ErrorThreshold, S::Paused),
            (S::Paused, E::Resume, S::Running),
            (S::Running, E::WaitApproval, S::WaitingApproval),
            (S::WaitingApproval, E::Approve, S::Running),
            (S::Running, E::Finished, S::Completed),
            (S::Draft, E::Cancel, S::Cancelled),
            (S::Scheduled, E::Cancel, S::Cancelled),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Paused, E::Cancel, S::Cancelled),
            (S::WaitingApproval, E::Cancel, S::Cancelled),
            (S::Completed, E::Cancel, S::Cancelled),
        ];
        for &s in RolloutState::ALL {
            for e in all_events {
                let expected = legal
                    .iter()
                    .find(|(from, ev, _)| *from == s && *ev == e)
                    .map(|l| l.2);
                assert_eq!(s.on(e), expected, "{s:?} on {e:?}");
            }
        }
    }

    #[test]
    fn action_transitions_table() {
        use ActionState::*;
        let after_offer = [
            Downloading,
            Downloaded,
            Installing,
            RebootPending,
            Succeeded,
            Failed,
            RolledBack,
            Cancelled,
            Skipped,
        ];
        let legal: &[(ActionState, &[ActionState])] = &[
            (
                Pending,
                &[
                    Offered,
                    Downloading,
                    Downloaded,
                    Installing,
                    RebootPending,
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (Offered, &after_offer),
            (Downloading, &after_offer),
            (
                Downloaded,
                &[
                    Installing,
                    RebootPending,
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (
                Installing,
                &[
                    Downloaded,
                    RebootPending,
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (
                RebootPending,
                &[
                    RebootPending,
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (Succeeded, &[]),
            (Failed, &[]),
            (RolledBack, &[]),
            (Cancelled, &[Succeeded, Failed, RolledBack, RebootPending]),
            (Skipped, &[]),
        ];
        for &from in ActionState::ALL {
            let allowed = legal
                .iter()
                .find(|(f, _)| *f == from)
                .map(|l| l.1)
                .unwrap_or(&[]);
            for &to in ActionState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&to),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn only_failures_are_retried() {
        for &s in ActionState::ALL {
            let expected = s.is_failure().then_some(ActionState::Pending);
            assert_eq!(s.retry(), expected, "{s:?}");
        }
        assert!(ActionState::RolledBack.is_failure());
        assert!(
            !ActionState::Skipped.is_success(),
            "skipped is never success"
        );
    }

    #[test]
    fn names_and_wire_values_round_trip() {
        for &s in ActionState::ALL {
            assert_eq!(ActionState::from_proto(s.to_proto() as i32), Some(s));
            assert_eq!(ActionState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str()),
                "state files use the same names"
            );
        }
        for &s in RolloutState::ALL {
            assert_eq!(RolloutState::from_proto(s.to_proto() as i32), Some(s));
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(ActionState::from_proto(0), None);
        assert_eq!(ActionState::name_of(99), "unknown");
        assert_eq!(RolloutState::name_of(0), "unknown");
    }
}
