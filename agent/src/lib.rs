//! The rollcall agent: enrolls once with a token (`enroll`), then `run`s: it checks in on the controller's
//! interval — at once when the controller wakes it over a held-open `Watch` stream (`wake`) — with inventory,
//! progress and its open actions (`checkin`). Each assigned action goes through `action`: fetched through TUF
//! verification (`fetch`), held until the site's maintenance window is open (`window`, decided on the device, so
//! it installs on time even with the controller out of reach), installed with the signed commands (`install`),
//! or dropped when the controller cancels it first (`cancel`). Its state lives on disk (`state`) so a restart or
//! a dropped link resumes where it was. Platform specifics live behind `platform`.
//!
//! Tested by unit tests here (state, windows, cancels, held installs against an unreachable controller, runner,
//! backoff, the watch task) and end to end by `tests/`, which runs the real binary against a real controller.

pub mod action;
pub mod backoff;
pub mod cancel;
pub mod checkin;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod fetch;
pub mod install;
pub mod inventory;
pub mod platform;
pub mod profile;
pub mod run;
pub mod state;
pub mod status;
pub mod wake;
pub mod window;

/// The agent's version, reported at enrollment and every check-in.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
