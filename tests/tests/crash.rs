//! The agent killed with SIGKILL at each step of an action — during the download, after it, during install, verify
//! and rollback — and started again: it resumes or rolls back and reports, never runs two installers side by side,
//! never installs twice, and never reports success for something that did not verify.
//!
//! The package's commands are gated by files in the agent's data dir (`go-install`, `go-verify`, `go-rollback`), so
//! the test decides exactly where each command stands when the agent dies. Each command counts its runs
//! (`<command>-runs`) and notes any run that overlapped another (`concurrent`).

use std::path::Path;
use std::time::{Duration, Instant};

use rollcall_proto::v1;
use rollcall_tests::proxy::{Proxy, Shape};
use rollcall_tests::{agent_state, files_in, Cluster, PackageSpec};

/// Each command: count the run, note an overlap, wait for its gate file, then do its work.
const STEP: &str = r#"D="$ROLLCALL_DATA_DIR"
step() {
  echo "$1" >> "$D/$1-runs"
  if [ -e "$D/busy" ]; then echo "$1 while $(cat "$D/busy") ran" >> "$D/concurrent"; fi
  echo "$1" > "$D/busy"
  while [ ! -e "$D/go-$1" ]; do sleep 0.1; done
  rm -f "$D/busy"
}
"#;

fn gated_package() -> (String, String, String) {
    (
        format!("{STEP}step install\nif [ -e \"$D/fail-install\" ]; then echo install failed >&2; exit 4; fi\necho \"$ROLLCALL_VERSION\" > \"$D/app.marker\""),
        format!("{STEP}step verify\ngrep -qx \"$ROLLCALL_VERSION\" \"$D/app.marker\""),
        format!("{STEP}step rollback\nrm -f \"$D/app.marker\""),
    )
}

