//! Errors of the controller library, each naming the file, key or record it is about.

use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is already in use (found {found}); refusing to overwrite it: init needs a new or empty directory"
    )]
    AlreadyInitialised { path: PathBuf, found: PathBuf },
    #[error("{path} is not a controller data directory: run `rollcall-controller init --data {path}` first")]
    NotInitialised { path: PathBuf },
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("certificate authority: {0}")]
    Pki(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Packaging(#[from] rollcall_packaging::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(String),
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Pki(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Write a file atomically (temp file, fsync, rename, fsync the folder); `mode` applies on unix.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<()> {
    rollcall_packaging::atomic::write(path, bytes, mode).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
