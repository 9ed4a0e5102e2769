//! Steps that fan out over nodes: one instance per node with a record of its
//! own, rolled out at most `maxParallel` at a time, stopping once more than
//! `maxFailures` nodes failed. The step's own record (instance `global`)
//! sums up its nodes.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::Utc;

use super::{Done, Scheduler};
use crate::id::InstanceId;
use crate::state::{EventKind, StepRecord, StepState};
use crate::store::StoredOutput;
use crate::task::TaskOutput;

/// The instances of one fanned-out step.
#[derive(Debug, Default)]
pub(super) struct Fan {
    pub(super) nodes: Vec<Node>,
    /// Nodes waiting to start, by index.
    queue: VecDeque<usize>,
    pub(super) running: usize,
    /// Nodes waiting for a retry's backoff to pass.
    retrying: usize,
    failures: usize,
    /// More than maxFailures failed: no new node starts.
    stopped: bool,
    /// Nodes of a group held out, interrupted, until a person decides:
    /// they count against the group's limit.
    pub(super) held: usize,
    /// The most nodes at once (`maxParallel` or `maxUnavailable` of the nodes).
    limit: usize,
}

/// One node's instance of a step.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) instance: InstanceId,
    pub(super) record: StepRecord,
    retries_used: u32,
    /// A member of a group waiting for a slot to start on this node.
    pub(super) queued: bool,
}

impl Fan {
    /// Adds an instance found in the store.
    pub(super) fn add(&mut self, instance: InstanceId, record: StepRecord) {
        self.nodes.push(Node {
            instance,
            record,
            retries_used: 0,
            queued: false,
        });
    }

    /// The nodes in `state`, each named by its instance (with its reason,
    /// for a failed one), for a step's summing-up reason.
    pub(super) fn named(&self, state: StepState) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.record.state == state)
            .map(|n| match &n.record.reason {
                Some(reason) if state == StepState::Failed => format!("{} ({reason})", n.instance),
                _ => n.instance.to_string(),
            })
            .collect()
    }

    /// Puts the nodes in the order of `names` (the order the step's nodes
    /// were rolled in when first listed); nodes not named keep theirs, last.
    pub(super) fn reorder(&mut self, names: &[String]) {
        let position = |n: &Node| {
            names
                .iter()
                .position(|x| x == n.instance.as_str())
                .unwrap_or(usize::MAX)
        };
        self.nodes.sort_by_key(position);
    }
}

