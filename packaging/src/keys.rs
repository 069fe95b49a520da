//! Signing keys: Ed25519 private keys stored as DER PKCS#8 files (the format tough's
//! `LocalKeySource` reads), their public TUF form, and an in-memory signer for online roles.

use crate::atomic;
use crate::error::{Error, Result};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::Ed25519KeyPair;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::key::Key;
use tough::sign::Sign;

/// Writes a new Ed25519 private key to `path` (mode 0600 on unix); never overwrites a key.
pub fn generate_key(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::KeyExists {
            path: path.to_path_buf(),
        });
    }
    let dir = atomic::parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| Error::KeyGenerate {
            path: path.to_path_buf(),
        })?;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::KeyExists {
                path: path.to_path_buf(),
            }
        } else {
            Error::io("create key file", path, e)
        }
    })?;
    let written = file
        .write_all(pkcs8.as_ref())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::io("write key file", path, e));
    }
    atomic::sync_dir(dir)
}

/// The key source tough signs with for a private key file.
pub fn key_source(path: &Path) -> LocalKeySource {
    LocalKeySource {
        path: path.to_path_buf(),
    }
}

/// The public TUF key of a private key file, as root.json lists it.
pub async fn public_key(path: &Path) -> Result<Key> {
    let signer = key_source(path)
        .as_sign()
        .await
        .map_err(|source| Error::KeyRead {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(signer.tuf_key())
}

/// The hex key id root.json uses for `key`.
pub fn key_id_hex(key: &Key) -> Result<String> {
    let id = key
        .key_id()
        .map_err(|e| Error::schema("cannot compute a key id", e))?;
    Ok(hex::encode(id.as_ref() as &[u8]))
}

/// A signer loaded once from any key source and handed to tough as an owned key source, so
/// callers can pass `&dyn KeySource` while tough wants `Box<dyn KeySource>`.
#[derive(Clone)]
pub(crate) struct LoadedKey(Arc<dyn Sign>);

impl LoadedKey {
    pub(crate) async fn load(source: &dyn KeySource, role: &'static str) -> Result<LoadedKey> {
        let signer = source
            .as_sign()
            .await
            .map_err(|source| Error::KeySource { role, source })?;
        Ok(LoadedKey(Arc::from(signer)))
    }

    pub(crate) fn public(&self) -> Key {
        self.0.tuf_key()
    }

    pub(crate) fn boxed(&self) -> Vec<Box<dyn KeySource>> {
        vec![Box::new(self.clone())]
    }
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("key_id", &key_id_hex(&self.public()).ok())
            .finish()
    }
}

#[tough::async_trait]
impl Sign for LoadedKey {
    fn tuf_key(&self) -> Key {
        self.0.tuf_key()
    }

    async fn sign(
        &self,
        msg: &[u8],
        rng: &(dyn SecureRandom + Sync),
    ) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.sign(msg, rng).await
    }
}

#[tough::async_trait]
impl KeySource for LoadedKey {
    async fn as_sign(
        &self,
    ) -> std::result::Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        Ok(Box::new(self.clone()))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("a loaded signing key cannot be written back".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_keys_load_and_are_distinct() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("keys/a.pk8");
        let b = tmp.path().join("keys/b.pk8");
        generate_key(&a).expect("a");
        generate_key(&b).expect("b");
        let ka = public_key(&a).await.expect("public a");
        let kb = public_key(&b).await.expect("public b");
        assert_ne!(ka, kb);
        assert_eq!(key_id_hex(&ka).expect("id").len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = LoadedKey::load(&key_source(&a), "test")
            .await
            .expect("load");
        assert_eq!(loaded.public(), ka);
    }

    #[test]
    fn never_overwrites_a_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("k.pk8");
        generate_key(&path).expect("first");
        let before = std::fs::read(&path).expect("read");
        let err = generate_key(&path).expect_err("second");
        assert!(matches!(err, Error::KeyExists { .. }), "{err:?}");
        assert!(err.to_string().contains("k.pk8"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }

    #[tokio::test]
    async fn unreadable_keys_name_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("not-a-key.pem");
        std::fs::write(&path, b"-----BEGIN NONSENSE-----\n").expect("write");
        let err = public_key(&path).await.expect_err("garbage");
        assert!(matches!(err, Error::KeyRead { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-key.pem"), "{err}");
    }
}
