//! One device's part in one rollout, with every attempt it made.

use serde::{Deserialize, Serialize};

use super::ActionState;

/// One device's part in one rollout. Its id is `<rollout id>/<agent id>`, which is also the action id the agent
/// sees, so one prefix scan lists a rollout's devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: String,
    pub rollout_id: String,
    pub agent_id: String,
    /// The wave the device belongs to, fixed when it was first offered (or skipped).
    pub wave: u32,
    /// The device's site when it was first offered (for the per-site download cap).
    #[serde(default)]
    pub site: String,
    pub state: ActionState,
    /// 1 for the first offer; raised for each new attempt (automatic retry, technician retry, resume).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// Automatic retries this device still has.
    #[serde(default)]
    pub retries_left: u32,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub output_tail: String,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    pub created_at: i64,
    /// When the current state was entered.
    pub updated_at: i64,
    /// When the current attempt began.
    #[serde(default)]
    pub started_at: i64,
    /// Earlier attempts, oldest first. A retry appends here; nothing is ever overwritten.
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
}

/// How one finished attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub state: ActionState,
    pub exit_code: Option<i32>,
    pub detail: String,
    pub output_tail: String,
    pub started_at: i64,
    pub finished_at: i64,
}

fn first_attempt() -> u32 {
    1
}

impl ActionRecord {
    pub fn id_for(rollout_id: &str, agent_id: &str) -> String {
        format!("{rollout_id}/{agent_id}")
    }

    /// A new action for a device in `state` (offered, or skipped with a reason).
    pub fn new(
        rollout_id: &str,
        agent_id: &str,
        site: &str,
        wave: u32,
        state: ActionState,
        retries: u32,
        now: i64,
    ) -> ActionRecord {
        ActionRecord {
            id: Self::id_for(rollout_id, agent_id),
            rollout_id: rollout_id.to_owned(),
            agent_id: agent_id.to_owned(),
            wave,
            site: site.to_owned(),
            state,
            attempt: 1,
            retries_left: retries,
            exit_code: None,
            detail: String::new(),
            output_tail: String::new(),
            bytes_done: 0,
            bytes_total: 0,
            created_at: now,
            updated_at: now,
            started_at: now,
            history: Vec::new(),
        }
    }

    /// Close the current attempt into the history and start the next one as `pending`. Only a finished attempt
    /// (failed, rolled back, cancelled) can be followed by another; returns `false` otherwise.
    pub fn begin_next_attempt(&mut self, why: &str, now: i64) -> bool {
        if !self.state.is_terminal() || self.state == ActionState::Succeeded {
            return false;
        }
        self.history.push(AttemptRecord {
            attempt: self.attempt,
            state: self.state,
            exit_code: self.exit_code,
            detail: std::mem::take(&mut self.detail),
            output_tail: std::mem::take(&mut self.output_tail),
            started_at: self.started_at,
            finished_at: self.updated_at,
        });
        self.attempt += 1;
        self.state = ActionState::Pending;
        self.exit_code = None;
        self.detail = why.to_owned();
        self.bytes_done = 0;
        self.bytes_total = 0;
        self.updated_at = now;
        self.started_at = now;
        true
    }

    /// Cancel this action if its install has not started (pending, offered, downloading, downloaded); an install
    /// that started finishes and its outcome is recorded. True when it was cancelled.
    pub fn cancel_before_install(&mut self, detail: String, now: i64) -> bool {
        let before_install = self.state == ActionState::Pending
            || (self.state.is_in_progress() && !self.state.install_began());
        if !before_install {
            return false;
        }
        self.state = ActionState::Cancelled;
        self.detail = detail;
        self.updated_at = now;
        true
    }

    /// A failure that has automatic retries left (it does not count against the error threshold yet).
    pub fn will_retry(&self) -> bool {
        self.state.is_failure() && self.retries_left > 0
    }

    /// A failure with no automatic retry left: what the error threshold counts.
    pub fn failed_for_good(&self) -> bool {
        self.state.is_failure() && self.retries_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_attempt_keeps_the_old_one_in_the_history() {
        let mut a = ActionRecord::new("r1", "ag", "north", 0, ActionState::Offered, 2, 10);
        assert!(
            !a.begin_next_attempt("retry", 11),
            "an unfinished attempt is not retried"
        );
        a.state = ActionState::Failed;
        a.exit_code = Some(3);
        a.detail = "install command exited 3".into();
        a.output_tail = "boom".into();
        a.updated_at = 20;
        assert!(a.begin_next_attempt("automatic retry 2 of 3", 30));
        assert_eq!(
            (a.attempt, a.state, a.exit_code),
            (2, ActionState::Pending, None)
        );
        assert_eq!(a.history.len(), 1);
        let h = &a.history[0];
        assert_eq!(
            (h.attempt, h.state, h.exit_code),
            (1, ActionState::Failed, Some(3))
        );
        assert_eq!(
            (h.detail.as_str(), h.output_tail.as_str()),
            ("install command exited 3", "boom")
        );
        assert_eq!((h.started_at, h.finished_at), (10, 20));
        a.state = ActionState::Succeeded;
        assert!(!a.begin_next_attempt("again", 40), "success is final");
    }

    #[test]
    fn only_work_whose_install_has_not_started_is_cancelled() {
        for state in ActionState::ALL.iter().copied() {
            let mut a = ActionRecord::new("r1", "ag", "north", 0, state, 0, 0);
            let expected = matches!(
                state,
                ActionState::Pending
                    | ActionState::Offered
                    | ActionState::Downloading
                    | ActionState::Downloaded
            );
            assert!(!expected || !state.install_began());
            assert_eq!(
                a.cancel_before_install("stop".into(), 5),
                expected,
                "{state}"
            );
            let after = if expected {
                ActionState::Cancelled
            } else {
                state
            };
            assert_eq!(a.state, after, "{state}");
        }
    }
}
