//! The one error type of this crate: every variant names the file, field, entry or target that
//! was wrong, so a one-line message is enough to act on.

use std::path::{Path, PathBuf};

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while building, signing, verifying or extracting a package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === manifest ===
    /// The manifest file could not be read.
    #[error("cannot read manifest {}: {source}", path.display())]
    ManifestRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The manifest is not valid TOML or does not have the manifest's shape (missing or unknown
    /// field, wrong type).
    #[error(
        "manifest{}{} is not a valid rollcall manifest: {}",
        at(path.as_deref()),
        line.map(|l| format!(" (line {l})")).unwrap_or_default(),
        source.message()
    )]
    ManifestParse {
        path: Option<PathBuf>,
        line: Option<usize>,
        #[source]
        source: Box<toml::de::Error>,
    },

    /// The manifest parsed but one field breaks a rule.
    #[error("manifest{}: field `{field}` {reason}", at(path.as_deref()))]
    ManifestInvalid {
        path: Option<PathBuf>,
        field: String,
        reason: String,
    },

    /// The signed `custom` map of a target does not hold a manifest of the expected shape.
    #[error("manifest in the target's custom field `rollcall` has the wrong shape: {source}")]
    ManifestJson {
        #[source]
        source: serde_json::Error,
    },

    // === payload archive ===
    /// The payload source directory holds something a payload may not carry.
    #[error("refusing to package {}: {reason}", path.display())]
    UnsupportedSource { path: PathBuf, reason: String },

    /// The archive would be written inside the directory it packs.
    #[error(
        "refusing to write payload {} inside its own source directory {}",
        out.display(),
        src.display()
    )]
    PayloadInsideSource { out: PathBuf, src: PathBuf },

    /// An archive entry that safe extraction refuses.
    #[error("refusing archive entry `{entry}`: {reason}")]
    UnsafeArchiveEntry { entry: String, reason: String },

    /// The archive is not a readable gzip'd tar.
    #[error("cannot read payload archive {}: {source}", path.display())]
    ArchiveRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The archive unpacks to more than the extraction cap.
    #[error("payload archive {} unpacks to more than {limit} bytes", path.display())]
    ArchiveTooLarge { path: PathBuf, limit: u64 },

    /// Extraction refuses to replace an existing path.
    #[error("extraction destination {} already exists", path.display())]
    DestinationExists { path: PathBuf },

    /// A filesystem operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // === keys ===
    /// Key generation never overwrites a key.
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    KeyExists { path: PathBuf },

    /// The key generator failed.
    #[error("cannot generate an Ed25519 key for {}", path.display())]
    KeyGenerate { path: PathBuf },

    /// A key file could not be read or parsed (Ed25519 / ECDSA P-256 keys must be DER PKCS#8).
    #[error("cannot load signing key {}: {source}", path.display())]
    KeyRead {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A key source (file, KMS, ...) could not produce a signer.
    #[error("cannot load the {role} signing key: {source}")]
    KeySource {
        role: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The given key is not the one root.json lists for the targets role.
    #[error(
        "key {} is not the targets key listed in root.json (SigningKeysNotFound for role targets)",
        path.display()
    )]
    WrongTargetsKey { path: PathBuf },

    /// An offline key is also one of the controller's online keys, which would let the controller
    /// sign what only offline keys may sign.
    #[error("the {role} key must be offline, but it is also one of the controller's online keys")]
    KeyReuse { role: &'static str },

    // === TUF metadata ===
    /// tough failed; `context` says what we were doing.
    #[error("{context}: {source}")]
    Tuf {
        context: String,
        #[source]
        source: Box<tough::error::Error>,
    },

    /// tough's schema layer failed (key ids, serialization); `context` says what we were doing.
    #[error("{context}: {source}")]
    TufSchema {
        context: String,
        #[source]
        source: Box<tough::schema::Error>,
    },

    /// A metadata file is not valid JSON of its role's shape.
    #[error("cannot parse {file}: {source}")]
    MetadataParse {
        file: String,
        #[source]
        source: serde_json::Error,
    },

    /// Signatures on a metadata file do not reach the threshold root.json requires.
    #[error("signature on {file} did not verify against root.json: {reason}")]
    SignatureInvalid { file: String, reason: String },

    /// A metadata file is past its expiry date.
    #[error("{file} expired at {expires}")]
    Expired { file: String, expires: String },

    /// root.json is signed but does not fit rollcall's repository layout.
    #[error("root.json is not usable by rollcall: {reason}")]
    RootInvalid { reason: String },

    /// root.json delegates an online role to keys other than this controller's.
    #[error("root.json does not delegate {role} to this controller's online key")]
    OnlineKeyMismatch { role: &'static str },

    /// The online public key file could not be read or written.
    #[error("invalid online keys JSON: {source}")]
    OnlineKeysJson {
        #[source]
        source: serde_json::Error,
    },

    /// targets.json holds something rollcall does not serve.
    #[error("targets.json is not usable by rollcall: {reason}")]
    TargetsInvalid { reason: String },

    /// One target in targets.json is not a valid rollcall package.
    #[error("target `{target}`: {reason}")]
    TargetInvalid { target: String, reason: String },

    /// One target's signed manifest is invalid.
    #[error("target `{target}`: {source}")]
    TargetManifest {
        target: String,
        #[source]
        source: Box<Error>,
    },

    /// A version number does not fit the metadata it describes.
    #[error("{file} version: {reason}")]
    TargetsVersion { file: &'static str, reason: String },

    /// The image repository folder cannot be used.
    #[error("cannot read image repository file {}: {source}", path.display())]
    RepoRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `ImageRepo::create` never replaces an existing repository.
    #[error("image repository already exists: {} is present", path.display())]
    RepoExists { path: PathBuf },

    /// The same name and version are already signed with different content.
    #[error("package {name} {version} is already signed: {reason}; give it a new version")]
    PackageConflict {
        name: String,
        version: String,
        reason: String,
    },

    /// The payload file changed while it was being copied into the repository.
    #[error("payload {} changed while it was being added; try again", path.display())]
    PayloadChanged { path: PathBuf },

    /// A new version must carry a higher anti-rollback counter than every version already signed.
    #[error(
        "package {name} {version} has release_counter {counter}, but version {existing_version} \
         already has release_counter {existing_counter}; the counter must increase"
    )]
    ReleaseCounterNotIncreasing {
        name: String,
        version: String,
        counter: u64,
        existing_version: String,
        existing_counter: u64,
    },

    /// A timestamp could not be carried into TUF metadata.
    #[error("invalid expiry time {value}: {reason}")]
    Time { value: String, reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn tuf(context: impl Into<String>, source: tough::error::Error) -> Self {
        Error::Tuf {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn schema(context: impl Into<String>, source: tough::schema::Error) -> Self {
        Error::TufSchema {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Attaches the manifest file path to a manifest error that was raised from a string.
    pub(crate) fn in_manifest_file(self, file: &Path) -> Self {
        match self {
            Error::ManifestParse {
                path: None,
                line,
                source,
            } => Error::ManifestParse {
                path: Some(file.to_path_buf()),
                line,
                source,
            },
            Error::ManifestInvalid {
                path: None,
                field,
                reason,
            } => Error::ManifestInvalid {
                path: Some(file.to_path_buf()),
                field,
                reason,
            },
            other => other,
        }
    }
}

/// tough's errors in words a person can act on: a hash mismatch says what it is (never "Transport 'other'
/// error", which reads as a network problem), and key ids print as hex rather than as the `Debug` dump of tough's
/// `Decoded` type.
pub fn tough_words(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = Some(e);
    while let Some(err) = cur {
        match err.downcast_ref::<tough::error::Error>() {
            Some(tough::error::Error::HashMismatch {
                context,
                calculated,
                expected,
                ..
            }) => {
                return format!(
                    "{context} hashes to sha256 {calculated}, but the signed metadata says {expected}: the file \
                     was altered or corrupted (this is not a network problem)"
                )
            }
            Some(tough::error::Error::MaxSizeExceeded {
                max_size,
                specifier,
                ..
            }) => {
                return format!(
                    "more than {max_size} bytes were served where {specifier} allows no more: the file was \
                     altered or replaced (this is not a network problem)"
                )
            }
            _ => {}
        }
        cur = err.source();
    }
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let next = err.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cur = err.source();
    }
    hex_not_debug(&text)
}

/// Replace each `Decoded { bytes: [..], original: "HEX", spooky: PhantomData<..> }` with its HEX.
fn hex_not_debug(text: &str) -> String {
    const START: &str = "Decoded { ";
    const ORIGINAL: &str = "original: \"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(START) {
        let after = &rest[at..];
        let Some(o) = after.find(ORIGINAL) else { break };
        let hex_start = &after[o + ORIGINAL.len()..];
        let Some(q) = hex_start.find('"') else { break };
        let Some(close) = hex_start[q..].find("> }") else {
            break;
        };
        out.push_str(&rest[..at]);
        out.push_str(&hex_start[..q]);
        rest = &hex_start[q + close + 3..];
    }
    out.push_str(rest);
    out
}

fn at(path: Option<&Path>) -> String {
    path.map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}
