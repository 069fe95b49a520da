//! Installing a verified payload: extract it safely, then run the signed commands as a pipeline of steps — install,
//! verify, and rollback when either fails — each step a function of the last command's result that returns the next.
//! Only commands from the TUF-verified manifest ever run. Every command is recorded in the action's journal
//! (`journal`) before it starts and with its process group once it runs, so an agent killed halfway knows on restart
//! which command was cut off and whether it still runs.

pub mod journal;
pub mod runner;

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use rollcall_packaging::{Manifest, PackageKind};
use rollcall_proto::ActionState;
use tracing::warn;

use crate::config::AgentDirs;
use crate::profile::Profiles;
use crate::state::Outcome;
pub use journal::{Journal, Phase, Running};
use runner::RunResult;

/// The next thing an install does.
#[derive(Debug)]
enum Step {
    /// An install command was cut off by a restart: verify first, install again only if that fails.
    Recheck,
    Install,
    Verify,
    /// A command failed: roll back when the package can.
    Undo {
        failure: String,
        exit_code: Option<i32>,
    },
    Done(ActionState, Outcome),
}

impl Step {
    /// Where an install begins: from the start, or where the journal says an earlier agent was cut off.
    fn first(resume: Option<Phase>) -> Step {
        match resume {
            None => Step::Install,
            Some(Phase::Install) => Step::Recheck,
            Some(Phase::Verify) => Step::Verify,
            Some(Phase::Rollback) => Step::Undo {
                failure: "install or verify failed before the agent restarted".into(),
                exit_code: None,
            },
        }
    }

    /// The step after the command of `self` ended with `r`.
    fn after(self, r: &RunResult) -> Step {
        let done = |state, exit_code, detail: &str| {
            Step::Done(
                state,
                Outcome {
                    exit_code,
                    detail: detail.to_owned(),
                    ..Outcome::default()
                },
            )
        };
        let failed = |what| Step::Undo {
            failure: r.describe(what),
            exit_code: r.exit_code(),
        };
        match self {
            Step::Recheck if r.success() => done(
                ActionState::Succeeded,
                Some(0),
                "verified after an agent restart (the interrupted install had finished)",
            ),
            Step::Recheck => Step::Install,
            Step::Install if r.success() => Step::Verify,
            Step::Install => failed("install"),
            Step::Verify if r.success() => {
                done(ActionState::Succeeded, Some(0), "installed and verified")
            }
            Step::Verify => failed("verify"),
            Step::Undo { failure, exit_code } if r.success() => done(
                ActionState::RolledBack,
                exit_code,
                &format!("{failure}; rolled back"),
            ),
            Step::Undo { failure, exit_code } => done(
                ActionState::Failed,
                exit_code,
                &format!("{failure}; {}", r.describe("rollback")),
            ),
            Step::Done(..) => self,
        }
    }

    /// The command this step runs — with the phase the journal records for it — or the result when there is none
    /// to run. A recheck runs verify but is journaled as install: cut off again, it is still an install whose end
    /// is unknown (verify first, install again only if that fails).
    fn command(
        self,
        manifest: &Manifest,
    ) -> Result<(Phase, &rollcall_packaging::Command, Step), Step> {
        match self {
            Step::Recheck => Ok((Phase::Install, &manifest.verify, self)),
            Step::Verify => Ok((Phase::Verify, &manifest.verify, self)),
            Step::Install => Ok((Phase::Install, &manifest.install, self)),
            Step::Undo { failure, exit_code } => match &manifest.rollback {
                Some(rollback) => {
                    Ok((Phase::Rollback, rollback, Step::Undo { failure, exit_code }))
                }
                None => Err(Step::Done(
                    ActionState::Failed,
                    Outcome {
                        exit_code,
                        detail: failure,
                        ..Outcome::default()
                    },
                )),
            },
            Step::Done(..) => Err(self),
        }
    }
}

