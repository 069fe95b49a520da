//! The rollcall agent: enrolls once with a token (`enroll`), then checks in on the controller's interval with
//! inventory and progress (`checkin`), fetches assigned packages through TUF verification (`fetch`), installs
//! them with the signed commands (`install`), and keeps its state on disk (`state`) so a restart or a dropped
//! link resumes where it was. Platform specifics live behind `platform`.
//!
//! Tested by unit tests here (state, runner, transport resume) and end to end by `tests/`, which runs the real
//! binary against a real controller.

pub mod checkin;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod fetch;
pub mod install;
pub mod inventory;
pub mod platform;
pub mod state;
pub mod status;

/// The agent's version, reported at enrollment and every check-in.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
