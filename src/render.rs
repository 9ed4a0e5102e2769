//! How runs look on a terminal and in JSON.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kpilot_engine::scheduler::RunOutcome;
use kpilot_engine::state::{RunRecord, RunState, StepRecord, StepState};
use kpilot_engine::store::{Outline, RunStore, Snapshot, StateDir, StoreError};
use kpilot_engine::{InstanceId, RunId};

/// One row of a run's status.
pub struct Row {
    pub id: String,
    pub phase: String,
    pub body: String,
    pub instance: InstanceId,
    pub record: StepRecord,
}

/// `status -o json`: the run's summary and its rows, serialized from the
/// rows as they are (100,000 of them are not copied into a JSON tree first).
#[derive(serde::Serialize)]
pub struct StatusJson<'a> {
    #[serde(flatten)]
    run: serde_json::Value,
    steps: Vec<StepJson<'a>>,
}

/// One row of `status -o json`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StepJson<'a> {
    id: &'a str,
    phase: &'a str,
    body: &'a str,
    instance: &'a InstanceId,
    state: StepState,
    attempts: u32,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    reason: &'a Option<String>,
    exit_code: Option<i32>,
    output: &'a Option<serde_json::Value>,
}

impl<'a> From<&'a Row> for StepJson<'a> {
    fn from(row: &'a Row) -> Self {
        let r = &row.record;
        StepJson {
            id: &row.id,
            phase: &row.phase,
            body: &row.body,
            instance: &row.instance,
            state: r.state,
            attempts: r.attempts,
            started_at: r.started_at,
            ended_at: r.ended_at,
            reason: &r.reason,
            exit_code: r.exit_code,
            output: &r.output,
        }
    }
}

/// A run as `status` and `runs` show it.
pub struct RunView {
    pub run: RunRecord,
    pub rows: Vec<Row>,
    /// Set when another process drives the run and this is its last snapshot.
    pub driven_by: Option<Option<u32>>,
    /// The nodes the run still has cordoned, by its ledger (unknown, so
    /// empty, while another process drives it).
    pub cordoned: Vec<String>,
}

/// A run as the store keeps it; when another process holds it, its last
/// snapshot and that process's pid.
pub fn load_snapshot(
    state: &StateDir,
    id: &RunId,
) -> anyhow::Result<(Snapshot, Option<Option<u32>>)> {
    load_with_cordoned(state, id).map(|(s, d, _)| (s, d))
}

/// [`load_snapshot`], and the nodes the run still has cordoned.
#[allow(clippy::type_complexity)]
fn load_with_cordoned(
    state: &StateDir,
    id: &RunId,
) -> anyhow::Result<(Snapshot, Option<Option<u32>>, Vec<String>)> {
    match RunStore::open_to_read(state, id) {
        Ok(store) => Ok((
            store.current_snapshot()?,
            None,
            kpilot_tasks::actions::safety::cordoned(&store.ledger()),
        )),
        Err(StoreError::Busy { pid, .. }) => match state.snapshot(id)? {
            Some(s) => Ok((s, Some(pid), Vec::new())),
            None => Err(StoreError::Busy {
                id: id.clone(),
                pid,
            }
            .into()),
        },
        Err(e) => Err(e.into()),
    }
}

impl RunView {
    /// Reads a run; when another process holds it, reads its last snapshot.
    pub fn load(state: &StateDir, id: &RunId) -> anyhow::Result<Self> {
        let (snapshot, driven_by, cordoned) = load_with_cordoned(state, id)?;
        let mut view = Self::new(snapshot, state.outline(id), driven_by);
        view.cordoned = cordoned;
        Ok(view)
    }

