//! The agent service: enrollment, check-in, and streamed repository fetches.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rollcall_proto::v1::{self, agent_service_server::AgentService};
use rollcall_proto::{sha256_hex, Token};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::auth::{caller, internal};
use super::wake::WatchStream;
use super::{now, rfc3339, Shared};
use crate::blobs::is_sha256;
use crate::model::AgentRecord;
use crate::rollout::driver::{self, ReportOutcome};
use crate::store::agents_installed;
use crate::store::{CertRecord, EnrollOutcome, NewAgent, Role, TokenRefusal};

/// How soon an agent held back by a site's download cap comes back (plus up to the same again at random).
const CAP_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

const CHUNK: usize = 64 * 1024;

pub(crate) struct AgentApi {
    shared: Arc<Shared>,
}

impl AgentApi {
    pub fn new(shared: Arc<Shared>) -> AgentApi {
        AgentApi { shared }
    }

    /// The calling agent's record (its certificate is valid, so it should exist).
    fn enrolled(&self, agent_id: &str) -> Result<AgentRecord, Status> {
        self.shared
            .store
            .agent(agent_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("agent {agent_id} is not enrolled")))
    }
}

fn refusal_status(refusal: &TokenRefusal) -> Status {
    match refusal {
        TokenRefusal::Unknown => Status::unauthenticated(refusal.to_string()),
        _ => Status::permission_denied(refusal.to_string()),
    }
}

fn new_agent_id() -> String {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!("ag-{}", hex::encode(b))
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::FetchChunk, Status>> + Send>>;

/// Stream a blob from `start`, hashing all of it. A blob that no longer hashes to its name (disk corruption, or
/// someone writing to the blob folder) is reported and set aside once its bytes are sent: the agent refuses them
/// on its own, and later fetches are refused here.
async fn serve_blob(
    shared: Arc<Shared>,
    sha: String,
    mut file: tokio::fs::File,
    start: u64,
    total: u64,
    tx: tokio::sync::mpsc::Sender<Result<v1::FetchChunk, Status>>,
) {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(internal(e))).await;
                return;
            }
        };
        hasher.update(&buf[..n]);
        let end = offset + n as u64;
        if end > start {
            let from = start.saturating_sub(offset) as usize;
            let chunk = v1::FetchChunk {
                data: buf[from..n].to_vec(),
                offset: offset + from as u64,
                total_size: total,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        offset = end;
    }
    let actual = hex::encode(hasher.finalize());
    if actual != sha {
        let aside = match shared.blobs.quarantine(&sha) {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("could not be set aside: {e}"),
        };
        tracing::error!(blob = %sha, actual = %actual, set_aside = %aside, "A stored payload no longer matches its sha256 (disk corruption or tampering); it is set aside and must be pushed again.");
        shared.seclog.event(
            "payload corrupt",
            "",
            "",
            &sha,
            &format!("the stored bytes hash to {actual}"),
        );
    }
}

