//! Agents, their certificates, their sites and their last inventory.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::tokens::{check_token, TokenRecord, TokenRefusal};
use super::{decode, encode, get, put, scan, Result, Store, StoreError};
use crate::model::{AgentRecord, InstalledRecord, SiteRecord};

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Tech,
    Agent,
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
        let outcome = (&self.tokens, &self.agents, &self.certs, &self.sites).transaction(
            |(tokens, agents, certs, sites)| {
                let key = token_hash.as_bytes();
                let token: Option<TokenRecord> = match tokens.get(key)? {
                    Some(bytes) => Some(
                        decode("tokens", key, &bytes)
                            .map_err(ConflictableTransactionError::Abort)?,
                    ),
                    None => None,
                };
                let mut token = match check_token(token, now) {
                    Ok(t) => t,
                    Err(refusal) => return Ok((EnrollOutcome::Refused(refusal), None)),
                };
                token.uses_left -= 1;
                tokens.insert(key, encode(&token))?;
                let new = make_agent(&token);
                agents.insert(new.agent.id.as_bytes(), encode(&new.agent))?;
                certs.insert(new.cert_fingerprint.as_bytes(), encode(&new.cert))?;
                if sites.get(token.site.as_bytes())?.is_none() {
                    let site = SiteRecord::new(&token.site, now);
                    sites.insert(token.site.as_bytes(), encode(&site))?;
                }
                Ok((EnrollOutcome::Enrolled(token), Some(new)))
            },
        );
        match outcome {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
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

    pub fn put_agent(&self, agent: &AgentRecord) -> Result<()> {
        put(&self.agents, agent.id.as_bytes(), agent)
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

    pub fn put_inventory(&self, agent_id: &str, encoded: &[u8]) -> Result<()> {
        self.inventory.insert(agent_id.as_bytes(), encoded)?;
        Ok(())
    }

    pub fn inventory(&self, agent_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inventory.get(agent_id.as_bytes())?.map(|v| v.to_vec()))
    }

    pub fn sites(&self) -> Result<Vec<SiteRecord>> {
        scan(&self.sites, "sites", b"")
    }

    pub fn ensure_site(&self, name: &str, now: i64) -> Result<()> {
        if self.sites.get(name.as_bytes())?.is_none() {
            put(&self.sites, name.as_bytes(), &SiteRecord::new(name, now))?;
        }
        Ok(())
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
