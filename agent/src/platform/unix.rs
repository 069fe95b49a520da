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
