//! One check-in and the agent it belongs to. A check-in carries inventory (when it changed), every report not yet
//! acknowledged and the ids of the actions the agent holds open; the answer sets the next interval, acknowledges
//! reports, cancels actions (applied here, see `cancel`) and lists assignments (worked through by `action`).
//! Reports are flushed with an immediate check-in after each step, so technicians see progress as it happens.
//! The loop that drives all this is `run`.
//!
//! Tested through `action.rs` (an agent whose controller is unreachable) and end to end by `tests/`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use rollcall_proto::{ActionState, ClientIdentity, ServerTrust};
use tokio::sync::Notify;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::cancel::{self, CancelOutcome};
use crate::config::{AgentConfig, AgentDirs, Settings};
use crate::inventory;
use crate::profile::Profiles;
use crate::run::RunError;
use crate::state::{AgentState, Outcome};

const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a certificate renewal failed (the old certificate keeps working; the next check-in asks again).
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("cannot make a new key and CSR: {0}")]
    Key(#[from] crate::enroll::EnrollError),
    #[error("the controller did not answer the renewal within {}s", CALL_TIMEOUT.as_secs())]
    TimedOut,
    #[error("the controller refused the renewal: {}", .0.message())]
    Refused(#[from] tonic::Status),
    #[error("cannot write the new identity {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] rollcall_proto::ConnectError),
}

pub struct Agent {
    pub(crate) dirs: AgentDirs,
    pub(crate) config: AgentConfig,
    pub(crate) settings: Settings,
    /// Replaced after a certificate renewal: whoever keeps a clone (the watch task) must take the new one.
    pub(crate) channel: Channel,
    client: AgentServiceClient<Channel>,
    pub(crate) state: AgentState,
    inventory: Option<(v1::Inventory, String, Instant)>,
    /// The inventory the controller last accepted and its hash (`dirs.inventory()` on disk), the base of a delta.
    accepted_inventory: Option<(v1::Inventory, String)>,
    controller_wants_inventory: bool,
    /// The configuration profiles applied here (applied by installs, re-checked by `check_profiles`).
    pub(crate) profiles: Arc<Profiles>,
    /// When the applied profiles are checked for drift next (at start, then every `profile_check_interval_secs`).
    pub(crate) next_profile_check: Instant,
    /// True while a signed command runs: a stop request then waits for it instead of killing it halfway.
    pub(crate) installing: Arc<AtomicBool>,
    /// Wakes the run loop for a check-in at once: the controller's wake-ups (`wake`), and reports that should not
    /// wait for the interval (a cancel).
    pub(crate) wake: Arc<Notify>,
    /// How many times the certificate was renewed: whoever holds a channel clone (the watch task) compares it.
    pub(crate) renewals: u64,
    /// The boot id the reboot command was run in: while it is still this boot, the device is going down and no
    /// new work starts.
    pub(crate) rebooting: Option<String>,
    /// `next_report_seq` at the last successful save: reports up to it are on disk.
    saved_seq: u64,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("agent_id", &self.config.agent_id)
            .finish()
    }
}

/// The wall clock, read only by the loops; the decisions take `now` as an argument.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A lazily connecting mTLS channel with the identity on disk.
fn connect(
    dirs: &AgentDirs,
    config: &AgentConfig,
    settings: &Settings,
) -> Result<Channel, rollcall_proto::ConnectError> {
    let identity = ClientIdentity::from_pem_files(&dirs.identity(), &dirs.identity())?;
    let trust = ServerTrust::ca_pem_file(&dirs.ca())?;
    // Checked when the settings were loaded.
    let proxy = settings
        .proxy
        .as_deref()
        .and_then(|p| crate::config::proxy_addr(p).ok());
    rollcall_proto::tls::connect_lazy_via(
        &config.controller,
        trust,
        Some(identity),
        proxy.as_deref(),
    )
}

impl Agent {
    /// Load an enrolled agent's identity and state. `controller` overrides the URL from `agent.toml`.
    pub fn load(
        dirs: AgentDirs,
        controller: Option<String>,
        settings: Settings,
    ) -> Result<Agent, RunError> {
        let mut config = AgentConfig::load(&dirs)?;
        if let Some(url) = controller {
            config.controller = url;
        }
        let channel = connect(&dirs, &config, &settings)?;
        let (state, recovered) = AgentState::load_or_recover(&dirs.state())?;
        if let Some(said) = recovered {
            warn!("{said}");
        }
        Ok(Agent::with_channel(dirs, config, settings, channel, state))
    }

