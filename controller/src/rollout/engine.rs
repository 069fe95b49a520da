//! The rollout rules as pure functions of stored records and an injected clock: where each device stands, when a
//! wave reaches its gate, opens, waits for approval, pauses or completes the rollout, what a checking-in device is
//! offered, and when a failed device is retried. No I/O and no clock reads: `driver` feeds them.

use crate::model::software::SoftwareSets;
use crate::model::{
    ActionRecord, ActionState, AgentRecord, RolloutEvent, RolloutRecord, RolloutState,
};

/// The time and the two horizons every rule is judged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Env {
    pub now: i64,
    /// A device silent for longer no longer counts towards its wave (a lost MDC must not hold a rollout).
    pub cutoff: i64,
    /// A device silent for longer is shown as offline (it still counts).
    pub offline_after: i64,
}

/// Where one device stands in its wave. Every device is in exactly one; nothing not installed is `Succeeded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Succeeded,
    /// Failed with no automatic retry left.
    Failed,
    /// Failed, rolled back, no automatic retry left.
    RolledBack,
    /// Failed, an automatic retry is coming.
    Retrying,
    /// Wrong platform, or already at this version or newer.
    Skipped,
    Cancelled,
    /// Offered and working on it.
    InProgress,
    /// Not offered yet (or waiting for its wave), seen recently.
    Pending,
    /// Not finished and not seen for a while (or enrolled and not checked in yet): counted, shown apart.
    Offline,
    /// Silent beyond the membership cutoff (counting from its enrollment if it never checked in): not counted.
    Excluded,
}

impl Standing {
    /// A device's standing in rollout `r`: in a cancelled rollout, a device that never started is cancelled
    /// too (nothing will ever be offered to it), not pending.
    pub fn in_rollout(
        r: &RolloutRecord,
        agent: &AgentRecord,
        action: Option<&ActionRecord>,
        env: &Env,
    ) -> Standing {
        let never_started = action.is_none_or(|a| a.state == ActionState::Pending);
        if r.state == RolloutState::Cancelled && never_started {
            return Standing::Cancelled;
        }
        match Standing::of(agent, action, env) {
            // A cancelled rollout retries nothing: a failure is final there.
            Standing::Retrying if r.state == RolloutState::Cancelled => {
                match action.map(|a| a.state) {
                    Some(ActionState::RolledBack) => Standing::RolledBack,
                    _ => Standing::Failed,
                }
            }
            other => other,
        }
    }

    pub fn of(agent: &AgentRecord, action: Option<&ActionRecord>, env: &Env) -> Standing {
        let state = action.map(|a| a.state);
        match action {
            Some(a) if a.state == ActionState::Succeeded => return Standing::Succeeded,
            Some(a) if a.state == ActionState::Skipped => return Standing::Skipped,
            Some(a) if a.state == ActionState::Cancelled => return Standing::Cancelled,
            Some(a) if a.will_retry() => return Standing::Retrying,
            Some(a) if a.state == ActionState::RolledBack => return Standing::RolledBack,
            Some(a) if a.state == ActionState::Failed => return Standing::Failed,
            _ => {}
        }
        // Enrolling is a sighting too: a device that enrolled recently and has not checked in yet counts (as
        // offline) instead of letting its wave pass without it; one silent beyond the cutoff no longer counts.
        if env.now - agent.last_seen() > env.cutoff {
            return Standing::Excluded;
        }
        if !agent.seen_within(env.offline_after, env.now) {
            return Standing::Offline;
        }
        match state {
            Some(s) if s.is_in_progress() => Standing::InProgress,
            _ => Standing::Pending,
        }
    }
}

/// The devices of one wave (or one site of it) by standing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Counted devices (everything but `excluded`).
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rolled_back: u32,
    pub retrying: u32,
    pub skipped: u32,
    pub cancelled: u32,
    pub in_progress: u32,
    pub pending: u32,
    pub offline: u32,
    /// Not counted (listed apart with the reason).
    pub excluded: u32,
}

impl Tally {
    pub fn add(&mut self, standing: Standing) {
        if standing == Standing::Excluded {
            self.excluded += 1;
            return;
        }
        self.total += 1;
        let slot = match standing {
            Standing::Succeeded => &mut self.succeeded,
            Standing::Failed => &mut self.failed,
            Standing::RolledBack => &mut self.rolled_back,
            Standing::Retrying => &mut self.retrying,
            Standing::Skipped => &mut self.skipped,
            Standing::Cancelled => &mut self.cancelled,
            Standing::InProgress => &mut self.in_progress,
            Standing::Pending => &mut self.pending,
            Standing::Offline => &mut self.offline,
            Standing::Excluded => unreachable!("handled above"),
        };
        *slot += 1;
    }

    /// Devices that should install (skipped and cancelled ones are not asked to).
    pub fn eligible(&self) -> u32 {
        self.total - self.skipped - self.cancelled
    }

    /// Failures the error threshold counts (after their automatic retries).
    pub fn failures(&self) -> u32 {
        self.failed + self.rolled_back
    }

