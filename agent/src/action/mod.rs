//! One action's way through the agent, as named steps that each move it on:
//!
//! 1. **accept** the assignment: a new action, a new attempt (starts over), new windows for one already held, or
//!    nothing to do;
//! 2. **fetch** it (needs the controller): verified metadata and manifest (platform, anti-rollback), then the
//!    payload, resumable and hash-checked, into `staged/`; the verified hash and manifest are kept in `state.json`;
//! 3. **release** it: hold it (`downloaded`, with the time it waits for) until a maintenance window is open, or
//! 4. **install** it from the staged payload (needs no controller): the payload's hash is checked again against
//!    the verified one, then the signed commands run.
//!
//! Every step is reported with an immediate check-in, which also brings cancels: a cancelled action stops at the
//! next step, up to the moment its install command starts (after that it finishes and reports how it ended).
//!
//! This file accepts assignments and drives the steps; `download.rs` is step 2, `release.rs` steps 3 and 4.
//! Tested by `tests.rs` with a real payload and install script against an unreachable controller, and end to end
//! by `tests/`.

mod download;
mod reboot;
mod release;
#[cfg(all(test, unix))]
mod tests;

use std::time::Instant;

use rollcall_packaging::Manifest;
use rollcall_proto::{v1, ActionState};
use tracing::{debug, info, warn};

use crate::checkin::Agent;
use crate::state::{ActionProgress, AgentState, Outcome};
use crate::window::Window;

/// What an assignment from a check-in asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Nothing: malformed, or this attempt has finished.
    Ignore(&'static str),
    /// Fetch (or resume fetching) the payload.
    Fetch,
    /// Downloaded and verified already: it waits only for its window (or a cancel).
    Held,
}

/// Take an assignment into `state` at `now`. The caller saves.
pub fn accept(state: &mut AgentState, a: &v1::Assignment, now: i64) -> Accepted {
    if !valid_action_id(&a.action_id) {
        return Accepted::Ignore("malformed action id");
    }
    let attempt = a.attempt.max(1);
    let fresh = || ActionProgress::new(attempt, &a.target_name, &a.package, &a.version, now);
    let progress = state
        .actions
        .entry(a.action_id.clone())
        .or_insert_with(fresh);
    if progress.attempt == attempt && progress.step.is_terminal() {
        return Accepted::Ignore("this attempt has finished");
    }
    if progress.attempt != attempt {
        // The controller retries this device (or its attempt count differs, e.g. after a restore): the
        // controller's number wins and the action starts over.
        let attempts = progress.attempts;
        *progress = ActionProgress {
            attempts,
            ..fresh()
        };
    }
    // The controller re-sends open actions on every check-in, with the site's current windows.
    progress.install_windows = a.install_windows.iter().map(Window::from_proto).collect();
    progress.install_not_before = a.install_not_before_unix;
    progress.urgent = a.urgent;
    if progress.is_held() {
        return Accepted::Held;
    }
    progress.attempts += 1;
    Accepted::Fetch
}

/// Action ids come from the network and end up in file contents and logs: accept only their known shape
/// (`<rollout>/<agent>`).
fn valid_action_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

/// `now` plus the time spent since `since`: decisions made after a long step use the time it ended.
fn later(now: i64, since: Instant) -> i64 {
    now.saturating_add(i64::try_from(since.elapsed().as_secs()).unwrap_or(i64::MAX))
}

impl Agent {
    /// Work through one assignment received at `now`.
    pub async fn process(&mut self, a: &v1::Assignment, now: i64) {
        if self.going_down() {
            debug!(action = %a.action_id, "Rebooting: the assignment waits for the agent's next start.");
            return;
        }
        let started = Instant::now();
        let id = a.action_id.as_str();
        match accept(&mut self.state, a, now) {
            Accepted::Ignore(why) => {
                if !valid_action_id(id) {
                    warn!(action = %id, "Assignment with a malformed action id ignored.");
                } else {
                    debug!(action = %id, why, "Assignment needs no work.");
                }
            }
            Accepted::Held => {
                if self.saved_or_failed(id).await {
                    self.release(id, now, None).await;
                }
            }
            Accepted::Fetch => {
                if !self.saved_or_failed(id).await {
                    return;
                }
                if let Some(downloaded) = self.fetch(id).await {
                    self.release(id, later(now, started), Some(downloaded))
                        .await;
                }
            }
        }
    }

    /// Install every held action whose window is open at `now`, from its staged payload: needs no controller.
    pub async fn install_due(&mut self, now: i64) {
        self.reboot_overdue(now).await;
        if self.going_down() {
            return;
        }
        // Taken first: verifies after a reboot may take minutes, and the windows are judged at the time they end.
        let started = Instant::now();
        self.after_reboot(now).await;
        for id in self.state.due_for_install(now) {
            info!(action = %id, "Install may start: installing the held action.");
            self.release(&id, later(now, started), None).await;
        }
    }

    /// Drop journal entries a crash left behind for actions that have finished (their outcome is saved) and whose
    /// command no longer runs. Entries of open actions stay: their install resumes from them.
    pub fn tidy_journal(&self) {
        for entry in crate::install::journal::entries(&self.dirs) {
            let open = self
                .state
                .actions
                .get(&entry.action_id)
                .is_some_and(|a| !a.step.is_terminal());
            if !open && !crate::platform::group_alive(entry.pgid, entry.leader_start) {
                crate::install::Journal::of(&self.dirs, &entry.action_id).clear();
            }
        }
    }

    /// Save before acting on a change; when that fails the action fails (a restart could not tell what happened).
    async fn saved_or_failed(&mut self, id: &str) -> bool {
        match self.save() {
            Ok(()) => true,
            Err(e) => {
                let detail = format!("cannot save agent state: {e}");
                self.report(id, ActionState::Failed, Outcome::detail(detail))
                    .await;
                false
            }
        }
    }

    /// A signed manifest this device must not install: another platform (skipped) or a downgrade (failed).
    fn refusal(&self, manifest: &Manifest) -> Option<(ActionState, String)> {
        let platform = crate::platform::current();
        if !manifest.supports_platform(&platform) {
            let detail = format!(
                "package supports {} but this device is {platform}",
                manifest.platforms.join(", ")
            );
            return Some((ActionState::Skipped, detail));
        }
        self.state
            .rollback_refusal(&manifest.name, &manifest.version, manifest.release_counter)
            .map(|refusal| (ActionState::Failed, refusal))
    }
}
