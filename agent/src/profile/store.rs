//! Where installed profiles live, under `root` (the agent's `data_dir/profiles`), private to the agent (folders
//! 0700, files 0600: a profile may carry secrets):
//!
//! ```text
//! root/<name>/installed.json     name, version, applied_at, item count
//! root/<name>/payload/           profile.toml and its `source` files: the desired state, so drift repair
//!                                needs no package
//! root/<name>/before/            the state before rollcall touched each target (index.json + blobs/)
//! root/.new-<name>/              an apply or removal in progress: the above, plus txn/ (the state right before)
//! root/.old-<name>/              the previous version, while the new one takes its place
//! ```
//!
//! An apply stages everything in `.new-<name>` before it changes the device, writes `installed.json` there once
//! every item applied (the commit), then swaps the folders. `recover` finishes or undoes whatever a crash left:
//! a staged folder without `installed.json` means the device may be half changed, and `txn/` puts it back.

use std::path::{Path, PathBuf};

use super::item::{Item, Profile};
use super::snapshot::Snapshot;
use super::{Device, InstalledProfile, ProfileError};
use crate::platform::profile as platform;

const RECORD: &str = "installed.json";

#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn staging(&self, name: &str) -> PathBuf {
        self.root.join(format!(".new-{name}"))
    }

    fn retired(&self, name: &str) -> PathBuf {
        self.root.join(format!(".old-{name}"))
    }

    /// The stored copy of an installed profile's payload.
    pub fn payload(&self, name: &str) -> PathBuf {
        self.dir(name).join("payload")
    }

    pub fn record(&self, name: &str) -> Result<Option<InstalledProfile>, ProfileError> {
        let path = self.dir(name).join(RECORD);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ProfileError::store(name, &path, format!("it is damaged: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProfileError::store(name, &path, e)),
        }
    }

    /// The state before rollcall touched the installed profile's targets.
    pub fn before(&self, name: &str) -> Result<Snapshot, String> {
        Snapshot::load(&self.dir(name).join("before"))
    }

    /// Installed profiles by name.
    pub fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && self.dir(n).join(RECORD).is_file())
            .collect();
        names.sort();
        names
    }

    pub fn list(&self) -> Vec<InstalledProfile> {
        let records = self.names().into_iter().map(|n| (self.record(&n), n));
        records
            .filter_map(|(record, name)| match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(profile = %name, error = %e, "Installed profile record unreadable.");
                    None
                }
            })
            .collect()
    }

    /// Writes the new state of `name` beside the current one before the device changes: the payload copy and the
    /// original states (for an apply), and the states right before (`txn`, for any change).
    pub fn stage(
        &self,
        name: &str,
        apply: Option<(&Path, &Profile, &Snapshot)>,
        txn: &Snapshot,
    ) -> Result<(), ProfileError> {
        let staging = self.staging(name);
        self.discard(name);
        let fail = |e: String| ProfileError::store(name, &staging, e);
        private_dir(&staging).map_err(|e| fail(e.to_string()))?;
        if let Some((payload, profile, before)) = apply {
            copy_payload(payload, profile, &staging.join("payload")).map_err(fail)?;
            before.save(&staging.join("before")).map_err(fail)?;
        }
        txn.save(&staging.join("txn")).map_err(fail)
    }

    /// The commit of an apply: the record written in the staged folder, which then takes the current one's place.
    pub fn commit(&self, name: &str, record: &InstalledProfile) -> Result<(), ProfileError> {
        let path = self.staging(name).join(RECORD);
        let json =
            serde_json::to_vec_pretty(record).map_err(|e| ProfileError::store(name, &path, e))?;
        private_file(&path, &json).map_err(|e| ProfileError::store(name, &path, e))?;
        self.finish(name)
    }

    /// Swaps a committed staged folder in.
    fn finish(&self, name: &str) -> Result<(), ProfileError> {
        let (dir, staging, retired) = (self.dir(name), self.staging(name), self.retired(name));
        let _ = std::fs::remove_dir_all(staging.join("txn"));
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&retired);
            std::fs::rename(&dir, &retired).map_err(|e| ProfileError::store(name, &dir, e))?;
        }
        std::fs::rename(&staging, &dir).map_err(|e| ProfileError::store(name, &staging, e))?;
        let _ = std::fs::remove_dir_all(&retired);
        Ok(())
    }

    /// The commit of a removal (or of forgetting): the profile's folder is retired first, then everything goes.
    pub fn forget(&self, name: &str) -> Result<(), ProfileError> {
        let (dir, retired) = (self.dir(name), self.retired(name));
        let _ = std::fs::remove_dir_all(&retired);
        std::fs::rename(&dir, &retired).map_err(|e| ProfileError::store(name, &dir, e))?;
        self.discard(name);
        let _ = std::fs::remove_dir_all(&retired);
        Ok(())
    }

    /// Drops a staged change that did not happen.
    pub fn discard(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.staging(name));
    }

    /// Finishes or undoes what a crash left, so the device and the records agree again. Returns the profiles
    /// whose half-done change could not be put back, with why (their staged folder stays for the next try).
    pub fn recover(&self, device: &Device) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let leftovers: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".new-") || n.starts_with(".old-"))
            .collect();
        let mut failed = Vec::new();
        for leftover in leftovers {
            let name = &leftover[5..];
            if let Err(e) = self.recover_one(name, &leftover, device) {
                tracing::warn!(profile = %name, error = %e, "Interrupted profile change not put back.");
                failed.push((name.to_owned(), e));
            }
        }
        failed
    }

    fn recover_one(&self, name: &str, leftover: &str, device: &Device) -> Result<(), String> {
        let (dir, staging, retired) = (self.dir(name), self.staging(name), self.retired(name));
        if leftover.starts_with(".old-") {
            if !staging.exists() {
                let _ = std::fs::remove_dir_all(&retired);
            }
            return Ok(());
        }
        if staging.join(RECORD).is_file() {
            tracing::info!(profile = %name, "Finishing an applied profile change cut off by a restart.");
            return self.finish(name).map_err(|e| e.to_string());
        }
        if !dir.exists() && retired.exists() {
            self.discard(name);
            let _ = std::fs::remove_dir_all(&retired);
            return Ok(());
        }
        tracing::warn!(profile = %name, "Putting back a profile change cut off by a restart.");
        let txn = Snapshot::load(&staging.join("txn"))?;
        super::install::rollback(&txn, device)?;
        self.discard(name);
        Ok(())
    }
}