    /// Succeeded share of the eligible devices, in percent (100 for a wave with none).
    pub fn success_percent(&self) -> f64 {
        match self.eligible() {
            0 => 100.0,
            n => f64::from(self.succeeded) * 100.0 / f64::from(n),
        }
    }
}

/// One step the engine takes on a rollout, and what to tell people and agents about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub record: RolloutRecord,
    /// One line for the log and the audit trail.
    pub note: String,
    /// The wave that opened with this step (its devices should hear at once).
    pub opened: Option<u32>,
}

/// The next step of rollout `r` given its waves' tallies (index = wave) at `now`, or `None` when there is
/// nothing to do. Applied one at a time (the driver loops), each a compare-and-swap on the record.
pub fn advance(r: &RolloutRecord, tallies: &[Tally], now: i64) -> Option<Step> {
    let step = |record: RolloutRecord, note: String, opened: Option<u32>| {
        Some(Step {
            record,
            note,
            opened,
        })
    };
    let mut next = r.clone();
    next.updated_at = now;
    match r.state {
        RolloutState::Scheduled if now >= r.start_at => {
            next.state = r.state.on(RolloutEvent::Due)?;
            next.started_at = now;
            step(
                next,
                "scheduled start time reached; rollout running".into(),
                None,
            )
        }
        RolloutState::Running | RolloutState::WaitingApproval => {
            if r.state == RolloutState::Running && !r.waves.first()?.is_open() {
                return step(open(next, 0, now), "wave 1 opened".into(), Some(0));
            }
            // The error threshold of any open wave stops everything.
            for (i, w) in r.waves.iter().enumerate().filter(|(_, w)| w.is_open()) {
                let t = tallies.get(i).copied().unwrap_or_default();
                if w.gates.error.reached(t.failures(), t.eligible()) {
                    next.state = r.state.on(RolloutEvent::ErrorThreshold)?;
                    next.reason = format!(
                        "paused: wave {} reached its error threshold ({} of {} devices failed, limit {}); fix the cause, then `rollcall rollout resume {}` retries them, or `rollcall rollout cancel {}`",
                        i + 1,
                        t.failures(),
                        t.eligible(),
                        w.gates.error.describe(),
                        r.id,
                        r.id
                    );
                    let note = next.reason.clone();
                    return step(next, note, None);
                }
            }
            for (i, w) in r.waves.iter().enumerate().filter(|(_, w)| w.is_open()) {
                let t = tallies.get(i).copied().unwrap_or_default();
                if w.threshold_met_at == 0 && t.success_percent() >= w.gates.success_percent {
                    next.waves[i].threshold_met_at = now;
                    return step(
                        next,
                        format!("wave {} reached its success threshold", i + 1),
                        None,
                    );
                }
                if w.passed_at == 0 {
                    let soaked = w.threshold_met_at > 0
                        && now >= w.threshold_met_at + w.gates.soak_secs as i64;
                    let expired = w.gates.deadline_secs > 0
                        && now >= w.opened_at + w.gates.deadline_secs as i64;
                    if soaked || expired {
                        next.waves[i].passed_at = now;
                        next.waves[i].closed_by_deadline = !soaked;
                        let how = if soaked {
                            "passed its gate"
                        } else {
                            "closed by its deadline"
                        };
                        return step(next, format!("wave {} {how}", i + 1), None);
                    }
                }
            }
            let last_open = r.waves.iter().rposition(|w| w.is_open())?;
            let w = &r.waves[last_open];
            let Some(candidate) = r.waves.get(last_open + 1) else {
                // Done when every wave passed and no automatic retry is still coming.
                return if r.state == RolloutState::Running
                    && r.waves.iter().all(|w| w.passed_at > 0)
                    && tallies.iter().all(|t| t.retrying == 0)
                {
                    next.state = r.state.on(RolloutEvent::Finished)?;
                    next.finished_at = now;
                    next.reason.clear();
                    step(next, "every wave passed its gate; rollout completed (devices that join its sites later still get the package)".into(), None)
                } else {
                    None
                };
            };
            let may_open = w.passed_at > 0
                || (w.gates.overlap && now >= w.opened_at + w.gates.soak_secs as i64);
            if !may_open {
                return None;
            }
            let wave = last_open as u32 + 1;
            if candidate.gates.approval && candidate.approved_by.is_empty() {
                if r.state != RolloutState::Running {
                    return None;
                }
                next.state = r.state.on(RolloutEvent::WaitApproval)?;
                next.reason = format!(
                    "wave {} waits for approval: `rollcall rollout approve {}`",
                    wave + 1,
                    r.id
                );
                let note = next.reason.clone();
                return step(next, note, None);
            }
            if r.state != RolloutState::Running {
                return None;
            }
            step(
                open(next, wave, now),
                format!("wave {} opened", wave + 1),
                Some(wave),
            )
        }
        _ => None,
    }
}

fn open(mut r: RolloutRecord, wave: u32, now: i64) -> RolloutRecord {
    r.waves[wave as usize].opened_at = now;
    r.current_wave = r.current_wave.max(wave);
    r.reason.clear();
    r
}

