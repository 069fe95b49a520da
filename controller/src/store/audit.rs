//! The audit log: every admin action, in order.

use serde::{Deserialize, Serialize};

use super::{encode, scan, Result, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    /// The address the action came from.
    #[serde(default)]
    pub from: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_in_the_order_they_were_written() {
        let (_dir, store) = crate::store::temp_store();
        for (i, action) in ["token create", "metadata push", "rollout start"]
            .iter()
            .enumerate()
        {
            store
                .audit(&AuditEntry {
                    at: i as i64,
                    actor: "admin".into(),
                    action: (*action).into(),
                    detail: String::new(),
                    from: String::new(),
                })
                .unwrap();
        }
        let actions: Vec<String> = store
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["token create", "metadata push", "rollout start"]);
    }
}
