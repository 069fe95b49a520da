//! `rollcall`: agents, sites, tokens, packages, rollouts, status and the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rollcall_proto::v1;
use serde_json::json;

use super::client::default_creds;
use super::output::{ago, print_json, table, window_now};
use super::{demo, pkg, rollout, rpc, AdminClient};

#[derive(Debug, Parser)]
#[command(
    name = "rollcall",
    version,
    about = "rollcall: staged, signed updates for endpoints"
)]
pub struct Args {
    /// Controller URL, e.g. https://controller.example:8443 (default: the `controller` file in the creds folder).
    #[arg(long, env = "ROLLCALL_CONTROLLER", global = true, value_name = "URL")]
    controller: Option<String>,
    /// Folder with ca.crt, client.crt and client.key (default: ~/.config/rollcall).
    #[arg(long, env = "ROLLCALL_CREDS", global = true, value_name = "DIR")]
    creds: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enrolled endpoints.
    Agents {
        #[command(subcommand)]
        cmd: AgentsCmd,
    },
    /// Locations and how many of their agents are online.
    Sites {
        #[command(subcommand)]
        cmd: SitesCmd,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// People: personal credentials with a role (admin or tech).
    Users {
        #[command(subcommand)]
        cmd: super::users::UsersCmd,
    },
    /// Build, sign and push update packages.
    Pkg {
        #[command(subcommand)]
        cmd: pkg::PkgCmd,
    },
    /// Staged rollouts.
    Rollout {
        #[command(subcommand)]
        cmd: rollout::RolloutCmd,
    },
    /// Who did what, when, from where, and whether it was refused (oldest first).
    Audit {
        /// Entries since this long ago ("2h", "7d") or this time (RFC 3339, e.g. 2026-11-23T08:00:00Z).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only this person's actions.
        #[arg(long, value_name = "NAME")]
        who: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Where the fleet stands on one package, per site: current, older, missing, failed, pending, never reported
    /// (`--site S --devices`: who is behind and why). The report to send upward after Patch Tuesday.
    Compliance(super::compliance::ComplianceArgs),
    /// Overview: sites and rollouts.
    Status,
    /// Run the whole story on this machine: controller, 12 agents in 3 sites, a signed package, a canary then one
    /// wave per site (`--scenario bad-patch`: a package that fails everywhere stops at the canary).
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum AgentsCmd {
    /// List agents with their last check-in and whether they are online, offline or stale.
    List {
        #[arg(long)]
        site: Option<String>,
        /// Only agents whose inventory matches, e.g. os.name=Ubuntu, 'software.openssl<3.0.13', hw.model~Toughbook
        /// (repeatable, all must match; the language of `rollout create --where`, see the admin guide).
        #[arg(long = "where", value_name = "FILTER")]
        filters: Vec<String>,
        /// Only agents not heard from for at least this long, e.g. 7d, 12h.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        stale: Option<std::time::Duration>,
        /// List the retired agents instead.
        #[arg(long)]
        retired: bool,
    },
    /// One agent by id or hostname: inventory and what was deployed to it.
    Show {
        /// An agent id or a hostname (any case).
        agent: String,
        /// With --json: also the installed software list.
        #[arg(long)]
        software: bool,
    },
    /// Revoke an agent's certificates at once (a lost or stolen device); it may enroll again with a new token.
    Revoke { agent_id: String },
    /// Revoke, and refuse its hostname at enrollment until `agents unban`.
    Ban { agent_id: String },
    /// Decommission an endpoint: revoked, out of targeting and counts, kept in history (`agents list --retired`).
    Retire { agent_id: String },
    /// Let a banned hostname enroll again.
    Unban { hostname: String },
}

#[derive(Debug, Subcommand)]
enum SitesCmd {
    /// Sites with their agents, how many are online, and their maintenance windows.
    List,
    /// Create a site: enrollment tokens can only name a site that exists.
    Add { name: String },
    /// Set a site's maintenance windows: installs start only inside one (downloads any time).
    Set {
        name: String,
        /// "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 01:00-05:00", "Sat,Sun 00:00-06:00", "daily 22:00-02:00" (repeatable).
        #[arg(long = "window", value_name = "WINDOW")]
        windows: Vec<String>,
        /// IANA time zone of the windows, e.g. America/Los_Angeles.
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        /// Remove every window: installs any time.
        #[arg(long, conflicts_with = "windows")]
        clear_windows: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Print a one-time enrollment token for a site.
    Create {
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Tokens with their site, uses left and expiry (never their secret).
    List,
    /// Refuse a token from now on (its id from `token list`).
    Revoke { id: String },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let creds = args.creds.clone().unwrap_or_else(default_creds);
    let connect = || AdminClient::connect(args.controller.as_deref(), &creds);
    match args.cmd {
        Cmd::Demo(demo_args) => return demo::run(demo_args, args.json).await,
        Cmd::Pkg { cmd } => {
            return pkg::run(cmd, args.controller.as_deref(), &creds, args.json).await
        }
        Cmd::Rollout { cmd } => return rollout::run(cmd, &connect().await?, args.json).await,
        Cmd::Users { cmd } => super::users::run(cmd, &connect().await?, args.json).await?,
        Cmd::Compliance(c) => return super::compliance::run(c, &connect().await?, args.json).await,
        Cmd::Audit { since, who, limit } => {
            let since_unix = match since.as_deref() {
                None => 0,
                Some(text) => parse_since(text, chrono::Utc::now().timestamp())?,
            };
            let resp = connect()
                .await?
                .rpc
                .clone()
                .list_audit(v1::ListAuditRequest {
                    since_unix,
                    who: who.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            print_audit(&resp.entries, args.json);
        }
        Cmd::Agents {
            cmd:
                AgentsCmd::List {
                    site,
                    filters,
                    stale,
                    retired,
                },
        } => {
            // Checked here too, so a typo is a usage error (exit 64) that points at the bad part.
            for f in &filters {
                crate::model::filter::Filter::parse(f).map_err(|e| super::usage(e.to_string()))?;
            }
            let req = v1::ListAgentsRequest {
                site: site.unwrap_or_default(),
                retired,
                filters,
                silent_for_seconds: stale.map_or(0, |d| d.as_secs() as i64),
            };
            list_agents(&connect().await?, req, args.json).await?
        }
        Cmd::Agents {
            cmd: AgentsCmd::Show { agent, software },
        } => show_agent(&connect().await?, &agent, software, args.json).await?,
        Cmd::Agents {
            cmd: AgentsCmd::Revoke { agent_id },
        } => {
            end_agent(
                &connect().await?,
                &agent_id,
                v1::AgentEnding::Revoke,
                args.json,
            )
            .await?
        }
        Cmd::Agents {
            cmd: AgentsCmd::Ban { agent_id },
        } => {
            end_agent(
                &connect().await?,
                &agent_id,
                v1::AgentEnding::Ban,
                args.json,
            )
            .await?
        }
        Cmd::Agents {
            cmd: AgentsCmd::Retire { agent_id },
        } => {
            end_agent(
                &connect().await?,
                &agent_id,
                v1::AgentEnding::Retire,
                args.json,
            )
            .await?
        }
        Cmd::Agents {
            cmd: AgentsCmd::Unban { hostname },
        } => {
            connect()
                .await?
                .rpc
                .clone()
                .unban_host(v1::UnbanHostRequest {
                    hostname: hostname.clone(),
                })
                .await
                .map_err(rpc)?;
            if args.json {
                print_json(&json!({"unbanned": hostname}));
            } else {
                println!("{hostname} may enroll again.");
            }
        }
        Cmd::Sites {
            cmd: SitesCmd::List,
        } => list_sites(&connect().await?, args.json).await?,
        Cmd::Sites {
            cmd:
                SitesCmd::Set {
                    name,
                    windows,
                    tz,
                    clear_windows,
                },
        } => {
            if !clear_windows && windows.is_empty() {
                return Err(super::usage(
                    "give --window \"DAYS HH:MM-HH:MM\" (repeatable) with --tz ZONE, or --clear-windows",
                ));
            }
            if !clear_windows && tz.is_none() {
                return Err(super::usage(
                    "--tz ZONE is required with --window (e.g. --tz America/Los_Angeles)",
                ));
            }
            let site = connect()
                .await?
                .rpc
                .clone()
                .update_site(v1::UpdateSiteRequest {
                    name,
                    windows,
                    time_zone: tz.unwrap_or_default(),
                    clear_windows,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            print_sites(&[site], args.json);
        }
        Cmd::Token {
            cmd: TokenCmd::Create { site, uses, ttl },
        } => create_token(&connect().await?, &site, uses, ttl, args.json).await?,
        Cmd::Token {
            cmd: TokenCmd::List,
        } => {
            let resp = connect()
                .await?
                .rpc
                .clone()
                .list_tokens(v1::ListTokensRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            print_tokens(&resp.tokens, resp.now_unix, args.json);
        }
        Cmd::Token {
            cmd: TokenCmd::Revoke { id },
        } => {
            let token = connect()
                .await?
                .rpc
                .clone()
                .revoke_token(v1::RevokeTokenRequest { id })
                .await
                .map_err(rpc)?
                .into_inner();
            if args.json {
                print_json(&token_json(&token));
            } else {
                println!(
                    "Token {} for {} revoked; enrollments with it are refused.",
                    token.id, token.site
                );
            }
        }
        Cmd::Sites {
            cmd: SitesCmd::Add { name },
        } => {
            let site = connect()
                .await?
                .rpc
                .clone()
                .add_site(v1::AddSiteRequest { name })
                .await
                .map_err(rpc)?
                .into_inner();
            print_sites(&[site], args.json);
        }
        Cmd::Status => {
            let client = connect().await?;
            let sites = client
                .rpc
                .clone()
                .list_sites(v1::ListSitesRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            let rollouts = client
                .rpc
                .clone()
                .list_rollouts(v1::ListRolloutsRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if args.json {
                let mut all = rollout::list_json(&rollouts);
                if let Some(obj) = all.as_object_mut() {
                    obj.insert("sites".into(), sites_json(&sites.sites));
                }
                print_json(&all);
            } else {
                print_sites(&sites.sites, false);
                println!();
                print!("{}", rollout::list_table(&rollouts));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn create_token(
    client: &AdminClient,
    site: &str,
    uses: u32,
    ttl: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let resp = client
        .rpc
        .clone()
        .create_token(v1::CreateTokenRequest {
            site: site.to_owned(),
            uses,
            ttl_seconds: ttl.as_secs(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        print_json(
            &json!({"token": resp.token, "id": resp.id, "site": resp.site, "uses": resp.uses, "expires_at": resp.expires_at_unix}),
        );
    } else {
        println!("{}", resp.token);
    }
    Ok(())
}

/// `--since`: a span back from `now` ("2h") or a time (RFC 3339).
fn parse_since(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(span) = humantime::parse_duration(text) {
        return Ok(now - span.as_secs() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| {
            super::usage(format!(
                "--since {text:?} is neither a span (\"2h\", \"7d\") nor a time (2026-11-23T08:00:00Z)"
            ))
        })
}

fn print_audit(entries: &[v1::AuditRecord], json: bool) {
    let time = |at: i64| {
        chrono::DateTime::from_timestamp(at, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    if json {
        let entries: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({"at": e.at_unix, "time": time(e.at_unix), "actor": e.actor, "action": e.action,
                       "detail": e.detail, "from": e.from, "result": e.result})
            })
            .collect();
        print_json(&json!({ "entries": entries }));
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                time(e.at_unix),
                e.actor.clone(),
                e.from.clone(),
                e.action.clone(),
                e.detail.clone(),
                e.result.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["TIME", "WHO", "FROM", "ACTION", "DETAIL", "RESULT"],
            &rows
        )
    );
}

fn token_json(t: &v1::TokenInfo) -> serde_json::Value {
    json!({"id": t.id, "site": t.site, "uses_left": t.uses_left, "expires_at": t.expires_at_unix,
           "created_at": t.created_at_unix, "created_by": t.created_by, "revoked_at": t.revoked_at_unix})
}

fn print_tokens(tokens: &[v1::TokenInfo], now: i64, json: bool) {
    if json {
        print_json(&json!({"tokens": tokens.iter().map(token_json).collect::<Vec<_>>()}));
        return;
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let state = if t.revoked_at_unix > 0 {
                "revoked".to_owned()
            } else if t.expires_at_unix <= now {
                "expired".to_owned()
            } else if t.uses_left == 0 {
                "used up".to_owned()
            } else {
                format!("{} use(s) left", t.uses_left)
            };
            vec![
                t.id.clone(),
                t.site.clone(),
                state,
                super::output::when(t.expires_at_unix, now),
                t.created_by.clone(),
                ago(t.created_at_unix, now),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["TOKEN", "SITE", "STATE", "EXPIRES", "BY", "CREATED"],
            &rows
        )
    );
}

async fn end_agent(
    client: &AdminClient,
    id: &str,
    how: v1::AgentEnding,
    json: bool,
) -> anyhow::Result<()> {
    let resp = client
        .rpc
        .clone()
        .end_agent(v1::EndAgentRequest {
            agent_id: id.to_owned(),
            how: how as i32,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let agent = resp.agent.unwrap_or_default();
    let done = match how {
        v1::AgentEnding::Ban => "revoked and banned",
        v1::AgentEnding::Retire => "retired",
        _ => "revoked",
    };
    if json {
        print_json(
            &json!({"agent": agent.agent_id, "hostname": agent.hostname, "site": agent.site, "done": done,
                           "certificates_revoked": resp.certificates_revoked,
                           "connections_closed": resp.connections_closed}),
        );
    } else {
        println!(
            "{} ({}, {}) {done}: {} certificate(s) revoked, {} open connection(s) closed.",
            agent.agent_id,
            agent.hostname,
            agent.site,
            resp.certificates_revoked,
            resp.connections_closed
        );
    }
    Ok(())
}

async fn list_agents(
    client: &AdminClient,
    req: v1::ListAgentsRequest,
    json: bool,
) -> anyhow::Result<()> {
    let resp = client
        .rpc
        .clone()
        .list_agents(req)
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        let agents: Vec<_> = resp.agents.iter().map(agent_json).collect();
        print_json(&json!({ "count": agents.len(), "agents": agents }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.clone(),
                a.hostname.clone(),
                a.site.clone(),
                a.os.clone(),
                a.presence.clone(),
                if a.retired_at_unix > 0 {
                    ago(a.retired_at_unix, resp.now_unix)
                } else if a.revoked_at_unix > 0 {
                    ago(a.revoked_at_unix, resp.now_unix)
                } else {
                    ago(a.last_checkin_unix, resp.now_unix)
                },
                a.installed
                    .iter()
                    .map(|p| format!("{}@{}", p.name, p.version))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "AGENT",
                "HOSTNAME",
                "SITE",
                "OS",
                "STATE",
                "SINCE",
                "INSTALLED"
            ],
            &rows
        )
    );
    if resp.agents.is_empty() {
        println!("(no agent matches)");
    }
    Ok(())
}

/// One agent's summary as JSON (`agents list --json`, `agents show --json`).
fn agent_json(a: &v1::AgentSummary) -> serde_json::Value {
    json!({"id": a.agent_id, "hostname": a.hostname, "site": a.site, "platform": a.platform, "os": a.os,
           "presence": a.presence, "enrolled_at": a.enrolled_at_unix, "last_checkin": a.last_checkin_unix,
           "agent_version": a.agent_version, "revoked_at": a.revoked_at_unix, "retired_at": a.retired_at_unix,
           "installed": a.installed.iter().map(|p| json!({"name": p.name, "version": p.version, "release_counter": p.release_counter})).collect::<Vec<_>>()})
}

async fn show_agent(
    client: &AdminClient,
    key: &str,
    software: bool,
    json: bool,
) -> anyhow::Result<()> {
    let d = client
        .rpc
        .clone()
        .get_agent(v1::GetAgentRequest {
            agent_id: key.to_owned(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let s = d.summary.unwrap_or_default();
    let inv = d.inventory;
    if json {
        let mut agent = agent_json(&s);
        let mut inventory = inv
            .as_ref()
            .map(rollcall_proto::inventory::to_json)
            .unwrap_or(serde_json::Value::Null);
        if let (false, Some(obj)) = (software, inventory.as_object_mut()) {
            let count = inv.as_ref().map_or(0, |i| i.software.len());
            obj.insert("software".into(), json!({ "count": count }));
        }
        agent["inventory"] = inventory;
        agent["actions"] = d.actions.iter().map(|a| json!({"rollout": a.rollout_id, "package": a.package, "version": a.version,
                "state": rollcall_proto::ActionState::name_of(a.state), "exit_code": a.exit_code, "detail": a.detail})).collect();
        agent["drift"] = d
            .drift_events
            .iter()
            .map(|e| {
                json!({"profile": e.profile, "item": e.item, "what": e.what,
                "at": e.at_unix, "repaired": e.repaired, "error": e.error})
            })
            .collect();
        print_json(&agent);
        return Ok(());
    }
    println!(
        "{} ({}) at {}: {}, last seen {}, agent {}",
        s.hostname,
        s.agent_id,
        s.site,
        s.presence,
        ago(s.last_checkin_unix, chrono::Utc::now().timestamp()),
        s.agent_version
    );
    match &inv {
        Some(inv) => print!("{}", rollcall_proto::inventory::describe(inv, "  ")),
        None => println!("  (no inventory reported yet)"),
    }
    if !s.installed.is_empty() {
        let installed: Vec<String> = s
            .installed
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        println!("  {:<10} {}", "rollcall", installed.join(", "));
    }
    println!();
    if !d.drift_events.is_empty() {
        let now = chrono::Utc::now().timestamp();
        let shown = d.drift_events.len().min(10);
        println!(
            "Configuration drift (the last {shown} of {}):",
            d.drift_events.len()
        );
        let rows: Vec<Vec<String>> = d.drift_events[d.drift_events.len() - shown..]
            .iter()
            .map(|e| {
                vec![
                    ago(e.at_unix, now),
                    e.profile.clone(),
                    e.item.clone(),
                    e.what.clone(),
                    if e.repaired {
                        "repaired".into()
                    } else {
                        format!("NOT repaired: {}", e.error)
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["WHEN", "PROFILE", "ITEM", "WHAT", "RESULT"], &rows)
        );
        println!();
    }
    let rows: Vec<Vec<String>> = d
        .actions
        .iter()
        .map(|a| {
            vec![
                a.rollout_id.clone(),
                format!("{}@{}", a.package, a.version),
                rollcall_proto::ActionState::name_of(a.state).into(),
                a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                a.detail.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ROLLOUT", "PACKAGE", "STATE", "EXIT", "DETAIL"], &rows)
    );
    Ok(())
}

async fn list_sites(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let resp = client
        .rpc
        .clone()
        .list_sites(v1::ListSitesRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    print_sites(&resp.sites, json);
    Ok(())
}

fn sites_json(sites: &[v1::SiteSummary]) -> serde_json::Value {
    serde_json::Value::Array(
        sites
            .iter()
            .map(|s| {
                json!({"name": s.name, "agents": s.agents, "online": s.online, "windows": s.windows,
                       "time_zone": s.time_zone, "window_open": s.window_open,
                       "window_changes_at": s.window_changes_at_unix})
            })
            .collect(),
    )
}

fn print_sites(sites: &[v1::SiteSummary], json: bool) {
    if json {
        print_json(&json!({ "sites": sites_json(sites) }));
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            let window = if s.windows.is_empty() {
                "any time".to_owned()
            } else {
                let state = window_now(true, s.window_open, s.window_changes_at_unix, now);
                format!("{} ({}; {state})", s.windows.join("; "), s.time_zone)
            };
            vec![
                s.name.clone(),
                s.agents.to_string(),
                s.online.to_string(),
                window,
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["SITE", "AGENTS", "ONLINE", "INSTALL WINDOWS"], &rows)
    );
}
