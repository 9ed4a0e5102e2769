//! What the end of an attempt leads to: success, a retry after backoff, a
//! repair and then one more attempt (the recheck), or failure.

use std::sync::Arc;

use chrono::Utc;

use super::{Done, Scheduler, INSTANCE};
use crate::state::{EventKind, StepState};
use crate::store::StoredOutput;
use crate::task::TaskOutput;

impl Scheduler<'_> {
    pub(super) fn keep_output(&mut self, i: usize, attempt: u32, output: &TaskOutput) {
        if output.stdout.is_empty() && output.stderr.is_empty() && output.exit_code.is_none() {
            return;
        }
        self.change.outputs.push((
            self.plan.steps[i].id.clone(),
            INSTANCE(),
            attempt,
            StoredOutput {
                stdout: output.stdout.clone(),
                stderr: output.stderr.clone(),
                exit_code: output.exit_code,
            },
        ));
    }

    pub(super) fn attempt_ended(&mut self, i: usize, attempt: u32, output: TaskOutput) {
        self.keep_output(i, attempt, &output);
        let plan = Arc::clone(&self.plan);
        let step = &plan.steps[i];
        self.change.events.push(EventKind::AttemptEnded {
            step: step.id.clone(),
            instance: INSTANCE(),
            attempt,
            succeeded: output.failure.is_none(),
            exit_code: output.exit_code,
            reason: output.failure.clone(),
        });
        let mut r = self.records[i].clone();
        r.exit_code = output.exit_code;
        let internal = output.internal;
        let Some(failure) = output.failure else {
            r.state = StepState::Succeeded;
            r.reason = self.repaired[i].then(|| {
                format!(
                    "passed after repair by `{}`",
                    step.repair
                        .map(|j| self.plan.steps[j].id.to_string())
                        .unwrap_or_default()
                )
            });
            r.output = output.output;
            r.ended_at = Some(Utc::now());
            return self.finalize(i, r);
        };
        if internal {
            self.internal.push(format!("step `{}`: {failure}", step.id));
            r.state = StepState::Failed;
            r.repairing = false;
            r.reason = Some(failure);
            r.ended_at = Some(Utc::now());
            return self.finalize(i, r);
        }
        let retry = step.retry.filter(|p| self.retries_used[i] < p.limit);
        if let (Some(policy), false) = (retry, self.repaired[i]) {
            let delay = policy
                .delays()
                .nth(self.retries_used[i] as usize)
                .unwrap_or(policy.max);
            self.retries_used[i] += 1;
            r.reason = Some(format!(
                "attempt {attempt} failed ({failure}); retrying in {}",
                humantime::format_duration(delay)
            ));
            self.set(i, r, false);
            self.in_flight.spawn(async move {
                tokio::time::sleep(delay).await;
                Done::RetryDue { step: i }
            });
            return;
        }
        if let (Some(repair), false) = (step.repair, self.repaired[i]) {
            self.repaired[i] = true;
            r.repairing = true;
            r.reason = Some(format!(
                "failed ({failure}); repairing with `{}`",
                self.plan.steps[repair].id
            ));
            self.set(i, r, true);
            let why = format!("repairing `{}`", self.plan.steps[i].id);
            let repair_attempt = self.record_attempt_start(repair, Some(why));
            self.spawn(i, Some(repair), repair_attempt);
            return;
        }
        r.state = StepState::Failed;
        r.repairing = false;
        // A failed attempt's structured output (a check's failed items) is
        // kept too, for reports and for `steps.ID.output` in later steps.
        r.output = output.output;
        r.reason = Some(if self.repaired[i] {
            format!("still failing after repair: {failure}")
        } else {
            failure
        });
        r.ended_at = Some(Utc::now());
        self.finalize(i, r);
    }

    pub(super) fn repair_ended(
        &mut self,
        i: usize,
        repair: usize,
        attempt: u32,
        output: TaskOutput,
    ) {
        self.keep_output(repair, attempt, &output);
        let repair_id = self.plan.steps[repair].id.clone();
        self.change.events.push(EventKind::AttemptEnded {
            step: repair_id.clone(),
            instance: INSTANCE(),
            attempt,
            succeeded: output.failure.is_none(),
            exit_code: output.exit_code,
            reason: output.failure.clone(),
        });
        let mut rr = self.records[repair].clone();
        rr.exit_code = output.exit_code;
        rr.ended_at = Some(Utc::now());
        let mut r = self.records[i].clone();
        r.repairing = false;
        match output.failure {
            None => {
                rr.state = StepState::Succeeded;
                rr.reason = Some(format!("repaired `{}`", self.plan.steps[i].id));
                self.set(repair, rr, true);
                // The recheck: one more attempt of the repaired step.
                self.records[i].repairing = false;
                let why = format!("rechecking after repair by `{repair_id}`");
                let attempt = self.record_attempt_start(i, Some(why));
                self.spawn(i, None, attempt);
            }
            Some(failure) => {
                rr.state = StepState::Failed;
                rr.reason = Some(failure.clone());
                self.set(repair, rr, true);
                r.state = StepState::Failed;
                r.reason = Some(format!("its repair `{repair_id}` failed: {failure}"));
                r.ended_at = Some(Utc::now());
                self.finalize(i, r);
            }
        }
    }
}
