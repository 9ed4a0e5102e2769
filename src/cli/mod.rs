//! Command-line arguments and the dispatch of each verb to its module.

mod abort;
mod agent;
mod approve;
mod catalog;
mod diff;
mod graph;
mod inspect;
mod logs;
mod patrol;
mod plan;
mod report;
mod resume;
mod run;
mod runs;
mod status;
mod trace;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kpilot_engine::scheduler::SchedulerError;
use kpilot_engine::store::{StateDir, StoreError};
use kpilot_engine::validate::Invalid;

use crate::Exit;

/// kpilot: persisted, resumable DAG workflows for Kubernetes operations that must not go wrong.
#[derive(Debug, Parser)]
#[command(name = "kpilot", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow file as a new run.
    Run(run::RunArgs),
    /// Go on with a run: after a crash, a block or a repair.
    Resume(resume::ResumeArgs),
    /// End a run for good; with --restore, uncordon the nodes it cordoned.
    Abort(abort::AbortArgs),
    /// Approve an approval step and go on with the run.
    Approve(approve::ApproveArgs),
    /// Show every step of a run.
    Status(status::StatusArgs),
    /// List the runs in the state directory.
    Runs(runs::RunsArgs),
    /// Print what a step printed.
    Logs(logs::LogsArgs),
    /// Check a workflow file without running it.
    Validate(validate::ValidateArgs),
    /// Print a workflow's step graph as DOT or Mermaid.
    Graph(graph::GraphArgs),
    /// Check a cluster with the catalog's checks that apply to it, as a run, and print the report.
    Inspect(Box<inspect::InspectArgs>),
    /// List the check catalog: what each check looks at and where it applies.
    Catalog(catalog::CatalogArgs),
    /// Print the report of an inspection run.
    Report(report::ReportArgs),
    /// Show what changed between two snapshots of a run.
    Diff(diff::DiffArgs),
    /// Plan an upgrade: its hops, what each removes and needs, and its workflow (`plan upgrade`).
    Plan(plan::PlanArgs),
    /// Serve as a node agent: run step bodies and answer node.* queries over HTTPS.
    Agent(agent::AgentArgs),
    /// Trace what the kernel does to packets (eBPF): `kpilot trace drops`.
    Trace(trace::TraceArgs),
    /// Run a Patrol file's schedules as a foreground daemon (docs/patrol.md).
    Patrol(patrol::PatrolArgs),
    /// List the patrols in the state directory: schedules, last and next slot, last outcome.
    Patrols(patrol::PatrolsArgs),
}

/// Where runs are kept.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The state directory, for the verbs that keep or read runs [default: the user's data directory, kpilot/]
    #[arg(long, env = "KPILOT_STATE_DIR", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    fn state_dir(&self) -> anyhow::Result<StateDir> {
        match &self.state_dir {
            Some(dir) => Ok(StateDir::new(dir)),
            None => match dirs::data_dir() {
                Some(dir) => Ok(StateDir::new(dir.join("kpilot"))),
                None => Err(Usage("no data directory is known for this user; pass --state-dir or set KPILOT_STATE_DIR".into()).into()),
            },
        }
    }
}

/// How a verb prints what a script may read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Text,
    /// JSON on standard output.
    Json,
}

/// A usage mistake, reported with exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Runs the verb.
pub async fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run(args) => run::run(args, &cli.state).await,
        Command::Resume(args) => resume::resume(args, &cli.state).await,
        Command::Abort(args) => abort::abort(args, &cli.state).await,
        Command::Approve(args) => approve::approve(args, &cli.state).await,
        Command::Status(args) => status::status(args, &cli.state),
        Command::Runs(args) => runs::runs(args, &cli.state),
        Command::Logs(args) => logs::logs(args, &cli.state),
        Command::Validate(args) => validate::validate(args),
        Command::Graph(args) => graph::graph(args),
        Command::Inspect(args) => inspect::inspect(*args, &cli.state).await,
        Command::Catalog(args) => catalog::catalog(args),
        Command::Report(args) => report::report(args, &cli.state),
        Command::Diff(args) => diff::diff(args, &cli.state),
        Command::Plan(args) => plan::run(args).await,
        Command::Agent(args) => agent::agent(args).await,
        Command::Trace(args) => trace::trace(args).await,
        Command::Patrol(args) => patrol::patrol(args, &cli.state).await,
        Command::Patrols(args) => patrol::patrols(args, &cli.state),
    }
}

