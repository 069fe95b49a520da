//! The admin's offline image repository: a folder holding root.json, targets.json and a copy of
//! every signed payload, edited only with the offline root and targets keys.
//!
//! Layout: `DIR/root.json` (the current root), `DIR/roots/<N>.root.json` (every root version, for the chain
//! agents walk), `DIR/targets.json`, `DIR/targets/<sha256>.<target_name>`. Files hold exactly tough's
//! `SignedRole::buffer()` bytes and are replaced atomically.

use crate::archive;
use crate::atomic;
use crate::error::{Error, Result};
use crate::expiry;
use crate::keys;
use crate::manifest::Manifest;
use crate::online::{self, verify_root, OnlineKeys, TargetEntry};
use crate::TUF_SPEC_VERSION;
use aws_lc_rs::rand::SystemRandom;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed, Target, Targets};
use tough::TargetName;

/// File name of the root metadata inside the repository folder.
pub const ROOT_FILE: &str = "root.json";
/// File name of the targets metadata inside the repository folder.
pub const TARGETS_FILE: &str = "targets.json";
/// Folder holding the payload copies, named `<sha256>.<target_name>`.
pub const TARGETS_DIR: &str = "targets";
/// Folder holding every root version, named `<N>.root.json`.
pub const ROOTS_DIR: &str = "roots";

/// The admin's image repository folder.
#[derive(Debug, Clone)]
pub struct ImageRepo {
    dir: PathBuf,
}

impl ImageRepo {
    /// Creates a repository: root.json v1 (root → root key, targets → targets key, snapshot and
    /// timestamp → the controller's online keys, threshold 1, consistent snapshots) and an empty
    /// targets.json v1, both expiring at `root_expires`. Refuses an existing repository.
    pub async fn create(
        dir: &Path,
        root_key: &Path,
        targets_key: &Path,
        online: &OnlineKeys,
        root_expires: DateTime<Utc>,
    ) -> Result<ImageRepo> {
        Self::create_with(
            dir,
            &[root_key.to_path_buf()],
            1,
            targets_key,
            online,
            root_expires,
        )
        .await
    }

    /// [`ImageRepo::create`] with several root keys, `threshold` of which must sign every later root.
    pub async fn create_with(
        dir: &Path,
        root_keys: &[PathBuf],
        threshold: u64,
        targets_key: &Path,
        online: &OnlineKeys,
        root_expires: DateTime<Utc>,
    ) -> Result<ImageRepo> {
        let repo = ImageRepo {
            dir: dir.to_path_buf(),
        };
        let root_path = repo.root_path();
        if std::fs::symlink_metadata(&root_path).is_ok() {
            return Err(Error::RepoExists { path: root_path });
        }
        let threshold = check_threshold(root_keys.len(), threshold)?;
        let mut root_publics = Vec::new();
        for key in root_keys {
            root_publics.push(keys::public_key(key).await?);
        }
        let targets_public = keys::public_key(targets_key).await?;
        for key in &root_publics {
            if *key == online.snapshot || *key == online.timestamp {
                return Err(Error::KeyReuse { role: "root" });
            }
        }
        if targets_public == online.snapshot || targets_public == online.timestamp {
            return Err(Error::KeyReuse { role: "targets" });
        }

        let mut root = Root {
            spec_version: TUF_SPEC_VERSION.to_string(),
            consistent_snapshot: true,
            version: NonZeroU64::MIN,
            expires: expiry::to_tuf(root_expires)?,
            keys: HashMap::new(),
            roles: HashMap::new(),
            _extra: HashMap::new(),
        };
        set_role(&mut root, RoleType::Root, root_publics, threshold)?;
        for (role, key) in [
            (RoleType::Targets, targets_public),
            (RoleType::Snapshot, online.snapshot.clone()),
            (RoleType::Timestamp, online.timestamp.clone()),
        ] {
            set_role(&mut root, role, vec![key], NonZeroU64::MIN)?;
        }

        let holder = KeyHolder::Root(root.clone());
        let signed_root = sign_with(root, &holder, root_keys, "root.json").await?;
        // tough does not enforce the threshold when signing root; verifying does.
        verify_root(signed_root.buffer())?;
        let targets = Targets::new(
            TUF_SPEC_VERSION.to_string(),
            NonZeroU64::MIN,
            expiry::to_tuf(root_expires)?,
        );
        let signed_targets = sign_role(targets, &holder, targets_key, "targets.json").await?;

        let payloads = repo.dir.join(TARGETS_DIR);
        std::fs::create_dir_all(&payloads)
            .map_err(|e| Error::io("create directory", &payloads, e))?;
        atomic::write_file(&repo.targets_path(), signed_targets.buffer())?;
        repo.keep_root(1, signed_root.buffer())?;
        // root.json last: its presence marks a complete repository.
        atomic::write_file(&root_path, signed_root.buffer())?;
        Ok(repo)
    }

