//! Rollout status as field technicians and admins see it: per wave (with its gate progress), per site (with its
//! maintenance window), per device (with every attempt). Devices that do not count towards their wave (never
//! checked in, silent beyond the membership cutoff) are listed with the reason, outside the counts.

use std::collections::{BTreeMap, HashMap};

use rollcall_proto::v1;

use super::driver::members;
use super::engine::{retry_delay, Env, Standing, Tally};
use crate::model::{ActionRecord, ActionState, AgentRecord, RolloutRecord, RolloutState};
use crate::store::{Store, StoreError};

/// The full status of `r` at `env`; `devices` adds the per-device list.
pub fn rollout_status(
    store: &Store,
    r: &RolloutRecord,
    env: &Env,
    devices: bool,
) -> Result<v1::RolloutStatus, StoreError> {
    let agents = store.agents()?;
    let actions = store.actions_by_agent(&r.id)?;
    Ok(build(store, r, &agents, &actions, env, devices))
}

/// The status from records already read (lists read all agents once for every rollout).
pub fn build(
    store: &Store,
    r: &RolloutRecord,
    agents: &[AgentRecord],
    actions: &HashMap<String, ActionRecord>,
    env: &Env,
    with_devices: bool,
) -> v1::RolloutStatus {
    let mut per_site: BTreeMap<(u32, String), Tally> = BTreeMap::new();
    let mut wave_tally = vec![Tally::default(); r.waves.len()];
    let mut devices = Vec::new();
    for (wave, agent, action) in members(r, agents, actions, store) {
        let standing = Standing::in_rollout(r, agent, action, env);
        per_site
            .entry((wave, agent.site.clone()))
            .or_default()
            .add(standing);
        if let Some(t) = wave_tally.get_mut(wave as usize) {
            t.add(standing);
        }
        if with_devices {
            devices.push(device_status(r, agent, action, wave, standing, env));
        }
    }
    devices.sort_by(|a, b| (a.wave, &a.site, &a.hostname).cmp(&(b.wave, &b.site, &b.hostname)));

    let mut windows: HashMap<String, Option<(bool, i64)>> = HashMap::new();
    let mut window_of = |site: &str| {
        *windows.entry(site.to_owned()).or_insert_with(|| {
            match store.site(site).ok().flatten().map(|s| s.schedule()) {
                Some(Ok(Some(schedule))) => {
                    let now = schedule.state_at(env.now);
                    Some((now.open, now.changes_at))
                }
                _ => None,
            }
        })
    };
    let waves = r
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut sites: Vec<String> = w.sites.clone();
            for (wave, site) in per_site.keys() {
                if *wave == i as u32 && !sites.contains(site) {
                    sites.push(site.clone());
                }
            }
            let site_counts = sites
                .iter()
                .map(|site| {
                    let t = per_site
                        .get(&(i as u32, site.clone()))
                        .copied()
                        .unwrap_or_default();
                    let window = window_of(site);
                    v1::SiteCounts {
                        site: site.clone(),
                        total: t.total,
                        succeeded: t.succeeded,
                        failed: t.failed,
                        pending: t.pending,
                        in_progress: t.in_progress,
                        rolled_back: t.rolled_back,
                        skipped: t.skipped,
                        cancelled: t.cancelled,
                        offline: t.offline,
                        retrying: t.retrying,
                        has_window: window.is_some(),
                        window_open: window.is_some_and(|w| w.0),
                        window_changes_at_unix: window.map_or(0, |w| w.1),
                    }
                })
                .collect();
            let t = wave_tally[i];
            let next_waits = r.state == RolloutState::WaitingApproval
                && r.waves.iter().rposition(|w| w.is_open()).map(|o| o + 1) == Some(i);
            let soaking = w.threshold_met_at > 0 && w.passed_at == 0;
            let state = match () {
                _ if w.passed_at > 0 && w.closed_by_deadline => "closed",
                _ if w.passed_at > 0 => "done",
                _ if w.is_open() && soaking => "soaking",
                _ if w.is_open() => "open",
                _ if next_waits => "waiting-approval",
                _ => "waiting",
            };
            v1::WaveStatus {
                index: i as u32,
                sites: w.sites.clone(),
                state: state.into(),
                site_counts,
                kind: w.kind(),
                success_percent_needed: w.gates.success_percent,
                success_percent: t.success_percent(),
                error_limit: w.gates.error.describe(),
                opened_at_unix: w.opened_at,
                threshold_met_at_unix: w.threshold_met_at,
                soak_until_unix: if soaking {
                    w.threshold_met_at + w.gates.soak_secs as i64
                } else {
                    0
                },
                needs_approval: w.gates.approval,
                approved: !w.approved_by.is_empty(),
                deadline_unix: if w.is_open() && w.gates.deadline_secs > 0 {
                    w.opened_at + w.gates.deadline_secs as i64
                } else {
                    0
                },
                soak_seconds: w.gates.soak_secs,
                overlap: w.gates.overlap,
            }
        })
        .collect();

    v1::RolloutStatus {
        id: r.id.clone(),
        name: r.name.clone(),
        package: r.package.clone(),
        version: r.version.clone(),
        state: r.state.to_proto() as i32,
        current_wave: r.current_wave,
        waves,
        devices,
        created_at_unix: r.created_at,
        updated_at_unix: r.updated_at,
        reason: r.reason.clone(),
        started_at_unix: r.started_at,
        finished_at_unix: r.finished_at,
        created_by: r.created_by.clone(),
        start_at_unix: r.start_at,
        deadline_unix: r.deadline,
        max_concurrent_per_site: r.max_per_site,
        retries: r.retries,
        retry_delay_seconds: r.retry_delay_secs,
        urgent: r.urgent,
        selector: Some(v1::TargetSelector {
            sites: r.selector.sites.clone(),
            platforms: r.selector.platforms.clone(),
            r#where: r.selector.filters.iter().map(|f| f.to_string()).collect(),
        }),
        superseded_by: r.superseded_by.clone(),
        now_unix: env.now,
    }
}

