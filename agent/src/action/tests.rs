//! The action pipeline against an unreachable controller: a real payload built with `build_payload`, real shell
//! install scripts in a temp dir, `state.json` on disk.

use std::path::Path;

use rollcall_packaging::Manifest;
use rollcall_proto::{v1, ActionState};

use super::{accept, Accepted};
use crate::cancel::{self, CancelOutcome};
use crate::checkin::Agent;
use crate::config::{AgentConfig, AgentDirs};
use crate::fetch;
use crate::state::{AgentState, VerifiedTarget};
use crate::window::Window;

/// 2026-11-24 01:00 UTC: the start of the test's maintenance window.
const T: i64 = 1_795_482_000;
const ID: &str = "r1/agent-1";

/// A channel to a local port nothing listens on: every check-in fails as with a controller out of reach.
fn unreachable() -> tonic::transport::Channel {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy()
}

/// Pin a real root.json, as enrollment does, so a fetch gets as far as asking the controller.
async fn pin_a_root(tmp: &Path, dirs: &AgentDirs) {
    let keys = tmp.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for name in ["root", "targets", "snapshot", "timestamp"] {
        rollcall_packaging::generate_key(&keys.join(name)).unwrap();
    }
    let online = rollcall_packaging::online::OnlineKeys::from_key_files(
        &keys.join("snapshot"),
        &keys.join("timestamp"),
    )
    .await
    .unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let repo = rollcall_packaging::ImageRepo::create(
        &tmp.join("repo"),
        &keys.join("root"),
        &keys.join("targets"),
        &online,
        expires,
    )
    .await
    .unwrap();
    std::fs::create_dir_all(dirs.root_pin().parent().unwrap()).unwrap();
    std::fs::write(dirs.root_pin(), repo.root_bytes().unwrap()).unwrap();
}

#[tokio::test]
async fn a_missing_root_pin_is_a_local_failure_not_retried_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    std::fs::create_dir_all(dirs.root()).unwrap();
    let mut agent = agent(&dirs);
    agent.process(&assignment(&[], 0), T).await;
    let p = &agent.state.actions[ID];
    assert_eq!(p.step, ActionState::Failed);
    assert!(
        p.detail.starts_with("local failure: local I/O on ") && p.detail.contains("root.json"),
        "{}",
        p.detail
    );
    assert_eq!(p.failing_since, 0, "not a network failure");
}

/// An agent starting from the `state.json` in `dirs` (as after a restart).
fn agent(dirs: &AgentDirs) -> Agent {
    let config = AgentConfig {
        version: 1,
        controller: "https://127.0.0.1:1".into(),
        agent_id: "agent-1".into(),
        site: "site-a".into(),
        hostname: Some("test-host".into()),
    };
    let state = AgentState::load(&dirs.state()).unwrap();
    Agent::with_channel(
        dirs.clone(),
        config,
        crate::config::Settings::default(),
        unreachable(),
        state,
    )
}

fn assignment(windows: &[(i64, i64)], not_before: i64) -> v1::Assignment {
    v1::Assignment {
        action_id: ID.into(),
        rollout_id: "r1".into(),
        target_name: "app_1.tar.gz".into(),
        package: "app".into(),
        version: "1".into(),
        install_not_before_unix: not_before,
        attempt: 1,
        urgent: false,
        install_windows: windows
            .iter()
            .map(|&(start_unix, end_unix)| v1::TimeRange {
                start_unix,
                end_unix,
            })
            .collect(),
    }
}

