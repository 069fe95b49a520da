//! The records and state machines the rollout engine, the store and the API share. This module imports nothing
//! else of the controller: `store/` turns these records into bytes, `rollout/` decides with them, `server/`
//! converts them to and from the wire. The state enums (with their one mapping to names and wire values) come from
//! `rollcall-proto`, the vocabulary the agent speaks too, and what a platform string matches from
//! `rollcall-packaging`, where manifests define it.

pub mod action;
pub mod agent;
pub mod filter;
pub mod package;
pub mod rollout;
pub mod software;
pub mod window;

pub use action::{ActionRecord, AttemptRecord};
pub use agent::{AgentRecord, InstalledRecord, SiteRecord};
pub use package::PackageRecord;
pub use rollcall_proto::{ActionState, RolloutEvent, RolloutState};
pub use rollout::{Canary, ErrorLimit, Gates, RolloutRecord, Selector, WaveRecord};