/// Copies `profile.toml` and every `source` file of `profile` from the package into `to`.
fn copy_payload(payload: &Path, profile: &Profile, to: &Path) -> Result<(), String> {
    let sources = profile.items.iter().filter_map(|i| match i {
        Item::File(f) => f.source.as_deref(),
        _ => None,
    });
    for rel in std::iter::once("profile.toml").chain(sources) {
        let (from, dest) = (payload.join(rel), to.join(rel));
        let bytes =
            std::fs::read(&from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        if let Some(parent) = dest.parent() {
            private_dir(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        private_file(&dest, &bytes).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    Ok(())
}

/// Creates `path` (and what is missing above it) readable by the agent only.
pub(crate) fn private_dir(path: &Path) -> std::io::Result<()> {
    if !path.is_dir() {
        if let Some(parent) = path.parent().filter(|p| !p.exists()) {
            private_dir(parent)?;
        }
        std::fs::create_dir(path)?;
    }
    platform::set_mode(path, 0o700)
}

/// Writes `path` atomically, readable by the agent only.
pub(crate) fn private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::state::write_atomic(path, bytes, 0o600)
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::profile::fixture::Fixture;
    use crate::profile::item::Target;

    #[test]
    fn the_saved_and_desired_state_is_private_to_the_agent() {
        use std::os::unix::fs::PermissionsExt;
        let fx = Fixture::new();
        std::fs::write(fx.etc.join("client.conf"), "secret = 1\n").unwrap();
        std::fs::create_dir(fx.payload.join("files")).unwrap();
        std::fs::write(fx.payload.join("files/client.conf"), "secret = 2\n").unwrap();
        fx.apply(
            "vpn",
            "1",
            "[[file]]\npath = \"$ETC/client.conf\"\nsource = \"files/client.conf\"\n",
        )
        .unwrap();
        let root = fx.root();
        let mut seen = 0;
        let mut folders = vec![root.clone()];
        while let Some(dir) = folders.pop() {
            assert_eq!(
                std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700,
                "{}",
                dir.display()
            );
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                if path.is_dir() {
                    folders.push(path);
                } else {
                    assert_eq!(mode, 0o600, "{}", path.display());
                    seen += 1;
                }
            }
        }
        // installed.json, payload/profile.toml, payload/files/client.conf, before/index.json, one blob.
        assert_eq!(seen, 5);
        assert!(root.join("vpn/payload/files/client.conf").is_file());
    }

    #[test]
    fn a_change_cut_off_by_a_crash_is_put_back() {
        let fx = Fixture::new();
        let device = fx.device();
        let store = Store::new(fx.root());
        std::fs::write(fx.etc.join("client.conf"), "original\n").unwrap();
        let before = fx.tree();
        let targets = vec![
            Target::Path {
                path: fx.etc.join("client.conf"),
            },
            Target::Path {
                path: fx.etc.join("new.conf"),
            },
        ];
        let txn = Snapshot::capture(targets, &device).unwrap();
        store.stage("vpn", None, &txn).unwrap();
        // The apply got this far when the power went.
        std::fs::write(fx.etc.join("client.conf"), "half\n").unwrap();
        std::fs::write(fx.etc.join("new.conf"), "half\n").unwrap();

        assert_eq!(fx.profiles.check(200), vec![]);
        assert_eq!(
            fx.tree(),
            before,
            "the device is back and the staged change gone"
        );
    }
}
