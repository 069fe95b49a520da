//! Applies the engine's rules to the store: advances running rollouts, hands out assignments at check-in,
//! records device reports and retries failed devices on resume. Every function takes `now` so tests and replays
//! control time, and every change is a compare-and-swap on one record, so the engine, admins and overlapping
//! check-ins never overwrite each other.

use std::collections::HashMap;

use rollcall_proto::v1;
use tracing::{info, warn};

use super::engine::{decide, offer, Decision, Offer, Tally};
use super::state::{ActionState, RolloutEvent};
use crate::store::{ActionRecord, AgentRecord, RolloutRecord, Store, StoreError};

/// An agent silent for longer than this no longer counts towards its wave (a lost or retired MDC must not hold
/// a rollout forever); it still gets the update when it comes back while its wave is open.
pub const OFFLINE_AFTER: i64 = 7 * 86400;

/// Why an agent does not count towards its wave at `now`, or `None` when it does: it must have checked in at
/// least once (an agent that enrolled but never came up must not hold a wave) and recently.
pub fn not_member_because(agent: &AgentRecord, now: i64) -> Option<String> {
    if agent.last_checkin <= 0 {
        return Some("not counted: enrolled but never checked in".into());
    }
    if now - agent.last_checkin > OFFLINE_AFTER {
        let days = (now - agent.last_checkin) / 86400;
        return Some(format!("not counted: offline for {days} days"));
    }
    None
}

/// Advance every running rollout one step. Returns the rollouts whose state or open wave changed.
pub fn tick(store: &Store, now: i64) -> Result<Vec<RolloutRecord>, StoreError> {
    let mut changed = Vec::new();
    for seen in store.running_rollouts()? {
        let decision = decide(&seen, &tallies(store, &seen, now)?);
        if decision == Decision::Wait {
            continue;
        }
        // Apply only if nobody (an admin pausing, another tick) changed the rollout since we looked.
        let updated = store.update_rollout(&seen.id, |mut r| {
            if r != seen {
                return None;
            }
            match &decision {
                Decision::Wait => return None,
                Decision::OpenWave(wave) => r.current_wave = *wave,
                Decision::Complete => r.state = r.state.on(RolloutEvent::Finished)?,
                Decision::Pause(reason) => {
                    r.state = r.state.on(RolloutEvent::DeviceFailed)?;
                    r.reason = reason.clone();
                }
            }
            r.updated_at = now;
            Some(r)
        })?;
        if let Some(r) = updated {
            match &decision {
                Decision::OpenWave(wave) => info!(rollout = %r.id, wave = wave + 1, "Wave opened."),
                Decision::Complete => info!(rollout = %r.id, "Rollout completed."),
                Decision::Pause(reason) => warn!(rollout = %r.id, %reason, "Rollout paused."),
                Decision::Wait => {}
            }
            changed.push(r);
        }
    }
    Ok(changed)
}

/// Tally each wave's member devices: the agents at the wave's sites that count at `now` (membership is dynamic).
pub fn tallies(store: &Store, rollout: &RolloutRecord, now: i64) -> Result<Vec<Tally>, StoreError> {
    let actions: HashMap<String, ActionState> = store
        .actions_of(&rollout.id)?
        .into_iter()
        .map(|a| (a.agent_id, a.state))
        .collect();
    let mut tallies = vec![Tally::default(); rollout.waves.len()];
    for agent in store.agents_in_sites(&rollout.all_sites())? {
        if not_member_because(&agent, now).is_some() {
            continue;
        }
        if let Some(wave) = rollout.wave_of(&agent.site) {
            tallies[wave as usize].add(actions.get(&agent.id).copied());
        }
    }
    Ok(tallies)
}

/// The assignments a checking-in agent gets from all running rollouts; records new offers.
pub fn assignments_for(
    store: &Store,
    agent: &AgentRecord,
    now: i64,
) -> Result<Vec<v1::Assignment>, StoreError> {
    let mut out = Vec::new();
    for rollout in store.running_rollouts()? {
        let id = ActionRecord::id_for(&rollout.id, &agent.id);
        let existing = store.action(&id)?;
        let supported = rollcall_packaging::platform::matches(&rollout.platforms, &agent.platform);
        match offer(&rollout, &agent.site, supported, existing.as_ref()) {
            Offer::Nothing => {}
            Offer::Skip { wave } => {
                let detail = format!(
                    "package supports {} but the device is {}",
                    rollout.platforms.join(", "),
                    agent.platform
                );
                store.update_action(&id, |cur| match cur {
                    None => {
                        let mut a = new_action(&rollout, agent, wave, ActionState::Skipped, now);
                        a.detail = detail.clone();
                        Some(a)
                    }
                    Some(_) => None,
                })?;
            }
            Offer::Offer { wave } => {
                // Only a new or pending action is written; the common re-send of an action in progress is a read.
                let needs_offer = existing
                    .as_ref()
                    .is_none_or(|a| a.state == ActionState::Pending);
                let offered = if needs_offer {
                    store.update_action(&id, |cur| match cur {
                        None => Some(new_action(&rollout, agent, wave, ActionState::Offered, now)),
                        Some(mut a) if a.state == ActionState::Pending => {
                            a.state = ActionState::Offered;
                            a.updated_at = now;
                            Some(a)
                        }
                        Some(_) => None,
                    })?
                } else {
                    None
                };
                let attempt = match offered.or(existing) {
                    Some(a) if !a.state.is_terminal() => a.attempt,
                    _ => continue,
                };
                out.push(v1::Assignment {
                    action_id: id,
                    rollout_id: rollout.id.clone(),
                    target_name: rollout.target_name.clone(),
                    package: rollout.package.clone(),
                    version: rollout.version.clone(),
                    install_not_before_unix: 0,
                    attempt,
                });
            }
        }
    }
    Ok(out)
}