impl AgentApi {
    async fn enroll_checked(
        &self,
        req: &v1::EnrollRequest,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let s = &self.shared;
        let now = now();
        let secret = match Token::parse(&req.token) {
            Ok(t) => t.secret,
            Err(_) => req.token.trim().to_owned(),
        };
        if secret.is_empty() {
            return Err(Status::invalid_argument("enrollment token is empty"));
        }
        if req.hostname.trim().is_empty() || req.platform.trim().is_empty() {
            return Err(Status::invalid_argument(
                "enrollment needs the agent's hostname and platform",
            ));
        }
        let hash = Token::secret_hash(&secret);
        let token_site = match s.store.check_token(&hash, now).map_err(internal)? {
            Ok(token) => token.site,
            Err(refusal) => {
                info!(hostname = %super::untrusted(&req.hostname), reason = %refusal, "Enrollment refused.");
                return Err(refusal_status(&refusal));
            }
        };
        let hostname = req.hostname.trim();
        if hostname.len() > 253 || hostname.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "the hostname must be at most 253 characters, without control characters",
            ));
        }
        if let Some(inv) = &req.inventory {
            rollcall_proto::inventory::check(inv)
                .map_err(|e| Status::invalid_argument(format!("inventory refused: {e}")))?;
        }
        if let Some(ban) = s.store.ban(hostname).map_err(internal)? {
            warn!(hostname = %super::untrusted(hostname), banned_by = %ban.by, "Enrollment of a banned host refused.");
            return Err(Status::permission_denied(format!(
                "host {} is banned from enrolling (agent {}, by {} at {}); an admin can lift it with `rollcall agents unban {}`",
                ban.hostname, ban.agent_id, ban.by, rfc3339(ban.at), ban.hostname
            )));
        }
        // The same host enrolled again (reinstalled, or offline past its certificate) takes over its old record
        // instead of leaving a ghost; the old record's certificates are revoked with it.
        let replaced = s.store.agent_by_hostname(hostname).map_err(internal)?;
        if let Some(old) = replaced.as_ref().filter(|old| old.site != token_site) {
            // A token for one site must not knock a device of another site off the fleet by naming it.
            return Err(Status::permission_denied(format!(
                "host {} is enrolled at site {} (agent {}); enroll it again with a token for {}, or have an admin \
                 retire the old record first (`rollcall agents retire {}`)",
                old.hostname, old.site, old.id, old.site, old.id
            )));
        }
        let revoke = match &replaced {
            Some(old) => s
                .store
                .certs_of(&old.id)
                .map_err(internal)?
                .into_iter()
                .filter(|(_, c)| !c.revoked)
                .map(|(fp, _)| fp)
                .collect(),
            None => Vec::new(),
        };
        let agent_id = replaced
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_else(new_agent_id);
        let issued =
            s.ca.sign_csr(&req.csr_der, &agent_id, s.config.agent_cert_validity)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let fingerprint = sha256_hex(&issued.der);
        let (outcome, _) = s
            .store
            .enroll(&hash, now, |token| NewAgent {
                agent: AgentRecord {
                    agent_version: req.agent_version.clone(),
                    ..AgentRecord::new(&agent_id, hostname, &token.site, req.platform.trim(), now)
                },
                revoke: revoke.clone(),
                cert_fingerprint: fingerprint.clone(),
                cert: CertRecord {
                    subject: agent_id.clone(),
                    role: Role::Agent,
                    issued_at: now,
                    not_after: issued.not_after,
                    revoked: false,
                    replaces: None,
                    renewed_by: None,
                },
            })
            .map_err(internal)?;
        let token = match outcome {
            EnrollOutcome::Enrolled(token) => token,
            EnrollOutcome::Refused(refusal) => return Err(refusal_status(&refusal)),
        };
        if let Some(inv) = &req.inventory {
            // The agent hashes the same message; its first check-in sends changes against it.
            let hash = rollcall_proto::inventory::hash(inv);
            let set = s
                .store
                .put_inventory(&agent_id, inv, &hash, now)
                .map_err(internal)?;
            s.store
                .update_agent(&agent_id, |current| {
                    let mut agent = current?;
                    agent.absorb(inv, &hash, &set);
                    Some(agent)
                })
                .map_err(internal)?;
        }
        let root = s
            .store
            .tuf_file(&format!("{}.root.json", token.root_version))
            .map_err(internal)?
            .ok_or_else(|| {
                Status::failed_precondition("the root this token pins is no longer stored")
            })?;
        s.store.flush().await.map_err(internal)?;
        if !revoke.is_empty() {
            s.connections.close_cert(&revoke);
        }
        match &replaced {
            Some(old) => {
                warn!(agent = %agent_id, site = %token.site, hostname = %super::untrusted(hostname), old_site = %old.site, revoked = revoke.len(), "Host enrolled again; its old record is replaced and its old certificates revoked.")
            }
            None => {
                info!(agent = %agent_id, site = %token.site, hostname = %super::untrusted(hostname), "Agent enrolled.")
            }
        }
        Ok(Response::new(v1::EnrollResponse {
            agent_id,
            site: token.site,
            certificate_der: issued.der.to_vec(),
            ca_certificate_der: s.ca.cert_der().to_vec(),
            trusted_root: root,
            certificate_not_after_unix: issued.not_after,
        }))
    }
}

