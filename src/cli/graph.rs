//! `kpilot graph FILE`: the step graph as DOT or Mermaid.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::load;
use crate::Exit;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum GraphFormat {
    /// Graphviz DOT.
    #[default]
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The workflow file.
    file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    format: GraphFormat,
}

pub fn graph(args: GraphArgs) -> anyhow::Result<Exit> {
    let (_, plan, _) = load(&args.file, &kpilot_tasks::registry())?;
    match args.format {
        GraphFormat::Dot => crate::out!("{}", plan.dag.to_dot(&plan.name))?,
        GraphFormat::Mermaid => crate::out!("{}", plan.dag.to_mermaid())?,
    }
    Ok(Exit::Passed)
}