/// A real payload whose install script appends to `$ROLLCALL_DATA_DIR/installed` (after running `extra`), staged
/// as a finished download leaves it. Returns what TUF would have verified.
fn staged_package(tmp: &Path, dirs: &AgentDirs, extra: &str) -> VerifiedTarget {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("install.sh"),
        format!("{extra}echo installed >> \"$ROLLCALL_DATA_DIR/installed\"\n"),
    )
    .unwrap();
    std::fs::write(
        src.join("verify.sh"),
        "test -f \"$ROLLCALL_DATA_DIR/installed\"\n",
    )
    .unwrap();
    let manifest = Manifest::from_toml_str(
        "name = \"app\"\nversion = \"1\"\nrelease_counter = 3\nplatforms = [\"any\"]\n\
         [install]\ncommand = [\"sh\", \"install.sh\"]\n[verify]\ncommand = [\"sh\", \"verify.sh\"]\n",
    )
    .unwrap();
    let built = tmp.join("app_1.tar.gz");
    let info = rollcall_packaging::build_payload(&src, &built).unwrap();
    std::fs::create_dir_all(dirs.staged(&info.sha256).parent().unwrap()).unwrap();
    std::fs::copy(&built, dirs.staged(&info.sha256)).unwrap();
    VerifiedTarget {
        sha256: info.sha256,
        length: info.length,
        manifest,
    }
}

/// The state `fetch` leaves after a verified download (fetching itself needs a controller).
fn downloaded(agent: &mut Agent, target: VerifiedTarget) {
    agent.keep_target(ID, target);
}

/// How many times the install command ran.
fn installed_runs(dirs: &AgentDirs) -> usize {
    std::fs::read_to_string(dirs.root().join("installed")).map_or(0, |s| s.lines().count())
}

fn report_steps(state: &AgentState) -> Vec<(ActionState, String)> {
    state
        .pending_reports
        .iter()
        .map(|r| (r.step, r.detail.clone()))
        .collect()
}

#[test]
fn accept_ignores_finished_attempts_restarts_new_ones_and_updates_windows() {
    let mut state = AgentState::default();
    let mut bad = assignment(&[], 0);
    bad.action_id = "../../etc".into();
    assert_eq!(
        accept(&mut state, &bad, T),
        Accepted::Ignore("malformed action id")
    );
    assert!(state.actions.is_empty());

    let first = assignment(&[(T, T + 3600)], T);
    assert_eq!(accept(&mut state, &first, T - 10), Accepted::Fetch);
    let a = &state.actions[ID];
    assert_eq!(
        (a.step, a.attempt, a.attempts),
        (ActionState::Downloading, 1, 1)
    );
    assert_eq!(
        a.install_windows,
        vec![Window {
            start: T,
            end: T + 3600
        }]
    );

    // Downloaded and verified: a re-sent assignment only moves its windows.
    let target = VerifiedTarget {
        sha256: "ab".repeat(32),
        length: 1,
        manifest: Manifest::from_toml_str(
            "name = \"app\"\nversion = \"1\"\nrelease_counter = 1\nplatforms = [\"any\"]\n\
             [install]\ncommand = [\"true\"]\n[verify]\ncommand = [\"true\"]\n",
        )
        .unwrap(),
    };
    let a = state.actions.get_mut(ID).unwrap();
    a.step = ActionState::Downloaded;
    a.target = Some(target);
    let moved = assignment(&[(T + 86_400, T + 90_000)], T + 86_400);
    assert_eq!(accept(&mut state, &moved, T), Accepted::Held);
    let a = &state.actions[ID];
    assert_eq!(
        a.install_windows,
        vec![Window {
            start: T + 86_400,
            end: T + 90_000
        }]
    );
    assert_eq!(a.install_not_before, T + 86_400);
    assert_eq!(state.next_install_time(T), Some(T + 86_400));

    state.actions.get_mut(ID).unwrap().step = ActionState::Succeeded;
    assert_eq!(
        accept(&mut state, &moved, T),
        Accepted::Ignore("this attempt has finished")
    );
    let mut retry = moved.clone();
    retry.attempt = 2;
    assert_eq!(accept(&mut state, &retry, T), Accepted::Fetch);
    let a = &state.actions[ID];
    assert_eq!(
        (a.step, a.attempt, a.attempts),
        (ActionState::Downloading, 2, 2)
    );
    assert_eq!(a.target, None, "a new attempt verifies its target again");
}

