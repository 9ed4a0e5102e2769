//! The `global` executor: each step runs once, in the kpilot process.

use std::sync::Arc;

use super::{AttemptFuture, Executor};
use crate::task::{Task, TaskContext};

/// Runs every step once, here.
#[derive(Debug, Default, Clone, Copy)]
pub struct Global;

impl Executor for Global {
    fn name(&self) -> &str {
        "global"
    }

    fn run(&self, task: Arc<dyn Task>, ctx: TaskContext) -> AttemptFuture {
        Box::pin(async move { task.run(&ctx).await })
    }
}
