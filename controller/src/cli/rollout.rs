//! `rollcall rollout`: create, start, pause, resume, cancel, approve, delete, retry, status (with `--watch`), list.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rollcall_proto::v1;
use rollcall_proto::{ActionState, RolloutState};
use serde_json::{json, Value};

use super::output::{ago, percent, print_json, span, table, when, window_now};
use super::{rpc, spec, usage, AdminClient};

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Create a rollout of PACKAGE@VERSION in ordered waves (a draft unless --start).
    ///
    /// Waves, in order: --canary 5% (or a count, 20) first if given, then each --wave: SITE[,SITE…],
    /// canary:5%, canary:20 or rest (every target no other wave takes; last). A wave may add its own gates after a
    /// space: --wave "north,central soak=1h success=90% errors=2 deadline=24h approve overlap".
    Create(Box<CreateArgs>),
    /// Start a draft rollout (or a scheduled one now).
    Start { id: String },
    /// Pause: no new device starts; devices already working finish.
    Pause { id: String },
    /// Resume a paused rollout; its failed devices get a new attempt.
    Resume { id: String },
    /// Cancel: no new offers; devices that have not started installing stop; running installs finish.
    Cancel { id: String },
    /// Open the next wave of a rollout that waits for approval.
    Approve { id: String },
    /// Delete a draft.
    Delete { id: String },
    /// Give failed devices a new attempt (technicians may do this).
    Retry {
        id: String,
        /// One device, by agent id or hostname.
        #[arg(long, conflicts_with_all = ["site", "failed"])]
        agent: Option<String>,
        /// Every failed device of a site.
        #[arg(long, conflicts_with = "failed")]
        site: Option<String>,
        /// Every failed device.
        #[arg(long)]
        failed: bool,
    },
    /// Per-wave gate progress, per-site counts, and the devices that failed.
    Status {
        id: String,
        /// Only this site's devices and counts.
        #[arg(long)]
        site: Option<String>,
        /// List every device, with attempts, not only the failed ones.
        #[arg(long)]
        devices: bool,
        /// Redraw until the rollout completes, pauses or is cancelled.
        #[arg(long)]
        watch: bool,
    },
    /// All rollouts.
    List,
}

/// `rollout create`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// e.g. demo-app@1.0.0
    pub package: String,
    /// One wave, in order (repeatable): SITE[,SITE…], canary:5%, canary:20 or rest, then optional gates.
    #[arg(long = "wave", value_name = "SPEC")]
    pub waves: Vec<String>,
    /// A first canary wave: a share of the targets (5%) or a count (20), spread over the sites.
    #[arg(long, value_name = "SIZE")]
    pub canary: Option<String>,
    /// Only agents at these sites are targets (repeatable).
    #[arg(long = "site", value_name = "SITE")]
    pub sites: Vec<String>,
    /// Only agents on these platforms, e.g. linux or linux-x86_64 (repeatable).
    #[arg(long = "platform", value_name = "PLATFORM")]
    pub platforms: Vec<String>,
    /// Only agents whose inventory matches, e.g. os.name=Ubuntu, 'os.version>=22.04', 'software.openssl<3.0.13'
    /// (repeatable, all must match; the language of `agents list --where`).
    #[arg(long = "where", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Share of a wave that must succeed before the next opens (default 95%).
    #[arg(long, value_name = "PERCENT")]
    pub success: Option<String>,
    /// Failed devices that pause the rollout: a share (5%, the default) or a count (a canary's default is 1).
    #[arg(long, value_name = "LIMIT")]
    pub errors: Option<String>,
    /// Minimum time a wave stays open after reaching its success share (default 0).
    #[arg(long, value_name = "DURATION")]
    pub soak: Option<String>,
    /// After this long a wave no longer holds the next one, e.g. 24h (default: never).
    #[arg(long, value_name = "DURATION")]
    pub wave_deadline: Option<String>,
    /// Every wave after the first needs `rollcall rollout approve`.
    #[arg(long)]
    pub approve_each: bool,
    /// A wave opens once the previous one has been open for its soak time, without waiting for its success.
    #[arg(long)]
    pub overlap: bool,
    /// At most N devices of one site download at once (a station's WAN link is shared).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_concurrent_per_site: u32,
    /// Automatic retries of a failed device (default 2).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Delay before the first automatic retry; doubles each time (default 5m).
    #[arg(long, value_name = "DURATION")]
    pub retry_delay: Option<String>,
    /// Install at once, ignoring the sites' maintenance windows.
    #[arg(long)]
    pub urgent: bool,
    /// Start at this time (RFC 3339 or +DURATION); implies --start.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// From this time on devices install at once, inside their window or not (RFC 3339 or +DURATION).
    #[arg(long, value_name = "TIME")]
    pub deadline: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// Start it right away.
    #[arg(long)]
    pub start: bool,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The create request from the command line; every syntax error is a usage error before anything is sent.
