//! Inventory benchmarks of `rollcall-bench`:
//!
//! - `inventory --runs N`: runs the real `rollcall-agent inventory --json` N times and prints the CPU time per run
//!   and the peak RSS of the runs (from `getrusage(RUSAGE_CHILDREN)`), the number of packages found, and the
//!   size of the whole inventory against the delta after one package upgrade.
//! - `query --agents N --sets K`: a real controller; N agents enrolled through the real Enroll call, each sending
//!   one synthetic inventory (this machine's, with its hostname, serial and model changed, and K distinct
//!   software lists among them) through the real check-in path with its own certificate. Then times
//!   `ListAgents` with filters as `rollcall agents list --where` sends them, and prints the controller's RSS.
//!
//! Bounded: every phase has a deadline and a count; traffic goes only to 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use rollcall_controller::cli::local::bin;
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};

use crate::benchkit::{enroll_one, BenchController};

/// CPU seconds (user + system) and peak RSS in KiB of the children this process has waited for.
fn children_usage() -> (f64, u64) {
    // SAFETY: getrusage only writes the struct we pass.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

/// `rollcall-bench inventory`.
pub fn inventory_cost(runs: usize) -> anyhow::Result<()> {
    let agent = bin("rollcall-agent")?;
    let data = tempfile::tempdir()?;
    let mut last = Vec::new();
    let started = Instant::now();
    for _ in 0..runs.max(1) {
        let out = std::process::Command::new(&agent)
            .args(["inventory", "--json", "--data"])
            .arg(data.path())
            .arg("--config")
            .arg(data.path().join("none.toml"))
            .output()
            .context("cannot run rollcall-agent inventory")?;
        anyhow::ensure!(
            out.status.success(),
            "rollcall-agent inventory failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = out.stdout;
    }
    let wall = started.elapsed().as_secs_f64() / runs.max(1) as f64;
    let (cpu, peak_kib) = children_usage();
    let json: serde_json::Value = serde_json::from_slice(&last)?;
    let packages = json["software"].as_array().map_or(0, Vec::len);

    // The same inventory in the agent's own terms: its size whole, and as a delta after one upgrade.
    let inv = rollcall_agent::inventory::collect(None, &Default::default());
    let hash = rollcall_proto::inventory::hash(&inv);
    let mut upgraded = inv.clone();
    if let Some(s) = upgraded.software.first_mut() {
        s.version.push_str("+1");
    }
    let delta = rollcall_proto::inventory::delta(&inv, &hash, &upgraded);
    println!("inventory runs:          {}", runs.max(1));
    println!("packages found:          {packages}");
    println!("CPU per run:             {:.3} s", cpu / runs.max(1) as f64);
    println!("wall per run:            {wall:.3} s");
    println!(
        "peak RSS of a run:       {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    println!("inventory, whole:        {} bytes", inv.encoded_len());
    println!("delta after one upgrade: {} bytes", delta.encoded_len());
    Ok(())
}

/// This machine's inventory made into agent `i`'s, with software list `i % sets`: the base list with a VPN client
/// and openssl at one of several patch levels and, for some lists, a package more or less.
fn synthetic(base: &v1::Inventory, i: usize, sets: usize) -> v1::Inventory {
    const MODELS: [(&str, &str); 4] = [
        ("Panasonic", "Toughbook CF-33"),
        ("Dell Inc.", "OptiPlex 7090"),
        ("HP", "EliteDesk 800 G6"),
        ("LENOVO", "ThinkCentre M70q"),
    ];
    let k = i % sets.max(1);
    let mut inv = base.clone();
    inv.hostname = format!("bench-{i:06}");
    let (vendor, model) = MODELS[i % MODELS.len()];
    inv.hardware = Some(v1::Hardware {
        vendor: vendor.into(),
        model: model.into(),
        serial: format!("SN{i:08}"),
        ..inv.hardware.unwrap_or_default()
    });
    let dpkg = v1::SoftwareSource::Dpkg as i32;
    inv.software
        .retain(|s| s.name != "openssl" && s.name != "vpn-client");
    inv.software.push(v1::Software {
        name: "openssl".into(),
        version: format!("3.0.{}-0ubuntu1.{}", 2 + k % 12, k % 16),
        arch: "amd64".into(),
        source: dpkg,
        publisher: "Ubuntu Developers".into(),
    });
    inv.software.push(v1::Software {
        name: "vpn-client".into(),
        version: format!("4.{}.{}", k % 5, k / 5 % 40),
        arch: "amd64".into(),
        source: dpkg,
        publisher: "NSS".into(),
    });
    if k % 10 == 0 {
        inv.software.pop();
    }
    inv.software
        .sort_by(rollcall_proto::inventory::software_order);
    inv
}

/// `rollcall-bench query`.
pub async fn query(agents: usize, sets: usize, concurrency: usize) -> anyhow::Result<()> {
    let bench = BenchController::start(agents, "1h", "").await?;
    let result = load_and_query(&bench, agents, sets, concurrency).await;
    bench.controller.stop().await;
    result
}

async fn load_and_query(
    bench: &BenchController,
    agents: usize,
    sets: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let base = Arc::new(rollcall_agent::inventory::collect(
        None,
        &Default::default(),
    ));
    eprintln!(
        "loading {agents} agents ({} packages each, {sets} distinct lists) through Enroll and CheckIn…",
        base.software.len()
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(4 * 3600);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut done = 0usize;
    for i in 0..agents {
        let permit = semaphore.clone().acquire_owned().await?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "load deadline passed after {i} agents"
        );
        let (enroll, token, base, trust) = (
            bench.enroll_channel.clone(),
            bench.token.clone(),
            base.clone(),
            bench.trust(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let inventory = synthetic(&base, i, sets);
            let identity = enroll_one(enroll, token, inventory.hostname.clone()).await?;
            let channel = trust.channel(identity)?;
            let inventory_hash = rollcall_proto::inventory::hash(&inventory);
            AgentServiceClient::new(channel)
                .check_in(v1::CheckInRequest {
                    inventory: Some(inventory),
                    inventory_hash,
                    agent_version: "bench".into(),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(())
        });
        while let Some(joined) = tasks.try_join_next() {
            joined??;
            done += 1;
            if done % 10_000 == 0 {
                eprintln!("  {done} agents in {:.0}s", started.elapsed().as_secs_f64());
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let controller = &bench.controller;
    let admin = &bench.admin;
    let (peak, now) = crate::footprint::rss_kib(controller.pid().unwrap_or(0));
    println!(
        "agents:                  {agents} ({sets} distinct software lists, {} packages each)",
        base.software.len()
    );
    println!(
        "load (enroll + check-in): {load_secs:.0} s ({:.0} agents/s)",
        agents as f64 / load_secs
    );
    println!(
        "controller RSS:          {:.0} MiB now, {:.0} MiB peak",
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "store on disk:           {:.0} MiB",
        dir_size(&controller.data) as f64 / (1 << 20) as f64
    );
    println!();
    println!(
        "{:<62} {:>8} {:>10} {:>10}",
        "agents list --where", "matches", "first", "median of 5"
    );
    for filters in [
        vec![],
        vec!["os.name~Debian"],
        vec!["hw.model~Toughbook"],
        vec!["software.openssl<3.0.13"],
        vec!["software.vpn-client!=4.2.7"],
        vec!["software.openssl<3.0.13", "hw.vendor=Panasonic"],
        vec!["hostname=bench-012345"],
    ] {
        let mut times = Vec::new();
        let mut matches = 0;
        for _ in 0..6 {
            let t = Instant::now();
            let resp = admin
                .rpc
                .clone()
                .list_agents(v1::ListAgentsRequest {
                    filters: filters.iter().map(|f| f.to_string()).collect(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            times.push(t.elapsed());
            matches = resp.agents.len();
        }
        let first = times.remove(0);
        times.sort();
        let label = if filters.is_empty() {
            "(none)".to_owned()
        } else {
            filters
                .iter()
                .map(|f| format!("--where '{f}'"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{label:<62} {matches:>8} {:>8.0}ms {:>8.0}ms",
            first.as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let report = admin
        .rpc
        .clone()
        .compliance(v1::ComplianceRequest {
            package: "openssl".into(),
            version: "3.0.13".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "{:<62} {:>8} {:>8.0}ms",
        "compliance openssl@3.0.13",
        report.sites.iter().map(|s| s.current).sum::<u32>(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
