//! The two state machines of a rollout, each a plain enum with one transition function.

use rollcall_proto::v1;
use serde::{Deserialize, Serialize};

/// `draft → running ⇄ paused → completed | cancelled`, plus `waiting-approval` between waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Draft,
    Running,
    Paused,
    WaitingApproval,
    Completed,
    Cancelled,
}

/// What can happen to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutEvent {
    /// Admin starts a draft or resumes a paused rollout.
    Start,
    /// Admin pauses.
    Pause,
    /// A device failed: the rollout stops where it is.
    DeviceFailed,
    /// The last wave finished.
    Finished,
    /// Admin approves the next wave.
    Approve,
    /// Admin cancels.
    Cancel,
}

impl RolloutState {
    /// The state after `event`, or `None` when the event is not allowed in this state.
    pub fn on(self, event: RolloutEvent) -> Option<RolloutState> {
        use RolloutEvent as E;
        use RolloutState as S;
        match (self, event) {
            (S::Draft | S::Paused, E::Start) => Some(S::Running),
            (S::WaitingApproval, E::Approve) => Some(S::Running),
            (S::Running | S::WaitingApproval, E::Pause | E::DeviceFailed) => Some(S::Paused),
            (S::Running, E::Finished) => Some(S::Completed),
            (S::Draft | S::Running | S::Paused | S::WaitingApproval, E::Cancel) => {
                Some(S::Cancelled)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Draft => "draft",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::WaitingApproval => "waiting-approval",
            RolloutState::Completed => "completed",
            RolloutState::Cancelled => "cancelled",
        }
    }

    pub fn to_proto(self) -> v1::RolloutState {
        match self {
            RolloutState::Draft => v1::RolloutState::Draft,
            RolloutState::Running => v1::RolloutState::Running,
            RolloutState::Paused => v1::RolloutState::Paused,
            RolloutState::WaitingApproval => v1::RolloutState::WaitingApproval,
            RolloutState::Completed => v1::RolloutState::Completed,
            RolloutState::Cancelled => v1::RolloutState::Cancelled,
        }
    }
}

/// `pending → offered → downloading → downloaded → installing → succeeded | failed | rolled-back | cancelled |
/// skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    Pending,
    Offered,
    Downloading,
    Downloaded,
    Installing,
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
    Skipped,
}

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

    /// Counts as done for the wave gate.
    pub fn is_success(self) -> bool {
        matches!(self, ActionState::Succeeded | ActionState::Skipped)
    }

    pub fn is_failure(self) -> bool {
        matches!(self, ActionState::Failed | ActionState::RolledBack)
    }

    /// The state a finished-but-failed device goes back to when an admin resumes the rollout: `pending`, so it
    /// is offered again (with a higher attempt number). Only failures are retried.
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
            _ => 5,
        }
    }

    /// Whether a device action may move from `self` to `next`. Progress only moves forward (a repeated
    /// `downloading` carries byte counts); terminal states are final; nothing goes back to `pending`.
    pub fn can_become(self, next: ActionState) -> bool {
        if self.is_terminal() || next == ActionState::Pending {
            return false;
        }
        if self == ActionState::Downloading && next == ActionState::Downloading {
            return true;
        }
        next.rank() > self.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Offered => "offered",
            ActionState::Downloading => "downloading",
            ActionState::Downloaded => "downloaded",
            ActionState::Installing => "installing",
            ActionState::Succeeded => "succeeded",
            ActionState::Failed => "failed",
            ActionState::RolledBack => "rolled-back",
            ActionState::Cancelled => "cancelled",
            ActionState::Skipped => "skipped",
        }
    }

    pub fn to_proto(self) -> v1::ActionState {
        match self {
            ActionState::Pending => v1::ActionState::Pending,
            ActionState::Offered => v1::ActionState::Offered,
            ActionState::Downloading => v1::ActionState::Downloading,
            ActionState::Downloaded => v1::ActionState::Downloaded,
            ActionState::Installing => v1::ActionState::Installing,
            ActionState::Succeeded => v1::ActionState::Succeeded,
            ActionState::Failed => v1::ActionState::Failed,
            ActionState::RolledBack => v1::ActionState::RolledBack,
            ActionState::Cancelled => v1::ActionState::Cancelled,
            ActionState::Skipped => v1::ActionState::Skipped,
        }
    }

    /// `None` for `UNSPECIFIED` or a value this controller does not know.
    pub fn from_proto(value: i32) -> Option<ActionState> {
        Some(match v1::ActionState::try_from(value).ok()? {
            v1::ActionState::Unspecified => return None,
            v1::ActionState::Pending => ActionState::Pending,
            v1::ActionState::Offered => ActionState::Offered,
            v1::ActionState::Downloading => ActionState::Downloading,
            v1::ActionState::Downloaded => ActionState::Downloaded,
            v1::ActionState::Installing => ActionState::Installing,
            v1::ActionState::Succeeded => ActionState::Succeeded,
            v1::ActionState::Failed => ActionState::Failed,
            v1::ActionState::RolledBack => ActionState::RolledBack,
            v1::ActionState::Cancelled => ActionState::Cancelled,
            v1::ActionState::Skipped => ActionState::Skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_transitions_table() {
        use RolloutEvent as E;
        use RolloutState as S;
        let all_states = [
            S::Draft,
            S::Running,
            S::Paused,
            S::WaitingApproval,
            S::Completed,
            S::Cancelled,
        ];
        let all_events = [
            E::Start,
            E::Pause,
            E::DeviceFailed,
            E::Finished,
            E::Approve,
            E::Cancel,
        ];
        let legal = [
            (S::Draft, E::Start, S::Running),
            (S::Paused, E::Start, S::Running),
            (S::WaitingApproval, E::Approve, S::Running),
            (S::Running, E::Pause, S::Paused),
            (S::Running, E::DeviceFailed, S::Paused),
            (S::WaitingApproval, E::Pause, S::Paused),
            (S::WaitingApproval, E::DeviceFailed, S::Paused),
            (S::Running, E::Finished, S::Completed),
            (S::Draft, E::Cancel, S::Cancelled),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Paused, E::Cancel, S::Cancelled),
            (S::WaitingApproval, E::Cancel, S::Cancelled),
        ];
        for s in all_states {
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
        let all = [
            Pending,
            Offered,
            Downloading,
            Downloaded,
            Installing,
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
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (
                Offered,
                &[
                    Downloading,
                    Downloaded,
                    Installing,
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (
                Downloading,
                &[
                    Downloading,
                    Downloaded,
                    Installing,
                    Succeeded,
                    Failed,
                    RolledBack,
                    Cancelled,
                    Skipped,
                ],
            ),
            (
                Downloaded,
                &[
                    Installing, Succeeded, Failed, RolledBack, Cancelled, Skipped,
                ],
            ),
            (
                Installing,
                &[Succeeded, Failed, RolledBack, Cancelled, Skipped],
            ),
            (Succeeded, &[]),
            (Failed, &[]),
            (RolledBack, &[]),
            (Cancelled, &[]),
            (Skipped, &[]),
        ];
        for from in all {
            let allowed = legal
                .iter()
                .find(|(f, _)| *f == from)
                .map(|l| l.1)
                .unwrap_or(&[]);
            for to in all {
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
        use ActionState::*;
        for s in [
            Pending,
            Offered,
            Downloading,
            Downloaded,
            Installing,
            Succeeded,
            Failed,
            RolledBack,
            Cancelled,
            Skipped,
        ] {
            let expected = matches!(s, Failed | RolledBack).then_some(Pending);
            assert_eq!(s.retry(), expected, "{s:?}");
        }
    }

    #[test]
    fn proto_round_trip() {
        for s in [
            ActionState::Offered,
            ActionState::RolledBack,
            ActionState::Skipped,
        ] {
            assert_eq!(ActionState::from_proto(s.to_proto() as i32), Some(s));
        }
        assert_eq!(ActionState::from_proto(0), None);
        assert_eq!(ActionState::from_proto(99), None);
    }
}
