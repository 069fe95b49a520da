//! `rollcall-bench agent-footprint`: what one idle agent costs its desktop. A real controller (check-in interval 60 s
//! unless told otherwise) and a real `rollcall-agent run` process, enrolled and idle; after the settle time the bench
//! reads the agent's RSS, PSS and threads from /proc, then its CPU time over a measuring window, scaled to an hour,
//! and the size of the agent binary once stripped. With `--cfengine DIR`, Debian's cfengine3 daemons, started by
//! `DIR/start-cfengine.sh` (bound to loopback), are measured the same way in the same run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use rollcall_controller::cli::local::{bin, run_ok, LocalAgent, LocalController};
use rollcall_controller::cli::pkg;
use rollcall_proto::v1;

/// One process's footprint, from /proc.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub threads: u64,
    /// User + system CPU seconds so far, with its waited-for children's.
    pub cpu_secs: f64,
}

fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Read the footprint of `pid` now.
pub fn measure(pid: u32) -> anyhow::Result<Footprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime and cstime are fields 14 to 17 of stat (`rest` starts at field 3): the children it waited
    // for count too (cf-monitord runs ps and ifconfig; an agent's installers are its children).
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    // SAFETY: sysconf only reads a constant of the system.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Footprint {
        rss_kib: field_kib(&status, "VmRSS:"),
        pss_kib: field_kib(&smaps, "Pss:"),
        threads: field_kib(&status, "Threads:"),
        cpu_secs: ticks as f64 / hz,
    })
}

/// Size of `binary` after `strip` (on a copy), in bytes.
pub fn stripped_size(binary: &Path) -> anyhow::Result<u64> {
    let tmp = tempfile::tempdir()?;
    let copy = tmp.path().join("stripped");
    std::fs::copy(binary, &copy)?;
    let ok = Command::new("strip").arg(&copy).status()?.success();
    if !ok {
        bail!("strip failed on {}", binary.display());
    }
    Ok(std::fs::metadata(&copy)?.len())
}

/// A measured process: a name, its pid, its binary.
struct Measured {
    name: String,
    pid: u32,
    binary: Option<std::path::PathBuf>,
    settled: Footprint,
    cpu_before: f64,
}

pub async fn agent_footprint(
    settle: Duration,
    window: Duration,
    interval: &str,
    cfengine: Option<&Path>,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("rollcall-footprint-")
        .tempdir()?;
    let data = dir.path().join("controller");
    run_ok(
        tokio::process::Command::new(bin("rollcall-controller")?)
            .arg("init")
            .arg("--data")
            .arg(&data),
    )
    .await?;
    let controller = LocalController::serve(&data, interval).await?;
    let admin = controller.admin().await?;
    // Tokens pin the TUF root: publish one first.
    let (keys, repo) = (dir.path().join("keys"), dir.path().join("repo"));
    pkg::keygen(&keys)?;
    let online = pkg::online_keys_of(&admin).await?;
    pkg::init_repo(&keys, &repo, &online, Duration::from_secs(86400)).await?;
    pkg::push(&admin, &repo).await?;
    let token = admin
        .rpc
        .clone()
        .create_token(v1::CreateTokenRequest {
            site: "bench".into(),
            uses: 1,
            ttl_seconds: 600,
        })
        .await?
        .into_inner()
        .token;
    let agent_data = dir.path().join("agent");
    let mut agent = LocalAgent::enroll(&agent_data, &controller.url, &token, "desk-01").await?;
    agent.start()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = agent
        .pid()
        .context("the agent did not start (see its log)")?;

    let mut procs = vec![Measured {
        name: "rollcall-agent".into(),
        pid,
        binary: Some(bin("rollcall-agent")?),
        settled: Footprint::default(),
        cpu_before: 0.0,
    }];
    let cf_dir = dir.path().join("cfengine");
    if let Some(scripts) = cfengine {
        let out = Command::new("bash")
            .arg(scripts.join("start-cfengine.sh"))
            .arg(&cf_dir)
            .output()
            .context("cannot run start-cfengine.sh")?;
        if !out.status.success() {
            bail!(
                "start-cfengine.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            if let (Some(name), Some(Ok(pid))) = (words.next(), words.next().map(str::parse)) {
                let binary = Command::new("sh")
                    .args(["-c", &format!("command -v {name}")])
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .map(std::path::PathBuf::from);
                procs.push(Measured {
                    name: name.to_owned(),
                    pid,
                    binary,
                    settled: Footprint::default(),
                    cpu_before: 0.0,
                });
            }
        }
    }
    eprintln!(
        "measuring {} process(es): settling {} s, then CPU over {} s…",
        procs.len(),
        settle.as_secs(),
        window.as_secs()
    );
    tokio::time::sleep(settle).await;
    for p in &mut procs {
        p.settled = measure(p.pid)?;
        p.cpu_before = p.settled.cpu_secs;
    }
    tokio::time::sleep(window).await;
    // /proc counts CPU time in clock ticks (10 ms): a process that used less than one tick in the window shows
    // as "< one tick per hour".
    // SAFETY: sysconf only reads a constant of the system.
    #[allow(unsafe_code)]
    let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let resolution = tick * 3600.0 / window.as_secs_f64();
    let mut rows = Vec::new();
    for p in &procs {
        let now = measure(p.pid)?;
        let used = now.cpu_secs - p.cpu_before;
        let per_hour = if used < tick / 2.0 {
            format!("< {resolution:.3}")
        } else {
            format!("{:.3}", used * 3600.0 / window.as_secs_f64())
        };
        let size = p.binary.as_deref().map(stripped_size).transpose()?;
        rows.push((p.name.clone(), p.settled.clone(), per_hour, size));
    }
    if cfengine.is_some() {
        let _ = Command::new("bash")
            .arg(cfengine.unwrap_or(Path::new(".")).join("stop-cfengine.sh"))
            .arg(&cf_dir)
            .status();
    }
    let checkins = std::fs::read_to_string(agent_data.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["checkin_interval_secs"].as_u64());
    println!(
        "rollcall-bench agent-footprint --settle-secs {} --window-secs {} --interval {interval}",
        settle.as_secs(),
        window.as_secs()
    );
    println!(
        "  agent check-in interval: {} s (from the controller)",
        checkins.unwrap_or(0)
    );
    println!(
        "  {:<16} {:>9} {:>9} {:>8} {:>12} {:>14}",
        "process", "RSS MiB", "PSS MiB", "threads", "CPU s/hour", "stripped MiB"
    );
    for (name, f, per_hour, size) in rows {
        println!(
            "  {:<16} {:>9.1} {:>9.1} {:>8} {:>12} {:>14}",
            name,
            f.rss_kib as f64 / 1024.0,
            f.pss_kib as f64 / 1024.0,
            f.threads,
            per_hour,
            size.map_or("-".to_owned(), |s| format!("{:.1}", s as f64 / 1048576.0))
        );
    }
    agent.stop().await;
    controller.stop().await;
    Ok(())
}

/// Peak and current resident set of a process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
