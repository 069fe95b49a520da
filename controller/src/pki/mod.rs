//! The controller's device CA (`ca`) and its TLS server configuration (`tls`).

pub mod ca;
pub mod tls;

pub use ca::{Ca, Issued};
