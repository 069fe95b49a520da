//! Applies the engine's rules to the store: advances rollouts, retries failed devices, hands out assignments at
//! check-in, records device reports, and carries out admin commands (start, pause, resume, approve, cancel,
//! retry). Every function takes the clock as an argument, and every change is a compare-and-swap on one record,
//! so the engine, admins and overlapping check-ins never overwrite each other, and a restarted controller resumes
//! exactly where it stopped.

use std::collections::HashMap;
use std::sync::Mutex;

use rollcall_proto::v1;
use tracing::{info, warn};

use super::engine::{advance, offer, retry_due, Env, Offer, Standing, Tally};
use crate::model::software::SoftwareSets;
use crate::model::{ActionRecord, ActionState, AgentRecord, RolloutRecord, RolloutState};
use crate::store::{Store, StoreError};

/// Window occurrences sent with an assignment (the agent installs inside them even when offline).
const WINDOW_HORIZON: i64 = 14 * 86400;

/// Serialises "count the site's downloads, then offer" so two check-ins at once never exceed a cap.
static OFFER_LOCK: Mutex<()> = Mutex::new(());

/// Agents that should check in now: a wave opened, a retry is due, a cancel must reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    /// `None`: every agent the sites select.
    pub agents: Option<Vec<String>>,
    /// `None`: any site.
    pub sites: Option<Vec<String>>,
    pub reason: String,
}

impl Wake {
    /// These agents, or `None` when there are none.
    pub fn agents(ids: Vec<String>, reason: String) -> Option<Wake> {
        (!ids.is_empty()).then_some(Wake {
            agents: Some(ids),
            sites: None,
            reason,
        })
    }

    /// Everyone who may be a target of the wave that just opened.
    /// Every agent of one site.
    pub fn site(site: &str, reason: String) -> Wake {
        Wake {
            agents: None,
            sites: Some(vec![site.to_owned()]),
            reason,
        }
    }

    fn wave(r: &RolloutRecord, wave: u32) -> Wake {
        let w = &r.waves[wave as usize];
        let reason = format!("rollout {} wave {} opened", r.id, wave + 1);
        match (&w.canary, w.rest) {
            (Some(c), _) => Wake {
                agents: Some(c.members.clone()),
                sites: None,
                reason,
            },
            (None, true) => Wake {
                agents: None,
                sites: (!r.selector.sites.is_empty()).then(|| r.selector.sites.clone()),
                reason,
            },
            (None, false) => Wake {
                agents: None,
                sites: Some(w.sites.clone()),
                reason,
            },
        }
    }
}

/// What one engine pass did.
#[derive(Debug, Default)]
pub struct TickOutcome {
    pub changed: Vec<RolloutRecord>,
    pub wake: Vec<Wake>,
}

/// The devices of a rollout: every agent that is a target, or has an action, with its wave (`sets` answer the
/// selector's filters on installed software).
pub fn members<'a>(
    r: &RolloutRecord,
    agents: &'a [AgentRecord],
    actions: &'a HashMap<String, ActionRecord>,
    sets: &dyn SoftwareSets,
) -> Vec<(u32, &'a AgentRecord, Option<&'a ActionRecord>)> {
    agents
        .iter()
        .filter_map(|agent| match actions.get(&agent.id) {
            Some(a) => Some((a.wave, agent, Some(a))),
            None if r.selects(agent, sets) => r.wave_for(agent).map(|w| (w, agent, None)),
            None => None,
        })
        .collect()
}

/// Tally each wave's devices at `env`.
pub fn tallies(
    r: &RolloutRecord,
    agents: &[AgentRecord],
    actions: &HashMap<String, ActionRecord>,
    env: &Env,
    sets: &dyn SoftwareSets,
) -> Vec<Tally> {
    let mut out = vec![Tally::default(); r.waves.len()];
    for (wave, agent, action) in members(r, agents, actions, sets) {
        if let Some(t) = out.get_mut(wave as usize) {
            t.add(Standing::in_rollout(r, agent, action, env));
        }
    }
    out
}

