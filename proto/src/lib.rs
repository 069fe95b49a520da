//! The `rollcall.v1` gRPC protocol (generated from `proto/rollcall/v1/*.proto` by `build.rs`) and the one TLS
//! channel both clients (the agent and the admin CLI) use to reach the controller.
//!
//! Tested through the end-to-end tests in `tests/`, which speak this protocol to a real controller.

pub mod inventory;
pub mod states;
pub mod tls;
pub mod token;

/// Generated messages and services of `rollcall.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rollcall.v1");
}

pub use states::{ActionState, RolloutEvent, RolloutState};
pub use tls::{connect, error_chain, sha256_hex, ClientIdentity, ConnectError, ServerTrust};
pub use token::Token;