fn create_request(args: &CreateArgs) -> anyhow::Result<v1::CreateRolloutRequest> {
    let CreateArgs {
        package,
        waves,
        canary,
        sites,
        platforms,
        filters,
        success,
        errors,
        soak,
        wave_deadline,
        approve_each,
        overlap,
        max_concurrent_per_site,
        retries,
        retry_delay,
        urgent,
        start_at,
        deadline,
        name,
        start,
    } = args;
    for f in filters {
        crate::model::filter::Filter::parse(f).map_err(|e| usage(e.to_string()))?;
    }
    let (pkg_name, version) = package
        .split_once('@')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| usage(format!("{package:?} is not PACKAGE@VERSION")))?;
    let mut waves = spec::waves(canary.as_deref(), waves)?;
    let mut gates = v1::GateSpec::default();
    if let Some(s) = success {
        gates.success_percent = Some(spec::percent("--success", s)?);
    }
    if let Some(e) = errors {
        spec::error_limit(e, &mut gates)?;
    }
    if let Some(s) = soak {
        gates.soak_seconds = Some(spec::duration("--soak", s)?.as_secs());
    }
    if let Some(d) = wave_deadline {
        gates.deadline_seconds = Some(spec::duration("--wave-deadline", d)?.as_secs());
    }
    if *overlap {
        gates.overlap = Some(true);
    }
    if *approve_each {
        for w in waves.iter_mut().skip(1) {
            w.gates
                .get_or_insert_with(Default::default)
                .approval
                .get_or_insert(true);
        }
    }
    let now = now();
    let start_at = start_at
        .as_deref()
        .map(|t| spec::time("--start-at", t, now))
        .transpose()?;
    let deadline = deadline
        .as_deref()
        .map(|t| spec::time("--deadline", t, now))
        .transpose()?;
    Ok(v1::CreateRolloutRequest {
        package: pkg_name.to_owned(),
        version: version.to_owned(),
        waves,
        name: name.clone().unwrap_or_default(),
        gates: (gates != v1::GateSpec::default()).then_some(gates),
        selector: Some(v1::TargetSelector {
            sites: sites.clone(),
            platforms: platforms.clone(),
            r#where: filters.clone(),
        }),
        max_concurrent_per_site: *max_concurrent_per_site,
        retries: *retries,
        retry_delay_seconds: retry_delay
            .as_deref()
            .map(|d| spec::duration("--retry-delay", d).map(|d| d.as_secs()))
            .transpose()?,
        urgent: *urgent,
        start_at_unix: start_at.unwrap_or(0),
        deadline_unix: deadline.unwrap_or(0),
        start: *start || start_at.is_some(),
    })
}

