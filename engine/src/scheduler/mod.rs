//! The scheduler: drives a run from its stored state to an end or a block.
//!
//! It is the only writer of a run. Each turn of its loop decides what can be
//! decided, commits those decisions and the attempts it is about to start in
//! one durable transaction, and only then starts them. When kpilot dies at any
//! moment, the store holds every attempt that began and every one that ended,
//! so [`resume()`] knows which steps may have left a side effect half done.
//!
//! This file holds the drive loop (decide, start, commit, wait); `resume.rs`
//! the resume policy and a person's decisions; `repair.rs` what an attempt's
//! end leads to (retry, repair and recheck); `fan_out.rs` steps rolled over
//! nodes.

mod fan_out;
mod group;
mod repair;
mod resume;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::executor::Executors;
use crate::id::{InstanceId, StepId};
use crate::plan::{Body, Plan};
use crate::state::{EventKind, RunRecord, RunState, SkipCause, StepRecord, StepState};
use crate::store::{Change, RunStore, Snapshot, StoreError};
use crate::task::{TaskContext, TaskOutput};
use crate::workflow::{NeedOn, Phase};

/// What can stop the scheduler from driving a run.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The store failed; the run stays as last committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A person's decision names a step that cannot take it.
    #[error("{0}")]
    Decision(String),
    /// A person's decision names a step the run does not have.
    #[error("step `{step}` is not in run `{run}`")]
    UnknownStep {
        /// The run.
        run: crate::id::RunId,
        /// The step named.
        step: StepId,
    },
}

/// A person's decisions passed to [`resume`].
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Interrupted or failed steps to run again.
    pub retry: Vec<StepId>,
    /// Steps whose effect a person vouches is in place, with their reason.
    pub skip: Vec<(StepId, String)>,
    /// An approval step to approve, with the reason.
    pub approve: Option<(StepId, Option<String>)>,
    /// Who decides (the user name), recorded with each decision.
    pub by: String,
}

/// Receives every event once it is durable, for progress display.
pub trait Observer {
    /// Called after `event` was committed.
    fn event(&self, plan: &Plan, event: &EventKind);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _plan: &Plan, _event: &EventKind) {}
}

/// How a drive of a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run's state.
    pub state: RunState,
    /// Set when a signal stopped kpilot.
    pub stopped_by: Option<&'static str>,
    /// The run and its steps as the drive left them.
    pub snapshot: Snapshot,
    /// The plan's steps in order, to show the snapshot's records by.
    pub outline: crate::store::Outline,
    /// Failures that were kpilot's own, not a step's (a task panicked):
    /// the drive ended in error even though the run was recorded.
    pub internal: Vec<String>,
}

/// Starts a run that was just created.
pub async fn start(
    plan: Arc<Plan>,
    store: RunStore,
    executors: Executors,
    observer: &dyn Observer,
) -> Result<RunOutcome, SchedulerError> {
    let mut s = Scheduler::load(plan, store, executors, observer, "run")?;
    s.drive().await
}

/// Resumes a run: steps found running are re-run if idempotent and otherwise
/// held as interrupted unless `decisions` settle them; failed and blocked steps
/// run again; succeeded steps never do.
pub async fn resume(
    plan: Arc<Plan>,
    store: RunStore,
    decisions: Decisions,
    verb: &str,
    executors: Executors,
    observer: &dyn Observer,
) -> Result<RunOutcome, SchedulerError> {
    let mut s = Scheduler::load(plan, store, executors, observer, verb)?;
    s.inspect_lost_attempts(&decisions).await;
    s.prepare_resume(&decisions)?;
    s.drive().await
}

/// What a job in flight reports when it ends.
enum Done {
    Attempt {
        step: usize,
        attempt: u32,
        output: TaskOutput,
    },
    Repair {
        step: usize,
        repair: usize,
        attempt: u32,
        output: TaskOutput,
    },
    RetryDue {
        step: usize,
    },
    Instances {
        step: usize,
        result: Result<Vec<InstanceId>, String>,
    },
    NodeAttempt {
        step: usize,
        node: usize,
        attempt: u32,
        output: TaskOutput,
    },
    NodeRetryDue {
        step: usize,
        node: usize,
    },
}

