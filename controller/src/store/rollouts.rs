//! Rollouts and the per-device actions they create. Action keys are `<rollout id>/<agent id>`, which is also the
//! action id the agent sees, so one prefix scan lists a rollout's devices.

use serde::{Deserialize, Serialize};

use super::{get, put, scan, update, Result, Store};
use crate::rollout::state::{ActionState, RolloutState};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaveRecord {
    pub sites: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RolloutRecord {
    pub id: String,
    pub name: String,
    pub package: String,
    pub version: String,
    pub target_name: String,
    pub platforms: Vec<String>,
    pub waves: Vec<WaveRecord>,
    pub state: RolloutState,
    /// Index of the highest open wave.
    pub current_wave: u32,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub reason: String,
    pub created_by: String,
}

impl RolloutRecord {
    /// The wave a site belongs to (first wave naming it).
    pub fn wave_of(&self, site: &str) -> Option<u32> {
        self.waves
            .iter()
            .position(|w| w.sites.iter().any(|s| s == site))
            .map(|i| i as u32)
    }

    pub fn all_sites(&self) -> Vec<String> {
        self.waves
            .iter()
            .flat_map(|w| w.sites.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
impl RolloutRecord {
    /// A running rollout of `app@1.0` with the given platforms and waves of sites, for tests.
    pub(crate) fn for_test(id: &str, platforms: &[&str], waves: &[&[&str]]) -> RolloutRecord {
        RolloutRecord {
            id: id.into(),
            name: String::new(),
            package: "app".into(),
            version: "1.0".into(),
            target_name: "app_1.0.tar.gz".into(),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            waves: waves
                .iter()
                .map(|w| WaveRecord {
                    sites: w.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            state: RolloutState::Running,
            current_wave: 0,
            created_at: 0,
            updated_at: 0,
            reason: String::new(),
            created_by: "admin".into(),
        }
    }
}

/// One device's part in one rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: String,
    pub rollout_id: String,
    pub agent_id: String,
    pub wave: u32,
    pub state: ActionState,
    /// 1 for the first offer; raised when a failed device is retried.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub output_tail: String,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn first_attempt() -> u32 {
    1
}

impl ActionRecord {
    pub fn id_for(rollout_id: &str, agent_id: &str) -> String {
        format!("{rollout_id}/{agent_id}")
    }
}

impl Store {
    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        get(&self.rollouts, "rollouts", id.as_bytes())
    }

    pub fn put_rollout(&self, rollout: &RolloutRecord) -> Result<()> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        put(&self.rollouts, rollout.id.as_bytes(), rollout)?;
        self.index_running(rollout)
    }

    /// Change a rollout atomically with respect to other writers (the engine and admins).
    pub fn update_rollout(
        &self,
        id: &str,
        mut change: impl FnMut(RolloutRecord) -> Option<RolloutRecord>,
    ) -> Result<Option<RolloutRecord>> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let updated = update(&self.rollouts, "rollouts", id.as_bytes(), |cur| {
            cur.and_then(&mut change)
        })?;
        if let Some(r) = &updated {
            self.index_running(r)?;
        }
        Ok(updated)
    }

    /// Running rollouts only: what every check-in and engine tick looks at.
    pub fn running_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let mut out = Vec::new();
        for id in self.running.iter().keys() {
            let id = id?;
            if let Some(r) = get::<RolloutRecord>(&self.rollouts, "rollouts", &id)? {
                if r.state == RolloutState::Running {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    fn index_running(&self, rollout: &RolloutRecord) -> Result<()> {
        if rollout.state == RolloutState::Running {
            self.running.insert(rollout.id.as_bytes(), b"".as_slice())?;
        } else {
            self.running.remove(rollout.id.as_bytes())?;
        }
        Ok(())
    }

    /// Make the index match the records (a crash can fall between a record write and its index write).
    pub(super) fn rebuild_running_index(&self) -> Result<()> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.running.clear()?;
        for r in self.rollouts()? {
            self.index_running(&r)?;
        }
        Ok(())
    }

    /// Change (or create) an action atomically with respect to other writers (overlapping check-ins).
    pub fn update_action(
        &self,
        id: &str,
        change: impl FnMut(Option<ActionRecord>) -> Option<ActionRecord>,
    ) -> Result<Option<ActionRecord>> {
        update(&self.actions, "actions", id.as_bytes(), change)
    }

    pub fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        scan(&self.rollouts, "rollouts", b"")
    }

    pub fn action(&self, id: &str) -> Result<Option<ActionRecord>> {
        get(&self.actions, "actions", id.as_bytes())
    }

    pub fn actions_of(&self, rollout_id: &str) -> Result<Vec<ActionRecord>> {
        scan(
            &self.actions,
            "actions",
            format!("{rollout_id}/").as_bytes(),
        )
    }
}
