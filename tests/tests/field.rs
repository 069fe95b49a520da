//! The agent in the field: a device whose disk is too full for a download. The agent refuses the download with its
//! reason, reports it on its next check-in, keeps running and leaves nothing behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollcall_proto::v1;
use rollcall_tests::{files_in, Cluster, PackageSpec};

/// A small tmpfs mounted on `dir` (needs root); unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_does_not_fit_on_the_disk_fails_with_its_reason_and_leaves_nothing() {
    let mut c = Cluster::start().await.unwrap();
    let data = c.path("agents/full-01");
    let Some(disk) = SmallDisk::mount(&data, "4m") else {
        eprintln!(
            "skipped: mounting a 4 MB tmpfs for the agent's data dir needs root (CAP_SYS_ADMIN)"
        );
        return;
    };
    let mut agent = c.enroll("north", "full-01").await.unwrap();
    agent.start().unwrap();
    c.agents.push(agent);

    let payload_dir = c.path("src/big-1.0/payload");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let noise = rollcall_tests::noise(3_000_000, 0x2545_f491_4f6c_dd1du64);
    std::fs::write(payload_dir.join("blob.bin"), &noise).unwrap();
    c.publish(&PackageSpec::marker("big", "1.0", 1))
        .await
        .unwrap();
    let id = c.rollout("big", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();

    let d = &s.devices[0];
    assert_eq!(
        v1::ActionState::try_from(d.state).unwrap(),
        v1::ActionState::Failed,
        "{}",
        d.detail
    );
    assert!(
        d.detail
            .starts_with("local failure: not enough free disk space in ")
            && d.detail.contains("/downloads: the download needs "),
        "{}",
        d.detail
    );
    assert!(
        files_in(&data.join("downloads")).is_empty(),
        "no partial file"
    );
    assert!(files_in(&data.join("staged")).is_empty(), "nothing staged");
    assert!(!data.join("big.marker").exists(), "nothing installed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(c.agents[0].is_running(), "the agent keeps running");
    c.stop().await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_http_proxy_the_agent_tunnels_through_connect() {
    let mut c = Cluster::start().await.unwrap();
    let proxy = rollcall_tests::proxy::ConnectProxy::start().await.unwrap();
    let mut agent = c.enroll("north", "proxied-01").await.unwrap();
    let data = c.path("agents/proxied-01");
    std::fs::write(
        data.with_extension("toml"),
        format!("proxy = \"{}\"\n", proxy.url()),
    )
    .unwrap();
    agent.start().unwrap();
    c.agents.push(agent);
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(
        v1::ActionState::try_from(s.devices[0].state).unwrap(),
        v1::ActionState::Succeeded,
        "{}",
        s.devices[0].detail
    );
    assert!(data.join("app.marker").exists());
    let tunnelled = proxy.tunnelled();
    assert!(
        !tunnelled.is_empty() && tunnelled.iter().all(|t| *t == c.controller().addr()),
        "every connection went through the proxy to the controller: {tunnelled:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_settings_file_stops_the_agent_at_start_naming_the_key() {
    let c = Cluster::start().await.unwrap();
    c.enroll("north", "typo-01").await.unwrap();
    let data = c.path("agents/typo-01");
    let settings = data.with_extension("toml");
    std::fs::write(&settings, "proxy = \"socks5://localhost\"\n").unwrap();
    let before = |name: &str| std::fs::read(data.join(name)).ok();
    let (config, state) = (before("agent.toml"), before("state.json"));
    let out = Command::new(rollcall_tests::bin("rollcall-agent").unwrap())
        .arg("run")
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&settings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo-01.toml") && err.contains("is not an http:// URL"),
        "{err}"
    );
    assert_eq!(before("agent.toml"), config);
    assert_eq!(before("state.json"), state, "nothing started");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_metered_link_a_large_download_waits_unless_the_rollout_is_urgent() {
    let mut c = Cluster::start().await.unwrap();
    let mut agent = c.enroll("north", "mdc-01").await.unwrap();
    let data = c.path("agents/mdc-01");
    // The controller is reached through lo here: call lo the cellular link.
    std::fs::write(
        data.with_extension("toml"),
        "metered_interfaces = [\"lo\"]\nmetered_max_download = 1000\n",
    )
    .unwrap();
    agent.start().unwrap();
    c.agents.push(agent);
    let payload_dir = c.path("src/app-1.0/payload");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let noise = rollcall_tests::noise(200_000, 7);
    std::fs::write(payload_dir.join("blob.bin"), &noise).unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();

    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c
        .wait_for(&id, "the metered wait", |s| {
            s.devices[0]
                .detail
                .contains("waiting for an unmetered link")
        })
        .await
        .unwrap();
    assert!(
        s.devices[0]
            .detail
            .contains("the link through lo is metered and "),
        "{}",
        s.devices[0].detail
    );
    assert!(files_in(&data.join("downloads")).iter().all(|f| {
        std::fs::metadata(data.join("downloads").join(f)).map_or(true, |m| m.len() == 0)
    }));
    assert!(!data.join("app.marker").exists());
    let (code, _, err) = c.cli(&["rollout", "cancel", &id]).await.unwrap();
    assert_eq!(code, 0, "{err}");

    let urgent = c
        .rollout_with(v1::CreateRolloutRequest {
            package: "app".into(),
            version: "1.0".into(),
            waves: vec![rollcall_tests::sites_wave(&["north"])],
            retries: Some(0),
            urgent: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let s = c.settle(&urgent).await.unwrap();
    assert_eq!(
        v1::ActionState::try_from(s.devices[0].state).unwrap(),
        v1::ActionState::Succeeded,
        "{}",
        s.devices[0].detail
    );
    assert!(data.join("app.marker").exists());
    c.stop().await;
}

/// `rollcall-agent status --json` for the agent at `data`: exit code and the one JSON object.
fn status_json(data: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(rollcall_tests::bin("rollcall-agent").unwrap())
        .args(["status", "--json", "--data"])
        .arg(data)
        .arg("--config")
        .arg(data.with_extension("toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (out.status.code().unwrap_or(-1), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_technician_what_runs_what_failed_and_whether_the_controller_answers() {
    let mut c = Cluster::start().await.unwrap();
    let data = c.add_agents("north", 1).await.unwrap().remove(0);
    let mut bad = PackageSpec::marker("bad", "1.0", 1);
    bad.install = "echo unpacking; echo disk quota exceeded >&2; exit 5";
    c.publish(&bad).await.unwrap();
    let id = c.rollout("bad", "1.0", &[&["north"]]).await.unwrap();
    c.settle(&id).await.unwrap();

    let (code, s) = status_json(&data);
    assert_eq!(code, 0);
    assert_eq!(s["hostname"], "north-01");
    assert_eq!(s["site"], "north");
    assert_eq!(s["running"], true, "{s}");
    assert_eq!(s["reachable"], true, "{s}");
    assert!(s["last_checkin"].as_i64().unwrap() > 0);
    assert!(s["certificate_not_after"].as_i64().unwrap() > 0);
    let failure = &s["last_failure"];
    assert_eq!(failure["state"], "failed");
    assert_eq!(failure["exit_code"], 5);
    assert_eq!(failure["detail"], "install command exited 5");
    assert!(failure["output_tail"]
        .as_str()
        .unwrap()
        .contains("disk quota exceeded"));

    // The agent stopped and the controller gone: both said, and status still works.
    c.agents[0].stop().await;
    if let Some(controller) = c.controller.take() {
        controller.stop().await;
    }
    let (code, s) = status_json(&data);
    assert_eq!(code, 0);
    assert_eq!(s["running"], false);
    assert_eq!(s["reachable"], false);
    assert!(
        s["reachability"]
            .as_str()
            .unwrap()
            .starts_with("controller 127.0.0.1:"),
        "{s}"
    );
    let out = Command::new(rollcall_tests::bin("rollcall-agent").unwrap())
        .args(["status", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(data.with_extension("toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for words in [
        "north-01: agent ",
        "agent service: NOT RUNNING",
        "reachable:     NO, controller 127.0.0.1:",
        "Last failure: ",
        "  | disk quota exceeded",
    ] {
        assert!(text.contains(words), "{words:?} in:\n{text}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_that_requires_a_reboot_succeeds_only_after_the_verify_that_follows_the_reboot() {
    let mut c = Cluster::start().await.unwrap();
    let mut agent = c.enroll("north", "desk-01").await.unwrap();
    let data = c.path("agents/desk-01");
    // The "reboot": wait for the test's go, count it, and come back with a new boot id.
    let boot_id = c.path("boot_id");
    std::fs::write(&boot_id, "boot-1\n").unwrap();
    let (reboots, go) = (c.path("reboots"), c.path("go-reboot"));
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.1; done; echo reboot >> {reboots}; echo boot-2 > {boot}",
        go = go.display(),
        reboots = reboots.display(),
        boot = boot_id.display()
    );
    std::fs::write(
        data.with_extension("toml"),
        format!(
            "reboot_command = [\"sh\", \"-c\", {script:?}]\nboot_id_file = {:?}\n",
            boot_id.display().to_string()
        ),
    )
    .unwrap();
    agent.start().unwrap();
    c.agents.push(agent);
    let mut spec = PackageSpec::marker("kernel-fix", "1.0", 1);
    spec.reboot = true;
    spec.verify = "echo verified >> \"$ROLLCALL_DATA_DIR/verify-runs\"\ngrep -qx \"$ROLLCALL_VERSION\" \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&spec).await.unwrap();
    let id = c.rollout("kernel-fix", "1.0", &[&["north"]]).await.unwrap();

    let s = c
        .wait_for(&id, "the reboot request", |s| {
            v1::ActionState::try_from(s.devices[0].state) == Ok(v1::ActionState::RebootPending)
                && s.devices[0].detail.contains("rebooting now")
        })
        .await
        .unwrap();
    assert_eq!(
        v1::RolloutState::try_from(s.state).unwrap(),
        v1::RolloutState::Running,
        "not counted as done before the reboot"
    );
    let saved = rollcall_tests::agent_state(&data).unwrap();
    let action = saved["actions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(
        action["reboot"]["boot_id"], "boot-1",
        "the reboot is on disk before it happens"
    );
    std::fs::write(&go, "").unwrap();
    let s = c.settle(&id).await.unwrap();
    let d = &s.devices[0];
    assert_eq!(
        v1::ActionState::try_from(d.state).unwrap(),
        v1::ActionState::Succeeded,
        "{}",
        d.detail
    );
    assert_eq!(d.detail, "verified after the reboot");
    let count = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    assert_eq!(count(&reboots), 1, "rebooted once");
    assert_eq!(
        count(&data.join("verify-runs")),
        2,
        "verified after the install and again after the reboot"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_clock_far_ahead_is_called_out_in_the_failure_it_causes_and_the_agent_keeps_running(
) {
    if Command::new("faketime")
        .args(["-f", "+0d", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("skipped: faketime (Debian package faketime) is not installed");
        return;
    }
    let mut c = Cluster::start().await.unwrap();
    let mut agent = c.enroll("north", "skewed-01").await.unwrap();
    let data = c.path("agents/skewed-01");
    // 400 days ahead: the controller's TLS certificate (2 years) still verifies, the signed metadata has expired.
    agent.start_in(&["faketime", "-f", "+400d"]).unwrap();
    c.agents.push(agent);
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    let d = &s.devices[0];
    assert_eq!(
        v1::ActionState::try_from(d.state).unwrap(),
        v1::ActionState::Failed,
        "{}",
        d.detail
    );
    assert!(
        d.detail.starts_with("package failure: TUF metadata refused")
            && d.detail.contains("expired")
            && d.detail.contains("(this device's clock is 400.0 days ahead of the controller's: check its time (NTP))"),
        "{}",
        d.detail
    );
    assert!(!data.join("app.marker").exists(), "nothing installed");
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(
        log.contains("this device's clock is 400.0 days ahead"),
        "{log}"
    );
    assert!(c.agents[0].is_running(), "the agent keeps running");
    let (_, status) = status_json(&data);
    let skew = status["clock_skew_secs"].as_i64().unwrap();
    assert!((skew - 400 * 86400).abs() < 120, "{skew}");

    // A clock in the past: the controller's certificate is not valid yet at this device's time, so nothing gets
    // through; the log says what to check, and the agent keeps trying.
    let mut agent = c.enroll("north", "past-01").await.unwrap();
    let past = c.path("agents/past-01");
    agent.start_in(&["faketime", "-f", "-30d"]).unwrap();
    c.agents.push(agent);
    let started = std::time::Instant::now();
    let said = "A certificate is out of its validity at this device's clock: check the device's time (NTP).";
    let log = loop {
        let log = std::fs::read_to_string(past.with_extension("log")).unwrap_or_default();
        if log.contains(said) || started.elapsed() > Duration::from_secs(30) {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(log.contains(said), "{log}");
    assert!(c.agents[1].is_running());
    c.stop().await;
}
