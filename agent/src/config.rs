//! The agent's data directory with its `agent.toml` (identity, written at enrollment), and the operator's settings
//! (`/etc/rollcall/agent.toml`, optional: every setting has a default, see `packaging/os/agent.toml`).

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
    /// The running agent's pid and start time (for `status`).
    pub fn pid(&self) -> PathBuf {
        self.root.join("agent.pid")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// Applied configuration profiles: their desired state and what they replaced (`crate::profile`).
    pub fn profiles(&self) -> PathBuf {
        self.root.join("profiles")
    }
    /// The inventory the controller accepted last: what the next inventory delta is against.
    pub fn inventory(&self) -> PathBuf {
        self.root.join("inventory.pb")
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

/// The operator's settings (`/etc/rollcall/agent.toml` unless `--config` says otherwise). A missing file means every
/// default; an unknown key or a bad value refuses to start, naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Longest wait between failed check-ins, in seconds (the wait grows exponentially with full jitter).
    pub max_backoff_secs: u64,
    /// An HTTP proxy (`http://host:port`) the gRPC connection is tunnelled through with CONNECT.
    pub proxy: Option<String>,
    /// Download bandwidth cap in bytes per second (0: none).
    pub max_download_rate: u64,
    /// Treat every link as metered.
    pub metered: bool,
    /// Interfaces that are metered links, by name; a trailing `*` matches a prefix (`wwan*`).
    pub metered_interfaces: Vec<String>,
    /// On a metered link, downloads larger than this many bytes wait for an unmetered one (unless urgent).
    pub metered_max_download: u64,
    /// The command that reboots the device when a package requires it.
    pub reboot_command: Vec<String>,
    /// Where this boot's id is read (it changes at every boot): how the agent tells a reboot from a restart.
    pub boot_id_file: PathBuf,
    /// How often the inventory is collected again, in seconds (it is sent only when it changed).
    pub inventory_interval_secs: u64,
    /// The dpkg database's status file the installed software is read from (Linux).
    pub dpkg_status: PathBuf,
    /// The rpm database folder (`rpmdb.sqlite`, or `Packages` of an older rpm) (Linux).
    pub rpm_db: PathBuf,
    /// Folders configuration profiles may change; anything outside is refused before anything is written.
    pub profile_paths: Vec<PathBuf>,
    /// Where the device's file system is for profiles: `/`, or a folder standing for it (an image being prepared;
    /// many agents on one test machine). Profile paths and `profile_paths` are taken under it.
    pub profile_root: PathBuf,
    /// How often applied profiles are checked for drift (and repaired), in seconds; also at every start.
    pub profile_check_interval_secs: u64,
    /// The service manager profiles enable and disable units with (`is-enabled`, `enable`, `disable` UNIT).
    pub service_manager: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_backoff_secs: 60,
            proxy: None,
            max_download_rate: 0,
            metered: false,
            metered_interfaces: Vec::new(),
            metered_max_download: 10 * 1024 * 1024,
            reboot_command: crate::platform::default_reboot_command(),
            boot_id_file: crate::platform::default_boot_id_file(),
            inventory_interval_secs: 3600,
            dpkg_status: PathBuf::from("/var/lib/dpkg/status"),
            rpm_db: PathBuf::from("/var/lib/rpm"),
            profile_paths: crate::platform::default_profile_paths(),
            profile_root: PathBuf::from("/"),
            profile_check_interval_secs: 15 * 60,
            service_manager: vec!["systemctl".into()],
        }
    }
}

impl Settings {
    /// Read `path`; a missing file is every default.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let settings: Settings =
            toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        settings.check().map_err(invalid)?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        if self.max_backoff_secs == 0 {
            return Err("max_backoff_secs must be at least 1".into());
        }
        if let Some(proxy) = &self.proxy {
            proxy_addr(proxy)?;
        }
        if self.reboot_command.is_empty() {
            return Err("reboot_command must name a program".into());
        }
        if self.service_manager.is_empty() {
            return Err("service_manager must name a program".into());
        }
        if self.inventory_interval_secs == 0 || self.profile_check_interval_secs == 0 {
            return Err(
                "inventory_interval_secs and profile_check_interval_secs must be at least 1".into(),
            );
        }
        if let Some(p) = self.profile_paths.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "profile_paths must be absolute folders; {} is not",
                p.display()
            ));
        }
        Ok(())
    }

    /// Whether the interface `name` is a metered link by these settings.
    pub fn is_metered(&self, interface: Option<&str>) -> bool {
        self.metered
            || interface.is_some_and(|name| {
                self.metered_interfaces
                    .iter()
                    .any(|rule| match rule.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => name == rule,
                    })
            })
    }
}

/// `host:port` of a proxy URL `http://host:port`, or why it is not one.
pub fn proxy_addr(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("proxy {url:?} {why} (expected http://HOST:PORT)");
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(bad("carries credentials, which are not supported"));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(rest.to_owned())
        }
        _ => Err(bad("has no host and port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_settings_file_is_every_default_and_the_documented_example_matches_them() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            Settings::load(&tmp.path().join("absent.toml")).unwrap(),
            Settings::default()
        );
        // packaging/os/agent.toml shows every default, uncommented where it is a plain value.
        let example = include_str!("../../packaging/os/agent.toml");
        let shown: Settings = toml::from_str(example).unwrap();
        assert_eq!(shown, Settings::default());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_file_and_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("agent.toml");
        for (text, words) in [
            ("max_backof_secs = 5\n", "unknown field `max_backof_secs`"),
            (
                "max_backoff_secs = 0\n",
                "max_backoff_secs must be at least 1",
            ),
            (
                "proxy = \"socks5://127.0.0.1:1080\"\n",
                "is not an http:// URL",
            ),
            (
                "proxy = \"http://user:pw@127.0.0.1:3128\"\n",
                "carries credentials",
            ),
            ("proxy = \"http://127.0.0.1\"\n", "has no host and port"),
            (
                "reboot_command = []\n",
                "reboot_command must name a program",
            ),
            ("metered = \"yes\"\n", "invalid type"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Settings::load(&path).unwrap_err().to_string();
            assert!(e.contains("agent.toml") && e.contains(words), "{text}: {e}");
        }
        std::fs::write(
            &path,
            "proxy = \"http://127.0.0.1:3128\"\nmax_backoff_secs = 5\n",
        )
        .unwrap();
        let s = Settings::load(&path).unwrap();
        assert_eq!(s.max_backoff_secs, 5);
        assert_eq!(
            proxy_addr(s.proxy.as_deref().unwrap()).unwrap(),
            "127.0.0.1:3128"
        );
    }

    #[test]
    fn metered_links_by_setting_or_interface_rule() {
        let mut s = Settings::default();
        assert!(!s.is_metered(Some("wwan0")));
        s.metered_interfaces = vec!["wwan*".into(), "ppp0".into()];
        assert!(s.is_metered(Some("wwan0")) && s.is_metered(Some("ppp0")));
        assert!(!s.is_metered(Some("ppp1")) && !s.is_metered(Some("eth0")) && !s.is_metered(None));
        s.metered = true;
        assert!(s.is_metered(None));
    }
}
