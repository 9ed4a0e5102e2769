//! `kpilot run FILE`: validate, create the run, drive it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kpilot_engine::state::{RunRecord, RunState};
use kpilot_engine::store::RunStore;
use kpilot_engine::RunId;

use super::{
    check_inventory, executors, exit_for, load, print_warnings, ClusterArgs, StateArgs, Usage,
};
use crate::{progress::Progress, render, Exit};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file.
    file: PathBuf,
    /// Set a param: NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// The run's id [default: the workflow's name, the time and a random suffix].
    #[arg(long)]
    run_id: Option<String>,
    /// Inventory of node agents for per-node steps (remembered for resume).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Splits `NAME=VALUE` arguments.
pub fn parse_params(args: &[String]) -> Result<Vec<(String, String)>, Usage> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Usage(format!("--param `{a}` is not NAME=VALUE"))),
        })
        .collect()
}

/// The inventory files a new run's steps will read (relative paths are
/// relative to the working directory, as the executors take them):
/// `--inventory`, else `spec.inventory`, for steps of `per-node` and of pools
/// without their own; and the own inventory of each pool a step uses.
fn inventories(plan: &kpilot_engine::Plan, flag: Option<&std::path::Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = flag.map(std::path::Path::to_owned).into_iter().collect();
    for step in &plan.steps {
        if !step.placement.has_instances() {
            continue;
        }
        let pool = plan.executors.iter().find(|e| e.name == step.executor);
        let path = match pool.and_then(|p| p.inventory.as_ref()) {
            Some(own) => Some(PathBuf::from(own)),
            None if flag.is_none() => plan.inventory.as_ref().map(PathBuf::from),
            None => None,
        };
        if let Some(path) = path.filter(|p| !out.contains(p)) {
            out.push(path);
        }
    }
    out
}

pub async fn run(args: RunArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let (source, plan, tree) = load(&args.file, &args.cluster.registry())?;
    print_warnings(&plan);
    let overrides = parse_params(&args.params)?;
    let (outcome, cordoned) = drive_new(
        NewRun {
            file: args.file.clone(),
            source,
            plan,
            tree,
            overrides,
            run_id: args.run_id.clone(),
            inventory: args.inventory.clone(),
        },
        &args.cluster,
        state,
    )
    .await?;
    render::outcome(&outcome, cordoned)?;
    Ok(exit_for(&outcome))
}

/// A validated workflow to start as a new run.
pub struct NewRun {
    /// The file it was read from (kept with the run).
    pub file: PathBuf,
    /// Its text.
    pub source: kpilot_engine::WorkflowSource,
    /// Its plan.
    pub plan: kpilot_engine::Plan,
    /// The workflow as parsed, kept with the run for its resumes.
    pub tree: serde_yaml::Value,
    /// `--param` values.
    pub overrides: Vec<(String, String)>,
    /// `--run-id`.
    pub run_id: Option<String>,
    /// `--inventory`.
    pub inventory: Option<PathBuf>,
}

/// Creates the run in the state directory and drives it to its end (or a
/// block): what `run` and `inspect` share. Also returns the nodes the run
/// still has cordoned.
pub async fn drive_new(
    new: NewRun,
    cluster: &ClusterArgs,
    state: &StateArgs,
) -> anyhow::Result<(kpilot_engine::scheduler::RunOutcome, Vec<String>)> {
    let NewRun {
        file,
        source,
        plan,
        tree,
        overrides,
        run_id,
        inventory,
    } = new;
    for path in inventories(&plan, inventory.as_deref()) {
        check_inventory(&path)?;
    }
    let params = plan.bind_params(&source, &overrides)?;
    let id = match &run_id {
        Some(id) => RunId::parse(id).map_err(Usage)?,
        None => RunId::generate(&plan.name),
    };
    let state_dir = state.state_dir()?;
    let now = chrono::Utc::now();
    let record = RunRecord {
        id: id.clone(),
        workflow: plan.name.clone(),
        file,
        source: source.text.clone(),
        params,
        workdir: std::env::current_dir()
            .map_err(|e| Usage(format!("the current directory cannot be read: {e}")))?,
        created_at: now,
        updated_at: now,
        state: RunState::Running,
        approvals: Default::default(),
    };
    let executors = executors(&plan, inventory.as_deref(), &record.workdir, cluster)?;
    let store = RunStore::create(&state_dir, &record)?;
    store.write_outline(&plan.outline())?;
    store.write_parsed_workflow(&source.text, &tree)?;
    drop(tree);
    eprintln!(
        "kpilot: run {id} of workflow `{}` ({} steps)",
        plan.name,
        plan.steps.len()
    );
    let plan = Arc::new(plan);
    let progress = Progress::new(&plan);
    let ledger = store.ledger();
    let outcome =
        kpilot_engine::scheduler::start(Arc::clone(&plan), store, executors, &progress).await?;
    progress.finish();
    let cordoned = super::after_drive(&plan, &ledger, &outcome, cluster).await;
    Ok((outcome, cordoned))
}
