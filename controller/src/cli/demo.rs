//! `rollcall demo`: the whole story on one machine through the public command lines and gRPC API — a
//! controller on loopback, real agent processes in three sites, a package signed with offline keys, a
//! three-wave rollout with live progress, and a final per-site table. Exits 0 only if every agent succeeded.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use rollcall_proto::v1;
use serde_json::json;

use super::local::{LocalAgent, LocalController};
use super::output::print_json;
use super::rollout::{rollout_state, site_table, status_json};
use super::{pkg, rpc, usage};

pub const SITES: [&str; 3] = ["north-station", "central-station", "harbor-station"];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of agents, spread over the three sites.
    #[arg(long, default_value_t = 12)]
    pub agents: usize,
    /// Give up after this long.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep the temporary directory (logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

const MANIFEST: &str = r#"name = "demo-app"
version = "1.0.0"
release_counter = 1
platforms = ["linux"]
description = "rollcall demo: writes a marker file into the agent's data directory"

[install]
command = ["sh", "install.sh"]
timeout_secs = 60

[verify]
command = ["sh", "verify.sh"]
timeout_secs = 30
"#;

const INSTALL: &str = "#!/bin/sh\nset -eu\necho \"$ROLLCALL_PACKAGE $ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/demo-app.marker\"\necho installed demo-app\n";
const VERIFY: &str =
    "#!/bin/sh\nset -eu\ngrep -q \"demo-app 1.0.0\" \"$ROLLCALL_DATA_DIR/demo-app.marker\"\n";

/// Where progress goes: a redrawn line on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    last: String,
}

impl Progress {
    fn step(&mut self, msg: &str) {
        self.clear();
        eprintln!("==> {msg}");
    }

    fn update(&mut self, line: String) {
        if line == self.last {
            return;
        }
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
        self.last = line;
    }

    fn clear(&mut self) {
        if self.tty && !self.last.is_empty() {
            eprintln!();
        }
        self.last.clear();
    }
}

pub async fn run(args: DemoArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.agents == 0 {
        return Err(usage("--agents must be at least 1"));
    }
    let tmp = tempfile::Builder::new()
        .prefix("rollcall-demo-")
        .tempdir()?;
    let root = tmp.path().to_owned();
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        last: String::new(),
    };
    let mut agents = Vec::new();
    let result = story(&args, &root, &mut progress, &mut agents, json).await;
    progress.clear();
    for agent in &mut agents {
        agent.stop().await;
    }
    if args.keep {
        let kept = tmp.keep();
        eprintln!("Kept {}", kept.display());
    } else if result.is_err() {
        let kept = tmp.keep();
        eprintln!("Logs and data kept in {}", kept.display());
    }
    result
}

async fn story(
    args: &DemoArgs,
    root: &Path,
    progress: &mut Progress,
    agents: &mut Vec<LocalAgent>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    progress.step("Starting a controller on 127.0.0.1");
    let controller = LocalController::start(&root.join("controller"), "1s").await?;
    let outcome = drive(args, root, progress, agents, &controller, json).await;
    for agent in agents.iter_mut() {
        agent.stop().await;
    }
    controller.stop().await;
    outcome
}

