//! The items of a validated profile: paths resolved inside the allow-list, owners resolved to ids, file contents
//! read. Each item names itself (`label`, also its identity from one version of a profile to the next) and the
//! thing on the device it touches (`Target`), which is what gets saved before a change and put back after.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::platform::profile::RegValue;

/// A profile ready to apply: its items in the order they apply (folders, files, settings, lines, services,
/// registry values; each kind in the order written).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    pub restore_on_remove: bool,
    pub remove: bool,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    File(FileItem),
    Directory(DirItem),
    Setting(SettingItem),
    Line(LineItem),
    Service(ServiceItem),
    Registry(RegistryItem),
}

/// The mode and owner an item asks for; what it leaves out is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Attrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileItem {
    /// As written in the profile.
    pub path: String,
    /// Where it is once symlinks are followed: what is read and written.
    pub real: PathBuf,
    pub content: Vec<u8>,
    /// The payload file the content came from, copied beside the stored profile.
    pub source: Option<String>,
    pub attrs: Attrs,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DirItem {
    pub path: String,
    pub real: PathBuf,
    pub attrs: Attrs,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SettingItem {
    pub file: String,
    pub real: PathBuf,
    pub section: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LineItem {
    pub file: String,
    pub real: PathBuf,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceItem {
    pub unit: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RegistryItem {
    pub key: String,
    pub name: String,
    pub value: RegValue,
}

/// What an item touches on the device: saved before a change, put back after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Target {
    Path { path: PathBuf },
    Service { unit: String },
    Registry { key: String, name: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Path { path } => write!(f, "{}", path.display()),
            Target::Service { unit } => write!(f, "unit {unit}"),
            Target::Registry { key, name } => write!(f, "{key}\\{name}"),
        }
    }
}

impl Item {
    /// `file /etc/vpn/client.conf`: for messages and events, and the item's identity across versions.
    pub fn label(&self) -> String {
        match self {
            Item::File(f) => format!("file {}", f.path),
            Item::Directory(d) => format!("directory {}", d.path),
            Item::Setting(s) if s.section.is_empty() => format!("setting {} of {}", s.key, s.file),
            Item::Setting(s) => format!("setting {} in [{}] of {}", s.key, s.section, s.file),
            Item::Line(l) => format!("line {:?} in {}", l.line, l.file),
            Item::Service(s) => format!("service {}", s.unit),
            Item::Registry(r) => format!("registry {}\\{}", r.key, r.name),
        }
    }

    pub fn target(&self) -> Target {
        let path = |p: &PathBuf| Target::Path { path: p.clone() };
        match self {
            Item::File(f) => path(&f.real),
            Item::Directory(d) => path(&d.real),
            Item::Setting(s) => path(&s.real),
            Item::Line(l) => path(&l.real),
            Item::Service(s) => Target::Service {
                unit: s.unit.clone(),
            },
            Item::Registry(r) => Target::Registry {
                key: r.key.clone(),
                name: r.name.clone(),
            },
        }
    }

    /// A file or folder item owns its whole path: no other item may touch it. Settings and lines share files.
    fn owns_target(&self) -> bool {
        matches!(self, Item::File(_) | Item::Directory(_))
    }
}

/// Why `b` cannot sit beside `a` (in one profile, or in two installed profiles), if it cannot.
pub(crate) fn clash(a: &Item, b: &Item) -> Option<String> {
    if a.label() == b.label() {
        return Some("it is listed twice".to_owned());
    }
    let shared = (a.owns_target() || b.owns_target()) && a.target() == b.target();
    shared.then(|| format!("it touches the same path as {}", a.label()))
}

/// `1 item` / `3 items`.
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
