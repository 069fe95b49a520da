//! The controller's state in sled. This module is the only code that knows sled: the rest of the controller sees
//! typed records and methods, so a later store (a replicated database) replaces only this folder.
//!
//! Records are JSON (readable with any sled tool, and tolerant of new optional fields); inventory is the protobuf
//! message as sent. Changes that must happen together run in one sled transaction.

mod agents;
mod audit;
mod inventory;
mod packages;
mod rollouts;
mod tokens;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
#[cfg(test)]
use sled::transaction::Transactional;

pub use agents::{agents_installed, BanRecord, CertRecord, Ending, EnrollOutcome, NewAgent, Role};
pub use audit::{AuditEntry, Table, Tx, TxResult};
pub use packages::{TufFiles, TufState};
pub use tokens::{token_id, TokenRecord, TokenRefusal};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record {tree}/{key} is unreadable: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    agents: sled::Tree,
    inventory: sled::Tree,
    /// Distinct software lists by sha256 (`inventory.rs`).
    software: sled::Tree,
    software_cache: Arc<inventory::SetCache>,
    /// Configuration drift events by `<agent>/<seq>`.
    drift: sled::Tree,
    certs: sled::Tree,
    sites: sled::Tree,
    tokens: sled::Tree,
    packages: sled::Tree,
    tuf: sled::Tree,
    meta: sled::Tree,
    rollouts: sled::Tree,
    /// Index of the ids of active rollouts, so the check-in path never decodes finished ones. Derived from
    /// `rollouts` (rebuilt at open) and written under `rollout_writes` together with the record.
    active: sled::Tree,
    rollout_writes: Arc<std::sync::Mutex<()>>,
    actions: sled::Tree,
    /// Index of the actions that hold a site's download slot (`<rollout>/<site>/<agent>`), so the per-site cap
    /// is counted without reading a rollout's every action. Derived from `actions` (rebuilt at open) and written
    /// under the action's lock stripe together with the record.
    slots: sled::Tree,
    action_locks: Arc<[std::sync::Mutex<()>; 64]>,
    audit: sled::Tree,
    /// Every audit entry once it is committed, for the security log stream.
    audit_tap: tokio::sync::broadcast::Sender<AuditEntry>,
    /// Retired agents, by id: out of the fleet (targeting, counts), kept for history.
    retired: sled::Tree,
    /// Hostnames (lower case) that may not enroll.
    bans: sled::Tree,
    /// Index `<hostname lower case>\0<agent id>` of the fleet, for enrollment's "same host again" lookup.
    /// Derived (rebuilt at open); a lookup checks the record, so an entry left by a rename or retire is harmless.
    hostnames: sled::Tree,
    flusher: Arc<Flusher>,
}

