//! Rollouts: the state machines (`state`), the pure decision rules (`engine`), and the code that applies them to
//! the store (`driver`) and reports on them (`report`).
//!
//! The engine is a function of stored state and an injected `now`, so a controller killed at any moment resumes a
//! rollout exactly where it was: nothing about a rollout lives only in memory.

pub mod driver;
pub mod engine;
pub mod report;
pub mod state;