    /// An agent speaking to its controller over `channel`, starting from `state`.
    pub(crate) fn with_channel(
        dirs: AgentDirs,
        config: AgentConfig,
        settings: Settings,
        channel: Channel,
        state: AgentState,
    ) -> Agent {
        let saved_seq = state.next_report_seq;
        let profiles = Arc::new(
            Profiles::new(
                dirs.profiles(),
                settings.profile_paths.clone(),
                settings.service_manager.clone(),
            )
            .under(settings.profile_root.clone()),
        );
        Agent {
            profiles,
            next_profile_check: Instant::now(),
            client: AgentServiceClient::new(channel.clone()),
            channel,
            dirs,
            config,
            settings,
            state,
            inventory: None,
            accepted_inventory: None,
            controller_wants_inventory: false,
            installing: Arc::default(),
            wake: Arc::default(),
            renewals: 0,
            rebooting: None,
            // What was loaded is on disk.
            saved_seq,
        }
    }

    /// Persist the state. Callers that are about to act on it stop when this fails.
    pub(crate) fn save(&mut self) -> Result<(), crate::state::StateError> {
        self.state.save(&self.dirs.state()).inspect_err(|e| {
            warn!(error = %e, "Cannot save agent state.");
        })?;
        self.saved_seq = self.state.next_report_seq;
        Ok(())
    }

    fn current_inventory(&mut self) -> (v1::Inventory, String) {
        match &self.inventory {
            Some((inv, hash, at))
                if at.elapsed() < Duration::from_secs(self.settings.inventory_interval_secs) =>
            {
                (inv.clone(), hash.clone())
            }
            _ => {
                let inv = inventory::collect(self.config.hostname.as_deref(), &self.settings);
                let hash = inventory::hash(&inv);
                self.inventory = Some((inv.clone(), hash.clone(), Instant::now()));
                (inv, hash)
            }
        }
    }

    /// The inventory as the check-in sends it: the full one, or the delta against the one the controller accepted
    /// last when that is smaller (and the controller did not ask for the whole).
    fn inventory_message(
        &mut self,
        inv: v1::Inventory,
    ) -> (Option<v1::Inventory>, Option<v1::InventoryDelta>) {
        if self.controller_wants_inventory {
            return (Some(inv), None);
        }
        if self.accepted_inventory.is_none() {
            self.accepted_inventory = read_inventory(&self.dirs.inventory())
                .filter(|(_, hash)| *hash == self.state.inventory_hash_sent);
        }
        let Some((base, base_hash)) = &self.accepted_inventory else {
            return (Some(inv), None);
        };
        let delta = rollcall_proto::inventory::delta(base, base_hash, &inv);
        if delta.encoded_len() < inv.encoded_len() {
            (None, Some(delta))
        } else {
            (Some(inv), None)
        }
    }