#[tokio::test]
async fn a_held_action_survives_a_restart_and_installs_without_the_controller_when_its_window_opens(
) {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    let target = staged_package(tmp.path(), &dirs, "");
    let staged = dirs.staged(&target.sha256);

    let mut first = agent(&dirs);
    let a = assignment(&[(T, T + 3600), (T + 86_400, T + 90_000)], T);
    assert_eq!(accept(&mut first.state, &a, T - 7200), Accepted::Fetch);
    downloaded(&mut first, target);
    first
        .release(ID, T - 7200, Some("downloaded and verified".into()))
        .await;
    let held = &first.state.actions[ID];
    assert_eq!(held.step, ActionState::Downloaded);
    assert_eq!(
        held.detail,
        "downloaded; waiting for the maintenance window at 2026-11-24 01:00 UTC"
    );
    assert_eq!(
        report_steps(&first.state),
        vec![(ActionState::Downloaded, held.detail.clone())],
        "one downloaded report, with the wait in its detail"
    );
    assert_eq!(first.state.open_action_ids(), vec![ID.to_owned()]);
    assert_eq!(installed_runs(&dirs), 0, "nothing ran outside the window");
    drop(first);

    // The agent restarts (state.json only), still without a controller.
    let mut agent = agent(&dirs);
    assert_eq!(agent.state.actions[ID].step, ActionState::Downloaded);
    assert_eq!(agent.state.next_install_time(T - 60), Some(T));
    agent.install_due(T - 60).await;
    assert_eq!(installed_runs(&dirs), 0, "a minute early: still held");

    agent.install_due(T).await;
    assert_eq!(
        installed_runs(&dirs),
        1,
        "installed once, from the staged payload"
    );
    let done = &agent.state.actions[ID];
    assert_eq!(done.step, ActionState::Succeeded, "{}", done.detail);
    assert_eq!(agent.state.installed["app"].release_counter, 3);
    assert!(
        !staged.exists(),
        "the staged payload is removed after the install"
    );
    let steps: Vec<ActionState> = report_steps(&agent.state)
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        steps,
        vec![
            ActionState::Downloaded,
            ActionState::Installing,
            ActionState::Succeeded
        ],
        "reports wait for the controller"
    );
    let on_disk = AgentState::load(&dirs.state()).unwrap();
    assert_eq!(on_disk.actions[ID].step, ActionState::Succeeded);
    assert_eq!(on_disk.next_install_time(T), None);
}

#[tokio::test]
async fn a_staged_payload_changed_on_disk_is_never_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    let target = staged_package(tmp.path(), &dirs, "");
    let staged = dirs.staged(&target.sha256);
    let mut agent = agent(&dirs);
    accept(&mut agent.state, &assignment(&[(T, T + 3600)], T), T - 10);
    downloaded(&mut agent, target);
    agent
        .release(ID, T - 10, Some("downloaded and verified".into()))
        .await;

    let mut bytes = std::fs::read(&staged).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&staged, bytes).unwrap();
    agent.install_due(T).await;

    assert_eq!(installed_runs(&dirs), 0);
    let a = &agent.state.actions[ID];
    assert_eq!(a.step, ActionState::Downloading, "back to downloading");
    assert!(
        a.detail.starts_with("staged payload changed on disk"),
        "{}",
        a.detail
    );
    assert_eq!(a.target, None);
    assert!(!staged.exists(), "the changed file is deleted");
    assert!(agent.state.installed.is_empty());
    assert!(agent.state.due_for_install(T).is_empty());
}

