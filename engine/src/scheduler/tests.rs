//! Fan-out over fake nodes (the real proof, with agents, is in tests/agent).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::executor::{AttemptFuture, Executor, Executors, InstancesFuture};
use crate::plan::PlannedStep;
use crate::state::RunRecord;
use crate::store::{Facts, StateDir};
use crate::task::{ParseContext, Task, TaskKind, TaskRegistry};
use crate::{RunId, WorkflowSource};

#[derive(Debug)]
struct Noop;

#[async_trait]
impl Task for Noop {
    async fn run(&self, _ctx: &TaskContext) -> TaskOutput {
        TaskOutput::default()
    }
}

struct NoopKind;

impl TaskKind for NoopKind {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn idempotent_by_default(&self) -> bool {
        false
    }
    fn parse(&self, _: &serde_yaml::Value, _: &ParseContext<'_>) -> Result<Arc<dyn Task>, String> {
        Ok(Arc::new(Noop))
    }
}

/// Nodes that run every attempt for 20 ms, failing on the nodes in `failing`.
#[derive(Default)]
struct FakeNodes {
    names: Vec<String>,
    failing: Mutex<HashSet<String>>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    runs: Arc<Mutex<Vec<String>>>,
}

impl Executor for FakeNodes {
    fn instances<'a>(&'a self, _step: &'a PlannedStep, _facts: &'a Facts) -> InstancesFuture<'a> {
        let names = self.names.iter().map(InstanceId::named).collect();
        Box::pin(async move { Ok(names) })
    }

    fn run(&self, _step: &PlannedStep, ctx: TaskContext) -> AttemptFuture {
        let fail = self
            .failing
            .lock()
            .expect("lock")
            .contains(ctx.instance.as_str());
        let (running, most, runs) = (self.running.clone(), self.most.clone(), self.runs.clone());
        Box::pin(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            runs.lock().expect("lock").push(ctx.instance.to_string());
            if fail {
                TaskOutput::failed("node says no")
            } else {
                TaskOutput::default()
            }
        })
    }
}

fn plan(nodes: &str) -> Arc<Plan> {
    let mut registry = TaskRegistry::new();
    registry.register(Box::new(NoopKind));
    let source = WorkflowSource {
        path: "fan.yaml".into(),
        text: format!(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: fan}}\nspec:\n  concurrency: 8\n  steps:\n    - {{id: roll, phase: upgrade, executor: per-node, nodes: {nodes}, noop: {{}}}}\n    - {{id: after, phase: post-check, needs: [roll], noop: {{}}}}\n"
        ),
    };
    Arc::new(crate::validate::validate(&source, &registry).expect("valid"))
}

fn record(id: &RunId) -> RunRecord {
    RunRecord {
        id: id.clone(),
        workflow: "fan".into(),
        file: "fan.yaml".into(),
        source: String::new(),
        params: Default::default(),
        workdir: "/".into(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        state: RunState::Running,
        approvals: Default::default(),
    }
}

fn node_states(store: &RunStore) -> Vec<(String, StepState)> {
    store
        .steps()
        .expect("steps")
        .into_iter()
        .filter(|(s, i, _)| s.as_str() == "roll" && i != &InstanceId::global())
        .map(|(_, i, r)| (i.to_string(), r.state))
        .collect()
}

fn nodes(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("node-{k:02}")).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn rolls_over_every_node_within_max_parallel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r").expect("id");
    let fake = Arc::new(FakeNodes {
        names: nodes(12),
        ..FakeNodes::default()
    });
    let mut executors = Executors::new();
    executors.insert("per-node", fake.clone());
    let store = RunStore::create(&state, &record(&id)).expect("create");
    let outcome = start(plan("{maxParallel: 3}"), store, executors, &Silent)
        .await
        .expect("drive");
    assert_eq!(outcome.state, RunState::Succeeded);
    assert_eq!(fake.most.load(Ordering::SeqCst), 3);
    let mut runs = fake.runs.lock().expect("lock").clone();
    runs.sort();
    assert_eq!(runs, nodes(12));
}

