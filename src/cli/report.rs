//! `kpilot report RUN`: the report of an inspection run, as text or JSON.

use clap::Args;
use kpilot_engine::RunId;
use kpilot_report::render::{json, text};
use kpilot_report::Report;

use super::{Format, StateArgs, Usage};
use crate::{render, Exit};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run's id (an inspection: `kpilot inspect` printed it).
    run: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

/// Prints a report: JSON, or text coloured on a terminal (unless `NO_COLOR`).
pub fn print(report: &Report, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        crate::out!("{}", json::render(report))?;
    } else {
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        crate::out!("{}", text::render(report, text::Style { colour }))?;
    }
    Ok(())
}

/// The exit code a report means: 1 when a check failed, else 3 when one
/// could not be checked, else 0.
pub fn exit_for(report: &Report) -> Exit {
    if report.has_failed() {
        Exit::Failed
    } else if report.has_error() {
        Exit::Blocked
    } else {
        Exit::Passed
    }
}

pub fn report(args: ReportArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let id = RunId::parse(&args.run).map_err(Usage)?;
    let (snapshot, _) = render::load_snapshot(&state.state_dir()?, &id)?;
    let report = Report::from_run(&snapshot.run, &snapshot.steps)
        .map_err(|e| Usage(format!("{e}; `kpilot status {id}` shows its steps")))?;
    print(&report, args.output == Format::Json)?;
    Ok(exit_for(&report))
}
