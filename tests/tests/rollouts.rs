//! Staged rollouts end to end: a real controller and real agent processes on loopback, driven through the
//! `rollcall` command line an admin or technician types. Refusals, cancel, technician retry, wake-ups,
//! maintenance windows, and a controller killed again and again during a large rollout.

use std::time::{Duration, Instant};

use rollcall_proto::{v1, ActionState, RolloutState};
use rollcall_tests::{sites_wave, Cluster, PackageSpec};

fn state(s: &v1::RolloutStatus) -> Option<RolloutState> {
    RolloutState::from_proto(s.state)
}

fn device<'a>(s: &'a v1::RolloutStatus, hostname: &str) -> &'a v1::DeviceStatus {
    s.devices
        .iter()
        .find(|d| d.hostname == hostname)
        .unwrap_or_else(|| panic!("no device {hostname} in {s:?}"))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

/// Everything an admin could have changed: rollouts and sites as the CLI shows them.
async fn snapshot(c: &Cluster) -> (String, String) {
    let (code, rollouts, err) = c.cli(&["rollout", "list", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, sites, err) = c.cli(&["sites", "list", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    (rollouts, sites)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollout_commands_are_refused_with_the_reason_and_change_nothing() {
    let mut c = Cluster::start().await.unwrap();
    c.add_agents("north", 2).await.unwrap();
    c.add_agents("south", 1).await.unwrap();
    c.add_agents("east", 1).await.unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    // One rollout to act on, started and completed, plus a draft.
    let (code, out, err) = c
        .cli(&[
            "rollout", "create", "app@1.0", "--wave", "north", "--wave", "south", "--start",
            "--json",
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let done = json(&out)["id"].as_str().unwrap().to_owned();
    c.settle(&done).await.unwrap();
    let (code, out, err) = c
        .cli(&["rollout", "create", "app@1.0", "--wave", "north", "--json"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let draft = json(&out)["id"].as_str().unwrap().to_owned();
    let (code, _, err) = c.cli(&["rollout", "cancel", &draft]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let before = snapshot(&c).await;

    // (arguments, exit code, words the message must contain)
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["rollout", "create", "nope@1.0", "--wave", "north"],
            1,
            "package nope@1.0 is not published",
        ),
        (
            &["rollout", "create", "app@1.0", "--wave", "nroth"],
            1,
            "unknown site \"nroth\"",
        ),
        (
            &[
                "rollout",
                "create",
                "app@1.0",
                "--wave",
                "north",
                "--wave",
                "north,south",
            ],
            1,
            "\"north\" is in more than one wave",
        ),
        (
            &[
                "rollout", "create", "app@1.0", "--wave", "north", "--wave", "rest", "--site",
                "north",
            ],
            1,
            "wave 2 (rest) selects no device",
        ),
        (
            &[
                "rollout",
                "create",
                "app@1.0",
                "--wave",
                "north",
                "--where",
                "os.name=Plan9",
            ],
            1,
            "matches no enrolled agent",
        ),
        (
            &[
                "rollout",
                "create",
                "app@1.0",
                "--wave",
                "north",
                "--platform",
                "windows",
            ],
            1,
            "matches no enrolled agent",
        ),
        (
            &[
                "rollout", "create", "app@1.0", "--wave", "rest", "--wave", "north",
            ],
            1,
            "must be the last wave",
        ),
        (
            &[
                "rollout",
                "create",
                "app@1.0",
                "--wave",
                "north",
                "--success",
                "120%",
            ],
            64,
            "outside 0–100%",
        ),
        (
            &[
                "rollout", "create", "app@1.0", "--wave", "north", "--errors", "150%",
            ],
            64,
            "outside 0–100%",
        ),
        (
            &["rollout", "create", "app@1.0", "--wave", "north succes=90%"],
            64,
            "unknown setting \"succes=90%\"",
        ),
        (
            &[
                "rollout", "create", "app@1.0", "--canary", "0%", "--wave", "north",
            ],
            64,
            "selects nothing",
        ),
        (
            &["rollout", "create", "app", "--wave", "north"],
            64,
            "is not PACKAGE@VERSION",
        ),
        (
            &["rollout", "approve", &done],
            1,
            "only a rollout waiting for approval can be approved",
        ),
        (&["rollout", "resume", &draft], 1, "rollout"),
        (&["rollout", "resume", &draft], 1, "is cancelled"),
        (&["rollout", "start", &draft], 1, "is cancelled"),
        (
            &["rollout", "delete", &done],
            1,
            "only a draft can be deleted",
        ),
        (&["rollout", "approve", "r999"], 1, "no rollout r999"),
        (
            &["rollout", "retry", &done, "--agent", "no-such-host"],
            1,
            "no agent with id or hostname \"no-such-host\"",
        ),
        (
            &["rollout", "retry", &done, "--agent", "north-01"],
            1,
            "only failed, rolled-back or cancelled devices are retried",
        ),
        (
            &["rollout", "retry", &done, "--agent", "east-04"],
            1,
            "is not in it (never offered); nothing to retry",
        ),
        (
            &["rollout", "retry", &done],
            64,
            "say which devices to retry",
        ),
        (
            &[
                "sites",
                "set",
                "north",
                "--window",
                "Mon-Fry 01:00-05:00",
                "--tz",
                "UTC",
            ],
            1,
            "unknown day \"Fry\"",
        ),
        (
            &[
                "sites",
                "set",
                "north",
                "--window",
                "Mon 05:00-05:00",
                "--tz",
                "UTC",
            ],
            1,
            "never opens",
        ),
        (
            &[
                "sites",
                "set",
                "north",
                "--window",
                "Mon 01:00-05:00",
                "--tz",
                "America/Los_Angles",
            ],
            1,
            "unknown time zone \"America/Los_Angles\"",
        ),
        (
            &["sites", "set", "north", "--window", "Mon 01:00-05:00"],
            64,
            "--tz ZONE is required",
        ),
        (
            &[
                "sites",
                "set",
                "nroth",
                "--window",
                "Mon 01:00-05:00",
                "--tz",
                "UTC",
            ],
            1,
            "unknown site \"nroth\"",
        ),
    ];
    for (args, code, words) in cases {
        let (got, out, err) = c.cli(args).await.unwrap();
        assert_eq!(got, *code, "{args:?}: {out}{err}");
        assert!(err.contains(words), "{args:?}: expected {words:?} in {err}");
        assert!(
            !err.contains("Status {") && !err.contains("{ code:"),
            "{args:?}: a Debug dump: {err}"
        );
        assert!(out.is_empty(), "{args:?} printed {out}");
    }
    assert_eq!(snapshot(&c).await, before, "nothing changed");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_rollout_and_leaves_no_device_stuck() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 4).await.unwrap();
    let mut slow = PackageSpec::marker("slow", "1.0", 1);
    slow.install =
        "sleep 4\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&slow).await.unwrap();
    // At most one device downloads at a time, so some are still queued when the first installs.
    let id = c
        .rollout_with(v1::CreateRolloutRequest {
            package: "slow".into(),
            version: "1.0".into(),
            waves: vec![sites_wave(&["north"])],
            max_concurrent_per_site: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    c.wait_for(&id, "an install", |s| {
        s.devices
            .iter()
            .any(|d| ActionState::from_proto(d.state) == Some(ActionState::Installing))
    })
    .await
    .unwrap();
    let (code, out, err) = c.cli(&["rollout", "cancel", &id, "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "cancelled");
    let s = c
        .wait_for(&id, "every device settled", |s| {
            s.devices
                .iter()
                .all(|d| ActionState::from_proto(d.state).is_some_and(|a| a.is_terminal()))
        })
        .await
        .unwrap();
    // Installs that had started finished and count; everything else is cancelled; nothing is left pending.
    let count = |st: ActionState| {
        s.devices
            .iter()
            .filter(|d| d.state == st.to_proto() as i32)
            .count()
    };
    let markers = dirs
        .iter()
        .filter(|d| d.join("slow.marker").exists())
        .count();
    assert!(count(ActionState::Succeeded) >= 1, "{s:?}");
    assert_eq!(
        count(ActionState::Succeeded),
        markers,
        "succeeded exactly where it installed"
    );
    assert_eq!(
        count(ActionState::Succeeded) + count(ActionState::Cancelled),
        4,
        "{s:?}"
    );
    assert!(count(ActionState::Cancelled) >= 1, "{s:?}");
    // No new offers after the cancel, ever: a new device at the site gets nothing.
    let late = c.add_agents("north", 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!late[0].join("slow.marker").exists());
    let (_, out, _) = c.cli(&["rollout", "status", &id, "--json"]).await.unwrap();
    let v = json(&out);
    assert_eq!(v["totals"]["succeeded"], markers);
    for key in ["in_progress", "pending", "offline", "retrying"] {
        assert_eq!(v["totals"][key], 0, "{key}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_retries_a_failed_desk_and_every_attempt_is_kept() {
    let mut c = Cluster::start().await.unwrap();
    c.add_agents("north", 2).await.unwrap();
    let mut flaky = PackageSpec::marker("flaky", "1.0", 1);
    // Fails the first time it runs on a device (dpkg lock held), works the second time.
    flaky.install = "if [ ! -e \"$ROLLCALL_DATA_DIR/tried\" ]; then touch \"$ROLLCALL_DATA_DIR/tried\"; echo 'E: Could not get lock /var/lib/dpkg/lock' >&2; exit 100; fi\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&flaky).await.unwrap();
    let (code, out, err) = c
        .cli(&[
            "rollout",
            "create",
            "flaky@1.0",
            "--wave",
            "north",
            "--retries",
            "0",
            "--errors",
            "3",
            "--start",
            "--json",
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let id = json(&out)["id"].as_str().unwrap().to_owned();
    c.wait_for(&id, "both failed", |s| {
        s.devices
            .iter()
            .filter(|d| d.state == v1::ActionState::Failed as i32)
            .count()
            == 2
    })
    .await
    .unwrap();
    let (code, out, err) = c
        .cli(&["rollout", "status", &id, "--site", "north"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("install command exited 100"), "{out}");
    assert!(
        out.contains("E: Could not get lock"),
        "the output tail is shown: {out}"
    );

    let (code, out, err) = c
        .cli(&["rollout", "retry", &id, "--agent", "north-01"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 device(s) get a new attempt"), "{out}");
    let s = c
        .wait_for(&id, "north-01 succeeded", |s| {
            device(s, "north-01").state == v1::ActionState::Succeeded as i32
        })
        .await
        .unwrap();
    let d = device(&s, "north-01");
    assert_eq!(d.attempt, 2);
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].exit_code, Some(100));
    assert!(d.history[0].output_tail.contains("Could not get lock"));
    assert_eq!(
        device(&s, "north-02").state,
        v1::ActionState::Failed as i32,
        "only the one asked for"
    );
    let (code, _, err) = c.cli(&["rollout", "retry", &id, "--failed"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    // `--watch` off a terminal prints a line per change and returns when the rollout completes.
    let (code, out, err) = c.cli(&["rollout", "status", &id, "--watch"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("completed | wave 1 [north] 2/2 done"), "{out}");
    let (code, out, err) = c
        .cli(&["rollout", "status", &id, "--watch", "--json"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "completed", "one JSON object");
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state(&s), Some(RolloutState::Completed), "{s:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_agents_hear_of_a_new_wave_within_seconds_not_an_interval() {
    // Check-ins only every 10 minutes: only a wake-up can make this fast.
    let mut c = Cluster::start_with_config("").await.unwrap();
    let data = c.controller().data.clone();
    let addr = c.controller().addr().to_owned();
    c.controller.take().unwrap().stop().await;
    let slow = rollcall_controller::cli::local::LocalController::serve_at(&data, &addr, "10m")
        .await
        .unwrap();
    c.admin = slow.admin().await.unwrap();
    c.controller = Some(slow);
    let dirs = c.add_agents("north", 3).await.unwrap();
    c.publish(&PackageSpec::marker("fast", "1.0", 1))
        .await
        .unwrap();
    // Let every agent make its first check-in (bounded), then open its watch stream.
    for _ in 0..300 {
        let agents = c
            .admin
            .rpc
            .clone()
            .list_agents(v1::ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents;
        if agents.len() == 3 && agents.iter().all(|a| a.last_checkin_unix > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = c.rollout("fast", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state(&s), Some(RolloutState::Completed), "{s:?}");
    // `settle` gives up after 60 s, far less than the 10-minute interval: only wake-ups get here (the figures are
    // in docs/BENCHMARKS.md, `rollcall-bench wake`).
    assert!(dirs.iter().all(|d| d.join("fast.marker").exists()));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_five_times_during_a_large_rollout_installs_every_agent_exactly_once() {
    let mut c = Cluster::start().await.unwrap();
    let mut dirs = Vec::new();
    for (site, n) in [("north", 20), ("south", 30), ("east", 50)] {
        dirs.extend(c.add_agents(site, n).await.unwrap());
    }
    // Every tenth device fails its first install (a lock held); the automatic retry installs it.
    for d in dirs.iter().step_by(10) {
        std::fs::write(d.join("flaky"), "").unwrap();
    }
    let mut spec = PackageSpec::marker("fleet", "1.0", 1);
    spec.install = "if [ -e \"$ROLLCALL_DATA_DIR/flaky\" ] && [ ! -e \"$ROLLCALL_DATA_DIR/tried\" ]; then touch \"$ROLLCALL_DATA_DIR/tried\"; echo fail >> \"$ROLLCALL_DATA_DIR/runs\"; exit 1; fi\necho ok >> \"$ROLLCALL_DATA_DIR/runs\"\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&spec).await.unwrap();
    let overlap = |soak: u64| v1::GateSpec {
        overlap: Some(true),
        soak_seconds: Some(soak),
        ..Default::default()
    };
    let id = c
        .rollout_with(v1::CreateRolloutRequest {
            package: "fleet".into(),
            version: "1.0".into(),
            waves: vec![
                v1::WaveSpec {
                    canary_count: 10,
                    gates: Some(overlap(2)),
                    ..Default::default()
                },
                v1::WaveSpec {
                    sites: vec!["north".into()],
                    gates: Some(overlap(2)),
                    ..Default::default()
                },
                v1::WaveSpec {
                    rest: true,
                    ..Default::default()
                },
            ],
            gates: Some(v1::GateSpec {
                error_count: Some(50),
                ..Default::default()
            }),
            max_concurrent_per_site: 4,
            retries: Some(2),
            retry_delay_seconds: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();

    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500 + 700 * round)).await;
        c.kill_and_restart_controller(Duration::from_millis(500))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let s = loop {
        let s = c.status(&id).await.unwrap();
        if state(&s) == Some(RolloutState::Completed)
            && s.devices
                .iter()
                .all(|d| d.state == v1::ActionState::Succeeded as i32)
        {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not done after 3 minutes: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(s.devices.len(), 100);
    for (i, d) in dirs.iter().enumerate() {
        let runs = std::fs::read_to_string(d.join("runs")).unwrap_or_default();
        let expected = if i % 10 == 0 { "fail\nok\n" } else { "ok\n" };
        assert_eq!(runs, expected, "{}: install runs", d.display());
    }
    let flaky = s.devices.iter().filter(|d| d.attempt == 2).count();
    assert_eq!(
        flaky, 10,
        "the flaky ones needed exactly one automatic retry"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_wait_for_the_site_maintenance_window() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 2).await.unwrap();
    c.publish(&PackageSpec::marker("patch", "1.0", 1))
        .await
        .unwrap();
    // A window that opens in six hours: downloads happen now, installs wait.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = (now / 3600 + 6) % 24;
    let later = format!("daily {hour:02}:00-{:02}:00", (hour + 1) % 24);
    let (code, _, err) = c
        .cli(&["sites", "set", "north", "--window", &later, "--tz", "UTC"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = c.cli(&["sites", "list", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let site = json(&out)["sites"][0].clone();
    assert_eq!(
        (site["name"].as_str(), site["window_open"].as_bool()),
        (Some("north"), Some(false))
    );

    let id = c.rollout("patch", "1.0", &[&["north"]]).await.unwrap();
    let s = c
        .wait_for(&id, "both downloaded and waiting", |s| {
            s.devices.len() == 2
                && s.devices.iter().all(|d| {
                    d.state == v1::ActionState::Downloaded as i32
                        && d.detail.contains("waiting for the maintenance window")
                })
        })
        .await
        .unwrap();
    assert_eq!(state(&s), Some(RolloutState::Running));
    assert!(
        dirs.iter().all(|d| !d.join("patch.marker").exists()),
        "nothing installed outside the window"
    );
    let (_, out, _) = c.cli(&["rollout", "status", &id]).await.unwrap();
    assert!(out.contains("opens in"), "{out}");

    // The admin opens the window now: the agents hear of it at their next check-in and install.
    let (code, _, err) = c
        .cli(&[
            "sites",
            "set",
            "north",
            "--window",
            "daily 00:00-24:00",
            "--tz",
            "UTC",
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state(&s), Some(RolloutState::Completed), "{s:?}");
    assert!(dirs.iter().all(|d| d.join("patch.marker").exists()));
    c.stop().await;
}

/// Give this cluster a technician, as an admin does: `rollcall users add tech1 --role tech --out DIR`.
async fn technician(c: &Cluster) -> std::path::PathBuf {
    let creds = c.path("tech-creds");
    let out = creds.to_str().unwrap().to_owned();
    let (code, stdout, err) = c
        .cli(&["users", "add", "tech1", "--role", "tech", "--out", &out])
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{err}");
    creds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_may_retry_a_desk_but_not_change_a_rollout() {
    let mut c = Cluster::start().await.unwrap();
    c.add_agents("north", 1).await.unwrap();
    let mut bad = PackageSpec::marker("flaky", "1.0", 1);
    bad.install = "if [ ! -e \"$ROLLCALL_DATA_DIR/tried\" ]; then touch \"$ROLLCALL_DATA_DIR/tried\"; exit 1; fi\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&bad).await.unwrap();
    let id = c
        .rollout_with(v1::CreateRolloutRequest {
            package: "flaky".into(),
            version: "1.0".into(),
            waves: vec![sites_wave(&["north"])],
            retries: Some(0),
            gates: Some(v1::GateSpec {
                error_count: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    c.wait_for(&id, "the desk failed", |s| {
        s.devices
            .iter()
            .any(|d| d.state == v1::ActionState::Failed as i32)
    })
    .await
    .unwrap();
    let creds = technician(&c).await;
    let tech = |args: &[&str]| {
        let mut cmd = std::process::Command::new(rollcall_tests::bin("rollcall").unwrap());
        cmd.arg("--creds").arg(&creds).args(args);
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = tech(&["rollout", "cancel", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("tech1 has the tech role; CancelRollout needs admin"),
        "{err}"
    );
    assert_eq!(
        state(&c.status(&id).await.unwrap()),
        Some(RolloutState::Running),
        "nothing changed"
    );
    let (code, err) = tech(&["rollout", "retry", &id, "--agent", "north-01"]);
    assert_eq!(code, 0, "{err}");
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state(&s), Some(RolloutState::Completed), "{s:?}");
    c.stop().await;
}
