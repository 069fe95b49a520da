//! The audit log: every admin action, in order.

use serde::{Deserialize, Serialize};

use super::{encode, scan, Result, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

impl Store {
    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let seq = self.next_id()?;
        self.audit.insert(seq.to_be_bytes(), encode(entry))?;
        Ok(())
    }

    pub fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        scan(&self.audit, "audit", b"")
    }
}
