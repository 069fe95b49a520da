//! The platform side of configuration profiles (`crate::profile`): what a profile changes that differs between
//! systems. File modes and owners (user and group names read from /etc/passwd and /etc/group) and systemd units
//! exist on Linux (`unix.rs`, complete and tested); the registry exists on Windows (`windows.rs`, small and NOT YET
//! VERIFIED: no Windows target on our build machines). The profile engine asks `OWNERS`, `SERVICES` and `REGISTRY`
//! which kinds of item this system has, and refuses the others with words before anything is written.

use serde::{Deserialize, Serialize};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{
    group_id, meta, registry_delete, registry_read, registry_write, set_mode, set_owner, user_id,
    ServiceManager, OWNERS, REGISTRY, SERVICES,
};

#[cfg(all(test, unix))]
pub(crate) use imp::fake_systemctl;

/// The permission bits and owner of a file or folder (all 0 where the system has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A registry value a profile sets: the two types profiles manage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum RegValue {
    String(String),
    Dword(u32),
}

impl std::fmt::Display for RegValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegValue::String(s) => write!(f, "{s:?}"),
            RegValue::Dword(n) => write!(f, "dword {n}"),
        }
    }
}
