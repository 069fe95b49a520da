//! The rollcall update-package format.
//!
//! A package is a payload archive ([`archive`]) plus a [`Manifest`] naming its install, verify
//! and rollback commands. The admin signs it offline as a TUF target into an image repository
//! folder ([`ImageRepo`]), with the manifest inside the target's signed `custom` map. The
//! controller verifies what is pushed against root.json and signs snapshot and timestamp with its
//! online keys ([`online`]); it holds no key that could sign targets. Agents verify with tough's
//! `RepositoryLoader` and unpack with [`extract_payload`], which accepts only regular files and
//! directories under the destination.
//!
//! All TUF signing and verification is tough's (`tough::editor::signed::SignedRole`,
//! `Root::verify_role`); this crate only assembles the roles.
//!
//! Tests run with real Ed25519 keys in temp dirs: unit tests beside each module, and
//! `tests/tuf_flow.rs` builds a repository, signs it with online keys and loads it with tough's
//! own client over `file://` URLs, including the refusals (wrong key, tampered bytes, tampered
//! payload).

pub mod archive;
pub mod atomic;
pub mod error;
mod expiry;
pub mod keys;
pub mod manifest;
pub mod online;
pub mod platform;
pub mod repo;
pub mod version;

pub use archive::{build_payload, extract_payload, sha256_file, PayloadInfo, MAX_EXTRACTED_BYTES};
pub use error::{Error, Result};
pub use keys::{generate_key, key_id_hex, key_source, public_key};
pub use manifest::{Command, Manifest, PackageKind, Reboot};
pub use online::{
    check_root_online_keys, sign_snapshot, sign_timestamp, target_entries, verify_root,
    verify_root_at, verify_targets, verify_targets_at, OnlineKeys, SignedFile, TargetEntry,
};
pub use repo::ImageRepo;

/// The TUF specification version written into every role.
pub const TUF_SPEC_VERSION: &str = "1.0.0";
