//! Signing keys: Ed25519 private keys stored as DER PKCS#8 files (the format tough's
//! `LocalKeySource` reads) or, for offline keys, encrypted with a passphrase ([`encrypt`]); their public TUF form,
//! and an in-memory signer for online roles.
//!
//! An encrypted key file is the line `rollcall-encrypted-key-v1` and a JSON object: PBKDF2-HMAC-SHA256 (600,000
//! iterations, 16-byte salt) derives an AES-256-GCM key that seals the PKCS#8 bytes (12-byte nonce, the first line
//! as associated data). Every primitive is aws-lc-rs's.

use crate::atomic;
use crate::error::{Error, Result};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::Ed25519KeyPair;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tough::key_source::KeySource;
use tough::schema::key::Key;
use tough::sign::Sign;

/// Writes a new Ed25519 private key to `path` (mode 0600 on unix); never overwrites a key.
pub fn generate_key(path: &Path) -> Result<()> {
    generate_key_with(path, None)
}

/// [`generate_key`], encrypted with `passphrase` when one is given.
pub fn generate_key_with(path: &Path, passphrase: Option<&str>) -> Result<()> {
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
    let bytes = match passphrase {
        Some(p) => encrypt(pkcs8.as_ref(), p).map_err(|_| Error::KeyGenerate {
            path: path.to_path_buf(),
        })?,
        None => pkcs8.as_ref().to_vec(),
    };

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
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::io("write key file", path, e));
    }
    atomic::sync_dir(dir)
}

/// The key source tough signs with for a private key file (plain, or encrypted with a passphrase).
pub fn key_source(path: &Path) -> FileKey {
    FileKey {
        path: path.to_path_buf(),
    }
}

/// A private key file, plain PKCS#8 or encrypted ([`encrypt`]). The passphrase of an encrypted one comes from the
/// file named by `$ROLLCALL_KEY_PASSPHRASE_FILE`, or is asked for on the terminal; each key is decrypted once
/// per process.
#[derive(Debug, Clone)]
pub struct FileKey {
    pub path: std::path::PathBuf,
}

const MAGIC: &str = "rollcall-encrypted-key-v1";
const ITERATIONS: u32 = 600_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    kdf: String,
    iterations: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

fn derive(passphrase: &str, salt: &[u8], iterations: u32) -> std::result::Result<[u8; 32], ()> {
    let mut key = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(iterations).ok_or(())?;
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        passphrase.as_bytes(),
        &mut key,
    );
    Ok(key)
}

/// Seal PKCS#8 key bytes with a passphrase, in the encrypted key file format.
pub fn encrypt(pkcs8: &[u8], passphrase: &str) -> std::result::Result<Vec<u8>, String> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    fn failed<E>(_: E) -> String {
        "cannot seal the key (the system's random source or cipher failed)".to_owned()
    }
    let rng = SystemRandom::new();
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
    rng.fill(&mut salt).map_err(failed)?;
    rng.fill(&mut nonce).map_err(failed)?;
    let key = derive(passphrase, &salt, ITERATIONS).map_err(failed)?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(failed)?);
    let mut data = pkcs8.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(MAGIC.as_bytes()),
        &mut data,
    )
    .map_err(failed)?;
    let sealed = Sealed {
        kdf: "pbkdf2-hmac-sha256".into(),
        iterations: ITERATIONS,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(data),
    };
    let json = serde_json::to_string(&sealed).map_err(|e| e.to_string())?;
    Ok(format!("{MAGIC}\n{json}\n").into_bytes())
}

/// Whether the bytes of a key file are an encrypted key.
pub fn is_encrypted(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC.as_bytes())
}

