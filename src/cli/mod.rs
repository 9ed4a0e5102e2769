//! Command-line arguments and the dispatch of each verb to its module.

mod agent;
mod approve;
mod graph;
mod logs;
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow file as a new run.
    Run(run::RunArgs),
    /// Go on with a run: after a crash, a block or a repair.
    Resume(resume::ResumeArgs),
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
    /// Serve as a node agent: run step bodies and answer node.* queries over HTTPS.
    Agent(agent::AgentArgs),
    /// Trace what the kernel does to packets (eBPF): `kpilot trace drops`.
    Trace(trace::TraceArgs),
}

/// Where runs are kept.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The state directory [default: the user's data directory, kpilot/]
    #[arg(long, env = "KPILOT_STATE_DIR", global = true)]
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
        Command::Run(args) => run::run(args).await,
        Command::Resume(args) => resume::resume(args).await,
        Command::Approve(args) => approve::approve(args).await,
        Command::Status(args) => status::status(args),
        Command::Runs(args) => runs::runs(args),
        Command::Logs(args) => logs::logs(args),
        Command::Validate(args) => validate::validate(args),
        Command::Graph(args) => graph::graph(args),
        Command::Agent(args) => agent::agent(args).await,
        Command::Trace(args) => trace::trace(args).await,
    }
}

/// The exit code for an error: 2 for what the user can fix by changing the
/// input, 4 for kpilot's own failures.
pub fn classify(e: &anyhow::Error) -> Exit {
    if e.downcast_ref::<Usage>().is_some() || e.downcast_ref::<Invalid>().is_some() {
        return Exit::BadInput;
    }
    let store =
        e.downcast_ref::<StoreError>()
            .or_else(|| match e.downcast_ref::<SchedulerError>() {
                Some(SchedulerError::Store(s)) => Some(s),
                _ => None,
            });
    match store {
        Some(
            StoreError::NoSuchRun { .. } | StoreError::RunExists { .. } | StoreError::Busy { .. },
        ) => return Exit::BadInput,
        Some(_) => return Exit::Internal,
        None => {}
    }
    if let Some(SchedulerError::Decision(_)) = e.downcast_ref::<SchedulerError>() {
        return Exit::BadInput;
    }
    Exit::Internal
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
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or in-cluster]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context]
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
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

/// Reads and validates a workflow file, rendering problems for the user.
fn load(
    path: &std::path::Path,
    registry: &kpilot_engine::TaskRegistry,
) -> anyhow::Result<(kpilot_engine::WorkflowSource, kpilot_engine::Plan)> {
    let source = kpilot_engine::WorkflowSource::read(path).map_err(|e| {
        Usage(format!(
            "{}: cannot read the workflow file: {e}",
            path.display()
        ))
    })?;
    let plan = kpilot_engine::validate::validate(&source, registry)?;
    Ok((source, plan))
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

/// Re-plans a stored run from the workflow text kept with it.
pub fn replan(
    run: &kpilot_engine::state::RunRecord,
    registry: &kpilot_engine::TaskRegistry,
) -> anyhow::Result<kpilot_engine::Plan> {
    let source = kpilot_engine::WorkflowSource {
        path: run.file.clone(),
        text: run.source.clone(),
    };
    Ok(kpilot_engine::validate::validate(&source, registry)?)
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

/// The exit code for how a run ended.
fn exit_for(state: kpilot_engine::state::RunState) -> Exit {
    use kpilot_engine::state::RunState;
    match state {
        RunState::Succeeded => Exit::Passed,
        RunState::Failed => Exit::Failed,
        RunState::Blocked | RunState::Running => Exit::Blocked,
    }
}