    /// Rotate root: root.json version N+1 lists `new_root_keys` (with `threshold`) for root and, when given,
    /// `new_targets_key` for targets; it is signed by the current root keys (`old_root_keys`, to the current
    /// threshold) and by the new ones (to the new threshold), so an agent trusting version N accepts N+1. When the
    /// targets key changes, targets.json is signed again with the new key (its version goes up). Returns the new
    /// root version.
    pub async fn rotate_root(
        &self,
        old_root_keys: &[PathBuf],
        new_root_keys: &[PathBuf],
        threshold: u64,
        new_targets_key: Option<&Path>,
        root_expires: DateTime<Utc>,
    ) -> Result<u64> {
        let current = verify_root(&self.root_bytes()?)?;
        let threshold = check_threshold(new_root_keys.len(), threshold)?;
        let mut root = current.signed.clone();
        root.version = root
            .version
            .checked_add(1)
            .ok_or_else(|| Error::RootInvalid {
                reason: "the root version counter is exhausted".into(),
            })?;
        root.expires = expiry::to_tuf(root_expires)?;
        let mut publics = Vec::new();
        for key in new_root_keys {
            publics.push(keys::public_key(key).await?);
        }
        set_role(&mut root, RoleType::Root, publics, threshold)?;
        if let Some(key) = new_targets_key {
            let public = keys::public_key(key).await?;
            set_role(&mut root, RoleType::Targets, vec![public], NonZeroU64::MIN)?;
        }
        // Keys no role lists any more leave root.json.
        let listed: Vec<_> = root
            .roles
            .values()
            .flat_map(|r| r.keyids.iter().cloned())
            .collect();
        root.keys.retain(|id, _| listed.contains(id));

        let by_new = sign_with(
            root.clone(),
            &KeyHolder::Root(root.clone()),
            new_root_keys,
            "root.json",
        )
        .await?;
        let by_old = sign_with(
            root.clone(),
            &KeyHolder::Root(current.signed.clone()),
            old_root_keys,
            "root.json",
        )
        .await?;
        let signed = by_new
            .add_old_signatures(by_old.signed().signatures.clone())
            .map_err(|e| Error::tuf("cannot cross-sign root.json", e))?;
        // Exactly what an agent checks: the old root's threshold and the new one's.
        let version = online::verify_root_update(&current, signed.buffer())?
            .signed
            .version
            .get();

        if let Some(key) = new_targets_key {
            let targets: Signed<Targets> = online::parse(TARGETS_FILE, &self.targets_bytes()?)?;
            let mut targets = targets.signed;
            targets.version = next_targets_version(targets.version)?;
            let resigned = sign_role(targets, &KeyHolder::Root(root), key, "targets.json").await?;
            self.keep_root(version, signed.buffer())?;
            atomic::write_file(&self.targets_path(), resigned.buffer())?;
        } else {
            self.keep_root(version, signed.buffer())?;
        }
        atomic::write_file(&self.root_path(), signed.buffer())?;
        Ok(version)
    }

    /// Every root version after `published`, oldest first: what the controller needs to serve the chain.
    pub fn roots_after(&self, published: u64) -> Result<Vec<Vec<u8>>> {
        let current = verify_root(&self.root_bytes()?)?.signed.version.get();
        let mut out = Vec::new();
        for version in published + 1..=current {
            let path = self
                .dir
                .join(ROOTS_DIR)
                .join(format!("{version}.root.json"));
            out.push(if version == current {
                self.root_bytes()?
            } else {
                read(&path)?
            });
        }
        Ok(out)
    }