/// One engine pass over every active rollout: due automatic retries, then gates, waves and completion.
pub fn tick(store: &Store, env: &Env) -> Result<TickOutcome, StoreError> {
    let mut out = TickOutcome::default();
    let rollouts = store.active_rollouts()?;
    if rollouts.is_empty() {
        return Ok(out);
    }
    let agents = store.agents()?;
    for seen in rollouts {
        // Only rollouts that can still move cost a pass over their devices (completed ones wait for late
        // joiners at check-in, paused ones for an admin).
        if !matches!(
            seen.state,
            RolloutState::Scheduled | RolloutState::Running | RolloutState::WaitingApproval
        ) {
            continue;
        }
        // One read of the rollout's devices per pass: the steps below change only the rollout record.
        let mut actions = store.actions_by_agent(&seen.id)?;
        let mut retried = Vec::new();
        for a in actions.values_mut() {
            if !retry_due(a, &seen, env.now) {
                continue;
            }
            if let Some(next) = retry_if_due(store, &seen, &a.id, env.now)? {
                info!(rollout = %seen.id, agent = %next.agent_id, attempt = next.attempt, "Automatic retry.");
                retried.push(next.agent_id.clone());
                *a = next;
            }
        }
        out.wake.extend(Wake::agents(
            retried,
            format!("rollout {}: retry due", seen.id),
        ));

        let mut current = seen;
        for _ in 0..(current.waves.len() * 4 + 4) {
            let t = tallies(&current, &agents, &actions, env, store);
            let Some(step) = advance(&current, &t, env.now) else {
                break;
            };
            let Some(applied) = apply_if_unchanged(store, &current, step.record)? else {
                break;
            };
            if applied.state == RolloutState::Paused {
                warn!(rollout = %applied.id, note = %step.note, "Rollout paused.");
            } else {
                info!(rollout = %applied.id, note = %step.note, "Rollout advanced.");
            }
            if let Some(wave) = step.opened {
                out.wake.push(Wake::wave(&applied, wave));
            }
            if applied.state == RolloutState::Running && current.state == RolloutState::Scheduled {
                supersede_older(store, &applied, env.now)?;
            }
            if applied.state == RolloutState::Completed {
                supersede_if_newer_started(store, &applied, env.now)?;
            }
            out.changed.push(applied.clone());
            current = applied;
        }
    }
    Ok(out)
}

/// Give a failed device its next automatic attempt if one is due (compare-and-swap). The engine does this in
/// running rollouts; the check-in path does it for a completed rollout's late joiners.
fn retry_if_due(
    store: &Store,
    r: &RolloutRecord,
    id: &str,
    now: i64,
) -> Result<Option<ActionRecord>, StoreError> {
    store.update_action(id, |cur| {
        let mut cur = cur.filter(|a| retry_due(a, r, now))?;
        cur.retries_left -= 1;
        let why = format!("automatic retry (attempt {})", cur.attempt + 1);
        cur.begin_next_attempt(&why, now).then_some(cur)
    })
}

/// Write `next` only if the rollout is still exactly `seen` (nobody — an admin, another pass — changed it).
fn apply_if_unchanged(
    store: &Store,
    seen: &RolloutRecord,
    next: RolloutRecord,
) -> Result<Option<RolloutRecord>, StoreError> {
    store.update_rollout(&seen.id, |r| (r == *seen).then(|| next.clone()))
}

/// A newer rollout of a package started: completed older ones stop offering it to late joiners.
pub(super) fn supersede_older(
    store: &Store,
    newer: &RolloutRecord,
    now: i64,
) -> Result<(), StoreError> {
    for old in store.active_rollouts()? {
        if old.id != newer.id
            && old.package == newer.package
            && old.state == RolloutState::Completed
            && old.superseded_by.is_empty()
        {
            mark_superseded(store, &old.id, &newer.id, now)?;
        }
    }
    Ok(())
}