/// What a device checking in gets from one rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Nothing: not a target, wave not open, rollout not offering, or already finished.
    Nothing,
    /// Send the existing action again (the device has not finished it).
    Resend,
    /// Offer the package (a new action in `wave`, or a pending one's next attempt).
    New { wave: u32 },
    /// Record the device as skipped, with the reason.
    Skip { wave: u32, reason: String },
    /// The site's download cap is full: come back later.
    Held,
}

/// Decide what rollout `r` offers `agent`, given its existing action, whether the package supports the agent's
/// platform, and how many devices of the agent's site are downloading it now (asked only when it matters).
pub fn offer(
    r: &RolloutRecord,
    agent: &AgentRecord,
    existing: Option<&ActionRecord>,
    platform_supported: bool,
    sets: &dyn SoftwareSets,
    site_downloads: impl FnOnce() -> u32,
) -> Offer {
    let wave = match existing {
        // A device already working on it finishes, also while the rollout is paused; cancel is the hard stop.
        Some(a) if a.state.is_in_progress() => {
            return if r.offers() || r.state == RolloutState::Paused {
                Offer::Resend
            } else {
                Offer::Nothing
            };
        }
        Some(a) if a.state == ActionState::Pending => a.wave,
        Some(_) => return Offer::Nothing,
        None => {
            if !r.selects(agent, sets) {
                return Offer::Nothing;
            }
            match r.wave_for(agent) {
                Some(w) => w,
                None => return Offer::Nothing,
            }
        }
    };
    if !r.offers() || !r.waves.get(wave as usize).is_some_and(|w| w.is_open()) {
        return Offer::Nothing;
    }
    if existing.is_none() {
        if !platform_supported {
            return Offer::Skip {
                wave,
                reason: format!(
                    "package supports {} but the device is {}",
                    r.platforms.join(", "),
                    agent.platform
                ),
            };
        }
        if let Some(have) = agent.installed_counter(&r.package) {
            if have.release_counter >= r.release_counter && r.release_counter > 0 {
                return Offer::Skip {
                    wave,
                    reason: format!(
                        "already at {} {} (release {}), this rollout brings release {}",
                        r.package, have.version, have.release_counter, r.release_counter
                    ),
                };
            }
        }
    }
    if r.max_per_site > 0 && site_downloads() >= r.max_per_site {
        return Offer::Held;
    }
    Offer::New { wave }
}

/// Whether a failed device's automatic retry is due at `now` (the engine retries in running rollouts; a completed
/// rollout retries a late joiner when it checks in): the retry delay doubles with each attempt (capped
/// at a day), plus up to a fifth more chosen by a hash of the action id, so a site's failures do not retry
/// together.
pub fn retry_due(a: &ActionRecord, r: &RolloutRecord, now: i64) -> bool {
    a.will_retry()
        && matches!(
            r.state,
            RolloutState::Running | RolloutState::WaitingApproval | RolloutState::Completed
        )
        && now >= a.updated_at + retry_delay(a, r)
}

/// The delay before `a`'s next automatic retry, in seconds.
pub fn retry_delay(a: &ActionRecord, r: &RolloutRecord) -> i64 {
    let base = r
        .retry_delay_secs
        .saturating_mul(1 << a.attempt.saturating_sub(1).min(16))
        .min(86400) as i64;
    let spread = stable_hash(&a.id) % 1000;
    base + base * spread as i64 / 5000
}

/// A stable hash of a string (the first 8 bytes of its sha256): canary choice and retry jitter.
pub fn stable_hash(s: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Choose a canary of `percent`% (rounded up) or `count` of `candidates`, spread over their sites in
/// proportion to each site's share (largest remainder), the lowest stable hashes of rollout id and agent id
/// within each site. Deterministic: the same inputs choose the same devices.
pub fn choose_canary(
    rollout_id: &str,
    candidates: &[&AgentRecord],
    percent: Option<f64>,
    count: Option<u32>,
) -> Vec<String> {
    let n = candidates.len();
    if n == 0 {
        return Vec::new();
    }
    let want = match (count, percent) {
        (Some(c), _) => (c as usize).min(n),
        (None, Some(p)) => ((p * n as f64 / 100.0).ceil() as usize).clamp(1, n),
        (None, None) => 0,
    };
    let mut sites: std::collections::BTreeMap<&str, Vec<&AgentRecord>> = Default::default();
    for a in candidates {
        sites.entry(a.site.as_str()).or_default().push(a);
    }
    // Largest-remainder apportionment of `want` over the sites.
    let mut shares: Vec<(&str, usize, usize)> = sites
        .iter()
        .map(|(site, agents)| {
            let exact = want * agents.len();
            (*site, exact / n, exact % n)
        })
        .collect();
    let mut left = want - shares.iter().map(|s| s.1).sum::<usize>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i].1 += 1;
        left -= 1;
    }
    let mut chosen = Vec::with_capacity(want);
    for (site, take, _) in shares {
        let mut agents = sites[site].clone();
        agents.sort_by_key(|a| (stable_hash(&format!("{rollout_id}/{}", a.id)), a.id.clone()));
        chosen.extend(agents.into_iter().take(take).map(|a| a.id.clone()));
    }
    chosen
}

#[cfg(test)]
mod tests;
