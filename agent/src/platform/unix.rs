//! Linux (and other unix) platform code.

use std::path::PathBuf;

/// `/var/lib/rollcall-agent`, the systemd unit's StateDirectory.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/rollcall-agent")
}

/// Run install commands in their own process group, so a timeout kills everything they started.
pub fn prepare_command(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
}

/// The command line that runs `argv` only once the agent says so: a shell that reads one line from its stdin (a
/// pipe from the agent), then becomes the signed command. The agent writes that line after the journal holds the
/// command's process group; an agent killed before that closes the pipe, and the command never starts.
pub fn gated(argv: &[String]) -> Vec<String> {
    let mut gated = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "read -r _ || exit 125; exec \"$@\" </dev/null".to_owned(),
        "rollcall-install".to_owned(),
    ];
    gated.extend(argv.iter().cloned());
    gated
}

/// Bytes free for an unprivileged user on the file system holding `path` (None when it cannot be told).
pub fn free_space(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) writes only into the zeroed struct we pass; `c` is a valid NUL-terminated path.
    #[allow(unsafe_code)]
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
}

/// The name of the network interface traffic to `to` leaves through (None when it cannot be told). A connected UDP
/// socket sends nothing: the kernel only picks the route and the local address, whose interface is looked up.
pub fn interface_towards(to: std::net::SocketAddr) -> Option<String> {
    let any: std::net::SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(to).ok()?;
    let local = socket.local_addr().ok()?.ip();
    interface_with(local)
}

/// The interface holding the address `ip`.
fn interface_with(ip: std::net::IpAddr) -> Option<String> {
    let mut found = None;
    // SAFETY: getifaddrs(3) hands us a list we only read and give back with freeifaddrs(3); every pointer is
    // checked for null before it is read, and the sockaddr is read as the family it says it is.
    #[allow(unsafe_code)]
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() && found.is_none() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let addr: Option<std::net::IpAddr> = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
                }
                _ => None,
            };
            if addr == Some(ip) {
                found = Some(
                    std::ffi::CStr::from_ptr(ifa.ifa_name)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Kill the process group led by `pid`.
pub fn kill_tree(pid: u32) {
    let Ok(pgid) = i32::try_from(pid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// When the process `pid` started (clock ticks since boot, `/proc/<pid>/stat` field 22): with the pid it names one
/// process for good, so a pid the kernel has since given to another process is never mistaken for it.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (the command name) may hold spaces and parentheses: count fields after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Seconds since a process of this boot started at `start` (its [`start_time`]), from the boot clock: unlike the
/// wall clock, it cannot be stepped back or forward.
pub fn seconds_since_start(start: u64) -> Option<u64> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let up_ticks = (uptime * hz as f64) as u64;
    Some(up_ticks.saturating_sub(start) / hz)
}

/// Whether any process is left in the process group an installer led (`pgid`, started at `leader_start`).
/// A live process with the leader's pid but another start time means the group ended and the pid was reused
/// (the kernel never hands out a pid that still names a group): then nothing of ours is left.
pub fn group_alive(pgid: u32, leader_start: Option<u64>) -> bool {
    let Ok(id) = i32::try_from(pgid) else {
        return false;
    };
    if id <= 1 {
        return false;
    }
    if let (Some(expected), Some(now)) = (leader_start, start_time(pgid)) {
        if expected != now {
            return false;
        }
    }
    // SAFETY: kill(2) with signal 0 only checks that the group exists; it touches no memory of ours.
    #[allow(unsafe_code)]
    let found = unsafe { libc::kill(-id, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How a Linux device reboots when a package requires it (systemd).
pub fn default_reboot_command() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}

/// The kernel's id of this boot.
pub fn default_boot_id_file() -> PathBuf {
    PathBuf::from("/proc/sys/kernel/random/boot_id")
}

/// The operator's settings file.
pub fn default_config_path() -> PathBuf {
    PathBuf::from("/etc/rollcall/agent.toml")
}

/// Resolves on SIGTERM (systemd stop) or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Where configuration profiles may write unless the operator says otherwise: system configuration.
pub fn default_profile_paths() -> Vec<PathBuf> {
    vec![PathBuf::from("/etc")]
}

/// Installed software from the package databases `settings` name (Linux; none elsewhere yet).
pub fn installed_software(settings: &crate::config::Settings) -> Vec<rollcall_proto::v1::Software> {
    if cfg!(target_os = "linux") {
        crate::inventory::software::linux(&settings.dpkg_status, &settings.rpm_db)
    } else {
        Vec::new()
    }
}
