//! The gRPC server: TLS accept loop, the agent and admin services, the background rollout engine and metadata
//! refresher, and the one shutdown path.

mod admin_api;
mod admin_people;
mod admin_rollouts;
mod agent_api;
pub mod auth;
mod conn;
mod gate;
pub mod seclog;
mod wake;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::v1::admin_service_server::AdminServiceServer;
use rollcall_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::blobs::Blobs;
use crate::config::ControllerConfig;
use crate::datadir::DataDir;
use crate::error::{write_atomic, Error, Result};
use crate::pki::Ca;
use crate::repo::Repository;
use crate::rollout::driver;
use crate::rollout::engine::Env;
use crate::store::Store;
use wake::Watchers;

/// How long in-flight calls may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest admin message (a targets.json with many packages); the gate holds every other method to less.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest agent message (a check-in with a full inventory).
const MAX_AGENT_MESSAGE: usize = 8 * 1024 * 1024;
/// Calls open at once on one connection (an agent uses three: watch, check-in, fetch).
const MAX_STREAMS: u32 = 32;
/// Largest header block a client may send.
const MAX_HEADERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub data: PathBuf,
    /// Overrides `listen` from the config.
    pub listen: Option<String>,
    /// Overrides `checkin_interval` from the config.
    pub checkin_interval: Option<Duration>,
    /// Overrides `engine_interval` from the config.
    pub engine_interval: Option<Duration>,
}

/// State shared by the services and background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Store,
    pub blobs: Blobs,
    pub repo: Repository,
    pub ca: Ca,
    pub config: ControllerConfig,
    /// Poked when a device finished, so the engine looks sooner than its interval (after a short pause that lets
    /// a burst of reports land).
    pub engine_wake: Notify,
    /// Poked when an admin acted: the engine looks at once.
    pub engine_now: Notify,
    /// Agents holding a `Watch` stream, to wake when a change concerns them.
    pub watchers: Watchers,
    /// Open connections, to close those of a revoked certificate.
    pub connections: conn::Connections,
    /// Calls without a valid certificate, per source.
    pub limiter: gate::Limiter,
    /// Audit entries and security events for the SIEM.
    pub seclog: seclog::SecurityLog,
}

impl Shared {
    /// The engine's horizons at `now`.
    pub fn env(&self, now: i64) -> Env {
        driver::env(
            now,
            self.config.membership_cutoff,
            self.config.checkin_interval,
        )
    }

    /// Append an admin action to the audit log (and the controller's log).
    pub fn audit(
        &self,
        caller: &auth::Caller,
        action: &str,
        detail: String,
    ) -> Result<(), tonic::Status> {
        self.store
            .audit(&audit_entry(caller, action, detail))
            .map_err(auth::internal)
    }
}

/// The audit entry for an action of `caller` (written to the controller's log once committed, by `log_audit`).
pub(crate) fn audit_entry(
    caller: &auth::Caller,
    action: &str,
    detail: String,
) -> crate::store::AuditEntry {
    crate::store::AuditEntry {
        at: now(),
        actor: caller.subject.clone(),
        action: action.into(),
        detail,
        from: caller.from.clone(),
        result: "ok".into(),
    }
}

impl Shared {
    /// Wake the watching agents a change concerns.
    pub fn wake(&self, wake: &driver::Wake) {
        let n = self.watchers.wake(wake);
        debug!(reason = %wake.reason, agents = n, "Agents woken.");
    }
}

/// Bind `addr` with an accept queue of `backlog` connections (tokio's own `bind` asks for 1,024, which a
/// reconnect storm of thousands of agents overflows). Says so when the kernel caps it lower.
async fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last = None;
    for at in tokio::net::lookup_host(addr).await? {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(at).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => {
                let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                if let Some(cap) = cap.filter(|cap| *cap < backlog) {
                    info!(
                        listen_backlog = backlog,
                        somaxconn = cap,
                        "The kernel caps the accept queue at net.core.somaxconn; raise it for reconnect storms of more agents."
                    );
                }
                return Ok(listener);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        )
    }))
}

