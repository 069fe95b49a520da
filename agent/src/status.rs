//! `rollcall-agent status`: what a technician at the desk needs, from local files and one TCP connect (works
//! offline, changes nothing): who this device is, whether the agent runs, whether the controller can be reached,
//! the last check-in, the certificate, installed packages, actions in flight with their times, and the last failure
//! with its output tail. `--json` prints the same as one JSON object.
//!
//! Tested end to end by `tests/` (a running agent, a stopped one, an unreachable controller).

use std::time::Duration;

use serde_json::json;

use crate::config::{AgentConfig, AgentDirs, Settings};
use crate::state::AgentState;

/// Why `status` could not say anything.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// How long the reachability probe waits.
const PROBE: Duration = Duration::from_secs(3);

/// Whether the agent service runs: its pid file names a live process started when the file says.
pub fn running_pid(dirs: &AgentDirs) -> Option<u32> {
    let text = std::fs::read_to_string(dirs.pid()).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    let started: Option<u64> = words.next().and_then(|w| w.parse().ok());
    let now = crate::platform::start_time(pid);
    (now.is_some() && now == started).then_some(pid)
}

/// Record this process as the running agent (removed by [`clear_pid`] at a clean stop).
pub fn write_pid(dirs: &AgentDirs) {
    let pid = std::process::id();
    let started = crate::platform::start_time(pid).unwrap_or_default();
    let _ = crate::state::write_atomic(&dirs.pid(), format!("{pid} {started}\n").as_bytes(), 0o644);
}

pub fn clear_pid(dirs: &AgentDirs) {
    let _ = std::fs::remove_file(dirs.pid());
}

/// Try a TCP connection to the controller (or the proxy when one is set): "reachable" or why not.
async fn probe(config: &AgentConfig, settings: &Settings) -> Result<String, String> {
    let (what, addr) = match settings.proxy.as_deref() {
        Some(proxy) => ("proxy", crate::config::proxy_addr(proxy)?),
        None => {
            let url = url::Url::parse(&config.controller).map_err(|e| e.to_string())?;
            let host = url.host_str().ok_or("no host in the controller URL")?;
            let port = url
                .port_or_known_default()
                .ok_or("no port in the controller URL")?;
            ("controller", format!("{host}:{port}"))
        }
    };
    match tokio::time::timeout(PROBE, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(format!("{what} {addr} answers (TCP)")),
        Ok(Err(e)) => Err(format!("{what} {addr}: {e}")),
        Err(_) => Err(format!(
            "{what} {addr}: no answer within {}s",
            PROBE.as_secs()
        )),
    }
}

fn when(at: i64, now: i64) -> String {
    if at <= 0 {
        return "never".to_owned();
    }
    let ago = now - at;
    let text = crate::window::utc_text(at);
    match ago {
        a if a < 0 => format!("{text} (in the future: check the clock)"),
        a if a < 120 => format!("{text} ({a}s ago)"),
        a if a < 7200 => format!("{text} ({} min ago)", a / 60),
        a => format!("{text} ({:.1} h ago)", a as f64 / 3600.0),
    }
}

pub async fn print(
    dirs: &AgentDirs,
    settings: &Settings,
    as_json: bool,
) -> Result<(), StatusError> {
    let config = AgentConfig::load(dirs)?;
    let state = AgentState::load(&dirs.state())?;
    let now = chrono::Utc::now().timestamp();
    let hostname = config
        .hostname
        .clone()
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_default();
    let running = running_pid(dirs);
    let reach = probe(&config, settings).await;
    let in_flight: Vec<_> = state
        .actions
        .iter()
        .filter(|(_, a)| !a.step.is_terminal())
        .collect();
    if as_json {
        let actions: Vec<_> = in_flight
            .iter()
            .map(|(id, a)| {
                json!({
                    "action_id": id, "package": a.package, "version": a.version, "state": a.step.as_str(),
                    "detail": a.detail, "attempt": a.attempt, "updated_at": a.updated_at,
                })
            })
            .collect();
        let value = json!({
            "hostname": hostname,
            "agent_id": config.agent_id,
            "site": config.site,
            "controller": config.controller,
            "proxy": settings.proxy,
            "running": running.is_some(),
            "pid": running,
            "reachable": reach.is_ok(),
            "reachability": match &reach { Ok(s) | Err(s) => s },
            "last_checkin": state.last_checkin,
            "checkin_interval_secs": state.checkin_interval_secs,
            "certificate_not_after": state.cert_not_after,
            "installed": state.installed,
            "in_flight": actions,
            "unsent_reports": state.pending_reports.len(),
            "clock_skew_secs": state.clock_skew_secs,
            "last_failure": state.last_failure.as_ref().map(|f| json!({
                "action_id": f.action_id, "state": f.step.as_str(), "detail": f.detail,
                "exit_code": f.exit_code, "output_tail": f.output_tail, "at": f.at,
            })),
        });
        println!("{value:#}");
        return Ok(());
    }
    println!(
        "{hostname}: agent {} at site {}",
        config.agent_id, config.site
    );
    println!(
        "  agent service: {}",
        match running {
            Some(pid) => format!("running (pid {pid})"),
            None => "NOT RUNNING (start it: systemctl start rollcall-agent)".to_owned(),
        }
    );
    println!("  controller:    {}", config.controller);
    if let Some(proxy) = &settings.proxy {
        println!("  proxy:         {proxy}");
    }
    match &reach {
        Ok(said) => println!("  reachable:     yes, {said}"),
        Err(why) => println!("  reachable:     NO, {why}"),
    }
    println!(
        "  last check-in: {} (interval {}s)",
        when(state.last_checkin, now),
        state.checkin_interval_secs
    );
    println!("  unsent reports: {}", state.pending_reports.len());
    if let Some(note) = state.clock_note() {
        println!("  clock:         {note}");
    }
    if state.cert_not_after > 0 {
        let days = (state.cert_not_after - now) as f64 / 86400.0;
        let note = if days < 0.0 {
            "EXPIRED: re-enroll this device"
        } else {
            "renewed automatically at half-life"
        };
        println!(
            "  certificate:   expires {} ({days:.1} days; {note})",
            crate::window::utc_text(state.cert_not_after)
        );
    }
    println!("Installed:");
    if state.installed.is_empty() {
        println!("  (nothing)");
    }
    for (name, p) in &state.installed {
        println!(
            "  {name} {} (release {}, installed {})",
            p.version,
            p.release_counter,
            when(p.installed_at, now)
        );
    }
    println!("In flight:");
    if in_flight.is_empty() {
        println!("  (none)");
    }
    for (id, a) in &in_flight {
        println!(
            "  {id}: {} {} {} since {} — {}",
            a.package,
            a.version,
            a.step.as_str(),
            when(a.updated_at, now),
            a.detail
        );
    }
    if let Some(f) = &state.last_failure {
        println!(
            "Last failure: {} {} {} — {}",
            f.action_id,
            f.step.as_str(),
            when(f.at, now),
            f.detail
        );
        for line in f.output_tail.lines() {
            println!("  | {line}");
        }
    }
    Ok(())
}
