//! `rollcall-agent status`: what a technician at the desk needs, read from local files only (works offline).

use serde_json::json;

use crate::config::{AgentConfig, AgentDirs};
use crate::state::AgentState;

pub fn print(dirs: &AgentDirs, as_json: bool) -> anyhow::Result<()> {
    let config = AgentConfig::load(dirs)?;
    let state = AgentState::load(&dirs.state())?;
    let now = chrono::Utc::now().timestamp();
    if as_json {
        let value = json!({
            "agent_id": config.agent_id,
            "site": config.site,
            "controller": config.controller,
            "last_checkin": state.last_checkin,
            "checkin_interval_secs": state.checkin_interval_secs,
            "installed": state.installed,
            "actions": state.actions,
            "pending_reports": state.pending_reports.len(),
            "certificate_not_after": state.cert_not_after,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("Agent {} at site {}", config.agent_id, config.site);
    println!("  controller:    {}", config.controller);
    let last = if state.last_checkin == 0 {
        "never".to_owned()
    } else {
        format!("{}s ago", now - state.last_checkin)
    };
    println!(
        "  last check-in: {last} (interval {}s)",
        state.checkin_interval_secs
    );
    println!("  unsent reports: {}", state.pending_reports.len());
    if state.cert_not_after > 0 {
        let days = (state.cert_not_after - now) as f64 / 86400.0;
        println!("  certificate:   expires in {days:.1} days (renewed automatically at half-life)");
    }
    println!("Installed:");
    if state.installed.is_empty() {
        println!("  (nothing)");
    }
    for (name, p) in &state.installed {
        println!("  {name} {} (release {})", p.version, p.release_counter);
    }
    println!("Actions:");
    if state.actions.is_empty() {
        println!("  (none)");
    }
    for (id, a) in &state.actions {
        println!(
            "  {id}: {}@{} {} — {}",
            a.package,
            a.version,
            a.step.as_str(),
            a.detail
        );
    }
    Ok(())
}
