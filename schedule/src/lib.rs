//! kpilot-schedule: patrols, the same checks run again and again on a
//! schedule, so that a problem that only shows later is found before users
//! notice it.
//!
//! It reads the `kind: Patrol` file ([`file`]), turns cron expressions into
//! slots ([`slots`]), claims each slot durably before anything runs for it
//! ([`claims`]), so that a daemon killed with `kill -9` never runs a slot
//! twice and resumes the run it was driving, applies the concurrency policy
//! and the history limit ([`daemon`]), tells people what changed
//! ([`notify`]) and counts what happened ([`metrics`]).
//!
//! It knows no Kubernetes and no CLI: what a slot runs is behind the
//! [`daemon::Launcher`] trait, which the `kpilot` binary implements with the
//! same code as `kpilot inspect` and `kpilot run`.

pub mod claims;
pub mod daemon;
pub mod file;
pub mod metrics;
pub mod notify;
pub mod slots;

pub use claims::{Claim, Claims, SlotState};
pub use file::{Notify, Patrol, PatrolFileError, Policy, Schedule, Target};
