//! The admin service: what `rollcall` (and later the dashboard) calls. Every change is written to the audit log.

use std::sync::Arc;

use futures::StreamExt;
use rollcall_proto::v1::{self, admin_service_server::AdminService};
use rollcall_proto::{sha256_hex, Token};
use tonic::{Request, Response, Status, Streaming};

use super::admin_people::People;
use super::admin_rollouts::Rollouts;
use super::auth::{caller, internal};
use super::{now, rfc3339, Shared};
use crate::model::agent::AgentFacts;
use crate::model::filter::{matches_all, Facts, Filter};
use crate::model::{ActionRecord, AgentRecord, SiteRecord};
use crate::repo::PublishError;
use crate::rollout::compliance;
use crate::rollout::engine::Env;
use crate::rollout::report::device_status;
use crate::store::{token_id, Ending, Table, TokenRecord};
use rollcall_packaging::version::Scheme;

/// Largest payload accepted.
const MAX_PAYLOAD: u64 = 8 * 1024 * 1024 * 1024;
const MAX_TOKEN_TTL: u64 = 90 * 86400;

pub(crate) struct AdminApi {
    shared: Arc<Shared>,
    rollouts: Rollouts,
    people: People,
}

impl AdminApi {
    pub fn new(shared: Arc<Shared>) -> AdminApi {
        AdminApi {
            rollouts: Rollouts {
                shared: shared.clone(),
            },
            people: People {
                shared: shared.clone(),
            },
            shared,
        }
    }

    /// What counts as current for `package`: a rollcall package compares with the versions rollcall installed
    /// (current: `version`, else the newest published); other software by its database's ordering (current:
    /// `version`, else the newest installed anywhere in `agents`).
    fn compliance_target(
        &self,
        package: &str,
        version: &str,
        agents: &[AgentRecord],
    ) -> Result<(compliance::Target, &'static str), Status> {
        let store = &self.shared.store;
        let published: Vec<String> = store
            .packages()
            .map_err(internal)?
            .into_iter()
            .filter(|p| p.name == package)
            .map(|p| p.version)
            .collect();
        let newest = |versions: Vec<(String, Scheme)>| {
            versions
                .into_iter()
                .max_by(|(a, s), (b, _)| rollcall_packaging::version::compare(*s, a, b))
        };
        if !published.is_empty() {
            let (version, source) = match version {
                "" => (
                    newest(
                        published
                            .into_iter()
                            .map(|v| (v, Scheme::Generic))
                            .collect(),
                    )
                    .map(|(v, _)| v)
                    .unwrap_or_default(),
                    "newest published",
                ),
                v => (v.to_owned(), "given"),
            };
            return Ok((
                compliance::Target {
                    package: package.to_owned(),
                    version,
                    scheme: Scheme::Generic,
                    compared_by: "rollcall",
                },
                source,
            ));
        }
        let mut seen = Vec::new();
        for agent in agents {
            let facts = AgentFacts::new(agent, store);
            seen.extend(facts.software(package));
        }
        let Some((newest_seen, scheme)) = newest(seen) else {
            return Err(Status::not_found(format!(
                "no rollcall package and no installed software is named {}{}; `rollcall pkg list` shows the \
                 packages, `rollcall agents show HOST --json --software` what a device has",
                super::untrusted(package),
                if agents.is_empty() { " (no agents in scope)" } else { "" }
            )));
        };
        let compared_by = match scheme {
            Scheme::Debian => "dpkg",
            Scheme::Rpm => "rpm",
            Scheme::Generic => "version parts",
        };
        let (version, source) = match version {
            "" => (newest_seen, "newest installed"),
            v => (v.to_owned(), "given"),
        };
        Ok((
            compliance::Target {
                package: package.to_owned(),
                version,
                scheme,
                compared_by,
            },
            source,
        ))
    }