    /// A view of a snapshot, its rows in the order of `outline` (the run's
    /// plan; re-planned from the stored workflow when the run kept none);
    /// `driven_by` is set when another process holds the run.
    pub fn new(
        snapshot: Snapshot,
        outline: Option<Outline>,
        driven_by: Option<Option<u32>>,
    ) -> Self {
        let Snapshot { run, steps, .. } = snapshot;
        let outline = outline.or_else(|| {
            crate::cli::replan(&run, &kpilot_tasks::registry(), None)
                .ok()
                .map(|plan| plan.outline())
        });
        let mut rows = Vec::new();
        match outline {
            Some(outline) => {
                // Each step's records: taken in one walk when the snapshot
                // lists them in the plan's order (the scheduler writes them
                // so), else grouped by step in one pass. A run of 100,000
                // steps must not be searched once per step.
                let in_order = {
                    let mut j = 0;
                    for step in &outline.steps {
                        while steps.get(j).is_some_and(|(id, _, _)| *id == step.id) {
                            j += 1;
                        }
                    }
                    j == steps.len()
                };
                let mut by_step: std::collections::HashMap<
                    kpilot_engine::StepId,
                    Vec<(InstanceId, StepRecord)>,
                > = std::collections::HashMap::new();
                let mut ordered = steps.into_iter().peekable();
                if !in_order {
                    for (step, instance, record) in ordered.by_ref() {
                        by_step.entry(step).or_default().push((instance, record));
                    }
                }
                for step in outline.steps {
                    let mut mine = by_step.remove(&step.id).unwrap_or_default();
                    while let Some((_, instance, record)) =
                        ordered.next_if(|(id, _, _)| *id == step.id)
                    {
                        mine.push((instance, record));
                    }
                    let mut whole = StepRecord::pending();
                    let mut nodes = Vec::new();
                    for (instance, record) in mine {
                        if instance == InstanceId::global() {
                            whole = record;
                        } else {
                            nodes.push((instance, record));
                        }
                    }
                    let id = step.id.to_string();
                    for (instance, record) in
                        std::iter::once((InstanceId::global(), whole)).chain(nodes)
                    {
                        rows.push(Row {
                            id: id.clone(),
                            phase: step.phase.clone(),
                            body: step.kind.clone(),
                            instance,
                            record,
                        });
                    }
                }
            }
            None => {
                for (sid, instance, record) in steps {
                    rows.push(Row {
                        id: sid.to_string(),
                        phase: "?".into(),
                        body: "?".into(),
                        instance,
                        record,
                    });
                }
            }
        }
        RunView {
            run,
            rows,
            driven_by,
            cordoned: Vec::new(),
        }
    }

    /// The run's state, marking a run another process drives.
    pub fn state_label(&self) -> String {
        match self.driven_by {
            // A drive that just ended (its process is exiting) left a final state.
            Some(_) if self.run.state != RunState::Running => self.run.state.as_str().into(),
            Some(_) => "running".into(),
            None if self.run.state == RunState::Running => "stopped".into(),
            None => self.run.state.as_str().into(),
        }
    }

