//! Linux side of configuration profiles: modes and owners through std's safe unix calls, user and group names read
//! from /etc/passwd and /etc/group (no libc lookups, so no `unsafe`), and systemd units through `systemctl` (or the
//! argv prefix the agent is configured with). No registry here.
//!
//! Tested below with real files in temp dirs and a shell script standing in for systemctl.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{Meta, RegValue};

/// Files and folders have modes and owners here.
pub const OWNERS: bool = true;
/// `[[service]]` items apply here (systemd).
pub const SERVICES: bool = true;
/// No registry here: `[[registry]]` items are refused.
pub const REGISTRY: bool = false;

/// The permission bits (with setuid, setgid and sticky) and owner of a file or folder.
pub fn meta(m: &std::fs::Metadata) -> Meta {
    Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    }
}

pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Changes the owner and group; call it before `set_mode`, as chown clears the setuid and setgid bits.
pub fn set_owner(path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, uid, gid)
}

/// A user name or numeric id → the user id.
pub fn user_id(name: &str) -> Result<u32, String> {
    id_of(name, "user", Path::new("/etc/passwd"))
}

/// A group name or numeric id → the group id.
pub fn group_id(name: &str) -> Result<u32, String> {
    id_of(name, "group", Path::new("/etc/group"))
}

fn id_of(name: &str, what: &str, db: &Path) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(db).map_err(|e| {
        format!(
            "cannot read {} to look up {what} {name:?}: {e}",
            db.display()
        )
    })?;
    id_in(&text, name).ok_or_else(|| format!("no {what} named {name:?} in {}", db.display()))
}

/// The id of `name` in /etc/passwd or /etc/group text (`name:x:id:…`).
fn id_in(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// systemd units, through `systemctl is-enabled | enable | disable UNIT` run with a configurable argv prefix.
#[derive(Debug, Clone)]
pub struct ServiceManager {
    argv: Vec<String>,
}

impl ServiceManager {
    /// `argv` is the command prefix (`["systemctl"]` when empty).
    pub fn new(argv: Vec<String>) -> ServiceManager {
        let argv = if argv.is_empty() {
            vec!["systemctl".to_owned()]
        } else {
            argv
        };
        ServiceManager { argv }
    }

    /// Exit status 0 of `is-enabled` means enabled; any other exit means not.
    pub fn is_enabled(&self, unit: &str) -> Result<bool, String> {
        Ok(self.run("is-enabled", unit)?.status.success())
    }

    pub fn set_enabled(&self, unit: &str, enabled: bool) -> Result<(), String> {
        let verb = if enabled { "enable" } else { "disable" };
        let out = self.run(verb, unit)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} {verb} {unit} exited with {}: {}",
            self.argv.join(" "),
            out.status
                .code()
                .map_or("a signal".to_owned(), |c| c.to_string()),
            stderr.trim()
        ))
    }

    fn run(&self, verb: &str, unit: &str) -> Result<Output, String> {
        Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args([verb, unit])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} {verb} {unit}: {e}", self.argv.join(" ")))
    }
}

pub fn registry_read(_key: &str, _name: &str) -> Result<Option<RegValue>, String> {
    Err("registry items apply on Windows only".to_owned())
}

pub fn registry_write(_key: &str, _name: &str, _value: &RegValue) -> Result<(), String> {
    Err("registry items apply on Windows only".to_owned())
}

pub fn registry_delete(_key: &str, _name: &str) -> Result<(), String> {
    Err("registry items apply on Windows only".to_owned())
}

/// A shell script that keeps the enabled units in `units` beside it, for tests; `broken*` units cannot change.
#[cfg(test)]
pub(crate) fn fake_systemctl(dir: &Path) -> Vec<String> {
    let script = dir.join("systemctl");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         units=\"$(dirname \"$0\")/units\"\n\
         touch \"$units\"\n\
         case \"$1:$2\" in\n\
         enable:broken*|disable:broken*) echo \"Failed to $1 unit: Unit file $2 does not exist.\" >&2; exit 1 ;;\n\
         is-enabled:*) grep -qx \"$2\" \"$units\" ;;\n\
         enable:*) grep -qx \"$2\" \"$units\" || echo \"$2\" >> \"$units\" ;;\n\
         disable:*) grep -vx \"$2\" \"$units\" > \"$units.new\"; mv \"$units.new\" \"$units\" ;;\n\
         *) echo \"unknown command $1\" >&2; exit 2 ;;\n\
         esac\n",
    )
    .expect("write the fake systemctl");
    // Run through sh: executing a script just written races with forks in parallel tests (ETXTBSY).
    vec!["/bin/sh".to_owned(), script.display().to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_to_ids() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nvpn:x:998:997::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(id_in(passwd, "vpn"), Some(998));
        assert_eq!(id_in(passwd, "vp"), None);
        assert_eq!(user_id("4321"), Ok(4321));
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        assert_eq!(
            user_id("no-such-user-rollcall").unwrap_err(),
            "no user named \"no-such-user-rollcall\" in /etc/passwd"
        );
        assert_eq!(
            group_id("no-such-group-rollcall").unwrap_err(),
            "no group named \"no-such-group-rollcall\" in /etc/group"
        );
    }

    #[test]
    fn units_are_enabled_and_disabled_through_the_configured_command() {
        let dir = tempfile::tempdir().unwrap();
        let services = ServiceManager::new(fake_systemctl(dir.path()));
        assert_eq!(services.is_enabled("cups.service"), Ok(false));
        services.set_enabled("cups.service", true).unwrap();
        assert_eq!(services.is_enabled("cups.service"), Ok(true));
        services.set_enabled("cups.service", false).unwrap();
        assert_eq!(services.is_enabled("cups.service"), Ok(false));
        let e = services.set_enabled("broken.service", true).unwrap_err();
        assert!(
            e.contains("enable broken.service exited with 1: Failed to enable unit"),
            "{e}"
        );
        let missing = ServiceManager::new(vec![dir.path().join("nope").display().to_string()]);
        assert!(missing
            .is_enabled("cups.service")
            .unwrap_err()
            .starts_with("cannot run "));
    }

    #[test]
    fn mode_and_owner_are_set_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        set_mode(&path, 0o640).unwrap();
        let m = meta(&std::fs::metadata(&path).unwrap());
        assert_eq!(m.mode, 0o640);
        if m.uid != 0 {
            eprintln!("not root: chown not checked");
            return;
        }
        set_owner(&path, Some(4321), Some(4322)).unwrap();
        let m = meta(&std::fs::metadata(&path).unwrap());
        assert_eq!((m.uid, m.gid), (4321, 4322));
    }
}
