//! `rollcall demo`: the whole story on one machine through the public command lines and gRPC API — a
//! controller on loopback, real agent processes in three sites, a package signed with offline keys, a rollout
//! with a canary wave then one wave per site, live progress, and a final per-site table. Exits 0 only if every
//! agent succeeded. `--scenario bad-patch` rolls out a package whose install fails everywhere and exits 0 only if
//! the rollout paused at the canary with no install attempted anywhere else. `--scenario config-drift` rolls out a
//! configuration profile, then changes a managed file behind one agent's back, and exits 0 only if that agent
//! repaired it and reported the drift (each agent's profiles act on a folder of its own standing for `/`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use rollcall_proto::v1;
use serde_json::json;

use super::local::{LocalAgent, LocalController};
use super::output::print_json;
use super::rollout::{progress_line, site_table, status_json, wave_table};
use super::{pkg, rpc, usage};
use rollcall_proto::RolloutState;

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
    /// `standard`: every agent installs; `bad-patch`: the install fails everywhere and the rollout stops at
    /// the canary; `config-drift`: a configuration profile goes out, one device's managed file is changed behind
    /// its agent's back, and the drift is repaired and reported.
    #[arg(long, value_enum, default_value = "standard")]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Standard,
    BadPatch,
    ConfigDrift,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Standard => "standard",
            Scenario::BadPatch => "bad-patch",
            Scenario::ConfigDrift => "config-drift",
        }
    }

    /// The package the scenario rolls out.
    fn package(self) -> &'static str {
        match self {
            Scenario::ConfigDrift => "station-settings",
            _ => "demo-app",
        }
    }
}

const PROFILE_MANIFEST: &str = r#"name = "station-settings"
version = "1.0.0"
release_counter = 1
kind = "config"
platforms = ["linux"]
description = "rollcall demo: the station's proxy and time server, kept in place"
"#;

const PROFILE: &str = r#"[[directory]]
path = "/etc/rollcall-demo"
mode = "0755"

[[file]]
path = "/etc/rollcall-demo/station.conf"
content = "[station]\nproxy = proxy.nss.local:3128\nntp = ntp.nss.local\n"
mode = "0644"
format = "ini"

[[setting]]
file = "/etc/rollcall-demo/agent.ini"
section = "network"
key = "dns"
value = "10.0.0.53"
"#;

