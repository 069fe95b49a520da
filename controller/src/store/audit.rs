//! The audit log: every admin and tech action, in order, written in the same transaction as the change it
//! records ([`Store::audited`]); refusals are written on their own ([`Store::audit`]). Nothing here edits or
//! deletes an entry.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional, TransactionalTree};

use super::{decode, encode, scan, Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    /// The address the action came from.
    #[serde(default)]
    pub from: String,
    /// "ok", or why the action was refused.
    #[serde(default = "ok")]
    pub result: String,
}

fn ok() -> String {
    "ok".into()
}

/// The records a transaction ([`Store::transact`]) may touch.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Agents,
    Retired,
    Certs,
    Bans,
    Tokens,
    Sites,
    Tuf,
    Meta,
    Packages,
    Rollouts,
    Active,
    Actions,
    Slots,
}

/// How many [`Table`]s there are; the audit log follows them in a transaction's trees.
const TABLES: usize = 13;

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Agents => "agents",
            Table::Retired => "retired",
            Table::Certs => "certs",
            Table::Bans => "bans",
            Table::Tokens => "tokens",
            Table::Sites => "sites",
            Table::Tuf => "tuf",
            Table::Meta => "meta",
            Table::Packages => "packages",
            Table::Rollouts => "rollouts",
            Table::Active => "active",
            Table::Actions => "actions",
            Table::Slots => "slots",
        }
    }
}

/// The inside of a transaction: typed reads and writes of [`Table`]s. An error ends it without writing anything,
/// the audit entry included.
pub struct Tx<'a> {
    trees: &'a [TransactionalTree],
}

pub type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

impl Tx<'_> {
    fn tree(&self, table: Table) -> &TransactionalTree {
        &self.trees[table as usize]
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> TxResult<Option<T>> {
        match self.tree(table).get(key.as_bytes())? {
            Some(bytes) => Ok(Some(
                decode(table.name(), key.as_bytes(), &bytes)
                    .map_err(ConflictableTransactionError::Abort)?,
            )),
            None => Ok(None),
        }
    }

    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> TxResult<()> {
        self.put_bytes(table, key.as_bytes(), &encode(value))
    }

    /// A record that is not JSON (a served metadata file).
    pub fn put_bytes(&self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.tree(table).insert(key, value)?;
        Ok(())
    }

    pub fn remove(&self, table: Table, key: &str) -> TxResult<bool> {
        Ok(self.tree(table).remove(key.as_bytes())?.is_some())
    }
}

impl Store {
    /// Append an entry on its own: a refusal, or an action whose change is not in the store.
    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let seq = self.next_id()?;
        self.audit.insert(seq.to_be_bytes(), encode(entry))?;
        let _ = self.audit_tap.send(entry.clone());
        Ok(())
    }

    /// Entries as they are committed (for the security log stream).
    pub fn audit_feed(&self) -> tokio::sync::broadcast::Receiver<AuditEntry> {
        self.audit_tap.subscribe()
    }

    /// Run `change` and append `entry` in one transaction: both land or neither does. `change` may run more
    /// than once (on a conflict), so it must not have effects outside the store.
    pub fn audited<T>(&self, entry: &AuditEntry, change: impl Fn(&Tx) -> TxResult<T>) -> Result<T> {
        self.transact(Some(entry), change)
    }

    /// [`Store::audited`] for a change that may find nothing to do: `entry` is written only when `change`
    /// returns `Some`.
    pub fn audited_if<T>(
        &self,
        entry: Option<&AuditEntry>,
        change: impl Fn(&Tx) -> TxResult<Option<T>>,
    ) -> Result<Option<T>> {
        self.run(entry, change, Option::is_some)
    }

    /// Run `change` in one transaction over the [`Table`]s, with `entry` appended to the audit log when given
    /// (changes no person made, like the controller re-signing its metadata, have none).
    pub fn transact<T>(
        &self,
        entry: Option<&AuditEntry>,
        change: impl Fn(&Tx) -> TxResult<T>,
    ) -> Result<T> {
        self.run(entry, change, |_| true)
    }

    /// The one transaction runner: `change`, then `entry` if `changed` says the value is a change.
    fn run<T>(
        &self,
        entry: Option<&AuditEntry>,
        change: impl Fn(&Tx) -> TxResult<T>,
        changed: impl Fn(&T) -> bool,
    ) -> Result<T> {
        let seq = self.next_id()?;
        // In the order of `Table`, then the audit log.
        let trees: [&sled::Tree; TABLES + 1] = [
            &self.agents,
            &self.retired,
            &self.certs,
            &self.bans,
            &self.tokens,
            &self.sites,
            &self.tuf,
            &self.meta,
            &self.packages,
            &self.rollouts,
            &self.active,
            &self.actions,
            &self.slots,
            &self.audit,
        ];
        let outcome = trees[..].transaction(|trees| {
            let value = change(&Tx { trees })?;
            if let (Some(entry), true) = (entry, changed(&value)) {
                trees[TABLES].insert(&seq.to_be_bytes(), encode(entry))?;
            }
            Ok(value)
        });
        let value = super::settled(outcome)?;
        if let (Some(entry), true) = (entry, changed(&value)) {
            let _ = self.audit_tap.send(entry.clone());
        }
        Ok(value)
    }

    pub fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        scan(&self.audit, "audit", b"")
    }

    /// The newest `limit` entries at or after `since` (unix seconds) by `who` (any actor when empty), oldest
    /// first. Read from the end, so the cost follows the entries asked for, not the log's length.
    pub fn audit_since(&self, since: i64, who: &str, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for item in self.audit.iter().rev() {
            let (k, v) = item?;
            let entry: AuditEntry = decode("audit", &k, &v)?;
            if entry.at < since {
                break;
            }
            if who.is_empty() || entry.actor == who {
                out.push(entry);
                if out.len() == limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: 1,
            actor: "admin".into(),
            action: action.into(),
            detail: String::new(),
            from: String::new(),
            result: ok(),
        }
    }

    #[test]
    fn entries_read_back_in_the_order_they_were_written() {
        let (_dir, store) = crate::store::temp_store();
        for action in ["token create", "metadata push", "rollout start"] {
            store.audit(&entry(action)).unwrap();
        }
        let actions: Vec<String> = store
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["token create", "metadata push", "rollout start"]);
    }

    #[test]
    fn an_aborted_change_writes_neither_the_change_nor_its_entry() {
        let (_dir, store) = crate::store::temp_store();
        store
            .audited(&entry("site add"), |tx| tx.put(Table::Sites, "a", &1u32))
            .unwrap();
        let refused = store.audited(&entry("site add"), |tx| {
            tx.put(Table::Sites, "b", &2u32)?;
            Err::<(), _>(ConflictableTransactionError::Abort(StoreError::Corrupt {
                tree: "sites",
                key: "b".into(),
                reason: "refused".into(),
            }))
        });
        assert!(refused.is_err());
        assert_eq!(store.audit_log().unwrap().len(), 1);
        assert!(store.sites.get("b").unwrap().is_none());
        assert!(store.sites.get("a").unwrap().is_some());
    }
}
