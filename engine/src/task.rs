//! The interface between the engine and what a step body does.
//!
//! The engine knows only gates and approvals itself. Every other body kind
//! (`command`, `script`, and later `check` or `trace`) is a [`TaskKind`]
//! registered in a [`TaskRegistry`] by the crate that implements it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::id::{InstanceId, RunId, StepId};
use crate::store::{Facts, Ledger};

/// What a task needs to know about the attempt it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The run the step belongs to.
    pub run_id: RunId,
    /// The step.
    pub step_id: StepId,
    /// Where the step runs: `global` or a node.
    pub instance: InstanceId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The run's params, defaults filled in.
    pub params: Arc<BTreeMap<String, String>>,
    /// The directory processes start in: where the run was started.
    pub workdir: PathBuf,
    /// Data fetched once per run and kept with it (see [`Facts`]).
    pub facts: Facts,
    /// What the run changed outside kpilot and may have to undo (see [`Ledger`]).
    pub ledger: Ledger,
    /// A person asked for this step to run again (`kpilot resume --retry`):
    /// what an earlier attempt left outside kpilot is replaced, not taken over.
    pub retried: bool,
}

/// What one attempt of a task produced.
#[derive(Debug, Clone, Default)]
pub struct TaskOutput {
    /// `None` when the attempt succeeded, else why it failed.
    pub failure: Option<String>,
    /// The exit code of the step's process, when it had one.
    pub exit_code: Option<i32>,
    /// The last [`OUTPUT_TAIL`] bytes of standard output.
    pub stdout: Vec<u8>,
    /// The last [`OUTPUT_TAIL`] bytes of standard error.
    pub stderr: Vec<u8>,
    /// Structured output, visible to later steps as `steps.ID.output`.
    pub output: Option<serde_json::Value>,
    /// The failure is kpilot's own (its task panicked), not the step's: the
    /// step is not retried or repaired, and the drive ends with exit 4.
    pub internal: bool,
}

/// How much of a step's output is kept with the run: the last 64 KiB.
pub const OUTPUT_TAIL: usize = 64 * 1024;

impl TaskOutput {
    /// An attempt that kpilot itself failed to carry out.
    pub fn internal(reason: impl Into<String>) -> Self {
        TaskOutput {
            failure: Some(reason.into()),
            internal: true,
            ..TaskOutput::default()
        }
    }

    /// An attempt that failed before producing anything.
    pub fn failed(reason: impl Into<String>) -> Self {
        TaskOutput {
            failure: Some(reason.into()),
            ..TaskOutput::default()
        }
    }
}

tokio::task_local! {
    static TIME_LIMIT: Option<std::time::Duration>;
}

/// Runs `attempt` knowing its step's time limit, which the task reads with
/// [`time_limit`]: a task that waits on the cluster (a drain blocked by a
/// PodDisruptionBudget) ends itself a moment before the limit, to say what
/// it waited for instead of being cut off mid-sentence.
pub async fn within_time_limit<F: std::future::Future>(
    limit: Option<std::time::Duration>,
    attempt: F,
) -> F::Output {
    TIME_LIMIT.scope(limit, attempt).await
}

/// The time limit (`timeout`) of the step whose attempt is running, when its
/// executor passed it on with [`within_time_limit`].
pub fn time_limit() -> Option<std::time::Duration> {
    TIME_LIMIT.try_with(|l| *l).ok().flatten()
}

/// A parsed step body, ready to run any number of times.
#[async_trait]
pub trait Task: Send + Sync + fmt::Debug {
    /// Runs one attempt. Dropping the future must stop everything the attempt
    /// started: that is how timeouts and cancellation reach it.
    async fn run(&self, ctx: &TaskContext) -> TaskOutput;

    /// What an attempt kpilot lost (it stopped while the attempt ran) left
    /// outside kpilot, in words for the person who decides whether to retry
    /// it: an image step's Job and its state. `None` when there is nothing
    /// to look at. `ctx` is the lost attempt's.
    async fn left_behind(&self, _ctx: &TaskContext) -> Option<String> {
        None
    }
}

/// What a task kind may look at while it parses a body.
#[derive(Debug)]
pub struct ParseContext<'a> {
    /// The step whose body this is.
    pub step_id: &'a str,
    /// The names of the workflow's params.
    pub params: &'a [String],
}

/// A body kind: its YAML key, and how to parse a body of it into a [`Task`].
pub trait TaskKind: Send + Sync {
    /// The key of the body in a step (`command`, `script`, ...).
    fn name(&self) -> &'static str;
    /// Whether a step of this kind may be re-run after a crash without a person deciding.
    fn idempotent_by_default(&self) -> bool;
    /// Parses a body; the error says what is wrong and what to write instead.
    fn parse(
        &self,
        body: &serde_yaml::Value,
        ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String>;
    /// Whether its attempts run in the kpilot process even on a per-node
    /// executor, for the node of the instance (a Kubernetes action on a node
    /// is made through the API server, not by the node's agent).
    fn runs_in_kpilot(&self) -> bool {
        false
    }
    /// What is suspicious in a body that parses, each said as a warning
    /// (the step and field are added by validation).
    fn warnings(&self, _body: &serde_yaml::Value, _ctx: &ParseContext<'_>) -> Vec<String> {
        Vec::new()
    }
}

/// Checks the syntax of a label selector (`nodes.selector`, a pool's
/// `selector`); the error says what is wrong.
pub type SelectorCheck = fn(&str) -> Result<(), String>;

/// The task kinds a workflow may use.
#[derive(Default)]
pub struct TaskRegistry {
    kinds: BTreeMap<&'static str, Box<dyn TaskKind>>,
    selector: Option<SelectorCheck>,
}

impl TaskRegistry {
    /// A registry with no kinds: only gates and approvals are known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind; a later kind with the same name replaces the earlier one.
    pub fn register(&mut self, kind: Box<dyn TaskKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    /// The kind for a body key.
    pub fn get(&self, name: &str) -> Option<&dyn TaskKind> {
        self.kinds.get(name).map(|k| k.as_ref())
    }

    /// Sets how label selectors are checked at validation; the crate that
    /// matches them against nodes sets it, so the two never disagree.
    pub fn set_selector_check(&mut self, check: SelectorCheck) {
        self.selector = Some(check);
    }

    /// How label selectors are checked, when a crate set it.
    pub fn selector_check(&self) -> Option<SelectorCheck> {
        self.selector
    }

    /// The names of all kinds, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn an_attempt_sees_its_steps_time_limit_only_inside_it() {
        assert_eq!(super::time_limit(), None);
        let limit = Some(Duration::from_secs(7));
        let seen = super::within_time_limit(limit, async { super::time_limit() }).await;
        assert_eq!(seen, limit);
        let none = super::within_time_limit(None, async { super::time_limit() }).await;
        assert_eq!(none, None);
    }
}
