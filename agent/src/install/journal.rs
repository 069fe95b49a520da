//! The install journal: which signed command of an action runs, in which process group, since when. One small file
//! per action (`journal/<hash of the action id>.json`), written atomically (fsync, rename) before the command
//! starts and again with its process group right after it started, removed once the action's outcome is saved in
//! `state.json`. After a crash the agent reads it to know where the install was cut off (install, verify or
//! rollback) and whether that installer still runs: it waits for it, or kills its group after its timeout, before
//! anything else starts — so two installers never run side by side.
//!
//! Tested by the unit tests below (round trip, a corrupt file, waiting for and killing a leftover group).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::AgentDirs;
use crate::platform;

/// The three signed commands, in the order an install may run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Install,
    Verify,
    Rollback,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Install => "install",
            Phase::Verify => "verify",
            Phase::Rollback => "rollback",
        }
    }
}

/// One journal entry: the command that runs (or ran when the agent stopped) for an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub action_id: String,
    pub phase: Phase,
    /// Its process group (the command leads it); 0 until the command started.
    #[serde(default)]
    pub pgid: u32,
    /// The leader's start time, so a reused pid is never taken for the installer.
    #[serde(default)]
    pub leader_start: Option<u64>,
    /// Unix seconds when the command started.
    pub started_at: i64,
    /// The command's timeout from the signed manifest: a leftover is killed once it has run this long.
    pub timeout_secs: u64,
    /// The boot it ran in: after a reboot nothing of it can be left, and its group id may name someone else's.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The attempt it belongs to: an entry of an earlier attempt says nothing about a new one.
    #[serde(default)]
    pub attempt: u32,
}

/// This boot's id (None where it cannot be read).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string(platform::default_boot_id_file())
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The journal file of one action.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn of(dirs: &AgentDirs, action_id: &str) -> Journal {
        // The action id comes from the network: a hash names the file.
        let name = &rollcall_proto::sha256_hex(action_id.as_bytes())[..16];
        Journal {
            path: dirs.journal().join(format!("{name}.json")),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The entry, if any. A file that cannot be parsed is an entry of unknown phase and group: the caller treats
    /// it as an install cut off before its group was known (verify first).
    pub fn read(&self) -> Result<Option<Running>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("install journal {} is corrupt: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "cannot read install journal {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Write the entry durably (before the step it records is acted on).
    pub fn write(&self, running: &Running) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec(running).unwrap_or_default();
        crate::state::write_atomic(&self.path, &bytes, 0o600)
    }

    /// Remove the entry, once the action's outcome is saved.
    pub fn clear(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(file = %self.path.display(), error = %e, "Cannot remove the install journal.")
            }
        }
    }
}

/// Every journal entry on disk (entries that cannot be read are skipped with a warning).
pub fn entries(dirs: &AgentDirs) -> Vec<Running> {
    let Ok(dir) = std::fs::read_dir(dirs.journal()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let journal = Journal { path: e.path() };
            match journal.read() {
                Ok(entry) => entry,
                Err(reason) => {
                    warn!(reason = %reason, "Install journal entry skipped.");
                    None
                }
            }
        })
        .collect()
}

