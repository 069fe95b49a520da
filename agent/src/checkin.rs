//! `rollcall-agent run`: the check-in loop. Each check-in carries inventory (when it changed) and every report
//! not yet acknowledged; the answer sets the next interval and lists assignments, which the agent works through
//! one at a time. Reports are flushed right after each step so technicians see progress as it happens.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use rollcall_proto::{ClientIdentity, ServerTrust};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::config::{AgentConfig, AgentDirs};
use crate::fetch::{self, FetchError};
use crate::install;
use crate::inventory;
use crate::state::{ActionProgress, AgentState, Installed, Outcome, Step};

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Inventory is re-collected at most this often.
const INVENTORY_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Connect(#[from] rollcall_proto::ConnectError),
}

pub struct Agent {
    dirs: AgentDirs,
    config: AgentConfig,
    channel: Channel,
    client: AgentServiceClient<Channel>,
    state: AgentState,
    inventory: Option<(v1::Inventory, String, Instant)>,
    controller_wants_inventory: bool,
    /// True while a signed command runs: a stop request then waits for it instead of killing it halfway.
    installing: Arc<AtomicBool>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("agent_id", &self.config.agent_id)
            .finish()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Up to `max` of random extra delay.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    Duration::from_millis(u64::from_le_bytes(b) % (max.as_millis() as u64 + 1))
}

/// A lazily connecting mTLS channel with the identity on disk.
fn connect(
    dirs: &AgentDirs,
    config: &AgentConfig,
) -> Result<Channel, rollcall_proto::ConnectError> {
    let identity = ClientIdentity::from_pem_files(&dirs.identity(), &dirs.identity())?;
    let trust = ServerTrust::ca_pem_file(&dirs.ca())?;
    rollcall_proto::tls::connect_lazy(&config.controller, trust, Some(identity))
}

impl Agent {
    /// Load an enrolled agent's identity and state. `controller` overrides the URL from `agent.toml`.
    pub fn load(dirs: AgentDirs, controller: Option<String>) -> Result<Agent, RunError> {
        let mut config = AgentConfig::load(&dirs)?;
        if let Some(url) = controller {
            config.controller = url;
        }
        let channel = connect(&dirs, &config)?;
        let state = AgentState::load(&dirs.state())?;
        Ok(Agent {
            client: AgentServiceClient::new(channel.clone()),
            channel,
            dirs,
            config,
            state,
            inventory: None,
            controller_wants_inventory: false,
            installing: Arc::default(),
        })
    }

    /// Persist the state. Callers that are about to act on it stop when this fails.
    fn save(&self) -> Result<(), crate::state::StateError> {
        self.state.save(&self.dirs.state()).inspect_err(|e| {
            warn!(error = %e, "Cannot save agent state.");
        })
    }

    fn current_inventory(&mut self) -> (v1::Inventory, String) {
        match &self.inventory {
            Some((inv, hash, at)) if at.elapsed() < INVENTORY_EVERY => (inv.clone(), hash.clone()),
            _ => {
                let inv = inventory::collect(self.config.hostname.as_deref());
                let hash = inventory::hash(&inv);
                self.inventory = Some((inv.clone(), hash.clone(), Instant::now()));
                (inv, hash)
            }
        }
    }

    /// When the controller says the certificate is past half its life: trade a new key's CSR for a new
    /// certificate, replace the identity file atomically and reconnect with it. On failure the old certificate
    /// keeps working and the next check-in asks again.
    async fn renew(&mut self) -> anyhow::Result<i64> {
        let (key, csr_der) = crate::enroll::key_and_csr(&self.config.agent_id)?;
        let resp = tokio::time::timeout(
            CALL_TIMEOUT,
            self.client.renew(v1::RenewRequest { csr_der }),
        )
        .await
        .map_err(|_| anyhow::anyhow!("renewal timed out"))??
        .into_inner();
        let pem = crate::enroll::identity_pem(&key, &resp.certificate_der);
        crate::state::write_atomic(&self.dirs.identity(), pem.as_bytes(), 0o600)?;
        self.channel = connect(&self.dirs, &self.config)?;
        self.client = AgentServiceClient::new(self.channel.clone());
        self.state.cert_not_after = resp.certificate_not_after_unix;
        let _ = self.save();
        Ok(resp.certificate_not_after_unix)
    }