struct Scheduler<'o> {
    plan: Arc<Plan>,
    store: RunStore,
    run: RunRecord,
    records: Vec<StepRecord>,
    /// Whether the store holds a record of the step (a step never reached
    /// has none, and the snapshot leaves it out as the store does).
    stored: Vec<bool>,
    /// Needs of each step not yet final.
    waiting: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    ready: VecDeque<usize>,
    /// Pending steps whose needs just became final.
    to_decide: Vec<usize>,
    /// Attempts recorded in `change`, launched once it is committed.
    starting: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>>,
    retries_used: Vec<u32>,
    repaired: Vec<bool>,
    in_flight: JoinSet<Done>,
    executing: usize,
    change: Change,
    params_json: serde_json::Value,
    params: Arc<BTreeMap<String, String>>,
    observer: &'o dyn Observer,
    executors: Executors,
    last_snapshot: Instant,
    facts: crate::store::Facts,
    ledger: crate::store::Ledger,
    /// The instances of steps that fan out over nodes, by step.
    fans: Vec<Option<fan_out::Fan>>,
    /// Steps whose nodes are being rolled over now.
    active_fans: Vec<usize>,
    /// Members of groups whose needs on a node are met, waiting for a slot:
    /// (member, node).
    member_ready: VecDeque<(usize, usize)>,
    /// Failures that were kpilot's own during this drive (a task panicked).
    internal: Vec<String>,
    /// Something was committed since `snapshot.json` was last written.
    snapshot_dirty: bool,
    /// How stale `snapshot.json` may get: [`SNAPSHOT_EVERY`], or more for a
    /// run whose snapshot is slow to write.
    snapshot_every: Duration,
    /// The instance of a step that runs once, borrowed by the snapshot.
    global: InstanceId,
    /// Steps a person asked to run again in this drive (`--retry`), by index.
    retried: Vec<bool>,
    /// What lost attempts of steps that are not idempotent left outside
    /// kpilot, by step and instance, for the reason they are held with.
    left_behind: std::collections::HashMap<(usize, InstanceId), String>,
}

/// How stale `snapshot.json` may get while a run is driven.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

const INSTANCE: fn() -> InstanceId = InstanceId::global;