impl Scheduler<'_> {
    pub(super) fn set_node(&mut self, i: usize, k: usize, record: StepRecord, event: bool) {
        let Some(fan) = self.fans[i].as_mut() else {
            return;
        };
        let node = &mut fan.nodes[k];
        if event {
            self.change.events.push(EventKind::StepChanged {
                step: self.plan.steps[i].id.clone(),
                instance: node.instance.clone(),
                state: record.state,
                reason: record.reason.clone(),
            });
        }
        self.change.steps.push((
            self.plan.steps[i].id.clone(),
            node.instance.clone(),
            record.clone(),
        ));
        node.record = record;
    }

    /// Step `i` is ready and its executor fans out: roll over the nodes the
    /// store already knows (on resume), or ask the executor for them.
    pub(super) fn fan_out(&mut self, i: usize) {
        let mut r = self.records[i].clone();
        r.state = StepState::Running;
        r.started_at.get_or_insert_with(Utc::now);
        r.ended_at = None;
        r.reason = Some("rolling over its nodes".into());
        self.set(i, r, true);
        if self.fans[i].as_ref().is_some_and(|f| !f.nodes.is_empty()) {
            self.queue_nodes(i);
            return;
        }
        let step = &self.plan.steps[i];
        let Some(executor) = self.executors.get(&step.executor).cloned() else {
            let reason = format!(
                "executor `{}` is not available in this kpilot",
                step.executor
            );
            return self.fail_step(i, reason);
        };
        let plan = Arc::clone(&self.plan);
        let facts = self.facts.clone();
        self.in_flight.spawn(async move {
            let result = executor.instances(&plan.steps[i], &facts).await;
            Done::Instances { step: i, result }
        });
    }

    fn fail_step(&mut self, i: usize, reason: String) {
        let mut r = self.records[i].clone();
        r.state = StepState::Failed;
        r.reason = Some(reason);
        r.ended_at = Some(Utc::now());
        self.finalize(i, r);
    }

    /// The executor answered with the step's nodes.
    pub(super) fn instances_known(&mut self, i: usize, result: Result<Vec<InstanceId>, String>) {
        let instances = match result {
            Ok(list) if list.is_empty() && !self.plan.steps[i].members().is_empty() => {
                let mut r = self.records[i].clone();
                r.state = StepState::Succeeded;
                r.reason = Some(match &self.plan.steps[i].fan_out.selector {
                    Some(s) => format!("no node matches selector `{s}`: nothing to roll"),
                    None => "no node to roll".to_owned(),
                });
                r.ended_at = Some(Utc::now());
                return self.finalize(i, r);
            }
            Ok(list) if list.is_empty() => {
                let selector = self.plan.steps[i].fan_out.selector.clone();
                return self.fail_step(
                    i,
                    format!(
                        "no node to run on{}; check the executor's nodes and selector",
                        selector
                            .map(|s| format!(" (selector `{s}`)"))
                            .unwrap_or_default()
                    ),
                );
            }
            Ok(list) if list.contains(&InstanceId::global()) => {
                return self.fail_step(i, "the executor named an instance `global`, which is reserved for the step itself".into());
            }
            Ok(list) => list,
            Err(e) => return self.fail_step(i, format!("cannot list its nodes: {e}")),
        };
        if self.plan.steps[i].fan_out.order.is_some() {
            // The order the executor chose is kept, so that a resume rolls
            // the nodes left in the same order.
            let mut r = self.records[i].clone();
            r.output = Some(serde_json::json!({
                "nodes": instances.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            }));
            self.set(i, r, false);
        }
        let fan = self.fans[i].get_or_insert_with(Fan::default);
        for instance in instances {
            fan.add(instance, StepRecord::pending());
        }
        // The node set is recorded now, so a resume rolls over the same nodes.
        for k in 0..self.fans[i].as_ref().map_or(0, |f| f.nodes.len()) {
            let record = StepRecord::pending();
            self.set_node(i, k, record, false);
        }
        if !self.plan.steps[i].members().is_empty() {
            self.group_nodes_known(i);
        }
        self.queue_nodes(i);
    }

    fn queue_nodes(&mut self, i: usize) {
        let limit = {
            let count = self.fans[i].as_ref().map_or(0, |f| f.nodes.len());
            self.plan.steps[i].fan_out.limit(count)
        };
        let Some(fan) = self.fans[i].as_mut() else {
            return;
        };
        fan.limit = limit;
        fan.held = fan
            .nodes
            .iter()
            .filter(|n| n.record.state == StepState::Interrupted)
            .count();
        fan.queue = (0..fan.nodes.len())
            .filter(|&k| fan.nodes[k].record.state == StepState::Pending)
            .collect();
        fan.running = 0;
        fan.retrying = 0;
        fan.stopped = false;
        fan.failures = fan
            .nodes
            .iter()
            .filter(|n| n.record.state == StepState::Failed)
            .count();
        for node in &mut fan.nodes {
            node.retries_used = 0;
            node.queued = false;
        }
        if fan.queue.is_empty() || fan.held >= fan.limit {
            self.finish_fan(i);
        } else {
            self.active_fans.push(i);
        }
    }

    /// Starts node attempts while the run's concurrency and each step's
    /// maxParallel allow.
    pub(super) fn start_ready_nodes(&mut self) {
        self.start_ready_members();
        let mut a = 0;
        while a < self.active_fans.len() && self.executing < self.plan.concurrency {
            let i = self.active_fans[a];
            if !self.plan.steps[i].members().is_empty() {
                // A group: a node starts when it may be taken out; its
                // members then wait for the run's slots.
                while let Some(fan) = self.fans[i].as_mut() {
                    if fan.stopped || fan.running + fan.held >= fan.limit {
                        break;
                    }
                    let Some(k) = fan.queue.pop_front() else {
                        break;
                    };
                    fan.running += 1;
                    self.start_group_node(i, k);
                }
                self.start_ready_members();
                a += 1;
                continue;
            }
            let max_parallel = self.fans[i].as_ref().map_or(usize::MAX, |f| f.limit);
            loop {
                if self.executing >= self.plan.concurrency {
                    break;
                }
                let Some(fan) = self.fans[i].as_mut() else {
                    break;
                };
                if fan.stopped || fan.running >= max_parallel {
                    break;
                }
                let Some(k) = fan.queue.pop_front() else {
                    break;
                };
                fan.running += 1;
                self.start_node_attempt(i, k);
            }
            a += 1;
        }
    }

    /// Records that a new attempt of step `i` starts on node `k` (in the
    /// change committed before it is launched) and prepares it.
    pub(super) fn start_node_attempt(&mut self, i: usize, k: usize) {
        let Some(fan) = self.fans[i].as_ref() else {
            return;
        };
        let mut r = fan.nodes[k].record.clone();
        r.attempts += 1;
        r.state = StepState::Running;
        r.started_at.get_or_insert_with(Utc::now);
        r.ended_at = None;
        r.reason = None;
        let attempt = r.attempts;
        let instance = fan.nodes[k].instance.clone();
        self.change.events.push(EventKind::AttemptStarted {
            step: self.plan.steps[i].id.clone(),
            instance: instance.clone(),
            attempt,
        });
        self.set_node(i, k, r, false);
        self.spawn_node(i, k, instance, attempt);
    }

    /// Starts members of groups queued on their nodes while the run's
    /// concurrency allows.
    fn start_ready_members(&mut self) {
        while self.executing < self.plan.concurrency {
            let Some((m, k)) = self.member_ready.pop_front() else {
                break;
            };
            self.start_member(m, k);
        }
    }

    fn spawn_node(&mut self, i: usize, k: usize, instance: InstanceId, attempt: u32) {
        let run = self.attempt(i, instance, attempt);
        self.executing += 1;
        self.starting.push(Box::pin(async move {
            let output = run.await;
            Done::NodeAttempt {
                step: i,
                node: k,
                attempt,
                output,
            }
        }));
    }

    pub(super) fn node_attempt_ended(
        &mut self,
        i: usize,
        k: usize,
        attempt: u32,
        output: TaskOutput,
    ) {
        let plan = Arc::clone(&self.plan);
        let step = &plan.steps[i];
        let Some(fan) = self.fans[i].as_mut() else {
            return;
        };
        fan.running -= 1;
        let instance = fan.nodes[k].instance.clone();
        if !(output.stdout.is_empty() && output.stderr.is_empty() && output.exit_code.is_none()) {
            self.change.outputs.push((
                step.id.clone(),
                instance.clone(),
                attempt,
                StoredOutput {
                    stdout: output.stdout.clone(),
                    stderr: output.stderr.clone(),
                    exit_code: output.exit_code,
                },
            ));
        }
        self.change.events.push(EventKind::AttemptEnded {
            step: step.id.clone(),
            instance,
            attempt,
            succeeded: output.failure.is_none(),
            exit_code: output.exit_code,
            reason: output.failure.clone(),
        });
        let mut r = fan.nodes[k].record.clone();
        r.exit_code = output.exit_code;
        match output.failure {
            None => {
                r.state = StepState::Succeeded;
                r.output = output.output;
                r.ended_at = Some(Utc::now());
                self.set_node(i, k, r, true);
            }
            Some(failure) => {
                if output.internal {
                    self.internal.push(format!(
                        "step `{}` on {}: {failure}",
                        step.id, fan.nodes[k].instance
                    ));
                }
                let retry = step
                    .retry
                    .filter(|p| fan.nodes[k].retries_used < p.limit && !output.internal);
                if let (Some(policy), false) = (retry, fan.stopped) {
                    let delay = policy
                        .delays()
                        .nth(fan.nodes[k].retries_used as usize)
                        .unwrap_or(policy.max);
                    fan.nodes[k].retries_used += 1;
                    fan.retrying += 1;
                    r.reason = Some(format!(
                        "attempt {attempt} failed ({failure}); retrying in {}",
                        humantime::format_duration(delay)
                    ));
                    self.set_node(i, k, r, false);
                    self.in_flight.spawn(async move {
                        tokio::time::sleep(delay).await;
                        Done::NodeRetryDue { step: i, node: k }
                    });
                    return;
                }
                r.state = StepState::Failed;
                r.reason = Some(failure);
                // What a failed node check found is kept for reports.
                r.output = output.output;
                r.ended_at = Some(Utc::now());
                self.set_node(i, k, r, true);
                if step.member_of().is_none() {
                    self.node_failed(i);
                }
            }
        }
        match step.member_of() {
            Some(g) => self.advance_group_node(g, k),
            None => self.maybe_finish_fan(i),
        }
    }

    /// One more node failed: past maxFailures the rollout stops.
    pub(super) fn node_failed(&mut self, i: usize) {
        let max_failures = self.plan.steps[i].fan_out.max_failures;
        let Some(fan) = self.fans[i].as_mut() else {
            return;
        };
        fan.failures += 1;
        if fan.failures <= max_failures || fan.stopped {
            return;
        }
        fan.stopped = true;
        let left: Vec<usize> = fan.queue.drain(..).collect();
        let failures = fan.failures;
        for k in left {
            let Some(fan) = self.fans[i].as_ref() else {
                return;
            };
            let mut r = fan.nodes[k].record.clone();
            r.state = StepState::Skipped;
            r.reason = Some(format!(
                "not started: {failures} nodes failed, more than maxFailures {max_failures}"
            ));
            r.ended_at = Some(Utc::now());
            let reason = r.reason.clone().unwrap_or_default();
            self.set_node(i, k, r, true);
            if !self.plan.steps[i].members().is_empty() {
                self.skip_group_node(i, k, &reason);
            }
        }
    }

    pub(super) fn node_retry_due(&mut self, i: usize, k: usize) {
        let Some(fan) = self.fans[i].as_mut() else {
            return;
        };
        fan.retrying -= 1;
        if self.plan.steps[i].member_of().is_some() {
            // A member's retry waits for a slot like its first attempt.
            fan.nodes[k].queued = true;
            self.member_ready.push_back((i, k));
            return;
        }
        if fan.stopped {
            let mut r = fan.nodes[k].record.clone();
            r.state = StepState::Failed;
            r.ended_at = Some(Utc::now());
            self.set_node(i, k, r, true);
            self.node_failed(i);
            self.maybe_finish_fan(i);
        } else {
            fan.queue.push_front(k);
        }
    }

    pub(super) fn maybe_finish_fan(&mut self, i: usize) {
        // Done when nothing runs and nothing more can start: the queue is
        // empty, or the nodes held out for a person fill the limit.
        let done = self.fans[i].as_ref().is_some_and(|f| {
            f.running == 0 && f.retrying == 0 && (f.queue.is_empty() || f.held >= f.limit)
        });
        if done {
            self.active_fans.retain(|&x| x != i);
            self.finish_fan(i);
        }
    }

    /// Every node ended: the step's own record sums them up.
    fn finish_fan(&mut self, i: usize) {
        if !self.plan.steps[i].members().is_empty() {
            self.finish_members(i);
        }
        let Some(fan) = self.fans[i].as_ref() else {
            return;
        };
        let total = fan.nodes.len();
        let failed = fan.named(StepState::Failed);
        let interrupted = fan.named(StepState::Interrupted);
        let not_started = fan.named(StepState::Skipped);
        let mut r = self.records[i].clone();
        if !interrupted.is_empty() {
            r.state = StepState::Interrupted;
            r.reason = Some(format!(
                "{} of {total} nodes interrupted ({}); check them, then retry or skip the step",
                interrupted.len(),
                interrupted.join(", "),
            ));
            self.set(i, r, true);
            return;
        }
        r.ended_at = Some(Utc::now());
        if failed.is_empty() && not_started.is_empty() {
            r.state = StepState::Succeeded;
            r.reason = Some(format!("{total} of {total} nodes succeeded"));
        } else {
            r.state = StepState::Failed;
            let mut reason = format!(
                "{} of {total} nodes failed: {}",
                failed.len(),
                failed.join("; ")
            );
            if !not_started.is_empty() {
                reason.push_str(&format!(
                    "; {} not started (maxFailures {})",
                    not_started.len(),
                    self.plan.steps[i].fan_out.max_failures
                ));
            }
            r.reason = Some(reason);
        }
        self.finalize(i, r);
    }

    /// On resume: nodes found running are re-run if the step is idempotent,
    /// else held as interrupted unless decided; failed and unstarted nodes run
    /// again. Returns whether any node will run again.
    pub(super) fn prepare_resume_nodes(
        &mut self,
        i: usize,
        retry: bool,
        vouch: Option<&str>,
    ) -> bool {
        let idempotent = self.plan.steps[i].idempotent;
        let count = self.fans[i].as_ref().map_or(0, |f| f.nodes.len());
        let mut again = false;
        for k in 0..count {
            let Some(fan) = self.fans[i].as_ref() else {
                break;
            };
            let mut r = fan.nodes[k].record.clone();
            let instance = fan.nodes[k].instance.clone();
            let state = r.state;
            if let Some(reason) = vouch {
                if state != StepState::Succeeded {
                    r.state = StepState::Succeeded;
                    r.reason = Some(format!("vouched: {reason}"));
                    r.ended_at = Some(Utc::now());
                    self.set_node(i, k, r, true);
                }
                continue;
            }
            let next = match state {
                StepState::Running if idempotent || retry => StepState::Pending,
                StepState::Running => StepState::Interrupted,
                StepState::Interrupted if retry => StepState::Pending,
                StepState::Failed | StepState::Skipped | StepState::Blocked => StepState::Pending,
                other => other,
            };
            if next == state {
                continue;
            }
            if next == StepState::Pending {
                again = true;
                r.reason = None;
                r.ended_at = None;
            } else {
                r.reason = Some(format!(
                    "kpilot stopped during attempt {} on {instance} and the step is not idempotent; check the node, then retry or skip the step{}",
                    r.attempts,
                    self.found_note(i, &instance)
                ));
            }
            r.state = next;
            self.set_node(i, k, r, true);
        }
        again
    }

    /// A signal stops the run: running nodes become pending (idempotent) or interrupted.
    pub(super) fn stop_nodes(&mut self, signal: &'static str) {
        for i in 0..self.fans.len() {
            let idempotent = self.plan.steps[i].idempotent;
            let count = self.fans[i].as_ref().map_or(0, |f| f.nodes.len());
            for k in 0..count {
                let Some(fan) = self.fans[i].as_ref() else {
                    break;
                };
                if fan.nodes[k].record.state != StepState::Running {
                    continue;
                }
                let mut r = fan.nodes[k].record.clone();
                r.state = if idempotent {
                    StepState::Pending
                } else {
                    StepState::Interrupted
                };
                r.reason = Some(format!(
                    "kpilot received {signal} during attempt {}",
                    r.attempts
                ));
                self.set_node(i, k, r, true);
            }
        }
    }

    /// Whether any node of any step waits on a person or on a resume.
    pub(super) fn nodes_waiting(&self) -> bool {
        self.fans.iter().flatten().any(|f| {
            f.nodes.iter().any(|n| {
                matches!(
                    n.record.state,
                    StepState::Interrupted | StepState::Pending | StepState::Running
                )
            })
        })
    }
}
