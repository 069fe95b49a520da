//! Windows side of configuration profiles. NOT YET VERIFIED: no Windows target is installed on our build machines,
//! so this file has never been compiled. Keep it small and obvious until it is. Registry values go through
//! `reg.exe` (query, add, delete); modes, owners and services are not managed here (the profile engine refuses
//! those items on Windows, so the functions below only keep the seam whole).

use std::io;
use std::path::Path;
use std::process::Command;

use super::{Meta, RegValue};

/// No unix modes or owners here: `mode`, `owner` and `group` are refused on Windows.
pub const OWNERS: bool = false;
/// No systemd here: `[[service]]` items are refused on Windows.
pub const SERVICES: bool = false;
/// `[[registry]]` items apply here.
pub const REGISTRY: bool = true;

/// No modes or owners to tell (NOT YET VERIFIED: ACLs are inherited from the folder).
pub fn meta(_m: &std::fs::Metadata) -> Meta {
    Meta {
        mode: 0,
        uid: 0,
        gid: 0,
    }
}

/// Nothing to set (ACLs are inherited from the folder).
pub fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Nothing to set (owners are not managed on Windows).
pub fn set_owner(_path: &Path, _uid: Option<u32>, _gid: Option<u32>) -> io::Result<()> {
    Ok(())
}

pub fn user_id(_name: &str) -> Result<u32, String> {
    Err("owners apply on Linux only".to_owned())
}

pub fn group_id(_name: &str) -> Result<u32, String> {
    Err("groups apply on Linux only".to_owned())
}

/// Services are not managed on Windows yet.
#[derive(Debug, Clone)]
pub struct ServiceManager;

impl ServiceManager {
    pub fn new(_argv: Vec<String>) -> ServiceManager {
        ServiceManager
    }

    pub fn is_enabled(&self, _unit: &str) -> Result<bool, String> {
        Err("service items apply on Linux only".to_owned())
    }

    pub fn set_enabled(&self, _unit: &str, _enabled: bool) -> Result<(), String> {
        Err("service items apply on Linux only".to_owned())
    }
}

/// The value `name` under `key`, None when `reg query` does not find it (NOT YET VERIFIED: any failure of
/// `reg query` reads as absent).
pub fn registry_read(key: &str, name: &str) -> Result<Option<RegValue>, String> {
    let out = Command::new("reg")
        .args(["query", key, "/v", name])
        .output()
        .map_err(|e| format!("cannot run reg query: {e}"))?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // A value line reads `    Server    REG_SZ    vpn.nss.local`.
    for line in text.lines() {
        let fields: Vec<&str> = line.trim().splitn(3, "    ").collect();
        if fields.len() >= 2 && fields[0] == name {
            let data = fields.get(2).copied().unwrap_or("").trim();
            return match fields[1] {
                "REG_SZ" => Ok(Some(RegValue::String(data.to_owned()))),
                "REG_DWORD" => u32::from_str_radix(data.trim_start_matches("0x"), 16)
                    .map(|n| Some(RegValue::Dword(n)))
                    .map_err(|_| format!("{key}\\{name} holds {data:?}, not a dword")),
                other => Err(format!(
                    "{key}\\{name} has type {other}, which profiles do not manage"
                )),
            };
        }
    }
    Ok(None)
}

pub fn registry_write(key: &str, name: &str, value: &RegValue) -> Result<(), String> {
    let (kind, data) = match value {
        RegValue::String(s) => ("REG_SZ", s.clone()),
        RegValue::Dword(n) => ("REG_DWORD", n.to_string()),
    };
    reg(&[
        "add",
        key,
        "/v",
        name,
        "/t",
        kind,
        "/d",
        data.as_str(),
        "/f",
    ])
}

pub fn registry_delete(key: &str, name: &str) -> Result<(), String> {
    reg(&["delete", key, "/v", name, "/f"])
}

fn reg(args: &[&str]) -> Result<(), String> {
    let out = Command::new("reg")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run reg {}: {e}", args[0]))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "reg {} exited with {}: {}",
        args[0],
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
