//! End-to-end: real controller and agent processes on loopback, real TLS, real TUF signatures, real installs
//! of scripts in temp dirs. Each refusal test shows the refusal and that nothing was installed or changed.

use std::time::Duration;

use rollcall_proto::v1;
use rollcall_tests::{agent_state, bin, files_in, Cluster, PackageSpec};

fn state_of(s: &v1::RolloutStatus) -> v1::RolloutState {
    v1::RolloutState::try_from(s.state).unwrap_or_default()
}

fn device<'a>(s: &'a v1::RolloutStatus, site: &str) -> &'a v1::DeviceStatus {
    s.devices
        .iter()
        .find(|d| d.site == site)
        .expect("device of site")
}

fn action_state(d: &v1::DeviceStatus) -> v1::ActionState {
    v1::ActionState::try_from(d.state).unwrap_or_default()
}

async fn demo(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(bin("rollcall").unwrap())
        .arg("demo")
        .args(args)
        .arg("--json")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_twelve_agents_through_a_canary_and_three_site_waves() {
    let summary = demo(&[]).await;
    assert_eq!(summary["agents"], 12);
    assert_eq!(
        summary["markers"], 12,
        "every agent ran the signed install command"
    );
    let rollout = &summary["rollout"];
    assert_eq!(
        (&summary["state"], &rollout["state"]),
        (&"completed".into(), &"completed".into())
    );
    let waves = rollout["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 4);
    assert_eq!(waves[0]["kind"], "canary 10%");
    assert_eq!(waves[0]["total"], 2, "10% of 12, rounded up");
    let mut total = 0;
    for wave in waves {
        assert_eq!(wave["state"], "done");
        assert_eq!(wave["succeeded"], wave["total"]);
        for key in [
            "failed",
            "rolled_back",
            "pending",
            "in_progress",
            "offline",
            "skipped",
        ] {
            assert_eq!(wave[key], 0, "{key}");
        }
        total += wave["total"].as_u64().unwrap();
    }
    assert_eq!(total, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_drift_repairs_and_reports_a_changed_file() {
    let summary = demo(&["--scenario", "config-drift", "--agents", "6"]).await;
    assert_eq!(summary["state"], "completed", "{summary}");
    assert_eq!(
        summary["markers"], 6,
        "every device holds the profile's file"
    );
    let drift = &summary["drift"];
    assert_eq!(drift["restored"], true, "{drift}");
    let events = drift["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["repaired"] == true
            && e["item"].as_str().unwrap().contains("station.conf")
            && e["profile"] == "station-settings"),
        "{drift}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_bad_patch_stops_at_the_canary() {
    let summary = demo(&["--scenario", "bad-patch"]).await;
    assert_eq!(summary["state"], "paused");
    assert_eq!(summary["markers"], 0);
    assert_eq!(summary["offered_outside_canary"], 0);
    let rollout = &summary["rollout"];
    assert!(
        rollout["reason"]
            .as_str()
            .unwrap()
            .contains("wave 1 reached its error threshold"),
        "{rollout}"
    );
    let waves = rollout["waves"].as_array().unwrap();
    assert!(
        waves[0]["failed"].as_u64().unwrap() >= 1,
        "a canary device failed after its retries"
    );
    assert_eq!(waves[0]["succeeded"], 0);
    for wave in &waves[1..] {
        assert_eq!(wave["state"], "waiting");
        assert_eq!(
            (
                wave["succeeded"].as_u64(),
                wave["in_progress"].as_u64(),
                wave["failed"].as_u64()
            ),
            (Some(0), Some(0), Some(0))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_install_rolls_back_and_stops_the_rollout_at_the_first_site() {
    let mut c = Cluster::start().await.unwrap();
    let first = c.add_agents("first", 1).await.unwrap();
    let second = c.add_agents("second", 1).await.unwrap();
    let mut bad = PackageSpec::marker("bad-app", "1.0", 1);
    bad.install =
        "echo installing; touch \"$ROLLCALL_DATA_DIR/bad-app.partial\"; echo disk full >&2; exit 3";
    bad.rollback = Some("rm -f \"$ROLLCALL_DATA_DIR/bad-app.partial\"; echo rolled back");
    c.publish(&bad).await.unwrap();
    let id = c
        .rollout("bad-app", "1.0", &[&["first"], &["second"]])
        .await
        .unwrap();
    let s = c.settle(&id).await.unwrap();

    assert_eq!(state_of(&s), v1::RolloutState::Paused);
    assert!(
        s.reason
            .contains("wave 1 reached its error threshold (1 of 1 devices failed"),
        "{}",
        s.reason
    );
    let d = device(&s, "first");
    assert_eq!(action_state(d), v1::ActionState::RolledBack);
    assert_eq!(d.exit_code, Some(3));
    assert!(
        d.detail.contains("install command exited 3; rolled back"),
        "{}",
        d.detail
    );
    assert!(d.output_tail.contains("disk full"), "{}", d.output_tail);
    assert!(
        !first[0].join("bad-app.partial").exists(),
        "the rollback command ran"
    );
    assert_eq!(
        action_state(device(&s, "second")),
        v1::ActionState::Pending,
        "second site never offered"
    );
    assert!(agent_state(&first[0]).unwrap()["installed"]
        .as_object()
        .unwrap()
        .is_empty());
    assert!(!second[0].join("bad-app.marker").exists());

    // A hanging install is killed at its timeout and reported; nothing counts as installed.
    let mut hang = PackageSpec::marker("hang-app", "1.0", 1);
    hang.install = "sleep 600";
    hang.install_timeout_secs = 2;
    c.publish(&hang).await.unwrap();
    let id = c.rollout("hang-app", "1.0", &[&["second"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    let d = device(&s, "second");
    assert_eq!(action_state(d), v1::ActionState::Failed);
    assert!(
        d.detail.contains("install command timed out after 2s"),
        "{}",
        d.detail
    );
    assert!(agent_state(&second[0]).unwrap()["installed"]
        .as_object()
        .unwrap()
        .is_empty());
    c.stop().await;
}

/// Publish a package, let `corrupt` change the payload the controller stores, roll it out to one agent, and
/// check the agent refused it and nothing was installed, staged, kept or extracted.
async fn refused_payload(corrupt: fn(&mut Vec<u8>)) {
    let mut c = Cluster::start().await.unwrap();
    let pushed = c
        .publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let blob = c
        .controller()
        .data
        .join("blobs")
        .join(&pushed.new_packages[0].sha256);
    let mut bytes = std::fs::read(&blob).unwrap();
    corrupt(&mut bytes);
    std::fs::write(&blob, &bytes).unwrap();

    let agents = c.add_agents("north", 1).await.unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Paused);
    let d = device(&s, "north");
    assert_eq!(action_state(d), v1::ActionState::Failed);
    assert!(d.detail.contains("failed verification"), "{}", d.detail);
    assert!(!agents[0].join("app.marker").exists(), "install never ran");
    assert!(
        files_in(&agents[0].join("staged")).is_empty(),
        "nothing staged"
    );
    assert!(
        files_in(&agents[0].join("downloads")).is_empty(),
        "bad download discarded"
    );
    assert!(
        files_in(&agents[0].join("work")).is_empty(),
        "nothing extracted"
    );
    assert!(agent_state(&agents[0]).unwrap()["installed"]
        .as_object()
        .unwrap()
        .is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_payload_is_refused_and_nothing_is_installed() {
    // A compromised controller (or disk) flips one byte of the stored payload.
    refused_payload(|bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_is_refused_and_nothing_is_installed() {
    // The controller serves more bytes than the signed length.
    refused_payload(|bytes| bytes.extend_from_slice(&[0u8; 4096])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_signed_by_an_unknown_key_is_refused_by_the_controller() {
    let c = Cluster::start().await.unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let before = c
        .admin
        .rpc
        .clone()
        .get_repository(v1::GetRepositoryRequest {})
        .await
        .unwrap()
        .into_inner();

    // An attacker with their own root and targets keys (but the controller's public online keys).
    let evil_keys = c.path("evil-keys");
    let evil_repo = c.path("evil-repo");
    rollcall_controller::cli::pkg::keygen(&evil_keys).unwrap();
    let online = rollcall_controller::cli::pkg::online_keys_of(&c.admin)
        .await
        .unwrap();
    rollcall_controller::cli::pkg::init_repo(
        &evil_keys,
        &evil_repo,
        &online,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let evil = c.build(&PackageSpec::marker("evil", "6.6.6", 99)).unwrap();
    rollcall_controller::cli::pkg::sign(&evil_repo, &evil_keys, &evil, Duration::from_secs(3600))
        .await
        .unwrap();
    let err = rollcall_controller::cli::pkg::push(&c.admin, &evil_repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets.json refused") && err.contains("InvalidArgument"),
        "{err}"
    );

    let after = c
        .admin
        .rpc
        .clone()
        .get_repository(v1::GetRepositoryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        before.targets_version, after.targets_version,
        "nothing was published"
    );
    let packages = c
        .admin
        .rpc
        .clone()
        .list_packages(v1::ListPackagesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(packages.packages.iter().all(|p| p.name != "evil"));
    let refused = c
        .admin
        .rpc
        .clone()
        .create_rollout(v1::CreateRolloutRequest {
            package: "evil".into(),
            version: "6.6.6".into(),
            waves: vec![rollcall_tests::sites_wave(&["x"])],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    // The offline tooling refuses to sign with a key the root does not list for targets.
    let wrong = c.build(&PackageSpec::marker("app", "2.0", 2)).unwrap();
    let err =
        rollcall_controller::cli::pkg::sign(&c.repo, &evil_keys, &wrong, Duration::from_secs(3600))
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("targets"), "{err}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollment_tokens_are_refused_and_enroll_nothing() {
    let c = Cluster::start().await.unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let good = c.token("north", 1, 600).await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}.{}",
        parts[0], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", parts[2], parts[3]
    );
    let wrong_ca = format!("{}.{}.{}.{}", parts[0], parts[1], "0".repeat(64), parts[3]);
    let wrong_root = format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], "0".repeat(64));
    let short = c.token("north", 1, 1).await.unwrap();

    let enroll = |token: String, name: &str| {
        let data = c.path(&format!("agents/{name}"));
        let url = c.controller().url.clone();
        async move {
            let out = tokio::process::Command::new(bin("rollcall-agent").unwrap())
                .args([
                    "enroll",
                    "--controller",
                    &url,
                    "--token",
                    &token,
                    "--hostname",
                    "h",
                    "--data",
                ])
                .arg(&data)
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                data,
            )
        }
    };
    let cases = [
        (forged, "forged", "unknown enrollment token"),
        (
            wrong_ca,
            "wrong-ca",
            "does not match the CA pin in the enrollment token",
        ),
        (
            "not-a-token".to_owned(),
            "garbage",
            "not a rollcall enrollment token",
        ),
    ];
    for (token, name, message) in cases {
        let (code, stderr, data) = enroll(token, name).await;
        assert_ne!(code, Some(0), "{name}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(
            !data.join("agent.toml").exists() && !data.join("identity").exists(),
            "{name}: nothing written"
        );
    }
    // The root pin is checked after the controller answered: refused, and the token spent is not reused.
    let (code, stderr, data) = enroll(wrong_root, "wrong-root").await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("root.json from the controller"), "{stderr}");
    assert!(!data.join("agent.toml").exists());
    let (code, stderr, _) = enroll(good, "used-up").await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no uses left"), "{stderr}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, stderr, _) = enroll(short, "expired").await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("expired"), "{stderr}");

    let agents = c
        .admin
        .rpc
        .clone()
        .list_agents(v1::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        agents.agents.len(),
        1,
        "only the wrong-root attempt consumed the token: {:?}",
        agents.agents
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_rollback_refuses_a_lower_release_counter() {
    let mut c = Cluster::start().await.unwrap();
    let agents = c.add_agents("north", 1).await.unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    c.publish(&PackageSpec::marker("app", "2.0", 2))
        .await
        .unwrap();
    let id = c.rollout("app", "2.0", &[&["north"]]).await.unwrap();
    assert_eq!(
        state_of(&c.settle(&id).await.unwrap()),
        v1::RolloutState::Completed
    );
    assert_eq!(
        std::fs::read_to_string(agents[0].join("app.marker"))
            .unwrap()
            .trim(),
        "2.0"
    );

    // The controller already knows the device is newer: it is skipped, never offered the older package (the
    // agent refuses lower release counters on its own too, see agent::state tests).
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    let d = device(&s, "north");
    assert_eq!(action_state(d), v1::ActionState::Skipped);
    assert!(
        d.detail
            .contains("already at app 2.0 (release 2), this rollout brings release 1"),
        "{}",
        d.detail
    );
    assert_eq!(
        std::fs::read_to_string(agents[0].join("app.marker"))
            .unwrap()
            .trim(),
        "2.0",
        "v2 untouched"
    );
    assert_eq!(
        agent_state(&agents[0]).unwrap()["installed"]["app"]["release_counter"],
        2
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_where_it_stopped() {
    let mut c = Cluster::start().await.unwrap();
    let spec = PackageSpec::marker("big", "1.0", 1);
    // A payload of a few MB that gzip cannot shrink much, so it has a middle to stop in.
    let payload_dir = c.path("src/big-1.0/payload");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let noise: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(payload_dir.join("blob.bin"), &noise).unwrap();
    let package = c.build(&spec).unwrap();
    rollcall_controller::cli::pkg::sign(&c.repo, &c.keys, &package, Duration::from_secs(3600))
        .await
        .unwrap();
    let pushed = rollcall_controller::cli::pkg::push(&c.admin, &c.repo)
        .await
        .unwrap();
    let info = &pushed.new_packages[0];

    // Enroll, then leave the first part of the payload where an interrupted download would have left it.
    let token = c.token("north", 2, 600).await.unwrap();
    let good = c.path("agents/resumer");
    let bad = c.path("agents/corrupt");
    let mut agents = Vec::new();
    for (data, prefix, hostname) in [(&good, false, "resumer"), (&bad, true, "corrupt")] {
        let agent = rollcall_controller::cli::local::LocalAgent::enroll(
            data,
            &c.controller().url,
            &token,
            hostname,
        )
        .await
        .unwrap();
        let payload = std::fs::read(
            c.repo
                .join("targets")
                .join(format!("{}.{}", info.sha256, info.target_name)),
        )
        .unwrap();
        let mut part = payload[..payload.len() / 2].to_vec();
        if prefix {
            part[10] ^= 0xff;
        }
        std::fs::create_dir_all(data.join("downloads")).unwrap();
        std::fs::write(
            data.join("downloads")
                .join(format!("{}.{}.part", info.sha256, info.target_name)),
            &part,
        )
        .unwrap();
        agents.push(agent);
    }
    for agent in &mut agents {
        agent.start().unwrap();
    }
    c.agents.extend(agents);
    let id = c.rollout("big", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Completed, "{s:?}");
    assert!(good.join("big.marker").exists() && bad.join("big.marker").exists());
    let log = std::fs::read_to_string(good.with_extension("log")).unwrap();
    assert!(
        log.contains("resumed at byte"),
        "the good partial download was resumed:\n{log}"
    );
    let log = std::fs::read_to_string(bad.with_extension("log")).unwrap();
    assert!(
        log.contains("downloading again from the start"),
        "the corrupt partial was discarded:\n{log}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_paused_rollout_retries_the_failed_device() {
    let mut c = Cluster::start().await.unwrap();
    let first = c.add_agents("first", 1).await.unwrap();
    let second = c.add_agents("second", 1).await.unwrap();
    // Fails until a technician fixes the device (here: creates the file the installer needs).
    let mut spec = PackageSpec::marker("needs-fix", "1.0", 1);
    spec.install = "test -f \"$ROLLCALL_DATA_DIR/fixed\" || { echo 'prerequisite missing' >&2; exit 4; }\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&spec).await.unwrap();
    let id = c
        .rollout("needs-fix", "1.0", &[&["first"], &["second"]])
        .await
        .unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Paused);
    assert_eq!(device(&s, "first").exit_code, Some(4));

    for dir in [&first[0], &second[0]] {
        std::fs::write(dir.join("fixed"), "").unwrap();
    }
    c.admin
        .rpc
        .clone()
        .start_rollout(v1::RolloutRef { id: id.clone() })
        .await
        .unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Completed, "{s:?}");
    assert!(s
        .devices
        .iter()
        .all(|d| action_state(d) == v1::ActionState::Succeeded));
    assert!(
        first[0].join("needs-fix.marker").exists() && second[0].join("needs-fix.marker").exists()
    );
    assert!(
        device(&s, "first").output_tail.is_empty(),
        "attempt 1 output does not linger: {:?}",
        device(&s, "first")
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_renew_their_certificate_before_it_expires() {
    let mut c = Cluster::start_with_config("agent_cert_validity = \"6s\"\n")
        .await
        .unwrap();
    let agents = c.add_agents("north", 1).await.unwrap();
    let first_identity = std::fs::read(agents[0].join("identity/client.pem")).unwrap();
    // Well past the first certificate's expiry: only renewal keeps the agent talking to the controller.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let list = c
        .admin
        .rpc
        .clone()
        .list_agents(v1::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let last = list.agents[0].last_checkin_unix;
    assert!(
        list.now_unix - last <= 3,
        "still checking in: last {last}, now {}",
        list.now_unix
    );
    assert_ne!(
        std::fs::read(agents[0].join("identity/client.pem")).unwrap(),
        first_identity
    );
    let log = std::fs::read_to_string(agents[0].with_extension("log")).unwrap();
    assert!(log.contains("Client certificate renewed."), "{log}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_rollout_resumes_where_it_was() {
    let mut c = Cluster::start().await.unwrap();
    let first = c.add_agents("first", 1).await.unwrap();
    let second = c.add_agents("second", 1).await.unwrap();
    let mut spec = PackageSpec::marker("slow", "1.0", 1);
    spec.install =
        "sleep 3\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&spec).await.unwrap();
    let id = c
        .rollout("slow", "1.0", &[&["first"], &["second"]])
        .await
        .unwrap();

    // Kill the controller (no flush, no shutdown) while wave 1 is installing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.status(&id).await.unwrap();
        if action_state(device(&s, "first")) == v1::ActionState::Installing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wave 1 never started installing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Same data, same address: the agents reconnect by themselves, their reports arrive, the rollout goes on.
    c.kill_and_restart_controller(Duration::from_secs(2))
        .await
        .unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Completed, "{s:?}");
    assert!(first[0].join("slow.marker").exists() && second[0].join("slow.marker").exists());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_timestamps_are_renewed_before_they_lapse() {
    // Timestamp and snapshot valid for 4 s: agents refuse expired metadata, so only renewal keeps this working.
    let mut c = Cluster::start_with_config("timestamp_validity = \"4s\"\n")
        .await
        .unwrap();
    let agents = c.add_agents("north", 1).await.unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Completed, "{s:?}");
    assert!(agents[0].join("app.marker").exists());
    let log = std::fs::read_to_string(&c.controller().log).unwrap();
    assert!(log.contains("Snapshot and timestamp re-signed."), "{log}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_root_and_targets_key_reach_agents_through_the_chain() {
    let mut c = Cluster::start().await.unwrap();
    let agents = c.add_agents("north", 1).await.unwrap();
    c.publish(&PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    assert_eq!(
        state_of(&c.settle(&id).await.unwrap()),
        v1::RolloutState::Completed
    );

    // New keepers: three root keys, any two of which sign later roots, and a new targets key.
    let creds = c.controller().admin_creds();
    let pkg = |args: &[&str]| {
        let out = std::process::Command::new(rollcall_tests::bin("rollcall").unwrap())
            .args(["--creds", creds.to_str().unwrap(), "pkg"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let new_keys = c.path("new-keys");
    let (repo, old_keys) = (
        c.repo.to_str().unwrap().to_owned(),
        c.keys.to_str().unwrap().to_owned(),
    );
    let (code, out) = pkg(&[
        "keygen",
        "--keys",
        new_keys.to_str().unwrap(),
        "--root-keys",
        "3",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = pkg(&[
        "rotate-root",
        "--repo",
        &repo,
        "--keys",
        &old_keys,
        "--new-keys",
        new_keys.to_str().unwrap(),
        "--root-threshold",
        "2",
        "--targets",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("root.json version 2"), "{out}");
    let (code, out) = pkg(&["push", "--repo", &repo]);
    assert_eq!(code, 0, "{out}");

    // The old targets key no longer signs anything.
    let next = c.build(&PackageSpec::marker("app", "2.0", 2)).unwrap();
    let err =
        rollcall_controller::cli::pkg::sign(&c.repo, &c.keys, &next, Duration::from_secs(3600))
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("targets"), "{err}");
    // The new one does, and the agent, which trusted root v1, walks to v2 and installs.
    rollcall_controller::cli::pkg::sign(&c.repo, &new_keys, &next, Duration::from_secs(3600))
        .await
        .unwrap();
    rollcall_controller::cli::pkg::push(&c.admin, &c.repo)
        .await
        .unwrap();
    let id = c.rollout("app", "2.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(state_of(&s), v1::RolloutState::Completed, "{s:?}");
    assert_eq!(
        std::fs::read_to_string(agents[0].join("app.marker"))
            .unwrap()
            .trim(),
        "2.0"
    );
    // A device enrolled now is pinned to root v2 and installs too.
    let later = c.add_agents("south", 1).await.unwrap();
    let id = c.rollout("app", "2.0", &[&["south"]]).await.unwrap();
    assert_eq!(
        state_of(&c.settle(&id).await.unwrap()),
        v1::RolloutState::Completed
    );
    assert!(later[0].join("app.marker").exists());

    // One keeper alone cannot rotate again (the threshold is two).
    let one = c.path("one-keeper");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::copy(new_keys.join("root-1.pk8"), one.join("root-1.pk8")).unwrap();
    let (code, out) = pkg(&[
        "rotate-root",
        "--repo",
        &repo,
        "--keys",
        one.to_str().unwrap(),
        "--new-keys",
        one.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not signed by the keys of root version 2"),
        "{out}"
    );
    c.stop().await;
}