/// How often a leftover installer is looked at while the agent waits for it.
const POLL: Duration = Duration::from_millis(250);
/// How long a killed group may take to go.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Wait for a command this journal says was running when the agent last stopped, until it ends or has run for its
/// timeout (then its group is killed). Returns a line for the report when there was one.
pub async fn wait_for_leftover(running: &Running, now: impl Fn() -> i64) -> Option<String> {
    let other_boot = running.boot_id.is_some() && running.boot_id != boot_id();
    if other_boot || running.pgid == 0 || !platform::group_alive(running.pgid, running.leader_start)
    {
        return None;
    }
    let what = running.phase.as_str();
    info!(action = %running.action_id, pgid = running.pgid, command = what,
        "The {what} command from before the agent restarted still runs: waiting for it.");
    let deadline = running
        .started_at
        .saturating_add(i64::try_from(running.timeout_secs).unwrap_or(i64::MAX));
    // How long it has run: by the boot clock from its leader's start (the same boot, checked above), which a
    // stepped wall clock cannot stretch; by the wall clock where that is unknown.
    let overdue = || match running.leader_start.and_then(platform::seconds_since_start) {
        Some(ran) => ran >= running.timeout_secs,
        None => now() >= deadline,
    };
    while platform::group_alive(running.pgid, running.leader_start) {
        if overdue() {
            warn!(action = %running.action_id, pgid = running.pgid, command = what,
                "The leftover {what} command ran past its timeout: killing its process group.");
            platform::kill_tree(running.pgid);
            let killed = tokio::time::Instant::now();
            while platform::group_alive(running.pgid, running.leader_start)
                && killed.elapsed() < KILL_GRACE
            {
                tokio::time::sleep(POLL).await;
            }
            return Some(format!(
                "the {what} command left running by the previous agent ran past its {}s timeout and was killed",
                running.timeout_secs
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Some(format!(
        "waited for the {what} command left running by the previous agent to finish"
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn spawn_group(script: &str) -> (std::process::Child, u32) {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        (child, pid)
    }

    fn entry(pgid: u32, started_at: i64, timeout_secs: u64) -> Running {
        Running {
            action_id: "r1/a".into(),
            phase: Phase::Install,
            pgid,
            leader_start: platform::start_time(pgid),
            started_at,
            timeout_secs,
            boot_id: boot_id(),
            attempt: 1,
        }
    }

    #[test]
    fn an_entry_round_trips_and_a_corrupt_one_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = AgentDirs::new(tmp.path());
        let journal = Journal::of(&dirs, "r1/a");
        assert_eq!(journal.read(), Ok(None));
        let e = entry(1234, 5, 60);
        journal.write(&e).unwrap();
        assert_eq!(journal.read(), Ok(Some(e.clone())));
        assert_eq!(entries(&dirs), vec![e]);
        std::fs::write(journal.path(), b"{half").unwrap();
        let err = journal.read().unwrap_err();
        assert!(err.contains("corrupt") && err.contains(".json"), "{err}");
        assert!(entries(&dirs).is_empty());
        journal.clear();
        journal.clear();
        assert_eq!(journal.read(), Ok(None));
    }

    #[tokio::test]
    async fn a_leftover_installer_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let done = tmp.path().join("done");
        let (mut child, pid) = spawn_group(&format!("sleep 1; touch {}", done.display()));
        let reaper = std::thread::spawn(move || child.wait());
        let said = wait_for_leftover(&entry(pid, 0, 3600), || 10).await;
        assert!(done.exists(), "the leftover ran to its end");
        assert!(said.unwrap().contains("waited for the install command"));
        reaper.join().unwrap().unwrap();
        assert_eq!(
            wait_for_leftover(&entry(pid, 0, 3600), || 10).await,
            None,
            "nothing left: nothing to say"
        );
    }

    #[tokio::test]
    async fn a_leftover_past_its_timeout_is_killed_with_its_group() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("child-survived");
        let (mut child, pid) =
            spawn_group(&format!("(sleep 4; touch {}) & sleep 60", marker.display()));
        let reaper = std::thread::spawn(move || child.wait());
        // A 1 s timeout, judged by the boot clock from the leader's start; the wall clock given here (which says
        // it has not started yet) does not count where the boot clock is known.
        let said = wait_for_leftover(&entry(pid, 100, 1), || 0).await.unwrap();
        assert!(
            said.contains("ran past its 1s timeout and was killed"),
            "{said}"
        );
        reaper.join().unwrap().unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "the whole group was killed");
    }

    #[tokio::test]
    async fn an_entry_from_another_boot_is_never_waited_for_or_killed() {
        let (mut child, pid) = spawn_group("sleep 30");
        let mut e = entry(pid, 0, 5);
        e.boot_id = Some("a-boot-before-this-one".into());
        assert_eq!(wait_for_leftover(&e, || 10).await, None);
        assert!(platform::group_alive(pid, e.leader_start), "left alone");
        platform::kill_tree(pid);
        child.wait().unwrap();
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_installer() {
        let (mut child, pid) = spawn_group("sleep 30");
        let start = platform::start_time(pid);
        assert!(start.is_some());
        assert!(platform::group_alive(pid, start));
        assert!(
            !platform::group_alive(pid, start.map(|s| s + 1)),
            "a process with this pid but another start time is not our installer"
        );
        platform::kill_tree(pid);
        child.wait().unwrap();
        let gone = std::time::Instant::now();
        while platform::group_alive(pid, start) && gone.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !platform::group_alive(pid, start),
            "the whole group is gone"
        );
    }
}