/// Refuse drift reports over the limits (before anything is stored).
fn check_drift(events: &[v1::DriftEvent]) -> Result<(), Status> {
    const MAX_EVENTS: usize = 1_000;
    if events.len() > MAX_EVENTS {
        return Err(Status::invalid_argument(format!(
            "{} drift events in one check-in; at most {MAX_EVENTS} are accepted",
            events.len()
        )));
    }
    let too_long = events.iter().any(|e| {
        [&e.profile, &e.item, &e.what, &e.error]
            .iter()
            .any(|s| s.len() > rollcall_proto::inventory::limits::TEXT)
    });
    if too_long {
        return Err(Status::invalid_argument(format!(
            "a drift event field is over {} characters",
            rollcall_proto::inventory::limits::TEXT
        )));
    }
    Ok(())
}

/// What a check-in says about the inventory.
enum Incoming {
    /// Nothing new (only the hash).
    Unchanged,
    /// A new inventory, whole or rebuilt from a delta, checked against the limits.
    Accept(Box<v1::Inventory>),
    /// A delta that does not apply to what is stored: the agent is asked for the whole inventory.
    Resend,
}

impl AgentApi {
    /// The inventory a check-in brings. A report over the limits is refused (`INVALID_ARGUMENT`, naming the
    /// part) before anything is stored, so the previous inventory stays.
    fn incoming_inventory(
        &self,
        agent_id: &str,
        req: &v1::CheckInRequest,
    ) -> Result<Incoming, Status> {
        let refused = |e: rollcall_proto::inventory::InventoryError| {
            Status::invalid_argument(format!("inventory refused, the previous one is kept: {e}"))
        };
        if let Some(inv) = &req.inventory {
            rollcall_proto::inventory::check(inv).map_err(refused)?;
            return Ok(Incoming::Accept(Box::new(inv.clone())));
        }
        let Some(delta) = &req.inventory_delta else {
            return Ok(Incoming::Unchanged);
        };
        if delta.software_set.len() + delta.software_removed.len()
            > rollcall_proto::inventory::limits::SOFTWARE
        {
            return Err(refused(
                rollcall_proto::inventory::InventoryError::TooMany {
                    part: "software changes",
                    count: delta.software_set.len() + delta.software_removed.len(),
                    max: rollcall_proto::inventory::limits::SOFTWARE,
                },
            ));
        }
        let Some((base, base_hash)) = self.shared.store.inventory(agent_id).map_err(internal)?
        else {
            return Ok(Incoming::Resend);
        };
        let Ok(inv) = rollcall_proto::inventory::apply(&base, &base_hash, delta) else {
            return Ok(Incoming::Resend);
        };
        rollcall_proto::inventory::check(&inv).map_err(refused)?;
        // The delta must rebuild exactly what the agent has; otherwise ask for the whole.
        if rollcall_proto::inventory::hash(&inv) != req.inventory_hash {
            return Ok(Incoming::Resend);
        }
        Ok(Incoming::Accept(Box::new(inv)))
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        req: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let from = req
            .extensions()
            .get::<super::conn::Peer>()
            .map(|p| p.0.addr.to_string())
            .unwrap_or_default();
        let req = req.into_inner();
        let result = self.enroll_checked(&req).await;
        if let Err(status) = &result {
            self.shared.seclog.event(
                "enrollment refused",
                req.hostname.trim(),
                &from,
                "",
                status.message(),
            );
        }
        result
    }
    async fn check_in(
        &self,
        req: Request<v1::CheckInRequest>,
    ) -> Result<Response<v1::CheckInResponse>, Status> {
        let s = &self.shared;
        let now = now();
        let caller = caller(&req)?;
        let req = req.into_inner();
        let incoming = self.incoming_inventory(&caller.subject, &req)?;
        check_drift(&req.drift_events)?;
        let accepted = match &incoming {
            Incoming::Accept(inv) => Some((
                inv,
                s.store
                    .put_inventory(&caller.subject, inv, &req.inventory_hash, now)
                    .map_err(internal)?,
            )),
            _ => None,
        };
        // A compare-and-swap, so a check-in in flight never undoes a revoke or brings a retired agent back.
        let updated = s
            .store
            .update_agent(&caller.subject, |current| {
                let mut agent = current.filter(|a| a.revoked_at == 0)?;
                agent.last_checkin = now;
                agent.agent_version = req.agent_version.clone();
                agent.installed = agents_installed(&req.installed);
                agent.enforces_windows = req.enforces_install_windows;
                if let Some((inv, set)) = &accepted {
                    agent.absorb(inv, &req.inventory_hash, set);
                }
                Some(agent)
            })
            .map_err(internal)?;
        let agent = updated.ok_or_else(|| {
            Status::unauthenticated(format!("agent {} was revoked or retired", caller.subject))
        })?;
        let send_inventory = match incoming {
            Incoming::Accept(_) => false,
            Incoming::Resend => true,
            Incoming::Unchanged => agent.inventory_hash != req.inventory_hash,
        };

        let mut acknowledged = Vec::with_capacity(req.reports.len());
        let mut cancelled = Vec::new();
        let mut finished = false;
        for report in &req.reports {
            if report.state == v1::ActionState::Failed as i32
                && report.detail.starts_with("package failure")
            {
                // The agent refused what it was sent: a tampered or mis-signed package, worth a look.
                s.seclog.event(
                    "verification failed",
                    &agent.id,
                    &caller.from,
                    &report.action_id,
                    &report.detail,
                );
            }
            match driver::apply_report(&s.store, &agent.id, report, now).map_err(internal)? {
                ReportOutcome::Recorded { terminal } => finished |= terminal,
                ReportOutcome::Ignored => {}
                ReportOutcome::Unknown => cancelled.push(report.action_id.clone()),
            }
            acknowledged.push(report.report_id.clone());
        }
        let work = driver::assignments_for(&s.store, &agent, &s.env(now)).map_err(internal)?;
        for id in
            driver::cancelled_for(&s.store, &agent.id, &req.open_actions, now).map_err(internal)?
        {
            if !cancelled.contains(&id) {
                cancelled.push(id);
            }
        }
        for e in &req.drift_events {
            // A managed setting changed behind the agent's back: worth a look by security too.
            s.seclog.event(
                "configuration drift",
                &agent.id,
                &caller.from,
                &e.item,
                &format!(
                    "profile {}: {}{}",
                    e.profile,
                    e.what,
                    if e.repaired {
                        ", repaired"
                    } else {
                        ", NOT repaired"
                    }
                ),
            );
        }
        s.store
            .add_drift(&agent.id, &req.drift_events)
            .map_err(internal)?;
        // Reports are acknowledged and offers are sent only once they are durable.
        if !req.reports.is_empty() || !req.drift_events.is_empty() || work.wrote {
            s.store.flush().await.map_err(internal)?;
        }
        if finished {
            s.engine_wake.notify_one();
        }
        let (interval, jitter) = if work.held {
            (s.config.checkin_interval.min(CAP_RETRY), CAP_RETRY)
        } else {
            (s.config.checkin_interval, s.config.checkin_jitter)
        };
        Ok(Response::new(v1::CheckInResponse {
            checkin_interval_seconds: interval.as_secs().max(1) as u32,
            jitter_seconds: jitter.as_secs() as u32,
            assignments: work.assignments,
            send_inventory,
            acknowledged_reports: acknowledged,
            cancelled_actions: cancelled,
            renew_certificate: caller.renewal_due,
            now_unix: now,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<v1::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let s = &self.shared;
        let caller = caller(&req)?;
        let agent = self.enrolled(&caller.subject)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let serial = s.watchers.add(&agent.id, &agent.site, tx);
        Ok(Response::new(WatchStream {
            inner: tokio_stream::wrappers::ReceiverStream::new(rx),
            shared: self.shared.clone(),
            agent_id: agent.id,
            serial,
        }))
    }

    async fn renew(
        &self,
        req: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::RenewResponse>, Status> {
        let s = &self.shared;
        let now = now();
        let caller = caller(&req)?;
        let cert = s
            .store
            .cert(&caller.fingerprint)
            .map_err(internal)?
            .ok_or_else(|| internal("the caller's certificate vanished"))?;
        let refuse = |message: String| {
            warn!(agent = %caller.subject, reason = %message, "Renewal refused.");
            s.seclog.event(
                "renewal refused",
                &caller.subject,
                &caller.from,
                "",
                &message,
            );
            Err(Status::failed_precondition(message))
        };
        if let Some(by) = &cert.renewed_by {
            return refuse(format!(
                "this certificate of {} was already renewed (new certificate sha256 {}); a certificate renews once",
                caller.subject,
                &by[..by.len().min(16)]
            ));
        }
        if !caller.renewal_due {
            let due = cert.issued_at + (cert.not_after - cert.issued_at) / 2;
            return refuse(format!(
                "renewal of {}'s certificate is not due until {} (half its life, by the controller's clock)",
                caller.subject,
                rfc3339(due)
            ));
        }
        let issued =
            s.ca.sign_csr(
                &req.get_ref().csr_der,
                &caller.subject,
                s.config.agent_cert_validity,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let new = sha256_hex(&issued.der);
        let renewed = s
            .store
            .renew_cert(
                &caller.fingerprint,
                &new,
                &CertRecord {
                    subject: caller.subject.clone(),
                    role: Role::Agent,
                    issued_at: now,
                    not_after: issued.not_after,
                    revoked: false,
                    replaces: Some(caller.fingerprint.clone()),
                    renewed_by: None,
                },
            )
            .map_err(internal)?;
        if !renewed {
            return Err(Status::failed_precondition(
                "this certificate was renewed or revoked meanwhile; a certificate renews once",
            ));
        }
        s.store.flush().await.map_err(internal)?;
        info!(agent = %caller.subject, not_after = issued.not_after, "Agent certificate renewed.");
        Ok(Response::new(v1::RenewResponse {
            certificate_der: issued.der.to_vec(),
            certificate_not_after_unix: issued.not_after,
        }))
    }

    type FetchStream = FetchStream;

    async fn fetch(&self, req: Request<v1::FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let s = &self.shared;
        let req = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::FetchChunk, Status>>(4);
        match v1::FetchKind::try_from(req.kind).unwrap_or(v1::FetchKind::Unspecified) {
            v1::FetchKind::Metadata => {
                if req.path.contains('/') || req.path.contains("..") || !req.path.ends_with(".json")
                {
                    return Err(Status::invalid_argument(format!(
                        "{:?} is not a repository metadata file",
                        req.path
                    )));
                }
                let bytes = s
                    .store
                    .tuf_file(&req.path)
                    .map_err(internal)?
                    .ok_or_else(|| {
                        Status::not_found(format!("repository file {} does not exist", req.path))
                    })?;
                let total = bytes.len() as u64;
                let start = req.offset.min(total) as usize;
                tokio::spawn(async move {
                    let mut offset = start;
                    while offset < bytes.len() {
                        let end = (offset + CHUNK).min(bytes.len());
                        let chunk = v1::FetchChunk {
                            data: bytes[offset..end].to_vec(),
                            offset: offset as u64,
                            total_size: total,
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                        offset = end;
                    }
                });
            }
            v1::FetchKind::Target => {
                let sha = req.path.split_once('.').map(|(sha, _)| sha).unwrap_or("");
                if !is_sha256(sha) {
                    return Err(Status::invalid_argument(format!(
                        "{:?} is not a target file name (<sha256>.<target>)",
                        req.path
                    )));
                }
                if s.blobs.is_quarantined(sha) {
                    return Err(Status::data_loss(format!(
                        "the payload {sha} is corrupt on the controller and was set aside; push the package again (`rollcall pkg push`)"
                    )));
                }
                // Read from the start: the bytes before the offset are hashed, not sent, so every serve checks
                // the whole blob against its name.
                let (file, total) = s.blobs.read_from(sha, 0).await.map_err(|_| {
                    Status::not_found(format!("target {} does not exist", req.path))
                })?;
                let shared = self.shared.clone();
                let (sha, start) = (sha.to_owned(), req.offset.min(total));
                tokio::spawn(serve_blob(shared, sha, file, start, total, tx));
            }
            v1::FetchKind::Unspecified => {
                return Err(Status::invalid_argument("fetch kind is missing"))
            }
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
