//! The agent's data directory and its `agent.toml`, written at enrollment.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Paths inside an agent data directory.
#[derive(Debug, Clone)]
pub struct AgentDirs {
    root: PathBuf,
}

impl AgentDirs {
    pub fn new(root: impl Into<PathBuf>) -> AgentDirs {
        AgentDirs { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Present once enrollment finished: the agent is enrolled exactly when this file exists.
    pub fn config(&self) -> PathBuf {
        self.root.join("agent.toml")
    }
    /// The agent's private key and client certificate in one PEM file, so renewal replaces both atomically.
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity/client.pem")
    }
    pub fn ca(&self) -> PathBuf {
        self.root.join("identity/ca.crt")
    }
    /// The pinned TUF root this agent trusts first.
    pub fn root_pin(&self) -> PathBuf {
        self.root.join("tuf/root.json")
    }
    /// tough's datastore: the latest verified metadata; rollback protection depends on it.
    pub fn tuf_datastore(&self) -> PathBuf {
        self.root.join("tuf/datastore")
    }
    /// Partial downloads, kept across restarts so they resume.
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    /// Payloads that finished downloading and verified.
    pub fn staged(&self, sha256: &str) -> PathBuf {
        self.root.join("staged").join(sha256)
    }
    /// Where a payload is extracted and its commands run.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    /// The install journal: one entry per action whose signed command runs (`install::journal`).
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path} is not an enrolled agent: run `rollcall-agent enroll --controller URL --token TOKEN --data {dir}`")]
    NotEnrolled { path: PathBuf, dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `agent.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub version: u32,
    /// Controller URL, `https://host:port`.
    pub controller: String,
    pub agent_id: String,
    pub site: String,
    /// Hostname reported to the controller (the machine's own unless set at enrollment).
    #[serde(default)]
    pub hostname: Option<String>,
}

impl AgentConfig {
    pub fn load(dirs: &AgentDirs) -> Result<AgentConfig, ConfigError> {
        let path = dirs.config();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotEnrolled {
                    path: dirs.root().to_owned(),
                    dir: dirs.root().to_owned(),
                })
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let config: AgentConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if config.version != 1 {
            return Err(ConfigError::Invalid {
                path,
                reason: format!("unsupported version {}", config.version),
            });
        }
        Ok(config)
    }

    pub fn save(&self, dirs: &AgentDirs) -> Result<(), ConfigError> {
        let text = format!(
            "# rollcall agent configuration, written by `rollcall-agent enroll`.\n{}",
            toml::to_string(self).unwrap_or_default()
        );
        crate::state::write_atomic(&dirs.config(), text.as_bytes(), 0o644).map_err(|source| {
            ConfigError::Write {
                path: dirs.config(),
                source,
            }
        })
    }
}