    /// One check-in: send inventory if needed and all pending reports; record what the controller acknowledged.
    pub async fn check_in(&mut self) -> Result<v1::CheckInResponse, tonic::Status> {
        let (inv, hash) = self.current_inventory();
        let send_inventory =
            self.controller_wants_inventory || self.state.inventory_hash_sent != hash;
        let request = v1::CheckInRequest {
            inventory: send_inventory.then_some(inv),
            inventory_hash: hash.clone(),
            reports: self
                .state
                .pending_reports
                .iter()
                .map(|r| r.to_proto())
                .collect(),
            agent_version: crate::VERSION.to_owned(),
            installed: self.state.installed_proto(),
        };
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.client.check_in(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("check-in timed out"))??
            .into_inner();
        self.state.acknowledge(&resp.acknowledged_reports);
        if send_inventory {
            self.state.inventory_hash_sent = hash;
        }
        self.controller_wants_inventory = resp.send_inventory;
        self.state.last_checkin = now();
        self.state.checkin_interval_secs = u64::from(resp.checkin_interval_seconds);
        let _ = self.save();
        Ok(resp)
    }

    /// Record a step and tell the controller right away (if it is reachable; otherwise the report waits).
    async fn report(&mut self, action_id: &str, step: Step, outcome: Outcome) {
        info!(action = %action_id, step = step.as_str(), detail = %outcome.detail, "Action step.");
        self.state.record(action_id, step, outcome, now());
        let _ = self.save();
        if let Err(e) = self.check_in().await {
            debug!(error = %e.message(), "Report not delivered yet; it goes with the next check-in.");
        }
    }

    /// Work through one assignment: verify, download, check, install, report.
    pub async fn process(&mut self, a: &v1::Assignment) {
        let id = a.action_id.clone();
        if !valid_action_id(&id) {
            warn!(action = %id, "Assignment with a malformed action id ignored.");
            return;
        }
        let attempt = a.attempt.max(1);
        if let Some(p) = self.state.actions.get(&id) {
            if p.attempt == attempt && p.step.is_terminal() {
                return;
            }
        }
        let progress = self
            .state
            .actions
            .entry(id.clone())
            .or_insert(ActionProgress {
                attempt,
                target_name: a.target_name.clone(),
                package: a.package.clone(),
                version: a.version.clone(),
                step: Step::Downloading,
                attempts: 0,
                updated_at: now(),
                detail: String::new(),
                install_started: false,
            });
        if progress.attempt != attempt {
            // The controller retries this device (or its attempt count differs, e.g. after a restore): the
            // controller's number wins and the action starts over.
            progress.attempt = attempt;
            progress.step = Step::Downloading;
            progress.install_started = false;
        }
        // An install command that was running when this agent last stopped (crash, power loss).
        let interrupted_install = progress.install_started;
        progress.attempts += 1;
        if let Err(e) = self.save() {
            let detail = format!("cannot save agent state: {e}");
            return self
                .report(&id, Step::Failed, Outcome::detail(detail))
                .await;
        }

        let prepared = match fetch::prepare(&self.channel, &self.dirs, &a.target_name).await {
            Ok(p) => p,
            Err(e) => return self.fetch_failed(&id, e).await,
        };
        let manifest = prepared.info.manifest.clone();
        let platform = crate::platform::current();
        if !manifest.supports_platform(&platform) {
            let detail = format!(
                "package supports {} but this device is {platform}",
                manifest.platforms.join(", ")
            );
            return self
                .report(&id, Step::Skipped, Outcome::detail(detail))
                .await;
        }
        if let Some(refusal) = self
            .state
            .rollback_refusal(&manifest.name, manifest.release_counter)
        {
            return self
                .report(&id, Step::Failed, Outcome::detail(refusal))
                .await;
        }
        let total = prepared.info.length;
        let outcome = Outcome {
            detail: format!("downloading {} bytes", total),
            bytes_total: total,
            ..Outcome::default()
        };
        self.report(&id, Step::Downloading, outcome).await;
        let partial = prepared.partial_bytes();
        let mut result = prepared.download(&self.dirs).await;
        if partial > 0 && matches!(result, Err(FetchError::Verification { .. })) {
            // The kept partial file was bad (it has been discarded): start over once from byte 0.
            warn!(action = %id, partial, "Resumed download failed verification; downloading again from the start.");
            result = match fetch::prepare(&self.channel, &self.dirs, &a.target_name).await {
                Ok(p) => p.download(&self.dirs).await,
                Err(e) => Err(e),
            };
        }
        let fetched = match result {
            Ok(f) => f,
            Err(e) => return self.fetch_failed(&id, e).await,
        };
        let detail = if fetched.resumed_bytes > 0 && fetched.resumed_bytes < fetched.length {
            format!(
                "downloaded and verified (resumed at byte {})",
                fetched.resumed_bytes
            )
        } else {
            "downloaded and verified".to_owned()
        };
        let outcome = Outcome {
            detail,
            bytes_done: fetched.length,
            bytes_total: fetched.length,
            ..Outcome::default()
        };
        self.report(&id, Step::Downloaded, outcome).await;
        self.report(
            &id,
            Step::Installing,
            Outcome::detail("running install command"),
        )
        .await;
        // Mark the install as started, durably, right before the command runs: without that record a restart
        // could not tell a cut-off install from one that never began, so do not start it.
        if let Some(p) = self.state.actions.get_mut(&id) {
            p.install_started = true;
        }
        if let Err(e) = self.save() {
            let detail = format!("cannot save agent state: {e}");
            return self
                .report(&id, Step::Failed, Outcome::detail(detail))
                .await;
        }
        self.installing.store(true, Ordering::SeqCst);
        let (step, outcome) = install::install(
            &self.dirs,
            &id,
            &manifest,
            &fetched.payload,
            interrupted_install,
        )
        .await;
        self.installing.store(false, Ordering::SeqCst);
        if step == Step::Succeeded {
            self.state.installed.insert(
                manifest.name.clone(),
                Installed {
                    version: manifest.version.clone(),
                    release_counter: manifest.release_counter,
                    installed_at: now(),
                },
            );
            let _ = std::fs::remove_file(&fetched.payload);
        }
        self.report(&id, step, outcome).await;
    }

