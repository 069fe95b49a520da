//! A network link the tests own: two network namespaces joined by a veth pair, `10.250.N.2` on the agent's side and
//! `10.250.N.1` on the far side. Nothing leaves them; they are deleted (with the veth pair) when dropped. Needs root
//! (CAP_NET_ADMIN and CAP_SYS_ADMIN); [`Link::create`] says why it cannot, so a test can skip clearly.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The two namespaces and the veth pair between them.
pub struct Link {
    pub agent_ns: String,
    pub far_ns: String,
    agent_if: String,
    far_if: String,
    subnet: u8,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Link {
    /// Create the namespaces and the veth pair, addressed and up; `Err` says why not (not root, no `ip`).
    pub fn create() -> Result<Link, String> {
        let n = std::process::id() % 10_000 * 10 + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let link = Link {
            agent_ns: format!("rc-agent-{n}"),
            far_ns: format!("rc-far-{n}"),
            agent_if: format!("rca{n}"),
            far_if: format!("rcf{n}"),
            subnet: (n % 200 + 20) as u8,
        };
        ip(&["netns", "add", &link.agent_ns])?;
        // From here on, Drop removes whatever was made.
        ip(&["netns", "add", &link.far_ns])?;
        ip(&[
            "link",
            "add",
            &link.agent_if,
            "netns",
            &link.agent_ns,
            "type",
            "veth",
            "peer",
            "name",
            &link.far_if,
            "netns",
            &link.far_ns,
        ])?;
        let (a, f) = (link.agent_addr(), link.far_addr());
        ip(&[
            "-n",
            &link.agent_ns,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            &link.agent_if,
        ])?;
        ip(&[
            "-n",
            &link.far_ns,
            "addr",
            "add",
            &format!("{f}/24"),
            "dev",
            &link.far_if,
        ])?;
        for (ns, dev) in [
            (&link.agent_ns, &link.agent_if),
            (&link.far_ns, &link.far_if),
            (&link.agent_ns, &"lo".to_owned()),
            (&link.far_ns, &"lo".to_owned()),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(link)
    }

    pub fn agent_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 2)
    }

    pub fn far_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 1)
    }

    /// Shape both directions with a token bucket (`tc qdisc … tbf`) to `rate` (e.g. `1mbit`).
    pub fn shape(&self, rate: &str) -> Result<(), String> {
        for (ns, dev) in [
            (&self.agent_ns, &self.agent_if),
            (&self.far_ns, &self.far_if),
        ] {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                ])
                .args(["rate", rate, "burst", "64kbit", "latency", "200ms"])
                .output()
                .map_err(|e| format!("cannot run tc: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "tc on {dev}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    /// Take the agent's side of the link down or up (`ip link set … down/up`).
    pub fn set_up(&self, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.agent_ns, "link", "set", &self.agent_if, state])
    }

    /// Drop the agent side's address and give it a new one, as a VPN reconnect does (deleting a primary address
    /// first also deletes the secondaries of its subnet, so the new one comes after). Returns the new one.
    pub fn move_agent(&self) -> Result<Ipv4Addr, String> {
        let new = Ipv4Addr::new(10, 250, self.subnet, 3);
        let old = format!("{}/24", self.agent_addr());
        ip(&[
            "-n",
            &self.agent_ns,
            "addr",
            "del",
            &old,
            "dev",
            &self.agent_if,
        ])?;
        ip(&[
            "-n",
            &self.agent_ns,
            "addr",
            "add",
            &format!("{new}/24"),
            "dev",
            &self.agent_if,
        ])?;
        Ok(new)
    }

    /// Run a command in the agent's namespace: the prefix for [`rollcall_controller::cli::local::LocalAgent::start_in`].
    pub fn in_agent_ns(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.agent_ns]
    }

    /// A listening socket on the far side (`far_addr:port`, 0 for any port). It is made in the far namespace by a
    /// thread that enters it; the socket stays there while this process uses it from anywhere.
    pub fn listen_far(&self, port: u16) -> Result<std::net::TcpListener, String> {
        let path = format!("/var/run/netns/{}", self.far_ns);
        let addr = SocketAddr::from((self.far_addr(), port));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) moves only this short-lived thread into the namespace; the fd is valid while `ns`
            // lives.
            #[allow(unsafe_code)]
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            if !entered {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))
        })
        .join()
        .map_err(|_| "the namespace thread panicked".to_owned())?
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        let _ = ip(&["netns", "del", &self.agent_ns]);
        let _ = ip(&["netns", "del", &self.far_ns]);
    }
}
