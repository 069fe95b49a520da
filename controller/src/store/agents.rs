//! Agents, their certificates, their sites and their last inventory.

use serde::{Deserialize, Serialize};

use super::tokens::{check_token, TokenRecord, TokenRefusal};
use super::{decode, get, put, scan, Result, Store, Table};
use crate::model::{AgentRecord, InstalledRecord, SiteRecord};

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Tech,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Tech => "tech",
            Role::Agent => "agent",
        }
    }
}

/// One issued client certificate, keyed by the sha256 of its DER. Looked up on every call (revocation check).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertRecord {
    /// Agent id or admin name.
    pub subject: String,
    pub role: Role,
    #[serde(default)]
    pub issued_at: i64,
    pub not_after: i64,
    #[serde(default)]
    pub revoked: bool,
    /// The certificate this one renewed; revoked when this one is first used.
    #[serde(default)]
    pub replaces: Option<String>,
    /// The certificate that renewed this one: a certificate renews once.
    #[serde(default)]
    pub renewed_by: Option<String>,
}

impl CertRecord {
    /// Past half its life at `now` (the controller's clock decides, not the endpoint's).
    pub fn renewal_due(&self, now: i64) -> bool {
        self.issued_at > 0 && now >= self.issued_at + (self.not_after - self.issued_at) / 2
    }
}

/// Everything enrollment writes, decided before the transaction.
#[derive(Debug)]
pub struct NewAgent {
    pub agent: AgentRecord,
    pub cert_fingerprint: String,
    pub cert: CertRecord,
    /// Certificates of the record this enrollment replaces (same host enrolled again), revoked with it.
    pub revoke: Vec<String>,
}

/// How an admin ends an agent's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its certificates are revoked; it may enroll again with a new token.
    Revoke,
    /// Revoked, and its hostname may not enroll again until unbanned.
    Ban,
    /// Revoked and decommissioned: moved out of the fleet, kept in history.
    Retire,
}

/// A hostname that may not enroll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BanRecord {
    pub hostname: String,
    /// The agent whose ban this was.
    pub agent_id: String,
    pub at: i64,
    pub by: String,
}

fn revoke_in(tx: &super::Tx, fingerprints: &[String]) -> super::TxResult<()> {
    for fp in fingerprints {
        if let Some(mut cert) = tx.get::<CertRecord>(Table::Certs, fp)? {
            cert.revoked = true;
            tx.put(Table::Certs, fp, &cert)?;
        }
    }
    Ok(())
}

fn ban_key(hostname: &str) -> Vec<u8> {
    hostname.trim().to_lowercase().into_bytes()
}

/// What an enrollment attempt found.
#[derive(Debug)]
pub enum EnrollOutcome {
    Enrolled(TokenRecord),
    Refused(TokenRefusal),
}

impl Store {
    /// Spend one use of the token and record the new agent and its certificate, all or nothing.
    /// `make_agent` is called with the token (to learn the site) and returns the records to write.
    pub fn enroll(
        &self,
        token_hash: &str,
        now: i64,
        make_agent: impl Fn(&TokenRecord) -> NewAgent,
    ) -> Result<(EnrollOutcome, Option<NewAgent>)> {
        let enrolled = self.transact(None, |tx| {
            let token = tx.get::<TokenRecord>(Table::Tokens, token_hash)?;
            let mut token = match check_token(token, now) {
                Ok(t) => t,
                Err(refusal) => return Ok((EnrollOutcome::Refused(refusal), None)),
            };
            token.uses_left -= 1;
            tx.put(Table::Tokens, token_hash, &token)?;
            let new = make_agent(&token);
            tx.put(Table::Agents, &new.agent.id, &new.agent)?;
            tx.put(Table::Certs, &new.cert_fingerprint, &new.cert)?;
            revoke_in(tx, &new.revoke)?;
            Ok((EnrollOutcome::Enrolled(token), Some(new)))
        })?;
        if let (_, Some(new)) = &enrolled {
            self.index_hostname(&new.agent)?;
        }
        Ok(enrolled)
    }

