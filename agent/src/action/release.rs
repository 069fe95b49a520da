//! Steps 3 and 4 of an action: release it. A downloaded action is held (`downloaded`, with the time it waits for)
//! until its install may start by its maintenance windows, then installed from the staged payload — checked again
//! against the verified hash first, with the last cancel check right before the command starts. Needs no
//! controller: a held action installs when its window opens even while the controller is out of reach.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rollcall_proto::ActionState;
use tracing::{info, warn};

use super::later;
use crate::checkin::Agent;
use crate::config::AgentDirs;
use crate::install;
use crate::state::{Installed, Outcome, VerifiedTarget};
use crate::window::Decision;

impl Agent {
    /// Hold an action whose payload is staged until its install may start, or install it now (decided at `now`).
    /// `downloaded` is the detail of a download that just finished; it is reported first.
    pub(crate) async fn release(&mut self, id: &str, now: i64, downloaded: Option<String>) {
        let started = Instant::now();
        let Some(decision) = self.state.actions.get(id).map(|p| p.install_decision(now)) else {
            return;
        };
        if decision != Decision::Install {
            return self.hold(id, decision).await;
        }
        if self.state.actions.get(id).map(|p| p.step) == Some(ActionState::RebootPending) {
            return self.reboot(id, now).await;
        }
        if let Some(detail) = downloaded {
            let length = self.target_length(id);
            let outcome = Outcome {
                detail,
                bytes_done: length,
                bytes_total: length,
                ..Outcome::default()
            };
            self.report(id, ActionState::Downloaded, outcome).await;
            if self.cancelled(id) {
                return;
            }
        }
        self.install(id, later(now, started), false).await;
    }

    fn target_length(&self, id: &str) -> u64 {
        self.state
            .actions
            .get(id)
            .and_then(|p| p.target.as_ref())
            .map_or(0, |t| t.length)
    }

    /// Keep a downloaded action open until its install may start, telling the controller why (once per change).
    async fn hold(&mut self, id: &str, decision: Decision) {
        let Some(detail) = decision.waiting_detail() else {
            return;
        };
        let length = self.target_length(id);
        let Some(p) = self.state.actions.get_mut(id) else {
            return;
        };
        if p.detail == detail && p.step != ActionState::Downloading {
            return;
        }
        info!(action = %id, wait = %detail, "Install held for its maintenance window.");
        if (p.step == ActionState::Installing && p.install_started)
            || p.step == ActionState::RebootPending
        {
            // Cut off while its command ran (crash, power loss), or installed and waiting to reboot: it stays
            // as it is until the window opens.
            p.detail = detail;
            let _ = self.save();
            return;
        }
        // Announced but not started when the window closed: back to `downloaded` (waiting), so the controller
        // sees the truth and a cancel can still reach it.
        let outcome = Outcome {
            detail,
            bytes_done: length,
            bytes_total: length,
            ..Outcome::default()
        };
        self.report(id, ActionState::Downloaded, outcome).await;
    }

