//! The agent's local state (`state.json`): installed packages with their release counters (anti-rollback),
//! actions in flight, and reports not yet acknowledged by the controller. Every change is written atomically
//! before the agent acts on it, so a restart or power loss resumes exactly here.

use std::collections::BTreeMap;
use std::path::Path;

use rollcall_proto::v1;
use serde::{Deserialize, Serialize};

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

/// Where an action stands on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Downloading,
    Downloaded,
    Installing,
    Succeeded,
    Failed,
    RolledBack,
    Skipped,
}

impl Step {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Step::Succeeded | Step::Failed | Step::RolledBack | Step::Skipped
        )
    }

    pub fn to_proto(self) -> v1::ActionState {
        match self {
            Step::Downloading => v1::ActionState::Downloading,
            Step::Downloaded => v1::ActionState::Downloaded,
            Step::Installing => v1::ActionState::Installing,
            Step::Succeeded => v1::ActionState::Succeeded,
            Step::Failed => v1::ActionState::Failed,
            Step::RolledBack => v1::ActionState::RolledBack,
            Step::Skipped => v1::ActionState::Skipped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Downloading => "downloading",
            Step::Downloaded => "downloaded",
            Step::Installing => "installing",
            Step::Succeeded => "succeeded",
            Step::Failed => "failed",
            Step::RolledBack => "rolled-back",
            Step::Skipped => "skipped",
        }
    }
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
    pub step: Step,
    pub attempts: u32,
    pub updated_at: i64,
    #[serde(default)]
    pub detail: String,
    /// Saved right before the install command starts: found set after a restart, it means the install was cut off
    /// while running (not merely announced).
    #[serde(default)]
    pub install_started: bool,
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
    pub step: Step,
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

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(path, &bytes, 0o600).map_err(|source| StateError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Record a step of an action and queue its report.
    pub fn record(&mut self, action_id: &str, step: Step, outcome: Outcome, now: i64) {
        let mut attempt = first_attempt();
        if let Some(a) = self.actions.get_mut(action_id) {
            a.step = step;
            a.updated_at = now;
            a.detail = outcome.detail.clone();
            attempt = a.attempt;
        }
        self.next_report_seq += 1;
        self.pending_reports.push(Report {
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
        });
        self.forget_old_actions();
    }

    /// Drop reports the controller acknowledged.
    pub fn acknowledge(&mut self, report_ids: &[String]) {
        self.pending_reports
            .retain(|r| !report_ids.contains(&r.report_id));
    }

    /// The anti-rollback rule: a release counter below the installed one is refused.
    pub fn rollback_refusal(&self, package: &str, release_counter: u64) -> Option<String> {
        let installed = self.installed.get(package)?;
        (release_counter < installed.release_counter).then(|| {
            format!(
                "release counter {release_counter} is lower than the installed {} ({}): refusing a downgrade",
                installed.release_counter, installed.version
            )
        })
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
            ActionProgress {
                attempt: 1,
                target_name: "app_1.tar.gz".into(),
                package: "app".into(),
                version: "1".into(),
                step: Step::Downloading,
                attempts: 1,
                updated_at: 1,
                detail: String::new(),
                install_started: false,
            },
        );
        s.record("r1/a", Step::Downloaded, Outcome::detail("ok"), 2);
        s.record("r1/a", Step::Succeeded, Outcome::default(), 3);
        s.save(&path).unwrap();
        let mut loaded = AgentState::load(&path).unwrap();
        assert_eq!(loaded.actions["r1/a"].step, Step::Succeeded);
        assert_eq!(loaded.pending_reports.len(), 2);
        let first = loaded.pending_reports[0].report_id.clone();
        loaded.acknowledge(&[first]);
        assert_eq!(loaded.pending_reports.len(), 1);
        assert_eq!(loaded.pending_reports[0].step, Step::Succeeded);
    }

    #[test]
    fn refuses_lower_release_counters() {
        let mut s = AgentState::default();
        assert_eq!(s.rollback_refusal("app", 1), None);
        s.installed.insert(
            "app".into(),
            Installed {
                version: "2.0".into(),
                release_counter: 5,
                installed_at: 0,
            },
        );
        assert!(s
            .rollback_refusal("app", 4)
            .unwrap()
            .contains("lower than the installed 5"));
        assert_eq!(s.rollback_refusal("app", 5), None);
        assert_eq!(s.rollback_refusal("app", 6), None);
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