/// Install `payload` (already verified) as described by `manifest`. Returns the final step and its report.
///
/// `resume` is the command an earlier agent was running for this action when it stopped (crash, power loss), from
/// the journal; its leftover process has been waited for already (`journal::wait_for_leftover`). The journal entry
/// stays until the caller saved the outcome and calls [`Journal::clear`].
pub async fn install(
    dirs: &AgentDirs,
    action_id: &str,
    manifest: &Manifest,
    payload: &Path,
    attempt: u32,
    resume: Option<Phase>,
    profiles: Arc<Profiles>,
) -> (ActionState, Outcome) {
    // The action id comes from the network: never use it as a path. A hash names the folder.
    let work = dirs
        .work()
        .join(&rollcall_proto::sha256_hex(action_id.as_bytes())[..16]);
    if work.exists() {
        let _ = std::fs::remove_dir_all(&work);
    }
    if let Some(parent) = work.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = rollcall_packaging::extract_payload(payload, &work) {
        return (
            ActionState::Failed,
            Outcome::detail(format!("payload could not be extracted: {e}")),
        );
    }
    if manifest.kind == PackageKind::Config {
        // No commands: the agent applies the profile itself, all or nothing (again after a restart: it is
        // idempotent, and its own journal finishes or undoes a cut-off apply).
        let outcome = apply_profile(profiles, manifest, work.clone()).await;
        let _ = std::fs::remove_dir_all(&work);
        return outcome;
    }
    let env = vec![
        ("ROLLCALL_PACKAGE".to_owned(), manifest.name.clone()),
        ("ROLLCALL_VERSION".to_owned(), manifest.version.clone()),
        (
            "ROLLCALL_RELEASE_COUNTER".to_owned(),
            manifest.release_counter.to_string(),
        ),
        (
            "ROLLCALL_DATA_DIR".to_owned(),
            dirs.root().display().to_string(),
        ),
        (
            "ROLLCALL_PAYLOAD_DIR".to_owned(),
            work.display().to_string(),
        ),
    ];
    let journal = Journal::of(dirs, action_id);
    let mut tails: Vec<String> = Vec::new();
    let mut step = Step::first(resume);
    let (state, mut outcome) = loop {
        let (phase, command, current) = match step.command(manifest) {
            Ok(next) => next,
            Err(Step::Done(state, outcome)) => break (state, outcome),
            Err(other) => {
                step = other;
                continue;
            }
        };
        let running = Running {
            action_id: action_id.to_owned(),
            phase,
            pgid: 0,
            leader_start: None,
            started_at: 0,
            timeout_secs: 0,
            boot_id: journal::boot_id(),
            attempt,
        };
        let ran = match run_journaled(&journal, running, command, &work, &env).await {
            Ok(ran) => ran,
            Err(e) => {
                let detail = format!(
                    "cannot record the {} command in {}: {e}",
                    phase.as_str(),
                    journal.path().display()
                );
                break (ActionState::Failed, Outcome::detail(detail));
            }
        };
        if !ran.tail.is_empty() {
            tails.push(ran.tail.clone());
        }
        step = current.after(&ran);
    };
    outcome.output_tail = tails.join("\n");
    let _ = std::fs::remove_dir_all(&work);
    (state, outcome)
}

/// Apply a config package's profile from its extracted payload `work`.
async fn apply_profile(
    profiles: Arc<Profiles>,
    manifest: &Manifest,
    work: std::path::PathBuf,
) -> (ActionState, Outcome) {
    let (name, version) = (manifest.name.clone(), manifest.version.clone());
    let applied = tokio::task::spawn_blocking(move || profiles.apply(&name, &version, &work)).await;
    match applied {
        Ok(Ok(applied)) => (ActionState::Succeeded, Outcome::detail(applied.detail)),
        // The words say what was refused, or what failed and that it was put back.
        Ok(Err(e)) => (ActionState::Failed, Outcome::detail(e.to_string())),
        Err(e) => (
            ActionState::Failed,
            Outcome::detail(format!("the profile apply stopped unexpectedly: {e}")),
        ),
    }
}

