//! What the device looked like before a profile changed it: one saved state per `Target` (a file's bytes, mode
//! and owner, or that it was absent; a folder's mode and owner; whether a unit was enabled; a registry value).
//! Two snapshots serve two purposes: the state before rollcall ever touched a target, kept in `before/` for as
//! long as a profile manages it (removal restores it), and the state right before one apply, kept in `txn/` while
//! the apply runs (a failure, or a crash, puts the device back exactly). On disk: `index.json` plus one blob per
//! file content, named by its sha256 and checked against it when read back.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::item::Target;
use super::store::{private_dir, private_file};
use super::write::{write_file, Perms};
use super::Device;
use crate::platform::profile::{self as platform, RegValue};

/// The state of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub(crate) enum Saved {
    Absent,
    File {
        #[serde(skip)]
        bytes: Vec<u8>,
        sha256: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Directory {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Service {
        enabled: bool,
    },
    Registry {
        value: Option<RegValue>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub target: Target,
    pub saved: Saved,
}

/// Saved states in the order they were taken (restores run the other way).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub entries: Vec<Entry>,
}

impl Snapshot {
    /// Saves every target once, in order; the error names the target that could not be saved.
    pub fn capture(targets: Vec<Target>, device: &Device) -> Result<Snapshot, (Target, String)> {
        let mut snapshot = Snapshot::default();
        for target in targets {
            if snapshot.get(&target).is_none() {
                let saved = capture(&target, device).map_err(|e| (target.clone(), e))?;
                snapshot.entries.push(Entry { target, saved });
            }
        }
        Ok(snapshot)
    }

    pub fn get(&self, target: &Target) -> Option<&Saved> {
        self.entries
            .iter()
            .find(|e| &e.target == target)
            .map(|e| &e.saved)
    }

    /// Writes `dir/index.json` last, after every blob, so an index never names a blob that is not there.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let blobs = dir.join("blobs");
        private_dir(&blobs).map_err(|e| format!("cannot create {}: {e}", blobs.display()))?;
        for entry in &self.entries {
            if let Saved::File { bytes, sha256, .. } = &entry.saved {
                let path = blobs.join(sha256);
                private_file(&path, bytes)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        let index = dir.join("index.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        private_file(&index, &json).map_err(|e| format!("cannot write {}: {e}", index.display()))
    }

    pub fn load(dir: &Path) -> Result<Snapshot, String> {
        let index = dir.join("index.json");
        let text =
            std::fs::read(&index).map_err(|e| format!("cannot read {}: {e}", index.display()))?;
        let mut snapshot: Snapshot = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is damaged: {e}", index.display()))?;
        for entry in &mut snapshot.entries {
            if let Saved::File { bytes, sha256, .. } = &mut entry.saved {
                let path = dir.join("blobs").join(&*sha256);
                *bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if hash(bytes) != *sha256 {
                    return Err(format!(
                        "{} is damaged: its content does not match its name",
                        path.display()
                    ));
                }
            }
        }
        Ok(snapshot)
    }
}

/// The current state of `target`.
pub(crate) fn capture(target: &Target, device: &Device) -> Result<Saved, String> {
    match target {
        Target::Path { path } => capture_path(path),
        Target::Service { unit } => Ok(Saved::Service {
            enabled: device.services.is_enabled(unit)?,
        }),
        Target::Registry { key, name } => Ok(Saved::Registry {
            value: platform::registry_read(key, name)?,
        }),
    }
}

fn capture_path(path: &Path) -> Result<Saved, String> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::Absent),
        Err(e) => return Err(format!("cannot look at {}: {e}", path.display())),
    };
    let meta = platform::meta(&m);
    if m.is_dir() {
        return Ok(Saved::Directory {
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
        });
    }
    if !m.is_file() {
        return Err(format!("{} is neither a file nor a folder", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Saved::File {
        sha256: hash(&bytes),
        bytes,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
    })
}

/// Puts `target` back as `saved` says; false when it already was. A folder that was absent and now holds files
/// someone else put there is left in place (with a warning): deleting their files is not ours to do.
pub(crate) fn restore(target: &Target, saved: &Saved, device: &Device) -> Result<bool, String> {
    if capture(target, device)? == *saved {
        return Ok(false);
    }
    match (target, saved) {
        (Target::Path { path }, Saved::Absent) => return remove_path(path),
        (
            Target::Path { path },
            Saved::File {
                bytes,
                mode,
                uid,
                gid,
                ..
            },
        ) => {
            let perms = Perms {
                mode: *mode,
                uid: Some(*uid),
                gid: Some(*gid),
            };
            write_file(path, bytes, perms)?;
        }
        (Target::Path { path }, Saved::Directory { mode, uid, gid }) => {
            let fail =
                |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
            if !path.is_dir() {
                std::fs::create_dir(path).map_err(|e| fail("create folder", e))?;
            }
            platform::set_owner(path, Some(*uid), Some(*gid))
                .map_err(|e| fail("change the owner of", e))?;
            platform::set_mode(path, *mode).map_err(|e| fail("set the mode of", e))?;
        }
        (Target::Service { unit }, Saved::Service { enabled }) => {
            device.services.set_enabled(unit, *enabled)?;
        }
        (Target::Registry { key, name }, Saved::Registry { value: Some(v) }) => {
            platform::registry_write(key, name, v)?;
        }
        (Target::Registry { key, name }, Saved::Registry { value: None }) => {
            platform::registry_delete(key, name)?;
        }
        _ => return Err(format!("the saved state of {target} does not fit it")),
    }
    Ok(true)
}

fn remove_path(path: &Path) -> Result<bool, String> {
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    let removed = if is_dir {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
            tracing::warn!(folder = %path.display(), "A folder a profile created holds other files; left in place.");
            Ok(false)
        }
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::profile::fixture::Fixture;

    #[test]
    fn saved_states_survive_a_round_trip_and_damage_is_caught() {
        let fx = Fixture::new();
        let file = fx.etc.join("client.conf");
        std::fs::write(&file, b"secret").unwrap();
        let targets = vec![
            Target::Path { path: file.clone() },
            Target::Path {
                path: fx.etc.clone(),
            },
            Target::Path {
                path: fx.etc.join("absent"),
            },
            Target::Service {
                unit: "cups.service".into(),
            },
            Target::Path { path: file.clone() },
        ];
        let snapshot = Snapshot::capture(targets, &fx.device()).unwrap();
        assert_eq!(snapshot.entries.len(), 4, "each target once");
        let dir = fx.dir.path().join("snap");
        snapshot.save(&dir).unwrap();
        assert_eq!(Snapshot::load(&dir).unwrap(), snapshot);

        let blob = dir.join("blobs").join(hash(b"secret"));
        std::fs::write(&blob, b"tampered").unwrap();
        let e = Snapshot::load(&dir).unwrap_err();
        assert!(
            e.ends_with("is damaged: its content does not match its name"),
            "{e}"
        );
    }

    #[test]
    fn restore_puts_back_files_folders_and_absence() {
        let fx = Fixture::new();
        let device = fx.device();
        let file = Target::Path {
            path: fx.etc.join("a.conf"),
        };
        let folder = Target::Path {
            path: fx.etc.join("certs"),
        };
        std::fs::write(fx.etc.join("a.conf"), b"one").unwrap();
        let before = Snapshot::capture(vec![file.clone(), folder.clone()], &device).unwrap();
        let tree = fx.tree();

        std::fs::write(fx.etc.join("a.conf"), b"two").unwrap();
        std::fs::create_dir(fx.etc.join("certs")).unwrap();
        assert_eq!(
            restore(&folder, before.get(&folder).unwrap(), &device),
            Ok(true)
        );
        assert_eq!(
            restore(&file, before.get(&file).unwrap(), &device),
            Ok(true)
        );
        assert_eq!(fx.tree(), tree);
        assert_eq!(
            restore(&file, before.get(&file).unwrap(), &device),
            Ok(false),
            "already so"
        );

        std::fs::create_dir(fx.etc.join("certs")).unwrap();
        std::fs::write(fx.etc.join("certs/theirs.pem"), b"").unwrap();
        assert_eq!(
            restore(&folder, before.get(&folder).unwrap(), &device),
            Ok(false)
        );
        assert!(
            fx.etc.join("certs/theirs.pem").exists(),
            "other files are never deleted"
        );
    }
}