    async fn fetch_failed(&mut self, id: &str, e: FetchError) {
        if e.is_transient() {
            // Keep the action open: the controller re-sends it and the download resumes.
            warn!(action = %id, error = %e, "Fetch interrupted; will resume.");
            if let Some(p) = self.state.actions.get_mut(id) {
                p.detail = e.to_string();
                let _ = self.save();
            }
            return;
        }
        self.report(id, Step::Failed, Outcome::detail(e.to_string()))
            .await;
    }
}

/// Action ids come from the network and end up in file contents and logs: accept only their known shape
/// (`<rollout>/<agent>`).
fn valid_action_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

/// Run until `shutdown` resolves.
pub async fn run(
    dirs: AgentDirs,
    controller: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let mut agent = Agent::load(dirs, controller)?;
    info!(agent = %agent.config.agent_id, site = %agent.config.site, controller = %agent.config.controller, "Agent started.");
    tokio::pin!(shutdown);
    if agent.state.last_checkin > 0 {
        // A restart (after a power cut or network outage, thousands of endpoints restart together): spread out.
        let spread = Duration::from_secs((agent.state.checkin_interval_secs / 4).clamp(0, 60));
        tokio::select! {
            _ = tokio::time::sleep(jitter(spread)) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match agent.check_in().await {
            Ok(resp) => {
                backoff = Duration::from_secs(1);
                if resp.renew_certificate {
                    match agent.renew().await {
                        Ok(not_after) => info!(not_after, "Client certificate renewed."),
                        Err(e) => {
                            warn!(error = %e, "Certificate renewal failed; the next check-in asks again.")
                        }
                    }
                }
                for assignment in &resp.assignments {
                    let installing = agent.installing.clone();
                    let work = agent.process(assignment);
                    tokio::pin!(work);
                    tokio::select! {
                        _ = &mut work => {}
                        _ = &mut shutdown => {
                            if installing.load(Ordering::SeqCst) {
                                info!("Stop requested during an install: letting it finish (bounded by its timeout).");
                                work.await;
                            } else {
                                info!("Stopping in the middle of a download; it resumes at the next start.");
                            }
                            return Ok(());
                        }
                    }
                }
                let interval = Duration::from_secs(u64::from(resp.checkin_interval_seconds.max(1)));
                interval + jitter(Duration::from_secs(u64::from(resp.jitter_seconds)))
            }
            Err(status) => {
                warn!(code = ?status.code(), error = %status.message(), retry_in = ?backoff, "Check-in failed.");
                let wait = backoff + jitter(backoff / 2);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    let _ = agent.save();
    info!("Agent stopped.");
    Ok(())
}
