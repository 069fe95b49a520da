//! `rollcall rollout`: create, start, pause, status, list.

use std::process::ExitCode;

use clap::Subcommand;
use rollcall_proto::v1;
use serde_json::{json, Value};

use super::admin::state_name;
use super::output::{print_json, table};
use super::{rpc, usage, AdminClient};

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Create a rollout of PACKAGE@VERSION in waves of sites (it starts as a draft).
    Create {
        /// e.g. demo-app@1.0.0
        package: String,
        /// Sites of one wave, comma-separated; repeat for each wave, in order.
        #[arg(long = "wave", value_name = "SITE[,SITE…]", required = true)]
        waves: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// Start it right away.
        #[arg(long)]
        start: bool,
    },
    /// Start a draft rollout, or resume a paused one.
    Start { id: String },
    /// Pause a running rollout: no new device starts.
    Pause { id: String },
    /// Per-wave and per-site counts, and the devices that failed.
    Status {
        id: String,
        /// List every device, not only the failed ones.
        #[arg(long)]
        devices: bool,
    },
    /// All rollouts.
    List,
}

pub async fn run(cmd: RolloutCmd, client: &AdminClient, json: bool) -> anyhow::Result<ExitCode> {
    let mut rpc_client = client.rpc.clone();
    match cmd {
        RolloutCmd::Create {
            package,
            waves,
            name,
            start,
        } => {
            let (name_part, version) = package
                .split_once('@')
                .ok_or_else(|| usage(format!("{package:?} is not PACKAGE@VERSION")))?;
            let waves: Vec<v1::WaveSpec> = waves
                .iter()
                .map(|w| v1::WaveSpec {
                    sites: w
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                })
                .collect();
            let mut status = rpc_client
                .create_rollout(v1::CreateRolloutRequest {
                    package: name_part.to_owned(),
                    version: version.to_owned(),
                    waves,
                    name: name.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if start {
                status = rpc_client
                    .start_rollout(v1::RolloutRef {
                        id: status.id.clone(),
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
            }
            print_status(&status, json, false);
        }
        RolloutCmd::Start { id } => {
            let s = rpc_client
                .start_rollout(v1::RolloutRef { id })
                .await
                .map_err(rpc)?
                .into_inner();
            print_status(&s, json, false);
        }
        RolloutCmd::Pause { id } => {
            let s = rpc_client
                .pause_rollout(v1::RolloutRef { id })
                .await
                .map_err(rpc)?
                .into_inner();
            print_status(&s, json, false);
        }
        RolloutCmd::Status { id, devices } => {
            let s = rpc_client
                .get_rollout(v1::RolloutRef { id })
                .await
                .map_err(rpc)?
                .into_inner();
            print_status(&s, json, devices);
        }
        RolloutCmd::List => list(client, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let resp = client
        .rpc
        .clone()
        .list_rollouts(v1::ListRolloutsRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        print_json(&json!({"rollouts": resp.rollouts.iter().map(status_json).collect::<Vec<_>>()}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .rollouts
        .iter()
        .map(|r| {
            let (ok, failed, total) = totals(r);
            vec![
                r.id.clone(),
                format!("{}@{}", r.package, r.version),
                rollout_state(r.state).into(),
                format!(
                    "{}/{}",
                    (r.current_wave + 1).min(r.waves.len() as u32),
                    r.waves.len()
                ),
                format!("{ok}/{total}"),
                failed.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ROLLOUT", "PACKAGE", "STATE", "WAVE", "SUCCEEDED", "FAILED"],
            &rows
        )
    );
    Ok(())
}

fn totals(r: &v1::RolloutStatus) -> (u32, u32, u32) {
    r.waves
        .iter()
        .flat_map(|w| &w.site_counts)
        .fold((0, 0, 0), |(ok, f, t), c| {
            (ok + c.succeeded, f + c.failed, t + c.total)
        })
}

pub fn rollout_state(state: i32) -> &'static str {
    match v1::RolloutState::try_from(state).unwrap_or(v1::RolloutState::Unspecified) {
        v1::RolloutState::Unspecified => "unknown",
        v1::RolloutState::Draft => "draft",
        v1::RolloutState::Running => "running",
        v1::RolloutState::Paused => "paused",
        v1::RolloutState::WaitingApproval => "waiting-approval",
        v1::RolloutState::Completed => "completed",
        v1::RolloutState::Cancelled => "cancelled",
    }
}

/// The JSON shape scripts read (also the `rollout` object of `rollcall demo --json`).
pub fn status_json(r: &v1::RolloutStatus) -> Value {
    json!({
        "id": r.id,
        "package": r.package,
        "version": r.version,
        "state": rollout_state(r.state),
        "reason": r.reason,
        "current_wave": r.current_wave + 1,
        "waves": r.waves.iter().map(|w| {
            let sum = |f: fn(&v1::SiteCounts) -> u32| w.site_counts.iter().map(f).sum::<u32>();
            json!({
                "sites": w.sites,
                "state": w.state,
                "total": sum(|c| c.total),
                "succeeded": sum(|c| c.succeeded),
                "failed": sum(|c| c.failed),
                "in_progress": sum(|c| c.in_progress),
                "pending": sum(|c| c.pending),
            })
        }).collect::<Vec<_>>(),
        "devices": r.devices.iter().map(|d| json!({
            "agent_id": d.agent_id, "hostname": d.hostname, "site": d.site, "wave": d.wave + 1,
            "state": state_name(d.state), "exit_code": d.exit_code, "detail": d.detail,
        })).collect::<Vec<_>>(),
    })
}

/// Per-wave, per-site table.
pub fn site_table(r: &v1::RolloutStatus) -> String {
    let mut rows = Vec::new();
    for w in &r.waves {
        for c in &w.site_counts {
            rows.push(vec![
                (w.index + 1).to_string(),
                c.site.clone(),
                w.state.clone(),
                c.total.to_string(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.in_progress.to_string(),
                c.pending.to_string(),
            ]);
        }
    }
    table(
        &[
            "WAVE",
            "SITE",
            "WAVE STATE",
            "AGENTS",
            "SUCCEEDED",
            "FAILED",
            "IN PROGRESS",
            "PENDING",
        ],
        &rows,
    )
}

fn print_status(r: &v1::RolloutStatus, json: bool, all_devices: bool) {
    if json {
        print_json(&status_json(r));
        return;
    }
    println!(
        "Rollout {} — {}@{} — {} (wave {}/{})",
        r.id,
        r.package,
        r.version,
        rollout_state(r.state),
        (r.current_wave + 1).min(r.waves.len() as u32),
        r.waves.len()
    );
    if !r.reason.is_empty() {
        println!("  {}", r.reason);
    }
    print!("{}", site_table(r));
    let failed = v1::ActionState::Failed as i32;
    let rolled_back = v1::ActionState::RolledBack as i32;
    let shown: Vec<&v1::DeviceStatus> = r
        .devices
        .iter()
        .filter(|d| all_devices || d.state == failed || d.state == rolled_back)
        .collect();
    if !shown.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|d| {
                vec![
                    d.hostname.clone(),
                    d.site.clone(),
                    state_name(d.state).into(),
                    d.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    d.detail.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["DEVICE", "SITE", "STATE", "EXIT", "DETAIL"], &rows)
        );
    }
}