/// A completed rollout stops offering its package: `by` took over the package's desired state.
fn mark_superseded(store: &Store, id: &str, by: &str, now: i64) -> Result<(), StoreError> {
    let done = store.update_rollout(id, |mut r| {
        (r.state == RolloutState::Completed && r.superseded_by.is_empty()).then(|| {
            r.superseded_by = by.to_owned();
            r.updated_at = now;
            r
        })
    })?;
    if done.is_some() {
        info!(rollout = %id, by, "Completed rollout superseded.");
    }
    Ok(())
}

/// A rollout that completes while a newer rollout of its package already started is superseded at once (it must
/// not keep offering the older version to late joiners).
fn supersede_if_newer_started(
    store: &Store,
    done: &RolloutRecord,
    now: i64,
) -> Result<(), StoreError> {
    let newer = store.active_rollouts()?.into_iter().find(|r| {
        r.id != done.id
            && r.package == done.package
            && r.started_at > done.started_at
            && r.state != RolloutState::Scheduled
    });
    match newer {
        Some(newer) => mark_superseded(store, &done.id, &newer.id, now),
        None => Ok(()),
    }
}

/// What a checking-in agent gets from all rollouts.
#[derive(Debug, Default)]
pub struct CheckInWork {
    pub assignments: Vec<v1::Assignment>,
    /// A site download cap held back an offer: the agent should come back sooner than its interval.
    pub held: bool,
    /// Whether a new offer was written (must be durable before the agent hears of it).
    pub wrote: bool,
}

/// The assignments a checking-in agent gets; records new offers and skips.
pub fn assignments_for(
    store: &Store,
    agent: &AgentRecord,
    env: &Env,
) -> Result<CheckInWork, StoreError> {
    let mut work = CheckInWork::default();
    for rollout in store.active_rollouts()? {
        let id = ActionRecord::id_for(&rollout.id, &agent.id);
        let mut existing = store.action(&id)?;
        // A failed device whose automatic retry is due gets its next attempt when it shows up (the engine does
        // this too for running rollouts; for a completed one this is where it happens).
        if existing
            .as_ref()
            .is_some_and(|a| retry_due(a, &rollout, env.now))
        {
            if let Some(next) = retry_if_due(store, &rollout, &id, env.now)? {
                existing = Some(next);
            }
        }
        let supported = rollcall_packaging::platform::matches(&rollout.platforms, &agent.platform);
        let _cap = (rollout.max_per_site > 0
            && existing
                .as_ref()
                .is_none_or(|a| a.state == ActionState::Pending))
        .then(|| OFFER_LOCK.lock().unwrap_or_else(|e| e.into_inner()));
        let decision = offer(&rollout, agent, existing.as_ref(), supported, store, || {
            site_downloads(store, &rollout.id, &agent.site, env).unwrap_or(u32::MAX)
        });
        let action = match decision {
            Offer::Nothing => continue,
            Offer::Held => {
                work.held = true;
                continue;
            }
            Offer::Resend => existing,
            Offer::Skip { wave, reason } => {
                store.update_action(&id, |cur| match cur {
                    None => {
                        let mut a = ActionRecord::new(
                            &rollout.id,
                            &agent.id,
                            &agent.site,
                            wave,
                            ActionState::Skipped,
                            0,
                            env.now,
                        );
                        a.detail = reason.clone();
                        Some(a)
                    }
                    Some(_) => None,
                })?;
                work.wrote = true;
                continue;
            }
            Offer::New { wave } => {
                let offered = store.update_action(&id, |cur| match cur {
                    None => Some(ActionRecord::new(
                        &rollout.id,
                        &agent.id,
                        &agent.site,
                        wave,
                        ActionState::Offered,
                        rollout.retries,
                        env.now,
                    )),
                    Some(mut a) if a.state == ActionState::Pending => {
                        a.state = ActionState::Offered;
                        a.site = agent.site.clone();
                        a.updated_at = env.now;
                        Some(a)
                    }
                    Some(_) => None,
                })?;
                work.wrote |= offered.is_some();
                offered.or(store.action(&id)?)
            }
        };
        let Some(action) = action.filter(|a| a.state.is_in_progress()) else {
            continue;
        };
        let Some(windows) = install_windows(store, &rollout, &agent.site, env.now)? else {
            continue;
        };
        // An agent that does not enforce windows itself gets its work only while a window is open.
        if !agent.enforces_windows
            && !windows.is_empty()
            && !windows
                .iter()
                .any(|w| w.start_unix <= env.now && env.now < w.end_unix)
        {
            continue;
        }
        work.assignments.push(v1::Assignment {
            action_id: id,
            rollout_id: rollout.id.clone(),
            target_name: rollout.target_name.clone(),
            package: rollout.package.clone(),
            version: rollout.version.clone(),
            install_not_before_unix: windows.first().map_or(0, |w| w.start_unix),
            attempt: action.attempt,
            install_windows: windows,
            urgent: rollout.urgent,
        });
    }
    Ok(work)
}