impl<'o> Scheduler<'o> {
    fn load(
        plan: Arc<Plan>,
        store: RunStore,
        executors: Executors,
        observer: &'o dyn Observer,
        verb: &str,
    ) -> Result<Self, SchedulerError> {
        let run = store.run()?;
        let facts = store.facts();
        let ledger = store.ledger();
        let n = plan.steps.len();
        let mut records = vec![StepRecord::pending(); n];
        let mut stored = vec![false; n];
        let mut fans: Vec<Option<fan_out::Fan>> = (0..n).map(|_| None).collect();
        for (step, instance, record) in store.steps()? {
            if let Some(i) = plan.index_of(step.as_str()) {
                if instance == InstanceId::global() {
                    records[i] = record;
                    stored[i] = true;
                } else {
                    fans[i]
                        .get_or_insert_with(fan_out::Fan::default)
                        .add(instance, record);
                }
            }
        }
        // Nodes are rolled in the order first chosen (kept in the step's
        // record); a group's members share their group's order, node for node.
        for i in 0..n {
            let names: Option<Vec<String>> = records[i]
                .output
                .as_ref()
                .and_then(|o| o.get("nodes"))
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if let (Some(names), Some(fan)) = (&names, fans[i].as_mut()) {
                if plan.steps[i].fan_out.order.is_some() {
                    fan.reorder(names);
                }
            }
        }
        for i in 0..n {
            let Some(g) = plan.steps[i].member_of() else {
                continue;
            };
            let names: Vec<String> = fans[g]
                .as_ref()
                .map(|f| f.nodes.iter().map(|x| x.instance.to_string()).collect())
                .unwrap_or_default();
            if let Some(fan) = fans[i].as_mut() {
                fan.reorder(&names);
            }
        }
        let mut dependents = vec![Vec::new(); n];
        for (i, step) in plan.steps.iter().enumerate() {
            for need in &step.needs {
                dependents[need.step].push(i);
            }
        }
        let params_json = serde_json::to_value(&run.params).unwrap_or_default();
        let params = Arc::new(run.params.clone());
        let mut s = Scheduler {
            plan,
            store,
            run,
            records,
            stored,
            waiting: vec![0; n],
            dependents,
            ready: VecDeque::new(),
            to_decide: Vec::new(),
            starting: Vec::new(),
            retries_used: vec![0; n],
            repaired: vec![false; n],
            in_flight: JoinSet::new(),
            executing: 0,
            change: Change::default(),
            params_json,
            params,
            observer,
            executors,
            // The first commit writes the snapshot at once: readers see
            // this drive from its start.
            last_snapshot: Instant::now()
                .checked_sub(SNAPSHOT_EVERY)
                .unwrap_or_else(Instant::now),
            facts,
            ledger,
            fans,
            active_fans: Vec::new(),
            member_ready: VecDeque::new(),
            internal: Vec::new(),
            snapshot_dirty: false,
            snapshot_every: SNAPSHOT_EVERY,
            global: InstanceId::global(),
            retried: Vec::new(),
            left_behind: std::collections::HashMap::new(),
        };
        s.run.state = RunState::Running;
        s.run.updated_at = Utc::now();
        s.change.run = Some(s.run.clone());
        s.change.events.push(EventKind::DriveStarted {
            pid: std::process::id(),
            verb: verb.to_owned(),
        });
        Ok(s)
    }

    fn set(&mut self, i: usize, record: StepRecord, reason_event: bool) {
        if reason_event {
            self.change.events.push(EventKind::StepChanged {
                step: self.plan.steps[i].id.clone(),
                instance: INSTANCE(),
                state: record.state,
                reason: record.reason.clone(),
            });
        }
        self.change
            .steps
            .push((self.plan.steps[i].id.clone(), INSTANCE(), record.clone()));
        self.records[i] = record;
        self.stored[i] = true;
    }

    async fn drive(&mut self) -> Result<RunOutcome, SchedulerError> {
        for i in 0..self.records.len() {
            self.waiting[i] = self.plan.steps[i]
                .needs
                .iter()
                .filter(|n| !self.records[n.step].state.is_final())
                .count();
        }
        let order = self.plan.dag.order().to_vec();
        for i in order.into_iter().rev() {
            // Repair steps run only on behalf of a failed step.
            // Members of a group run only as their group rolls.
            let repair = self.plan.steps[i].phase == Phase::Repair
                || self.plan.steps[i].member_of().is_some();
            if !repair && self.records[i].state == StepState::Pending && self.waiting[i] == 0 {
                self.to_decide.push(i);
            }
        }
        let mut signals = Signals::new();
        let mut stopped_by = None;
        loop {
            self.settle();
            self.start_ready();
            self.commit()?;
            for attempt in self.starting.drain(..) {
                self.in_flight.spawn(attempt);
            }
            if self.in_flight.is_empty() {
                break;
            }
            // A reader sees the run at most a second old, even while one
            // long step runs and nothing else is committed.
            let snapshot_due = self.snapshot_dirty.then(|| {
                self.snapshot_every
                    .saturating_sub(self.last_snapshot.elapsed())
            });
            tokio::select! {
                _ = tokio::time::sleep(snapshot_due.unwrap_or_default()), if snapshot_due.is_some() => {
                    self.write_snapshot()?;
                }
                done = self.in_flight.join_next() => {
                    if let Some(done) = done {
                        self.handle_join(done);
                    }
                    while let Some(done) = self.in_flight.try_join_next() {
                        self.handle_join(done);
                    }
                }
                name = signals.recv() => {
                    stopped_by = Some(name);
                    self.stop(name);
                    break;
                }
            }
        }
        self.finish(stopped_by)
    }