#[tokio::test]
async fn nothing_installs_after_every_window_passed_until_the_controller_sends_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    let target = staged_package(tmp.path(), &dirs, "");
    let mut agent = agent(&dirs);
    let old = assignment(&[(T, T + 3600)], T);
    accept(&mut agent.state, &old, T + 7200);
    downloaded(&mut agent, target);
    agent
        .release(ID, T + 7200, Some("downloaded and verified".into()))
        .await;
    let a = &agent.state.actions[ID];
    assert_eq!(a.step, ActionState::Downloaded);
    assert!(
        a.detail
            .contains("waiting for new windows from the controller"),
        "{}",
        a.detail
    );
    assert_eq!(agent.state.next_install_time(T + 7200), None, "no timer");
    agent.install_due(T + 7200).await;
    assert_eq!(installed_runs(&dirs), 0);

    // The same action and attempt again, with next week's window: held until it opens, then installed.
    let new = assignment(&[(T + 604_800, T + 608_400)], T + 604_800);
    agent.process(&new, T + 604_000).await;
    assert_eq!(installed_runs(&dirs), 0);
    assert_eq!(
        agent.state.actions[ID].detail,
        "downloaded; waiting for the maintenance window at 2026-12-01 01:00 UTC"
    );
    agent.process(&new, T + 604_800 + 5).await;
    assert_eq!(installed_runs(&dirs), 1);
    assert_eq!(agent.state.actions[ID].step, ActionState::Succeeded);
}

#[tokio::test]
async fn without_windows_a_held_action_installs_from_its_not_before_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    let target = staged_package(tmp.path(), &dirs, "");
    let mut agent = agent(&dirs);
    accept(&mut agent.state, &assignment(&[], T), T - 30);
    downloaded(&mut agent, target);
    agent
        .release(ID, T - 30, Some("downloaded and verified".into()))
        .await;
    assert_eq!(
        agent.state.actions[ID].detail,
        "downloaded; waiting to install at 2026-11-24 01:00 UTC or later"
    );
    assert_eq!(installed_runs(&dirs), 0);
    agent.install_due(T).await;
    assert_eq!(installed_runs(&dirs), 1);
    assert_eq!(agent.state.actions[ID].step, ActionState::Succeeded);
}

#[tokio::test]
async fn a_cancelled_held_action_is_dropped_and_never_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    let target = staged_package(tmp.path(), &dirs, "");
    let staged = dirs.staged(&target.sha256);
    let part = fetch::part_path(&dirs, &target.sha256, "app_1.tar.gz");
    std::fs::create_dir_all(dirs.downloads()).unwrap();
    std::fs::write(&part, b"left from an earlier attempt").unwrap();
    let mut agent = agent(&dirs);
    let a = assignment(&[(T, T + 3600)], T);
    accept(&mut agent.state, &a, T - 10);
    downloaded(&mut agent, target);
    agent
        .release(ID, T - 10, Some("downloaded and verified".into()))
        .await;

    // What a check-in does with `cancelled_actions`.
    assert_eq!(
        cancel::apply(&mut agent.state, &dirs, ID, T - 5),
        CancelOutcome::Dropped
    );
    assert!(!staged.exists() && !part.exists());
    agent.process(&a, T + 5).await;
    agent.install_due(T + 5).await;

    assert_eq!(installed_runs(&dirs), 0);
    assert_eq!(agent.state.actions[ID].step, ActionState::Cancelled);
    assert_eq!(
        report_steps(&agent.state).last(),
        Some(&(
            ActionState::Cancelled,
            "cancelled by the controller".to_owned()
        ))
    );
    assert!(agent.state.open_action_ids().is_empty());
}