async fn drive(
    args: &DemoArgs,
    root: &Path,
    progress: &mut Progress,
    agents: &mut Vec<LocalAgent>,
    controller: &LocalController,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = controller.admin().await?;

    progress.step("Making offline root and targets keys and the image repository");
    let keys = root.join("admin/keys");
    let repo = root.join("admin/repo");
    pkg::keygen(&keys)?;
    let online = pkg::online_keys_of(&client).await?;
    pkg::init_repo(&keys, &repo, &online, Duration::from_secs(30 * 86400)).await?;

    progress.step("Building and signing demo-app 1.0.0");
    let src = root.join("admin/src");
    std::fs::create_dir_all(src.join("payload"))?;
    std::fs::write(src.join("manifest.toml"), MANIFEST)?;
    std::fs::write(src.join("payload/install.sh"), INSTALL)?;
    std::fs::write(src.join("payload/verify.sh"), VERIFY)?;
    let (package, _) = pkg::build(
        &src.join("manifest.toml"),
        &src.join("payload"),
        &root.join("admin/out"),
    )?;
    pkg::sign(&repo, &keys, &package, Duration::from_secs(30 * 86400)).await?;
    pkg::push(&client, &repo).await?;

    progress.step(&format!(
        "Enrolling {} agents in {} sites",
        args.agents,
        SITES.len()
    ));
    let per_site = args.agents.div_ceil(SITES.len());
    let mut tokens = Vec::new();
    for site in SITES {
        let resp = client
            .rpc
            .clone()
            .create_token(v1::CreateTokenRequest {
                site: site.into(),
                uses: per_site as u32,
                ttl_seconds: 3600,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        tokens.push(resp.token);
    }
    for i in 0..args.agents {
        let site = i % SITES.len();
        let hostname = format!(
            "mdc-{}-{:02}",
            SITES[site].trim_end_matches("-station"),
            i / SITES.len() + 1
        );
        let mut agent = LocalAgent::enroll(
            &root.join("agents").join(&hostname),
            &controller.url,
            &tokens[site],
            &hostname,
        )
        .await?;
        agent.start()?;
        agents.push(agent);
    }

    progress.step("Rolling out demo-app@1.0.0 in three waves, one site each");
    let mut rpc_client = client.rpc.clone();
    let created = rpc_client
        .create_rollout(v1::CreateRolloutRequest {
            package: "demo-app".into(),
            version: "1.0.0".into(),
            waves: SITES
                .iter()
                .map(|s| v1::WaveSpec {
                    sites: vec![(*s).into()],
                })
                .collect(),
            name: "demo".into(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    rpc_client
        .start_rollout(v1::RolloutRef {
            id: created.id.clone(),
        })
        .await
        .map_err(rpc)?;

    let started = Instant::now();
    let status = loop {
        let status = rpc_client
            .get_rollout(v1::RolloutRef {
                id: created.id.clone(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        progress.update(progress_line(&status, started.elapsed()));
        let state =
            v1::RolloutState::try_from(status.state).unwrap_or(v1::RolloutState::Unspecified);
        if matches!(
            state,
            v1::RolloutState::Completed | v1::RolloutState::Paused | v1::RolloutState::Cancelled
        ) {
            break status;
        }
        if started.elapsed() > args.timeout {
            progress.clear();
            eprintln!(
                "error: the rollout did not finish within {:?}",
                args.timeout
            );
            break status;
        }
        for agent in agents.iter_mut() {
            if !agent.is_running() {
                bail!(
                    "agent {} exited; see {}",
                    agent.hostname,
                    agent.data.with_extension("log").display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    progress.clear();

    let succeeded: u32 = status
        .waves
        .iter()
        .flat_map(|w| &w.site_counts)
        .map(|c| c.succeeded)
        .sum();
    let markers = agents
        .iter()
        .filter(|a| a.data.join("demo-app.marker").exists())
        .count();
    let all_ok = status.state == v1::RolloutState::Completed as i32
        && succeeded as usize == args.agents
        && markers == args.agents;

    if json {
        let mut rollout = status_json(&status);
        if let Some(obj) = rollout.as_object_mut() {
            obj.remove("devices");
        }
        print_json(
            &json!({ "rollout": rollout, "agents": agents.len(), "succeeded": succeeded, "markers": markers }),
        );
    } else {
        println!();
        println!(
            "Rollout {} of demo-app@1.0.0: {} — {succeeded}/{} agents succeeded in {:.1}s",
            status.id,
            rollout_state(status.state),
            args.agents,
            started.elapsed().as_secs_f64()
        );
        print!("{}", site_table(&status));
        let enrolled = client
            .rpc
            .clone()
            .list_agents(v1::ListAgentsRequest::default())
            .await
            .map_err(rpc)?
            .into_inner();
        println!();
        println!(
            "{} agents enrolled; marker files written by the signed install command: {markers}",
            enrolled.agents.len()
        );
    }
    if !all_ok {
        eprintln!(
            "error: not every agent succeeded (reason: {})",
            if status.reason.is_empty() {
                "timeout"
            } else {
                &status.reason
            }
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_line(status: &v1::RolloutStatus, elapsed: Duration) -> String {
    let waves: Vec<String> = status
        .waves
        .iter()
        .map(|w| {
            let total: u32 = w.site_counts.iter().map(|c| c.total).sum();
            let ok: u32 = w.site_counts.iter().map(|c| c.succeeded).sum();
            let failed: u32 = w.site_counts.iter().map(|c| c.failed).sum();
            let mark = match w.state.as_str() {
                "done" => "✓",
                "open" => "…",
                _ => " ",
            };
            let failed = if failed > 0 {
                format!(" {failed} failed")
            } else {
                String::new()
            };
            format!(
                "wave {} [{}] {ok}/{total}{failed} {mark}",
                w.index + 1,
                w.sites.join(",")
            )
        })
        .collect();
    format!(
        "[{:>5.1}s] {} | {}",
        elapsed.as_secs_f64(),
        rollout_state(status.state),
        waves.join(" | ")
    )
}
