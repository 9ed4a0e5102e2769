//! `kpilot resume RUN`: go on with a run, with a person's decisions.

use std::sync::Arc;

use clap::Args;
use kpilot_engine::scheduler::Decisions;
use kpilot_engine::store::RunStore;
use kpilot_engine::{RunId, StepId};

use super::{executors, exit_for, replan, user_name, ClusterArgs, StateArgs, Usage};
use crate::{progress::Progress, render, Exit};

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run's id.
    run: String,
    /// Run this interrupted or failed step again (repeatable).
    #[arg(long, value_name = "STEP")]
    retry: Vec<String>,
    /// Count this step as succeeded: you vouch its effect is in place (repeatable; needs --reason).
    #[arg(long, value_name = "STEP", requires = "reason")]
    skip: Vec<String>,
    /// Why, for each --skip in order (one reason may serve them all).
    #[arg(long, value_name = "TEXT")]
    reason: Vec<String>,
    /// Inventory of node agents [default: the one the run started with].
    #[arg(long, value_name = "FILE")]
    inventory: Option<std::path::PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn step_id(s: &str) -> Result<StepId, Usage> {
    StepId::parse(s).map_err(Usage)
}

pub async fn resume(args: ResumeArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    if !args.reason.is_empty() && args.reason.len() != args.skip.len() && args.reason.len() != 1 {
        return Err(Usage(format!(
            "{} --skip and {} --reason given; give one --reason per --skip, or one for all",
            args.skip.len(),
            args.reason.len()
        ))
        .into());
    }
    if args.skip.is_empty() && !args.reason.is_empty() {
        return Err(Usage("--reason goes with --skip".into()).into());
    }
    let skip = args
        .skip
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let reason = args
                .reason
                .get(i)
                .or(args.reason.first())
                .cloned()
                .unwrap_or_default();
            Ok((step_id(s)?, reason))
        })
        .collect::<Result<Vec<_>, Usage>>()?;
    let retry = args
        .retry
        .iter()
        .map(|s| step_id(s))
        .collect::<Result<Vec<_>, _>>()?;
    let decisions = Decisions {
        retry,
        skip,
        approve: None,
        by: user_name(),
    };
    drive(
        &args.run,
        state,
        decisions,
        "resume",
        args.inventory.as_deref(),
        &args.cluster,
    )
    .await
}

/// Opens a run, re-plans it from its stored workflow and drives it on.
pub async fn drive(
    run: &str,
    state: &StateArgs,
    decisions: Decisions,
    verb: &str,
    inventory: Option<&std::path::Path>,
    cluster: &ClusterArgs,
) -> anyhow::Result<Exit> {
    let id = RunId::parse(run).map_err(Usage)?;
    if let Some(inventory) = inventory {
        super::check_inventory(inventory)?;
    }
    let state_dir = state.state_dir()?;
    let store = RunStore::open(&state_dir, &id)?;
    let record = store.run()?;
    if record.state == kpilot_engine::state::RunState::Aborted {
        return Err(Usage(format!(
            "run {id} was aborted (`kpilot abort`) and cannot be {verb}d; start a new run of its workflow instead"
        ))
        .into());
    }
    let plan = Arc::new(replan(&record, &cluster.registry(), Some(&store))?);
    eprintln!("kpilot: {verb} run {id} of workflow `{}`", plan.name);
    let progress = Progress::new(&plan);
    let ledger = store.ledger();
    let outcome = kpilot_engine::scheduler::resume(
        Arc::clone(&plan),
        store,
        decisions,
        verb,
        executors(&plan, inventory, &record.workdir, cluster)?,
        &progress,
    )
    .await?;
    progress.finish();
    let cordoned = super::after_drive(&plan, &ledger, &outcome, cluster).await;
    render::outcome(&outcome, cordoned)?;
    Ok(exit_for(&outcome))
}
