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

/// Why a fetch failed, which decides what happens next: only `Network` is retried silently by the agent (and still
/// reported as "download failing since …"); the others fail the attempt with their reason, and the rollout's retry
/// policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The link or the controller is not there right now (unreachable, dropped, stalled).
    Network,
    /// The controller answered wrongly: a refusal, data for the wrong offset.
    Controller,
    /// This device: disk full, permissions, a file that cannot be read or written.
    Local,
    /// The package itself: metadata, signature, manifest or payload refused by verification.
    Package,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Network => "network",
            Cause::Controller => "controller",
            Cause::Local => "local",
            Cause::Package => "package",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("TUF metadata refused: {}", chain(.0.as_ref()))]
    Metadata(Box<tough::error::Error>),
    /// The base URLs tough is given did not parse (a build defect, never the network's or the package's).
    #[error("internal: the transport URL {url} does not parse: {source}")]
    BaseUrl {
        url: &'static str,
        source: url::ParseError,
    },
    /// The controller could not be reached (or the link dropped) while refreshing metadata.
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    /// The controller refused the transfer or sent something wrong (e.g. data for another offset).
    #[error("the controller answered wrongly: {0}")]
    Controller(String),
    /// A file of this device could not be read or written (the partial download, the datastore).
    #[error("{0}")]
    Local(String),
    #[error("not enough free disk space in {dir}: the download needs {need} more bytes and {free} are free")]
    NoSpace { dir: PathBuf, need: u64, free: u64 },
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
    pub fn cause(&self) -> Cause {
        match self {
            FetchError::Unreachable(_) | FetchError::Interrupted { .. } => Cause::Network,
            FetchError::Controller(_) => Cause::Controller,
            FetchError::Local(_)
            | FetchError::NoSpace { .. }
            | FetchError::Io { .. }
            | FetchError::BaseUrl { .. } => Cause::Local,
            FetchError::Metadata(_)
            | FetchError::NotSigned(_)
            | FetchError::Manifest { .. }
            | FetchError::Verification { .. } => Cause::Package,
        }
    }

    /// The error for a failure of the transport, by its cause.
    fn of_failure(f: transport::Failure) -> FetchError {
        match f.cause {
            Cause::Network => FetchError::Unreachable(f.reason),
            Cause::Controller => FetchError::Controller(f.reason),
            Cause::Local | Cause::Package => FetchError::Local(f.reason),
        }
    }

    /// The transport's failure if it had one, or else tough's refusal of what arrived (`refused`).
    fn of_load(transport: &GrpcTransport, refused: tough::error::Error) -> FetchError {
        transport.take_failure().map_or_else(
            || FetchError::Metadata(Box::new(refused)),
            FetchError::of_failure,
        )
    }
}

/// Room a download leaves free beyond the payload itself (extraction and everything else on the disk).
const SPACE_MARGIN: u64 = 16 * 1024 * 1024;

/// The refusal when `free` bytes in `dir` cannot hold the `need` bytes still to come (plus a margin).
pub fn space_refusal(dir: &std::path::Path, need: u64, free: Option<u64>) -> Option<FetchError> {
    let free = free?;
    (free < need.saturating_add(SPACE_MARGIN)).then(|| FetchError::NoSpace {
        dir: dir.to_owned(),
        need,
        free,
    })
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

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    rollcall_packaging::error::tough_words(e)
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
    rate: u64,
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
    let transport = GrpcTransport::new(channel.clone(), dirs.downloads(), rate);
    let base =
        |url: &'static str| Url::parse(url).map_err(|source| FetchError::BaseUrl { url, source });
    let (metadata, targets) = (base(METADATA_BASE)?, base(TARGETS_BASE)?);
    let repo = RepositoryLoader::new(&root, metadata, targets)
        .transport(transport.clone())
        .datastore(datastore)
        .load()
        .await
        .map_err(|e| FetchError::of_load(&transport, e))?;
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
        let downloads = dirs.downloads();
        let _ = std::fs::create_dir_all(&downloads);
        let need = info.length.saturating_sub(resumed_bytes);
        if let Some(refusal) =
            space_refusal(&downloads, need, crate::platform::free_space(&downloads))
        {
            return Err(refusal);
        }
        let mut stream = match repo.read_target(&name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(FetchError::NotSigned(target_name.to_owned())),
            Err(e) => return Err(FetchError::of_load(&transport, e)),
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
                    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                    return Err(match transport.take_failure() {
                        Some(f) if f.cause == Cause::Network => FetchError::Interrupted {
                            target: target_name.to_owned(),
                            done: have,
                            total: info.length,
                            reason: f.reason,
                        },
                        Some(f) => FetchError::of_failure(f),
                        // tough refused the bytes themselves (too many, wrong hash): never resume from them.
                        None => {
                            let _ = std::fs::remove_file(&part);
                            FetchError::Verification {
                                target: target_name.to_owned(),
                                reason: chain(&e),
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_that_would_fill_the_disk_is_refused_naming_the_folder() {
        let dir = std::path::Path::new("/data/downloads");
        assert!(
            space_refusal(dir, 1_000, None).is_none(),
            "unknown: no refusal"
        );
        assert!(space_refusal(dir, 1_000, Some(SPACE_MARGIN + 1_000)).is_none());
        let refused = space_refusal(dir, 1_000, Some(SPACE_MARGIN + 999)).unwrap();
        assert_eq!(refused.cause(), Cause::Local);
        assert_eq!(
            refused.to_string(),
            format!(
                "not enough free disk space in /data/downloads: the download needs 1000 more bytes and {} are free",
                SPACE_MARGIN + 999
            )
        );
    }

    #[test]
    fn every_failure_has_the_cause_that_decides_its_retry() {
        let target = || "app_1.tar.gz".to_owned();
        let cases = [
            (FetchError::Unreachable("x".into()), Cause::Network),
            (
                FetchError::Interrupted {
                    target: target(),
                    done: 1,
                    total: 2,
                    reason: "x".into(),
                },
                Cause::Network,
            ),
            (FetchError::Controller("x".into()), Cause::Controller),
            (FetchError::Local("x".into()), Cause::Local),
            (
                FetchError::Io {
                    path: "/x".into(),
                    source: std::io::Error::other("x"),
                },
                Cause::Local,
            ),
            (
                FetchError::Metadata(Box::new(tough::TargetName::new("..").unwrap_err())),
                Cause::Package,
            ),
            (FetchError::NotSigned(target()), Cause::Package),
            (
                FetchError::Verification {
                    target: target(),
                    reason: "x".into(),
                },
                Cause::Package,
            ),
        ];
        for (e, cause) in cases {
            assert_eq!(e.cause(), cause, "{e}");
        }
    }
}