    /// Install a held action from its staged payload once more checked: its hash against the verified one, the
    /// anti-rollback rule, a cancel (brought by the `installing` report's check-in) and the window, right before
    /// the command starts. `after_reboot`: the package was installed before the reboot it required; only its verify
    /// runs now (and the rollback when that fails).
    pub(super) async fn install(&mut self, id: &str, now: i64, after_reboot: bool) {
        let started = Instant::now();
        let Some(target) = self.state.actions.get(id).and_then(|p| p.target.clone()) else {
            return;
        };
        let Some(payload) = self.staged_payload(id, &target).await else {
            return;
        };
        if after_reboot {
            self.report(
                id,
                ActionState::RebootPending,
                Outcome::detail("back from the reboot: running the verify command"),
            )
            .await;
        } else {
            if let Some((step, detail)) = self.refusal(&target.manifest) {
                self.report(id, step, Outcome::detail(detail)).await;
                return;
            }
            self.report(
                id,
                ActionState::Installing,
                Outcome::detail("running install command"),
            )
            .await;
            if self.cancelled(id) {
                return;
            }
            let Some(p) = self.state.actions.get_mut(id) else {
                return;
            };
            let decision = p.install_decision(later(now, started));
            if decision != Decision::Install {
                return self.hold(id, decision).await;
            }
        }
        // Where an install cut off by a crash or power loss stands: its leftover command (and any other action's)
        // is waited for, or killed after its timeout, before this one decides anything.
        // Waited for beside check-ins: a leftover may run for hours.
        let attempt = self.state.actions.get(id).map_or(1, |p| p.attempt);
        let waiting = leftovers(self.dirs.clone(), id.to_owned(), attempt);
        let Some((resume, waited)) = self.meanwhile(None, waiting).await else {
            return;
        };
        let Some(p) = self.state.actions.get_mut(id) else {
            return;
        };
        let resume = if after_reboot {
            // A rollback cut off after the reboot goes on; anything else starts with the verify.
            resume
                .filter(|r| *r == install::Phase::Rollback)
                .or(Some(install::Phase::Verify))
        } else {
            resume.or(p.install_started.then_some(install::Phase::Install))
        };
        // Mark the install as started, durably, right before the command runs: without that record a restart
        // could not tell a cut-off install from one that never began, so do not start it.
        p.install_started = true;
        if !self.saved_or_failed(id).await {
            return;
        }
        self.installing.store(true, Ordering::SeqCst);
        let (dirs, manifest) = (self.dirs.clone(), target.manifest.clone());
        let work = install::install(
            &dirs,
            id,
            &manifest,
            &payload,
            attempt,
            resume,
            self.profiles.clone(),
        );
        let finished = self.meanwhile(None, work).await;
        self.installing.store(false, Ordering::SeqCst);
        let Some((step, mut outcome)) = finished else {
            return;
        };
        if let Some(waited) = waited {
            outcome.detail = format!("{waited}; {}", outcome.detail);
        }
        let reboot = target.manifest.reboot == rollcall_packaging::Reboot::Required;
        let step = if step == ActionState::Succeeded && reboot && !after_reboot {
            // Installed and verified; success counts only after the verify that follows the reboot.
            outcome.detail = format!(
                "{}; the package requires a reboot, done inside the maintenance window",
                outcome.detail
            );
            ActionState::RebootPending
        } else {
            if after_reboot && step == ActionState::Succeeded {
                outcome.detail = "verified after the reboot".into();
            }
            step
        };
        if matches!(step, ActionState::Succeeded | ActionState::RebootPending) {
            let manifest = &target.manifest;
            self.state.installed.insert(
                manifest.name.clone(),
                Installed {
                    version: manifest.version.clone(),
                    release_counter: manifest.release_counter,
                    installed_at: crate::checkin::now(),
                },
            );
            // Kept until after the reboot: the verify then runs from it.
            if step == ActionState::Succeeded
                && !self.state.payload_needed_by_another(&target.sha256, id)
            {
                let _ = std::fs::remove_file(&payload);
            }
        }
        // The outcome (and the anti-rollback counter with it) is on disk before it is reported; only then is the
        // journal entry dropped, so a crash in between still finds where it was.
        if self.report(id, step, outcome).await {
            install::Journal::of(&self.dirs, id).clear();
        }
    }

    /// The staged payload when it is still exactly what TUF verified. Otherwise it is deleted and the action goes
    /// back to downloading (at its next assignment): nothing unverified ever runs.
    async fn staged_payload(&mut self, id: &str, target: &VerifiedTarget) -> Option<PathBuf> {
        let reason = if target.has_valid_hash() {
            let path = self.dirs.staged(&target.sha256);
            let hashing = path.clone();
            let hashed =
                tokio::task::spawn_blocking(move || rollcall_packaging::sha256_file(&hashing))
                    .await;
            match hashed {
                Ok(Ok(p)) if p.sha256 == target.sha256 && p.length == target.length => {
                    return Some(path)
                }
                Ok(Ok(p)) => format!(
                    "staged payload changed on disk ({} bytes hashing to {})",
                    p.length, p.sha256
                ),
                Ok(Err(e)) => format!("staged payload unreadable: {e}"),
                Err(e) => format!("staged payload not checked: {e}"),
            }
        } else {
            "recorded payload hash is malformed".to_owned()
        };
        warn!(action = %id, reason = %reason, "Staged payload does not match what was verified; downloading it again.");
        if target.has_valid_hash() {
            let _ = std::fs::remove_file(self.dirs.staged(&target.sha256));
        }
        if let Some(p) = self.state.actions.get_mut(id) {
            p.step = ActionState::Downloading;
            p.target = None;
            p.detail = format!("{reason}; downloading it again");
        }
        let _ = self.save();
        None
    }
}

/// Wait for every command a previous agent left running (journal entries of any action), killing those past their
/// timeout. Returns the command action `id` (at `attempt`) was cut off in, and a line saying what was waited for.
/// An entry of another attempt of the action says nothing about this one, and is dropped.
pub(super) async fn leftovers(
    dirs: AgentDirs,
    id: String,
    attempt: u32,
) -> (Option<install::Phase>, Option<String>) {
    let mut said = None;
    for entry in install::journal::entries(&dirs) {
        let line = install::journal::wait_for_leftover(&entry, crate::checkin::now).await;
        if entry.action_id == id {
            said = line;
        }
    }
    let journal = install::Journal::of(&dirs, &id);
    match journal.read() {
        Ok(Some(entry)) if entry.attempt != 0 && entry.attempt != attempt => {
            journal.clear();
            (None, None)
        }
        Ok(entry) => (entry.map(|e| e.phase), said),
        Err(reason) => {
            warn!(action = %id, reason = %reason, "Treating the install as cut off: verifying first.");
            (Some(install::Phase::Install), said)
        }
    }
}
