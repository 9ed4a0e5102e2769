//! Executors: where a step's attempts run, and over how many instances.
//!
//! The `global` executor runs a step once, here. Fan-out executors (per-node,
//! custom pools) live in the tasks crate, which knows nodes and agents; the
//! scheduler asks a step's executor for its instances, records each one, and
//! hands every attempt of every instance to the executor.

mod global;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use global::Global;

use crate::id::InstanceId;
use crate::plan::PlannedStep;
use crate::store::Facts;
use crate::task::{TaskContext, TaskOutput};

/// A future of one attempt's output.
pub type AttemptFuture = Pin<Box<dyn Future<Output = TaskOutput> + Send + 'static>>;

/// A future of a step's instances.
pub type InstancesFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<InstanceId>, String>> + Send + 'a>>;

/// Runs step attempts somewhere.
pub trait Executor: Send + Sync {
    /// The instances `step` fans out to: `[global]` for a step run once, one
    /// per node for a per-node step. An error fails the step with that reason.
    fn instances<'a>(&'a self, step: &'a PlannedStep, facts: &'a Facts) -> InstancesFuture<'a>;
    /// Runs one attempt of `step` for `ctx.instance`. Dropping the future stops it.
    fn run(&self, step: &PlannedStep, ctx: TaskContext) -> AttemptFuture;
}

/// The executors a run can use, by the name steps give in `executor:`.
#[derive(Clone)]
pub struct Executors {
    by_name: HashMap<String, Arc<dyn Executor>>,
}

impl Default for Executors {
    fn default() -> Self {
        let mut by_name: HashMap<String, Arc<dyn Executor>> = HashMap::new();
        by_name.insert("global".into(), Arc::new(Global));
        Executors { by_name }
    }
}

impl Executors {
    /// Only `global`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an executor.
    pub fn insert(&mut self, name: impl Into<String>, executor: Arc<dyn Executor>) {
        self.by_name.insert(name.into(), executor);
    }

    /// The executor with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.by_name.get(name)
    }
}
