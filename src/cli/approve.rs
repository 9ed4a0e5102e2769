//! `kpilot approve RUN STEP`: record an approval and go on with the run.

use clap::Args;
use kpilot_engine::scheduler::Decisions;
use kpilot_engine::StepId;

use super::{user_name, ClusterArgs, StateArgs, Usage};
use crate::Exit;

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The run's id.
    run: String,
    /// The approval step.
    step: String,
    /// Why, recorded in the journal.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn approve(args: ApproveArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let step = StepId::parse(&args.step).map_err(Usage)?;
    let decisions = Decisions {
        approve: Some((step, args.reason.clone())),
        by: user_name(),
        ..Decisions::default()
    };
    super::resume::drive(&args.run, state, decisions, "approve", None, &args.cluster).await
}
