//! Admin commands on a rollout — start (or schedule), pause, resume, approve, cancel, retry devices, delete a
//! draft — each a compare-and-swap on the rollout record (and on the actions it touches) with a refusal that names
//! the rollout's state and what would apply. The clock is an argument, as everywhere in `rollout/`.

use super::driver::supersede_older;
use crate::model::{ActionRecord, ActionState, RolloutEvent, RolloutRecord, RolloutState};
use crate::store::{AuditEntry, Store, StoreError};

/// Who gives a command: the name recorded on the rollout, and for a person the audit entry, written in the same
/// transaction as the rollout's change.
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub name: &'a str,
    pub audit: Option<&'a AuditEntry>,
}

impl<'a> From<&'a str> for By<'a> {
    fn from(name: &'a str) -> By<'a> {
        By { name, audit: None }
    }
}

/// Why an admin command does not apply.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no rollout {0}")]
    NoRollout(String),
    #[error("rollout {id} is {state}; {what}")]
    Refused {
        id: String,
        state: RolloutState,
        what: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refused(r: &RolloutRecord, what: impl Into<String>) -> CommandError {
    CommandError::Refused {
        id: r.id.clone(),
        state: r.state,
        what: what.into(),
    }
}

/// Apply `change` to the rollout (with `audit`, when given, in the same transaction); `Err(what)` from it refuses
/// the command with that explanation.
fn command(
    store: &Store,
    id: &str,
    audit: Option<&AuditEntry>,
    mut change: impl FnMut(&mut RolloutRecord) -> Result<(), String>,
) -> Result<RolloutRecord, CommandError> {
    let mut why = None;
    let updated = store.update_rollout_audited(
        id,
        |mut r| match change(&mut r) {
            Ok(()) => Some(r),
            Err(what) => {
                why = Some(refused(&r, what));
                None
            }
        },
        audit,
    )?;
    match (updated, why) {
        (Some(r), _) => Ok(r),
        (None, Some(e)) => Err(e),
        (None, None) => Err(CommandError::NoRollout(id.to_owned())),
    }
}

/// Start a draft: now, or at its start time (state `scheduled`). Starting a scheduled rollout starts it now.
pub fn start(store: &Store, id: &str, now: i64) -> Result<RolloutRecord, CommandError> {
    start_audited(store, id, None, now)
}

/// [`start`], with a person's audit entry.
pub fn start_audited(
    store: &Store,
    id: &str,
    audit: Option<&AuditEntry>,
    now: i64,
) -> Result<RolloutRecord, CommandError> {
    let r = command(store, id, audit, |r| {
        let event = if r.state == RolloutState::Draft && r.start_at > now {
            RolloutEvent::Schedule
        } else {
            RolloutEvent::Start
        };
        r.state = r.state.on(event).ok_or_else(|| match r.state {
            RolloutState::Paused => format!("resume it with `rollcall rollout resume {}`", r.id),
            _ => "only a draft or a scheduled rollout can be started".into(),
        })?;
        if r.state == RolloutState::Running {
            r.started_at = now;
        }
        r.updated_at = now;
        Ok(())
    })?;
    if r.state == RolloutState::Running {
        supersede_older(store, &r, now)?;
    }
    Ok(r)
}

pub fn pause<'a>(
    store: &Store,
    id: &str,
    by: impl Into<By<'a>>,
    now: i64,
) -> Result<RolloutRecord, CommandError> {
    let By { name: by, audit } = by.into();
    command(store, id, audit, |r| {
        r.state = r
            .state
            .on(RolloutEvent::Pause)
            .ok_or("only a running, scheduled or waiting rollout can be paused")?;
        r.reason = format!("paused by {by}");
        r.updated_at = now;
        Ok(())
    })
}

/// Resume a paused rollout. Its failed devices get a new attempt (with fresh automatic retries) *before* it
/// runs again, so the engine never sees the old failures in a running rollout and pauses it at once. Returns the
/// rollout and the agents retried.
pub fn resume<'a>(
    store: &Store,
    id: &str,
    by: impl Into<By<'a>>,
    now: i64,
) -> Result<(RolloutRecord, Vec<String>), CommandError> {
    let By { name: by, audit } = by.into();
    let current = store
        .rollout(id)?
        .ok_or_else(|| CommandError::NoRollout(id.to_owned()))?;
    if current.state != RolloutState::Paused {
        return Err(refused(&current, "only a paused rollout can be resumed"));
    }
    let retried = new_attempts(
        store,
        None,
        &current,
        |a| a.state.is_failure(),
        &format!("new attempt: rollout resumed by {by}"),
        now,
    )?;
    let r = command(store, id, audit, |r| {
        r.state = r
            .state
            .on(RolloutEvent::Resume)
            .ok_or("only a paused rollout can be resumed")?;
        if r.started_at == 0 {
            r.started_at = now;
        }
        r.reason.clear();
        r.updated_at = now;
        Ok(())
    })?;
    // A rollout paused while scheduled starts now: it takes over the package's desired state like `start`.
    supersede_older(store, &r, now)?;
    Ok((r, retried))
}

/// Approve the wave a rollout waits for; the engine opens it.
pub fn approve<'a>(
    store: &Store,
    id: &str,
    by: impl Into<By<'a>>,
    now: i64,
) -> Result<(RolloutRecord, u32), CommandError> {
    let By { name: by, audit } = by.into();
    let mut wave = 0;
    let r = command(store, id, audit, |r| {
        let next = r
            .state
            .on(RolloutEvent::Approve)
            .ok_or("only a rollout waiting for approval can be approved")?;
        let i = r
            .waves
            .iter()
            .rposition(|w| w.is_open())
            .map_or(0, |i| i + 1);
        let w = r.waves.get_mut(i).ok_or("no wave is waiting")?;
        w.approved_by = by.to_owned();
        wave = i as u32;
        r.state = next;
        r.reason.clear();
        r.updated_at = now;
        Ok(())
    })?;
    Ok((r, wave))
}