    /// The agent `key` names: an agent id (in the fleet or retired), else a hostname (any case) that names exactly
    /// one agent. Several agents with the hostname are refused with the list, so a technician picks by id.
    fn find_agent(&self, key: &str, env: &Env) -> Result<AgentRecord, Status> {
        let store = &self.shared.store;
        let key = key.trim();
        if let Some(agent) = store.agent(key).map_err(internal)? {
            return Ok(agent);
        }
        if let Some(agent) = store.retired_agent(key).map_err(internal)? {
            return Ok(agent);
        }
        let wanted = key.to_lowercase();
        let mut found: Vec<AgentRecord> = store
            .agents()
            .map_err(internal)?
            .into_iter()
            .chain(store.retired_agents().map_err(internal)?)
            .filter(|a| a.hostname.to_lowercase() == wanted)
            .collect();
        match found.len() {
            0 => Err(Status::not_found(format!(
                "no agent has the id or hostname {}; `rollcall agents list --where hostname~PART` searches",
                super::untrusted(key)
            ))),
            1 => Ok(found.remove(0)),
            n => {
                found.sort_by_key(|a| std::cmp::Reverse(a.last_seen()));
                let lines: Vec<String> = found
                    .iter()
                    .map(|a| {
                        format!(
                            "  {}  site {}  {}  last seen {}",
                            a.id,
                            a.site,
                            a.presence(env.offline_after, env.cutoff, env.now),
                            rfc3339(a.last_seen())
                        )
                    })
                    .collect();
                Err(Status::invalid_argument(format!(
                    "hostname {key} names {n} agents; give one of these ids:\n{}",
                    lines.join("\n")
                )))
            }
        }
    }
}

fn valid_site(site: &str) -> bool {
    !site.is_empty()
        && site.len() <= 64
        && site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn summary(agent: &AgentRecord, env: &Env) -> v1::AgentSummary {
    v1::AgentSummary {
        presence: agent
            .presence(env.offline_after, env.cutoff, env.now)
            .to_owned(),
        agent_id: agent.id.clone(),
        hostname: agent.hostname.clone(),
        site: agent.site.clone(),
        platform: agent.platform.clone(),
        os: agent.os.clone(),
        enrolled_at_unix: agent.enrolled_at,
        last_checkin_unix: agent.last_checkin,
        agent_version: agent.agent_version.clone(),
        installed: agent
            .installed
            .iter()
            .map(|p| v1::InstalledPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                release_counter: p.release_counter,
                installed_at_unix: p.installed_at,
            })
            .collect(),
        revoked_at_unix: agent.revoked_at,
        retired_at_unix: agent.retired_at,
    }
}

fn publish_status(e: PublishError) -> Status {
    match e {
        PublishError::BadRoot(_) | PublishError::BadTargets(_) => {
            Status::invalid_argument(e.to_string())
        }
        PublishError::NoRoot
        | PublishError::RootChanged { .. }
        | PublishError::NotNewer { .. }
        | PublishError::MissingPayload { .. }
        | PublishError::CounterReused { .. }
        | PublishError::Conflict { .. } => Status::failed_precondition(e.to_string()),
        PublishError::Sign(_) | PublishError::Store(_) => internal(e),
    }
}

fn token_info(hash: &str, t: &TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: token_id(hash).to_owned(),
        site: t.site.clone(),
        uses_left: t.uses_left,
        expires_at_unix: t.expires_at,
        created_at_unix: t.created_at,
        created_by: t.created_by.clone(),
        revoked_at_unix: t.revoked_at,
    }
}

