//! The `rollcall-agent` binary's refusals that need no controller.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rollcall-agent"))
}

#[test]
fn status_of_a_folder_that_never_enrolled_says_how_to_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args(["status", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not an enrolled agent") && stderr.contains("rollcall-agent enroll"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn run_refuses_to_start_unenrolled_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args(["run", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_malformed_token_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args([
            "enroll",
            "--controller",
            "https://127.0.0.1:1",
            "--token",
            "hello",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a rollcall enrollment token"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unknown_flags_exit_64() {
    let out = agent().args(["run", "--frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}