/// Devices of `site` that hold a download slot of the rollout now: offered or downloading, and seen recently. A
/// device that went silent (an MDC out of coverage) frees its slot until it comes back, so it cannot stall its
/// station; back online, it finishes what it started.
fn site_downloads(
    store: &Store,
    rollout_id: &str,
    site: &str,
    env: &Env,
) -> Result<u32, StoreError> {
    let mut busy = 0;
    for agent_id in store.slot_holders(rollout_id, site)? {
        let online = store
            .agent(&agent_id)?
            .is_some_and(|agent| agent.seen_within(env.offline_after, env.now));
        busy += u32::from(online);
    }
    Ok(busy)
}

/// When the device may install: its site's next window occurrences, unless the rollout is urgent or past its
/// deadline. A deadline in the future is the last "window": from then on, install at once.
/// `None` when the site's windows cannot be read: then nothing is handed out (fail closed) until they can.
fn install_windows(
    store: &Store,
    r: &RolloutRecord,
    site: &str,
    now: i64,
) -> Result<Option<Vec<v1::TimeRange>>, StoreError> {
    if r.urgent || (r.deadline > 0 && now >= r.deadline) {
        return Ok(Some(Vec::new()));
    }
    let schedule = match store.site(site)?.map(|s| s.schedule()) {
        Some(Ok(Some(schedule))) => schedule,
        Some(Err(e)) => {
            warn!(site, error = %e, "Site windows unreadable; nothing is handed out there until they are.");
            return Ok(None);
        }
        _ => return Ok(Some(Vec::new())),
    };
    let mut ranges: Vec<v1::TimeRange> = schedule
        .ranges(now, WINDOW_HORIZON)
        .into_iter()
        .filter(|(start, _)| r.deadline == 0 || *start < r.deadline)
        .map(|(start_unix, end_unix)| v1::TimeRange {
            start_unix,
            end_unix,
        })
        .collect();
    if r.deadline > 0 {
        ranges.push(v1::TimeRange {
            start_unix: r.deadline,
            end_unix: i64::MAX,
        });
    }
    Ok(Some(ranges))
}

/// What became of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Recorded; `terminal` when it finished the action.
    Recorded { terminal: bool },
    /// Already known or no longer applicable (a late progress report, an older attempt); acknowledged.
    Ignored,
    /// No such action for this agent: acknowledged, logged, and the agent is told to drop it.
    Unknown,
}