    /// Every certificate issued to `subject`, with its sha256.
    pub fn certs_of(&self, subject: &str) -> Result<Vec<(String, CertRecord)>> {
        Ok(self
            .all_certs()?
            .into_iter()
            .filter(|(_, c)| c.subject == subject)
            .collect())
    }

    /// Certificates of people (admins and techs), with their sha256.
    pub fn people(&self) -> Result<Vec<(String, CertRecord)>> {
        Ok(self
            .all_certs()?
            .into_iter()
            .filter(|(_, c)| c.role != Role::Agent)
            .collect())
    }

    fn all_certs(&self) -> Result<Vec<(String, CertRecord)>> {
        self.certs
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode("certs", &k, &v)?,
                ))
            })
            .collect()
    }

    /// Revoke certificates with their audit entry, all or nothing.
    pub fn revoke_certs(&self, fingerprints: &[String], audit: &super::AuditEntry) -> Result<()> {
        self.audited(audit, |tx| revoke_in(tx, fingerprints))
    }

    /// The agent in the fleet with this hostname (compared without case), if any: the record a new enrollment
    /// of the same host replaces.
    pub fn agent_by_hostname(&self, hostname: &str) -> Result<Option<AgentRecord>> {
        let wanted = hostname.trim().to_lowercase();
        let mut found: Option<AgentRecord> = None;
        for entry in self.hostnames.scan_prefix(hostname_key(&wanted, "")) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[wanted.len() + 1..]).into_owned();
            // The index may name an agent that was renamed or retired since: the record decides.
            let Some(agent) = self.agent(&id)? else {
                continue;
            };
            if agent.hostname.to_lowercase() == wanted
                && found
                    .as_ref()
                    .is_none_or(|f| agent.enrolled_at > f.enrolled_at)
            {
                found = Some(agent);
            }
        }
        Ok(found)
    }

    /// Name `agent` under its hostname in the index (entries are never wrong for long: lookups check the record).
    fn index_hostname(&self, agent: &AgentRecord) -> Result<()> {
        self.hostnames.insert(
            hostname_key(&agent.hostname.to_lowercase(), &agent.id),
            b"".as_slice(),
        )?;
        Ok(())
    }

    /// Rebuild the hostname index from the fleet (at open: it also covers a crash between a write and its entry).
    pub(super) fn rebuild_hostname_index(&self) -> Result<()> {
        self.hostnames.clear()?;
        for agent in self.agents()? {
            self.index_hostname(&agent)?;
        }
        Ok(())
    }

    pub fn ban(&self, hostname: &str) -> Result<Option<BanRecord>> {
        get(&self.bans, "bans", &ban_key(hostname))
    }

    /// Lift a ban with its audit entry; `false` if the host was not banned.
    pub fn unban(&self, hostname: &str, audit: &super::AuditEntry) -> Result<bool> {
        let key = String::from_utf8_lossy(&ban_key(hostname)).into_owned();
        let was = self.audited_if(Some(audit), |tx| {
            Ok(tx.remove(Table::Bans, &key)?.then_some(()))
        })?;
        Ok(was.is_some())
    }

    /// End an agent's access (see [`Ending`]) with its audit entry, all or nothing: every certificate of the
    /// agent revoked, the ban recorded, a retired agent moved out of the fleet. Returns the agent as it now is
    /// and the certificates revoked, or `None` if the fleet has no such agent.
    pub fn end_agent(
        &self,
        agent_id: &str,
        how: Ending,
        audit: &super::AuditEntry,
        now: i64,
    ) -> Result<Option<(AgentRecord, Vec<String>)>> {
        let fingerprints: Vec<String> = self
            .certs_of(agent_id)?
            .into_iter()
            .map(|(fp, _)| fp)
            .collect();
        let agent = self.audited_if(Some(audit), |tx| {
            let Some(mut agent) = tx.get::<AgentRecord>(Table::Agents, agent_id)? else {
                return Ok(None);
            };
            if agent.revoked_at == 0 {
                agent.revoked_at = now;
            }
            revoke_in(tx, &fingerprints)?;
            if how == Ending::Ban {
                let ban = BanRecord {
                    hostname: agent.hostname.clone(),
                    agent_id: agent.id.clone(),
                    at: now,
                    by: audit.actor.clone(),
                };
                let key = String::from_utf8_lossy(&ban_key(&agent.hostname)).into_owned();
                tx.put(Table::Bans, &key, &ban)?;
            }
            if how == Ending::Retire {
                agent.retired_at = now;
                tx.remove(Table::Agents, &agent.id)?;
                tx.put(Table::Retired, &agent.id, &agent)?;
            } else {
                tx.put(Table::Agents, &agent.id, &agent)?;
            }
            Ok(Some(agent))
        })?;
        Ok(agent.map(|agent| (agent, fingerprints)))
    }

    pub fn retired_agents(&self) -> Result<Vec<AgentRecord>> {
        scan(&self.retired, "retired", b"")
    }

    pub fn retired_agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        get(&self.retired, "retired", id.as_bytes())
    }

    /// Record `new` as the renewal of `old`, unless `old` was renewed or revoked meanwhile (`false`).
    pub fn renew_cert(&self, old: &str, new: &str, record: &CertRecord) -> Result<bool> {
        self.transact(None, |tx| {
            let Some(mut previous) = tx.get::<CertRecord>(Table::Certs, old)? else {
                return Ok(false);
            };
            if previous.revoked || previous.renewed_by.is_some() {
                return Ok(false);
            }
            previous.renewed_by = Some(new.to_owned());
            tx.put(Table::Certs, old, &previous)?;
            tx.put(Table::Certs, new, record)?;
            Ok(true)
        })
    }

    pub fn cert(&self, fingerprint: &str) -> Result<Option<CertRecord>> {
        get(&self.certs, "certs", fingerprint.as_bytes())
    }

    pub fn put_cert(&self, fingerprint: &str, record: &CertRecord) -> Result<()> {
        put(&self.certs, fingerprint.as_bytes(), record)
    }

    pub fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        get(&self.agents, "agents", id.as_bytes())
    }

    /// Change an agent's record without undoing a concurrent writer (a revoke or a retire during a check-in):
    /// `change` sees the current record (`None` once retired) and returns the new one, or `None` to leave it.
    pub fn update_agent(
        &self,
        id: &str,
        change: impl FnMut(Option<AgentRecord>) -> Option<AgentRecord>,
    ) -> Result<Option<AgentRecord>> {
        let mut change = change;
        let mut before = None;
        let updated = super::update(&self.agents, "agents", id.as_bytes(), |current| {
            before = current.as_ref().map(|a: &AgentRecord| a.hostname.clone());
            change(current)
        })?;
        if let Some(agent) = updated
            .as_ref()
            .filter(|a| before.as_ref() != Some(&a.hostname))
        {
            self.index_hostname(agent)?;
        }
        Ok(updated)
    }

    pub fn put_agent(&self, agent: &AgentRecord) -> Result<()> {
        put(&self.agents, agent.id.as_bytes(), agent)?;
        self.index_hostname(agent)
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        scan(&self.agents, "agents", b"")
    }

    /// Agents whose site is one of `sites`.
    pub fn agents_in_sites(&self, sites: &[String]) -> Result<Vec<AgentRecord>> {
        Ok(self
            .agents()?
            .into_iter()
            .filter(|a| sites.contains(&a.site))
            .collect())
    }

    pub fn sites(&self) -> Result<Vec<SiteRecord>> {
        scan(&self.sites, "sites", b"")
    }

    pub fn site(&self, name: &str) -> Result<Option<SiteRecord>> {
        get(&self.sites, "sites", name.as_bytes())
    }

    pub fn put_site(&self, site: &SiteRecord) -> Result<()> {
        put(&self.sites, site.name.as_bytes(), site)
    }
}

/// The installed-package list as the store keeps it.
pub fn agents_installed(
    installed: &[rollcall_proto::v1::InstalledPackage],
) -> Vec<InstalledRecord> {
    installed
        .iter()
        .map(|p| InstalledRecord {
            name: p.name.clone(),
            version: p.version.clone(),
            release_counter: p.release_counter,
            installed_at: p.installed_at_unix,
        })
        .collect()
}

/// The hostname index key: `hostname` (lower case), a NUL, the agent id.
fn hostname_key(hostname: &str, id: &str) -> Vec<u8> {
    format!("{hostname}\0{id}").into_bytes()
}