    fn keep_root(&self, version: u64, bytes: &[u8]) -> Result<()> {
        let dir = self.dir.join(ROOTS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        atomic::write_file(&dir.join(format!("{version}.root.json")), bytes)
    }

    /// Opens an existing repository folder.
    pub fn open(dir: &Path) -> Result<ImageRepo> {
        let repo = ImageRepo {
            dir: dir.to_path_buf(),
        };
        for path in [repo.root_path(), repo.targets_path()] {
            std::fs::metadata(&path).map_err(|source| Error::RepoRead { path, source })?;
        }
        Ok(repo)
    }

    /// The repository folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs `payload` as a package: copies it into `targets/`, adds (or replaces) its target with
    /// the manifest in `custom`, bumps the targets version and re-signs targets.json with the
    /// offline targets key.
    ///
    /// Refuses a name and version already signed with a different payload or manifest, and a new
    /// version whose `release_counter` does not exceed every signed version of the same package.
    pub async fn add_package(
        &self,
        payload: &Path,
        manifest: &Manifest,
        targets_key: &Path,
        expires: DateTime<Utc>,
    ) -> Result<TargetEntry> {
        manifest.validate()?;
        let root = verify_root(&self.root_bytes()?)?;
        let key = keys::public_key(targets_key).await?;
        if !root.signed.keys(RoleType::Targets).any(|k| *k == key) {
            return Err(Error::WrongTargetsKey {
                path: targets_key.to_path_buf(),
            });
        }
        let current: Signed<Targets> = online::parse(TARGETS_FILE, &self.targets_bytes()?)?;
        root.signed
            .verify_role(&current)
            .map_err(|e| online::signature_invalid(TARGETS_FILE, e))?;

        let name = manifest.target_name();
        let info = archive::sha256_file(payload)?;
        for existing in online::target_entries(&current)? {
            check_compatible(&existing, &name, manifest, &info.sha256)?;
        }

        let stored = self
            .dir
            .join(TARGETS_DIR)
            .join(format!("{}.{name}", info.sha256));
        copy_payload(payload, &stored)?;
        let mut target = Target::from_path(&stored)
            .await
            .map_err(|e| Error::schema(format!("cannot hash {}", stored.display()), e))?;
        if hex::encode(target.hashes.sha256.as_ref() as &[u8]) != info.sha256 {
            let _ = std::fs::remove_file(&stored);
            return Err(Error::PayloadChanged {
                path: payload.to_path_buf(),
            });
        }
        target.custom = manifest.to_custom();

        let mut targets = current.signed;
        targets.version = next_targets_version(targets.version)?;
        targets.expires = expiry::to_tuf(expires)?;
        let target_name = TargetName::new(name.as_str())
            .map_err(|e| Error::tuf(format!("invalid target name `{name}`"), e))?;
        targets.add_target(target_name, target);

        let signed = sign_role(
            targets,
            &KeyHolder::Root(root.signed),
            targets_key,
            "targets.json",
        )
        .await?;
        atomic::write_file(&self.targets_path(), signed.buffer())?;
        Ok(TargetEntry {
            name,
            manifest: manifest.clone(),
            sha256: info.sha256,
            length: info.length,
        })
    }

    /// The exact bytes of root.json, to pin in agents and push to the controller.
    pub fn root_bytes(&self) -> Result<Vec<u8>> {
        read(&self.root_path())
    }

    /// The exact bytes of targets.json, to push to the controller.
    pub fn targets_bytes(&self) -> Result<Vec<u8>> {
        read(&self.targets_path())
    }

    /// Where the payload of a signed package is stored.
    pub fn payload_path(&self, entry: &TargetEntry) -> PathBuf {
        self.dir
            .join(TARGETS_DIR)
            .join(format!("{}.{}", entry.sha256, entry.name))
    }

    /// The packages listed in targets.json, sorted by target name.
    pub fn entries(&self) -> Result<Vec<TargetEntry>> {
        let targets: Signed<Targets> = online::parse(TARGETS_FILE, &self.targets_bytes()?)?;
        online::target_entries(&targets)
    }

    /// The current targets.json version.
    pub fn targets_version(&self) -> Result<u64> {
        let targets: Signed<Targets> = online::parse(TARGETS_FILE, &self.targets_bytes()?)?;
        Ok(targets.signed.version.get())
    }

    fn root_path(&self) -> PathBuf {
        self.dir.join(ROOT_FILE)
    }

    fn targets_path(&self) -> PathBuf {
        self.dir.join(TARGETS_FILE)
    }
}

fn check_compatible(
    existing: &TargetEntry,
    name: &str,
    manifest: &Manifest,
    sha256: &str,
) -> Result<()> {
    let conflict = |reason: String| Error::PackageConflict {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        reason,
    };
    if existing.name == name {
        if existing.sha256 != sha256 {
            return Err(conflict(format!(
                "its payload has sha256 {}, this payload has sha256 {sha256}",
                existing.sha256
            )));
        }
        if existing.manifest != *manifest {
            return Err(conflict("with a different manifest".into()));
        }
    } else if existing.manifest.name == manifest.name
        && existing.manifest.release_counter >= manifest.release_counter
    {
        return Err(Error::ReleaseCounterNotIncreasing {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            counter: manifest.release_counter,
            existing_version: existing.manifest.version.clone(),
            existing_counter: existing.manifest.release_counter,
        });
    }
    Ok(())
}

async fn sign_role<T>(role: T, holder: &KeyHolder, key: &Path, file: &str) -> Result<SignedRole<T>>
where
    T: tough::schema::Role + serde::Serialize,
{
    sign_with(role, holder, &[key.to_path_buf()], file).await
}

/// Sign with every key in `keys` that the holder lists for the role.
async fn sign_with<T>(
    role: T,
    holder: &KeyHolder,
    keys: &[PathBuf],
    file: &str,
) -> Result<SignedRole<T>>
where
    T: tough::schema::Role + serde::Serialize,
{
    let sources: Vec<Box<dyn KeySource>> = keys
        .iter()
        .map(|k| Box::new(keys::key_source(k)) as Box<dyn KeySource>)
        .collect();
    let names = keys
        .iter()
        .map(|k| k.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    SignedRole::new(role, holder, &sources, &SystemRandom::new())
        .await
        .map_err(|e| Error::tuf(format!("cannot sign {file} with key(s) {names}"), e))
}

fn next_targets_version(version: NonZeroU64) -> Result<NonZeroU64> {
    version.checked_add(1).ok_or_else(|| Error::TargetsVersion {
        file: "targets.json",
        reason: "the version counter is exhausted".into(),
    })
}

/// A threshold of 1..=`keys`.
fn check_threshold(keys: usize, threshold: u64) -> Result<NonZeroU64> {
    if keys == 0 {
        return Err(Error::RootInvalid {
            reason: "no root key given".into(),
        });
    }
    NonZeroU64::new(threshold)
        .filter(|t| t.get() <= keys as u64)
        .ok_or_else(|| Error::RootInvalid {
            reason: format!(
                "a threshold of {threshold} needs between 1 and {keys} root keys signing"
            ),
        })
}

/// List `keys` (and only them) for `role` with `threshold`.
fn set_role(
    root: &mut Root,
    role: RoleType,
    keys: Vec<tough::schema::key::Key>,
    threshold: NonZeroU64,
) -> Result<()> {
    let mut ids = Vec::new();
    for key in keys {
        let id = key
            .key_id()
            .map_err(|e| Error::schema(format!("cannot compute the {role} key id"), e))?;
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        root.keys.insert(id, key);
    }
    root.roles.insert(
        role,
        RoleKeys {
            keyids: ids,
            threshold,
            _extra: HashMap::new(),
        },
    );
    Ok(())
}

fn copy_payload(from: &Path, to: &Path) -> Result<()> {
    let mut source = std::fs::File::open(from).map_err(|e| Error::io("open", from, e))?;
    let mut tmp = atomic::temp_beside(to)?;
    std::io::copy(&mut source, tmp.as_file_mut())
        .map_err(|e| Error::io("copy the payload into", tmp.path(), e))?;
    atomic::commit(tmp, to)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::RepoRead {
        path: path.to_path_buf(),
        source,
    })
}
