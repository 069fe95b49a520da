//! Configuration profiles: desired state the agent applies all or nothing and keeps applied. A package of kind
//! `config` carries a `profile.toml` (and any files it names); once its payload is verified and extracted, the
//! install path calls [`Profiles::apply`]. The agent's check-in loop calls [`Profiles::check`], which repairs
//! drift and returns one [`DriftEvent`] per drifted item for the controller.
//!
//! Why all or nothing: a half-applied VPN or resolver profile on a patrol car's MDC is worse than none. So every
//! item is checked before anything is written (allow-list, owners, formats…), the state of every
//! target is saved first, and a failing item puts back every one already applied. The state before rollcall ever
//! touched a target is kept for as long as a profile manages it, so removing the profile gives the device back.
//!
//! # `profile.toml`
//!
//! ```toml
//! [profile]
//! restore_on_remove = true   # default true: put back what the profile replaced when it is removed, or when a
//!                            # newer version stops managing an item (the installed version's flag decides)
//! remove = false             # true: this version removes the profile (no items; its own restore_on_remove decides)
//!
//! [[directory]]              # created if missing (its parent must exist, or be an earlier [[directory]])
//! path = "/etc/vpn/certs"
//! mode = "0750"              # optional, four octal digits
//! owner = "root"             # optional: a name (from /etc/passwd) or a numeric id
//! group = "root"             # optional: a name (from /etc/group) or a numeric id
//!
//! [[file]]                   # the whole file, written atomically
//! path = "/etc/vpn/client.conf"
//! content = "server = vpn.nss.local\n"   # or: source = "files/client.conf" (a file in the package)
//! mode = "0644"              # optional; mode, owner and group left out keep the file's own (0644 when new)
//! format = "ini"             # optional: "ini" | "toml" | "json": the content must parse
//!
//! [[setting]]                # one `key = value` in an INI/TOML-style file, created if missing
//! file = "/etc/vpn/agent.ini"
//! section = "network"        # optional: "" or absent = before any [section]
//! key = "dns"
//! value = "10.0.0.53"        # written as is after `key = ` (a TOML string needs its quotes: '"text"')
//!
//! [[line]]                   # a whole line present in a file, appended if missing
//! file = "/etc/hosts"
//! line = "10.1.2.3 records.nss.local"
//!
//! [[service]]                # Linux: a systemd unit enabled or disabled
//! unit = "cups.service"
//! enabled = false
//!
//! [[registry]]               # Windows only (NOT YET VERIFIED): a value under HKLM\
//! key = 'HKLM\SOFTWARE\NSS\VPN'
//! name = "Server"
//! value = "vpn.nss.local"
//! type = "string"            # "string" (default) | "dword" ("1", "0x1f")
//! ```
//!
//! Items apply in this order: directories, files, settings, lines, services, registry values (each kind in the
//! order written). Every path must be absolute, without `..`, and inside one of the allowed folders once symlinks
//! are followed. A file or folder item owns its path; settings and lines may share a file. Two installed profiles
//! never manage the same item.
//!
//! Tested by the unit tests in each file, with real files in temp dirs and a shell script standing in for
//! systemctl (`platform::profile`).

mod allow;
mod drift;
mod enforce;
mod error;
mod install;
mod item;
mod snapshot;
mod spec;
mod store;
mod text;
mod validate;
mod write;

#[cfg(all(test, unix))]
mod fixture;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::ProfileError;

use crate::platform::profile::ServiceManager;
use store::Store;

/// The configuration profiles of this device: where they are kept and what they may touch.
#[derive(Debug)]
pub struct Profiles {
    store: Store,
    device: Device,
}

/// What profiles act on: the allowed folders, the service manager, and where the device's file system is (`/`,
/// or a folder standing for it: an image being prepared, or one of many agents on a test machine).
#[derive(Debug)]
pub(crate) struct Device {
    pub allow: Vec<PathBuf>,
    pub services: ServiceManager,
    pub root: PathBuf,
}

impl Device {
    /// A profile's absolute `path` on this device: under `root` (a relative one stays as it is, to be refused).
    pub(crate) fn locate(&self, path: &str) -> String {
        under_root(&self.root, path)
    }
}

fn under_root(root: &Path, path: &str) -> String {
    match path.strip_prefix('/') {
        Some(rest) if root != Path::new("/") => root.join(rest).to_string_lossy().into_owned(),
        _ => path.to_owned(),
    }
}

