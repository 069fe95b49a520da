//! One accepted connection: who is at the other end, the certificate it presented, and the two rules that close
//! it from our side: idle for too long (no call open), or its certificate revoked.
//!
//! Both rules act on the connection's reads: hyper always has a read pending on an HTTP/2 connection, so a read
//! that fails ends the connection, its open streams with it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// What the services learn about the connection a call came on (a request extension).
#[derive(Clone)]
pub(crate) struct Peer(pub Arc<ConnState>);

pub(crate) struct ConnState {
    pub addr: SocketAddr,
    /// sha256 (hex) of the client certificate, if one was presented.
    pub fingerprint: Option<String>,
    /// Calls open on this connection (a call stays open until its response, stream included, is finished).
    open: AtomicUsize,
    /// When the last call finished (or the connection began).
    idle_since: Mutex<Instant>,
    idle_timeout: Duration,
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl ConnState {
    /// Close the connection from our side: its next read fails.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Count a call as open until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> OpenCall {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenCall(self.clone())
    }

    /// When the connection may be closed for idleness, or `None` while a call is open.
    fn idle_deadline(&self) -> Option<Instant> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) + self.idle_timeout)
    }
}

/// An open call; dropping it (when the response is done) may start the connection's idle clock.
pub(crate) struct OpenCall(Arc<ConnState>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            // The connection's timer may be set for a deadline computed while this call was open.
            self.0.waker.wake();
        }
    }
}

/// An accepted TLS connection, as tonic serves it.
pub(crate) struct Conn {
    io: TlsStream,
    state: Arc<ConnState>,
    idle: Pin<Box<Sleep>>,
}

impl Conn {
    pub fn new(io: TlsStream, addr: SocketAddr, idle_timeout: Duration) -> Conn {
        let fingerprint = io
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|leaf| rollcall_proto::sha256_hex(leaf));
        let now = Instant::now();
        Conn {
            io,
            state: Arc::new(ConnState {
                addr,
                fingerprint,
                open: AtomicUsize::new(0),
                idle_since: Mutex::new(now),
                idle_timeout,
                closed: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            }),
            idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
        }
    }

    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// Fails once the connection is to be closed; otherwise arms the idle timer for the current deadline.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.state.waker.register(cx.waker());
        if self.state.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the controller",
            ));
        }
        loop {
            match self.state.idle_deadline() {
                Some(deadline) if deadline <= Instant::now() => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle connection closed",
                    ));
                }
                Some(deadline) if self.idle.deadline() != deadline => {
                    self.idle.as_mut().reset(deadline)
                }
                Some(_) => {}
                // While a call is open, look again one idle period later.
                None if self.idle.is_elapsed() => {
                    let next = Instant::now() + self.state.idle_timeout;
                    self.idle.as_mut().reset(next)
                }
                None => {}
            }
            if self.idle.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        Peer(self.state.clone())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The open connections, by the certificate they presented (so a revocation closes them) and by source address
/// (so one source cannot hold every descriptor with connections that present no certificate).
#[derive(Default)]
pub(crate) struct Connections {
    by_cert: Mutex<Registry<String>>,
    anonymous: Mutex<Registry<std::net::IpAddr>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// Open connections by a key. Entries whose connections all ended are swept when the map has doubled since the
/// last sweep, so the cost of sweeping is spread over the additions (never a scan per connection).
struct Registry<K> {
    map: HashMap<K, Vec<Weak<ConnState>>>,
    sweep_at: usize,
}

impl<K> Default for Registry<K> {
    fn default() -> Self {
        Registry {
            map: HashMap::new(),
            sweep_at: 1024,
        }
    }
}

impl<K: std::hash::Hash + Eq> Registry<K> {
    /// The live connections under `key` (dead ones dropped), to add to.
    fn entry(&mut self, key: K) -> &mut Vec<Weak<ConnState>> {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, l| live(l) > 0);
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
        let list = self.map.entry(key).or_default();
        live(list);
        list
    }
}

fn live(list: &mut Vec<Weak<ConnState>>) -> usize {
    list.retain(|w| w.strong_count() > 0);
    list.len()
}

impl Connections {
    /// Register a new connection. A connection without a certificate is refused (`false`) when its source
    /// already holds `max_anonymous` such connections.
    pub fn add(&self, state: &Arc<ConnState>, max_anonymous: usize) -> bool {
        match &state.fingerprint {
            Some(fp) => {
                let mut registry = self.by_cert.lock().unwrap_or_else(|p| p.into_inner());
                registry.entry(fp.clone()).push(Arc::downgrade(state));
                true
            }
            None => {
                let mut registry = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
                let list = registry.entry(state.addr.ip());
                if list.len() >= max_anonymous {
                    return false;
                }
                list.push(Arc::downgrade(state));
                true
            }
        }
    }

    /// Close every open connection that presented one of these certificates; returns how many.
    pub fn close_cert(&self, fingerprints: &[String]) -> usize {
        let registry = self.by_cert.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for fp in fingerprints {
            for state in registry
                .map
                .get(fp)
                .into_iter()
                .flatten()
                .filter_map(Weak::upgrade)
            {
                state.close();
                n += 1;
            }
        }
        n
    }
}
