//! A cancel from the controller (`CheckInResponse.cancelled_actions`, e.g. its rollout was cancelled). An action
//! whose install command has not started is dropped: its partial download and staged payload are deleted (unless
//! another open action needs the same payload), it becomes `cancelled` with a queued report, and nothing installs
//! it later. An install that has started is never cut off: it finishes and reports its real outcome.
//!
//! Tested by the unit tests below (files removed or kept, the report, a running install left alone) and in
//! `action.rs` (a cancelled action is not installed later).

use rollcall_proto::ActionState;
use tracing::{debug, info};

use crate::config::AgentDirs;
use crate::fetch;
use crate::state::{AgentState, Outcome};

/// The detail of the `cancelled` report.
pub const CANCELLED_DETAIL: &str = "cancelled by the controller";

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Dropped; a `cancelled` report is queued.
    Dropped,
    /// Its install command has started: it runs to its end and reports how it ended.
    InstallRunning,
    /// Already finished (or cancelled before): nothing to do.
    AlreadyFinished,
    /// This agent holds no such action.
    Unknown,
}

/// Apply the controller's cancel of `action_id` at `now` (state only changes in memory; the caller saves).
pub fn apply(state: &mut AgentState, dirs: &AgentDirs, action_id: &str, now: i64) -> CancelOutcome {
    let Some(action) = state.actions.get(action_id) else {
        debug!(action = %action_id, "Cancel for an action this agent does not hold; ignored.");
        return CancelOutcome::Unknown;
    };
    if action.step.is_terminal() {
        return CancelOutcome::AlreadyFinished;
    }
    if action.install_started {
        info!(action = %action_id, "Cancel received while the install runs; it finishes and reports its outcome.");
        return CancelOutcome::InstallRunning;
    }
    if let Some(target) = action.target.as_ref().filter(|t| t.has_valid_hash()) {
        if !state.payload_needed_by_another(&target.sha256, action_id) {
            let removed = fetch::remove_payload(dirs, &target.sha256, &action.target_name);
            debug!(action = %action_id, files = removed.len(), "Payload of a cancelled action deleted.");
        }
    }
    info!(action = %action_id, "Action cancelled by the controller.");
    state.record(
        action_id,
        ActionState::Cancelled,
        Outcome::detail(CANCELLED_DETAIL),
        now,
    );
    CancelOutcome::Dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ActionProgress, VerifiedTarget};
    use rollcall_packaging::Manifest;

    const SHA: &str = "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";

    fn manifest() -> Manifest {
        Manifest::from_toml_str(
            "name = \"app\"\nversion = \"1\"\nrelease_counter = 1\nplatforms = [\"any\"]\n\
             [install]\ncommand = [\"true\"]\n[verify]\ncommand = [\"true\"]\n",
        )
        .unwrap()
    }

    /// An open action of `app_1.tar.gz` at `step`, its payload known by hash.
    fn action(step: ActionState) -> ActionProgress {
        let mut a = ActionProgress::new(1, "app_1.tar.gz", "app", "1", 10);
        a.step = step;
        a.target = Some(VerifiedTarget {
            sha256: SHA.into(),
            length: 4,
            manifest: manifest(),
        });
        a
    }

    fn payload_files(dirs: &AgentDirs) -> (std::path::PathBuf, std::path::PathBuf) {
        let part = fetch::part_path(dirs, SHA, "app_1.tar.gz");
        let staged = dirs.staged(SHA);
        for f in [&part, &staged] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b"data").unwrap();
        }
        (part, staged)
    }

    #[test]
    fn cancel_drops_the_partial_and_staged_payload_and_queues_a_report() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = AgentDirs::new(tmp.path());
        let (part, staged) = payload_files(&dirs);
        assert!(part.ends_with(format!("downloads/{SHA}.app_1.tar.gz.part")));
        let mut state = AgentState::default();
        state
            .actions
            .insert("r1/a".into(), action(ActionState::Downloaded));

        assert_eq!(apply(&mut state, &dirs, "r1/a", 20), CancelOutcome::Dropped);
        assert!(!part.exists() && !staged.exists(), "payload files deleted");
        let a = &state.actions["r1/a"];
        assert_eq!(a.step, ActionState::Cancelled);
        assert_eq!(a.detail, CANCELLED_DETAIL);
        assert_eq!(state.pending_reports.len(), 1);
        let report = state.pending_reports[0].to_proto();
        assert_eq!(
            report.state,
            rollcall_proto::v1::ActionState::Cancelled as i32
        );
        assert_eq!(report.detail, "cancelled by the controller");
        assert_eq!(report.action_id, "r1/a");
        assert!(state.open_action_ids().is_empty());
        assert!(
            state.due_for_install(i64::MAX).is_empty(),
            "never installed later"
        );

        assert_eq!(
            apply(&mut state, &dirs, "r1/a", 30),
            CancelOutcome::AlreadyFinished,
            "a repeated cancel changes nothing"
        );
        assert_eq!(state.pending_reports.len(), 1);
        assert_eq!(apply(&mut state, &dirs, "r9/a", 30), CancelOutcome::Unknown);
    }

    #[test]
    fn cancel_keeps_a_payload_another_open_action_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = AgentDirs::new(tmp.path());
        let (part, staged) = payload_files(&dirs);
        let mut state = AgentState::default();
        state
            .actions
            .insert("r1/a".into(), action(ActionState::Downloading));
        state
            .actions
            .insert("r2/a".into(), action(ActionState::Downloaded));

        assert_eq!(apply(&mut state, &dirs, "r1/a", 20), CancelOutcome::Dropped);
        assert!(part.exists() && staged.exists(), "r2/a still needs them");
        assert_eq!(state.actions["r1/a"].step, ActionState::Cancelled);
        assert_eq!(state.open_action_ids(), vec!["r2/a".to_owned()]);
    }

    #[test]
    fn cancel_of_a_started_install_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = AgentDirs::new(tmp.path());
        let (part, staged) = payload_files(&dirs);
        let mut state = AgentState::default();
        let mut a = action(ActionState::Installing);
        a.install_started = true;
        state.actions.insert("r1/a".into(), a);

        assert_eq!(
            apply(&mut state, &dirs, "r1/a", 20),
            CancelOutcome::InstallRunning
        );
        assert!(part.exists() && staged.exists());
        assert_eq!(state.actions["r1/a"].step, ActionState::Installing);
        assert!(state.pending_reports.is_empty(), "no cancelled report");
    }
}
