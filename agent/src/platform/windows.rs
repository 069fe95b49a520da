//! Windows platform code. NOT YET VERIFIED: no Windows target is installed on our build machines, so this file
//! has never been compiled. Keep it small and obvious until it is.

use std::path::PathBuf;

/// `%ProgramData%\rollcall-agent`.
pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
    PathBuf::from(base).join("rollcall-agent")
}

/// No process groups on Windows; `kill_tree` uses taskkill /T instead.
pub fn prepare_command(_cmd: &mut tokio::process::Command) {}

/// Kill the process and its children.
pub fn kill_tree(pid: u32) {
    let _ = std::process::Command::new("taskkill")
        .args(["/T", "/F", "/PID", &pid.to_string()])
        .status();
}

/// Resolves on Ctrl-C. The service control manager's Stop must resolve this too once the agent runs as a
/// Windows service (windows-service crate); not done yet.
pub async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