/// The managed file the config-drift scenario changes behind an agent's back.
const MANAGED: &str = "etc/rollcall-demo/station.conf";

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
const BAD_INSTALL: &str = "#!/bin/sh\necho \"dpkg: error processing package demo-app (--configure):\" >&2\necho \" installed demo-app post-installation script returned error exit status 1\" >&2\nexit 1\n";
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
    let controller = LocalController::start(&root.join("controller"), "1s", "").await?;
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

    let package_name = args.scenario.package();
    progress.step(&format!("Building and signing {package_name} 1.0.0"));
    let src = root.join("admin/src");
    std::fs::create_dir_all(src.join("payload"))?;
    match args.scenario {
        Scenario::Standard | Scenario::BadPatch => {
            std::fs::write(src.join("manifest.toml"), MANIFEST)?;
            let install = if args.scenario == Scenario::BadPatch {
                BAD_INSTALL
            } else {
                INSTALL
            };
            std::fs::write(src.join("payload/install.sh"), install)?;
            std::fs::write(src.join("payload/verify.sh"), VERIFY)?;
        }
        Scenario::ConfigDrift => {
            std::fs::write(src.join("manifest.toml"), PROFILE_MANIFEST)?;
            std::fs::write(src.join("payload/profile.toml"), PROFILE)?;
        }
    }
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
        client
            .rpc
            .clone()
            .add_site(v1::AddSiteRequest { name: site.into() })
            .await
            .map_err(rpc)?;
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
        let data = root.join("agents").join(&hostname);
        if args.scenario == Scenario::ConfigDrift {
            // Each agent's profiles act on a folder of its own standing for its device's `/`, checked every 2 s.
            let device = root.join("devices").join(&hostname);
            std::fs::create_dir_all(device.join("etc"))?;
            std::fs::create_dir_all(root.join("agents"))?;
            std::fs::write(
                data.with_extension("toml"),
                format!(
                    "profile_root = {:?}\nprofile_check_interval_secs = 2\n",
                    device.display().to_string()
                ),
            )?;
        }
        let mut agent =
            LocalAgent::enroll(&data, &controller.url, &tokens[site], &hostname).await?;
        agent.start()?;
        agents.push(agent);
    }

    progress.step(&format!(
        "Rolling out {package_name}@1.0.0: a 10% canary, then one wave per site"
    ));
    let mut rpc_client = client.rpc.clone();
    let mut waves = vec![v1::WaveSpec {
        canary_percent: 10.0,
        ..Default::default()
    }];
    waves.extend(SITES.iter().map(|s| v1::WaveSpec {
        sites: vec![(*s).into()],
        ..Default::default()
    }));
    let created = rpc_client
        .create_rollout(v1::CreateRolloutRequest {
            package: package_name.into(),
            version: "1.0.0".into(),
            waves,
            name: "demo".into(),
            // The demo compresses time (1 s check-ins): retries come after 1 s, 2 s instead of 5 min, 10 min.
            retry_delay_seconds: Some(1),
            start: true,
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner();

    let started = Instant::now();
    let status = loop {
        let status = rpc_client
            .get_rollout(v1::RolloutRef {
                id: created.id.clone(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        progress.update(format!(
            "[{:>5.1}s] {}",
            started.elapsed().as_secs_f64(),
            progress_line(&status)
        ));
        if matches!(
            RolloutState::from_proto(status.state),
            Some(RolloutState::Completed | RolloutState::Paused | RolloutState::Cancelled)
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

    let totals = super::rollout::totals(&status);
    let succeeded = totals.succeeded;
    let device = |a: &LocalAgent| root.join("devices").join(&a.hostname);
    let markers = agents
        .iter()
        .filter(|a| match args.scenario {
            Scenario::ConfigDrift => device(a).join(MANAGED).exists(),
            _ => a.data.join("demo-app.marker").exists(),
        })
        .count();
    let drift = match (args.scenario, agents.first()) {
        (Scenario::ConfigDrift, Some(first)) if succeeded as usize == args.agents => {
            progress.step(&format!(
                "Changing {} behind {}'s back",
                MANAGED, first.hostname
            ));
            Some(tamper_and_watch(&client, first, &device(first), progress, args.timeout).await?)
        }
        _ => None,
    };
    // Devices outside the canary (wave 1) that were ever offered the package.
    let outside_canary = status
        .devices
        .iter()
        .filter(|d| d.wave > 0 && d.attempt > 0)
        .count();
    let state = RolloutState::from_proto(status.state);
    let all_ok = match args.scenario {
        Scenario::Standard => {
            state == Some(RolloutState::Completed)
                && succeeded as usize == args.agents
                && markers == args.agents
        }
        Scenario::BadPatch => {
            state == Some(RolloutState::Paused) && outside_canary == 0 && markers == 0
        }
        Scenario::ConfigDrift => {
            state == Some(RolloutState::Completed)
                && markers == args.agents
                && drift
                    .as_ref()
                    .is_some_and(|d| d.restored && d.events.iter().any(|e| e.repaired))
        }
    };

    if json {
        let mut rollout = status_json(&status, None);
        if let Some(obj) = rollout.as_object_mut() {
            obj.remove("devices");
        }
        print_json(&json!({
            "scenario": args.scenario.name(),
            "state": rollout["state"].clone(),
            "drift": drift.as_ref().map(|d| json!({
                "agent": d.hostname,
                "restored": d.restored,
                "events": d.events.iter().map(|e| json!({"profile": e.profile, "item": e.item, "what": e.what,
                    "at": e.at_unix, "repaired": e.repaired, "error": e.error})).collect::<Vec<_>>(),
            })),
            "ok": all_ok,
            "rollout": rollout,
            "agents": agents.len(),
            "succeeded": succeeded,
            "markers": markers,
            "offered_outside_canary": outside_canary,
        }));
    } else {
        println!();
        println!(
            "Rollout {} of {package_name}@1.0.0: {} — {succeeded}/{} agents succeeded in {:.1}s",
            status.id,
            RolloutState::name_of(status.state),
            args.agents,
            started.elapsed().as_secs_f64()
        );
        if !status.reason.is_empty() {
            println!("  {}", status.reason);
        }
        println!();
        print!("{}", wave_table(&status));
        println!();
        print!("{}", site_table(&status, None));
        println!();
        match args.scenario {
            Scenario::Standard => println!(
                "{} agents enrolled; marker files written by the signed install command: {markers}",
                agents.len()
            ),
            Scenario::BadPatch => println!(
                "The bad patch stopped at the canary: {} device(s) outside the canary were offered it, {markers} installed it.",
                outside_canary
            ),
            Scenario::ConfigDrift => {
                println!("{markers} of {} devices hold the profile's files.", agents.len());
                if let Some(d) = &drift {
                    println!(
                        "{MANAGED} changed behind {}'s back: {}",
                        d.hostname,
                        if d.restored { "put back by its agent" } else { "NOT put back" }
                    );
                    println!("`rollcall agents show {}` now lists:", d.hostname);
                    for e in &d.events {
                        println!(
                            "  drift  {}  {}  {}  {}",
                            e.profile,
                            e.item,
                            e.what,
                            if e.repaired { "repaired".to_owned() } else { format!("NOT repaired: {}", e.error) }
                        );
                    }
                }
            }
        }
    }
    if !all_ok {
        eprintln!(
            "error: the {} scenario did not end as it should (state {}, reason: {})",
            args.scenario.name(),
            RolloutState::name_of(status.state),
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

/// What the config-drift scenario saw on the agent it tampered with.
struct Drift {
    hostname: String,
    /// The managed file has its profile's content again.
    restored: bool,
    events: Vec<v1::DriftEvent>,
}

/// Change the managed file on `agent`'s device, then wait (bounded by `timeout`) until the controller has the drift
/// event its agent reported and the file is back.
async fn tamper_and_watch(
    client: &super::AdminClient,
    agent: &LocalAgent,
    device: &Path,
    progress: &mut Progress,
    timeout: Duration,
) -> anyhow::Result<Drift> {
    let file = device.join(MANAGED);
    let wanted = std::fs::read_to_string(&file)?;
    std::fs::write(&file, "[station]\nproxy = evil.example:8080\n")?;
    let started = Instant::now();
    loop {
        let detail = client
            .rpc
            .clone()
            .get_agent(v1::GetAgentRequest {
                agent_id: agent.hostname.clone(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let restored = std::fs::read_to_string(&file).is_ok_and(|now| now == wanted);
        progress.update(format!(
            "[{:>5.1}s] file {}, {} drift event(s) at the controller",
            started.elapsed().as_secs_f64(),
            if restored { "restored" } else { "changed" },
            detail.drift_events.len()
        ));
        if (restored && !detail.drift_events.is_empty()) || started.elapsed() > timeout {
            progress.clear();
            return Ok(Drift {
                hostname: agent.hostname.clone(),
                restored,
                events: detail.drift_events,
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