fn new_action(
    rollout: &RolloutRecord,
    agent: &AgentRecord,
    wave: u32,
    state: ActionState,
    now: i64,
) -> ActionRecord {
    ActionRecord {
        id: ActionRecord::id_for(&rollout.id, &agent.id),
        rollout_id: rollout.id.clone(),
        agent_id: agent.id.clone(),
        wave,
        state,
        attempt: 1,
        exit_code: None,
        detail: String::new(),
        output_tail: String::new(),
        bytes_done: 0,
        bytes_total: 0,
        created_at: now,
        updated_at: now,
    }
}

/// What became of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Recorded; `terminal` when it finished the action.
    Recorded { terminal: bool },
    /// Already known or no longer applicable (a late progress report, an older attempt); acknowledged and
    /// dropped.
    Ignored,
}

/// Record one agent report, if it is a legal step of the current attempt of an action of this agent.
pub fn apply_report(
    store: &Store,
    agent_id: &str,
    report: &v1::ActionReport,
    now: i64,
) -> Result<ReportOutcome, StoreError> {
    let Some(state) = ActionState::from_proto(report.state) else {
        warn!(agent = %agent_id, action = %report.action_id, state = report.state, "Report with unknown state ignored.");
        return Ok(ReportOutcome::Ignored);
    };
    let updated = store.update_action(&report.action_id, |cur| {
        let mut action = cur?;
        if action.agent_id != agent_id
            // 0: an agent that does not send attempts; it can only mean the current one.
            || (report.attempt != 0 && action.attempt != report.attempt)
            || !action.state.can_become(state)
        {
            return None;
        }
        action.state = state;
        action.exit_code = report.exit_code;
        action.detail = report.detail.clone();
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
    Ok(match updated {
        Some(_) => ReportOutcome::Recorded {
            terminal: state.is_terminal(),
        },
        None => ReportOutcome::Ignored,
    })
}

/// On resume: every failed device of the rollout goes back to `pending` with the next attempt number, so it is
/// offered again instead of pausing the rollout again at once. Returns how many were reset.
pub fn retry_failed(store: &Store, rollout_id: &str, now: i64) -> Result<usize, StoreError> {
    let mut reset = 0;
    for action in store.actions_of(rollout_id)? {
        let done = store.update_action(&action.id, |cur| {
            let mut a = cur?;
            a.state = a.state.retry()?;
            a.attempt += 1;
            a.detail = format!("retry {} after resume", a.attempt);
            a.exit_code = None;
            a.output_tail.clear();
            a.updated_at = now;
            Some(a)
        })?;
        reset += usize::from(done.is_some());
    }
    Ok(reset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::state::RolloutState;
    use crate::store::temp_store;

    fn agent(id: &str, site: &str) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            hostname: id.into(),
            site: site.into(),
            platform: "linux-x86_64".into(),
            enrolled_at: 0,
            last_checkin: 1,
            agent_version: String::new(),
            os: String::new(),
            inventory_hash: String::new(),
            installed: vec![],
        }
    }

    fn report(action_id: &str, state: ActionState) -> v1::ActionReport {
        v1::ActionReport {
            action_id: action_id.into(),
            state: state.to_proto() as i32,
            attempt: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_two_wave_rollout_runs_to_completion_and_a_restart_changes_nothing() {
        let (_dir, store) = temp_store();
        for (id, site) in [("a1", "north"), ("a2", "north"), ("b1", "south")] {
            store.put_agent(&agent(id, site)).unwrap();
        }
        let rollout = RolloutRecord::for_test("r1", &["linux"], &[&["north"], &["south"]]);
        store.put_rollout(&rollout).unwrap();

        let south = store.agent("b1").unwrap().unwrap();
        assert!(
            assignments_for(&store, &south, 1).unwrap().is_empty(),
            "wave 2 closed"
        );
        for id in ["a1", "a2"] {
            let a = store.agent(id).unwrap().unwrap();
            let got = assignments_for(&store, &a, 1).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].action_id, format!("r1/{id}"));
        }
        assert!(tick(&store, 2).unwrap().is_empty(), "nobody finished yet");
        apply_report(&store, "a1", &report("r1/a1", ActionState::Succeeded), 3).unwrap();
        assert_eq!(
            apply_report(&store, "a1", &report("r1/a2", ActionState::Succeeded), 3).unwrap(),
            ReportOutcome::Ignored,
            "an agent cannot report for another"
        );
        assert!(tick(&store, 4).unwrap().is_empty());
        apply_report(&store, "a2", &report("r1/a2", ActionState::Succeeded), 5).unwrap();
        let changed = tick(&store, 6).unwrap();
        assert_eq!(changed[0].current_wave, 1);

        // A "restart": reopen the same store, the rollout resumes at wave 2.
        let r = store.rollout("r1").unwrap().unwrap();
        assert_eq!((r.state, r.current_wave), (RolloutState::Running, 1));
        let got = assignments_for(&store, &south, 7).unwrap();
        assert_eq!(got.len(), 1);
        apply_report(&store, "b1", &report("r1/b1", ActionState::Succeeded), 8).unwrap();
        tick(&store, 9).unwrap();
        assert_eq!(
            store.rollout("r1").unwrap().unwrap().state,
            RolloutState::Completed
        );
    }

    #[test]
    fn a_failure_pauses_and_late_progress_is_ignored() {
        let (_dir, store) = temp_store();
        store.put_agent(&agent("a1", "north")).unwrap();
        let rollout = RolloutRecord::for_test("r2", &["windows"], &[&["north"]]);
        store.put_rollout(&rollout).unwrap();
        let a = store.agent("a1").unwrap().unwrap();
        assert!(
            assignments_for(&store, &a, 1).unwrap().is_empty(),
            "wrong platform is skipped, not offered"
        );
        assert_eq!(
            store.action("r2/a1").unwrap().unwrap().state,
            ActionState::Skipped
        );

        let mut linux = rollout.clone();
        linux.id = "r3".into();
        linux.platforms = vec!["linux".into()];
        store.put_rollout(&linux).unwrap();
        assignments_for(&store, &a, 1).unwrap();
        let mut failed = report("r3/a1", ActionState::Failed);
        failed.exit_code = Some(3);
        failed.detail = "verify command exited 3".into();
        apply_report(&store, "a1", &failed, 2).unwrap();
        assert_eq!(
            apply_report(&store, "a1", &report("r3/a1", ActionState::Downloading), 3).unwrap(),
            ReportOutcome::Ignored
        );
        tick(&store, 4).unwrap();
        let r = store.rollout("r3").unwrap().unwrap();
        assert_eq!(r.state, RolloutState::Paused);
        assert!(r.reason.contains("1 device(s) failed"));
        let action = store.action("r3/a1").unwrap().unwrap();
        assert_eq!(
            (action.state, action.exit_code),
            (ActionState::Failed, Some(3))
        );
    }

    #[test]
    fn resume_retries_failed_devices_and_old_attempts_are_ignored() {
        let (_dir, store) = temp_store();
        store.put_agent(&agent("a1", "north")).unwrap();
        let mut never = agent("ghost", "north");
        never.last_checkin = 0;
        store.put_agent(&never).unwrap();
        store
            .put_rollout(&RolloutRecord::for_test("r4", &["linux"], &[&["north"]]))
            .unwrap();
        let a = store.agent("a1").unwrap().unwrap();
        assignments_for(&store, &a, 1).unwrap();
        apply_report(&store, "a1", &report("r4/a1", ActionState::Failed), 2).unwrap();
        tick(&store, 3).unwrap();
        assert_eq!(
            store.rollout("r4").unwrap().unwrap().state,
            RolloutState::Paused
        );

        // Admin resumes: the failed device is offered again as attempt 2.
        store
            .update_rollout("r4", |mut r| {
                r.state = r.state.on(RolloutEvent::Start)?;
                Some(r)
            })
            .unwrap();
        assert_eq!(retry_failed(&store, "r4", 4).unwrap(), 1);
        tick(&store, 5).unwrap();
        assert_eq!(
            store.rollout("r4").unwrap().unwrap().state,
            RolloutState::Running,
            "not paused again"
        );
        let got = assignments_for(&store, &a, 6).unwrap();
        assert_eq!((got.len(), got[0].attempt), (1, 2));
        assert_eq!(
            apply_report(&store, "a1", &report("r4/a1", ActionState::Succeeded), 7).unwrap(),
            ReportOutcome::Ignored,
            "a late report of attempt 1 does not count"
        );
        let mut ok = report("r4/a1", ActionState::Succeeded);
        ok.attempt = 2;
        apply_report(&store, "a1", &ok, 8).unwrap();
        tick(&store, 9).unwrap();
        assert_eq!(
            store.rollout("r4").unwrap().unwrap().state,
            RolloutState::Completed,
            "the agent that never checked in does not hold the wave"
        );
    }

    #[test]
    fn silent_agents_stop_counting_after_a_week() {
        let mut a = agent("a1", "north");
        a.last_checkin = 0;
        assert!(not_member_because(&a, 10)
            .unwrap()
            .contains("never checked in"));
        a.last_checkin = 100;
        assert_eq!(not_member_because(&a, 100 + OFFLINE_AFTER), None);
        let why = not_member_because(&a, 100 + OFFLINE_AFTER + 86400).unwrap();
        assert!(why.contains("offline for 8 days"), "{why}");
    }
}
