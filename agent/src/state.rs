//! The agent's local state (`state.json`): installed packages with their release counters (anti-rollback),
//! actions in flight — with their maintenance windows and, once downloaded, what installing them needs without the
//! controller — and reports not yet acknowledged by the controller. Every change is written atomically before the
//! agent acts on it, so a restart or power loss resumes exactly here. Action states are
//! [`rollcall_proto::ActionState`], written by their shared names (`"downloading"`, `"rolled-back"`, …).
//!
//! Tested by the unit tests below (restart round trip, older state files, anti-rollback).

use std::collections::BTreeMap;
use std::path::Path;

use rollcall_packaging::Manifest;
use rollcall_proto::{v1, ActionState};
use serde::{Deserialize, Serialize};

use crate::window::{self, Decision, Window};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read agent state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("agent state {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot write agent state {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    pub release_counter: u64,
    pub installed_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionProgress {
    /// The controller's attempt number this progress belongs to.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub target_name: String,
    pub package: String,
    pub version: String,
    pub step: ActionState,
    pub attempts: u32,
    pub updated_at: i64,
    #[serde(default)]
    pub detail: String,
    /// Saved right before the install command starts: found set after a restart, it means the install was cut off
    /// while running (not merely announced).
    #[serde(default)]
    pub install_started: bool,
    /// Earliest install time from the assignment (unix seconds; 0: any time). Used only without windows.
    #[serde(default)]
    pub install_not_before: i64,
    /// The site's maintenance windows from the assignment: when not empty, the install starts only inside one.
    #[serde(default)]
    pub install_windows: Vec<Window>,
    /// The signed target, kept once its metadata verified: its hash names the `.part` and staged files, and its
    /// manifest lets a held action install from the staged payload when the controller is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<VerifiedTarget>,
    /// When the download of this attempt first failed for a network reason (0: it has not); reported so the
    /// controller shows "download failing since …" instead of a silent device.
    #[serde(default)]
    pub failing_since: i64,
    /// The rollout is urgent: it downloads over metered links too.
    #[serde(default)]
    pub urgent: bool,
    /// Set when the agent asked for the reboot the package requires (on disk before the reboot command runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootRequest>,
}

/// A reboot the agent asked for: when, and the boot it was leaving (a different boot id means it happened).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootRequest {
    pub requested_at: i64,
    pub boot_id: String,
}

/// What TUF verified about an action's target: enough to check the staged payload again and install it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedTarget {
    /// Lowercase hex sha256 of the payload, from the signed targets metadata.
    pub sha256: String,
    pub length: u64,
    /// The signed manifest (the only source of the commands the agent runs).
    pub manifest: Manifest,
}

