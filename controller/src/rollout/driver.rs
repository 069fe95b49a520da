//! Applies the engine's rules to the store: advances running rollouts, hands out assignments at check-in and
//! records device reports. Every function takes `now` so tests and replays control time.

use std::collections::HashMap;

use rollcall_proto::v1;
use tracing::{info, warn};

use super::engine::{decide, offer, Decision, Offer, Tally};
use super::state::{ActionState, RolloutEvent, RolloutState};
use crate::store::{ActionRecord, AgentRecord, RolloutRecord, Store, StoreError};

/// Advance every running rollout one step. Returns the rollouts whose state or open wave changed.
pub fn tick(store: &Store, now: i64) -> Result<Vec<RolloutRecord>, StoreError> {
    let mut changed = Vec::new();
    for mut rollout in store.rollouts()? {
        if rollout.state != RolloutState::Running {
            continue;
        }
        let tallies = tallies(store, &rollout)?;
        match decide(&rollout, &tallies) {
            Decision::Wait => continue,
            Decision::OpenWave(wave) => {
                info!(rollout = %rollout.id, wave = wave + 1, "Wave opened.");
                rollout.current_wave = wave;
            }
            Decision::Complete => {
                info!(rollout = %rollout.id, "Rollout completed.");
                rollout.state = transition(&rollout, RolloutEvent::Finished);
            }
            Decision::Pause(reason) => {
                warn!(rollout = %rollout.id, %reason, "Rollout paused.");
                rollout.state = transition(&rollout, RolloutEvent::DeviceFailed);
                rollout.reason = reason;
            }
        }
        rollout.updated_at = now;
        store.put_rollout(&rollout)?;
        changed.push(rollout);
    }
    Ok(changed)
}

fn transition(rollout: &RolloutRecord, event: RolloutEvent) -> RolloutState {
    rollout.state.on(event).unwrap_or(rollout.state)
}

/// Tally each wave's member devices: the agents enrolled at the wave's sites, now (membership is dynamic).
pub fn tallies(store: &Store, rollout: &RolloutRecord) -> Result<Vec<Tally>, StoreError> {
    let actions: HashMap<String, ActionState> = store
        .actions_of(&rollout.id)?
        .into_iter()
        .map(|a| (a.agent_id, a.state))
        .collect();
    let mut tallies = vec![Tally::default(); rollout.waves.len()];
    for agent in store.agents_in_sites(&rollout.all_sites())? {
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
    for rollout in store.rollouts()? {
        if rollout.state != RolloutState::Running {
            continue;
        }
        let id = ActionRecord::id_for(&rollout.id, &agent.id);
        let existing = store.action(&id)?;
        let supported = rollcall_packaging::platform::matches(&rollout.platforms, &agent.platform);
        match offer(&rollout, &agent.site, supported, existing.as_ref()) {
            Offer::Nothing => {}
            Offer::Skip { wave } => {
                let mut action = new_action(&rollout, agent, wave, ActionState::Skipped, now);
                action.detail = format!(
                    "package supports {} but the device is {}",
                    rollout.platforms.join(", "),
                    agent.platform
                );
                store.put_action(&action)?;
            }
            Offer::Offer { wave } => {
                if existing.is_none() {
                    store.put_action(&new_action(
                        &rollout,
                        agent,
                        wave,
                        ActionState::Offered,
                        now,
                    ))?;
                }
                out.push(v1::Assignment {
                    action_id: id,
                    rollout_id: rollout.id.clone(),
                    target_name: rollout.target_name.clone(),
                    package: rollout.package.clone(),
                    version: rollout.version.clone(),
                    install_not_before_unix: 0,
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
    /// Already known or no longer applicable (e.g. a late progress report); acknowledged and dropped.
    Ignored,
}

/// Record one agent report, if it is a legal step for an action of this agent.
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
    let Some(mut action) = store.action(&report.action_id)? else {
        warn!(agent = %agent_id, action = %report.action_id, "Report for unknown action ignored.");
        return Ok(ReportOutcome::Ignored);
    };
    if action.agent_id != agent_id {
        warn!(agent = %agent_id, action = %report.action_id, "Report for another agent's action ignored.");
        return Ok(ReportOutcome::Ignored);
    }
    if !action.state.can_become(state) {
        return Ok(ReportOutcome::Ignored);
    }
    action.state = state;
    action.exit_code = report.exit_code;
    action.detail = report.detail.clone();
    if !report.output_tail.is_empty() {
        action.output_tail = report.output_tail.clone();
    }
    action.bytes_done = report.bytes_done;
    action.bytes_total = report.bytes_total;
    action.updated_at = if report.at_unix > 0 {
        report.at_unix.min(now)
    } else {
        now
    };
    store.put_action(&action)?;
    Ok(ReportOutcome::Recorded {
        terminal: state.is_terminal(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store;

    fn agent(id: &str, site: &str) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            hostname: id.into(),
            site: site.into(),
            platform: "linux-x86_64".into(),
            enrolled_at: 0,
            last_checkin: 0,
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
}
