//! `kpilot plan upgrade`: the hops of an upgrade, what each removes and
//! needs, and (`-o yaml`) the multi-hop workflow.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use kpilot_catalog::upgrade::{workflow, WorkflowInputs};
use kpilot_catalog::Catalog;
use kpilot_tasks::upgrade::{plan, UpgradePlan, UpgradePlanError};

use super::inspect::Unreadable;
use super::{ClusterArgs, Usage};
use crate::Exit;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(subcommand)]
    what: PlanCommand,
}

#[derive(Debug, Subcommand)]
enum PlanCommand {
    /// The hops from the cluster's version (or --from) to --to, one minor version each.
    Upgrade(UpgradeArgs),
}

/// How `plan upgrade` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table of the hops for people.
    #[default]
    Text,
    /// The plan as JSON.
    Json,
    /// The multi-hop workflow, to run with `kpilot run`.
    Yaml,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The target: a minor (1.16) or a patch (1.16.3, where the last hop ends).
    #[arg(long, value_name = "VERSION")]
    to: String,
    /// Where the upgrade starts [default: the cluster's version, read with --kubeconfig/--context].
    #[arg(long, value_name = "VERSION", conflicts_with_all = ["kubeconfig", "context"])]
    from: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: PlanFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How long reading the cluster's version may retry.
const VERSION_BUDGET: Duration = Duration::from_secs(15);

pub async fn run(args: PlanArgs) -> anyhow::Result<Exit> {
    match args.what {
        PlanCommand::Upgrade(args) => upgrade(args).await,
    }
}

async fn upgrade(args: UpgradeArgs) -> anyhow::Result<Exit> {
    let (from, from_flag, server) = match &args.from {
        Some(from) => (from.clone(), "--from", String::new()),
        None => {
            let cluster = kpilot_tasks::data::Cluster::new(args.cluster.config());
            let (server, version) = cluster.identity(VERSION_BUDGET).await.map_err(|e| {
                Unreadable(format!(
                    "cannot read the cluster's version, where the upgrade starts: {e}; or give it with --from VERSION"
                ))
            })?;
            (version, "the cluster's version", server)
        }
    };
    let planned = plan(&from, from_flag, &args.to).map_err(|e| match e {
        e if e.is_input() => anyhow::Error::new(Usage(e.to_string())),
        UpgradePlanError::Plan(e) => e.into(),
        UpgradePlanError::Table(e) => e.into(),
    })?;
    let command = yaml_command(&args, &planned);
    match args.output {
        PlanFormat::Yaml => {
            let catalog =
                Catalog::shipped().map_err(|e| Usage(format!("the shipped catalog: {e}")))?;
            let inputs = WorkflowInputs {
                server,
                command: command.split(" > ").next().unwrap_or_default().to_owned(),
            };
            crate::out!("{}", workflow(&catalog, &planned.hops(), &inputs)?)?;
        }
        PlanFormat::Json => {
            let mut json = serde_json::to_value(&planned)?;
            json["workflowCommand"] = serde_json::Value::String(command);
            crate::outln!("{}", serde_json::to_string_pretty(&json)?)?;
        }
        PlanFormat::Text => print_text(&planned, &command)?,
    }
    Ok(Exit::Passed)
}

/// The command that writes the workflow of this plan to a file, with the
/// flags that name the same start.
fn yaml_command(args: &UpgradeArgs, planned: &UpgradePlan) -> String {
    let mut flags = String::new();
    match &args.from {
        Some(from) => flags.push_str(&format!(" --from {from}")),
        None => {
            if let Some(k) = &args.cluster.kubeconfig {
                let k = std::path::absolute(k).unwrap_or_else(|_| k.clone());
                flags.push_str(&format!(" --kubeconfig {}", k.display()));
            }
            if let Some(c) = &args.cluster.context {
                flags.push_str(&format!(" --context {c}"));
            }
        }
    }
    format!(
        "kpilot plan upgrade{flags} --to {} -o yaml > upgrade-{}-to-{}.yaml",
        args.to, planned.from, planned.to
    )
}

fn print_text(planned: &UpgradePlan, command: &str) -> anyhow::Result<()> {
    let n = planned.hops.len();
    crate::outln!(
        "Upgrade from {} to {}: {n} hop{} of one minor version",
        planned.from,
        planned.to,
        if n == 1 { "" } else { "s" }
    )?;
    crate::outln!("")?;
    let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    let rows: Vec<[String; 7]> = planned
        .hops
        .iter()
        .enumerate()
        .map(|(i, h)| {
            [
                (i + 1).to_string(),
                h.from.clone(),
                h.to.clone(),
                unknown(&h.addons.coredns),
                unknown(&h.addons.etcd),
                unknown(&h.addons.pause),
                h.removed_apis.len().to_string(),
            ]
        })
        .collect();
    let header = [
        "HOP",
        "FROM",
        "TO",
        "COREDNS",
        "ETCD",
        "PAUSE",
        "REMOVED APIS",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    crate::outln!("{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        crate::outln!("{}", line(&cells))?;
    }
    for h in planned.hops.iter().filter(|h| !h.removed_apis.is_empty()) {
        crate::outln!("")?;
        crate::outln!(
            "Removed in {}: move these objects to their replacement before the hop {} -> {}",
            h.to,
            h.from,
            h.to
        )?;
        let width = h
            .removed_apis
            .iter()
            .map(|r| r.api_version.len() + 1 + r.kind.len())
            .max()
            .unwrap_or(0);
        for r in &h.removed_apis {
            let what = format!("{} {}", r.api_version, r.kind);
            let what = what.trim_end();
            match &r.replacement {
                Some(to) => crate::outln!("  {what:<width$}  -> {to}")?,
                None => crate::outln!("  {what:<width$}  -> no replacement")?,
            }
        }
    }
    crate::outln!("")?;
    crate::outln!(
        "The workflow of these hops (catalog pre-checks, a gate, a snapshot, the control plane, the nodes one at a time, post-checks):"
    )?;
    crate::outln!("  {command}")?;
    Ok(())
}
