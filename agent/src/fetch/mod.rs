//! Fetching an assigned target: refresh TUF metadata through the controller (tough, with its datastore on
//! disk), find the target and its signed manifest, and download the payload — resumable, size- and
//! hash-checked while streaming — into `staged/<sha256>`. Nothing reaches the install area before the whole
//! stream verified.

pub mod transport;

use std::path::PathBuf;

use futures::StreamExt;
use rollcall_packaging::Manifest;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tough::{RepositoryLoader, TargetName};
use url::Url;

use crate::config::AgentDirs;
use transport::{GrpcTransport, METADATA_BASE, TARGETS_BASE};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("TUF metadata refused: {0}")]
    Metadata(String),
    /// The controller could not be reached (or the link dropped) while refreshing metadata.
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    #[error("target {0} is not in the signed targets metadata")]
    NotSigned(String),
    #[error("signed manifest of {target} is invalid: {reason}")]
    Manifest { target: String, reason: String },
    /// The payload failed verification (hash or size); the partial download was discarded.
    #[error("payload of {target} failed verification and was discarded: {reason}")]
    Verification { target: String, reason: String },
    /// The download stopped early (link dropped); it resumes from where it stopped next time.
    #[error("download of {target} interrupted after {done} of {total} bytes: {reason}")]
    Interrupted {
        target: String,
        done: u64,
        total: u64,
        reason: String,
    },
    #[error("local I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    /// Worth trying again later without anyone doing anything (as opposed to a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Interrupted { .. } | FetchError::Unreachable(_) | FetchError::Io { .. }
        )
    }
}

/// A verified payload ready to install.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest: Manifest,
    pub payload: PathBuf,
    pub sha256: String,
    pub length: u64,
    /// Bytes that came from an earlier, interrupted attempt.
    pub resumed_bytes: u64,
}

fn chain(e: &dyn std::error::Error) -> String {
    rollcall_proto::tls::error_chain(e)
}

/// The signed facts about a target, read from freshly verified metadata.
pub struct TargetInfo {
    pub manifest: Manifest,
    pub sha256: String,
    pub length: u64,
}

/// Verified metadata for one target, before its payload is downloaded: the caller checks the signed manifest
/// (platform, anti-rollback) and only then calls [`Prepared::download`].
pub struct Prepared {
    repo: tough::Repository,
    name: TargetName,
    target_name: String,
    transport: GrpcTransport,
    pub info: TargetInfo,
}

/// Refresh metadata through the controller and find `target_name` in it.
pub async fn prepare(
    channel: &Channel,
    dirs: &AgentDirs,
    target_name: &str,
) -> Result<Prepared, FetchError> {
    let root = std::fs::read(dirs.root_pin()).map_err(|source| FetchError::Io {
        path: dirs.root_pin(),
        source,
    })?;
    let datastore = dirs.tuf_datastore();
    std::fs::create_dir_all(&datastore).map_err(|source| FetchError::Io {
        path: datastore.clone(),
        source,
    })?;
    let transport = GrpcTransport::new(channel.clone(), dirs.downloads());
    let metadata = Url::parse(METADATA_BASE).map_err(|e| FetchError::Metadata(e.to_string()))?;
    let targets = Url::parse(TARGETS_BASE).map_err(|e| FetchError::Metadata(e.to_string()))?;
    let repo = RepositoryLoader::new(&root, metadata, targets)
        .transport(transport.clone())
        .datastore(datastore)
        .load()
        .await
        .map_err(|e| match transport.take_network_failure() {
            Some(reason) => FetchError::Unreachable(reason),
            None => FetchError::Metadata(chain(&e)),
        })?;
    let name =
        TargetName::new(target_name).map_err(|_| FetchError::NotSigned(target_name.to_owned()))?;
    let target = repo
        .targets()
        .signed
        .find_target(&name, false)
        .map_err(|_| FetchError::NotSigned(target_name.to_owned()))?;
    let manifest = Manifest::from_custom(&target.custom).map_err(|e| FetchError::Manifest {
        target: target_name.to_owned(),
        reason: e.to_string(),
    })?;
    if manifest.target_name() != target_name {
        return Err(FetchError::Manifest {
            target: target_name.to_owned(),
            reason: format!("manifest names {}", manifest.target_name()),
        });
    }
    let info = TargetInfo {
        manifest,
        sha256: hex::encode(&target.hashes.sha256),
        length: target.length,
    };
    Ok(Prepared {
        repo,
        name,
        target_name: target_name.to_owned(),
        transport,
        info,
    })
}

