//! `rollcall-agent run`: the loop that drives the agent and holds no rules of its own. It checks in, renews the
//! certificate when asked (and restarts the watch task on the new channel), works through the assignments one at
//! a time, installs held actions whose maintenance window is open, then waits for the first of: the check-in
//! interval (+ jitter), a wake-up from the controller (`wake`), the next window start of a held action — that one
//! needs no controller, so a device cut off from it still installs on time — the next configuration profile
//! check (drift found is repaired at once and reported with an early check-in), or a stop request.
//!
//! Tested end to end by `tests/`, which runs the real binary against a real controller; the steps it calls are
//! tested where they live.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::backoff::{jitter, Backoff};
use crate::checkin::{now, Agent};
use crate::config::AgentDirs;
use crate::wake::Watcher;

/// A held action's window start is awaited in steps of at most this, so a changed wall clock (or a suspend) delays
/// the install by no more than this.
const WINDOW_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Connect(#[from] rollcall_proto::ConnectError),
}

/// Run until `shutdown` resolves.
pub async fn run(
    dirs: AgentDirs,
    controller: Option<String>,
    settings: &std::path::Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let settings = crate::config::Settings::load(settings)?;
    // The longest wait between failed check-ins (default a minute): agents are back soon after their controller.
    let max_backoff = Duration::from_secs(settings.max_backoff_secs);
    let mut agent = Agent::load(dirs, controller, settings)?;
    agent.tidy_journal();
    crate::status::write_pid(&agent.dirs);
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
    // Started after the first successful check-in, so a restarting site's agents open their streams spread out.
    let mut watcher: Option<Watcher> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
    // The certificate renewal the watch task's channel belongs to.
    let mut watching = agent.renewals;
    loop {
        let wait = match agent.check_in().await {
            Ok(resp) => {
                backoff.reset();
                agent.renew_if_asked(&resp).await;
                if watching != agent.renewals {
                    // Renewed (here or during a download or install): the old channel presents the old
                    // certificate, so watch on the new one.
                    if let Some(old) = watcher.take() {
                        old.stop().await;
                    }
                    watching = agent.renewals;
                }
                if watcher.is_none() {
                    watcher = Some(Watcher::start(agent.channel.clone(), agent.wake.clone()));
                }
                for assignment in &resp.assignments {
                    let installing = agent.installing.clone();
                    let work = agent.process(assignment, now());
                    if stopped_during(work, &mut shutdown, &installing).await {
                        return stop(agent, watcher).await;
                    }
                }
                let interval = Duration::from_secs(u64::from(resp.checkin_interval_seconds.max(1)));
                interval + jitter(Duration::from_secs(u64::from(resp.jitter_seconds)))
            }
            Err(status) => {
                let wait = backoff.next_wait_full_jitter();
                warn!(code = ?status.code(), error = %status.message(), retry_in = ?wait, "Check-in failed.");
                if status.code() == tonic::Code::Unauthenticated {
                    error!(
                        "The controller no longer accepts this agent's certificate: enroll it again with a new token \
                         (`rollcall-agent enroll --again --token-file FILE`); installed packages are kept."
                    );
                }
                let text = format!("{status:?}");
                let expired = agent.state.cert_not_after > 0 && now() >= agent.state.cert_not_after;
                if expired {
                    error!(
                        not_after = %crate::window::utc_text(agent.state.cert_not_after),
                        "This agent's certificate has expired (it was offline past its renewal): enroll it again \
                         with a new token (`rollcall-agent enroll --again --token-file FILE`); installed packages are kept."
                    );
                } else if text.contains("Expired") || text.contains("NotValidYet") {
                    warn!(
                        now = %crate::window::utc_text(now()),
                        "A certificate is out of its validity at this device's clock: check the device's time (NTP)."
                    );
                }
                wait
            }
        };
        // Held actions whose window is open now (also when the controller is unreachable).
        let installing = agent.installing.clone();
        if stopped_during(agent.install_due(now()), &mut shutdown, &installing).await {
            return stop(agent, watcher).await;
        }
        // Configuration profiles kept applied: at start, then on their interval (also offline).
        if std::time::Instant::now() >= agent.next_profile_check {
            agent.check_profiles().await;
        }
        if !wait_for_next_check_in(&mut agent, wait, &mut shutdown).await {
            return stop(agent, watcher).await;
        }
    }
}

/// What ended a wait.
enum Woke {
    Interval,
    Controller,
    Window,
    Profiles,
    Stop,
}

/// Wait `wait` for the next check-in — less when the controller wakes the agent — installing held actions whose
/// window opens meanwhile. False when a stop was requested.
async fn wait_for_next_check_in<S: Future<Output = ()>>(
    agent: &mut Agent,
    wait: Duration,
    shutdown: &mut Pin<&mut S>,
) -> bool {
    let deadline = Instant::now() + wait;
    let wake = agent.wake.clone();
    loop {
        let at = now();
        let window = agent.state.next_install_time(at).map(|t| {
            Duration::from_secs(u64::try_from(t.saturating_sub(at)).unwrap_or(0))
                .min(WINDOW_RECHECK)
        });
        let profiles = Instant::from_std(agent.next_profile_check);
        let woke = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Woke::Interval,
            _ = wake.notified() => Woke::Controller,
            _ = tokio::time::sleep(window.unwrap_or_default()), if window.is_some() => Woke::Window,
            _ = tokio::time::sleep_until(profiles) => Woke::Profiles,
            _ = shutdown.as_mut() => Woke::Stop,
        };
        match woke {
            Woke::Interval => return true,
            Woke::Controller => {
                debug!("Checking in early.");
                return true;
            }
            Woke::Stop => return false,
            // Drift found wakes the loop for a check-in (through `wake`).
            Woke::Profiles => agent.check_profiles().await,
            Woke::Window => {
                let installing = agent.installing.clone();
                if stopped_during(agent.install_due(now()), shutdown, &installing).await {
                    return false;
                }
            }
        }
    }
}

/// Run `work` unless a stop is requested first: an install command that has started finishes (bounded by its
/// timeout), a download stops at once and resumes at the next start. True when the agent must stop.
async fn stopped_during<S: Future<Output = ()>>(
    work: impl Future<Output = ()>,
    shutdown: &mut Pin<&mut S>,
    installing: &AtomicBool,
) -> bool {
    tokio::pin!(work);
    tokio::select! {
        _ = &mut work => false,
        _ = shutdown.as_mut() => {
            if installing.load(Ordering::SeqCst) {
                info!("Stop requested during an install: letting it finish (bounded by its timeout).");
                work.await;
            } else {
                info!("Stopping in the middle of a download; it resumes at the next start.");
            }
            true
        }
    }
}

/// The one way out: end the watch task, save, say so.
async fn stop(mut agent: Agent, watcher: Option<Watcher>) -> Result<(), RunError> {
    if let Some(watcher) = watcher {
        watcher.stop().await;
    }
    let _ = agent.save();
    crate::status::clear_pid(&agent.dirs);
    info!("Agent stopped.");
    Ok(())
}