    /// The status table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {}  workflow {}  state {}",
            self.run.id,
            self.run.workflow,
            self.state_label()
        );
        if let Some(pid) = self.driven_by {
            let _ = writeln!(
                out,
                "(driven by another process{}; shown as of its last snapshot)",
                pid.map(|p| format!(", pid {p}")).unwrap_or_default()
            );
        } else if self.run.state == RunState::Running {
            let _ = writeln!(
                out,
                "(kpilot stopped while driving this run; `kpilot resume {}` goes on)",
                self.run.id
            );
        }
        let width = self
            .rows
            .iter()
            .map(|r| r.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:<width$}  {:<10}  {:<8}  {:<11}  {:>3}  {:<19}  {:<19}  REASON",
            "STEP", "PHASE", "BODY", "STATE", "ATT", "STARTED", "ENDED"
        );
        for row in &self.rows {
            let r = &row.record;
            let _ = writeln!(
                out,
                "{:<width$}  {:<10}  {:<8}  {:<11}  {:>3}  {:<19}  {:<19}  {}",
                row.id,
                row.phase,
                row.body,
                r.state.as_str(),
                r.attempts,
                time(r.started_at),
                time(r.ended_at),
                r.reason.as_deref().unwrap_or("")
            );
        }
        out
    }

    /// What waits on a person, each with the commands that decide it, as
    /// `(step, state, reason, commands)`.
    pub fn waiting(&self) -> Vec<(String, &'static str, String, Vec<String>)> {
        let id = &self.run.id;
        self.rows
            .iter()
            .filter(|row| row.instance == InstanceId::global())
            .filter_map(|row| {
                let r = &row.record;
                let commands = match (r.state, row.body.as_str()) {
                    (StepState::Interrupted, _) => vec![
                        format!("kpilot resume {id} --retry {}", row.id),
                        format!("kpilot resume {id} --skip {} --reason TEXT", row.id),
                    ],
                    (StepState::Blocked, "approval") => {
                        vec![format!("kpilot approve {id} {}", row.id)]
                    }
                    (StepState::Blocked, _) => vec![format!("kpilot resume {id}")],
                    _ => return None,
                };
                Some((
                    row.id.clone(),
                    r.state.as_str(),
                    r.reason.clone().unwrap_or_default(),
                    commands,
                ))
            })
            .collect()
    }

    /// [`Self::waiting`] as the lines a person reads.
    pub fn waiting_text(&self) -> String {
        let mut out = String::new();
        for (step, state, reason, commands) in self.waiting() {
            let _ = writeln!(out, "  {step} {state}: {reason}");
            for command in commands {
                let _ = writeln!(out, "    {command}");
            }
        }
        out
    }

    /// The nodes the run still has cordoned and the commands that deal with
    /// them, as lines a person reads (empty when there are none).
    pub fn cordoned_text(&self) -> String {
        if self.cordoned.is_empty() {
            return String::new();
        }
        let id = &self.run.id;
        let mut out = format!(
            "nodes this run cordoned and has not uncordoned: {}\n",
            self.cordoned.join(", ")
        );
        let ends = match self.run.state {
            RunState::Succeeded | RunState::Aborted => "",
            _ => " and ends the run",
        };
        let _ = writeln!(out, "  `kpilot abort {id} --restore` uncordons them{ends}");
        if matches!(self.run.state, RunState::Blocked | RunState::Running)
            && self.driven_by.is_none()
        {
            let _ = writeln!(out, "  `kpilot resume {id}` goes on with the run instead");
        }
        out
    }

    /// The whole status as JSON.
    pub fn to_json(&self) -> StatusJson<'_> {
        let mut run = self.summary_json();
        run["params"] = serde_json::json!(self.run.params);
        run["cordoned"] = serde_json::json!(self.cordoned);
        run["waiting"] = serde_json::json!(self
            .waiting()
            .into_iter()
            .map(|(step, state, reason, commands)| serde_json::json!({
                "step": step,
                "state": state,
                "reason": reason,
                "commands": commands,
            }))
            .collect::<Vec<_>>());
        if let Some(map) = run.as_object_mut() {
            // The counts `runs` shows give way to the rows themselves.
            map.remove("steps");
        }
        StatusJson {
            run,
            steps: self.rows.iter().map(StepJson::from).collect(),
        }
    }

    /// One line of `runs -o json`.
    pub fn summary_json(&self) -> serde_json::Value {
        let mut counts = std::collections::HashMap::<StepState, usize>::new();
        let mut total = 0;
        for r in self
            .rows
            .iter()
            .filter(|r| r.instance == InstanceId::global())
        {
            total += 1;
            *counts.entry(r.record.state).or_default() += 1;
        }
        let count = |s: StepState| counts.get(&s).copied().unwrap_or(0);
        serde_json::json!({
            "id": self.run.id,
            "workflow": self.run.workflow,
            "file": self.run.file,
            "state": self.state_label(),
            "createdAt": self.run.created_at,
            "updatedAt": self.run.updated_at,
            "steps": {
                "total": total,
                "succeeded": count(StepState::Succeeded),
                "failed": count(StepState::Failed),
                "skipped": count(StepState::Skipped),
                "blocked": count(StepState::Blocked),
                "interrupted": count(StepState::Interrupted),
                "pending": count(StepState::Pending),
                "running": count(StepState::Running),
            },
        })
    }
}

/// A time as the tables show it.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Prints how a run ended: its steps, and what a person can do next;
/// `cordoned` are the nodes it still has cordoned.
pub fn outcome(
    outcome: &RunOutcome,
    cordoned: Vec<String>,
) -> Result<(), crate::output::OutputError> {
    let mut view = RunView::new(
        outcome.snapshot.clone(),
        Some(outcome.outline.clone()),
        None,
    );
    view.cordoned = cordoned;
    let id = &view.run.id;
    crate::out!("{}", view.table())?;
    for failure in &outcome.internal {
        eprintln!("kpilot: internal error: {failure}");
    }
    match outcome.state {
        RunState::Succeeded => eprintln!("kpilot: run {id} succeeded"),
        RunState::Failed => eprintln!("kpilot: run {id} failed; `kpilot logs {id} STEP` shows what a step printed, `kpilot resume {id}` runs the failed steps again"),
        RunState::Blocked | RunState::Running => {
            if let Some(signal) = outcome.stopped_by {
                eprintln!("kpilot: stopped by {signal}; run {id} is blocked until `kpilot resume {id}`");
            } else {
                eprintln!("kpilot: run {id} is blocked and waits on a person:");
            }
            eprint!("{}", view.waiting_text());
        }
        RunState::Aborted => eprintln!("kpilot: run {id} was aborted"),
    }
    let cordoned = view.cordoned_text();
    if !cordoned.is_empty() {
        eprint!("kpilot: {cordoned}");
    }
    Ok(())
}
