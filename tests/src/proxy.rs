//! A small TCP proxy on `127.0.0.1:0` that stands for a bad link between an agent and its controller: it can cap the
//! bandwidth, add latency to every chunk, drop connections at random, cut every open connection at once, and refuse
//! new ones for a while (a tunnel, a dead cell). TLS passes through it untouched, so the agent still talks to the real
//! controller with its real certificate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the link misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Bytes per second in each direction (0: unlimited).
    pub rate: u64,
    /// Added to every chunk forwarded.
    pub latency: Duration,
    /// Chance in a thousand, per chunk forwarded, that the connection is dropped there.
    pub drop_per_mille: u32,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    /// Connections accepted (refused ones included).
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_modify(|g| *g += 1);
    }
}

const CHUNK: usize = 16 * 1024;

impl Proxy {
    /// Forward `127.0.0.1:<port>` to `upstream`, shaped by `shape`; `seed` makes the random drops repeatable.
    pub async fn start(upstream: SocketAddr, shape: Shape, seed: u64) -> std::io::Result<Proxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Self::start_on(listener, upstream, shape, seed)
    }

    /// Like [`Proxy::start`] on a listener made elsewhere (in a network namespace: the listener stays there, while
    /// the connections upstream are made here).
    pub fn start_on(
        listener: std::net::TcpListener,
        upstream: SocketAddr,
        shape: Shape,
        seed: u64,
    ) -> std::io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let (down, cut, accepted) = (down.clone(), cut.clone(), accepted.clone());
            tokio::spawn(async move {
                let mut rng = seed | 1;
                while let Ok((inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    if down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    rng = xorshift(rng);
                    let conn = Conn {
                        shape: shape.clone(),
                        cut: cut.subscribe(),
                        rng,
                    };
                    tokio::spawn(conn.run(inbound, upstream));
                }
            })
        };
        Ok(Proxy {
            addr,
            down,
            cut,
            accepted,
            task,
        })
    }

    /// The URL an agent uses to reach the controller through this proxy.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Close every open connection now (the link went away).
    pub fn cut_all(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    /// Refuse (close at once) new connections while `down`; cutting the open ones too is [`Proxy::cut_all`].
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

struct Conn {
    shape: Shape,
    cut: watch::Receiver<u64>,
    rng: u64,
}

impl Conn {
    async fn run(self, inbound: TcpStream, upstream: SocketAddr) {
        let Ok(outbound) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        let Conn {
            shape,
            mut cut,
            rng,
        } = self;
        let up = pump(ri, wo, shape.clone(), rng);
        let down = pump(ro, wi, shape, xorshift(rng));
        // When either direction ends (a close, a drop) or the link is cut, both sides are closed.
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = cut.changed() => {}
        }
    }
}

/// Copy one direction, shaped; returns when either side closes or a random drop hits.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shape: Shape,
    mut rng: u64,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !shape.latency.is_zero() {
            tokio::time::sleep(shape.latency).await;
        }
        if shape.drop_per_mille > 0 {
            rng = xorshift(rng);
            if rng % 1000 < u64::from(shape.drop_per_mille) {
                // Dropping both halves closes the connection on both sides.
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if shape.rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / shape.rate as f64)).await;
        }
    }
    let _ = to.shutdown().await;
}

/// An HTTP proxy on `127.0.0.1:0` that only tunnels (CONNECT), only to loopback, and records each target: an
/// agent configured with `proxy = "http://…"` must reach its controller through it.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    /// `host:port` of every CONNECT it tunnelled, in order.
    pub tunnels: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    pub async fn start() -> std::io::Result<ConnectProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tunnels: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let task = {
            let tunnels = tunnels.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    tokio::spawn(tunnel(inbound, tunnels.clone()));
                }
            })
        };
        Ok(ConnectProxy {
            addr,
            tunnels,
            task,
        })
    }

    /// The agent setting that points at this proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn tunnelled(&self) -> Vec<String> {
        self.tunnels.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Serve one CONNECT: read the request head, refuse anything but a loopback target, answer 200 and relay.
async fn tunnel(mut inbound: TcpStream, tunnels: Arc<std::sync::Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match inbound.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let target = match (words.next(), words.next()) {
        (Some("CONNECT"), Some(target)) if target.starts_with("127.0.0.1:") => target.to_owned(),
        _ => {
            let _ = inbound
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
    };
    let Ok(outbound) = TcpStream::connect(&target).await else {
        let _ = inbound
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if let Ok(mut t) = tunnels.lock() {
        t.push(target);
    }
    if inbound
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (mut a, mut b) = (inbound, outbound);
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}
