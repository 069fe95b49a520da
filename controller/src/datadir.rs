//! The controller's data directory: where every file lives, in one place.

use std::path::{Path, PathBuf};

/// Paths inside a controller data directory (`rollcall-controller init --data DIR`).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("controller.toml")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca/ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca/ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("tls/server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("tls/server.key")
    }
    pub fn snapshot_key(&self) -> PathBuf {
        self.root.join("tuf/snapshot.pk8")
    }
    pub fn timestamp_key(&self) -> PathBuf {
        self.root.join("tuf/timestamp.pk8")
    }
    /// Public half of the online keys, for the admin who signs root.json.
    pub fn online_keys(&self) -> PathBuf {
        self.root.join("tuf/online-keys.json")
    }
    /// The first admin's credentials (`ca.crt`, `client.crt`, `client.key`), to copy to an admin workstation.
    pub fn admin_creds(&self) -> PathBuf {
        self.root.join("admin")
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    /// Written by `serve` once it listens: the bound address, for scripts and tests that asked for port 0.
    pub fn addr_file(&self) -> PathBuf {
        self.root.join("controller.addr")
    }
}
