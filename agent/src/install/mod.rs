//! Installing a verified payload: extract it safely, run the signed install command, then the verify command,
//! and the rollback command when either fails. Only commands from the TUF-verified manifest ever run.

pub mod runner;

use std::path::Path;
use std::time::Duration;

use rollcall_packaging::Manifest;
use rollcall_proto::ActionState;

use crate::config::AgentDirs;
use crate::state::Outcome;
use runner::RunResult;

/// Install `payload` (already verified) as described by `manifest`. Returns the final step and its report.
///
/// `interrupted` says an earlier run of this install was cut off (agent crash or power loss while the install
/// command ran): then the verify command runs first, and the install runs again only if verify fails.
pub async fn install(
    dirs: &AgentDirs,
    action_id: &str,
    manifest: &Manifest,
    payload: &Path,
    interrupted: bool,
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
    let run = |cmd: &rollcall_packaging::Command| {
        let argv = cmd.command.clone();
        let timeout = Duration::from_secs(cmd.timeout_secs);
        let (work, env) = (work.clone(), env.clone());
        async move { runner::run(&argv, &work, &env, timeout).await }
    };

    if interrupted {
        let verified = run(&manifest.verify).await;
        if verified.success() {
            let _ = std::fs::remove_dir_all(&work);
            return (
                ActionState::Succeeded,
                Outcome {
                    exit_code: Some(0),
                    detail:
                        "verified after an agent restart (the interrupted install had finished)"
                            .into(),
                    output_tail: verified.tail,
                    ..Outcome::default()
                },
            );
        }
    }
    let installed = run(&manifest.install).await;
    let result = if !installed.success() {
        undo(manifest, &installed, "install", run).await
    } else {
        let verified = run(&manifest.verify).await;
        if verified.success() {
            (
                ActionState::Succeeded,
                Outcome {
                    exit_code: Some(0),
                    detail: "installed and verified".into(),
                    output_tail: join_tails(&installed.tail, &verified.tail),
                    ..Outcome::default()
                },
            )
        } else {
            undo(manifest, &verified, "verify", run).await
        }
    };
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// After a failed install or verify: run the rollback command if the package has one.
async fn undo<F, Fut>(
    manifest: &Manifest,
    failed: &RunResult,
    what: &str,
    run: F,
) -> (ActionState, Outcome)
where
    F: Fn(&rollcall_packaging::Command) -> Fut,
    Fut: std::future::Future<Output = RunResult>,
{
    let failure = failed.describe(what);
    let Some(rollback) = &manifest.rollback else {
        return (
            ActionState::Failed,
            Outcome {
                exit_code: failed.exit_code(),
                detail: failure,
                output_tail: failed.tail.clone(),
                ..Outcome::default()
            },
        );
    };
    let rolled = run(rollback).await;
    let (step, detail) = if rolled.success() {
        (ActionState::RolledBack, format!("{failure}; rolled back"))
    } else {
        (
            ActionState::Failed,
            format!("{failure}; {}", rolled.describe("rollback")),
        )
    };
    (
        step,
        Outcome {
            exit_code: failed.exit_code(),
            detail,
            output_tail: join_tails(&failed.tail, &rolled.tail),
            ..Outcome::default()
        },
    )
}

fn join_tails(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}\n{b}"),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

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
            let (step, outcome) = install(&dirs, id, &manifest, &payload, false).await;
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
        let (step, outcome) = install(
            &AgentDirs::new(tmp.path().join("data")),
            "r1/a",
            &manifest,
            &payload,
            false,
        )
        .await;
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
        let (step, outcome) = install(&dirs, "r1/a", &manifest, &payload, true).await;
        assert_eq!(step, ActionState::Succeeded, "{}", outcome.detail);
        assert!(outcome.detail.contains("verified after an agent restart"));
        assert!(
            !data.join("install-runs").exists(),
            "the install command did not run again"
        );

        std::fs::remove_file(data.join("ok")).unwrap();
        let (step, _) = install(&dirs, "r1/a", &manifest, &payload, true).await;
        assert_eq!(
            step,
            ActionState::Failed,
            "verify fails, install runs, verify still fails"
        );
        assert!(data.join("install-runs").exists());
    }
}
