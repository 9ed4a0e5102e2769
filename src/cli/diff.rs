//! `kpilot diff RUN [STEP_A STEP_B]`: what changed between two snapshots of a run.

use clap::Args;
use kpilot_engine::{InstanceId, RunId};
use kpilot_report::diff::{diff as compare, pick, StepSeen};

use super::{Format, StateArgs, Usage};
use crate::{render, Exit};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The run's id.
    run: String,
    /// The snapshot step to compare from [default: the first snapshot step that succeeded].
    #[arg(requires = "step_b")]
    step_a: Option<String>,
    /// The snapshot step to compare to [default: the last snapshot step that succeeded].
    step_b: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

pub fn diff(args: DiffArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let id = RunId::parse(&args.run).map_err(Usage)?;
    let view = render::RunView::load(&state.state_dir()?, &id)?;
    let steps: Vec<StepSeen> = view
        .rows
        .iter()
        .filter(|row| row.instance == InstanceId::global())
        .map(|row| StepSeen {
            id: row.id.clone(),
            kind: row.body.clone(),
            state: row.record.state.as_str().to_owned(),
            output: row.record.output.clone(),
        })
        .collect();
    let names = args.step_a.as_deref().zip(args.step_b.as_deref());
    let (a, b) = pick(id.as_str(), &steps, names).map_err(|e| Usage(e.to_string()))?;
    let diff = compare(&a, &b);
    match args.output {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&diff)?)?,
        Format::Text => crate::out!("{}", diff.text())?,
    }
    Ok(Exit::Passed)
}