/// What an apply did, for the install report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Items changed (or put back); 0 when everything was already in place.
    pub changed: usize,
    /// One line for the report: `profile vpn 2: 3 items changed, 2 already in place`.
    pub detail: String,
}

/// An installed profile, for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledProfile {
    pub name: String,
    pub version: String,
    /// Unix seconds.
    pub applied_at: i64,
    pub items: usize,
}

/// One drifted item, found by `check`: sent to the controller so a field tech sees who keeps changing what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DriftEvent {
    pub profile: String,
    /// `file /etc/vpn/client.conf`.
    pub item: String,
    /// `content changed`, `mode 0600, wanted 0644`, `missing`, `unit cups.service is enabled, wanted disabled`.
    pub what: String,
    /// Unix seconds.
    pub at: i64,
    pub repaired: bool,
    /// Why the repair failed (empty when repaired).
    pub error: String,
}

impl Profiles {
    /// `root` is `data_dir/profiles`; `allow` the folders profiles may touch (absolute); `service_manager` the
    /// argv prefix of systemctl (`["systemctl"]` when empty).
    pub fn new(root: PathBuf, allow: Vec<PathBuf>, service_manager: Vec<String>) -> Profiles {
        Profiles {
            store: Store::new(root),
            device: Device {
                allow,
                services: ServiceManager::new(service_manager),
                root: PathBuf::from("/"),
            },
        }
    }

    /// Profiles of a device whose file system is at `root` (the agent's `profile_root`): every path a profile
    /// names, and every allowed folder, is taken under it.
    pub fn under(mut self, root: PathBuf) -> Profiles {
        if root != Path::new("/") {
            self.device.allow = self
                .device
                .allow
                .iter()
                .map(|a| PathBuf::from(under_root(&root, &a.to_string_lossy())))
                .collect();
            self.device.root = root;
        }
        self
    }

    /// Checks `payload_dir/profile.toml` of package `name` at `version`, then applies it all or nothing. Blocking
    /// (files, systemctl): call it from `spawn_blocking`.
    pub fn apply(
        &self,
        name: &str,
        version: &str,
        payload_dir: &Path,
    ) -> Result<Applied, ProfileError> {
        self.apply_at(name, version, payload_dir, unix_now())
    }

    /// `apply`, with the time recorded as `applied_at` given.
    pub fn apply_at(
        &self,
        name: &str,
        version: &str,
        payload_dir: &Path,
        now: i64,
    ) -> Result<Applied, ProfileError> {
        install::apply(&self.store, &self.device, name, version, payload_dir, now)
    }

    /// Re-checks every installed profile and repairs drift: one event per drifted item, repaired or not.
    /// Blocking, like `apply`.
    pub fn check(&self, now: i64) -> Vec<DriftEvent> {
        drift::check_all(&self.store, &self.device, now)
    }

    /// The installed profiles, by name.
    pub fn installed(&self) -> Vec<InstalledProfile> {
        self.store.list()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn under_a_device_root_every_path_and_allowed_folder_is_taken_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("device");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let payload = dir.path().join("payload");
        std::fs::create_dir_all(&payload).unwrap();
        let profiles = Profiles::new(
            dir.path().join("profiles"),
            vec![PathBuf::from("/etc")],
            Vec::new(),
        )
        .under(root.clone());

        std::fs::write(
            payload.join("profile.toml"),
            "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"a = 1\\n\"\n",
        )
        .unwrap();
        profiles.apply("app", "1", &payload).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
            "a = 1\n"
        );

        // Outside the allowed folder, and out of the root through a symlink: refused, nothing written.
        std::fs::create_dir_all(dir.path().join("real-outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real-outside"), root.join("etc/link")).unwrap();
        for (path, words) in [
            ("/srv/x.conf", "outside the allowed folders"),
            ("/etc/link/x.conf", "through a symlink"),
        ] {
            std::fs::write(
                payload.join("profile.toml"),
                format!("[[file]]\npath = \"{path}\"\ncontent = \"x\"\n"),
            )
            .unwrap();
            let e = profiles
                .apply("bad", "1", &payload)
                .unwrap_err()
                .to_string();
            assert!(e.contains(words), "{path}: {e}");
        }
        assert!(!dir.path().join("real-outside/x.conf").exists());
        assert!(!root.join("srv").exists());
    }
}