fn ending(how: i32) -> Result<(Ending, &'static str), Status> {
    match v1::AgentEnding::try_from(how).unwrap_or(v1::AgentEnding::Unspecified) {
        v1::AgentEnding::Revoke => Ok((Ending::Revoke, "agent revoke")),
        v1::AgentEnding::Ban => Ok((Ending::Ban, "agent ban")),
        v1::AgentEnding::Retire => Ok((Ending::Retire, "agent retire")),
        v1::AgentEnding::Unspecified => Err(Status::invalid_argument(
            "say how to end the agent's access: revoke, ban or retire",
        )),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn end_agent(
        &self,
        req: Request<v1::EndAgentRequest>,
    ) -> Result<Response<v1::EndAgentResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let (how, action) = ending(req.how)?;
        let s = &self.shared;
        let id = req.agent_id.trim();
        let Some(agent) = s.store.agent(id).map_err(internal)? else {
            return Err(match s.store.retired_agent(id).map_err(internal)? {
                Some(_) => Status::failed_precondition(format!("agent {id} is already retired")),
                None => Status::not_found(format!("no agent {}", super::untrusted(id))),
            });
        };
        let entry = super::audit_entry(
            &caller,
            action,
            format!("{} ({}, site {})", agent.id, agent.hostname, agent.site),
        );
        let (agent, revoked) = s
            .store
            .end_agent(&agent.id, how, &entry, now())
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no agent {id}")))?;
        s.store.flush().await.map_err(internal)?;
        // Its calls are refused from here on; the connections it holds (its wake-up stream) end now.
        let closed = s.connections.close_cert(&revoked);
        s.engine_now.notify_one();
        Ok(Response::new(v1::EndAgentResponse {
            agent: Some(summary(&agent, &s.env(now()))),
            certificates_revoked: revoked.len() as u32,
            connections_closed: closed as u32,
        }))
    }

    async fn add_site(
        &self,
        req: Request<v1::AddSiteRequest>,
    ) -> Result<Response<v1::SiteSummary>, Status> {
        let caller = caller(&req)?;
        let name = req.into_inner().name;
        if !valid_site(&name) {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a valid site name (1-64 of letters, digits, '-', '_', '.')",
                super::untrusted(&name)
            )));
        }
        let s = &self.shared;
        if s.store.site(&name).map_err(internal)?.is_some() {
            return Err(Status::already_exists(format!("site {name} exists")));
        }
        let now = now();
        let site = SiteRecord::new(&name, now);
        let entry = super::audit_entry(&caller, "site add", name.clone());
        s.store
            .audited(&entry, |tx| tx.put(Table::Sites, &name, &site))
            .map_err(internal)?;
        s.store.flush().await.map_err(internal)?;
        let agents = s.store.agents().map_err(internal)?;
        Ok(Response::new(site_summary(s, &site, &agents, now)?))
    }

    async fn list_tokens(
        &self,
        _req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let mut tokens: Vec<v1::TokenInfo> = self
            .shared
            .store
            .tokens()
            .map_err(internal)?
            .iter()
            .map(|(hash, t)| token_info(hash, t))
            .collect();
        tokens.sort_by_key(|t| std::cmp::Reverse(t.created_at_unix));
        Ok(Response::new(v1::ListTokensResponse {
            tokens,
            now_unix: now(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::TokenInfo>, Status> {
        let caller = caller(&req)?;
        let id = req.into_inner().id.trim().to_lowercase();
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(
                "a token id is at least 8 hex digits, as `rollcall token list` shows it",
            ));
        }
        let s = &self.shared;
        let matches: Vec<(String, TokenRecord)> = s
            .store
            .tokens()
            .map_err(internal)?
            .into_iter()
            .filter(|(hash, _)| hash.starts_with(&id))
            .collect();
        if matches.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "{} tokens start with {id}; give more digits",
                matches.len()
            )));
        }
        let Some((hash, mut token)) = matches.into_iter().next() else {
            return Err(Status::not_found(format!("no token {id}")));
        };
        if token.revoked_at > 0 {
            return Err(Status::failed_precondition(format!(
                "token {} is already revoked",
                token_id(&hash)
            )));
        }
        token.revoked_at = now();
        let entry = super::audit_entry(
            &caller,
            "token revoke",
            format!("token {} site {}", token_id(&hash), token.site),
        );
        s.store
            .audited(&entry, |tx| tx.put(Table::Tokens, &hash, &token))
            .map_err(internal)?;
        s.store.flush().await.map_err(internal)?;
        Ok(Response::new(token_info(&hash, &token)))
    }

    async fn unban_host(
        &self,
        req: Request<v1::UnbanHostRequest>,
    ) -> Result<Response<v1::UnbanHostResponse>, Status> {
        let caller = caller(&req)?;
        let hostname = req.get_ref().hostname.trim().to_owned();
        let s = &self.shared;
        if s.store.ban(&hostname).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!(
                "host {} is not banned",
                super::untrusted(&hostname)
            )));
        }
        let entry = super::audit_entry(&caller, "host unban", hostname.clone());
        let was_banned = s.store.unban(&hostname, &entry).map_err(internal)?;
        s.store.flush().await.map_err(internal)?;
        Ok(Response::new(v1::UnbanHostResponse { was_banned }))
    }

    async fn list_agents(
        &self,
        req: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        let req = req.into_inner();
        let filters = req
            .filters
            .iter()
            .map(|f| Filter::parse(f).map_err(|e| Status::invalid_argument(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let store = &self.shared.store;
        if !req.site.is_empty() && store.site(&req.site).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!(
                "no site {}; `rollcall sites list` shows them",
                req.site
            )));
        }
        let env = self.shared.env(now());
        let records = if req.retired {
            store.retired_agents()
        } else {
            store.agents()
        };
        let mut agents: Vec<v1::AgentSummary> = records
            .map_err(internal)?
            .iter()
            .filter(|a| req.site.is_empty() || a.site == req.site)
            .filter(|a| env.now - a.last_seen() >= req.silent_for_seconds)
            .filter(|a| matches_all(&filters, &AgentFacts::new(a, store)))
            .map(|a| summary(a, &env))
            .collect();
        agents.sort_by(|a, b| (&a.site, &a.hostname).cmp(&(&b.site, &b.hostname)));
        Ok(Response::new(v1::ListAgentsResponse {
            agents,
            now_unix: env.now,
        }))
    }

    async fn get_agent(
        &self,
        req: Request<v1::GetAgentRequest>,
    ) -> Result<Response<v1::AgentDetail>, Status> {
        let store = &self.shared.store;
        let env = self.shared.env(now());
        let agent = self.find_agent(&req.get_ref().agent_id, &env)?;
        let id = &agent.id;
        let inventory = store.inventory(id).map_err(internal)?.map(|(inv, _)| inv);
        let mut actions = Vec::new();
        for rollout in store.rollouts().map_err(internal)? {
            if let Some(a) = store
                .action(&ActionRecord::id_for(&rollout.id, id))
                .map_err(internal)?
            {
                let standing =
                    crate::rollout::engine::Standing::in_rollout(&rollout, &agent, Some(&a), &env);
                actions.push(device_status(
                    &rollout,
                    &agent,
                    Some(&a),
                    a.wave,
                    standing,
                    &env,
                ));
            }
        }
        Ok(Response::new(v1::AgentDetail {
            summary: Some(summary(&agent, &env)),
            drift_events: store.drift(&agent.id).map_err(internal)?,
            inventory,
            actions,
        }))
    }

    async fn list_sites(
        &self,
        _req: Request<v1::ListSitesRequest>,
    ) -> Result<Response<v1::ListSitesResponse>, Status> {
        let store = &self.shared.store;
        let agents = store.agents().map_err(internal)?;
        let now = now();
        let sites = store
            .sites()
            .map_err(internal)?
            .iter()
            .map(|site| site_summary(&self.shared, site, &agents, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(v1::ListSitesResponse { sites }))
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let store = &self.shared.store;
        if !valid_site(&req.site) {
            return Err(Status::invalid_argument(format!(
                "site {:?} is not a valid name (1-64 of letters, digits, '-', '_', '.')",
                req.site
            )));
        }
        if req.uses == 0 {
            return Err(Status::invalid_argument("a token needs at least 1 use"));
        }
        if req.ttl_seconds == 0 || req.ttl_seconds > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(
                "token lifetime must be between 1 second and 90 days",
            ));
        }
        if store.site(&req.site).map_err(internal)?.is_none() {
            let known: Vec<String> = store
                .sites()
                .map_err(internal)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            return Err(Status::not_found(format!(
                "no site {}; known sites: {} (add one with `rollcall sites add NAME`)",
                req.site,
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        let tuf = store.tuf_state().map_err(internal)?;
        if tuf.root_version == 0 {
            return Err(Status::failed_precondition(
                "no TUF root is published yet, so a token cannot pin one: push root.json first (`rollcall pkg push`)",
            ));
        }
        let root = store
            .tuf_file(&format!("{}.root.json", tuf.root_version))
            .map_err(internal)?
            .ok_or_else(|| internal("published root is missing"))?;
        let token = Token::generate(&self.shared.ca.fingerprint(), &sha256_hex(&root));
        let now = now();
        let record = TokenRecord {
            site: req.site.clone(),
            uses_left: req.uses,
            expires_at: now + req.ttl_seconds as i64,
            created_at: now,
            root_version: tuf.root_version,
            created_by: caller.subject.clone(),
            revoked_at: 0,
        };
        let hash = Token::secret_hash(&token.secret);
        let id = token_id(&hash).to_owned();
        let entry = super::audit_entry(
            &caller,
            "token create",
            format!(
                "token {id} site {} uses {} ttl {}s",
                req.site, req.uses, req.ttl_seconds
            ),
        );
        store
            .audited(&entry, |tx| tx.put(Table::Tokens, &hash, &record))
            .map_err(internal)?;
        store.flush().await.map_err(internal)?;
        Ok(Response::new(v1::CreateTokenResponse {
            token: token.to_string(),
            site: req.site,
            uses: req.uses,
            expires_at_unix: record.expires_at,
            id,
        }))
    }

    async fn get_repository(
        &self,
        _req: Request<v1::GetRepositoryRequest>,
    ) -> Result<Response<v1::RepositoryInfo>, Status> {
        let state = self.shared.store.tuf_state().map_err(internal)?;
        Ok(Response::new(v1::RepositoryInfo {
            online_keys_json: self.shared.repo.online_keys().to_json().map_err(internal)?,
            root_version: state.root_version,
            targets_version: state.targets_version,
            targets_sha256: self
                .shared
                .store
                .tuf_file(&format!("{}.targets.json", state.targets_version))
                .map_err(internal)?
                .map(|bytes| sha256_hex(&bytes))
                .unwrap_or_default(),
        }))
    }

    async fn push_payload(
        &self,
        req: Request<Streaming<v1::PayloadChunk>>,
    ) -> Result<Response<v1::PushPayloadResponse>, Status> {
        let caller = caller(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("payload upload is empty"))??;
        let (sha256, length) = (first.sha256.clone(), first.length);
        if length > MAX_PAYLOAD {
            return Err(Status::invalid_argument(format!(
                "payload of {length} bytes is over the {MAX_PAYLOAD}-byte limit"
            )));
        }
        let blobs = &self.shared.blobs;
        if blobs.contains(&sha256, length) {
            return Ok(Response::new(v1::PushPayloadResponse {
                sha256,
                already_present: true,
            }));
        }
        let mut writer = blobs
            .writer(&sha256, length)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            if let Err(e) = writer.write(&c.data).await {
                writer.discard().await;
                return Err(Status::invalid_argument(e.to_string()));
            }
            chunk = match stream.next().await {
                None => None,
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    writer.discard().await;
                    return Err(e);
                }
            };
        }
        writer
            .finish()
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.shared.audit(
            &caller,
            "payload push",
            format!("{sha256} ({length} bytes)"),
        )?;
        Ok(Response::new(v1::PushPayloadResponse {
            sha256,
            already_present: false,
        }))
    }

    async fn push_metadata(
        &self,
        req: Request<v1::PushMetadataRequest>,
    ) -> Result<Response<v1::PushMetadataResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let root = (!req.root_json.is_empty()).then_some(req.root_json.as_slice());
        let published = self
            .shared
            .repo
            .publish(
                root,
                &req.newer_roots,
                &req.targets_json,
                chrono::Utc::now(),
                super::audit_entry(&caller, "metadata push", String::new()),
            )
            .await
            .map_err(publish_status)?;
        Ok(Response::new(v1::PushMetadataResponse {
            targets_version: published.state.targets_version,
            snapshot_version: published.state.snapshot_version,
            timestamp_version: published.state.timestamp_version,
            new_packages: published.new_packages.iter().map(package_info).collect(),
        }))
    }

    async fn list_packages(
        &self,
        _req: Request<v1::ListPackagesRequest>,
    ) -> Result<Response<v1::ListPackagesResponse>, Status> {
        let packages = self.shared.store.packages().map_err(internal)?;
        Ok(Response::new(v1::ListPackagesResponse {
            packages: packages.iter().map(package_info).collect(),
        }))
    }

    async fn compliance(
        &self,
        req: Request<v1::ComplianceRequest>,
    ) -> Result<Response<v1::ComplianceReport>, Status> {
        let req = req.into_inner();
        let package = req.package.trim();
        if package.is_empty() || package.len() > 256 {
            return Err(Status::invalid_argument(
                "give a package name, e.g. `rollcall compliance openssl@3.0.13`",
            ));
        }
        let store = &self.shared.store;
        if !req.site.is_empty() && store.site(&req.site).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!(
                "no site {}; `rollcall sites list` shows them",
                super::untrusted(&req.site)
            )));
        }
        let env = self.shared.env(now());
        let agents: Vec<AgentRecord> = store
            .agents()
            .map_err(internal)?
            .into_iter()
            .filter(|a| req.site.is_empty() || a.site == req.site)
            .collect();
        let (target, version_source) =
            self.compliance_target(package, req.version.trim(), &agents)?;
        let rollouts: Vec<_> = store
            .rollouts()
            .map_err(internal)?
            .into_iter()
            .filter(|r| r.package == target.package)
            .collect();
        let mut package_rollouts = Vec::with_capacity(rollouts.len());
        for r in &rollouts {
            let actions = store.actions_by_agent(&r.id).map_err(internal)?;
            package_rollouts.push(compliance::PackageRollout {
                rollout: r,
                actions,
            });
        }
        let devices = compliance::assess(&target, &agents, &package_rollouts, store, &env);
        let sites = compliance::per_site(&devices);
        let devices = if req.devices {
            devices
                .into_iter()
                .filter(|d| d.state != v1::Compliance::Current as i32)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(v1::ComplianceReport {
            package: target.package,
            version: target.version,
            version_source: version_source.to_owned(),
            compared_by: target.compared_by.to_owned(),
            sites,
            devices,
            now_unix: env.now,
        }))
    }

    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 1000,
            n => n.min(100_000) as usize,
        };
        let entries = self
            .shared
            .store
            .audit_since(req.since_unix, req.who.trim(), limit)
            .map_err(internal)?
            .into_iter()
            .map(|e| v1::AuditRecord {
                at_unix: e.at,
                actor: e.actor,
                action: e.action,
                detail: e.detail,
                from: e.from,
                result: e.result,
            })
            .collect();
        Ok(Response::new(v1::ListAuditResponse { entries }))
    }

    async fn add_user(
        &self,
        req: Request<v1::AddUserRequest>,
    ) -> Result<Response<v1::AddUserResponse>, Status> {
        self.people.add(req).await
    }

    async fn list_users(
        &self,
        _req: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        self.people.list().await
    }

    async fn revoke_user(
        &self,
        req: Request<v1::RevokeUserRequest>,
    ) -> Result<Response<v1::RevokeUserResponse>, Status> {
        self.people.revoke(req).await
    }

    async fn create_rollout(
        &self,
        req: Request<v1::CreateRolloutRequest>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.create(req).await
    }

    async fn start_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.start(req).await
    }

    async fn pause_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.pause(req).await
    }

    async fn resume_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.resume(req).await
    }

    async fn cancel_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.cancel(req).await
    }

    async fn approve_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.approve(req).await
    }

    async fn delete_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::DeleteRolloutResponse>, Status> {
        self.rollouts.delete(req).await
    }

    async fn retry_rollout(
        &self,
        req: Request<v1::RetryRolloutRequest>,
    ) -> Result<Response<v1::RetryRolloutResponse>, Status> {
        self.rollouts.retry(req).await
    }

    async fn get_rollout(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.rollouts.get(req).await
    }

    async fn list_rollouts(
        &self,
        req: Request<v1::ListRolloutsRequest>,
    ) -> Result<Response<v1::ListRolloutsResponse>, Status> {
        self.rollouts.list(req).await
    }

    async fn update_site(
        &self,
        req: Request<v1::UpdateSiteRequest>,
    ) -> Result<Response<v1::SiteSummary>, Status> {
        self.rollouts.update_site(req).await
    }
}

