//! A published package: one TUF target with a verified manifest, what a rollout rolls out.

use serde::{Deserialize, Serialize};

/// A package the controller can roll out: one TUF target with a verified manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub release_counter: u64,
    pub target_name: String,
    pub sha256: String,
    pub length: u64,
    pub platforms: Vec<String>,
    pub kind: String,
    pub published_at: i64,
}

impl PackageRecord {
    pub fn key(name: &str, version: &str) -> String {
        format!("{name}@{version}")
    }
}