/// Group commit around sled's flush. sled 0.34's concurrent `flush_async` deadlocks (spacejam/sled#1308, fixed
/// only on its unreleased main branch; we hit it at ~800 concurrent enrollments): flushes here run one at a
/// time, blocking `flush()` on the blocking pool, and a caller whose write an already finished flush covered
/// does not flush again.
#[derive(Debug, Default)]
struct Flusher {
    /// Writes registered so far (each `flush` call registers the caller's writes).
    registered: AtomicU64,
    /// Registrations covered by the last completed flush.
    completed: tokio::sync::Mutex<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let tree = |name: &str| db.open_tree(name);
        Ok(Store {
            agents: tree("agents")?,
            inventory: tree("inventory")?,
            software: tree("software")?,
            software_cache: Arc::default(),
            drift: tree("drift")?,
            certs: tree("certs")?,
            sites: tree("sites")?,
            tokens: tree("tokens")?,
            packages: tree("packages")?,
            tuf: tree("tuf")?,
            meta: tree("meta")?,
            rollouts: tree("rollouts")?,
            active: tree("active")?,
            rollout_writes: Arc::default(),
            actions: tree("actions")?,
            slots: tree("slots")?,
            action_locks: Arc::new(std::array::from_fn(|_| std::sync::Mutex::new(()))),
            audit: tree("audit")?,
            audit_tap: tokio::sync::broadcast::channel(4096).0,
            retired: tree("retired")?,
            bans: tree("bans")?,
            hostnames: tree("hostnames")?,
            flusher: Arc::new(Flusher::default()),
            db,
        })
        .and_then(|store| {
            // The index of an older version.
            let _ = store.db.drop_tree("running");
            store.rebuild_active_index()?;
            store.rebuild_slot_index()?;
            store.rebuild_hostname_index()?;
            Ok(store)
        })
    }

    /// Make everything written so far durable. Called before acknowledging anything an agent or admin relies on.
    pub async fn flush(&self) -> Result<()> {
        let mine = self.flusher.registered.fetch_add(1, Ordering::SeqCst) + 1;
        let mut completed = self.flusher.completed.lock().await;
        if *completed >= mine {
            return Ok(());
        }
        // Everything registered before this point was written before this flush starts.
        let covers = self.flusher.registered.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Sled(sled::Error::ReportableBug(e.to_string())))??;
        *completed = covers;
        Ok(())
    }

    /// A new id, unique for the life of the store (sparse: for keys nobody reads).
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// The next number of a named sequence, 1, 2, 3, …: for ids people type (`r1`, `r2`).
    pub fn next_seq(&self, name: &str) -> Result<u64> {
        let key = format!("seq/{name}");
        let updated = self.meta.update_and_fetch(key.as_bytes(), |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(updated
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }
}

/// A sled transaction's outcome as a store result.
fn settled<T>(
    outcome: std::result::Result<T, sled::transaction::TransactionError<StoreError>>,
) -> Result<T> {
    outcome.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
    })
}

// === JSON record helpers ===

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain record types cannot fail (no maps with non-string keys, no custom serialisers).
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(decode(name, key, &bytes)?)),
        None => Ok(None),
    }
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<()> {
    tree.insert(key, encode(value))?;
    Ok(())
}

/// Read-modify-write one record without losing a concurrent writer's change: `change` sees the current value
/// (or `None`) and returns the new one, or `None` to leave it; it is called again if someone else wrote first.
fn update<T: Serialize + DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
    mut change: impl FnMut(Option<T>) -> Option<T>,
) -> Result<Option<T>> {
    loop {
        let old = tree.get(key)?;
        let current = old.as_ref().map(|b| decode(name, key, b)).transpose()?;
        let Some(new) = change(current) else {
            return Ok(None);
        };
        if tree.compare_and_swap(key, old, Some(encode(&new)))?.is_ok() {
            return Ok(Some(new));
        }
    }
}

fn scan<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    prefix: &[u8],
) -> Result<Vec<T>> {
    tree.scan_prefix(prefix)
        .map(|item| {
            let (k, v) = item?;
            decode(name, &k, &v)
        })
        .collect()
}

#[cfg(test)]
impl Store {
    /// Flush synchronously (tests that reopen the store).
    pub(crate) fn db_flush_for_test(&self) {
        self.db.flush().expect("flush");
    }
}