impl VerifiedTarget {
    /// The hash becomes a file name: accept only the shape tough produces (state.json could be damaged).
    pub fn has_valid_hash(&self) -> bool {
        self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl ActionProgress {
    /// A new action (or a new attempt), before anything was fetched.
    pub fn new(attempt: u32, target_name: &str, package: &str, version: &str, now: i64) -> Self {
        ActionProgress {
            attempt,
            target_name: target_name.to_owned(),
            package: package.to_owned(),
            version: version.to_owned(),
            step: ActionState::Downloading,
            attempts: 0,
            updated_at: now,
            detail: String::new(),
            install_started: false,
            install_not_before: 0,
            install_windows: Vec::new(),
            target: None,
            failing_since: 0,
            urgent: false,
            reboot: None,
        }
    }

    /// Downloaded and verified, with what an install needs: it waits only for its window (or a cancel).
    pub fn is_held(&self) -> bool {
        matches!(
            self.step,
            ActionState::Downloaded | ActionState::Installing | ActionState::RebootPending
        ) && self.target.is_some()
    }

    /// Whether the install may start at `now`, by this action's windows.
    pub fn install_decision(&self, now: i64) -> Decision {
        window::decide(&self.install_windows, self.install_not_before, now)
    }
}

fn first_attempt() -> u32 {
    1
}

/// A report waiting for the controller's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub report_id: String,
    pub action_id: String,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub step: ActionState,
    pub exit_code: Option<i32>,
    pub detail: String,
    pub output_tail: String,
    pub at: i64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl Report {
    pub fn to_proto(&self) -> v1::ActionReport {
        v1::ActionReport {
            action_id: self.action_id.clone(),
            state: self.step.to_proto() as i32,
            exit_code: self.exit_code,
            detail: self.detail.clone(),
            output_tail: self.output_tail.clone(),
            at_unix: self.at,
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total,
            report_id: self.report_id.clone(),
            attempt: self.attempt,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentState {
    /// Installed packages by name.
    #[serde(default)]
    pub installed: BTreeMap<String, Installed>,
    /// Actions by action id.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionProgress>,
    #[serde(default)]
    pub pending_reports: Vec<Report>,
    /// Inventory hash the controller has stored.
    #[serde(default)]
    pub inventory_hash_sent: String,
    #[serde(default)]
    pub last_checkin: i64,
    #[serde(default)]
    pub checkin_interval_secs: u64,
    #[serde(default)]
    pub next_report_seq: u64,
    /// When the current client certificate was issued and when it expires (unix seconds); renewed at half-life.
    #[serde(default)]
    pub cert_issued_at: i64,
    #[serde(default)]
    pub cert_not_after: i64,
    /// The last action step that failed or rolled back, with its output tail: what a technician at the desk asks
    /// first. Kept after the action itself is forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Report>,
    /// This device's clock minus the controller's, in seconds, at the last check-in.
    #[serde(default)]
    pub clock_skew_secs: i64,
    /// Configuration drift found and not yet sent in a successful check-in (the newest [`DRIFT_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_drift: Vec<crate::profile::DriftEvent>,
}

/// Drift events kept while the controller cannot be reached; older ones are dropped first.
pub const DRIFT_KEPT: usize = 500;

/// A clock off by more than this is called out: in the log, in `status`, and in failures it may explain.
pub const CLOCK_SKEW_WARN_SECS: i64 = 300;

impl AgentState {
    /// "this device's clock is 400.0 days ahead of the controller's": when it is off by more than
    /// [`CLOCK_SKEW_WARN_SECS`].
    pub fn clock_note(&self) -> Option<String> {
        let skew = self.clock_skew_secs;
        if skew.abs() <= CLOCK_SKEW_WARN_SECS {
            return None;
        }
        let way = if skew > 0 { "ahead of" } else { "behind" };
        let amount = skew.unsigned_abs();
        let text = if amount >= 2 * 86400 {
            format!("{:.1} days", amount as f64 / 86400.0)
        } else if amount >= 7200 {
            format!("{:.1} hours", amount as f64 / 3600.0)
        } else {
            format!("{} minutes", amount / 60)
        };
        Some(format!(
            "this device's clock is {text} {way} the controller's: check its time (NTP)"
        ))
    }
}

impl AgentState {
    /// Whether the client certificate is past half its life at `now`.
    pub fn cert_due_for_renewal(&self, now: i64) -> bool {
        self.cert_not_after > 0
            && now >= self.cert_issued_at + (self.cert_not_after - self.cert_issued_at) / 2
    }
}

/// Most finished actions kept for `status`; older ones are forgotten.
const KEEP_FINISHED: usize = 50;

impl AgentState {
    pub fn load(path: &Path) -> Result<AgentState, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(source) => Err(StateError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Load the state; when it is corrupt (a disk error, a hand edit), keep it aside as `state.json.corrupt` and go on
    /// from the copy the last save replaced (`state.json.prev`), or from nothing when that is unusable too. Returns
    /// what happened, for the log and `status`, when there was something to say.
    pub fn load_or_recover(path: &Path) -> Result<(AgentState, Option<String>), StateError> {
        let reason = match AgentState::load(path) {
            Ok(state) => return Ok((state, None)),
            Err(StateError::Corrupt { reason, .. }) => reason,
            Err(e) => return Err(e),
        };
        let aside = with_suffix(path, "corrupt");
        let _ = std::fs::rename(path, &aside);
        let (state, from) = match AgentState::load(&with_suffix(path, "prev")) {
            Ok(prev) => (prev, "the copy its last save replaced"),
            Err(_) => (
                AgentState::default(),
                "an empty state (installed packages and open actions are learned again from the controller)",
            ),
        };
        let said = format!(
            "agent state {} was corrupt ({reason}); kept it as {} and went on from {from}",
            path.display(),
            aside.display()
        );
        // Written back at once: a crash before the next save must not find no state at all.
        state.save(path)?;
        Ok((state, Some(said)))
    }

    /// Save atomically; the file it replaces stays as `state.json.prev`, the copy a corrupt state recovers from.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        // The copy being replaced becomes `.prev` atomically (link under a temp name, rename over `.prev`), and
        // only when there is one: `.prev` is never removed without a replacement.
        let prev = with_suffix(path, "prev");
        let linking = with_suffix(path, "prev.tmp");
        let _ = std::fs::remove_file(&linking);
        if std::fs::hard_link(path, &linking).is_ok() {
            let _ = std::fs::rename(&linking, &prev);
        }
        write_atomic(path, &bytes, 0o600).map_err(|source| StateError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Record a step of an action and queue its report.
    pub fn record(&mut self, action_id: &str, step: ActionState, outcome: Outcome, now: i64) {
        let mut attempt = first_attempt();
        if let Some(a) = self.actions.get_mut(action_id) {
            a.step = step;
            a.updated_at = now;
            a.detail = outcome.detail.clone();
            attempt = a.attempt;
        }
        self.next_report_seq += 1;
        let report = Report {
            report_id: format!("{action_id}#{}", self.next_report_seq),
            action_id: action_id.to_owned(),
            attempt,
            step,
            exit_code: outcome.exit_code,
            detail: outcome.detail,
            output_tail: outcome.output_tail,
            at: now,
            bytes_done: outcome.bytes_done,
            bytes_total: outcome.bytes_total,
        };
        if matches!(step, ActionState::Failed | ActionState::RolledBack) {
            self.last_failure = Some(report.clone());
        }
        self.pending_reports.push(report);
        self.forget_old_actions();
    }

    /// Drop reports the controller acknowledged.
    pub fn acknowledge(&mut self, report_ids: &[String]) {
        self.pending_reports
            .retain(|r| !report_ids.contains(&r.report_id));
    }

    /// The anti-rollback rule: a release counter must be higher than the installed one, unless it is the same
    /// version again (a reinstall). A lower counter is a downgrade; an equal one with another version is a
    /// second package claiming the same release.
    pub fn rollback_refusal(
        &self,
        package: &str,
        version: &str,
        release_counter: u64,
    ) -> Option<String> {
        let installed = self.installed.get(package)?;
        if release_counter < installed.release_counter {
            return Some(format!(
                "release counter {release_counter} is lower than the installed {} ({}): refusing a downgrade",
                installed.release_counter, installed.version
            ));
        }
        (release_counter == installed.release_counter && version != installed.version).then(|| {
            format!(
                "version {version} has release counter {release_counter}, the same as the installed {}: a new \
                 version needs a higher counter",
                installed.version
            )
        })
    }

    /// Ids of the actions this agent holds and has not finished, for the controller (it answers with cancels).
    pub fn open_action_ids(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter(|(_, a)| !a.step.is_terminal())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether an open action other than `except` still needs the payload with this hash.
    pub fn payload_needed_by_another(&self, sha256: &str, except: &str) -> bool {
        self.actions.iter().any(|(id, a)| {
            id != except
                && !a.step.is_terminal()
                && a.target.as_ref().is_some_and(|t| t.sha256 == sha256)
        })
    }

    /// The earliest time a held action's install may start, when one is waiting for a known time: the run loop
    /// wakes then, with or without the controller.
    pub fn next_install_time(&self, now: i64) -> Option<i64> {
        self.actions
            .values()
            .filter(|a| a.is_held())
            .filter_map(|a| a.install_decision(now).wake_at())
            .min()
    }

    /// Held actions whose install may start at `now`.
    pub fn due_for_install(&self, now: i64) -> Vec<String> {
        self.actions
            .iter()
            .filter(|(_, a)| a.is_held() && a.install_decision(now) == Decision::Install)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn installed_proto(&self) -> Vec<v1::InstalledPackage> {
        self.installed
            .iter()
            .map(|(name, p)| v1::InstalledPackage {
                name: name.clone(),
                version: p.version.clone(),
                release_counter: p.release_counter,
                installed_at_unix: p.installed_at,
            })
            .collect()
    }

    fn forget_old_actions(&mut self) {
        let finished: Vec<(i64, String)> = self
            .actions
            .iter()
            .filter(|(_, a)| a.step.is_terminal())
            .map(|(id, a)| (a.updated_at, id.clone()))
            .collect();
        if finished.len() > KEEP_FINISHED {
            let mut finished = finished;
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() - KEEP_FINISHED) {
                if !self.pending_reports.iter().any(|r| &r.action_id == id) {
                    self.actions.remove(id);
                }
            }
        }
    }
}

/// What a step produced, for its report.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub detail: String,
    pub output_tail: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl Outcome {
    pub fn detail(detail: impl Into<String>) -> Outcome {
        Outcome {
            detail: detail.into(),
            ..Outcome::default()
        }
    }
}

pub use rollcall_packaging::atomic::write as write_atomic;

/// `state.json` → `state.json.<suffix>`.
fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_acknowledges_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = AgentState::default();
        s.actions.insert(
            "r1/a".into(),
            ActionProgress::new(1, "app_1.tar.gz", "app", "1", 1),
        );
        s.record("r1/a", ActionState::Downloaded, Outcome::detail("ok"), 2);
        s.record("r1/a", ActionState::Succeeded, Outcome::default(), 3);
        s.save(&path).unwrap();
        let mut loaded = AgentState::load(&path).unwrap();
        assert_eq!(loaded.actions["r1/a"].step, ActionState::Succeeded);
        assert_eq!(loaded.pending_reports.len(), 2);
        let first = loaded.pending_reports[0].report_id.clone();
        loaded.acknowledge(&[first]);
        assert_eq!(loaded.pending_reports.len(), 1);
        assert_eq!(loaded.pending_reports[0].step, ActionState::Succeeded);
    }

    /// A state.json written by the agent before it shared `ActionState` (its own `Step`, no windows, no target):
    /// every former step name still loads, and the new fields take their defaults.
    #[test]
    fn a_state_file_with_the_former_step_names_loads() {
        let names = [
            ("downloading", ActionState::Downloading),
            ("downloaded", ActionState::Downloaded),
            ("installing", ActionState::Installing),
            ("succeeded", ActionState::Succeeded),
            ("failed", ActionState::Failed),
            ("rolled-back", ActionState::RolledBack),
            ("skipped", ActionState::Skipped),
        ];
        let actions: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                format!(
                    r#""r{i}/a": {{"attempt": 1, "target_name": "app_1.tar.gz", "package": "app", "version": "1",
                        "step": "{name}", "attempts": 1, "updated_at": 5, "detail": "", "install_started": false}}"#
                )
            })
            .collect();
        let reports: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                format!(
                    r#"{{"report_id": "r{i}/a#{i}", "action_id": "r{i}/a", "attempt": 1, "step": "{name}",
                        "exit_code": null, "detail": "", "output_tail": "", "at": 5, "bytes_done": 0,
                        "bytes_total": 0}}"#
                )
            })
            .collect();
        let old = format!(
            r#"{{"installed": {{}}, "actions": {{{}}}, "pending_reports": [{}], "inventory_hash_sent": "h",
                "last_checkin": 5, "checkin_interval_secs": 60, "next_report_seq": 7}}"#,
            actions.join(","),
            reports.join(",")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, old).unwrap();
        let loaded = AgentState::load(&path).unwrap();
        for (i, (name, state)) in names.iter().enumerate() {
            let action = &loaded.actions[&format!("r{i}/a")];
            assert_eq!(action.step, *state, "{name}");
            assert_eq!(action.step.as_str(), *name);
            assert_eq!(loaded.pending_reports[i].step, *state, "{name}");
            assert_eq!(
                loaded.pending_reports[i].to_proto().state,
                state.to_proto() as i32
            );
            assert!(action.install_windows.is_empty() && action.install_not_before == 0);
            assert_eq!(action.target, None);
        }
        assert_eq!(loaded.next_report_seq, 7);
        assert_eq!(
            loaded.open_action_ids(),
            vec!["r0/a".to_owned(), "r1/a".to_owned(), "r2/a".to_owned()],
            "downloading, downloaded and installing are open"
        );
        assert!(
            loaded.due_for_install(i64::MAX).is_empty(),
            "an old downloaded action has no verified target to install offline"
        );
    }

    #[test]
    fn refuses_lower_release_counters() {
        let mut s = AgentState::default();
        assert_eq!(s.rollback_refusal("app", "1.0", 1), None);
        s.installed.insert(
            "app".into(),
            Installed {
                version: "2.0".into(),
                release_counter: 5,
                installed_at: 0,
            },
        );
        assert!(s
            .rollback_refusal("app", "1.9", 4)
            .unwrap()
            .contains("lower than the installed 5"));
        // The same version again is a reinstall; another version with the same counter is refused.
        assert_eq!(s.rollback_refusal("app", "2.0", 5), None);
        assert!(s
            .rollback_refusal("app", "2.0-evil", 5)
            .unwrap()
            .contains("the same as the installed 2.0"));
        assert_eq!(s.rollback_refusal("app", "2.1", 6), None);
    }

    #[test]
    fn a_corrupt_state_is_kept_aside_and_the_previous_copy_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = AgentState::default();
        s.installed.insert(
            "app".into(),
            Installed {
                version: "1".into(),
                release_counter: 3,
                installed_at: 0,
            },
        );
        s.save(&path).unwrap();
        s.record("r1/a", ActionState::Succeeded, Outcome::default(), 5);
        s.save(&path).unwrap();
        // Torn by something outside the agent.
        std::fs::write(&path, b"{\"installed\": {\"app\"").unwrap();
        let (loaded, said) = AgentState::load_or_recover(&path).unwrap();
        let said = said.unwrap();
        assert!(
            said.contains("state.json was corrupt") && said.contains("state.json.corrupt"),
            "{said}"
        );
        assert_eq!(
            loaded.installed["app"].release_counter, 3,
            "the anti-rollback counter survives"
        );
        assert_eq!(
            loaded.pending_reports.len(),
            0,
            "the copy before the last save"
        );
        assert!(dir.path().join("state.json.corrupt").exists());
        assert_eq!(
            AgentState::load(&path).unwrap().installed["app"].release_counter,
            3,
            "the recovered state is written back at once"
        );

        // Both unusable: an empty state, said so.
        std::fs::write(&path, b"garbage").unwrap();
        std::fs::write(dir.path().join("state.json.prev"), b"garbage").unwrap();
        let (loaded, said) = AgentState::load_or_recover(&path).unwrap();
        assert!(loaded.installed.is_empty());
        assert!(said.unwrap().contains("an empty state"));
        let (_, said) = AgentState::load_or_recover(&dir.path().join("absent.json")).unwrap();
        assert_eq!(said, None, "no file yet is not corruption");
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = AgentState::load(&path).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("corrupt"), "{e}");
    }
}
