//! The resume policy: what a resumed run does with each step it finds, and
//! with a person's decisions (`--retry`, `--skip`, an approval).

use std::sync::Arc;

use chrono::Utc;

use super::{Decisions, Scheduler, SchedulerError, INSTANCE};
use crate::id::{InstanceId, StepId};
use crate::plan::Body;
use crate::state::{Approval, EventKind, SkipCause, StepState};

/// How long kpilot looks at what one lost attempt left before it holds the step anyway.
const LOOK_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

impl Scheduler<'_> {
    pub(super) fn step_index(&self, id: &StepId) -> Result<usize, SchedulerError> {
        self.plan
            .index_of(id.as_str())
            .ok_or_else(|| SchedulerError::UnknownStep {
                run: self.run.id.clone(),
                step: id.clone(),
            })
    }

    /// Asks the task of every step that is not idempotent and was found
    /// running what its lost attempt left outside kpilot, so that the step is
    /// held with what kpilot found, not only with what it did.
    pub(super) async fn inspect_lost_attempts(&mut self, d: &Decisions) {
        let plan = Arc::clone(&self.plan);
        let decided = |id: &StepId| d.retry.contains(id) || d.skip.iter().any(|(s, _)| s == id);
        let mut lost = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            if step.idempotent || decided(&step.id) {
                continue;
            }
            let Body::Task { task, .. } = &step.body else {
                continue;
            };
            if self.records[i].state == StepState::Running && !step.placement.has_instances() {
                lost.push((i, INSTANCE(), self.records[i].attempts, Arc::clone(task)));
            }
            if let Some(fan) = &self.fans[i] {
                for node in &fan.nodes {
                    if node.record.state == StepState::Running {
                        lost.push((
                            i,
                            node.instance.clone(),
                            node.record.attempts,
                            Arc::clone(task),
                        ));
                    }
                }
            }
        }
        for (i, instance, attempt, task) in lost {
            let ctx = self.task_context(i, instance.clone(), attempt);
            // A cluster that does not answer must not keep the resume from
            // deciding: the step is held either way.
            let found = tokio::time::timeout(LOOK_BUDGET, task.left_behind(&ctx)).await;
            if let Ok(Some(text)) = found {
                self.left_behind.insert((i, instance), text);
            }
        }
    }

    /// What a lost attempt of step `i` on `instance` left, as the end of the
    /// reason it is held with.
    pub(super) fn found_note(&self, i: usize, instance: &InstanceId) -> String {
        self.left_behind
            .get(&(i, instance.clone()))
            .map(|t| format!("; kpilot found {t}"))
            .unwrap_or_default()
    }

    pub(super) fn prepare_resume(&mut self, d: &Decisions) -> Result<(), SchedulerError> {
        let mut retry = vec![false; self.records.len()];
        let mut skip: Vec<Option<String>> = vec![None; self.records.len()];
        for id in &d.retry {
            let i = self.step_index(id)?;
            let state = self.records[i].state;
            let found_running = state == StepState::Running && !self.plan.steps[i].idempotent;
            if !matches!(state, StepState::Interrupted | StepState::Failed) && !found_running {
                return Err(SchedulerError::Decision(format!(
                    "step `{id}` is {}; --retry takes an interrupted or failed step",
                    state.as_str()
                )));
            }
            retry[i] = true;
        }
        for (id, reason) in &d.skip {
            let i = self.step_index(id)?;
            let state = self.records[i].state;
            let found_running = state == StepState::Running;
            if !matches!(
                state,
                StepState::Interrupted | StepState::Failed | StepState::Blocked
            ) && !found_running
            {
                return Err(SchedulerError::Decision(format!(
                    "step `{id}` is {}; --skip takes an interrupted, failed or blocked step",
                    state.as_str()
                )));
            }
            if retry[i] {
                return Err(SchedulerError::Decision(format!(
                    "step `{id}` is given both --retry and --skip; choose one"
                )));
            }
            skip[i] = Some(reason.clone());
        }
        if let Some((id, reason)) = &d.approve {
            let i = self.step_index(id)?;
            if !matches!(self.plan.steps[i].body, Body::Approval { .. }) {
                return Err(SchedulerError::Decision(format!(
                    "step `{id}` is a {} step, not an approval",
                    self.plan.steps[i].body.kind()
                )));
            }
            if self.records[i].state == StepState::Succeeded {
                return Err(SchedulerError::Decision(format!(
                    "step `{id}` was approved already"
                )));
            }
            self.run.approvals.insert(
                id.clone(),
                Approval {
                    at: Utc::now(),
                    reason: reason.clone(),
                    by: d.by.clone(),
                },
            );
            self.change.run = Some(self.run.clone());
            self.change.events.push(EventKind::Approved {
                step: id.clone(),
                reason: reason.clone(),
                by: d.by.clone(),
            });
        }

        self.retried = retry.clone();
        // Which steps start over, and so everything downstream of them too.
        let mut reset = vec![false; self.records.len()];
        // Steps that start over by their own decision (not only as a
        // descendant): an interrupted one among them leaves that state.
        let mut own = vec![false; self.records.len()];
        let plan = Arc::clone(&self.plan);
        for i in 0..self.records.len() {
            let step = &plan.steps[i];
            let record = self.records[i].clone();
            if step.member_of().is_some() {
                // Decided with its group, node by node.
                continue;
            }
            if !step.members().is_empty() && skip[i].is_none() {
                let again = !matches!(record.state, StepState::Succeeded | StepState::Pending)
                    || step
                        .members()
                        .iter()
                        .any(|&m| retry[m] || skip[m].is_some());
                if again {
                    self.prepare_resume_group(i, &retry, &mut skip);
                    reset[i] = true;
                    own[i] = true;
                    if retry[i] {
                        self.change.events.push(EventKind::Retried {
                            step: step.id.clone(),
                        });
                    }
                }
                continue;
            }
            if let Some(reason) = skip[i].take() {
                self.change.events.push(EventKind::Vouched {
                    step: step.id.clone(),
                    reason: reason.clone(),
                });
                let mut r = record;
                r.state = StepState::Succeeded;
                r.reason = Some(format!("vouched by {}: {reason}", d.by));
                r.ended_at = Some(Utc::now());
                r.repairing = false;
                self.set(i, r, true);
                self.prepare_resume_nodes(i, false, Some(&reason));
                for &m in step.members() {
                    self.prepare_resume_nodes(m, false, Some(&reason));
                    let mut r = self.records[m].clone();
                    r.state = StepState::Succeeded;
                    r.reason = Some(format!("vouched by {} with its group: {reason}", d.by));
                    self.set(m, r, true);
                }
                reset[i] = true;
                continue;
            }
            let fans_out = step.placement.has_instances();
            let again = match record.state {
                // A fanned-out step's nodes say what runs again; the step
                // itself is decided anew and rolls over what is left.
                StepState::Running
                | StepState::Interrupted
                | StepState::Failed
                | StepState::Blocked
                    if fans_out =>
                {
                    self.prepare_resume_nodes(i, retry[i], None);
                    true
                }
                StepState::Running if step.idempotent || retry[i] => true,
                StepState::Running => {
                    let mut r = record;
                    r.state = StepState::Interrupted;
                    r.repairing = false;
                    r.reason = Some(format!(
                        "kpilot stopped during attempt {} and the step is not idempotent; check its effect, then retry or skip it{}",
                        r.attempts,
                        self.found_note(i, &INSTANCE())
                    ));
                    self.set(i, r, true);
                    false
                }
                StepState::Interrupted => retry[i],
                StepState::Failed | StepState::Blocked => true,
                StepState::Skipped => matches!(record.skip, Some(SkipCause::Need { .. })),
                StepState::Pending | StepState::Succeeded => false,
            };
            if retry[i] {
                self.change.events.push(EventKind::Retried {
                    step: step.id.clone(),
                });
            }
            if again {
                reset[i] = true;
                own[i] = true;
            }
        }
        let roots: Vec<usize> = (0..reset.len()).filter(|&i| reset[i]).collect();
        for root in roots {
            for j in self.plan.dag.descendants(root) {
                reset[j] = true;
            }
        }
        for (i, again) in reset.into_iter().enumerate() {
            let state = self.records[i].state;
            // A descendant held as interrupted stays so until a person
            // decides about it; one retried (or a fanned-out step whose
            // nodes decide) starts over.
            let keep = match state {
                StepState::Succeeded | StepState::Pending => true,
                StepState::Interrupted => !own[i],
                _ => false,
            };
            if again && !keep {
                let mut r = self.records[i].clone();
                r.state = StepState::Pending;
                r.reason = None;
                r.skip = None;
                r.ended_at = None;
                r.repairing = false;
                self.set(i, r, true);
            }
        }
        Ok(())
    }
}