fn runs(data: &Path, command: &str) -> usize {
    std::fs::read_to_string(data.join(format!("{command}-runs")))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn open_gate(data: &Path, command: &str) {
    std::fs::write(data.join(format!("go-{command}")), "").unwrap();
}

/// Poll `done` every 100 ms (bounded: 60 s); on failure show the agent's log.
async fn until(what: &str, data: &Path, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not happen within 60 s; agent log:\n{}",
            log_of(data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_of(data: &Path) -> String {
    std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
}

fn device_state(s: &v1::RolloutStatus) -> (v1::ActionState, String) {
    let d = &s.devices[0];
    (
        v1::ActionState::try_from(d.state).unwrap_or_default(),
        d.detail.clone(),
    )
}

/// One agent at `north` with the gated package published; `gates` open before the rollout starts.
async fn cluster(gates: &[&str]) -> (Cluster, std::path::PathBuf) {
    let mut c = Cluster::start().await.unwrap();
    let data = c.add_agents("north", 1).await.unwrap().remove(0);
    for gate in gates {
        open_gate(&data, gate);
    }
    let (install, verify, rollback) = gated_package();
    let mut spec = PackageSpec::marker("app", "1.0", 1);
    spec.install = &install;
    spec.verify = &verify;
    spec.rollback = Some(&rollback);
    c.publish(&spec).await.unwrap();
    (c, data)
}

/// Kill the agent while `command` runs, start it again, check it waits for the leftover command instead of
/// starting another, then let the leftover finish.
async fn kill_during(c: &mut Cluster, data: &Path, command: &str) {
    until(&format!("{command} started"), data, || {
        runs(data, command) == 1
    })
    .await;
    assert!(
        rollcall_agent::install::journal::entries(&rollcall_agent::config::AgentDirs::new(data))
            .iter()
            .any(|e| e.phase.as_str() == command && e.pgid > 0),
        "the journal names the {command} command's process group before the command runs"
    );
    c.agents[0].kill().await;
    c.agents[0].start().unwrap();
    until(
        "the restarted agent waiting for the leftover command",
        data,
        || log_of(data).contains("still runs: waiting for it"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs(data, command),
        1,
        "no second {command} started meanwhile"
    );
    open_gate(data, command);
}

/// What holds after every crash: no overlap, no journal left, at most one install.
fn assert_clean(data: &Path) {
    assert!(
        !data.join("concurrent").exists(),
        "two commands ran side by side: {}",
        std::fs::read_to_string(data.join("concurrent")).unwrap_or_default()
    );
    assert_eq!(runs(data, "install"), 1, "installed exactly once");
    assert!(
        files_in(&data.join("journal")).is_empty(),
        "journal entries cleared: {:?}",
        files_in(&data.join("journal"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_install_it_waits_for_the_installer_then_verifies_without_installing_again() {
    let (mut c, data) = cluster(&["verify", "rollback"]).await;
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    kill_during(&mut c, &data, "install").await;
    let s = c.settle(&id).await.unwrap();
    let (state, detail) = device_state(&s);
    assert_eq!(state, v1::ActionState::Succeeded, "{detail}");
    assert!(
        detail.contains("waited for the install command left running by the previous agent")
            && detail.contains("verified after an agent restart"),
        "{detail}"
    );
    assert_clean(&data);
    assert_eq!(runs(&data, "verify"), 1);
    assert_eq!(
        agent_state(&data).unwrap()["installed"]["app"]["release_counter"],
        1
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_verify_it_verifies_again_and_never_reinstalls() {
    let (mut c, data) = cluster(&["install", "rollback"]).await;
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    kill_during(&mut c, &data, "verify").await;
    let s = c.settle(&id).await.unwrap();
    let (state, detail) = device_state(&s);
    assert_eq!(state, v1::ActionState::Succeeded, "{detail}");
    assert!(detail.contains("installed and verified"), "{detail}");
    assert_clean(&data);
    assert_eq!(
        runs(&data, "verify"),
        2,
        "the cut-off verify and the one after the restart"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_rollback_it_finishes_the_rollback_and_reports_it() {
    let (mut c, data) = cluster(&["install", "verify"]).await;
    std::fs::write(data.join("fail-install"), "").unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    kill_during(&mut c, &data, "rollback").await;
    let s = c.settle(&id).await.unwrap();
    let (state, detail) = device_state(&s);
    assert_eq!(state, v1::ActionState::RolledBack, "{detail}");
    assert!(detail.contains("rolled back"), "{detail}");
    assert_clean(&data);
    assert_eq!(runs(&data, "verify"), 0, "nothing verified what failed");
    assert_eq!(runs(&data, "rollback"), 2);
    assert!(
        agent_state(&data).unwrap()["installed"]
            .as_object()
            .unwrap()
            .is_empty(),
        "a rolled-back package is not installed"
    );
    c.stop().await;
}

/// A window that is closed now and one that is open now (UTC, every day).
fn windows_now() -> (&'static str, &'static str) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if (secs % 86400) / 3600 < 12 {
        ("Mon-Sun 20:00-21:00", "Mon-Sun 00:00-12:59")
    } else {
        ("Mon-Sun 04:00-05:00", "Mon-Sun 12:00-23:59")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_download_it_installs_from_the_staged_payload_once() {
    let (mut c, data) = cluster(&["install", "verify", "rollback"]).await;
    let (closed, open) = windows_now();
    let (code, _, err) = c
        .cli(&["sites", "set", "north", "--window", closed, "--tz", "UTC"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    c.wait_for(&id, "the download", |s| {
        device_state(s).0 == v1::ActionState::Downloaded
    })
    .await
    .unwrap();
    assert!(!files_in(&data.join("staged")).is_empty());
    c.agents[0].kill().await;
    c.agents[0].start().unwrap();
    let (code, _, err) = c
        .cli(&["sites", "set", "north", "--window", open, "--tz", "UTC"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let s = c.settle(&id).await.unwrap();
    let (state, detail) = device_state(&s);
    assert_eq!(state, v1::ActionState::Succeeded, "{detail}");
    assert_clean(&data);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_download_it_resumes_from_the_partial_file() {
    let mut c = Cluster::start().await.unwrap();
    let mut agent = c.enroll("north", "north-01").await.unwrap();
    let data = c.path("agents/north-01");
    for gate in ["install", "verify", "rollback"] {
        open_gate(&data, gate);
    }
    // A slow link (256 KiB/s) through a proxy, so the download has a middle to die in.
    let upstream = c.controller().addr().parse().unwrap();
    let shape = Shape {
        rate: 256 * 1024,
        ..Shape::default()
    };
    let proxy = Proxy::start(upstream, shape, 1).await.unwrap();
    let config = std::fs::read_to_string(data.join("agent.toml")).unwrap();
    let config = config.replace(&c.controller().url, &proxy.url());
    std::fs::write(data.join("agent.toml"), config).unwrap();
    agent.start().unwrap();
    c.agents.push(agent);

    let (install, verify, rollback) = gated_package();
    let mut spec = PackageSpec::marker("app", "1.0", 1);
    spec.install = &install;
    spec.verify = &verify;
    spec.rollback = Some(&rollback);
    let payload_dir = c.path("src/app-1.0/payload");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let noise = rollcall_tests::noise(1_500_000, 0x9e37_79b9_7f4a_7c15u64);
    std::fs::write(payload_dir.join("blob.bin"), &noise).unwrap();
    c.publish(&spec).await.unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();

    let part_bytes = || {
        std::fs::read_dir(data.join("downloads"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    until("half a megabyte downloaded", &data, || {
        part_bytes() > 512 * 1024
    })
    .await;
    c.agents[0].kill().await;
    let kept = part_bytes();
    c.agents[0].start().unwrap();
    let s = c.settle(&id).await.unwrap();
    let (state, detail) = device_state(&s);
    assert_eq!(state, v1::ActionState::Succeeded, "{detail}");
    assert_clean(&data);
    let log = log_of(&data);
    assert!(
        log.contains("resumed at byte"),
        "the download resumed from the {kept} bytes kept:\n{log}"
    );
    assert!(
        files_in(&data.join("downloads")).is_empty(),
        "no partial file left"
    );
    c.stop().await;
}