    /// Check the applied configuration profiles for drift and repair it (at start, then on the interval). What
    /// was found goes to the controller with the next check-in, which comes at once.
    pub(crate) async fn check_profiles(&mut self) {
        self.next_profile_check =
            Instant::now() + Duration::from_secs(self.settings.profile_check_interval_secs);
        let profiles = self.profiles.clone();
        let events = match tokio::task::spawn_blocking(move || profiles.check(now())).await {
            Ok(events) => events,
            Err(e) => {
                warn!(error = %e, "The configuration profile check stopped unexpectedly.");
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        for e in &events {
            let outcome = if e.repaired {
                "repaired"
            } else {
                "NOT repaired"
            };
            warn!(profile = %e.profile, item = %e.item, what = %e.what, error = %e.error, "Configuration drift {outcome}.");
        }
        self.state.pending_drift.extend(events);
        let over = self
            .state
            .pending_drift
            .len()
            .saturating_sub(crate::state::DRIFT_KEPT);
        self.state.pending_drift.drain(..over);
        let _ = self.save();
        self.wake.notify_one();
    }

    /// The controller accepted `inv`: it is the base of the next delta, on disk too (a failed write only costs
    /// a full inventory next time).
    fn accepted(&mut self, inv: v1::Inventory, hash: String) {
        if let Err(e) =
            crate::state::write_atomic(&self.dirs.inventory(), &inv.encode_to_vec(), 0o600)
        {
            debug!(error = %e, "Cannot keep the accepted inventory; the next change sends it whole.");
        }
        self.state.inventory_hash_sent = hash.clone();
        self.accepted_inventory = Some((inv, hash));
    }

    /// When the controller says the certificate is past half its life: trade a new key's CSR for a new
    /// certificate, replace the identity file atomically and reconnect with it. On failure the old certificate
    /// keeps working and the next check-in asks again.
    pub(crate) async fn renew(&mut self) -> Result<i64, RenewError> {
        let (key, csr_der) = crate::enroll::key_and_csr(&self.config.agent_id)?;
        let resp = tokio::time::timeout(
            CALL_TIMEOUT,
            self.client.renew(v1::RenewRequest { csr_der }),
        )
        .await
        .map_err(|_| RenewError::TimedOut)??
        .into_inner();
        let pem = crate::enroll::identity_pem(&key, &resp.certificate_der);
        let path = self.dirs.identity();
        crate::state::write_atomic(&path, pem.as_bytes(), 0o600)
            .map_err(|source| RenewError::Write { path, source })?;
        self.channel = connect(&self.dirs, &self.config, &self.settings)?;
        self.client = AgentServiceClient::new(self.channel.clone());
        self.state.cert_not_after = resp.certificate_not_after_unix;
        self.renewals += 1;
        let _ = self.save();
        Ok(resp.certificate_not_after_unix)
    }

    /// Renew the certificate when the controller's answer asks for it.
    pub(crate) async fn renew_if_asked(&mut self, resp: &v1::CheckInResponse) {
        if !resp.renew_certificate {
            return;
        }
        match self.renew().await {
            Ok(not_after) => info!(not_after, "Client certificate renewed."),
            Err(e) => {
                warn!(error = %e, "Certificate renewal failed; the next check-in asks again.")
            }
        }
    }

    /// Run `work` (a download or an install) while the agent keeps checking in on its interval and when woken:
    /// reports go out, the certificate is renewed and cancels arrive even during an hour-long install. With
    /// `cancel_of`, a cancel of that action stops the work (`None`); new assignments wait until the work is done.
    pub(crate) async fn meanwhile<F: std::future::Future>(
        &mut self,
        cancel_of: Option<&str>,
        work: F,
    ) -> Option<F::Output> {
        tokio::pin!(work);
        let wake = self.wake.clone();
        let mut woken = false;
        loop {
            let every = Duration::from_secs(self.state.checkin_interval_secs.clamp(1, 3600));
            tokio::select! {
                out = &mut work => {
                    if woken {
                        // A wake-up or new work seen meanwhile: the run loop checks in again right after this.
                        self.wake.notify_one();
                    }
                    return Some(out);
                }
                _ = tokio::time::sleep(every) => {}
                _ = wake.notified() => woken = true,
            }
            match self.check_in().await {
                Ok(resp) => {
                    self.renew_if_asked(&resp).await;
                    woken |= self.has_new_work(&resp);
                }
                Err(e) => {
                    debug!(error = %e.message(), "Check-in during a download or install failed.")
                }
            }
            if cancel_of.is_some_and(|id| self.cancelled(id)) {
                return None;
            }
        }
    }

    /// One check-in: send inventory if needed, all pending reports and the open actions; record what the controller
    /// acknowledged and apply its cancels.
    pub async fn check_in(&mut self) -> Result<v1::CheckInResponse, tonic::Status> {
        let (inv, hash) = self.current_inventory();
        let send_inventory =
            self.controller_wants_inventory || self.state.inventory_hash_sent != hash;
        let (full, delta) = if send_inventory {
            self.inventory_message(inv.clone())
        } else {
            (None, None)
        };
        // A report leaves only once it is on disk: reports recorded since the last save are saved first (a
        // `report()` has saved them already), and if that fails none goes this time.
        let unsaved = self.state.next_report_seq > self.saved_seq;
        let reports = if !unsaved || self.save().is_ok() {
            self.state
                .pending_reports
                .iter()
                .map(|r| r.to_proto())
                .collect()
        } else {
            Vec::new()
        };
        let request = v1::CheckInRequest {
            inventory: full,
            inventory_delta: delta,
            drift_events: self.state.pending_drift.iter().map(drift_proto).collect(),
            inventory_hash: hash.clone(),
            reports,
            agent_version: crate::VERSION.to_owned(),
            installed: self.state.installed_proto(),
            open_actions: self.state.open_action_ids(),
            // This agent starts installs only inside the windows it was given (`window.rs`), also offline.
            enforces_install_windows: true,
        };
        let request_drift = request.drift_events.len();
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.client.check_in(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("check-in timed out"))??
            .into_inner();
        self.state.acknowledge(&resp.acknowledged_reports);
        // The controller stored them before it answered.
        let sent = request_drift.min(self.state.pending_drift.len());
        self.state.pending_drift.drain(..sent);
        if send_inventory && !resp.send_inventory {
            self.accepted(inv, hash);
        }
        self.controller_wants_inventory = resp.send_inventory;
        self.state.last_checkin = now();
        if resp.now_unix > 0 {
            // Said once, and again when it moves by more than a minute (not at every check-in).
            let skew = self.state.last_checkin - resp.now_unix;
            let moved = (skew - self.state.clock_skew_secs).abs() > 60;
            self.state.clock_skew_secs = skew;
            if let Some(note) = self.state.clock_note().filter(|_| moved) {
                warn!("{note}");
            }
        }
        self.state.checkin_interval_secs = u64::from(resp.checkin_interval_seconds);
        let at = now();
        let mut dropped = 0usize;
        for id in &resp.cancelled_actions {
            if cancel::apply(&mut self.state, &self.dirs, id, at) == CancelOutcome::Dropped {
                dropped += 1;
            }
        }
        let _ = self.save();
        if dropped > 0 {
            // Tell the controller at once instead of at the next interval.
            self.wake.notify_one();
        }
        Ok(resp)
    }

    /// Record a step, save it, and tell the controller right away (if it is reachable; otherwise the report waits).
    /// Nothing is reported that is not on disk first: when the save fails the report waits in memory for the next
    /// save. The check-in also brings cancels: callers look at [`Agent::cancelled`] afterwards. True when saved.
    pub(crate) async fn report(
        &mut self,
        action_id: &str,
        step: ActionState,
        outcome: Outcome,
    ) -> bool {
        info!(action = %action_id, step = %step, detail = %outcome.detail, "Action step.");
        self.state.record(action_id, step, outcome, now());
        if self.save().is_err() {
            return false;
        }
        match self.check_in().await {
            Ok(resp) => {
                // New work the controller handed out with this answer (another rollout): it holds a download slot
                // there, so fetch it right after the current work instead of at the next interval.
                if self.has_new_work(&resp) {
                    self.wake.notify_one();
                }
            }
            Err(e) => {
                debug!(error = %e.message(), "Report not delivered yet; it goes with the next check-in.")
            }
        }
        true
    }

    /// Report a step only when its detail changed: a condition that holds over many check-ins (a metered link) is
    /// said once.
    pub(crate) async fn report_once(&mut self, id: &str, step: ActionState, detail: String) {
        let same = self
            .state
            .actions
            .get(id)
            .is_some_and(|p| p.step == step && p.detail == detail);
        if !same {
            info!(action = %id, "{detail}");
            self.report(id, step, Outcome::detail(detail)).await;
        }
    }

    /// Whether an answer assigns an action (or an attempt) this agent does not hold yet.
    fn has_new_work(&self, resp: &v1::CheckInResponse) -> bool {
        resp.assignments.iter().any(|a| {
            self.state
                .actions
                .get(&a.action_id)
                .is_none_or(|p| p.attempt != a.attempt.max(1))
        })
    }

    /// Whether the controller cancelled this action (it is then dropped and never installed).
    pub(crate) fn cancelled(&self, action_id: &str) -> bool {
        self.state
            .actions
            .get(action_id)
            .is_some_and(|a| a.step == ActionState::Cancelled)
    }
}

/// An inventory kept by [`Agent::accepted`] and its hash; `None` when missing or unreadable.
pub(crate) fn read_inventory(path: &std::path::Path) -> Option<(v1::Inventory, String)> {
    let bytes = std::fs::read(path).ok()?;
    let inv = v1::Inventory::decode(bytes.as_slice()).ok()?;
    let hash = inventory::hash(&inv);
    Some((inv, hash))
}

fn drift_proto(e: &crate::profile::DriftEvent) -> v1::DriftEvent {
    v1::DriftEvent {
        profile: e.profile.clone(),
        item: e.item.clone(),
        what: e.what.clone(),
        at_unix: e.at,
        repaired: e.repaired,
        error: e.error.clone(),
    }
}
