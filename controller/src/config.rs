//! `controller.toml`: versioned, every key optional with its default shown in [`EXAMPLE`].

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::Error;

/// The shipped example: every key with its default, commented.
pub const EXAMPLE: &str = r#"# rollcall controller configuration.
version = 1

# Address the gRPC server (agents and admins) listens on. Command-line --listen overrides it.
# listen = "0.0.0.0:8443"

# How often agents check in, and the random extra delay each adds so thousands never fire together.
# checkin_interval = "5m"
# checkin_jitter = "1m"

# Lifetime of agent client certificates. Agents renew theirs at half-life; one offline for longer must re-enroll.
# agent_cert_validity = "30d"

# Lifetime of the snapshot and timestamp metadata the controller signs with its online keys. It bounds how long a
# frozen (never-updated) repository is accepted by agents; the controller re-signs at half-life.
# timestamp_validity = "7d"

# How often the rollout engine looks at running rollouts (it also runs right after a device finishes).
# engine_interval = "5s"

# A device silent for longer than this no longer counts towards its wave's success share (a lost or retired MDC
# must not hold a rollout); it still gets the update when it comes back. Devices silent for more than three
# check-in intervals are shown as offline but still count.
# membership_cutoff = "7d"
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    pub version: u32,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_checkin_interval", deserialize_with = "duration")]
    pub checkin_interval: Duration,
    #[serde(default = "default_checkin_jitter", deserialize_with = "duration")]
    pub checkin_jitter: Duration,
    #[serde(default = "default_agent_cert_validity", deserialize_with = "duration")]
    pub agent_cert_validity: Duration,
    #[serde(default = "default_timestamp_validity", deserialize_with = "duration")]
    pub timestamp_validity: Duration,
    #[serde(default = "default_engine_interval", deserialize_with = "duration")]
    pub engine_interval: Duration,
    #[serde(default = "default_membership_cutoff", deserialize_with = "duration")]
    pub membership_cutoff: Duration,
}

fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_checkin_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_checkin_jitter() -> Duration {
    Duration::from_secs(60)
}
fn default_agent_cert_validity() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn default_timestamp_validity() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_engine_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_membership_cutoff() -> Duration {
    Duration::from_secs(7 * 86400)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

impl ControllerConfig {
    pub fn parse(text: &str, path: &Path) -> Result<ControllerConfig, Error> {
        let config: ControllerConfig = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if config.version != 1 {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: format!(
                    "unsupported version {} (this controller reads version 1)",
                    config.version
                ),
            });
        }
        if config.checkin_interval.is_zero() {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: "checkin_interval must be more than 0".into(),
            });
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<ControllerConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_defaults() {
        let c = ControllerConfig::parse(EXAMPLE, Path::new("example")).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443");
        assert_eq!(c.checkin_interval, Duration::from_secs(300));
        assert_eq!(c.timestamp_validity, Duration::from_secs(7 * 86400));
        assert_eq!(c.membership_cutoff, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn bad_config_names_the_problem() {
        let e = ControllerConfig::parse("version = 2", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml") && e.contains("unsupported version 2"),
            "{e}"
        );
        let e = ControllerConfig::parse(
            "version = 1\ncheckin_interval = \"soon\"",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("checkin_interval") || e.contains("soon"), "{e}");
        let e = ControllerConfig::parse("version = 1\nlisten_addr = \"x\"", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_addr"), "{e}");
    }
}
