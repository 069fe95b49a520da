//! The rollcall controller: the gRPC server agents and admins talk to (`server`), its sled store (`store`, the
//! only module that knows sled), the content-addressed payload store (`blobs`), the TUF repository it hosts
//! (`repo`), the device CA (`pki`) and the rollout engine (`rollout`); plus the admin CLI `rollcall` (`cli`).
//!
//! Unit tests sit beside each rule (state machines, engine, store, CA); the end-to-end tests in `tests/` start
//! the real binaries on loopback.

pub mod blobs;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod error;
pub mod init;
pub mod model;
pub mod pki;
pub mod repo;
pub mod rollout;
pub mod server;
pub mod store;

pub use error::{Error, Result};