#[tokio::test]
async fn a_cancel_while_the_install_runs_does_not_stop_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    // The install command announces itself, then runs until the test lets it go on.
    let target = staged_package(
        tmp.path(),
        &dirs,
        "touch \"$ROLLCALL_DATA_DIR/started\"\n\
         while [ ! -f \"$ROLLCALL_DATA_DIR/go\" ]; do sleep 0.05; done\n",
    );
    let staged = dirs.staged(&target.sha256);
    let mut agent = agent(&dirs);
    accept(&mut agent.state, &assignment(&[(T, T + 3600)], T), T - 10);
    downloaded(&mut agent, target);
    agent
        .release(ID, T - 10, Some("downloaded and verified".into()))
        .await;
    assert_eq!(agent.state.actions[ID].step, ActionState::Downloaded);

    let cancel_meanwhile = async {
        let started = dirs.root().join("started");
        for _ in 0..1200 {
            if started.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(started.exists(), "the install command started");
        // The mark is on disk before the command runs: a cancel now (at a check-in, or after a restart) sees it.
        let mut seen = AgentState::load(&dirs.state()).unwrap();
        assert!(seen.actions[ID].install_started);
        assert_eq!(
            cancel::apply(&mut seen, &dirs, ID, T + 1),
            CancelOutcome::InstallRunning
        );
        assert!(staged.exists(), "the running install keeps its payload");
        assert!(seen
            .pending_reports
            .iter()
            .all(|r| r.step != ActionState::Cancelled));
        std::fs::write(dirs.root().join("go"), "").unwrap();
    };
    tokio::join!(agent.install_due(T), cancel_meanwhile);

    assert_eq!(installed_runs(&dirs), 1, "the install ran to its end");
    assert_eq!(agent.state.actions[ID].step, ActionState::Succeeded);
    // The cancel reaches the live agent with its next check-in: the action keeps its real outcome.
    assert_eq!(
        cancel::apply(&mut agent.state, &dirs, ID, T + 2),
        CancelOutcome::AlreadyFinished
    );
    let reports = report_steps(&agent.state);
    assert_eq!(reports.last().map(|r| r.0), Some(ActionState::Succeeded));
    assert!(reports.iter().all(|r| r.0 != ActionState::Cancelled));
}

#[tokio::test]
async fn a_download_that_keeps_failing_is_reported_with_the_time_it_started_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    std::fs::create_dir_all(dirs.root()).unwrap();
    pin_a_root(tmp.path(), &dirs).await;
    let mut agent = agent(&dirs);
    // No controller to fetch from: the fetch fails before any byte, and the action stays open.
    agent.process(&assignment(&[], 0), T).await;
    let p = &agent.state.actions[ID];
    assert_eq!(
        p.step,
        ActionState::Downloading,
        "kept open for a later try"
    );
    let since = p.failing_since;
    assert!(since > 0);
    let queued = agent
        .state
        .pending_reports
        .last()
        .expect("a report is queued");
    assert_eq!(queued.step, ActionState::Downloading);
    assert!(
        queued.detail.starts_with("download failing since ") && queued.detail.contains("UTC: "),
        "{}",
        queued.detail
    );
    // A second failure keeps the first time: the technician sees how long it has been failing.
    agent.process(&assignment(&[], 0), T + 60).await;
    assert_eq!(agent.state.actions[ID].failing_since, since);
    let reloaded = AgentState::load(&dirs.state()).unwrap();
    assert_eq!(
        reloaded.actions[ID].failing_since, since,
        "saved with the report"
    );
}