/// Open a store again after dropping it in the same process: sled's background flusher may still hold the file
/// lock for a moment (a restarted controller does not have this problem: the lock dies with the old process).
#[cfg(test)]
pub(crate) fn reopen_for_test(path: &Path) -> Store {
    for _ in 0..100 {
        match Store::open(path) {
            Ok(store) => return store,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    Store::open(path).expect("store reopens")
}

#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostname_index_follows_renames_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut old = crate::model::AgentRecord::new("a1", "Desk-07", "north", "linux", 10);
        store.put_agent(&old).unwrap();
        let newer = crate::model::AgentRecord::new("a2", "desk-07", "north", "linux", 20);
        store.put_agent(&newer).unwrap();
        let found = |name: &str| store.agent_by_hostname(name).unwrap().map(|a| a.id);
        assert_eq!(
            found("DESK-07").as_deref(),
            Some("a2"),
            "the newest of the name"
        );
        // Renamed by its inventory: found by the new name only.
        store
            .update_agent("a2", |a| {
                let mut a = a?;
                a.hostname = "desk-08".into();
                Some(a)
            })
            .unwrap();
        assert_eq!(found("desk-08").as_deref(), Some("a2"));
        assert_eq!(found("desk-07").as_deref(), Some("a1"));
        old.hostname = "gone".into();
        store.put_agent(&old).unwrap();
        assert_eq!(
            found("desk-07"),
            None,
            "a stale entry is checked against the record"
        );
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .agent_by_hostname("desk-08")
                .unwrap()
                .map(|a| a.id)
                .as_deref(),
            Some("a2")
        );
        assert_eq!(
            store.hostnames.len(),
            2,
            "rebuilt from the fleet: no stale entries"
        );
    }

    /// The workload that deadlocked sled's own `flush_async`: many concurrent multi-tree transactions, each
    /// followed by a flush. Bounded by a timeout so a regression fails instead of hanging.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_transactions_and_flushes_do_not_deadlock() {
        let (_dir, store) = temp_store();
        let mut tasks = Vec::new();
        for i in 0..400u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                (&store.tokens, &store.agents)
                    .transaction(|(t, a)| {
                        t.insert(key.as_bytes(), b"x".as_slice())?;
                        a.insert(key.as_bytes(), b"y".as_slice())?;
                        Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .unwrap();
                store.flush().await.unwrap();
            }));
        }
        let all = futures::future::join_all(tasks);
        tokio::time::timeout(std::time::Duration::from_secs(120), all)
            .await
            .expect("no deadlock");
        assert_eq!(store.agents.len(), 400);
    }

    #[test]
    fn the_active_index_follows_every_write_and_is_rebuilt_at_open() {
        use crate::model::{RolloutRecord, RolloutState};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            store
                .put_rollout(&RolloutRecord::for_test("r1", &["linux"], &[&["a"]]))
                .unwrap();
            let mut draft = RolloutRecord::for_test("r2", &["linux"], &[&["a"]]);
            draft.state = RolloutState::Draft;
            store.put_rollout(&draft).unwrap();
            let ids = |s: &Store| -> Vec<String> {
                s.active_rollouts()
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            };
            assert_eq!(ids(&store), ["r1"]);
            store
                .update_rollout("r1", |mut r| {
                    r.state = RolloutState::Cancelled;
                    Some(r)
                })
                .unwrap();
            store
                .update_rollout("r2", |mut r| {
                    r.state = RolloutState::Running;
                    Some(r)
                })
                .unwrap();
            assert_eq!(ids(&store), ["r2"]);
            // A crash between a record write and its index write: the index is wrong on disk.
            store.active.insert(b"r1", b"".as_slice()).unwrap();
            store.active.remove(b"r2").unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen_for_test(&path);
        let ids: Vec<String> = store
            .active_rollouts()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["r2"], "rebuilt from the records at open");
    }

    #[test]
    fn the_slot_index_follows_action_writes_and_is_rebuilt_at_open() {
        use crate::model::{ActionRecord, ActionState};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let set = |s: &Store, id: &str, state: ActionState| {
            s.update_action(&format!("r1/{id}"), |cur| {
                let mut a =
                    cur.unwrap_or_else(|| ActionRecord::new("r1", id, "north", 0, state, 0, 0));
                a.state = state;
                Some(a)
            })
            .unwrap();
        };
        {
            let store = Store::open(&path).unwrap();
            set(&store, "a", ActionState::Offered);
            set(&store, "b", ActionState::Downloading);
            set(&store, "c", ActionState::Downloaded);
            assert_eq!(store.slot_holders("r1", "north").unwrap(), ["a", "b"]);
            set(&store, "a", ActionState::Downloaded);
            assert_eq!(store.slot_holders("r1", "north").unwrap(), ["b"]);
            assert!(store.slot_holders("r1", "south").unwrap().is_empty());
            // A crash between an action write and its index write.
            store.slots.insert(b"r1/north/c", b"".as_slice()).unwrap();
            store.slots.remove(b"r1/north/b").unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen_for_test(&path);
        assert_eq!(
            store.slot_holders("r1", "north").unwrap(),
            ["b"],
            "rebuilt from the actions"
        );
    }
}
