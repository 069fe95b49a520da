//! Step 5 of an action whose package requires a reboot: installed and verified, it is `reboot-pending` until the
//! site's maintenance window is open; then the agent records the reboot (with the boot id it is leaving) on disk,
//! says so to the controller, and runs the reboot command (the platform's, or `reboot_command` from the settings).
//! Once the device is back — a different boot id — the verify command runs again, and only that makes it a success.

use std::time::Duration;

use rollcall_proto::ActionState;
use tracing::{info, warn};

use crate::checkin::Agent;
use crate::install::runner;
use crate::state::{Outcome, RebootRequest};

/// How long the reboot command may take to return (the machine usually goes down before it does).
const REBOOT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// A device still in the same boot this long after its reboot command returned did not reboot.
const REBOOT_GRACE_SECS: i64 = 30 * 60;

impl Agent {
    /// This boot's id (a reboot changes it), or `None` when it cannot be read.
    fn boot_id(&self) -> Option<String> {
        std::fs::read_to_string(&self.settings.boot_id_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// Whether the reboot command ran in this boot: the device is going down, so nothing new starts.
    pub(super) fn going_down(&mut self) -> bool {
        if self.rebooting.is_some() && self.rebooting != self.boot_id() {
            self.rebooting = None;
        }
        self.rebooting.is_some()
    }

    /// Reboot for a `reboot-pending` action whose window is open (decided at `now`): once.
    pub(super) async fn reboot(&mut self, id: &str, now: i64) {
        let Some(p) = self.state.actions.get(id) else {
            return;
        };
        if p.reboot.is_some() {
            // Requested already: the device goes down, or went down and came back (see `after_reboot`).
            return;
        }
        // Nothing a previous agent left running may be cut off by the reboot.
        let attempt = p.attempt;
        let waiting = super::release::leftovers(self.dirs.clone(), id.to_owned(), attempt);
        if self.meanwhile(None, waiting).await.is_none() {
            return;
        }
        let Some(boot_id) = self.boot_id() else {
            let detail = format!(
                "cannot read the boot id from {}: a reboot could not be told from a restart",
                self.settings.boot_id_file.display()
            );
            self.report(id, ActionState::Failed, Outcome::detail(detail))
                .await;
            return;
        };
        if let Some(p) = self.state.actions.get_mut(id) {
            p.reboot = Some(RebootRequest {
                requested_at: now,
                boot_id,
            });
        }
        // On disk, and told, before the machine goes down; if it cannot be saved, no reboot (the next pass tries
        // again).
        if !self
            .report(
                id,
                ActionState::RebootPending,
                Outcome::detail("rebooting now: the package requires it"),
            )
            .await
        {
            if let Some(p) = self.state.actions.get_mut(id) {
                p.reboot = None;
            }
            return;
        }
        let command = self.settings.reboot_command.clone();
        info!(action = %id, command = %command.join(" "), "Rebooting for the installed package.");
        let ran = runner::run(
            &command,
            self.dirs.root(),
            &[],
            REBOOT_COMMAND_TIMEOUT,
            |_| true,
        )
        .await;
        if ran.success() {
            // The boot it was asked in: once that is no longer this boot, work goes on.
            self.rebooting = self
                .state
                .actions
                .get(id)
                .and_then(|p| p.reboot.as_ref())
                .map(|r| r.boot_id.clone());
            return;
        }
        {
            warn!(action = %id, "The reboot command failed.");
            if let Some(p) = self.state.actions.get_mut(id) {
                p.reboot = None;
            }
            let outcome = Outcome {
                exit_code: ran.exit_code(),
                detail: format!(
                    "installed, but {}; the device was not rebooted",
                    ran.describe("reboot")
                ),
                output_tail: ran.tail,
                ..Outcome::default()
            };
            self.report(id, ActionState::Failed, outcome).await;
        }
    }

    /// Actions whose reboot was asked for at least [`REBOOT_GRACE_SECS`] before `now` while this is still the same
    /// boot: the reboot did not happen. They fail, saying so, and the agent takes work again.
    pub(super) async fn reboot_overdue(&mut self, now: i64) {
        let Some(boot_id) = self.boot_id() else {
            return;
        };
        let overdue: Vec<String> = self
            .state
            .actions
            .iter()
            .filter(|(_, a)| {
                a.step == ActionState::RebootPending
                    && a.reboot.as_ref().is_some_and(|r| {
                        r.boot_id == boot_id && now - r.requested_at >= REBOOT_GRACE_SECS
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            warn!(action = %id, "The device did not reboot after the reboot command.");
            if let Some(p) = self.state.actions.get_mut(&id) {
                p.reboot = None;
            }
            self.rebooting = None;
            let detail = format!(
                "installed, but the device did not reboot within {} minutes of the reboot command; reboot it, then retry",
                REBOOT_GRACE_SECS / 60
            );
            self.report(&id, ActionState::Failed, Outcome::detail(detail))
                .await;
        }
    }

    /// Actions whose reboot has happened (this boot's id differs from the one recorded): verify them now, whatever
    /// the window — the install and the reboot are done, only the truth is missing.
    pub(super) async fn after_reboot(&mut self, now: i64) {
        let Some(boot_id) = self.boot_id() else {
            return;
        };
        let rebooted: Vec<String> = self
            .state
            .actions
            .iter()
            .filter(|(_, a)| {
                a.step == ActionState::RebootPending
                    && a.reboot.as_ref().is_some_and(|r| r.boot_id != boot_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in rebooted {
            info!(action = %id, "Back from the reboot: verifying the installed package.");
            self.install(&id, now, true).await;
        }
    }
}
