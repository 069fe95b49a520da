//! Rollouts: the pure decision rules (`engine`), turning a request into a rollout (`plan`), the code that applies
//! the rules to the store (`driver`), admin commands (`commands`) and the status people read (`report`). The state machines themselves live
//! with the records in `model`.
//!
//! The engine is a function of stored state and an injected `now`, so a controller killed at any moment resumes a
//! rollout exactly where it was: nothing about a rollout lives only in memory.

pub mod commands;
pub mod compliance;
pub mod driver;
pub mod engine;
pub mod plan;
pub mod report;