/// The partial download of a target's payload (`downloads/<sha256>.<target>.part`).
pub fn part_path(dirs: &AgentDirs, sha256: &str, target_name: &str) -> PathBuf {
    transport::part_path(&dirs.downloads(), &format!("{sha256}.{target_name}"))
}

/// Delete a payload's partial download and its staged copy (both may be absent). Returns the files removed.
pub fn remove_payload(dirs: &AgentDirs, sha256: &str, target_name: &str) -> Vec<PathBuf> {
    [part_path(dirs, sha256, target_name), dirs.staged(sha256)]
        .into_iter()
        .filter(|path| std::fs::remove_file(path).is_ok())
        .collect()
}

impl Prepared {
    /// Bytes already on disk from an earlier, interrupted download of this payload.
    pub fn partial_bytes(&self, dirs: &AgentDirs) -> u64 {
        let part = part_path(dirs, &self.info.sha256, &self.target_name);
        std::fs::metadata(part).map(|m| m.len()).unwrap_or(0)
    }

    /// Download and verify the payload into `staged/<sha256>` (resuming an earlier partial download).
    pub async fn download(self, dirs: &AgentDirs) -> Result<Fetched, FetchError> {
        let Prepared {
            repo,
            name,
            target_name,
            transport,
            info,
        } = self;
        let target_name = target_name.as_str();
        let staged = dirs.staged(&info.sha256);
        if std::fs::metadata(&staged).is_ok_and(|m| m.len() == info.length) {
            if let Ok(p) = rollcall_packaging::sha256_file(&staged) {
                if p.sha256 == info.sha256 {
                    return Ok(Fetched {
                        manifest: info.manifest,
                        payload: staged,
                        sha256: info.sha256,
                        length: info.length,
                        resumed_bytes: info.length,
                    });
                }
            }
            let _ = std::fs::remove_file(&staged);
        }

        let part = part_path(dirs, &info.sha256, target_name);
        let resumed_bytes = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut stream = match repo.read_target(&name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(FetchError::NotSigned(target_name.to_owned())),
            Err(e) => {
                return Err(match transport.take_network_failure() {
                    Some(reason) => FetchError::Unreachable(reason),
                    None => FetchError::Metadata(chain(&e)),
                })
            }
        };
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => {
                    hasher.update(&bytes);
                    done += bytes.len() as u64;
                }
                Err(e) => {
                    let reason = chain(&e);
                    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                    let network = transport.take_network_failure();
                    // A complete (or over-long) file that fails is bad content: never resume from it.
                    if network.is_none() && have >= info.length {
                        let _ = std::fs::remove_file(&part);
                        return Err(FetchError::Verification {
                            target: target_name.to_owned(),
                            reason,
                        });
                    }
                    return Err(FetchError::Interrupted {
                        target: target_name.to_owned(),
                        done: have,
                        total: info.length,
                        reason,
                    });
                }
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != info.sha256 || done != info.length {
            let _ = std::fs::remove_file(&part);
            return Err(FetchError::Verification {
                target: target_name.to_owned(),
                reason: format!("got {done} bytes hashing to {actual}"),
            });
        }
        if let Some(dir) = staged.parent() {
            std::fs::create_dir_all(dir).map_err(|source| FetchError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        std::fs::rename(&part, &staged).map_err(|source| FetchError::Io {
            path: staged.clone(),
            source,
        })?;
        Ok(Fetched {
            manifest: info.manifest,
            payload: staged,
            sha256: info.sha256,
            length: info.length,
            resumed_bytes,
        })
    }
}
