//! Executors: where a step's task runs, and over how many instances.
//!
//! The scheduler records each attempt in the store, then hands it to the
//! step's executor to run.

mod global;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use global::Global;

use crate::task::{Task, TaskContext, TaskOutput};

/// A future of one attempt's output.
pub type AttemptFuture = Pin<Box<dyn Future<Output = TaskOutput> + Send + 'static>>;

/// Runs step attempts somewhere.
pub trait Executor: Send + Sync {
    /// The name steps use in `executor:`.
    fn name(&self) -> &str;
    /// Runs one attempt of `task` for `ctx.instance`. Dropping the future stops it.
    fn run(&self, task: Arc<dyn Task>, ctx: TaskContext) -> AttemptFuture;
}
