//! Inventories. Each agent's inventory is stored without its software list (`inventory` tree); the list is a
//! *software set* (`software` tree), stored once per distinct list under the sha256 of its encoding, because a
//! fleet installed from a few images shares a few lists: 100,000 agents with 800 packages each would otherwise
//! hold four gigabytes of the same names. Sets are looked up through a small cache, so filters on installed
//! software decode each distinct list once; a sweep removes the sets no agent names any more. Configuration drift
//! agents report is kept here too (`drift` tree, the newest events per agent).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use prost::Message;
use rollcall_proto::v1;

use super::{Result, Store, StoreError};
use crate::model::software::{SoftwareIndex, SoftwareSets};

/// Drift events kept per agent (the newest).
const DRIFT_KEPT: usize = 100;

/// How many decoded software sets are kept; a fleet has far fewer distinct lists than agents.
const CACHE_SETS: usize = 2048;

/// A sweep keeps an unnamed set this long: a check-in stores its set before the agent record names it.
const SWEEP_GRACE_SECS: i64 = 3600;

/// The `inventory` tree's value: the inventory without software, its hash as the agent computed it, and the
/// software set holding its list.
#[derive(Clone, PartialEq, Message)]
struct StoredInventory {
    #[prost(message, optional, tag = "1")]
    inventory: Option<v1::Inventory>,
    #[prost(string, tag = "2")]
    hash: String,
    #[prost(string, tag = "3")]
    software_set: String,
}

/// The `software` tree's value.
#[derive(Clone, PartialEq, Message)]
struct StoredSoftware {
    #[prost(message, repeated, tag = "1")]
    software: Vec<v1::Software>,
    #[prost(int64, tag = "2")]
    stored_at: i64,
}

/// Decoded software sets by id (see [`CACHE_SETS`]).
#[derive(Debug, Default)]
pub(super) struct SetCache(Mutex<HashMap<String, Arc<SoftwareIndex>>>);

impl SetCache {
    fn get(&self, id: &str) -> Option<Arc<SoftwareIndex>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, id: &str, index: Arc<SoftwareIndex>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_SETS {
            // Crude but bounded: a fleet with more distinct lists than this pays a decode per lookup.
            map.clear();
        }
        map.insert(id.to_owned(), index);
    }
}

/// The id of a software list: the sha256 of its encoding ("" for no software).
fn set_id(software: &[v1::Software]) -> String {
    if software.is_empty() {
        return String::new();
    }
    let mut bytes = Vec::new();
    for s in software {
        let _ = s.encode_length_delimited(&mut bytes);
    }
    rollcall_proto::sha256_hex(&bytes)
}

impl Store {
    /// Store `inv` (whose hash, as the agent computed it, is `hash`) as `agent_id`'s inventory; returns the id of
    /// its software set for the agent record.
    pub fn put_inventory(
        &self,
        agent_id: &str,
        inv: &v1::Inventory,
        hash: &str,
        now: i64,
    ) -> Result<String> {
        let id = set_id(&inv.software);
        if !id.is_empty() && !self.software.contains_key(id.as_bytes())? {
            let stored = StoredSoftware {
                software: inv.software.clone(),
                stored_at: now,
            };
            self.software
                .insert(id.as_bytes(), stored.encode_to_vec())?;
        }
        let stored = StoredInventory {
            inventory: Some(v1::Inventory {
                software: Vec::new(),
                ..inv.clone()
            }),
            hash: hash.to_owned(),
            software_set: id.clone(),
        };
        self.inventory
            .insert(agent_id.as_bytes(), stored.encode_to_vec())?;
        Ok(id)
    }

    /// `agent_id`'s stored inventory, software included, with its hash.
    pub fn inventory(&self, agent_id: &str) -> Result<Option<(v1::Inventory, String)>> {
        let Some(bytes) = self.inventory.get(agent_id.as_bytes())? else {
            return Ok(None);
        };
        let stored = StoredInventory::decode(bytes.as_ref())
            .map_err(|e| corrupt("inventory", agent_id, e))?;
        let mut inv = stored.inventory.unwrap_or_default();
        inv.software = self.software_list(&stored.software_set)?;
        Ok(Some((inv, stored.hash)))
    }

    fn software_list(&self, id: &str) -> Result<Vec<v1::Software>> {
        if id.is_empty() {
            return Ok(Vec::new());
        }
        let Some(bytes) = self.software.get(id.as_bytes())? else {
            return Ok(Vec::new());
        };
        Ok(StoredSoftware::decode(bytes.as_ref())
            .map_err(|e| corrupt("software", id, e))?
            .software)
    }

