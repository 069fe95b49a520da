//! The TUF image repository the controller hosts. Admins push root (once) and targets metadata signed with
//! offline keys; the controller verifies them against the root before anything changes, then signs snapshot and
//! timestamp with its online keys. It never holds a key that could make an agent run something new.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rollcall_packaging::keys::FileKey;
use rollcall_packaging::online::{self, OnlineKeys, SignedFile};
use tokio::sync::Mutex;
use tracing::info;

use crate::blobs::Blobs;
use crate::datadir::DataDir;
use crate::error::Error;
use crate::model::PackageRecord;
use crate::store::{AuditEntry, Store, StoreError, TufFiles, TufState};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "the controller has no TUF root yet: push root.json together with the first targets.json"
    )]
    NoRoot,
    #[error("the pushed root.json differs from the published root (version {published}); a new root is pushed as the next version of the chain (`rollcall pkg rotate-root`, then `rollcall pkg push`)")]
    RootChanged { published: u64 },
    #[error("root.json refused: {0}")]
    BadRoot(rollcall_packaging::Error),
    #[error("targets.json refused: {0}")]
    BadTargets(rollcall_packaging::Error),
    #[error("targets.json version {pushed} is not newer than the published version {published}; sign again with `rollcall pkg sign`")]
    NotNewer { pushed: u64, published: u64 },
    #[error("payload of {target} (sha256 {sha256}) has not been uploaded")]
    MissingPayload { target: String, sha256: String },
    #[error("{package} is already published with a different payload (sha256 {published}); give it a new version")]
    Conflict { package: String, published: String },
    #[error("{name} {version} has release counter {counter}, the same as {name} {other}; agents refuse a new version with an equal counter, so give it a higher one")]
    CounterReused {
        name: String,
        version: String,
        counter: u64,
        other: String,
    },
    #[error("signing snapshot/timestamp failed: {0}")]
    Sign(rollcall_packaging::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a publication changed.
#[derive(Debug, Clone)]
pub struct Published {
    pub state: TufState,
    pub new_packages: Vec<PackageRecord>,
}

#[derive(Debug)]
pub struct Repository {
    store: Store,
    blobs: Blobs,
    snapshot_key: FileKey,
    timestamp_key: FileKey,
    online: OnlineKeys,
    validity: Duration,
    /// Publications (pushes and re-signing) happen one at a time.
    lock: Mutex<()>,
}

impl Repository {
    pub fn load(
        data: &DataDir,
        store: Store,
        blobs: Blobs,
        validity: Duration,
    ) -> Result<Repository, Error> {
        let path = data.online_keys();
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
        Ok(Repository {
            store,
            blobs,
            snapshot_key: rollcall_packaging::keys::key_source(&data.snapshot_key()),
            timestamp_key: rollcall_packaging::keys::key_source(&data.timestamp_key()),
            online: OnlineKeys::from_json(&text)?,
            validity,
            lock: Mutex::new(()),
        })
    }

    pub fn online_keys(&self) -> &OnlineKeys {
        &self.online
    }

    /// Verify and publish pushed metadata. Nothing is written unless everything verifies.
    /// `audit` is the pusher's entry; its detail is filled in here with what was published, and it is written in
    /// the same transaction.
    pub async fn publish(
        &self,
        root_json: Option<&[u8]>,
        newer_roots: &[Vec<u8>],
        targets_json: &[u8],
        now: DateTime<Utc>,
        mut audit: AuditEntry,
    ) -> Result<Published, PublishError> {
        let _guard = self.lock.lock().await;
        let mut state = self.store.tuf_state()?;
        let mut files = TufFiles::default();

        let root = if state.root_version == 0 {
            let bytes = root_json
                .filter(|b| !b.is_empty())
                .ok_or(PublishError::NoRoot)?;
            let root = online::verify_root(bytes).map_err(PublishError::BadRoot)?;
            online::check_root_online_keys(&root, &self.online).map_err(PublishError::BadRoot)?;
            state.root_version = u64::from(root.signed.version);
            files
                .files
                .push((format!("{}.root.json", state.root_version), bytes.to_vec()));
            root
        } else {
            let published = self.root_bytes(state.root_version)?;
            if let Some(pushed) = root_json.filter(|b| !b.is_empty()) {
                if pushed != published.as_slice() && newer_roots.is_empty() {
                    return Err(PublishError::RootChanged {
                        published: state.root_version,
                    });
                }
            }
            let mut root = online::verify_root(&published).map_err(PublishError::BadRoot)?;
            // A rotated root: each version must be signed by the keys of the one before it (and its own), as
            // agents check when they walk the chain; snapshot and timestamp stay this controller's keys.
            for bytes in newer_roots {
                let next =
                    online::verify_root_update(&root, bytes).map_err(PublishError::BadRoot)?;
                online::check_root_online_keys(&next, &self.online)
                    .map_err(PublishError::BadRoot)?;
                state.root_version = next.signed.version.get();
                files
                    .files
                    .push((format!("{}.root.json", state.root_version), bytes.clone()));
                root = next;
            }
            root
        };

        let targets =
            online::verify_targets(&root, targets_json).map_err(PublishError::BadTargets)?;
        let targets_version = u64::from(targets.signed.version);
        let published = self
            .store
            .tuf_file(&format!("{}.targets.json", state.targets_version))?;
        if targets_version == state.targets_version && published.as_deref() == Some(targets_json) {
            // The same targets again (a push repeated to restore a payload, or one that only brings a rotated
            // root): nothing else to publish.
            if !files.files.is_empty() {
                audit.detail = format!("root v{}", state.root_version);
                self.store.publish_tuf(&files, &state, &[], Some(&audit))?;
                self.store.flush().await?;
                info!(root_version = state.root_version, "Rotated root published.");
            }
            return Ok(Published {
                state,
                new_packages: Vec::new(),
            });
        }
        if targets_version <= state.targets_version {
            return Err(PublishError::NotNewer {
                pushed: targets_version,
                published: state.targets_version,
            });
        }
        let mut new_packages = Vec::new();
        let entries = online::target_entries(&targets).map_err(PublishError::BadTargets)?;
        let mut counters: Vec<(String, String, u64)> = self
            .store
            .packages()?
            .into_iter()
            .map(|p| (p.name, p.version, p.release_counter))
            .collect();
        counters.extend(entries.iter().map(|e| {
            let m = &e.manifest;
            (m.name.clone(), m.version.clone(), m.release_counter)
        }));
        for entry in &entries {
            let m = &entry.manifest;
            if let Some((_, other, _)) = counters.iter().find(|(name, version, counter)| {
                *name == m.name && *version != m.version && *counter == m.release_counter
            }) {
                return Err(PublishError::CounterReused {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    counter: m.release_counter,
                    other: other.clone(),
                });
            }
        }
        for entry in entries {
            if !self.blobs.contains(&entry.sha256, entry.length) {
                return Err(PublishError::MissingPayload {
                    target: entry.name.clone(),
                    sha256: entry.sha256.clone(),
                });
            }
            let m = &entry.manifest;
            match self.store.package(&m.name, &m.version)? {
                Some(p) if p.sha256 != entry.sha256 => {
                    return Err(PublishError::Conflict {
                        package: PackageRecord::key(&m.name, &m.version),
                        published: p.sha256,
                    })
                }
                Some(_) => {}
                None => new_packages.push(PackageRecord {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    release_counter: m.release_counter,
                    target_name: entry.name.clone(),
                    sha256: entry.sha256.clone(),
                    length: entry.length,
                    platforms: m.platforms.clone(),
                    kind: m.kind.as_str().to_owned(),
                    published_at: now.timestamp(),
                }),
            }
        }
        state.targets_version = targets_version;
        files.files.push((
            format!("{targets_version}.targets.json"),
            targets_json.to_vec(),
        ));
        self.sign_snapshot_and_timestamp(&root, targets_json, &mut state, &mut files, now)
            .await?;
        audit.detail = format!(
            "root v{} targets v{} new packages [{}]",
            state.root_version,
            state.targets_version,
            new_packages
                .iter()
                .map(|p| format!("{}@{}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.store
            .publish_tuf(&files, &state, &new_packages, Some(&audit))?;
        self.store.flush().await?;
        info!(
            targets_version = state.targets_version,
            snapshot_version = state.snapshot_version,
            new_packages = new_packages.len(),
            "Repository metadata published."
        );
        Ok(Published {
            state,
            new_packages,
        })
    }

    /// Re-sign snapshot and timestamp once the timestamp is past half its life, so agents never see it expire
    /// while the controller runs. Returns whether it re-signed.
    pub async fn refresh(&self, now: DateTime<Utc>) -> Result<bool, PublishError> {
        let _guard = self.lock.lock().await;
        let mut state = self.store.tuf_state()?;
        if state.targets_version == 0 {
            return Ok(false);
        }
        let half_life = (self.validity.as_secs() / 2) as i64;
        if state.timestamp_expires - now.timestamp() > half_life {
            return Ok(false);
        }
        let root = online::verify_root(&self.root_bytes(state.root_version)?)
            .map_err(PublishError::BadRoot)?;
        let targets = self
            .store
            .tuf_file(&format!("{}.targets.json", state.targets_version))?
            .ok_or(PublishError::NoRoot)?;
        let mut files = TufFiles::default();
        self.sign_snapshot_and_timestamp(&root, &targets, &mut state, &mut files, now)
            .await?;
        self.store.publish_tuf(&files, &state, &[], None)?;
        self.store.flush().await?;
        info!(
            snapshot_version = state.snapshot_version,
            "Snapshot and timestamp re-signed."
        );
        Ok(true)
    }

    fn root_bytes(&self, version: u64) -> Result<Vec<u8>, PublishError> {
        self.store
            .tuf_file(&format!("{version}.root.json"))?
            .ok_or(PublishError::NoRoot)
    }

    async fn sign_snapshot_and_timestamp(
        &self,
        root: &tough::schema::Signed<tough::schema::Root>,
        targets_json: &[u8],
        state: &mut TufState,
        files: &mut TufFiles,
        now: DateTime<Utc>,
    ) -> Result<(), PublishError> {
        let expires = now + chrono::Duration::seconds(self.validity.as_secs() as i64);
        let snapshot: SignedFile = online::sign_snapshot(
            root,
            targets_json,
            state.targets_version,
            state.snapshot_version + 1,
            &self.snapshot_key,
            expires,
        )
        .await
        .map_err(PublishError::Sign)?;
        let timestamp = online::sign_timestamp(
            root,
            &snapshot,
            state.timestamp_version + 1,
            &self.timestamp_key,
            expires,
        )
        .await
        .map_err(PublishError::Sign)?;
        state.snapshot_version = snapshot.version;
        state.timestamp_version = timestamp.version;
        state.timestamp_expires = expires.timestamp();
        files.files.push((
            format!("{}.snapshot.json", snapshot.version),
            snapshot.bytes,
        ));
        files.files.push(("timestamp.json".into(), timestamp.bytes));
        Ok(())
    }
}
