//! Published packages and the TUF repository files the controller serves, written together when metadata is
//! published so an agent never sees a snapshot without its targets.

use super::{encode, get, scan, Result, Store, Table};
use crate::model::PackageRecord;
use serde::{Deserialize, Serialize};

/// Versions of the published TUF roles; all zero before the first push.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TufState {
    pub root_version: u64,
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// Unix time the current timestamp.json expires.
    pub timestamp_expires: i64,
}

/// Files one publication adds, by their served names.
#[derive(Debug, Default)]
pub struct TufFiles {
    pub files: Vec<(String, Vec<u8>)>,
}

const STATE_KEY: &[u8] = b"tuf_state";

impl Store {
    pub fn tuf_state(&self) -> Result<TufState> {
        Ok(get(&self.meta, "meta", STATE_KEY)?.unwrap_or_default())
    }

    /// A served repository file by name (`timestamp.json`, `3.snapshot.json`, `1.root.json`, …).
    pub fn tuf_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.tuf.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Write new repository files, the new role versions and new packages in one transaction.
    /// Publish served files, the new repository state and new packages in one transaction, with the audit
    /// entry of the person who pushed (none when the controller re-signs on its own).
    pub fn publish_tuf(
        &self,
        files: &TufFiles,
        state: &TufState,
        packages: &[PackageRecord],
        audit: Option<&super::AuditEntry>,
    ) -> Result<()> {
        self.transact(audit, |tx| {
            for (name, bytes) in &files.files {
                tx.put_bytes(Table::Tuf, name.as_bytes(), bytes)?;
            }
            tx.put_bytes(Table::Meta, STATE_KEY, &encode(state))?;
            for p in packages {
                tx.put(Table::Packages, &PackageRecord::key(&p.name, &p.version), p)?;
            }
            Ok(())
        })
    }

    pub fn package(&self, name: &str, version: &str) -> Result<Option<PackageRecord>> {
        get(
            &self.packages,
            "packages",
            PackageRecord::key(name, version).as_bytes(),
        )
    }

    pub fn packages(&self) -> Result<Vec<PackageRecord>> {
        scan(&self.packages, "packages", b"")
    }
}
