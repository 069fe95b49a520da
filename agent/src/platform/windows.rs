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

/// Commands start at once here (no start gate; NOT YET VERIFIED): an agent killed between start and journal
/// leaves a command it cannot wait for.
pub fn gated(argv: &[String]) -> Vec<String> {
    argv.to_vec()
}

/// Free disk space is not checked here yet (NOT YET VERIFIED): downloads start without the check.
pub fn free_space(_path: &std::path::Path) -> Option<u64> {
    None
}

/// Not told on Windows yet (NOT YET VERIFIED): only `metered = true` marks a link metered there.
pub fn interface_towards(_to: std::net::SocketAddr) -> Option<String> {
    None
}

/// Kill the process and its children.
pub fn kill_tree(pid: u32) {
    let _ = std::process::Command::new("taskkill")
        .args(["/T", "/F", "/PID", &pid.to_string()])
        .status();
}

/// No start times here: a reused pid is not told apart (NOT YET VERIFIED).
pub fn start_time(_pid: u32) -> Option<u64> {
    None
}

/// Not known here (NOT YET VERIFIED): the wall clock decides instead.
pub fn seconds_since_start(_start: u64) -> Option<u64> {
    None
}

/// Whether the installer process `pid` still runs (its children are not tracked on Windows yet).
pub fn group_alive(pid: u32, _leader_start: Option<u64>) -> bool {
    std::process::Command::new("tasklist")
        .args(["/NH", "/FI", &format!("PID eq {pid}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&pid.to_string()))
        .unwrap_or(false)
}

/// How a Windows device reboots (NOT YET VERIFIED).
pub fn default_reboot_command() -> Vec<String> {
    vec!["shutdown".into(), "/r".into(), "/t".into(), "60".into()]
}

/// No boot id file on Windows (NOT YET VERIFIED): a file the service writes at boot would do; until then a package
/// that requires a reboot fails there, saying why.
pub fn default_boot_id_file() -> PathBuf {
    default_data_dir().join("boot_id")
}

/// `%ProgramData%\rollcall\agent.toml`.
pub fn default_config_path() -> PathBuf {
    let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
    PathBuf::from(base).join("rollcall").join("agent.toml")
}

/// Resolves on Ctrl-C. The service control manager's Stop must resolve this too once the agent runs as a
/// Windows service (windows-service crate); not done yet.
pub async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Where configuration profiles may write unless the operator says otherwise (NOT YET VERIFIED):
/// `%ProgramData%`. Registry items are not paths and are not limited by this.
pub fn default_profile_paths() -> Vec<PathBuf> {
    let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
    vec![PathBuf::from(base)]
}

/// Installed software from the uninstall registry keys, 64- and 32-bit views (NOT YET VERIFIED): DisplayName,
/// DisplayVersion and Publisher of every entry that has a name and is not a system component.
pub fn installed_software(
    _settings: &crate::config::Settings,
) -> Vec<rollcall_proto::v1::Software> {
    use winreg::enums::HKEY_LOCAL_MACHINE;
    let hklm = winreg::RegKey::predef(HKEY_LOCAL_MACHINE);
    let mut out = Vec::new();
    for (path, arch) in [
        (
            r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall",
            "x64",
        ),
        (
            r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
            "x86",
        ),
    ] {
        let Ok(uninstall) = hklm.open_subkey(path) else {
            continue;
        };
        for name in uninstall.enum_keys().flatten() {
            let Ok(entry) = uninstall.open_subkey(&name) else {
                continue;
            };
            let value = |v: &str| entry.get_value::<String, _>(v).unwrap_or_default();
            let system = entry.get_value::<u32, _>("SystemComponent").unwrap_or(0) == 1;
            let display = value("DisplayName");
            if display.is_empty() || system {
                continue;
            }
            out.push(rollcall_proto::v1::Software {
                name: display,
                version: value("DisplayVersion"),
                arch: arch.to_owned(),
                source: rollcall_proto::v1::SoftwareSource::Windows as i32,
                publisher: value("Publisher"),
            });
        }
    }
    out
}
