//! `kpilot logs RUN STEP`: what an attempt of a step printed.

use std::io::Write as _;

use clap::Args;
use kpilot_engine::store::{RunStore, StoreError};
use kpilot_engine::{InstanceId, RunId, StepId};

use super::{StateArgs, Usage};
use crate::Exit;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's id.
    run: String,
    /// The step.
    step: String,
    /// Which attempt [default: the last].
    #[arg(long)]
    attempt: Option<u32>,
    /// For a step run on every node: which node's output.
    #[arg(long)]
    node: Option<String>,
}

pub fn logs(args: LogsArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let id = RunId::parse(&args.run).map_err(Usage)?;
    let step = StepId::parse(&args.step).map_err(Usage)?;
    let state_dir = state.state_dir()?;
    let store = match RunStore::open_to_read(&state_dir, &id) {
        Ok(s) => s,
        Err(StoreError::Busy { pid, .. }) => {
            return Err(Usage(format!(
                "run {id} is being driven by another process{}; its logs can be read when it ends",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ))
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let instance = args
        .node
        .clone()
        .map_or_else(InstanceId::global, InstanceId::named);
    let records = store.steps()?;
    let nodes: Vec<String> = records
        .iter()
        .filter(|(s, i, _)| s == &step && i != &InstanceId::global())
        .map(|(_, i, _)| i.to_string())
        .collect();
    if args.node.is_none() && !nodes.is_empty() {
        return Err(Usage(format!(
            "step `{step}` ran on {} nodes; pass --node NODE for one of them: {}",
            nodes.len(),
            list_some(&nodes)
        ))
        .into());
    }
    let record = records
        .into_iter()
        .find(|(s, i, _)| s == &step && i == &instance)
        .map(|(_, _, r)| r)
        .ok_or_else(|| {
            Usage(match &args.node {
                Some(node) if nodes.is_empty() => {
                    format!("step `{step}` has not run on node `{node}` in run {id}; it does not run on nodes, leave out --node")
                }
                Some(node) => format!(
                    "step `{step}` has not run on node `{node}` in run {id}; it ran on: {}",
                    list_some(&nodes)
                ),
                None => format!("step `{step}` has not run in run {id}"),
            })
        })?;
    let attempt = args.attempt.unwrap_or(record.attempts);
    if attempt == 0 || attempt > record.attempts {
        return Err(Usage(format!(
            "step `{step}` has {} attempt(s); --attempt {attempt} is not one of them",
            record.attempts
        ))
        .into());
    }
    let Some(output) = store.output(&step, &instance, attempt)? else {
        eprintln!("kpilot: attempt {attempt} of `{step}` printed nothing");
        return Ok(Exit::Passed);
    };
    crate::output::write_all(&output.stdout)?;
    std::io::stderr().write_all(&output.stderr)?;
    Ok(Exit::Passed)
}

/// At most ten names, and how many more there are.
fn list_some(names: &[String]) -> String {
    const MOST: usize = 10;
    let mut text = names
        .iter()
        .take(MOST)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MOST {
        text.push_str(&format!(" and {} more", names.len() - MOST));
    }
    text
}