pub async fn run(cmd: RolloutCmd, client: &AdminClient, json: bool) -> anyhow::Result<ExitCode> {
    let mut c = client.rpc.clone();
    let one = |id: &str| v1::RolloutRef { id: id.to_owned() };
    let status = match &cmd {
        RolloutCmd::Create(args) => {
            let req = create_request(args)?;
            c.create_rollout(req).await.map_err(rpc)?.into_inner()
        }
        RolloutCmd::Start { id } => c.start_rollout(one(id)).await.map_err(rpc)?.into_inner(),
        RolloutCmd::Pause { id } => c.pause_rollout(one(id)).await.map_err(rpc)?.into_inner(),
        RolloutCmd::Resume { id } => c.resume_rollout(one(id)).await.map_err(rpc)?.into_inner(),
        RolloutCmd::Cancel { id } => c.cancel_rollout(one(id)).await.map_err(rpc)?.into_inner(),
        RolloutCmd::Approve { id } => c.approve_rollout(one(id)).await.map_err(rpc)?.into_inner(),
        RolloutCmd::Delete { id } => {
            let gone = c.delete_rollout(one(id)).await.map_err(rpc)?.into_inner();
            if json {
                print_json(&json!({"deleted": gone.id}));
            } else {
                println!("Deleted draft rollout {}.", gone.id);
            }
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCmd::Retry {
            id,
            agent,
            site,
            failed,
        } => {
            if agent.is_none() && site.is_none() && !failed {
                return Err(usage(
                    "say which devices to retry: --agent AGENT, --site SITE or --failed",
                ));
            }
            let resp = c
                .retry_rollout(v1::RetryRolloutRequest {
                    rollout_id: id.clone(),
                    agent: agent.clone().unwrap_or_default(),
                    site: site.clone().unwrap_or_default(),
                    failed: *failed,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&json!({"retried": resp.agent_ids}));
            } else {
                println!(
                    "{} device(s) get a new attempt: {}",
                    resp.agent_ids.len(),
                    resp.agent_ids.join(", ")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCmd::Status {
            id,
            site,
            devices,
            watch,
        } => {
            if *watch {
                return watch_status(client, id, site.as_deref(), *devices, json).await;
            }
            let s = c.get_rollout(one(id)).await.map_err(rpc)?.into_inner();
            if let Some(site) = site {
                if !s.devices.iter().any(|d| d.site == *site)
                    && !s
                        .waves
                        .iter()
                        .any(|w| w.site_counts.iter().any(|c| c.site == *site))
                {
                    return Err(anyhow::anyhow!(
                        "site {site:?} has no device in rollout {id}"
                    ));
                }
            }
            print_status(&s, json, site.as_deref(), *devices);
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCmd::List => {
            list(client, json).await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    print_status(&status, json, None, false);
    Ok(ExitCode::SUCCESS)
}

/// `--watch`: redraw on a terminal, a line per change otherwise; ends when the rollout completes, pauses or is
/// cancelled (or is waiting for approval), printing the final status (the only output with `--json`).
async fn watch_status(
    client: &AdminClient,
    id: &str,
    site: Option<&str>,
    devices: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal() && !json;
    let mut last = String::new();
    loop {
        let s = client
            .rpc
            .clone()
            .get_rollout(v1::RolloutRef { id: id.to_owned() })
            .await
            .map_err(rpc)?
            .into_inner();
        let state = RolloutState::from_proto(s.state);
        let settled = matches!(
            state,
            Some(
                RolloutState::Completed
                    | RolloutState::Paused
                    | RolloutState::Cancelled
                    | RolloutState::WaitingApproval
            )
        );
        if json {
            if settled {
                print_json(&status_json(&s, site));
                return Ok(ExitCode::SUCCESS);
            }
        } else if tty {
            let mut out = std::io::stdout();
            let _ = write!(out, "\x1b[H\x1b[2J");
            print_status(&s, false, site, devices);
            let _ = out.flush();
        } else {
            let line = progress_line(&s);
            if line != last {
                println!("{line}");
                last = line;
            }
        }
        if settled {
            if !tty {
                println!();
                print_status(&s, false, site, devices);
            }
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
        print_json(&list_json(&resp));
        return Ok(());
    }
    print!("{}", list_table(&resp));
    Ok(())
}

pub fn list_json(resp: &v1::ListRolloutsResponse) -> Value {
    json!({"rollouts": resp.rollouts.iter().map(|r| status_json(r, None)).collect::<Vec<_>>()})
}

pub fn list_table(resp: &v1::ListRolloutsResponse) -> String {
    let now = now();
    let rows: Vec<Vec<String>> = resp
        .rollouts
        .iter()
        .map(|r| {
            let t = totals(r);
            vec![
                r.id.clone(),
                r.name.clone(),
                format!("{}@{}", r.package, r.version),
                RolloutState::name_of(r.state).into(),
                format!("{}/{}", open_waves(r), r.waves.len()),
                format!("{}/{}", t.succeeded, t.total),
                (t.failed + t.rolled_back).to_string(),
                ago(r.created_at_unix, now),
                ago(r.started_at_unix, now),
                if r.finished_at_unix > 0 {
                    ago(r.finished_at_unix, now)
                } else {
                    String::new()
                },
                r.created_by.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ROLLOUT",
            "NAME",
            "PACKAGE",
            "STATE",
            "WAVES OPEN",
            "SUCCEEDED",
            "FAILED",
            "CREATED",
            "STARTED",
            "FINISHED",
            "BY",
        ],
        &rows,
    )
}

fn open_waves(r: &v1::RolloutStatus) -> usize {
    r.waves.iter().filter(|w| w.opened_at_unix > 0).count()
}

/// Counts summed over sites.
pub fn sum(counts: &[&v1::SiteCounts]) -> v1::SiteCounts {
    let mut t = v1::SiteCounts::default();
    for c in counts {
        t.total += c.total;
        t.succeeded += c.succeeded;
        t.failed += c.failed;
        t.rolled_back += c.rolled_back;
        t.skipped += c.skipped;
        t.cancelled += c.cancelled;
        t.in_progress += c.in_progress;
        t.pending += c.pending;
        t.offline += c.offline;
        t.retrying += c.retrying;
    }
    t
}

pub fn totals(r: &v1::RolloutStatus) -> v1::SiteCounts {
    sum(&r
        .waves
        .iter()
        .flat_map(|w| &w.site_counts)
        .collect::<Vec<_>>())
}

fn counts_json(c: &v1::SiteCounts) -> Value {
    json!({
        "total": c.total, "succeeded": c.succeeded, "failed": c.failed, "rolled_back": c.rolled_back,
        "skipped": c.skipped, "cancelled": c.cancelled, "in_progress": c.in_progress, "pending": c.pending,
        "offline": c.offline, "retrying": c.retrying,
    })
}

/// The JSON shape scripts read (also the `rollout` object of `rollcall demo --json`): one object.
pub fn status_json(r: &v1::RolloutStatus, site: Option<&str>) -> Value {
    let wanted = |s: &str| site.is_none_or(|w| w == s);
    json!({
        "id": r.id,
        "name": r.name,
        "package": r.package,
        "version": r.version,
        "state": RolloutState::name_of(r.state),
        "reason": r.reason,
        "created_by": r.created_by,
        "created_at": r.created_at_unix,
        "started_at": r.started_at_unix,
        "finished_at": r.finished_at_unix,
        "start_at": r.start_at_unix,
        "deadline": r.deadline_unix,
        "max_concurrent_per_site": r.max_concurrent_per_site,
        "retries": r.retries,
        "urgent": r.urgent,
        "superseded_by": r.superseded_by,
        "totals": counts_json(&totals(r)),
        "waves": r.waves.iter().map(|w| {
            let counts: Vec<&v1::SiteCounts> = w.site_counts.iter().filter(|c| wanted(&c.site)).collect();
            let mut wave = counts_json(&sum(&counts));
            if let Some(obj) = wave.as_object_mut() {
                obj.insert("wave".into(), json!(w.index + 1));
                obj.insert("kind".into(), json!(w.kind));
                obj.insert("sites".into(), json!(w.sites));
                obj.insert("state".into(), json!(w.state));
                obj.insert("gate".into(), json!({
                    "success_percent": w.success_percent,
                    "success_percent_needed": w.success_percent_needed,
                    "error_limit": w.error_limit,
                    "soak_seconds": w.soak_seconds,
                    "soak_until": w.soak_until_unix,
                    "needs_approval": w.needs_approval,
                    "approved": w.approved,
                    "deadline": w.deadline_unix,
                    "overlap": w.overlap,
                }));
                obj.insert("opened_at".into(), json!(w.opened_at_unix));
                obj.insert("per_site".into(), json!(counts.iter().map(|c| {
                    let mut v = counts_json(c);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("site".into(), json!(c.site));
                        o.insert("window".into(), json!({"set": c.has_window, "open": c.window_open, "changes_at": c.window_changes_at_unix}));
                    }
                    v
                }).collect::<Vec<_>>()));
            }
            wave
        }).collect::<Vec<_>>(),
        "devices": r.devices.iter().filter(|d| wanted(&d.site)).map(device_json).collect::<Vec<_>>(),
    })
}

fn device_json(d: &v1::DeviceStatus) -> Value {
    json!({
        "agent_id": d.agent_id, "hostname": d.hostname, "site": d.site, "wave": d.wave + 1,
        "state": ActionState::name_of(d.state), "attempt": d.attempt, "since": d.since_unix,
        "exit_code": d.exit_code, "detail": d.detail, "output_tail": d.output_tail,
        "last_seen": d.last_seen_unix, "counted": !d.excluded, "next_retry": d.next_retry_unix,
        "history": d.history.iter().map(|h| json!({
            "attempt": h.attempt, "state": ActionState::name_of(h.state), "exit_code": h.exit_code,
            "detail": h.detail, "output_tail": h.output_tail, "started_at": h.started_at_unix,
            "finished_at": h.finished_at_unix,
        })).collect::<Vec<_>>(),
    })
}

/// "92% of 95%, soak 9m left", "needs approval", "closes in 3h".
pub fn gate_text(w: &v1::WaveStatus, now: i64) -> String {
    let mut parts = vec![if w.opened_at_unix > 0 {
        format!(
            "{} of {}",
            percent(w.success_percent),
            percent(w.success_percent_needed)
        )
    } else {
        format!("needs {}", percent(w.success_percent_needed))
    }];
    if w.soak_until_unix > now {
        parts.push(format!("soak {} left", span(w.soak_until_unix - now)));
    } else if w.soak_seconds > 0 && w.opened_at_unix == 0 {
        parts.push(format!("soak {}", span(w.soak_seconds as i64)));
    }
    parts.push(format!("pause at {} failed", w.error_limit));
    if w.needs_approval {
        parts.push(if w.approved {
            "approved".into()
        } else {
            "needs approval".into()
        });
    }
    if w.deadline_unix > now {
        parts.push(format!("closes in {}", span(w.deadline_unix - now)));
    }
    if w.overlap {
        parts.push("overlaps".into());
    }
    parts.join(", ")
}

/// Per-wave gates, then per-site counts.
pub fn site_table(r: &v1::RolloutStatus, site: Option<&str>) -> String {
    let now = if r.now_unix > 0 { r.now_unix } else { now() };
    let mut rows = Vec::new();
    for w in &r.waves {
        for c in w
            .site_counts
            .iter()
            .filter(|c| site.is_none_or(|s| s == c.site))
        {
            rows.push(vec![
                (w.index + 1).to_string(),
                c.site.clone(),
                window_now(c.has_window, c.window_open, c.window_changes_at_unix, now),
                c.total.to_string(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.rolled_back.to_string(),
                c.skipped.to_string(),
                c.cancelled.to_string(),
                c.in_progress.to_string(),
                c.pending.to_string(),
                c.offline.to_string(),
                c.retrying.to_string(),
            ]);
        }
    }
    table(
        &[
            "WAVE",
            "SITE",
            "INSTALL WINDOW",
            "DEVICES",
            "SUCCEEDED",
            "FAILED",
            "ROLLED BACK",
            "SKIPPED",
            "CANCELLED",
            "IN PROGRESS",
            "PENDING",
            "OFFLINE",
            "RETRYING",
        ],
        &rows,
    )
}

pub fn wave_table(r: &v1::RolloutStatus) -> String {
    let now = if r.now_unix > 0 { r.now_unix } else { now() };
    let rows: Vec<Vec<String>> = r
        .waves
        .iter()
        .map(|w| {
            let targets = if w.sites.is_empty() {
                w.kind.clone()
            } else {
                w.sites.join(",")
            };
            vec![
                (w.index + 1).to_string(),
                targets,
                w.state.clone(),
                gate_text(w, now),
            ]
        })
        .collect();
    table(&["WAVE", "TARGETS", "STATE", "GATE"], &rows)
}

fn print_status(r: &v1::RolloutStatus, json: bool, site: Option<&str>, all_devices: bool) {
    if json {
        print_json(&status_json(r, site));
        return;
    }
    let now = if r.now_unix > 0 { r.now_unix } else { now() };
    println!(
        "Rollout {} ({}) — {}@{} — {}",
        r.id,
        r.name,
        r.package,
        r.version,
        RolloutState::name_of(r.state)
    );
    let mut facts = vec![format!(
        "created {} by {}",
        when(r.created_at_unix, now),
        r.created_by
    )];
    if r.started_at_unix > 0 {
        facts.push(format!("started {}", when(r.started_at_unix, now)));
    } else if r.start_at_unix > 0 {
        facts.push(format!("starts {}", when(r.start_at_unix, now)));
    }
    if r.finished_at_unix > 0 {
        facts.push(format!("ended {}", when(r.finished_at_unix, now)));
    }
    facts.push(format!("retries {}", r.retries));
    if r.max_concurrent_per_site > 0 {
        facts.push(format!(
            "at most {} downloading per site",
            r.max_concurrent_per_site
        ));
    }
    if r.urgent {
        facts.push("urgent (windows ignored)".into());
    }
    if r.deadline_unix > 0 {
        facts.push(format!("deadline {}", when(r.deadline_unix, now)));
    }
    println!("  {}", facts.join("; "));
    if !r.superseded_by.is_empty() {
        println!("  superseded by rollout {}", r.superseded_by);
    }
    if !r.reason.is_empty() {
        println!("  {}", r.reason);
    }
    println!();
    print!("{}", wave_table(r));
    println!();
    print!("{}", site_table(r, site));
    let failed =
        |d: &v1::DeviceStatus| ActionState::from_proto(d.state).is_some_and(|s| s.is_failure());
    let shown: Vec<&v1::DeviceStatus> = r
        .devices
        .iter()
        .filter(|d| site.is_none_or(|s| s == d.site))
        .filter(|d| all_devices || failed(d))
        .collect();
    if shown.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|d| {
            vec![
                d.hostname.clone(),
                d.agent_id.clone(),
                d.site.clone(),
                if d.next_retry_unix > 0 {
                    format!(
                        "{} (retry in {})",
                        ActionState::name_of(d.state),
                        span(d.next_retry_unix - now)
                    )
                } else {
                    ActionState::name_of(d.state).into()
                },
                if d.attempt > 0 {
                    d.attempt.to_string()
                } else {
                    String::new()
                },
                if d.since_unix > 0 {
                    ago(d.since_unix, now)
                } else {
                    String::new()
                },
                d.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                d.detail.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["DEVICE", "AGENT", "SITE", "STATE", "ATTEMPT", "SINCE", "EXIT", "DETAIL"],
            &rows
        )
    );
    for d in shown
        .iter()
        .filter(|d| failed(d) && !d.output_tail.is_empty())
    {
        println!();
        println!(
            "{} ({}), attempt {}: output tail",
            d.hostname, d.agent_id, d.attempt
        );
        for line in d.output_tail.lines() {
            println!("  | {line}");
        }
    }
    for d in shown
        .iter()
        .filter(|d| all_devices && !d.history.is_empty())
    {
        println!();
        println!("{} ({}): earlier attempts", d.hostname, d.agent_id);
        for h in &d.history {
            println!(
                "  attempt {} {} {}{}",
                h.attempt,
                ActionState::name_of(h.state),
                when(h.finished_at_unix, now),
                h.exit_code
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default()
            );
            if !h.detail.is_empty() {
                println!("    {}", h.detail);
            }
        }
    }
}

/// One line of live progress (the demo's and `--watch`'s when not on a terminal).
pub fn progress_line(status: &v1::RolloutStatus) -> String {
    let waves: Vec<String> = status
        .waves
        .iter()
        .map(|w| {
            let t = sum(&w.site_counts.iter().collect::<Vec<_>>());
            let label = if w.sites.is_empty() {
                w.kind.clone()
            } else {
                w.sites.join(",")
            };
            let failed = t.failed + t.rolled_back;
            let failed = if failed > 0 {
                format!(" {failed} failed")
            } else {
                String::new()
            };
            format!(
                "wave {} [{label}] {}/{}{failed} {}",
                w.index + 1,
                t.succeeded,
                t.total,
                w.state
            )
        })
        .collect();
    format!(
        "{} | {}",
        RolloutState::name_of(status.state),
        waves.join(" | ")
    )
}