/// Cancel: no new offers from this moment; devices that have not started installing are cancelled (agents
/// holding them are told at their next check-in and drop them); an install already running finishes and its
/// report is still recorded. Returns the rollout and the agents to tell.
pub fn cancel<'a>(
    store: &Store,
    id: &str,
    by: impl Into<By<'a>>,
    now: i64,
) -> Result<(RolloutRecord, Vec<String>), CommandError> {
    let By { name: by, audit } = by.into();
    let r = command(store, id, audit, |r| {
        r.state = r
            .state
            .on(RolloutEvent::Cancel)
            .ok_or("it has already ended")?;
        r.reason = format!("cancelled by {by}");
        r.finished_at = now;
        r.updated_at = now;
        Ok(())
    })?;
    let mut told = Vec::new();
    for a in store.actions_of(id)? {
        let done = store.update_action(&a.id, |cur| {
            let mut a = cur?;
            let detail = format!("cancelled by {by} before the install started");
            a.cancel_before_install(detail, now).then_some(a)
        })?;
        if let Some(a) = done {
            told.push(a.agent_id);
        }
    }
    Ok((r, told))
}

/// Which devices a technician's retry is for.
#[derive(Debug, Clone)]
pub enum RetrySelection {
    Agent(String),
    Site(String),
    Failed,
}

/// Give the selected finished-but-unsuccessful devices a new attempt with fresh automatic retries. Refused for
/// a rollout that is not offering (draft, cancelled), and for a device that is not in the rollout or has
/// nothing to retry. Returns the agents retried.
/// With a person's audit entry (`by.audit`), each device's new attempt is written with its own entry (that entry,
/// its detail followed by the agent id) in the same transaction.
pub fn retry<'a>(
    store: &Store,
    id: &str,
    which: &RetrySelection,
    by: impl Into<By<'a>>,
    now: i64,
) -> Result<Vec<String>, CommandError> {
    let By { name: by, audit } = by.into();
    let r = store
        .rollout(id)?
        .ok_or_else(|| CommandError::NoRollout(id.to_owned()))?;
    if matches!(
        r.state,
        RolloutState::Draft | RolloutState::Cancelled | RolloutState::Scheduled
    ) || (!r.offers() && r.state != RolloutState::Paused)
    {
        return Err(refused(
            &r,
            "only a rollout that has started, is not cancelled and is not superseded by a newer one retries devices",
        ));
    }
    let retryable = |a: &ActionRecord| a.state.is_failure() || a.state == ActionState::Cancelled;
    if let RetrySelection::Agent(agent) = which {
        let Some(a) = store.action(&ActionRecord::id_for(id, agent))? else {
            return Err(refused(
                &r,
                format!("device {agent} is not in it (never offered); nothing to retry"),
            ));
        };
        if !retryable(&a) {
            return Err(refused(&r, format!("device {agent} is {}; only failed, rolled-back or cancelled devices are retried", a.state)));
        }
    }
    let why = format!("new attempt: retry requested by {by}");
    let retried = new_attempts(
        store,
        audit,
        &r,
        |a| {
            retryable(a)
                && match which {
                    RetrySelection::Agent(agent) => a.agent_id == *agent,
                    RetrySelection::Site(site) => a.site == *site,
                    RetrySelection::Failed => a.state.is_failure(),
                }
        },
        &why,
        now,
    )?;
    if retried.is_empty() {
        return Err(refused(&r, "no device matches: nothing failed there"));
    }
    Ok(retried)
}

/// Start a new attempt for every action `select` picks; automatic retries start over. With `audit`, each
/// device's change carries its own copy of the entry (detail + agent id).
fn new_attempts(
    store: &Store,
    audit: Option<&AuditEntry>,
    r: &RolloutRecord,
    select: impl Fn(&ActionRecord) -> bool,
    why: &str,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let mut done = Vec::new();
    for a in store.actions_of(&r.id)? {
        if !select(&a) {
            continue;
        }
        let entry = audit.map(|e| AuditEntry {
            detail: format!("{} {}", e.detail, a.agent_id),
            ..e.clone()
        });
        let updated = store.update_action_audited(
            &a.id,
            |cur| {
                let mut a = cur.filter(|a| select(a))?;
                a.retries_left = r.retries;
                a.begin_next_attempt(why, now).then_some(a)
            },
            entry.as_ref(),
        )?;
        if let Some(a) = updated {
            done.push(a.agent_id);
        }
    }
    Ok(done)
}

/// Delete a draft rollout (nothing was ever offered), with a person's audit entry in the same transaction when
/// given.
pub fn delete_draft(
    store: &Store,
    id: &str,
    audit: Option<&AuditEntry>,
) -> Result<(), CommandError> {
    let r = store
        .rollout(id)?
        .ok_or_else(|| CommandError::NoRollout(id.to_owned()))?;
    if r.state != RolloutState::Draft {
        return Err(refused(
            &r,
            "only a draft can be deleted; cancel it instead",
        ));
    }
    if !store.delete_rollout_if_audited(id, |r| r.state == RolloutState::Draft, audit)? {
        return Err(refused(&r, "it changed while deleting; look again"));
    }
    Ok(())
}
