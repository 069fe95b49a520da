//! Step 2 of an action: fetch it. Verified metadata and signed manifest first (platform, anti-rollback, checked
//! before any byte of payload), then the payload — resumable, hash-checked while streaming — into `staged/`. What
//! TUF verified (hash, length, manifest) is kept with the action, so the rest needs no controller.

use rollcall_proto::ActionState;
use tracing::warn;

use crate::checkin::Agent;
use crate::fetch::{self, Cause, FetchError};
use crate::state::{Outcome, VerifiedTarget};

impl Agent {
    /// Verify the target's metadata and manifest, then download and verify the payload into `staged/`. Returns the
    /// `downloaded` detail, or `None` when the action ended or stays open for a later try.
    pub(super) async fn fetch(&mut self, id: &str) -> Option<String> {
        let target_name = self.state.actions.get(id)?.target_name.clone();
        // The fetch borrows nothing of the agent, so check-ins (and cancels) go on while it runs.
        let (channel, dirs) = (self.channel.clone(), self.dirs.clone());
        let rate = self.settings.max_download_rate;
        let prepared = match self
            .meanwhile(
                Some(id),
                fetch::prepare(&channel, &dirs, &target_name, rate),
            )
            .await?
        {
            Ok(p) => p,
            Err(e) => return self.fetch_failed(id, e).await,
        };
        if let Some((step, detail)) = self.refusal(&prepared.info.manifest) {
            self.report(id, step, Outcome::detail(detail)).await;
            return None;
        }
        let total = prepared.info.length;
        let to_come = total.saturating_sub(prepared.partial_bytes(&dirs));
        if let Some(wait) = self.metered_wait(id, to_come).await {
            self.report_once(id, ActionState::Downloading, wait).await;
            return None;
        }
        self.keep_target(
            id,
            VerifiedTarget {
                sha256: prepared.info.sha256.clone(),
                length: total,
                manifest: prepared.info.manifest.clone(),
            },
        );
        let outcome = Outcome {
            detail: format!("downloading {total} bytes"),
            bytes_total: total,
            ..Outcome::default()
        };
        self.report(id, ActionState::Downloading, outcome).await;
        if self.cancelled(id) {
            return None;
        }
        let partial = prepared.partial_bytes(&dirs);
        let mut result = self.meanwhile(Some(id), prepared.download(&dirs)).await?;
        if partial > 0 && matches!(result, Err(FetchError::Verification { .. })) {
            // The kept partial file was bad (it has been discarded): start over once from byte 0.
            warn!(action = %id, partial, "Resumed download failed verification; downloading again from the start.");
            let again = async {
                fetch::prepare(&channel, &dirs, &target_name, rate)
                    .await?
                    .download(&dirs)
                    .await
            };
            result = self.meanwhile(Some(id), again).await?;
        }
        let fetched = match result {
            Ok(f) => f,
            Err(e) => return self.fetch_failed(id, e).await,
        };
        if let Some(p) = self.state.actions.get_mut(id) {
            p.failing_since = 0;
        }
        self.keep_target(
            id,
            VerifiedTarget {
                sha256: fetched.sha256.clone(),
                length: fetched.length,
                manifest: fetched.manifest.clone(),
            },
        );
        Some(
            if fetched.resumed_bytes > 0 && fetched.resumed_bytes < fetched.length {
                format!(
                    "downloaded and verified (resumed at byte {})",
                    fetched.resumed_bytes
                )
            } else {
                "downloaded and verified".to_owned()
            },
        )
    }

    /// Why a download of `bytes` must wait for an unmetered link now, if it must: the link towards the controller
    /// (or the proxy) is metered by the settings, the download is over the metered limit, and the rollout is not
    /// urgent.
    async fn metered_wait(&self, id: &str, bytes: u64) -> Option<String> {
        let s = &self.settings;
        let urgent = self.state.actions.get(id).is_some_and(|p| p.urgent);
        let no_metered_links = !s.metered && s.metered_interfaces.is_empty();
        if urgent || no_metered_links || bytes <= s.metered_max_download {
            return None;
        }
        let peer = match s.proxy.as_deref() {
            Some(proxy) => crate::config::proxy_addr(proxy).ok(),
            None => url::Url::parse(&self.config.controller)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))),
        };
        let addr = match peer {
            Some(peer) => tokio::net::lookup_host(peer)
                .await
                .ok()
                .and_then(|mut a| a.next()),
            None => None,
        };
        let interface = addr.and_then(crate::platform::interface_towards);
        if !s.is_metered(interface.as_deref()) {
            return None;
        }
        let link = match &interface {
            Some(name) if !s.metered => format!("the link through {name} is metered"),
            _ => "every link is set metered".to_owned(),
        };
        Some(format!(
            "waiting for an unmetered link: {link} and {bytes} bytes is over the {}-byte limit for metered links",
            s.metered_max_download
        ))
    }

    /// Remember what TUF verified about the action's target (saved with the next report).
    pub(super) fn keep_target(&mut self, id: &str, target: VerifiedTarget) {
        if let Some(p) = self.state.actions.get_mut(id) {
            p.target = Some(target);
        }
    }

    /// A network failure keeps the action open and retries silently (still reported, with when it began); any
    /// other cause fails this attempt with its reason, and the rollout's retry policy decides what comes next.
    async fn fetch_failed(&mut self, id: &str, e: FetchError) -> Option<String> {
        if e.cause() == Cause::Network {
            // Keep the action open: the controller re-sends it and the download resumes. Tell the controller too
            // (now, or with the next check-in that gets through), so the device does not sit silent in its wave.
            warn!(action = %id, error = %e, "Fetch interrupted; will resume.");
            let now = crate::checkin::now();
            let p = self.state.actions.get_mut(id)?;
            if p.failing_since == 0 {
                p.failing_since = now;
            }
            let detail = format!(
                "download failing since {}: {e}",
                crate::window::utc_text(p.failing_since)
            );
            self.report(id, ActionState::Downloading, Outcome::detail(detail))
                .await;
            return None;
        }
        let mut detail = format!("{} failure: {e}", e.cause().as_str());
        if let Some(note) = self.state.clock_note() {
            // Expired (or not yet valid) metadata is what a wrong clock looks like.
            detail = format!("{detail} ({note})");
        }
        warn!(action = %id, error = %e, cause = e.cause().as_str(), "Fetch failed.");
        self.report(id, ActionState::Failed, Outcome::detail(detail))
            .await;
        None
    }
}
