//! Installing a verified payload: extract it safely, run the signed install command, then the verify command,
//! and the rollback command when either fails. Only commands from the TUF-verified manifest ever run.

pub mod runner;

use std::path::Path;
use std::time::Duration;

use rollcall_packaging::Manifest;

use crate::config::AgentDirs;
use crate::state::{Outcome, Step};
use runner::RunResult;

/// Install `payload` (already verified) as described by `manifest`. Returns the final step and its report.
pub async fn install(
    dirs: &AgentDirs,
    action_id: &str,
    manifest: &Manifest,
    payload: &Path,
) -> (Step, Outcome) {
    let work = dirs.work().join(action_id.replace(['/', '\\', ':'], "_"));
    if work.exists() {
        let _ = std::fs::remove_dir_all(&work);
    }
    if let Some(parent) = work.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = rollcall_packaging::extract_payload(payload, &work) {
        return (
            Step::Failed,
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

    let installed = run(&manifest.install).await;
    let result = if !installed.success() {
        undo(manifest, &installed, "install", run).await
    } else {
        let verified = run(&manifest.verify).await;
        if verified.success() {
            (
                Step::Succeeded,
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
) -> (Step, Outcome)
where
    F: Fn(&rollcall_packaging::Command) -> Fut,
    Fut: std::future::Future<Output = RunResult>,
{
    let failure = failed.describe(what);
    let Some(rollback) = &manifest.rollback else {
        return (
            Step::Failed,
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
        (Step::RolledBack, format!("{failure}; rolled back"))
    } else {
        (
            Step::Failed,
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
