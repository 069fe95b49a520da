//! The controller's side of the image repository: it holds only the online snapshot and
//! timestamp keys, verifies what an admin pushes against root.json, and signs snapshot and
//! timestamp over the exact bytes it will serve. It can never sign targets, so it can never make
//! an endpoint run anything an offline key did not sign.

use crate::error::{Error, Result};
use crate::expiry;
use crate::keys::{self, LoadedKey};
use crate::manifest::Manifest;
use crate::TUF_SPEC_VERSION;
use aws_lc_rs::rand::SystemRandom;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::Path;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::key::Key;
use tough::schema::{
    Hashes, KeyHolder, Metafile, Role, RoleType, Root, Signed, Snapshot, Target, Targets, Timestamp,
};

/// The public halves of the controller's online keys. The controller writes this file at init;
/// the admin needs it to build root.json.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OnlineKeys {
    /// Signs snapshot.json.
    pub snapshot: Key,
    /// Signs timestamp.json.
    pub timestamp: Key,
}

impl OnlineKeys {
    /// The public keys of two private key files.
    pub async fn from_key_files(snapshot: &Path, timestamp: &Path) -> Result<OnlineKeys> {
        Ok(OnlineKeys {
            snapshot: keys::public_key(snapshot).await?,
            timestamp: keys::public_key(timestamp).await?,
        })
    }

    /// Pretty JSON for the public online-keys file.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| Error::OnlineKeysJson { source })
    }

    /// Parses the public online-keys file.
    pub fn from_json(json: &str) -> Result<OnlineKeys> {
        serde_json::from_str(json).map_err(|source| Error::OnlineKeysJson { source })
    }
}

/// A signed metadata file ready to serve: the exact bytes and what snapshot/timestamp record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    /// The bytes to serve, unchanged.
    pub bytes: Vec<u8>,
    /// The role's version.
    pub version: u64,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
    /// Length of `bytes`.
    pub length: u64,
}

impl SignedFile {
    /// Describes already-signed bytes (e.g. read back from the controller's store).
    pub fn from_bytes(bytes: Vec<u8>, version: u64) -> SignedFile {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let length = bytes.len() as u64;
        SignedFile {
            bytes,
            version,
            sha256,
            length,
        }
    }

    fn from_role<T: Role + Serialize>(role: &SignedRole<T>) -> SignedFile {
        SignedFile {
            bytes: role.buffer().clone(),
            version: role.signed().signed.version().get(),
            sha256: hex::encode(role.sha256()),
            length: *role.length(),
        }
    }
}

/// One package listed in targets.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    /// TUF target name, `NAME_VERSION.tar.gz`.
    pub name: String,
    /// The signed manifest from the target's `custom` map.
    pub manifest: Manifest,
    /// Lowercase hex sha256 of the payload.
    pub sha256: String,
    /// Payload length in bytes.
    pub length: u64,
}

/// Parses root.json and checks it is self-signed to its threshold, unexpired and laid out as
/// rollcall serves it.
pub fn verify_root(root_json: &[u8]) -> Result<Signed<Root>> {
    verify_root_at(root_json, Utc::now())
}

/// [`verify_root`] at an injected time.
pub fn verify_root_at(root_json: &[u8], now: DateTime<Utc>) -> Result<Signed<Root>> {
    let root: Signed<Root> = parse("root.json", root_json)?;
    root.signed
        .verify_role(&root)
        .map_err(|e| signature_invalid("root.json", e))?;
    expiry::check_not_expired("root.json", root.signed.expires, now)?;
    if !root.signed.consistent_snapshot {
        return Err(Error::RootInvalid {
            reason: "consistent_snapshot must be true".into(),
        });
    }
    for role in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ] {
        if root.signed.keys(role).next().is_none() {
            return Err(Error::RootInvalid {
                reason: format!("no key is listed for the {role} role"),
            });
        }
    }
    Ok(root)
}

