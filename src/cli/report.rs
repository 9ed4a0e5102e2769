//! `kpilot report RUN`: the report of a run, as text, JSON, HTML, JUnit or
//! Prometheus metrics; `kpilot report diff RUN_A RUN_B`: how two runs'
//! findings compare.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use kpilot_engine::RunId;
use kpilot_report::findings::compare;
use kpilot_report::render::{comparison, html, json, junit, prometheus, text};
use kpilot_report::Report;

use super::{StateArgs, Usage};
use crate::{render, Exit};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    /// The run's id (`kpilot inspect` and `kpilot run` print it; `kpilot runs` lists them).
    #[arg(required = true)]
    run: Option<String>,
    /// Output format (`-o`, as for every verb; its long name is `--format`
    /// because `--output` names the file).
    #[arg(short = 'o', long = "format", value_enum, default_value_t)]
    format: ReportFormat,
    /// Write the report to this file (whole or not at all) instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// How the findings of RUN_B compare with RUN_A's: new, resolved, persisting.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The earlier run.
    run_a: String,
    /// The later run.
    run_b: String,
    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t)]
    format: DiffFormat,
    /// Write the comparison to this file (whole or not at all) instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// The formats of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// The console an operator reads: per category, abnormal first.
    #[default]
    Text,
    /// The documented JSON (docs/reports.md).
    Json,
    /// One self-contained HTML page.
    Html,
    /// JUnit XML: a testsuite per category, a testcase per item.
    Junit,
    /// Prometheus text exposition, for node_exporter's textfile collector.
    Prometheus,
}

/// The formats of a comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum DiffFormat {
    #[default]
    Text,
    Json,
    Html,
}

/// Prints a report: JSON, or text coloured on a terminal (unless `NO_COLOR`).
pub fn print(report: &Report, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        crate::out!("{}", json::render(report))?;
    } else {
        crate::out!("{}", text::render(report, text::Style { colour: colour() }))?;
    }
    Ok(())
}

fn colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

fn load(run: &str, state: &StateArgs) -> anyhow::Result<Report> {
    let id = RunId::parse(run).map_err(Usage)?;
    let (snapshot, _) = render::load_snapshot(&state.state_dir()?, &id)?;
    Ok(Report::from_run(&snapshot.run, &snapshot.steps)
        .map_err(|e| Usage(format!("{e}; `kpilot status {id}` shows its steps")))?)
}

/// Writes `text` to `path` whole or not at all: into a temporary file next
/// to it, then renamed over it, so a reader (a textfile collector, a web
/// server) never sees half a report.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Usage(format!("--output {}: names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let bad = |e: std::io::Error, what: &Path| {
        Usage(format!(
            "--output {}: cannot write {}: {e}",
            path.display(),
            what.display()
        ))
    };
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| bad(e, &tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(bad(e, path).into());
    }
    Ok(())
}

/// Prints `text`, or writes it to `file` and says so on standard error.
fn emit(text: &str, file: Option<&Path>) -> anyhow::Result<()> {
    match file {
        Some(path) => {
            write_atomically(path, text)?;
            eprintln!("kpilot: wrote {}", path.display());
        }
        None => crate::out!("{text}")?,
    }
    Ok(())
}

pub fn report(args: ReportArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    if let Some(ReportCommand::Diff(diff)) = args.command {
        return report_diff(diff, state);
    }
    let Some(run) = args.run else {
        return Err(
            Usage("name a run: `kpilot report RUN`; `kpilot runs` lists them".into()).into(),
        );
    };
    let report = load(&run, state)?;
    let file = args.output.as_deref();
    let out = match args.format {
        ReportFormat::Text => text::render(
            &report,
            text::Style {
                colour: file.is_none() && colour(),
            },
        ),
        ReportFormat::Json => json::render(&report),
        ReportFormat::Html => html::render(&report),
        ReportFormat::Junit => junit::render(&report),
        ReportFormat::Prometheus => prometheus::render(&[(Vec::new(), &report)]),
    };
    emit(&out, file)?;
    Ok(exit_for(&report))
}

/// Exit 1 when RUN_B has a finding RUN_A had not, else 0: a script can stop
/// on what got worse, whatever was already known to be wrong.
fn report_diff(args: DiffArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let before = load(&args.run_a, state)?;
    let after = load(&args.run_b, state)?;
    let c = compare(&before, &after);
    let out = match args.format {
        DiffFormat::Text => comparison::text(&before, &after, &c),
        DiffFormat::Json => comparison::json(&before, &after, &c),
        DiffFormat::Html => html::comparison(&before, &after, &c),
    };
    emit(&out, args.output.as_deref())?;
    Ok(if c.new.is_empty() {
        Exit::Passed
    } else {
        Exit::Failed
    })
}
