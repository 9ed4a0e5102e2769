//! `kpilot abort RUN [--restore]`: end a run for good; with `--restore`,
//! uncordon the nodes it cordoned and delete the Jobs and Pods its image
//! steps left in the cluster.

use clap::Args;
use kpilot_engine::state::RunState;
use kpilot_engine::store::RunStore;
use kpilot_engine::RunId;
use kpilot_tasks::actions::{safety, ActionError};

use super::{print_restored, user_name, ClusterArgs, StateArgs, Usage};
use crate::Exit;

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The run's id.
    run: String,
    /// Uncordon the nodes the run cordoned (a node someone else cordoned stays cordoned).
    #[arg(long)]
    restore: bool,
    /// Why, recorded in the journal.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn abort(args: AbortArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let id = RunId::parse(&args.run).map_err(Usage)?;
    let state_dir = state.state_dir()?;
    // Opened as its driver: a run another process drives is refused (Busy,
    // exit 2, saying to stop that process first).
    let mut store = RunStore::open(&state_dir, &id)?;
    let record = store.run()?;
    match record.state {
        RunState::Aborted => eprintln!("kpilot: run {id} was aborted already"),
        RunState::Succeeded if !args.restore => {
            return Err(Usage(format!(
                "run {id} succeeded; there is nothing to abort (--restore still uncordons nodes it left cordoned)"
            ))
            .into())
        }
        RunState::Succeeded => {}
        RunState::Running | RunState::Failed | RunState::Blocked => {
            store.abort(user_name(), args.reason.clone())?;
            eprintln!("kpilot: run {id} aborted; it cannot be resumed");
        }
    }
    let ledger = store.ledger();
    if args.restore {
        let cluster = kpilot_tasks::data::Cluster::new(args.cluster.config());
        let restored = safety::restore(id.as_str(), &ledger, &cluster)
            .await
            .map_err(|e| match e {
                ActionError::Connect(_) => anyhow::Error::from(Usage(format!(
                    "--restore cannot reach the cluster: {e}; check --kubeconfig and --context"
                ))),
                other => anyhow::Error::from(other),
            })?;
        print_restored("abort --restore", &restored);
        if restored.uncordoned.is_empty() && restored.left_cordoned.is_empty() {
            eprintln!("kpilot: run {id} had no node cordoned");
        }
        if !kpilot_tasks::image::left_behind(&ledger).is_empty() {
            let client = cluster.client().await.map_err(|e| {
                Usage(format!(
                    "--restore cannot reach the cluster: {e}; check --kubeconfig and --context"
                ))
            })?;
            for object in kpilot_tasks::image::cluster::remove_left_behind(&ledger, &client).await?
            {
                eprintln!("kpilot: abort --restore: deleted {object}, left by an image step");
            }
        }
    }
    for (at, object) in kpilot_tasks::image::left_behind(&ledger) {
        eprintln!(
            "kpilot: run {id} left {} in the cluster (step {at}); `kpilot abort {id} --restore` deletes it",
            object.describe()
        );
    }
    let left = safety::cordoned(&ledger);
    if !left.is_empty() {
        eprintln!(
            "kpilot: run {id} still has nodes cordoned: {}; `kpilot abort {id} --restore` uncordons them",
            left.join(", ")
        );
    }
    Ok(Exit::Passed)
}