    fn handle_join(&mut self, done: Result<Done, tokio::task::JoinError>) {
        if let Ok(
            Done::Attempt { step, .. } | Done::Repair { step, .. } | Done::NodeAttempt { step, .. },
        ) = &done
        {
            let target = match &done {
                Ok(Done::Repair { repair, .. }) => *repair,
                _ => *step,
            };
            if matches!(
                self.plan.steps[target].phase,
                Phase::Upgrade | Phase::Repair
            ) {
                self.change.facts_generation = Some(self.facts.next_generation());
            }
        }
        match done {
            Ok(Done::Attempt {
                step,
                attempt,
                output,
            }) => {
                self.executing -= 1;
                self.attempt_ended(step, attempt, output);
            }
            Ok(Done::Repair {
                step,
                repair,
                attempt,
                output,
            }) => {
                self.executing -= 1;
                self.repair_ended(step, repair, attempt, output);
            }
            Ok(Done::RetryDue { step }) => self.ready.push_back(step),
            Ok(Done::Instances { step, result }) => self.instances_known(step, result),
            Ok(Done::NodeAttempt {
                step,
                node,
                attempt,
                output,
            }) => {
                self.executing -= 1;
                self.node_attempt_ended(step, node, attempt, output);
            }
            Ok(Done::NodeRetryDue { step, node }) => self.node_retry_due(step, node),
            Err(e) => {
                // A task that panicked: its step cannot be identified from the
                // join error, so the run is left for resume to sort out.
                tracing::error!(error = %e, "a step's task panicked");
            }
        }
    }

    /// Decides every step whose needs became final, and theirs in turn.
    fn settle(&mut self) {
        while let Some(i) = self.to_decide.pop() {
            if self.records[i].state == StepState::Pending {
                self.decide(i);
            }
        }
    }

    /// Decides a pending step whose needs are all final.
    fn decide(&mut self, i: usize) {
        let plan = Arc::clone(&self.plan);
        let step = &plan.steps[i];
        let mut unmet: Option<(StepId, StepState)> = None;
        let mut gate_failure: Option<String> = None;
        for need in &step.needs {
            let r = &self.records[need.step];
            let id = &self.plan.steps[need.step].id;
            let met = match need.on {
                NeedOn::Success => r.state == StepState::Succeeded,
                NeedOn::Failure => r.state == StepState::Failed,
                NeedOn::Always => true,
            };
            let skipped_by_condition =
                r.state == StepState::Skipped && r.skip == Some(SkipCause::Condition);
            if matches!(step.body, Body::Gate) && need.on == NeedOn::Success {
                if !met && !skipped_by_condition && gate_failure.is_none() {
                    gate_failure = Some(match r.state {
                        StepState::Failed => format!(
                            "`{id}` failed: {}",
                            r.reason.as_deref().unwrap_or("no reason recorded")
                        ),
                        _ => format!("`{id}` was skipped because what it needed failed"),
                    });
                }
                continue;
            }
            if !met && unmet.is_none() {
                unmet = Some((id.clone(), r.state));
            }
        }
        let mut r = self.records[i].clone();
        r.ended_at = Some(Utc::now());
        if let Some((need, state)) = unmet {
            r.state = StepState::Skipped;
            r.reason = Some(format!(
                "its need on `{need}` was not met (`{need}` {})",
                state.as_str()
            ));
            r.skip = Some(SkipCause::Need { step: need });
            return self.finalize(i, r);
        }
        if let Some(when) = &step.when {
            let steps = self.steps_json(i);
            let scope =
                kpilot_expr::Scope::with(&[("params", &self.params_json), ("steps", &steps)]);
            match when.eval_bool(&scope) {
                Ok(true) => {}
                Ok(false) => {
                    r.state = StepState::Skipped;
                    r.reason = Some(format!("when `{}` is false", when.source()));
                    r.skip = Some(SkipCause::Condition);
                    return self.finalize(i, r);
                }
                Err(e) => {
                    r.state = StepState::Failed;
                    r.reason = Some(format!("when could not be evaluated: {e}"));
                    return self.finalize(i, r);
                }
            }
        }
        match &step.body {
            Body::Gate => match gate_failure {
                Some(why) => {
                    r.state = StepState::Blocked;
                    r.reason = Some(format!("gate closed: {why}; fix the cause, then resume"));
                    self.set(i, r, true);
                }
                None => {
                    r.state = StepState::Succeeded;
                    r.reason = None;
                    self.finalize(i, r);
                }
            },
            Body::Approval { message } => match self.run.approvals.get(&step.id) {
                Some(a) => {
                    r.state = StepState::Succeeded;
                    r.reason = Some(format!(
                        "approved by {}{}",
                        a.by,
                        a.reason
                            .as_ref()
                            .map(|x| format!(": {x}"))
                            .unwrap_or_default()
                    ));
                    self.finalize(i, r);
                }
                None => {
                    r.state = StepState::Blocked;
                    r.reason = Some(format!("awaiting approval: {message}"));
                    self.set(i, r, true);
                }
            },
            Body::Group => self.fan_out(i),
            Body::Task { .. } if step.placement.has_instances() => self.fan_out(i),
            Body::Task { .. } => {
                self.retries_used[i] = 0;
                self.repaired[i] = false;
                self.ready.push_back(i);
            }
        }
    }

