//! A device in a temp dir for the profile tests: an allowed folder (`etc`), a folder outside it, a package folder,
//! the profiles root, and the fake systemctl; plus a picture of the whole device to prove a refusal changed nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Applied, Device, ProfileError, Profiles};
use crate::platform::profile::{fake_systemctl, ServiceManager};

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    /// The allowed folder.
    pub etc: PathBuf,
    pub outside: PathBuf,
    pub payload: PathBuf,
    pub profiles: Profiles,
    systemctl: Vec<String>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
        let (etc, outside, payload) =
            (base.join("etc"), base.join("outside"), base.join("payload"));
        for d in [&etc, &outside, &payload] {
            std::fs::create_dir(d).expect("create a fixture folder");
        }
        let systemctl = fake_systemctl(&base);
        std::fs::write(base.join("units"), "").expect("units");
        // A running agent has its profiles root already.
        super::store::private_dir(&base.join("data/profiles")).expect("profiles root");
        let profiles = Profiles::new(
            base.join("data/profiles"),
            vec![etc.clone()],
            systemctl.clone(),
        );
        Fixture {
            dir,
            etc,
            outside,
            payload,
            profiles,
            systemctl,
        }
    }

    pub fn device(&self) -> Device {
        Device {
            allow: vec![self.etc.clone()],
            services: ServiceManager::new(self.systemctl.clone()),
            root: PathBuf::from("/"),
        }
    }

    /// `$ETC` and `$OUT` replaced by the two folders.
    pub fn expand(&self, text: &str) -> String {
        text.replace("$ETC", &self.etc.display().to_string())
            .replace("$OUT", &self.outside.display().to_string())
    }

    /// Writes `profile.toml` (expanded) in the package folder.
    pub fn package(&self, toml: &str) -> &Path {
        std::fs::write(self.payload.join("profile.toml"), self.expand(toml)).expect("profile.toml");
        &self.payload
    }

    /// The profiles root.
    pub fn root(&self) -> PathBuf {
        self.etc.with_file_name("data").join("profiles")
    }

    pub fn apply(&self, name: &str, version: &str, toml: &str) -> Result<Applied, ProfileError> {
        self.package(toml);
        self.profiles.apply_at(name, version, &self.payload, 100)
    }

    /// Applies, expecting a refusal; proves that nothing on the device or in the profiles root changed.
    pub fn refused(&self, name: &str, toml: &str) -> String {
        let before = self.tree();
        let e = self
            .apply(name, "1", toml)
            .expect_err("refused")
            .to_string();
        assert_eq!(self.tree(), before, "nothing changed after: {e}");
        e
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.etc.join(rel)).unwrap_or_else(|e| format!("<{e}>"))
    }

    pub fn units(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("units")).expect("units")
    }

    pub fn enable(&self, unit: &str) {
        self.device()
            .services
            .set_enabled(unit, true)
            .expect("enable");
    }

    /// Every file, folder and link under the temp dir but the package: content, mode and owner.
    pub fn tree(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &self.payload, &mut out);
        out
    }
}

fn walk(base: &Path, dir: &Path, skip: &Path, out: &mut BTreeMap<String, String>) {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries.into_iter().filter(|p| p != skip) {
        let m = std::fs::symlink_metadata(&path).expect("metadata");
        let rel = path
            .strip_prefix(base)
            .expect("inside")
            .display()
            .to_string();
        let owner = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                format!(
                    "link {}",
                    std::fs::read_link(&path).expect("link").display()
                ),
            );
        } else if m.is_dir() {
            out.insert(rel, format!("dir {owner}"));
            walk(base, &path, skip, out);
        } else {
            let bytes = std::fs::read(&path).expect("read");
            out.insert(
                rel,
                format!("file {owner} {}", String::from_utf8_lossy(&bytes)),
            );
        }
    }
}

/// Whether the tests run as root (chown to other users works only then).
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").expect("probe");
    std::fs::metadata(&probe).expect("probe").uid() == 0
}
