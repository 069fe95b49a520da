//! Rollout status as field technicians and admins see it: per wave, per site, per device.

use std::collections::{BTreeMap, HashMap};

use rollcall_proto::v1;

use super::engine::Tally;
use super::state::ActionState;
use crate::store::{ActionRecord, RolloutRecord, Store, StoreError};

/// Build the full status of a rollout at `now`. Devices that do not count towards their wave (never checked in,
/// long offline) are listed with the reason, outside the counts.
pub fn rollout_status(
    store: &Store,
    rollout: &RolloutRecord,
    now: i64,
) -> Result<v1::RolloutStatus, StoreError> {
    let actions: HashMap<String, ActionRecord> = store
        .actions_of(&rollout.id)?
        .into_iter()
        .map(|a| (a.agent_id.clone(), a))
        .collect();
    let mut per_site: BTreeMap<String, Tally> = BTreeMap::new();
    let mut devices = Vec::new();
    for agent in store.agents_in_sites(&rollout.all_sites())? {
        let Some(wave) = rollout.wave_of(&agent.site) else {
            continue;
        };
        let action = actions.get(&agent.id);
        let excluded = super::driver::not_member_because(&agent, now);
        if excluded.is_none() {
            per_site
                .entry(agent.site.clone())
                .or_default()
                .add(action.map(|a| a.state));
        }
        devices.push(v1::DeviceStatus {
            agent_id: agent.id.clone(),
            hostname: agent.hostname.clone(),
            site: agent.site.clone(),
            wave,
            state: action.map_or(ActionState::Pending, |a| a.state).to_proto() as i32,
            exit_code: action.and_then(|a| a.exit_code),
            detail: excluded
                .or_else(|| action.map(|a| a.detail.clone()))
                .unwrap_or_default(),
            output_tail: action.map(|a| a.output_tail.clone()).unwrap_or_default(),
            updated_at_unix: action.map_or(0, |a| a.updated_at),
            rollout_id: rollout.id.clone(),
            package: rollout.package.clone(),
            version: rollout.version.clone(),
        });
    }
    devices.sort_by(|a, b| (a.wave, &a.site, &a.hostname).cmp(&(b.wave, &b.site, &b.hostname)));

    let waves = rollout
        .waves
        .iter()
        .enumerate()
        .map(|(i, wave)| {
            let site_counts: Vec<v1::SiteCounts> = wave
                .sites
                .iter()
                .map(|site| {
                    let t = per_site.get(site).copied().unwrap_or_default();
                    v1::SiteCounts {
                        site: site.clone(),
                        total: t.total,
                        succeeded: t.succeeded,
                        failed: t.failed,
                        pending: t.pending,
                        in_progress: t.in_progress,
                    }
                })
                .collect();
            let done = site_counts.iter().all(|c| c.succeeded == c.total);
            let state = if (i as u32) > rollout.current_wave {
                "waiting"
            } else if done {
                "done"
            } else {
                "open"
            };
            v1::WaveStatus {
                index: i as u32,
                sites: wave.sites.clone(),
                state: state.into(),
                site_counts,
            }
        })
        .collect();

    Ok(v1::RolloutStatus {
        id: rollout.id.clone(),
        name: rollout.name.clone(),
        package: rollout.package.clone(),
        version: rollout.version.clone(),
        state: rollout.state.to_proto() as i32,
        current_wave: rollout.current_wave,
        waves,
        devices,
        created_at_unix: rollout.created_at,
        updated_at_unix: rollout.updated_at,
        reason: rollout.reason.clone(),
    })
}
