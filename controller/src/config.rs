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

# Connections the kernel queues for the controller to accept: after a controller restart every agent reconnects
# at once, and a queue that overflows drops their handshakes. The kernel caps it at net.core.somaxconn (4096 on
# current Linux): raise that too (`sysctl -w net.core.somaxconn=65535`); the controller says so at start.
# listen_backlog = 65535

# How often agents check in, and the random extra delay each adds so thousands never fire together.
# checkin_interval = "5m"
# checkin_jitter = "1m"

# Lifetime of agent client certificates. Agents renew theirs at half-life; one offline for longer must re-enroll.
# agent_cert_validity = "30d"

# Lifetime of people's client certificates (`rollcall users add`).
# user_cert_validity = "365d"

# Lifetime of the snapshot and timestamp metadata the controller signs with its online keys. It bounds how long a
# frozen (never-updated) repository is accepted by agents; the controller re-signs at half-life.
# timestamp_validity = "7d"

# How often the rollout engine looks at running rollouts (it also runs right after a device finishes).
# engine_interval = "5s"

# A device silent for longer than this no longer counts towards its wave's success share (a lost or retired MDC
# must not hold a rollout); it still gets the update when it comes back. Devices silent for more than three
# check-in intervals are shown as offline but still count.
# membership_cutoff = "7d"

# Connections are closed when no call has been open on them for this long (an agent holding its wake-up stream
# always has one open); connections that presented no client certificate (enrolling agents, or anyone) sooner.
# idle_timeout = "5m"
# anonymous_idle_timeout = "10s"

# Per source address: connections without a client certificate open at once, and calls per second without a valid
# certificate (enrollments and refused calls; bursts of ten seconds' worth). More are refused, and logged once a
# minute per source. A station enrolling hundreds of desktops through one NAT address fits well within these.
# anonymous_connections_per_source = 64
# anonymous_calls_per_second = 20

# The security log for a SIEM: every audit entry and security event (refused calls, enrollments and renewals,
# failed package verifications reported by agents) as one JSON object per line, to a file and/or to syslog over
# UDP in RFC 5424 form (facility authpriv). Neither is written unless set.
# security_log = "/var/log/rollcall/security.jsonl"
# security_syslog = "127.0.0.1:514"
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
    #[serde(default = "default_user_cert_validity", deserialize_with = "duration")]
    pub user_cert_validity: Duration,
    #[serde(default = "default_timestamp_validity", deserialize_with = "duration")]
    pub timestamp_validity: Duration,
    #[serde(default = "default_engine_interval", deserialize_with = "duration")]
    pub engine_interval: Duration,
    #[serde(default = "default_membership_cutoff", deserialize_with = "duration")]
    pub membership_cutoff: Duration,
    #[serde(default = "default_idle_timeout", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    #[serde(
        default = "default_anonymous_idle_timeout",
        deserialize_with = "duration"
    )]
    pub anonymous_idle_timeout: Duration,
    #[serde(default = "default_anonymous_connections")]
    pub anonymous_connections_per_source: usize,
    #[serde(default = "default_anonymous_calls")]
    pub anonymous_calls_per_second: u32,
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
    #[serde(default)]
    pub security_log: Option<std::path::PathBuf>,
    #[serde(default)]
    pub security_syslog: Option<std::net::SocketAddr>,
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
fn default_user_cert_validity() -> Duration {
    Duration::from_secs(365 * 86400)
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

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_anonymous_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_anonymous_connections() -> usize {
    64
}
fn default_anonymous_calls() -> u32 {
    20
}
fn default_listen_backlog() -> u32 {
    65535
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
        if config.idle_timeout.is_zero() || config.anonymous_idle_timeout.is_zero() {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: "idle_timeout and anonymous_idle_timeout must be more than 0".into(),
            });
        }
        if config.listen_backlog == 0 {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: "listen_backlog must be at least 1".into(),
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
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.user_cert_validity, Duration::from_secs(365 * 86400));
        assert_eq!(c.anonymous_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.anonymous_connections_per_source, 64);
        assert_eq!(c.anonymous_calls_per_second, 20);
        assert_eq!(c.listen_backlog, 65535);
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
        let e = ControllerConfig::parse("version = 1\nlisten_backlog = 0", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_backlog must be at least 1"), "{e}");
    }
}
