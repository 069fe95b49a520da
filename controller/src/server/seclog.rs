//! The security log for the department's SIEM: every audit entry (as it is committed) and every security event
//! (refused calls, refused enrollments and renewals, failed package verifications reported by agents), one JSON
//! object each, to a file of JSON lines and/or to syslog over UDP in RFC 5424 form. Writing never holds up a
//! call: events queue (up to 4,096) and a full queue drops and counts.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use crate::store::AuditEntry;

/// One line of the security log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub time: String,
    /// "audit" (an action by a person, as the audit log holds it) or "security".
    pub kind: &'static str,
    pub event: String,
    pub actor: String,
    pub from: String,
    pub detail: String,
    /// "ok", or why it was refused.
    pub result: String,
}

impl Event {
    fn from_audit(e: &AuditEntry) -> Event {
        Event {
            time: rfc3339(e.at),
            kind: "audit",
            event: e.action.clone(),
            actor: e.actor.clone(),
            from: e.from.clone(),
            detail: e.detail.clone(),
            result: e.result.clone(),
        }
    }

    /// RFC 5424: facility authpriv; notice for what went through, warning for refusals.
    fn syslog(&self, host: &str, json: &str) -> String {
        let severity = if self.result == "ok" { 5 } else { 4 };
        format!(
            "<{}>1 {} {} rollcall-controller {} {} - {}",
            10 * 8 + severity,
            self.time,
            host,
            std::process::id(),
            self.kind,
            json
        )
    }
}

use super::rfc3339;

/// Where the log goes; both optional.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    pub file: Option<PathBuf>,
    pub syslog: Option<SocketAddr>,
}

#[derive(Debug)]
pub struct SecurityLog {
    tx: Option<mpsc::Sender<Event>>,
    dropped: AtomicU64,
}

impl SecurityLog {
    /// Open the sinks (a file that cannot be opened is an error naming it) and start the writer, which also
    /// follows `feed`, the committed audit entries.
    pub async fn start(
        sinks: Sinks,
        mut feed: broadcast::Receiver<AuditEntry>,
    ) -> Result<SecurityLog, String> {
        if sinks.file.is_none() && sinks.syslog.is_none() {
            return Ok(SecurityLog {
                tx: None,
                dropped: AtomicU64::new(0),
            });
        }
        let mut file = match &sinks.file {
            Some(path) => Some(open_log(path)?),
            None => None,
        };
        let udp = match sinks.syslog {
            Some(target) => {
                let local: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .map_err(|e| format!("{e}"))?;
                let socket = tokio::net::UdpSocket::bind(local)
                    .await
                    .map_err(|e| format!("cannot open a socket for syslog: {e}"))?;
                Some((socket, target))
            }
            None => None,
        };
        let host = crate::init::local_hostname().unwrap_or_else(|| "-".into());
        let (tx, mut rx) = mpsc::channel::<Event>(4096);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = rx.recv() => match event {
                        Some(e) => e,
                        None => return,
                    },
                    entry = feed.recv() => match entry {
                        Ok(entry) => Event::from_audit(&entry),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            warn!(missed = n, "The security log fell behind the audit log; entries are in `rollcall audit`.");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                let json = serde_json::to_string(&event).unwrap_or_default();
                if let Some(f) = &mut file {
                    if let Err(e) = writeln!(f, "{json}").and_then(|_| f.flush()) {
                        warn!(error = %e, "Writing the security log file failed.");
                    }
                }
                if let Some((socket, target)) = &udp {
                    let line = event.syslog(&host, &json);
                    if let Err(e) = socket.send_to(line.as_bytes(), target).await {
                        warn!(error = %e, %target, "Sending to syslog failed.");
                    }
                }
            }
        });
        Ok(SecurityLog {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        })
    }

    /// Record a security event (never blocks).
    pub fn event(&self, event: &str, actor: &str, from: &str, detail: &str, result: &str) {
        let Some(tx) = &self.tx else { return };
        let e = Event {
            time: rfc3339(chrono::Utc::now().timestamp()),
            kind: "security",
            event: event.to_owned(),
            actor: super::untrusted(actor),
            from: from.to_owned(),
            detail: super::untrusted(detail),
            result: super::untrusted(result),
        };
        if tx.try_send(e).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(dropped = n, "Security log queue full; events dropped.");
            }
        }
    }
}

fn open_log(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open the security log {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_are_rfc5424() {
        let e = Event {
            time: rfc3339(0),
            kind: "security",
            event: "enrollment refused".into(),
            actor: "desk".into(),
            from: "127.0.0.1:5".into(),
            detail: String::new(),
            result: "unknown enrollment token".into(),
        };
        let line = e.syslog("ctl", "{}");
        assert!(
            line.starts_with("<84>1 1970-01-01T00:00:00Z ctl rollcall-controller "),
            "{line}"
        );
        assert!(line.ends_with(" security - {}"), "{line}");
    }
}