#[tokio::test]
async fn a_reboot_happens_only_inside_the_window_once_and_success_waits_for_the_verify_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    std::fs::create_dir_all(dirs.root()).unwrap();
    let mut target = staged_package(tmp.path(), &dirs, "");
    target.manifest.reboot = rollcall_packaging::Reboot::Required;
    let (boot_id, reboots) = (tmp.path().join("boot_id"), tmp.path().join("reboots"));
    std::fs::write(&boot_id, "boot-1\n").unwrap();
    let mut agent = agent(&dirs);
    agent.settings.boot_id_file = boot_id.clone();
    agent.settings.reboot_command = vec![
        "sh".into(),
        "-c".into(),
        format!("echo reboot >> {}", reboots.display()),
    ];
    let rebooted = || std::fs::read_to_string(&reboots).map_or(0, |t| t.lines().count());
    let window = (T + 3600, T + 7200);
    accept(&mut agent.state, &assignment(&[window], window.0), T);
    downloaded(&mut agent, target);
    agent
        .release(ID, T, Some("downloaded and verified".into()))
        .await;
    assert_eq!(agent.state.actions[ID].step, ActionState::Downloaded);

    // Inside the window: installed and verified, then reboot-pending (not success).
    agent.install_due(T + 3601).await;
    assert_eq!(installed_runs(&dirs), 1);
    assert_eq!(agent.state.actions[ID].step, ActionState::RebootPending);
    assert_eq!(rebooted(), 0, "not yet: the next pass reboots");

    // The window has closed: no reboot.
    agent.install_due(T + 7300).await;
    assert_eq!(rebooted(), 0, "never outside the window");
    // Open again: one reboot, recorded with the boot it leaves; a later pass does not reboot again.
    agent.install_due(T + 3700).await;
    assert_eq!(rebooted(), 1);
    let request = agent.state.actions[ID].reboot.clone().unwrap();
    assert_eq!(request.boot_id, "boot-1");
    assert_eq!(
        AgentState::load(&dirs.state()).unwrap().actions[ID].reboot,
        Some(request),
        "on disk"
    );
    agent.install_due(T + 3800).await;
    assert_eq!(rebooted(), 1, "once");
    assert_eq!(agent.state.actions[ID].step, ActionState::RebootPending);

    // Back with a new boot id: the verify runs again and only now it is a success, whatever the window.
    std::fs::write(&boot_id, "boot-2\n").unwrap();
    agent.install_due(T + 9000).await;
    let a = &agent.state.actions[ID];
    assert_eq!(a.step, ActionState::Succeeded, "{}", a.detail);
    assert_eq!(a.detail, "verified after the reboot");
    assert_eq!(installed_runs(&dirs), 1, "not installed again");
}

#[tokio::test]
async fn a_journal_entry_of_an_earlier_attempt_says_nothing_about_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path());
    let journal = crate::install::Journal::of(&dirs, ID);
    let entry = crate::install::Running {
        action_id: ID.into(),
        phase: crate::install::Phase::Rollback,
        pgid: 0,
        leader_start: None,
        started_at: T,
        timeout_secs: 60,
        boot_id: None,
        attempt: 1,
    };
    journal.write(&entry).unwrap();
    let same = super::release::leftovers(dirs.clone(), ID.into(), 1).await;
    assert_eq!(same, (Some(crate::install::Phase::Rollback), None));
    let next = super::release::leftovers(dirs.clone(), ID.into(), 2).await;
    assert_eq!(next, (None, None), "attempt 2 starts from its install");
    assert_eq!(journal.read(), Ok(None), "the stale entry is dropped");
}

#[tokio::test]
async fn a_device_that_does_not_reboot_after_the_reboot_command_fails_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = AgentDirs::new(tmp.path().join("data"));
    std::fs::create_dir_all(dirs.root()).unwrap();
    let mut target = staged_package(tmp.path(), &dirs, "");
    target.manifest.reboot = rollcall_packaging::Reboot::Required;
    let boot_id = tmp.path().join("boot_id");
    std::fs::write(&boot_id, "boot-1\n").unwrap();
    let mut agent = agent(&dirs);
    agent.settings.boot_id_file = boot_id;
    // A reboot command that returns 0 and does nothing.
    agent.settings.reboot_command = vec!["true".into()];
    accept(&mut agent.state, &assignment(&[], 0), T);
    downloaded(&mut agent, target);
    agent
        .release(ID, T, Some("downloaded and verified".into()))
        .await;
    assert_eq!(agent.state.actions[ID].step, ActionState::RebootPending);
    agent.install_due(T + 1).await;
    assert!(agent.state.actions[ID].reboot.is_some(), "asked");
    agent.install_due(T + 600).await;
    assert_eq!(
        agent.state.actions[ID].step,
        ActionState::RebootPending,
        "still waiting after 10 minutes"
    );
    agent.install_due(T + 1 + 30 * 60).await;
    let a = &agent.state.actions[ID];
    assert_eq!(a.step, ActionState::Failed);
    assert!(
        a.detail.contains("did not reboot within 30 minutes"),
        "{}",
        a.detail
    );
    assert_eq!(agent.rebooting, None, "the agent takes work again");
}