/// Open an encrypted key file's bytes with `passphrase`.
pub fn decrypt(bytes: &[u8], passphrase: &str) -> std::result::Result<Vec<u8>, String> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let text = std::str::from_utf8(bytes).map_err(|_| "not an encrypted key file".to_owned())?;
    let json = text
        .strip_prefix(MAGIC)
        .ok_or("not an encrypted key file")?
        .trim();
    let sealed: Sealed =
        serde_json::from_str(json).map_err(|e| format!("damaged encrypted key file: {e}"))?;
    if sealed.kdf != "pbkdf2-hmac-sha256" {
        return Err(format!("unknown key derivation {:?}", sealed.kdf));
    }
    let unhex = |s: &str| hex::decode(s).map_err(|_| "damaged encrypted key file".to_owned());
    let (salt, nonce, mut data) = (
        unhex(&sealed.salt)?,
        unhex(&sealed.nonce)?,
        unhex(&sealed.ciphertext)?,
    );
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| "damaged encrypted key file".to_owned())?;
    let key = derive(passphrase, &salt, sealed.iterations)
        .map_err(|()| "damaged encrypted key file".to_owned())?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key).map_err(|_| "cannot use the derived key".to_owned())?,
    );
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(MAGIC.as_bytes()),
            &mut data,
        )
        .map_err(|_| "wrong passphrase (or a damaged key file)".to_owned())?;
    Ok(plain.to_vec())
}

/// Keys decrypted so far in this process, by path.
static OPENED: std::sync::Mutex<Vec<(std::path::PathBuf, Vec<u8>)>> =
    std::sync::Mutex::new(Vec::new());

/// The passphrase for `path`: from `$ROLLCALL_KEY_PASSPHRASE_FILE`, or asked on the terminal.
pub fn passphrase_for(path: &Path) -> std::result::Result<String, String> {
    if let Some(file) = std::env::var_os("ROLLCALL_KEY_PASSPHRASE_FILE") {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "cannot read the passphrase file {} (ROLLCALL_KEY_PASSPHRASE_FILE): {e}",
                Path::new(&file).display()
            )
        })?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    ask_secret(&format!("Passphrase for {}: ", path.display())).ok_or_else(|| {
        format!(
            "{} is encrypted: run on a terminal, or name a file holding the passphrase in ROLLCALL_KEY_PASSPHRASE_FILE",
            path.display()
        )
    })
}

/// Ask on the terminal without echo (`stty -echo`); `None` when standard input is not a terminal.
pub fn ask_secret(prompt: &str) -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprint!("{prompt}");
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if hidden {
        stty("echo");
    }
    eprintln!();
    read.ok()?;
    Some(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl FileKey {
    fn pkcs8(&self) -> std::result::Result<Vec<u8>, String> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        if !is_encrypted(&bytes) {
            return Ok(bytes);
        }
        let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pkcs8)) = opened.iter().find(|(p, _)| *p == self.path) {
            return Ok(pkcs8.clone());
        }
        let passphrase = passphrase_for(&self.path)?;
        let pkcs8 = decrypt(&bytes, &passphrase)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        opened.push((self.path.clone(), pkcs8.clone()));
        Ok(pkcs8)
    }
}

#[tough::async_trait]
impl KeySource for FileKey {
    async fn as_sign(
        &self,
    ) -> std::result::Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        let pkcs8 = self.pkcs8()?;
        let signer = tough::sign::parse_keypair(&pkcs8)?;
        Ok(Box::new(signer))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err(format!(
            "{}: rollcall does not write keys through tough",
            self.path.display()
        )
        .into())
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

    #[test]
    fn sealed_keys_open_only_with_their_passphrase() {
        let pkcs8 = b"not really a key, but bytes all the same";
        let sealed = encrypt(pkcs8, "correct horse battery staple").unwrap();
        assert!(is_encrypted(&sealed));
        assert!(!sealed.windows(pkcs8.len()).any(|w| w == pkcs8));
        assert_eq!(
            decrypt(&sealed, "correct horse battery staple").unwrap(),
            pkcs8
        );
        assert!(decrypt(&sealed, "incorrect horse battery staple")
            .unwrap_err()
            .contains("wrong passphrase"));
        // Two seals of the same key differ (fresh salt and nonce).
        assert_ne!(
            encrypt(pkcs8, "correct horse battery staple").unwrap(),
            sealed
        );
        let mut damaged = sealed.clone();
        let n = damaged.len();
        damaged[n - 5] ^= 1;
        assert!(decrypt(&damaged, "correct horse battery staple").is_err());
    }

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