/// Checks `next_json` as the root that follows `current`, as a TUF client does: version N+1, signed to the
/// threshold of the current root and to its own, and valid by itself ([`verify_root`]).
pub fn verify_root_update(current: &Signed<Root>, next_json: &[u8]) -> Result<Signed<Root>> {
    let next = verify_root(next_json)?;
    let want = current.signed.version.get() + 1;
    if next.signed.version.get() != want {
        return Err(Error::RootInvalid {
            reason: format!(
                "root.json version {} does not follow version {} (expected {want})",
                next.signed.version, current.signed.version
            ),
        });
    }
    current
        .signed
        .verify_role(&next)
        .map_err(|e| Error::SignatureInvalid {
            file: format!("{want}.root.json"),
            reason: format!(
                "not signed by the keys of root version {}: {}",
                current.signed.version,
                crate::error::tough_words(&e)
            ),
        })?;
    Ok(next)
}

/// Refuses a root.json that does not delegate snapshot and timestamp to exactly this
/// controller's online keys.
pub fn check_root_online_keys(root: &Signed<Root>, online: &OnlineKeys) -> Result<()> {
    for (role, name, key) in [
        (RoleType::Snapshot, "snapshot", &online.snapshot),
        (RoleType::Timestamp, "timestamp", &online.timestamp),
    ] {
        let id = key
            .key_id()
            .map_err(|e| Error::schema(format!("cannot compute the {name} key id"), e))?;
        let delegated = root.signed.roles.get(&role).is_some_and(|rk| {
            rk.threshold.get() == 1
                && rk.keyids.len() == 1
                && rk.keyids[0] == id
                && root.signed.keys.get(&id) == Some(key)
        });
        if !delegated {
            return Err(Error::OnlineKeyMismatch { role: name });
        }
    }
    Ok(())
}

/// Parses pushed targets.json and checks its signatures against root, its expiry, and that every
/// target is a rollcall package whose name matches its signed manifest.
pub fn verify_targets(root: &Signed<Root>, targets_json: &[u8]) -> Result<Signed<Targets>> {
    verify_targets_at(root, targets_json, Utc::now())
}

/// [`verify_targets`] at an injected time.
pub fn verify_targets_at(
    root: &Signed<Root>,
    targets_json: &[u8],
    now: DateTime<Utc>,
) -> Result<Signed<Targets>> {
    let targets: Signed<Targets> = parse("targets.json", targets_json)?;
    root.signed
        .verify_role(&targets)
        .map_err(|e| signature_invalid("targets.json", e))?;
    expiry::check_not_expired("targets.json", targets.signed.expires, now)?;
    target_entries(&targets)?;
    Ok(targets)
}

