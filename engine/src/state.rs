//! What the store keeps about a run: its record, each step instance's record
//! and the events of its journal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{InstanceId, RunId, StepId};

/// The state of one step instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not started yet.
    Pending,
    /// Started and not known to have ended (after a crash: maybe still in effect).
    Running,
    /// Ended well, or a person vouched that its effect is in place.
    Succeeded,
    /// Ended badly after its retries and repair.
    Failed,
    /// Not run: its condition was false or what it needed did not happen.
    Skipped,
    /// Waiting on a person: a gate whose needs failed, or an approval.
    Blocked,
    /// Was running when kpilot stopped and is not idempotent: a person decides.
    Interrupted,
}

impl StepState {
    /// The name used in YAML, CEL, JSON and the terminal.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Blocked => "blocked",
            StepState::Interrupted => "interrupted",
        }
    }

    /// Whether the step has ended for good (its dependents can be decided).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped
        )
    }
}

/// Why a step was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
pub enum SkipCause {
    /// Its `when` was false.
    Condition,
    /// A step it needed did not end the way its edge asks.
    Need {
        /// The needed step.
        step: StepId,
    },
}

/// The record of one step instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Where it is.
    pub state: StepState,
    /// Attempts started so far (repair rechecks included).
    pub attempts: u32,
    /// When the first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its current final state.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed, was skipped, blocked or interrupted; or who vouched for it.
    pub reason: Option<String>,
    /// Why it was skipped, for resume to tell a false condition from a failed need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipCause>,
    /// Exit code of the last attempt's process.
    pub exit_code: Option<i32>,
    /// Structured output of the last successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// The repair step is running on behalf of this step.
    #[serde(default)]
    pub repairing: bool,
}

impl StepRecord {
    /// A step that has not started.
    pub fn pending() -> Self {
        StepRecord {
            state: StepState::Pending,
            attempts: 0,
            started_at: None,
            ended_at: None,
            reason: None,
            skip: None,
            exit_code: None,
            output: None,
            repairing: false,
        }
    }
}

/// Where a whole run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A process is driving it (or was, until it crashed).
    Running,
    /// Every step succeeded or was skipped by its condition.
    Succeeded,
    /// Some step failed and nothing waits on a person.
    Failed,
    /// A gate did not pass, an approval waits or a step was interrupted.
    Blocked,
    /// A person ended it with `kpilot abort`: it is never driven again.
    Aborted,
}

impl RunState {
    /// The name used in JSON and the terminal.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Blocked => "blocked",
            RunState::Aborted => "aborted",
        }
    }
}

/// A person's approval of an approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// When it was given.
    pub at: DateTime<Utc>,
    /// Why, as given with `--reason`.
    pub reason: Option<String>,
    /// Who: the user name kpilot ran as.
    pub by: String,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// `metadata.name` of its workflow.
    pub workflow: String,
    /// The workflow file it was started from.
    pub file: PathBuf,
    /// The workflow's text when the run started: the run follows this, not the file.
    pub source: String,
    /// The params, defaults filled in.
    pub params: BTreeMap<String, String>,
    /// The directory steps run in.
    pub workdir: PathBuf,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Where it is.
    pub state: RunState,
    /// Approvals given, by step.
    #[serde(default)]
    pub approvals: BTreeMap<StepId, Approval>,
}

/// One entry of a run's append-only journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the journal, from 0.
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a journal entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum EventKind {
    /// The run was created.
    RunCreated {
        /// Its workflow.
        workflow: String,
    },
    /// A process began driving the run (`run`, `resume` or `approve`).
    DriveStarted {
        /// The process id.
        pid: u32,
        /// The verb that started it.
        verb: String,
    },
    /// An attempt is about to start: written before its side effect.
    AttemptStarted {
        /// The step.
        step: StepId,
        /// Its instance.
        instance: InstanceId,
        /// Which attempt.
        attempt: u32,
    },
    /// An attempt ended.
    AttemptEnded {
        /// The step.
        step: StepId,
        /// Its instance.
        instance: InstanceId,
        /// Which attempt.
        attempt: u32,
        /// Whether it succeeded.
        succeeded: bool,
        /// Exit code, when there was a process.
        exit_code: Option<i32>,
        /// Why it failed.
        reason: Option<String>,
    },
    /// A step instance reached a new state.
    StepChanged {
        /// The step.
        step: StepId,
        /// Its instance.
        instance: InstanceId,
        /// The new state.
        state: StepState,
        /// Why.
        reason: Option<String>,
    },
    /// A person chose to run an interrupted step again.
    Retried {
        /// The step.
        step: StepId,
    },
    /// A person vouched that a step's effect is in place.
    Vouched {
        /// The step.
        step: StepId,
        /// Their reason.
        reason: String,
    },
    /// A person approved an approval step.
    Approved {
        /// The step.
        step: StepId,
        /// Their reason.
        reason: Option<String>,
        /// Who.
        by: String,
    },
    /// A person aborted the run (`kpilot abort`).
    Aborted {
        /// Who.
        by: String,
        /// Why, as given with `--reason`.
        reason: Option<String>,
    },
    /// The run reached a state.
    RunEnded {
        /// The state.
        state: RunState,
    },
}