/// Run one signed command, recorded in the journal before it starts and with its process group once it runs.
async fn run_journaled(
    journal: &Journal,
    mut running: Running,
    command: &rollcall_packaging::Command,
    work: &Path,
    env: &[(String, String)],
) -> std::io::Result<RunResult> {
    let action_id = running.action_id.clone();
    running.started_at = crate::checkin::now();
    running.timeout_secs = command.timeout_secs;
    journal.write(&running)?;
    let timeout = Duration::from_secs(command.timeout_secs);
    // Without its process group on disk a restart could not wait for the command: then it does not start.
    let mut unrecorded = None;
    let started = |pid: u32| {
        running.pgid = pid;
        running.leader_start = crate::platform::start_time(pid);
        match journal.write(&running) {
            Ok(()) => true,
            Err(e) => {
                warn!(action = %action_id, error = %e, "Cannot record the installer's process group: not starting it.");
                unrecorded = Some(e);
                false
            }
        }
    };
    let ran = runner::run(&command.command, work, env, timeout, started).await;
    match unrecorded {
        Some(e) => Err(e),
        None => Ok(ran),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn profiles(dirs: &AgentDirs) -> Arc<Profiles> {
        Arc::new(Profiles::new(dirs.profiles(), Vec::new(), Vec::new()))
    }

    fn package(dir: &Path, install: &str) -> (Manifest, std::path::PathBuf) {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("install.sh"), install).unwrap();
        std::fs::write(src.join("verify.sh"), "test -f \"$ROLLCALL_DATA_DIR/ok\"\n").unwrap();
        let manifest = Manifest::from_toml_str(
            "name = \"app\"\nversion = \"1\"\nrelease_counter = 1\nplatforms = [\"any\"]\n\
             [install]\ncommand = [\"sh\", \"install.sh\"]\n[verify]\ncommand = [\"sh\", \"verify.sh\"]\n",
        )
        .unwrap();
        let payload = dir.join("payload.tar.gz");
        rollcall_packaging::build_payload(&src, &payload).unwrap();
        (manifest, payload)
    }

    #[tokio::test]
    async fn a_hostile_action_id_cannot_point_the_work_folder_at_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("identity")).unwrap();
        std::fs::write(data.join("identity/client.pem"), "secret").unwrap();
        let (manifest, payload) = package(tmp.path(), "touch \"$ROLLCALL_DATA_DIR/ok\"\n");
        let dirs = AgentDirs::new(&data);
        for id in ["..", ".", "", "../../etc", "r1/../../x"] {
            let (step, outcome) =
                install(&dirs, id, &manifest, &payload, 1, None, profiles(&dirs)).await;
            assert_eq!(step, ActionState::Succeeded, "{id:?}: {}", outcome.detail);
            assert!(
                data.join("identity/client.pem").exists(),
                "{id:?} must not touch the data dir"
            );
        }
        assert_eq!(
            std::fs::read_dir(dirs.work()).unwrap().count(),
            0,
            "work folders cleaned up"
        );
    }

    #[tokio::test]
    async fn a_failing_install_without_rollback_reports_the_exit_code() {
        let tmp = tempfile::tempdir().unwrap();
        let (manifest, payload) = package(tmp.path(), "echo nope >&2; exit 7\n");
        let dirs = AgentDirs::new(tmp.path().join("data"));
        let (step, outcome) =
            install(&dirs, "r1/a", &manifest, &payload, 1, None, profiles(&dirs)).await;
        assert_eq!(step, ActionState::Failed);
        assert_eq!(outcome.exit_code, Some(7));
        assert_eq!(outcome.detail, "install command exited 7");
        assert!(outcome.output_tail.contains("nope"));
    }

    #[tokio::test]
    async fn an_interrupted_install_that_had_finished_is_only_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("ok"), "").unwrap();
        let (manifest, payload) = package(
            tmp.path(),
            "echo ran >> \"$ROLLCALL_DATA_DIR/install-runs\"\n",
        );
        let dirs = AgentDirs::new(&data);
        let (step, outcome) = install(
            &dirs,
            "r1/a",
            &manifest,
            &payload,
            1,
            Some(Phase::Install),
            profiles(&dirs),
        )
        .await;
        assert_eq!(step, ActionState::Succeeded, "{}", outcome.detail);
        assert!(outcome.detail.contains("verified after an agent restart"));
        assert!(
            !data.join("install-runs").exists(),
            "the install command did not run again"
        );

        std::fs::remove_file(data.join("ok")).unwrap();
        let (step, _) = install(
            &dirs,
            "r1/a",
            &manifest,
            &payload,
            1,
            Some(Phase::Install),
            profiles(&dirs),
        )
        .await;
        assert_eq!(
            step,
            ActionState::Failed,
            "verify fails, install runs, verify still fails"
        );
        assert!(data.join("install-runs").exists());
    }
}