/// A site as people see it: its agents, how many are online, and its maintenance windows now.
pub(crate) fn site_summary(
    shared: &Shared,
    site: &SiteRecord,
    agents: &[AgentRecord],
    now: i64,
) -> Result<v1::SiteSummary, Status> {
    let online_after = now - 3 * shared.config.checkin_interval.as_secs() as i64;
    let members: Vec<&AgentRecord> = agents.iter().filter(|a| a.site == site.name).collect();
    let window = site
        .schedule()
        .map_err(|e| internal(format!("site {}: {e}", site.name)))?
        .map(|s| s.state_at(now));
    Ok(v1::SiteSummary {
        name: site.name.clone(),
        agents: members.len() as u32,
        online: members
            .iter()
            .filter(|a| a.last_checkin >= online_after)
            .count() as u32,
        windows: site.windows.iter().map(|w| w.to_string()).collect(),
        time_zone: site.time_zone.clone(),
        window_open: window.as_ref().is_some_and(|w| w.open),
        window_changes_at_unix: window.map_or(0, |w| w.changes_at),
    })
}

fn package_info(p: &crate::model::PackageRecord) -> v1::PackageInfo {
    v1::PackageInfo {
        name: p.name.clone(),
        version: p.version.clone(),
        release_counter: p.release_counter,
        target_name: p.target_name.clone(),
        sha256: p.sha256.clone(),
        length: p.length,
        platforms: p.platforms.clone(),
        kind: p.kind.clone(),
    }
}