/// Record one agent report, if it is a legal step of the current attempt of an action of this agent.
pub fn apply_report(
    store: &Store,
    agent_id: &str,
    report: &v1::ActionReport,
    now: i64,
) -> Result<ReportOutcome, StoreError> {
    let Some(state) = ActionState::from_proto(report.state) else {
        warn!(agent = %agent_id, action = %report.action_id, state = report.state, "Report with an unknown state ignored.");
        return Ok(ReportOutcome::Ignored);
    };
    let mut known = false;
    let updated = store.update_action(&report.action_id, |cur| {
        let mut action = cur.filter(|a| a.agent_id == agent_id)?;
        known = true;
        // 0: an agent that does not send attempts; it can only mean the current one.
        if (report.attempt != 0 && action.attempt != report.attempt)
            || !action.state.can_become(state)
        {
            return None;
        }
        if action.state == ActionState::Cancelled {
            action.detail = format!("{} (install had started before the cancel)", report.detail);
        } else {
            action.detail = report.detail.clone();
        }
        action.state = state;
        action.exit_code = report.exit_code;
        // Progress reports carry no output; a final report's output (even none) replaces the last one.
        if !report.output_tail.is_empty() || state.is_terminal() {
            action.output_tail = report.output_tail.clone();
        }
        action.bytes_done = report.bytes_done;
        action.bytes_total = report.bytes_total;
        action.updated_at = if report.at_unix > 0 {
            report.at_unix.min(now)
        } else {
            now
        };
        Some(action)
    })?;
    Ok(match (updated, known) {
        (Some(_), _) => ReportOutcome::Recorded {
            terminal: state.is_terminal(),
        },
        (None, true) => ReportOutcome::Ignored,
        (None, false) => {
            warn!(agent = %agent_id, action = %report.action_id, state = state.as_str(), detail = %report.detail, "Report for an action this controller does not know; the agent is told to drop it.");
            ReportOutcome::Unknown
        }
    })
}

/// Of the actions an agent says it holds, those the controller no longer wants done.
///
/// This is the one authority on cancels: an action is wanted only while it is the agent's, not cancelled, and its
/// rollout still wants it — not cancelled, not superseded by a newer rollout of the package. An unfinished action
/// of such a rollout whose install has not started is cancelled here (compare-and-swap), which also finishes a
/// cancel that a controller crash or a concurrent check-in left half done.
pub fn cancelled_for(
    store: &Store,
    agent_id: &str,
    open: &[String],
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut rollouts: HashMap<String, Option<RolloutRecord>> = HashMap::new();
    for id in open {
        let Some(action) = store.action(id)?.filter(|a| a.agent_id == agent_id) else {
            out.push(id.clone());
            continue;
        };
        if !rollouts.contains_key(&action.rollout_id) {
            let r = store.rollout(&action.rollout_id)?;
            rollouts.insert(action.rollout_id.clone(), r);
        }
        let why = match rollouts.get(&action.rollout_id).and_then(Option::as_ref) {
            None => Some("its rollout no longer exists".to_owned()),
            Some(r) if r.state == RolloutState::Cancelled => {
                Some(format!("rollout {} was cancelled", r.id))
            }
            Some(r) if !r.superseded_by.is_empty() => Some(format!(
                "rollout {} was superseded by {}",
                r.id, r.superseded_by
            )),
            Some(_) => None,
        };
        let dropped = match why {
            None => action.state == ActionState::Cancelled,
            Some(why) => {
                let cancelled = store.update_action(id, |cur| {
                    let mut a = cur?;
                    let detail = format!("cancelled before the install started: {why}");
                    a.cancel_before_install(detail, now).then_some(a)
                })?;
                cancelled.is_some()
                    || store
                        .action(id)?
                        .is_some_and(|a| a.state == ActionState::Cancelled)
            }
        };
        if dropped {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// The engine's view of the configured horizons at `now`.
pub fn env(now: i64, cutoff: std::time::Duration, checkin_interval: std::time::Duration) -> Env {
    Env {
        now,
        cutoff: cutoff.as_secs() as i64,
        offline_after: (checkin_interval.as_secs() as i64 * 3).max(60),
    }
}

#[cfg(test)]
mod tests;
