//! A patrol car's link, for real: the agent runs in its own network namespace, joined to the controller's side by a
//! veth pair shaped to 1 Mbit/s (`tc … tbf`; this kernel has no netem), through a proxy that adds latency and drops
//! connections at random. The link goes down and up twice during the transfer and the agent's address changes (a
//! VPN reconnect). A 20 MiB package installs exactly once and the report arrives.
//!
//! Needs root for the namespaces; without it the test says why and skips.

use std::path::Path;
use std::time::{Duration, Instant};

use rollcall_proto::v1;
use rollcall_tests::netns::Link;
use rollcall_tests::proxy::{Proxy, Shape};
use rollcall_tests::{files_in, Cluster, PackageSpec};

const PAYLOAD: usize = 20 * 1024 * 1024;

fn partial_bytes(data: &Path) -> u64 {
    std::fs::read_dir(data.join("downloads"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Wait until the partial download holds `bytes` (bounded: 300 s).
async fn until_downloaded(data: &Path, bytes: u64) {
    let started = Instant::now();
    while partial_bytes(data) < bytes {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{bytes} bytes not downloaded within 300 s (have {})",
            partial_bytes(data)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_package_crosses_a_slow_dropping_link_that_goes_down_twice_and_installs_once() {
    let link = match Link::create() {
        Ok(link) => link,
        Err(why) => {
            eprintln!("skipped: cannot create network namespaces ({why}); run as root");
            return;
        }
    };
    let far = link.far_addr().to_string();
    let mut c = Cluster::start_with("", &[&far]).await.unwrap();
    // The controller's side of the link: a relay listening in the far namespace, forwarding to the controller,
    // adding 20 ms per chunk and dropping a connection now and then.
    let listener = link.listen_far(0).unwrap();
    let upstream = c.controller().addr().parse().unwrap();
    let shape = Shape {
        latency: Duration::from_millis(20),
        drop_per_mille: 1,
        ..Shape::default()
    };
    let relay = Proxy::start_on(listener, upstream, shape, 7).unwrap();
    link.shape("1mbit").unwrap();

    let mut agent = c.enroll("north", "mdc-01").await.unwrap();
    let data = c.path("agents/mdc-01");
    let config = std::fs::read_to_string(data.join("agent.toml")).unwrap();
    let config = config.replace(&c.controller().url, &format!("https://{}", relay.addr));
    std::fs::write(data.join("agent.toml"), config).unwrap();
    agent.start_in(&link.in_agent_ns()).unwrap();
    c.agents.push(agent);

    let mut spec = PackageSpec::marker("big", "1.0", 1);
    spec.install = "echo run >> \"$ROLLCALL_DATA_DIR/install-runs\"\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/big.marker\"";
    let payload_dir = c.path("src/big-1.0/payload");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let noise = rollcall_tests::noise(PAYLOAD, 0x853c_49e6_748f_ea9bu64);
    std::fs::write(payload_dir.join("blob.bin"), &noise).unwrap();
    c.publish(&spec).await.unwrap();
    let id = c.rollout("big", "1.0", &[&["north"]]).await.unwrap();

    for at_mib in [3, 8] {
        until_downloaded(&data, at_mib * 1024 * 1024).await;
        link.set_up(false).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        link.set_up(true).unwrap();
    }
    until_downloaded(&data, 12 * 1024 * 1024).await;
    let moved = link.move_agent().unwrap();
    eprintln!("agent moved to {moved}");

    let started = Instant::now();
    let s = loop {
        let s = c.status(&id).await.unwrap();
        if v1::RolloutState::try_from(s.state) != Ok(v1::RolloutState::Running)
            || started.elapsed() > Duration::from_secs(400)
        {
            break s;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let d = &s.devices[0];
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let steps = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("step") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        v1::ActionState::try_from(d.state).unwrap(),
        v1::ActionState::Succeeded,
        "{} after {:?}; agent log:\n{steps}",
        d.detail,
        started.elapsed()
    );
    let runs = std::fs::read_to_string(data.join("install-runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "installed exactly once");
    assert!(data.join("big.marker").exists());
    assert!(files_in(&data.join("downloads")).is_empty());
    assert!(
        log.contains("resumed at byte"),
        "the download resumed after a drop:\n{steps}"
    );
    c.stop().await;
    drop(relay);
    drop(link);
}
