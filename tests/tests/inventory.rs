//! Inventory that answers questions: real agents report hardware, OS, network and installed software (read from
//! a dpkg status file the test writes), changes go as deltas, `agents list --where` and `rollout create --where`
//! select by them, `agents show` takes a hostname, and `rollcall compliance` reports per site. Refusals (a bad
//! filter, an inventory over the limits, a malformed one, a delta against the wrong base) change nothing.

use std::path::Path;
use std::time::Duration;

use rollcall_controller::cli::local::LocalAgent;
use rollcall_proto::v1;
use rollcall_tests::{agent_channel, Cluster, PackageSpec};

/// A dpkg status file with these (name, version) packages installed (and one removed, config files left).
fn dpkg_status(path: &Path, packages: &[(&str, &str)]) {
    let mut text = String::new();
    for (name, version) in packages {
        text.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n\
             Maintainer: Test Maint <maint@example.org>\nVersion: {version}\nDescription: {name}\n long text\n\n"
        ));
    }
    text.push_str(
        "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n",
    );
    std::fs::write(path, text).unwrap();
}

/// Settings for an agent that reads `status` as its dpkg database and collects its inventory every second.
fn settings(agent: &LocalAgent, status: &Path) {
    std::fs::write(
        agent.data.with_extension("toml"),
        format!(
            "dpkg_status = {:?}\nrpm_db = \"/nonexistent\"\ninventory_interval_secs = 1\n",
            status.to_str().unwrap()
        ),
    )
    .unwrap();
}

async fn enroll_with(c: &Cluster, site: &str, host: &str, packages: &[(&str, &str)]) -> LocalAgent {
    // A folder of its own each time: the same host may enroll again (a reinstalled desk).
    static ENROLLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = ENROLLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let data = c.path(&format!("agents/{host}-{n}"));
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let status = data.with_extension("status");
    dpkg_status(&status, packages);
    let token = c.token(site, 1, 600).await.unwrap();
    let agent = LocalAgent::enroll(&data, &c.controller().url, &token, host)
        .await
        .unwrap();
    settings(&agent, &status);
    agent
}

async fn list(c: &Cluster, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["--json", "agents", "list"];
    all.extend_from_slice(args);
    let (code, out, err) = c.cli(&all).await.unwrap();
    (code, serde_json::from_str(&out).unwrap_or_default(), err)
}

