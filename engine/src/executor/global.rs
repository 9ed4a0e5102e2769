//! The `global` executor: each step runs once, in the kpilot process.

use std::sync::Arc;

use super::{AttemptFuture, Executor, InstancesFuture};
use crate::id::InstanceId;
use crate::plan::{Body, PlannedStep};
use crate::store::Facts;
use crate::task::{TaskContext, TaskOutput};

/// Runs every step once, here.
#[derive(Debug, Default, Clone, Copy)]
pub struct Global;

impl Executor for Global {
    fn instances<'a>(&'a self, _step: &'a PlannedStep, _facts: &'a Facts) -> InstancesFuture<'a> {
        Box::pin(async { Ok(vec![InstanceId::global()]) })
    }

    fn run(&self, step: &PlannedStep, ctx: TaskContext) -> AttemptFuture {
        match &step.body {
            Body::Task { task, .. } => {
                let task = Arc::clone(task);
                let limit = step.timeout;
                Box::pin(crate::task::within_time_limit(limit, async move {
                    task.run(&ctx).await
                }))
            }
            other => {
                let kind = other.kind();
                Box::pin(
                    async move { TaskOutput::failed(format!("a {kind} step has nothing to run")) },
                )
            }
        }
    }
}