#[tokio::test(flavor = "current_thread")]
async fn stops_past_max_failures_and_resume_runs_only_what_did_not_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r").expect("id");
    let fake = Arc::new(FakeNodes {
        names: nodes(10),
        ..FakeNodes::default()
    });
    fake.failing
        .lock()
        .expect("lock")
        .extend(["node-00".to_string(), "node-01".to_string()]);
    let mut executors = Executors::new();
    executors.insert("per-node", fake.clone());
    let p = plan("{maxParallel: 1, maxFailures: 1}");
    let store = RunStore::create(&state, &record(&id)).expect("create");
    let outcome = start(Arc::clone(&p), store, executors.clone(), &Silent)
        .await
        .expect("drive");
    assert_eq!(outcome.state, RunState::Failed);
    // node-00 and node-01 failed; the rollout stopped before the rest.
    assert_eq!(fake.runs.lock().expect("lock").len(), 2);
    let store = RunStore::open(&state, &id).expect("open");
    let states = node_states(&store);
    assert_eq!(
        states
            .iter()
            .filter(|(_, s)| *s == StepState::Failed)
            .count(),
        2
    );
    assert_eq!(
        states
            .iter()
            .filter(|(_, s)| *s == StepState::Skipped)
            .count(),
        8
    );

    // The nodes are repaired; resume runs the two failed and the eight unstarted, once each.
    fake.failing.lock().expect("lock").clear();
    fake.runs.lock().expect("lock").clear();
    let outcome = resume(p, store, Decisions::default(), "resume", executors, &Silent)
        .await
        .expect("drive");
    assert_eq!(outcome.state, RunState::Succeeded);
    let mut runs = fake.runs.lock().expect("lock").clone();
    runs.sort();
    assert_eq!(runs, nodes(10));
}

/// r8: a task whose code panics (a bug in kpilot, not the step's failure).
#[derive(Debug)]
struct Panics;

#[async_trait]
impl Task for Panics {
    async fn run(&self, _ctx: &TaskContext) -> TaskOutput {
        panic!("index out of bounds in a task");
    }
}

struct PanicsKind;

impl TaskKind for PanicsKind {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn idempotent_by_default(&self) -> bool {
        true
    }
    fn parse(&self, _: &serde_yaml::Value, _: &ParseContext<'_>) -> Result<Arc<dyn Task>, String> {
        Ok(Arc::new(Panics))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn r8_a_panicking_task_fails_its_step_and_the_drive_is_kpilots_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let id = RunId::parse("r").expect("id");
    let mut registry = TaskRegistry::new();
    registry.register(Box::new(NoopKind));
    registry.register(Box::new(PanicsKind));
    // Retries and a repair must not hide the bug either.
    let source = WorkflowSource {
        path: "panic.yaml".into(),
        text: "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: panic}\nspec:\n  steps:\n    - {id: boom, phase: pre-check, retry: {limit: 3, backoff: {initial: 1ms}}, repair: fix, panics: {}}\n    - {id: fix, phase: repair, noop: {}}\n    - {id: after, phase: upgrade, needs: [boom], noop: {}}\n".into(),
    };
    let plan = Arc::new(crate::validate::validate(&source, &registry).expect("valid"));
    let store = RunStore::create(&state, &record(&id)).expect("create");
    let outcome = start(plan, store, Executors::default(), &Silent)
        .await
        .expect("drive");
    assert_eq!(outcome.state, RunState::Failed);
    assert_eq!(outcome.internal.len(), 1, "{:?}", outcome.internal);
    let steps = outcome.snapshot.steps;
    let boom = &steps
        .iter()
        .find(|(s, _, _)| s.as_str() == "boom")
        .expect("boom")
        .2;
    assert_eq!(boom.state, StepState::Failed);
    assert_eq!(boom.attempts, 1, "not retried");
    let reason = boom.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("panicked") && reason.contains("index out of bounds"),
        "{reason}"
    );
    let fix = steps.iter().find(|(s, _, _)| s.as_str() == "fix");
    assert!(fix.is_none_or(|(_, _, r)| r.attempts == 0), "not repaired");
}