fn hostnames(v: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = v["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["hostname"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// Wait until `agents list --where FILTER` finds exactly `want` (bounded: 30 s).
async fn wait_for_hosts(c: &Cluster, filter: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v, _) = list(c, &["--where", filter]).await;
        if hostnames(&v) == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "--where {filter}: {:?}, want {want:?}",
            hostnames(&v)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_answers_questions_and_changes_travel_as_deltas() {
    let mut c = Cluster::start().await.unwrap();
    let mut a = enroll_with(
        &c,
        "north",
        "Desk-01",
        &[("openssl", "3.0.2-0ubuntu1.15"), ("vpn-client", "4.1")],
    )
    .await;
    let mut b = enroll_with(
        &c,
        "south",
        "desk-02",
        &[
            ("openssl", "3.0.13-0ubuntu3"),
            ("libstdc++6", "1:12.2.0-14"),
        ],
    )
    .await;
    a.start().unwrap();
    b.start().unwrap();
    wait_for_hosts(&c, "software.openssl~ubuntu", &["Desk-01", "desk-02"]).await;

    // Debian ordering: 3.0.2-0ubuntu1.15 < 3.0.13 < 3.0.13-0ubuntu3; epochs count.
    wait_for_hosts(&c, "software.openssl<3.0.13", &["Desk-01"]).await;
    wait_for_hosts(&c, "software.openssl>=3.0.13", &["desk-02"]).await;
    wait_for_hosts(&c, "software.libstdc++6>12.3", &["desk-02"]).await;
    wait_for_hosts(&c, "software.vpn-client!=4.1", &["desk-02"]).await;
    // A malformed filter is a usage error that points at the bad part; nothing is listed.
    let (code, v, err) = list(&c, &["--where", "hw.vendor!=x", "--where", "os.nme=Ubuntu"]).await;
    assert_eq!(code, 64, "{err}");
    assert!(v.is_null(), "no JSON on a refusal");
    assert!(err.contains("unknown key \"os.nme\""), "{err}");
    assert!(err.contains("  os.nme=Ubuntu\n  ^^^^^^"), "{err}");
    // The same language, the same refusal, for a rollout's targets (before anything is sent).
    let (code, _, err) = c
        .cli(&[
            "rollout",
            "create",
            "vpn@1",
            "--wave",
            "north",
            "--where",
            "software.=1",
        ])
        .await
        .unwrap();
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("software. needs a package name"), "{err}");
    let (code, v, _) = list(&c, &["--site", "north"]).await;
    assert_eq!((code, hostnames(&v)), (0, vec!["Desk-01".to_string()]));
    assert_eq!(v["agents"][0]["presence"], "online");
    assert_eq!(v["count"], 1);
    let (code, v, _) = list(&c, &["--stale", "1h"]).await;
    assert_eq!(
        (code, hostnames(&v)),
        (0, vec![]),
        "nobody silent for an hour"
    );

    // The whole inventory, by hostname in any case.
    let (code, out, err) = c
        .cli(&["--json", "agents", "show", "desk-01", "--software"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["hostname"], "Desk-01");
    let inv = &shown["inventory"];
    assert!(
        inv["os"]["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "{inv}"
    );
    assert!(inv["hardware"]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(inv["interfaces"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["name"] == "lo")));
    assert_eq!(
        inv["software"].as_array().unwrap().len(),
        2,
        "the config-files stanza is not installed"
    );
    assert_eq!(inv["software"][0]["source"], "dpkg");
    assert_eq!(inv["software"][0]["publisher"], "Test Maint");
    let (code, out, _) = c.cli(&["agents", "show", "DESK-01"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("software   2 packages (dpkg)"), "{out}");

    // A package upgraded on the device: the next inventory goes as a delta and the controller rebuilds it.
    dpkg_status(
        &a.data.with_extension("status"),
        &[
            ("openssl", "3.0.13-0ubuntu3"),
            ("vpn-client", "4.1"),
            ("zoom", "6.0"),
        ],
    );
    wait_for_hosts(&c, "software.openssl>=3.0.13", &["Desk-01", "desk-02"]).await;
    wait_for_hosts(&c, "software.zoom=6.0", &["Desk-01"]).await;
    let log = std::fs::read_to_string(a.data.with_extension("log")).unwrap();
    assert!(!log.contains("WARN"), "{log}");

    // The same hostname twice (a retired record and a new enrollment): `agents show` lists both ids.
    let id = rollcall_tests::agent_id(&b.data).unwrap();
    b.stop().await;
    let (code, _, err) = c.cli(&["agents", "retire", &id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let again = enroll_with(&c, "south", "desk-02", &[]).await;
    let (code, _, err) = c.cli(&["agents", "show", "desk-02"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("hostname desk-02 names 2 agents"), "{err}");
    assert!(
        err.contains(&id) && err.contains(&rollcall_tests::agent_id(&again.data).unwrap()),
        "{err}"
    );
    let (code, _, err) = c.cli(&["agents", "show", "nobody-here"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("no agent has the id or hostname nobody-here"),
        "{err}"
    );

    a.stop().await;
    c.agents.push(a);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_apply_only_to_their_base_and_bad_reports_are_refused() {
    let c = Cluster::start().await.unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("lib{i:02}")).collect();
    let mut packages: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1.0-1")).collect();
    packages.push(("openssl", "3.0.2"));
    let mut a = enroll_with(&c, "north", "desk-01", &packages).await;
    a.start().unwrap();
    wait_for_hosts(&c, "software.openssl=3.0.2", &["desk-01"]).await;
    a.stop().await;
    let channel = agent_channel(&c, Some(&a.data)).await.unwrap();
    let mut agent = v1::agent_service_client::AgentServiceClient::new(channel);
    let (code, before, _) = c
        .cli(&["--json", "agents", "show", "desk-01", "--software"])
        .await
        .unwrap();
    assert_eq!(code, 0);

    let software = |n: usize| {
        (0..n)
            .map(|i| v1::Software {
                name: format!("pkg{i}"),
                version: "1".into(),
                source: v1::SoftwareSource::Dpkg as i32,
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    let huge = v1::Inventory {
        hostname: "desk-01".into(),
        software: software(50_001),
        ..Default::default()
    };
    let unnamed = v1::Inventory {
        hostname: "desk-01".into(),
        software: vec![v1::Software::default()],
        ..Default::default()
    };
    for (inv, words) in [
        (huge, "50001 software entries; at most 50000"),
        (unnamed, "software entry 0 has no name"),
    ] {
        let hash = rollcall_proto::inventory::hash(&inv);
        let e = agent
            .check_in(v1::CheckInRequest {
                inventory: Some(inv),
                inventory_hash: hash,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(words), "{}", e.message());
        assert!(
            e.message().contains("the previous one is kept"),
            "{}",
            e.message()
        );
    }
    // A delta against a base the controller does not have: not applied, the whole inventory is asked for.
    let delta = v1::InventoryDelta {
        base_hash: "0".repeat(64),
        inventory: Some(v1::Inventory {
            hostname: "desk-01".into(),
            ..Default::default()
        }),
        software_set: software(1),
        software_removed: vec![],
    };
    let resp = agent
        .check_in(v1::CheckInRequest {
            inventory_delta: Some(delta),
            inventory_hash: "1".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.send_inventory, "asked for the whole inventory");
    let (_, after, _) = c
        .cli(&["--json", "agents", "show", "desk-01", "--software"])
        .await
        .unwrap();
    let inventory =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["inventory"].clone();
    assert_eq!(inventory(&after), inventory(&before), "nothing changed");

    // The delta the agent would send, against the inventory the controller accepted (the agent keeps it): applied.
    use prost::Message;
    let base = v1::Inventory::decode(
        std::fs::read(a.data.join("inventory.pb"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let base_hash = rollcall_proto::inventory::hash(&base);
    let mut current = base.clone();
    let openssl = current
        .software
        .iter_mut()
        .find(|s| s.name == "openssl")
        .unwrap();
    openssl.version = "3.0.13".into();
    let delta = rollcall_proto::inventory::delta(&base, &base_hash, &current);
    assert!(delta.encoded_len() < current.encoded_len());
    let resp = agent
        .check_in(v1::CheckInRequest {
            inventory_delta: Some(delta),
            inventory_hash: rollcall_proto::inventory::hash(&current),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.send_inventory, "the delta was applied");
    let (_, v, _) = list(&c, &["--where", "software.openssl=3.0.13"]).await;
    assert_eq!(hostnames(&v), vec!["desk-01".to_string()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_reports_per_site_and_names_who_is_behind() {
    let mut c = Cluster::start().await.unwrap();
    c.add_agents("north", 2).await.unwrap();
    c.add_agents("south", 2).await.unwrap();
    c.publish(&PackageSpec::marker("vpn", "2.0", 1))
        .await
        .unwrap();
    // South's devices are left out by the filter; north gets 2.0.
    let id = c
        .rollout_with(v1::CreateRolloutRequest {
            package: "vpn".into(),
            version: "2.0".into(),
            waves: vec![rollcall_tests::sites_wave(&["north"])],
            selector: Some(v1::TargetSelector {
                r#where: vec!["software.vpn!=2.0".into(), "site=north".into()],
                ..Default::default()
            }),
            retries: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    c.settle(&id).await.unwrap();

    let (code, out, err) = c.cli(&["--json", "compliance", "vpn@2.0"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["compared_by"], "rollcall");
    assert_eq!(r["sites"][0]["site"], "north");
    assert_eq!(
        (
            r["sites"][0]["current"].as_u64(),
            r["sites"][0]["endpoints"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(r["sites"][1]["missing"].as_u64(), Some(2));

    let (code, out, _) = c.cli(&["compliance", "vpn", "--csv"]).await.unwrap();
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "SITE,ENDPOINTS,CURRENT,OLDER,MISSING,FAILED,PENDING,NEVER REPORTED,COMPLIANT"
    );
    assert_eq!(lines[1], "north,2,2,0,0,0,0,0,100.0%");
    assert_eq!(lines[2], "south,2,0,0,2,0,0,0,0.0%");
    assert_eq!(lines[3], "TOTAL,4,2,0,2,0,0,0,50.0%");

    let (code, out, _) = c
        .cli(&["compliance", "vpn@2.0", "--site", "south", "--devices"])
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("south-03") && out.contains("not installed; no rollout of 2.0 under way"),
        "{out}"
    );
    assert!(!out.contains("north-01"), "{out}");

    for (args, code_wanted, words) in [
        (
            vec!["compliance", "@2.0"],
            64,
            "is not PACKAGE or PACKAGE@VERSION",
        ),
        (
            vec!["compliance", "nothing-like-it"],
            1,
            "no rollcall package and no installed software is named nothing-like-it",
        ),
        (
            vec!["compliance", "vpn", "--site", "nowhere"],
            1,
            "no site nowhere",
        ),
    ] {
        let (code, _, err) = c.cli(&args).await.unwrap();
        assert_eq!(code, code_wanted, "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
    c.stop().await;
}
