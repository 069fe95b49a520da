//! Rollouts and the per-device actions they create. Action keys are `<rollout id>/<agent id>`, which is also the
//! action id the agent sees, so one prefix scan lists a rollout's devices. An `active` index holds the ids of
//! rollouts the check-in path and the engine must look at (everything but drafts, cancelled and superseded ones).

use super::{get, put, scan, update, Result, Store, Table};
use crate::model::{ActionRecord, ActionState, RolloutRecord};

impl Store {
    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        get(&self.rollouts, "rollouts", id.as_bytes())
    }

    pub fn put_rollout(&self, rollout: &RolloutRecord) -> Result<()> {
        self.put_rollout_audited(rollout, None)
    }

    /// [`Store::put_rollout`], with a person's audit entry written in the same transaction when given.
    pub fn put_rollout_audited(
        &self,
        rollout: &RolloutRecord,
        audit: Option<&super::AuditEntry>,
    ) -> Result<()> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(entry) = audit else {
            put(&self.rollouts, rollout.id.as_bytes(), rollout)?;
            return self.index_active(rollout);
        };
        self.rollout_transaction(entry, |_| Some(rollout.clone()), &rollout.id)
            .map(|_| ())
    }

    /// Under the rollout write lock: read rollout `id`, let `change` decide its new record (`None`: leave it),
    /// and write the record, its index entry and `entry` in one transaction.
    fn rollout_transaction(
        &self,
        entry: &super::AuditEntry,
        change: impl Fn(Option<RolloutRecord>) -> Option<RolloutRecord>,
        id: &str,
    ) -> Result<Option<RolloutRecord>> {
        self.audited_if(Some(entry), |tx| {
            let Some(new) = change(tx.get(Table::Rollouts, id)?) else {
                return Ok(None);
            };
            tx.put(Table::Rollouts, id, &new)?;
            if is_active(&new) {
                tx.put_bytes(Table::Active, id.as_bytes(), b"")?;
            } else {
                tx.remove(Table::Active, id)?;
            }
            Ok(Some(new))
        })
    }

    /// Change a rollout atomically with respect to other writers (the engine and admins).
    pub fn update_rollout(
        &self,
        id: &str,
        change: impl FnMut(RolloutRecord) -> Option<RolloutRecord>,
    ) -> Result<Option<RolloutRecord>> {
        self.update_rollout_audited(id, change, None)
    }

    /// [`Store::update_rollout`], with a person's audit entry written in the same transaction as the change when
    /// given (and only if the rollout changed).
    pub fn update_rollout_audited(
        &self,
        id: &str,
        mut change: impl FnMut(RolloutRecord) -> Option<RolloutRecord>,
        audit: Option<&super::AuditEntry>,
    ) -> Result<Option<RolloutRecord>> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = audit {
            let change = std::cell::RefCell::new(change);
            return self.rollout_transaction(
                entry,
                |cur| cur.and_then(|r| (change.borrow_mut())(r)),
                id,
            );
        }
        let updated = update(&self.rollouts, "rollouts", id.as_bytes(), |cur| {
            cur.and_then(&mut change)
        })?;
        if let Some(r) = &updated {
            self.index_active(r)?;
        }
        Ok(updated)
    }

    /// Delete a rollout if `allowed` says so of its current record (a draft); returns whether it was deleted.
    pub fn delete_rollout_if(
        &self,
        id: &str,
        allowed: impl Fn(&RolloutRecord) -> bool,
    ) -> Result<bool> {
        self.delete_rollout_if_audited(id, allowed, None)
    }

    /// [`Store::delete_rollout_if`], with a person's audit entry written in the same transaction when given.
    pub fn delete_rollout_if_audited(
        &self,
        id: &str,
        allowed: impl Fn(&RolloutRecord) -> bool,
        audit: Option<&super::AuditEntry>,
    ) -> Result<bool> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if audit.is_some() {
            let gone = self.audited_if(audit, |tx| {
                match tx.get::<RolloutRecord>(Table::Rollouts, id)? {
                    Some(record) if allowed(&record) => {
                        tx.remove(Table::Rollouts, id)?;
                        tx.remove(Table::Active, id)?;
                        Ok(Some(()))
                    }
                    _ => Ok(None),
                }
            })?;
            return Ok(gone.is_some());
        }
        let Some(old) = self.rollouts.get(id.as_bytes())? else {
            return Ok(false);
        };
        let record: RolloutRecord = super::decode("rollouts", id.as_bytes(), &old)?;
        if !allowed(&record) {
            return Ok(false);
        }
        let gone = self
            .rollouts
            .compare_and_swap(id.as_bytes(), Some(old), None::<&[u8]>)?
            .is_ok();
        if gone {
            self.active.remove(id.as_bytes())?;
        }
        Ok(gone)
    }

    /// Active rollouts only (not drafts, cancelled or superseded): what every check-in and engine pass reads.
    pub fn active_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let mut out = Vec::new();
        for id in self.active.iter().keys() {
            let id = id?;
            if let Some(r) = get::<RolloutRecord>(&self.rollouts, "rollouts", &id)? {
                if is_active(&r) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    fn index_active(&self, rollout: &RolloutRecord) -> Result<()> {
        if is_active(rollout) {
            self.active.insert(rollout.id.as_bytes(), b"".as_slice())?;
        } else {
            self.active.remove(rollout.id.as_bytes())?;
        }
        Ok(())
    }

    /// Make the index match the records (a crash can fall between a record write and its index write).
    pub(super) fn rebuild_active_index(&self) -> Result<()> {
        let _writes = self
            .rollout_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.active.clear()?;
        for r in self.rollouts()? {
            self.index_active(&r)?;
        }
        Ok(())
    }

    /// Change (or create) an action atomically with respect to other writers (overlapping check-ins), and keep
    /// the download-slot index in step with it.
    pub fn update_action(
        &self,
        id: &str,
        change: impl FnMut(Option<ActionRecord>) -> Option<ActionRecord>,
    ) -> Result<Option<ActionRecord>> {
        self.update_action_audited(id, change, None)
    }

    /// [`Store::update_action`], with a person's audit entry written in the same transaction as the change when
    /// given (and only if the action changed).
    pub fn update_action_audited(
        &self,
        id: &str,
        mut change: impl FnMut(Option<ActionRecord>) -> Option<ActionRecord>,
        audit: Option<&super::AuditEntry>,
    ) -> Result<Option<ActionRecord>> {
        let stripe = id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let _lock = self.action_locks[stripe % self.action_locks.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if audit.is_some() {
            let change = std::cell::RefCell::new(change);
            return self.audited_if(audit, |tx| {
                let current: Option<ActionRecord> = tx.get(Table::Actions, id)?;
                let before = current.as_ref().and_then(slot_key);
                let Some(new) = (change.borrow_mut())(current) else {
                    return Ok(None);
                };
                tx.put(Table::Actions, id, &new)?;
                let after = slot_key(&new);
                if before != after {
                    if let Some(key) = &before {
                        tx.remove(Table::Slots, key)?;
                    }
                    if let Some(key) = &after {
                        tx.put_bytes(Table::Slots, key.as_bytes(), b"")?;
                    }
                }
                Ok(Some(new))
            });
        }
        let mut before = None;
        let updated = update(
            &self.actions,
            "actions",
            id.as_bytes(),
            |cur: Option<ActionRecord>| {
                before = cur.as_ref().and_then(slot_key);
                change(cur)
            },
        )?;
        if let Some(new) = &updated {
            let after = slot_key(new);
            if before != after {
                if let Some(key) = before {
                    self.slots.remove(key.as_bytes())?;
                }
                if let Some(key) = after {
                    self.slots.insert(key.as_bytes(), b"".as_slice())?;
                }
            }
        }
        Ok(updated)
    }

    /// Agents of `site` whose action of `rollout_id` holds a download slot (offered or downloading).
    pub fn slot_holders(&self, rollout_id: &str, site: &str) -> Result<Vec<String>> {
        let prefix = format!("{rollout_id}/{site}/");
        self.slots
            .scan_prefix(prefix.as_bytes())
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// Make the slot index match the actions (a crash can fall between an action write and its index write).
    pub(super) fn rebuild_slot_index(&self) -> Result<()> {
        self.slots.clear()?;
        for item in self.actions.iter() {
            let (k, v) = item?;
            let action: ActionRecord = super::decode("actions", &k, &v)?;
            if let Some(key) = slot_key(&action) {
                self.slots.insert(key.as_bytes(), b"".as_slice())?;
            }
        }
        Ok(())
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

    /// A rollout's actions by agent id.
    pub fn actions_by_agent(
        &self,
        rollout_id: &str,
    ) -> Result<std::collections::HashMap<String, ActionRecord>> {
        Ok(self
            .actions_of(rollout_id)?
            .into_iter()
            .map(|a| (a.agent_id.clone(), a))
            .collect())
    }
}

/// Rollouts the engine or the check-in path acts on: scheduled (to start), running, waiting for approval,
/// paused (devices already working finish), and completed ones not superseded (late joiners).
fn is_active(r: &RolloutRecord) -> bool {
    use crate::model::RolloutState as S;
    match r.state {
        S::Draft | S::Cancelled => false,
        S::Completed => r.superseded_by.is_empty(),
        S::Scheduled | S::Running | S::Paused | S::WaitingApproval => true,
    }
}

/// The slot-index key of an action that holds its site's download slot.
fn slot_key(a: &ActionRecord) -> Option<String> {
    matches!(a.state, ActionState::Offered | ActionState::Downloading)
        .then(|| format!("{}/{}/{}", a.rollout_id, a.site, a.agent_id))
}