/// Load the data directory, bind, and serve until `shutdown` resolves.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let data = DataDir::new(&opts.data);
    if !data.config().exists() {
        return Err(Error::NotInitialised {
            path: opts.data.clone(),
        });
    }
    let mut config = ControllerConfig::load(&data.config())?;
    if let Some(listen) = opts.listen {
        config.listen = listen;
    }
    if let Some(interval) = opts.checkin_interval {
        config.checkin_interval = interval;
        config.checkin_jitter = config.checkin_jitter.min(interval / 4);
    }
    if let Some(interval) = opts.engine_interval {
        config.engine_interval = interval;
    }
    let store = Store::open(&data.store())?;
    let blobs = Blobs::open(&data.blobs()).map_err(|e| Error::Serve(e.to_string()))?;
    let repo = Repository::load(
        &data,
        store.clone(),
        blobs.clone(),
        config.timestamp_validity,
    )?;
    let ca = Ca::load(&data.ca_cert(), &data.ca_key())?;
    let tls =
        crate::pki::tls::server_config(&data.ca_cert(), &data.server_cert(), &data.server_key())?;

    let listener = listen(&config.listen, config.listen_backlog)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let url = client_url(local);
    write_atomic(&data.addr_file(), format!("{local}\n").as_bytes(), 0o644)?;
    write_atomic(
        &data.admin_creds().join("controller"),
        format!("{url}\n").as_bytes(),
        0o644,
    )?;
    info!(addr = %local, ca = %ca.fingerprint(), "Controller listening.");

    let seclog = seclog::SecurityLog::start(
        seclog::Sinks {
            file: config.security_log.clone(),
            syslog: config.security_syslog,
        },
        store.audit_feed(),
    )
    .await
    .map_err(Error::Serve)?;
    let shared = Arc::new(Shared {
        store: store.clone(),
        blobs,
        repo,
        ca,
        limiter: gate::Limiter::new(config.anonymous_calls_per_second),
        config,
        engine_wake: Notify::new(),
        engine_now: Notify::new(),
        watchers: Watchers::default(),
        connections: conn::Connections::default(),
        seclog,
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let incoming = accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        shared.clone(),
        stop_rx.clone(),
    );
    let engine = tokio::spawn(engine_loop(shared.clone(), stop_rx.clone()));
    tokio::spawn(log_audit(store.audit_feed()));
    let refresher = tokio::spawn(refresh_loop(shared.clone(), stop_rx.clone()));
    tokio::spawn(sweep_loop(shared.clone(), stop_rx.clone()));

    let mut stop_serve = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        // Agents hold a Watch stream open for hours: pings find connections a NAT or proxy dropped silently.
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_header_list_size(MAX_HEADERS)
        .layer(gate::Gate {
            shared: shared.clone(),
        })
        .add_service(
            AgentServiceServer::new(agent_api::AgentApi::new(shared.clone()))
                .max_decoding_message_size(MAX_AGENT_MESSAGE),
        )
        .add_service(
            AdminServiceServer::new(admin_api::AdminApi::new(shared.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            stopped(&mut stop_serve).await;
            info!("Shutting down.");
        });
    let mut grace = stop_rx.clone();
    tokio::select! {
        result = server => result.map_err(|e| Error::Serve(rollcall_proto::tls::error_chain(&e)))?,
        _ = async {
            stopped(&mut grace).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!(grace = ?SHUTDOWN_GRACE, "In-flight calls did not finish within the grace period."),
    }
    engine.abort();
    refresher.abort();
    store.flush().await?;
    let _ = std::fs::remove_file(data.addr_file());
    info!("Controller stopped.");
    Ok(())
}

/// The controller's clock, read once per call and passed down (the rules never read it themselves).
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A unix time as people and logs read it, `2026-11-24T06:18:01Z`.
pub(crate) fn rfc3339(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| at.to_string())
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// The URL a local client uses for this listener (an unspecified address becomes loopback).
fn client_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("https://{ip}:{}", addr.port())
}

/// A string a client sent, made safe for the log: control characters (newlines, ANSI escapes) escaped, and cut
/// to 100 characters.
pub(crate) fn untrusted(s: &str) -> String {
    const MAX: usize = 100;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str(&format!("…({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Accept TCP connections and run TLS handshakes concurrently; only finished handshakes reach tonic, so a slow
/// or broken client never holds up others, and a failed handshake never ends the server.
fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<conn::Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!(error = %e, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let config = &shared.config;
                        let certified = stream.get_ref().1.peer_certificates().is_some();
                        let idle = if certified {
                            config.idle_timeout
                        } else {
                            config.anonymous_idle_timeout
                        };
                        let conn = conn::Conn::new(stream, peer, idle);
                        if !shared
                            .connections
                            .add(conn.state(), config.anonymous_connections_per_source)
                        {
                            debug!(%peer, "Too many connections without a certificate from this source; closed.");
                            return;
                        }
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed."),
                    Err(_) => debug!(%peer, "TLS handshake timed out."),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Runs the rollout engine every `engine_interval`, and soon after a device finished.
async fn engine_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match driver::tick(&shared.store, &shared.env(now())) {
            Err(e) => warn!(error = %e, "Rollout engine pass failed."),
            Ok(outcome) => {
                // Durable before any agent hears of it.
                if let Err(e) = shared.store.flush().await {
                    warn!(error = %e, "Store flush failed.");
                } else {
                    for wake in &outcome.wake {
                        shared.wake(wake);
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.engine_interval) => {}
            _ = shared.engine_wake.notified() => {
                // Let a burst of reports land before looking.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = shared.engine_now.notified() => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Every committed audit entry, in the controller's log too.
async fn log_audit(mut feed: tokio::sync::broadcast::Receiver<crate::store::AuditEntry>) {
    loop {
        match feed.recv().await {
            Ok(e) => {
                info!(actor = %e.actor, from = %e.from, action = %e.action, detail = %e.detail, result = %e.result, "Audited.")
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "The log fell behind the audit log; the entries are in `rollcall audit`."
                )
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keeps snapshot and timestamp fresh while the controller runs: it looks every quarter of their validity (at
/// most hourly) and re-signs past half-life, so short-lived metadata never lapses.
/// Every hour (and at start), the software lists no agent names any more are removed from the store.
async fn sweep_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let store = shared.store.clone();
        match tokio::task::spawn_blocking(move || store.sweep_software_sets(now())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => info!(removed, "Unused software lists removed from the store."),
            Ok(Err(e)) => warn!(error = %e, "Sweeping unused software lists failed."),
            Err(e) => warn!(error = %e, "Sweeping unused software lists stopped unexpectedly."),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

async fn refresh_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = (shared.config.timestamp_validity / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        if let Err(e) = shared.repo.refresh(chrono::Utc::now()).await {
            warn!(error = %e, "Re-signing repository metadata failed.");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}