/// The exit code for an error: 2 for what the user can fix by changing the
/// input, 4 for kpilot's own failures.
pub fn classify(e: &anyhow::Error) -> Exit {
    if e.downcast_ref::<Usage>().is_some() || e.downcast_ref::<Invalid>().is_some() {
        return Exit::BadInput;
    }
    if e.downcast_ref::<inspect::Unreadable>().is_some() {
        return Exit::Blocked;
    }
    if e.downcast_ref::<kpilot_report::ReportError>().is_some() {
        return Exit::BadInput;
    }
    let store = store_error(e);
    match store {
        Some(
            StoreError::NoSuchRun { .. }
            | StoreError::RunExists { .. }
            | StoreError::Busy { .. }
            | StoreError::StateDir { .. },
        ) => return Exit::BadInput,
        Some(_) => return Exit::Internal,
        None => {}
    }
    if let Some(SchedulerError::Decision(_) | SchedulerError::UnknownStep { .. }) =
        e.downcast_ref::<SchedulerError>()
    {
        return Exit::BadInput;
    }
    Exit::Internal
}

/// The store's error inside `e`, whether the store or the scheduler said it.
fn store_error(e: &anyhow::Error) -> Option<&StoreError> {
    e.downcast_ref::<StoreError>()
        .or_else(|| match e.downcast_ref::<SchedulerError>() {
            Some(SchedulerError::Store(s)) => Some(s),
            _ => None,
        })
}

/// What a person can run next after an error, in kpilot's own words (the
/// libraries say what happened; only the CLI knows its verbs).
pub fn hint(e: &anyhow::Error) -> Option<String> {
    let store = store_error(e);
    match store {
        Some(StoreError::NoSuchRun { .. }) => {
            return Some("`kpilot runs` lists the runs there".into())
        }
        Some(StoreError::RunExists { id, .. }) => {
            return Some(format!(
                "choose another --run-id, or `kpilot resume {id}` to go on with it"
            ))
        }
        _ => {}
    }
    match e.downcast_ref::<SchedulerError>() {
        Some(SchedulerError::UnknownStep { run, .. }) => {
            Some(format!("`kpilot status {run}` lists its steps"))
        }
        _ => None,
    }
}

/// Who is deciding, for the journal.
fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", nix_uid()))
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

/// How checks reach the cluster, like kubectl: `--kubeconfig`, `--context`,
/// else `KUBECONFIG`, `~/.kube/config` or the in-cluster config. Nothing
/// connects until a check asks the cluster something.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or in-cluster]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// The cluster these flags name.
    fn config(&self) -> kpilot_tasks::ClusterConfig {
        kpilot_tasks::ClusterConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    /// The task kinds, connected to the cluster these flags name.
    fn registry(&self) -> kpilot_engine::TaskRegistry {
        kpilot_tasks::registry_with(self.config())
    }
}

/// The largest workflow or inventory file kpilot reads.
const MAX_INPUT_FILE: u64 = 16 * 1024 * 1024;

/// Refuses a path that is not a regular file of a sane size: a FIFO or a
/// device would block or never end. A missing file is left for the reader
/// to report.
fn regular_file(path: &std::path::Path, what: &str) -> Result<(), Usage> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(Usage(format!(
            "{}: not a regular file; give the path of {what}",
            path.display()
        ))),
        Ok(meta) if meta.len() > MAX_INPUT_FILE => Err(Usage(format!(
            "{}: {} bytes is more than the {} MiB kpilot reads; give the path of {what}",
            path.display(),
            meta.len(),
            MAX_INPUT_FILE / 1024 / 1024
        ))),
        _ => Ok(()),
    }
}

/// Validates a workflow: its plan, and its tree as parsed, which a new run
/// keeps so that a resume need not parse the YAML again.
fn plan(
    source: &kpilot_engine::WorkflowSource,
    registry: &kpilot_engine::TaskRegistry,
) -> anyhow::Result<(kpilot_engine::Plan, serde_yaml::Value)> {
    let tree = kpilot_engine::validate::read(source)?;
    let plan = kpilot_engine::validate::check(source, &tree, registry)?;
    Ok((plan, tree))
}

/// Reads and validates a workflow file, rendering problems for the user.
fn load(
    path: &std::path::Path,
    registry: &kpilot_engine::TaskRegistry,
) -> anyhow::Result<(
    kpilot_engine::WorkflowSource,
    kpilot_engine::Plan,
    serde_yaml::Value,
)> {
    regular_file(path, "a workflow YAML file")?;
    let source = kpilot_engine::WorkflowSource::read(path).map_err(|e| {
        Usage(format!(
            "{}: cannot read the workflow file: {e}",
            path.display()
        ))
    })?;
    let (plan, tree) = plan(&source, registry)?;
    Ok((source, plan, tree))
}

/// Prints what validation found suspicious; the verb goes on.
fn print_warnings(plan: &kpilot_engine::Plan) {
    for w in &plan.warnings {
        eprintln!("kpilot: warning: {w}");
    }
}

