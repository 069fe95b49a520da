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

/// Kill the process group led by `pid`.
pub fn kill_tree(pid: u32) {
    let Ok(pgid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
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