/// One device's line, with its history.
pub fn device_status(
    r: &RolloutRecord,
    agent: &AgentRecord,
    action: Option<&ActionRecord>,
    wave: u32,
    standing: Standing,
    env: &Env,
) -> v1::DeviceStatus {
    let excluded = standing == Standing::Excluded;
    let detail = if excluded {
        if agent.last_checkin <= 0 {
            format!(
                "not counted: enrolled {} days ago and never checked in",
                (env.now - agent.enrolled_at) / 86400
            )
        } else {
            format!(
                "not counted: offline for {} days",
                (env.now - agent.last_checkin) / 86400
            )
        }
    } else if standing == Standing::Cancelled
        && action.is_none_or(|a| a.state == ActionState::Pending)
    {
        "rollout cancelled before this device was offered the package".to_owned()
    } else {
        action.map(|a| a.detail.clone()).unwrap_or_default()
    };
    let state = match (standing, action) {
        (Standing::Cancelled, _) => ActionState::Cancelled,
        (_, Some(a)) => a.state,
        (_, None) => ActionState::Pending,
    };
    v1::DeviceStatus {
        agent_id: agent.id.clone(),
        hostname: agent.hostname.clone(),
        site: agent.site.clone(),
        wave,
        state: state.to_proto() as i32,
        exit_code: action.and_then(|a| a.exit_code),
        detail,
        output_tail: action.map(|a| a.output_tail.clone()).unwrap_or_default(),
        updated_at_unix: action.map_or(0, |a| a.updated_at),
        rollout_id: r.id.clone(),
        package: r.package.clone(),
        version: r.version.clone(),
        attempt: action.map_or(0, |a| a.attempt),
        since_unix: action.map_or(0, |a| a.updated_at),
        history: action.map(history).unwrap_or_default(),
        last_seen_unix: agent.last_checkin,
        excluded,
        next_retry_unix: action
            .filter(|a| a.will_retry() && standing == Standing::Retrying)
            .map_or(0, |a| a.updated_at + retry_delay(a, r)),
    }
}

/// Earlier attempts of an action, oldest first.
pub fn history(a: &ActionRecord) -> Vec<v1::AttemptStatus> {
    a.history
        .iter()
        .map(|h| v1::AttemptStatus {
            attempt: h.attempt,
            state: h.state.to_proto() as i32,
            exit_code: h.exit_code,
            detail: h.detail.clone(),
            output_tail: h.output_tail.clone(),
            started_at_unix: h.started_at,
            finished_at_unix: h.finished_at,
        })
        .collect()
}