/// Reads and checks an inventory file as a per-node step would, so that a
/// bad one is a usage error (exit 2) before any run is written.
fn check_inventory(path: &std::path::Path) -> anyhow::Result<()> {
    regular_file(path, "an inventory YAML file")?;
    kpilot_tasks::agent::Inventory::read(path)
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            // Errors about files the inventory names (its token file) say
            // only that file: name the inventory too.
            if text.contains(&path.display().to_string()) {
                Usage(text).into()
            } else {
                Usage(format!("inventory {}: {text}", path.display())).into()
            }
        })
}

/// Re-plans a stored run: from the parsed tree its store keeps when that
/// tree is still the one of the workflow text (then only the checks run
/// again), else from that text.
pub fn replan(
    run: &kpilot_engine::state::RunRecord,
    registry: &kpilot_engine::TaskRegistry,
    store: Option<&kpilot_engine::store::RunStore>,
) -> anyhow::Result<kpilot_engine::Plan> {
    let source = kpilot_engine::WorkflowSource {
        path: run.file.clone(),
        text: run.source.clone(),
    };
    let plan = match store.and_then(|s| s.parsed_workflow(&run.source)) {
        Some(tree) => kpilot_engine::validate::check(&source, &tree, registry),
        None => kpilot_engine::validate::validate(&source, registry),
    };
    Ok(plan?)
}

/// The executors a plan's steps name: `global`, `per-node` and its pools.
/// `inventory` is `--inventory`; `workdir` the run's working directory;
/// `cluster` where an inventory with `cluster:` finds its nodes.
fn executors(
    plan: &kpilot_engine::Plan,
    inventory: Option<&std::path::Path>,
    workdir: &std::path::Path,
    cluster: &ClusterArgs,
) -> anyhow::Result<kpilot_engine::executor::Executors> {
    if let Some(p) = inventory {
        regular_file(p, "an inventory YAML file")?;
    }
    let inventory = match inventory {
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|e| Usage(format!("--inventory {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let options = kpilot_tasks::ExecutorOptions {
        inventory,
        workdir: workdir.to_owned(),
        cluster: cluster.config(),
    };
    kpilot_tasks::executors(plan, &options).map_err(|e| Usage(e.to_string()).into())
}

/// After a drive: a run that ended failed or blocked, with
/// `spec.onFailure: {restore: true}`, uncordons the nodes it cordoned (not
/// after a signal: kpilot was asked to stop, not to act). Returns the nodes
/// it still has cordoned.
async fn after_drive(
    plan: &kpilot_engine::Plan,
    ledger: &kpilot_engine::store::Ledger,
    outcome: &kpilot_engine::scheduler::RunOutcome,
    cluster: &ClusterArgs,
) -> Vec<String> {
    use kpilot_engine::state::RunState;
    use kpilot_tasks::actions::safety;
    let ended_badly = matches!(outcome.state, RunState::Failed | RunState::Blocked);
    let id = outcome.snapshot.run.id.as_str();
    if plan.restore_on_failure
        && ended_badly
        && outcome.stopped_by.is_none()
        && !safety::cordoned(ledger).is_empty()
    {
        let cluster = kpilot_tasks::data::Cluster::new(cluster.config());
        match safety::restore(id, ledger, &cluster).await {
            Ok(restored) => print_restored("spec.onFailure.restore", &restored),
            Err(e) => {
                eprintln!("kpilot: spec.onFailure.restore: could not uncordon the run's nodes: {e}")
            }
        }
    }
    safety::cordoned(ledger)
}

/// Says what a restore did, each node on a line; `who` is what asked.
fn print_restored(who: &str, restored: &kpilot_tasks::actions::safety::Restored) {
    for node in &restored.uncordoned {
        eprintln!("kpilot: {who}: uncordoned node {node}");
    }
    for node in &restored.left_cordoned {
        eprintln!(
            "kpilot: {who}: left node {node} cordoned: this run did not cordon it (a person or another run did)"
        );
    }
    for node in &restored.gone {
        eprintln!("kpilot: {who}: node {node} no longer exists");
    }
}

/// The exit code for how a drive of a run ended: 4 when kpilot itself
/// failed in it, else what the run's state means.
fn exit_for(outcome: &kpilot_engine::scheduler::RunOutcome) -> Exit {
    use kpilot_engine::state::RunState;
    if !outcome.internal.is_empty() {
        return Exit::Internal;
    }
    match outcome.state {
        RunState::Succeeded => Exit::Passed,
        RunState::Failed => Exit::Failed,
        RunState::Blocked | RunState::Running => Exit::Blocked,
        RunState::Aborted => Exit::Failed,
    }
}