/// The packages listed in targets.json, sorted by name, each checked like [`verify_targets`].
pub fn target_entries(targets: &Signed<Targets>) -> Result<Vec<TargetEntry>> {
    if targets
        .signed
        .delegations
        .as_ref()
        .is_some_and(|d| !d.roles.is_empty())
    {
        return Err(Error::TargetsInvalid {
            reason: "delegated targets roles are not supported".into(),
        });
    }
    let mut entries = targets
        .signed
        .targets
        .iter()
        .map(|(name, target)| target_entry(name.raw(), target))
        .collect::<Result<Vec<_>>>()?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn target_entry(name: &str, target: &Target) -> Result<TargetEntry> {
    let manifest = Manifest::from_custom(&target.custom).map_err(|e| Error::TargetManifest {
        target: name.to_string(),
        source: Box::new(e),
    })?;
    let expected = manifest.target_name();
    if name != expected {
        return Err(Error::TargetInvalid {
            target: name.to_string(),
            reason: format!("its manifest says the target must be named `{expected}`"),
        });
    }
    let sha256: &[u8] = target.hashes.sha256.as_ref();
    if sha256.len() != 32 {
        return Err(Error::TargetInvalid {
            target: name.to_string(),
            reason: format!("sha256 is {} bytes long, not 32", sha256.len()),
        });
    }
    Ok(TargetEntry {
        name: name.to_string(),
        manifest,
        sha256: hex::encode(sha256),
        length: target.length,
    })
}

/// Signs snapshot.json listing `targets_bytes` (which must verify against root and be version
/// `targets_version`) with the online snapshot key.
pub async fn sign_snapshot(
    root: &Signed<Root>,
    targets_bytes: &[u8],
    targets_version: u64,
    snapshot_version: u64,
    key: &dyn KeySource,
    expires: DateTime<Utc>,
) -> Result<SignedFile> {
    let targets: Signed<Targets> = parse("targets.json", targets_bytes)?;
    root.signed
        .verify_role(&targets)
        .map_err(|e| signature_invalid("targets.json", e))?;
    if targets.signed.version.get() != targets_version {
        return Err(Error::TargetsVersion {
            file: "targets.json",
            reason: format!(
                "the signed file is version {}, but version {targets_version} was given",
                targets.signed.version
            ),
        });
    }
    let mut snapshot = Snapshot::new(
        TUF_SPEC_VERSION.to_string(),
        non_zero("snapshot.json", snapshot_version)?,
        expiry::to_tuf(expires)?,
    );
    snapshot.meta.insert(
        "targets.json".to_string(),
        metafile(targets_bytes, targets.signed.version),
    );
    sign(root, snapshot, key, "snapshot").await
}

/// Signs timestamp.json pointing at `snapshot` (which must verify against root) with the online
/// timestamp key.
pub async fn sign_timestamp(
    root: &Signed<Root>,
    snapshot: &SignedFile,
    timestamp_version: u64,
    key: &dyn KeySource,
    expires: DateTime<Utc>,
) -> Result<SignedFile> {
    let parsed: Signed<Snapshot> = parse("snapshot.json", &snapshot.bytes)?;
    root.signed
        .verify_role(&parsed)
        .map_err(|e| signature_invalid("snapshot.json", e))?;
    if parsed.signed.version.get() != snapshot.version {
        return Err(Error::TargetsVersion {
            file: "snapshot.json",
            reason: format!(
                "the signed file is version {}, but version {} was given",
                parsed.signed.version, snapshot.version
            ),
        });
    }
    let mut timestamp = Timestamp::new(
        TUF_SPEC_VERSION.to_string(),
        non_zero("timestamp.json", timestamp_version)?,
        expiry::to_tuf(expires)?,
    );
    timestamp.meta.insert(
        "snapshot.json".to_string(),
        metafile(&snapshot.bytes, parsed.signed.version),
    );
    sign(root, timestamp, key, "timestamp").await
}

async fn sign<T: Role + Serialize>(
    root: &Signed<Root>,
    role: T,
    key: &dyn KeySource,
    name: &'static str,
) -> Result<SignedFile> {
    let signer = LoadedKey::load(key, name).await?;
    let signed = SignedRole::new(
        role,
        &KeyHolder::Root(root.signed.clone()),
        &signer.boxed(),
        &SystemRandom::new(),
    )
    .await
    .map_err(|e| {
        Error::tuf(
            format!("cannot sign {name}.json with the given {name} key"),
            e,
        )
    })?;
    Ok(SignedFile::from_role(&signed))
}

fn metafile(bytes: &[u8], version: NonZeroU64) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: Sha256::digest(bytes).to_vec().into(),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    }
}

fn non_zero(file: &'static str, version: u64) -> Result<NonZeroU64> {
    NonZeroU64::new(version).ok_or_else(|| Error::TargetsVersion {
        file,
        reason: "versions start at 1".into(),
    })
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::MetadataParse {
        file: file.to_string(),
        source,
    })
}

pub(crate) fn signature_invalid(file: &str, source: tough::schema::Error) -> Error {
    Error::SignatureInvalid {
        file: file.to_string(),
        reason: crate::error::tough_words(&source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn online_keys_json_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (s, t) = (tmp.path().join("s.pk8"), tmp.path().join("t.pk8"));
        keys::generate_key(&s).expect("s");
        keys::generate_key(&t).expect("t");
        let online = OnlineKeys::from_key_files(&s, &t).await.expect("load");
        let json = online.to_json().expect("json");
        assert_eq!(OnlineKeys::from_json(&json).expect("parse"), online);
        assert!(matches!(
            OnlineKeys::from_json("{}"),
            Err(Error::OnlineKeysJson { .. })
        ));
    }

    #[test]
    fn garbage_metadata_names_the_file() {
        let err = verify_root(b"not json").expect_err("garbage");
        assert!(matches!(err, Error::MetadataParse { .. }), "{err:?}");
        assert!(err.to_string().contains("root.json"), "{err}");
    }
}