    /// Remove the software sets no agent (in the fleet or retired) names, once past the grace period; returns how
    /// many went.
    pub fn sweep_software_sets(&self, now: i64) -> Result<usize> {
        let named: HashSet<String> = self
            .agents()?
            .into_iter()
            .chain(self.retired_agents()?)
            .map(|a| a.software_set)
            .collect();
        let mut removed = 0;
        for entry in self.software.iter() {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(&key).into_owned();
            if named.contains(&id) {
                continue;
            }
            let stored_at = StoredSoftware::decode(value.as_ref())
                .map(|s| s.stored_at)
                .unwrap_or(0);
            if now - stored_at > SWEEP_GRACE_SECS {
                self.software.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Record configuration drift `agent_id` reported, keeping its newest [`DRIFT_KEPT`] events.
    pub fn add_drift(&self, agent_id: &str, events: &[v1::DriftEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            let key = format!("{agent_id}/{:016x}", self.next_id()?);
            self.drift.insert(key.as_bytes(), e.encode_to_vec())?;
        }
        let prefix = format!("{agent_id}/");
        let count = self.drift.scan_prefix(prefix.as_bytes()).count();
        for entry in self
            .drift
            .scan_prefix(prefix.as_bytes())
            .take(count.saturating_sub(DRIFT_KEPT))
        {
            self.drift.remove(entry?.0)?;
        }
        Ok(())
    }

    /// `agent_id`'s drift events, oldest first.
    pub fn drift(&self, agent_id: &str) -> Result<Vec<v1::DriftEvent>> {
        let prefix = format!("{agent_id}/");
        self.drift
            .scan_prefix(prefix.as_bytes())
            .map(|entry| {
                let (key, value) = entry?;
                v1::DriftEvent::decode(value.as_ref())
                    .map_err(|e| corrupt("drift", &String::from_utf8_lossy(&key), e))
            })
            .collect()
    }

    /// How many distinct software lists are stored.
    pub fn software_set_count(&self) -> usize {
        self.software.len()
    }
}

impl SoftwareSets for Store {
    fn software_set(&self, id: &str) -> Option<Arc<SoftwareIndex>> {
        if id.is_empty() {
            return None;
        }
        if let Some(index) = self.software_cache.get(id) {
            return Some(index);
        }
        let list = self.software_list(id).ok()?;
        let index = Arc::new(SoftwareIndex::new(&list));
        self.software_cache.insert(id, index.clone());
        Some(index)
    }
}

fn corrupt(tree: &'static str, key: &str, e: prost::DecodeError) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(software: &[(&str, &str)]) -> v1::Inventory {
        v1::Inventory {
            hostname: "desk".into(),
            software: software
                .iter()
                .map(|(n, v)| v1::Software {
                    name: (*n).into(),
                    version: (*v).into(),
                    source: v1::SoftwareSource::Dpkg as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn agents_with_the_same_software_share_one_set_and_sweeps_keep_named_sets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let inv = inventory(&[("bash", "5.2"), ("openssl", "3.0.2")]);
        let a = store.put_inventory("a", &inv, "h1", 100).unwrap();
        let b = store.put_inventory("b", &inv, "h1", 100).unwrap();
        assert_eq!(a, b);
        assert_eq!(store.software_set_count(), 1);
        let (back, hash) = store.inventory("a").unwrap().unwrap();
        assert_eq!((back, hash.as_str()), (inv.clone(), "h1"));
        let index = store.software_set(&a).unwrap();
        assert_eq!(index.get("OpenSSL")[0].version, "3.0.2");

        // Nobody names the set: kept during the grace period, then removed.
        assert_eq!(store.sweep_software_sets(100 + 10).unwrap(), 0);
        assert_eq!(
            store
                .sweep_software_sets(100 + SWEEP_GRACE_SECS + 1)
                .unwrap(),
            1
        );
        assert_eq!(store.software_set_count(), 0);
        // Named by an agent: kept.
        let id = store.put_inventory("a", &inv, "h1", 100).unwrap();
        let mut agent = crate::model::AgentRecord::new("a", "desk", "north", "linux-x86_64", 0);
        agent.software_set = id;
        store.put_agent(&agent).unwrap();
        assert_eq!(
            store
                .sweep_software_sets(100 + SWEEP_GRACE_SECS + 1)
                .unwrap(),
            0
        );
    }
}