    /// `steps` for a `when`: every step upstream of `i`, with its state and output.
    fn steps_json(&self, i: usize) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for j in self.plan.dag.ancestors(i) {
            let r = &self.records[j];
            map.insert(
                self.plan.steps[j].id.to_string(),
                serde_json::json!({
                    "state": r.state.as_str(),
                    "output": r.output,
                    "exitCode": r.exit_code,
                }),
            );
        }
        serde_json::Value::Object(map)
    }

    /// Records a final state and lets dependents whose needs are now final be decided.
    fn finalize(&mut self, i: usize, record: StepRecord) {
        self.set(i, record, true);
        for k in 0..self.dependents[i].len() {
            let d = self.dependents[i][k];
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 && self.records[d].state == StepState::Pending {
                self.to_decide.push(d);
            }
        }
    }

    fn start_ready(&mut self) {
        while self.executing < self.plan.concurrency {
            let Some(i) = self.ready.pop_front() else {
                break;
            };
            let attempt = self.record_attempt_start(i, None);
            self.spawn(i, None, attempt);
        }
        self.start_ready_nodes();
    }

    /// Records that a new attempt of step `i` starts (running, with
    /// `reason`), in the change committed before it is launched; returns the
    /// attempt's number.
    fn record_attempt_start(&mut self, i: usize, reason: Option<String>) -> u32 {
        let mut r = self.records[i].clone();
        r.attempts += 1;
        r.state = StepState::Running;
        r.started_at.get_or_insert_with(Utc::now);
        r.ended_at = None;
        r.reason = reason;
        let attempt = r.attempts;
        self.change.events.push(EventKind::AttemptStarted {
            step: self.plan.steps[i].id.clone(),
            instance: INSTANCE(),
            attempt,
        });
        self.set(i, r, false);
        attempt
    }

    /// Prepares an attempt of step `i`, or of `repair` on behalf of `i`. The
    /// caller has put the attempt's start in `self.change`; the attempt is
    /// launched only after that change is committed.
    fn spawn(&mut self, i: usize, repair: Option<usize>, attempt: u32) {
        let target = repair.unwrap_or(i);
        if !matches!(self.plan.steps[target].body, Body::Task { .. }) {
            return;
        }
        let run = self.attempt(target, INSTANCE(), attempt);
        self.executing += 1;
        self.starting.push(Box::pin(async move {
            let output = run.await;
            match repair {
                Some(repair) => Done::Repair {
                    step: i,
                    repair,
                    attempt,
                    output,
                },
                None => Done::Attempt {
                    step: i,
                    attempt,
                    output,
                },
            }
        }));
    }

    /// What attempt `attempt` of step `i` on `instance` is told about itself.
    fn task_context(&self, i: usize, instance: InstanceId, attempt: u32) -> TaskContext {
        TaskContext {
            run_id: self.run.id.clone(),
            step_id: self.plan.steps[i].id.clone(),
            instance,
            attempt,
            params: Arc::clone(&self.params),
            workdir: self.run.workdir.clone(),
            facts: self.facts.clone(),
            ledger: self.ledger.clone(),
            retried: self.retried.get(i).copied().unwrap_or(false),
        }
    }

    /// One attempt of step `i` on `instance`, through the step's executor,
    /// under its timeout, in a `step` span that names the run, the step, the
    /// attempt and, for a step run on every node, the node.
    fn attempt(
        &self,
        i: usize,
        instance: InstanceId,
        attempt: u32,
    ) -> impl std::future::Future<Output = TaskOutput> + Send + 'static {
        let step = &self.plan.steps[i];
        let span = tracing::info_span!(
            "step",
            run.id = %self.run.id,
            step.id = %step.id,
            attempt,
            node.name = tracing::field::Empty,
        );
        if instance != INSTANCE() {
            span.record("node.name", tracing::field::display(&instance));
        }
        let ctx = self.task_context(i, instance, attempt);
        let timeout = step.timeout;
        let run = match self.executors.get(&step.executor) {
            Some(executor) => executor.run(step, ctx),
            None => {
                let name = step.executor.clone();
                Box::pin(async move {
                    TaskOutput::failed(format!("executor `{name}` is not available in this kpilot"))
                })
            }
        };
        let kind = step.body.kind();
        // A panicking task must not leave its step `running` for ever: the
        // panic becomes the attempt's failure, marked as kpilot's own.
        let run = async move {
            match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
                Ok(output) => output,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    tracing::error!(panic = %what, "a step's task panicked");
                    TaskOutput::internal(format!(
                        "kpilot itself failed: its `{kind}` task panicked ({what}); the step's effect is unknown"
                    ))
                }
            }
        };
        async move {
            tracing::debug!("attempt started");
            let output = match timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(output) => output,
                    Err(_) => TaskOutput::failed(format!(
                        "timeout: no result after {}; its process group was killed",
                        humantime::format_duration(limit)
                    )),
                },
                None => run.await,
            };
            tracing::debug!(failure = ?output.failure, "attempt ended");
            output
        }
        .instrument(span)
    }

    /// A signal arrived: stop every attempt (dropping a task kills its
    /// processes) and record what was cut short.
    fn stop(&mut self, signal: &'static str) {
        self.in_flight.abort_all();
        self.stop_nodes(signal);
        let plan = Arc::clone(&self.plan);
        for i in 0..self.records.len() {
            if self.records[i].state != StepState::Running {
                continue;
            }
            let step = &plan.steps[i];
            let mut r = self.records[i].clone();
            r.repairing = false;
            if step.idempotent {
                r.state = StepState::Pending;
                r.reason = Some(format!("kpilot received {signal}; it runs again on resume"));
            } else {
                r.state = StepState::Interrupted;
                r.reason = Some(format!(
                    "kpilot received {signal} during attempt {} and the step is not idempotent; check its effect, then retry or skip it",
                    r.attempts
                ));
            }
            self.set(i, r, true);
        }
    }

    fn finish(&mut self, stopped_by: Option<&'static str>) -> Result<RunOutcome, SchedulerError> {
        if stopped_by.is_none() {
            self.lost_attempts();
        }
        let any = |s: StepState| self.records.iter().any(|r| r.state == s);
        let waiting = self.records.iter().zip(&self.plan.steps).any(|(r, step)| {
            r.state == StepState::Pending
                && step.phase != Phase::Repair
                && step.member_of().is_none()
        }) || self.nodes_waiting();
        let state = if stopped_by.is_some()
            || any(StepState::Blocked)
            || any(StepState::Interrupted)
            || waiting
        {
            RunState::Blocked
        } else if any(StepState::Failed) {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        self.run.state = state;
        self.run.updated_at = Utc::now();
        self.change.run = Some(self.run.clone());
        self.change.events.push(EventKind::RunEnded { state });
        self.commit()?;
        self.write_snapshot()?;
        let snapshot = Snapshot {
            run: self.run.clone(),
            steps: self
                .snapshot_steps()
                .into_iter()
                .map(|(s, i, r)| (s.clone(), i.clone(), r.clone()))
                .collect(),
            commits: None,
        };
        Ok(RunOutcome {
            state,
            stopped_by,
            snapshot,
            outline: self.plan.outline(),
            internal: std::mem::take(&mut self.internal),
        })
    }

    /// Nothing is in flight, yet a step is still `running`: its attempt was
    /// lost inside kpilot (its task was cancelled or panicked where it could
    /// not be caught). The run must not end `succeeded` over it.
    fn lost_attempts(&mut self) {
        for i in 0..self.records.len() {
            if self.records[i].state != StepState::Running {
                continue;
            }
            let reason = format!(
                "kpilot itself failed: attempt {} ended without a result",
                self.records[i].attempts
            );
            self.internal
                .push(format!("step `{}`: {reason}", self.plan.steps[i].id));
            let mut r = self.records[i].clone();
            r.state = StepState::Failed;
            r.repairing = false;
            r.reason = Some(reason);
            r.ended_at = Some(Utc::now());
            self.set(i, r, true);
        }
    }

    fn commit(&mut self) -> Result<(), SchedulerError> {
        if self.change.is_empty() {
            return Ok(());
        }
        let change = std::mem::take(&mut self.change);
        let events = change.events.clone();
        self.store.commit(change)?;
        for event in &events {
            self.observer.event(&self.plan, event);
        }
        if self.last_snapshot.elapsed() >= self.snapshot_every {
            self.write_snapshot()?;
        } else {
            self.snapshot_dirty = true;
        }
        Ok(())
    }

    /// Every step instance's record the store holds, in the plan's order,
    /// each step's nodes after it.
    fn snapshot_steps(&self) -> Vec<(&StepId, &InstanceId, &StepRecord)> {
        let mut steps = Vec::with_capacity(self.records.len());
        for (i, record) in self.records.iter().enumerate() {
            let id = &self.plan.steps[i].id;
            if self.stored[i] {
                steps.push((id, &self.global, record));
            }
            if let Some(fan) = &self.fans[i] {
                steps.extend(fan.nodes.iter().map(|n| (id, &n.instance, &n.record)));
            }
        }
        steps
    }

    /// Writes `snapshot.json` from the records in memory, which are the
    /// committed ones (it is called only when `change` is empty).
    fn write_snapshot(&mut self) -> Result<(), SchedulerError> {
        let began = Instant::now();
        self.store
            .write_snapshot_of(&self.run, self.snapshot_steps())?;
        self.last_snapshot = Instant::now();
        // A run so large that its snapshot takes a while to write writes it
        // less often, so that writing it never costs more than a tenth of the
        // drive.
        self.snapshot_every = SNAPSHOT_EVERY.max(began.elapsed() * 10);
        self.snapshot_dirty = false;
        Ok(())
    }
}

/// SIGINT and SIGTERM, as a future the scheduler can wait on.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn recv(&mut self) -> &'static str {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => "SIGINT",
            _ = next(&mut self.term) => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests;
