//! kpilot's task kinds: what a step body does once the engine starts it.
//!
//! Each kind lives in [`task`] and is registered by [`registry`]: `command`
//! (an argv, never through a shell), `script` (a source run by an
//! interpreter) and `trace` (packet drops traced with eBPF, judged by CEL).
//! Processes are started by [`process`], which owns their process groups so
//! that a timeout or a stop kills everything they started.

pub mod agent;
pub mod executor;
pub mod node;
pub mod params;
pub mod process;
pub mod task;

use kpilot_engine::TaskRegistry;

pub use executor::{executors, ExecutorError, ExecutorOptions};

/// A registry with every task kind of this crate.
pub fn registry() -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register(Box::new(task::command::CommandKind));
    registry.register(Box::new(task::script::ScriptKind));
    registry.register(Box::new(task::trace::TraceKind));
    registry
}
