//! Content-addressed payload store: `blobs/<sha256>`. A payload becomes visible only after its bytes hashed to
//! the name it was announced with; partial uploads live in `blobs/tmp/` and never reach agents.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a sha256 (64 lowercase hex characters)")]
    BadName(String),
    #[error("payload is larger than the announced {announced} bytes")]
    TooLong { announced: u64 },
    #[error("payload ended after {got} of the announced {announced} bytes")]
    TooShort { got: u64, announced: u64 },
    #[error("payload hashed to {actual}, not the announced {announced}")]
    HashMismatch { announced: String, actual: String },
    #[error("blob store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

/// A payload being received.
#[derive(Debug)]
pub struct BlobWriter {
    file: tokio::fs::File,
    tmp: PathBuf,
    final_path: PathBuf,
    sha256: String,
    announced: u64,
    written: u64,
    hasher: Sha256,
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Blobs {
    pub fn open(dir: &Path) -> Result<Blobs, BlobError> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // Interrupted uploads from a previous run are garbage.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Blobs {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        if !is_sha256(sha256) {
            return Err(BlobError::BadName(sha256.to_owned()));
        }
        Ok(self.dir.join(sha256))
    }

    /// Whether a complete blob with this name and length is stored.
    pub fn contains(&self, sha256: &str, length: u64) -> bool {
        self.path(sha256)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() == length)
    }

    /// Start receiving a payload announced as `sha256` / `length`.
    pub async fn writer(&self, sha256: &str, length: u64) -> Result<BlobWriter, BlobError> {
        let final_path = self.path(sha256)?;
        let id = format!("{:016x}", rand_u64());
        let tmp = self.dir.join("tmp").join(format!("{sha256}.{id}"));
        let file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        Ok(BlobWriter {
            file,
            tmp,
            final_path,
            sha256: sha256.to_owned(),
            announced: length,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    /// Open a stored blob positioned at `offset`; returns the file and the blob's full length.
    /// Move a blob whose bytes no longer hash to its name out of the way (`<sha256>.corrupt`, kept for a look),
    /// so it is not served again and pushing the package again stores it afresh.
    pub fn quarantine(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        let path = self.path(sha256)?;
        let aside = path.with_extension("corrupt");
        std::fs::rename(&path, &aside).map_err(io(&path))?;
        Ok(aside)
    }

    /// Whether a blob was quarantined.
    pub fn is_quarantined(&self, sha256: &str) -> bool {
        self.path(sha256)
            .map(|p| p.with_extension("corrupt").exists() && !p.exists())
            .unwrap_or(false)
    }

    pub async fn read_from(
        &self,
        sha256: &str,
        offset: u64,
    ) -> Result<(tokio::fs::File, u64), BlobError> {
        let path = self.path(sha256)?;
        let mut file = tokio::fs::File::open(&path).await.map_err(io(&path))?;
        let len = file.metadata().await.map_err(io(&path))?.len();
        file.seek(std::io::SeekFrom::Start(offset.min(len)))
            .await
            .map_err(io(&path))?;
        Ok((file, len))
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.written += chunk.len() as u64;
        if self.written > self.announced {
            return Err(BlobError::TooLong {
                announced: self.announced,
            });
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(io(&self.tmp))
    }

    /// Check length and hash, fsync, and move the blob into place. On error the temp file is removed.
    pub async fn finish(mut self) -> Result<(), BlobError> {
        let result = self.check_and_sync().await;
        match result {
            Ok(()) => tokio::fs::rename(&self.tmp, &self.final_path)
                .await
                .map_err(io(&self.final_path)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&self.tmp).await;
                Err(e)
            }
        }
    }

    async fn check_and_sync(&mut self) -> Result<(), BlobError> {
        if self.written != self.announced {
            return Err(BlobError::TooShort {
                got: self.written,
                announced: self.announced,
            });
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if actual != self.sha256 {
            return Err(BlobError::HashMismatch {
                announced: self.sha256.clone(),
                actual,
            });
        }
        self.file.sync_all().await.map_err(io(&self.tmp))
    }

    /// Give up on this upload.
    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_matching_bytes_become_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let data = b"payload bytes";
        let sha = hex::encode(Sha256::digest(data));

        let mut w = blobs.writer(&sha, data.len() as u64).await.unwrap();
        w.write(b"payload bytez").await.unwrap();
        assert!(matches!(
            w.finish().await,
            Err(BlobError::HashMismatch { .. })
        ));
        assert!(!blobs.contains(&sha, data.len() as u64));

        let mut w = blobs.writer(&sha, 3).await.unwrap();
        assert!(matches!(
            w.write(data).await,
            Err(BlobError::TooLong { .. })
        ));
        w.discard().await;

        let mut w = blobs.writer(&sha, data.len() as u64).await.unwrap();
        w.write(data).await.unwrap();
        w.finish().await.unwrap();
        assert!(blobs.contains(&sha, data.len() as u64));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(matches!(
            blobs.path("../etc/passwd"),
            Err(BlobError::BadName(_))
        ));
    }
}
