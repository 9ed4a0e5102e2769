//! `kpilot trace drops`: packet drops on this machine, live, then the report.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use kpilot_bpf::{DropFilter, DropReport, TraceConfig};
use kpilot_tasks::task::trace::{group_line, lost_note, LiveTrace, NetnsSpec, TraceTaskError};

use super::{Format, Usage};
use crate::Exit;

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Debug, Subcommand)]
enum TraceCommand {
    /// Trace the packets the kernel drops (eBPF on skb:kfree_skb): reason, function,
    /// kernel stack, namespace, interface and 5-tuple. Needs root.
    Drops(DropsArgs),
}

#[derive(Debug, Args)]
struct DropsArgs {
    /// How long to trace (Ctrl-C ends it early and still prints the report).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Only drops in this network namespace: /run/netns/NAME, /proc/PID/ns/net or an inode.
    #[arg(long, value_parser = NetnsSpec::parse)]
    netns: Option<NetnsSpec>,
    /// Only packets from or to this address.
    #[arg(long)]
    addr: Option<IpAddr>,
    /// Only packets from or to this port (TCP, UDP, UDP-Lite, SCTP).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Only this drop reason, as the kernel names it (NETFILTER_DROP, NO_SOCKET, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Do not record kernel stacks (cheaper under a flood; the location is still shown).
    #[arg(long)]
    no_stacks: bool,
    /// Output format: a live table and the report, or the report as JSON.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = kpilot_engine::duration::parse_duration(text)?;
    if d.is_zero() {
        return Err("the duration must be more than 0s".into());
    }
    Ok(d)
}

/// How often the live view refreshes on a terminal, and prints a line when piped.
const TERMINAL_EVERY: Duration = Duration::from_millis(500);
const PIPED_EVERY: Duration = Duration::from_secs(1);
/// Groups shown in the live table.
const LIVE_ROWS: usize = 15;

pub async fn trace(args: TraceArgs) -> anyhow::Result<Exit> {
    match args.command {
        TraceCommand::Drops(args) => drops(args).await,
    }
}

async fn drops(args: DropsArgs) -> anyhow::Result<Exit> {
    let netns = match &args.netns {
        Some(spec) => Some(spec.inode().map_err(|e| Usage(format!("--netns: {e}")))?),
        None => None,
    };
    let stacks = !args.no_stacks;
    let config = TraceConfig {
        duration: args.duration,
        filter: DropFilter {
            netns,
            addr: args.addr,
            port: args.port,
            reason: args.reason.clone(),
        },
        ring_bytes: kpilot_bpf::DEFAULT_RING_BYTES,
        stacks,
    };
    let terminal = std::io::stdout().is_terminal();
    let view = match (args.output, terminal) {
        (Format::Json, _) => View::Quiet,
        (Format::Text, true) => View::Table,
        (Format::Text, false) => View::Lines,
    };
    let every = match view {
        View::Quiet => None,
        View::Table => Some(TERMINAL_EVERY),
        View::Lines => Some(PIPED_EVERY),
    };
    let mut live = LiveTrace::start(config, every);
    let mut interrupted = false;
    loop {
        tokio::select! {
            snapshot = live.snapshot() => match snapshot {
                Some(report) => view.show(&report, args.duration),
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                live.stop();
            }
        }
    }
    let report = live.finish().await.map_err(unavailable)?;
    match args.output {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?)?,
        Format::Text => {
            if view == View::Table {
                // Leave the last live frame for the final table.
                crate::out!("\x1b[H\x1b[2J")?;
            }
            crate::out!("{}", report.to_table(stacks))?;
            if let Some(note) = lost_note(&report) {
                eprintln!("kpilot: warning: {note}");
            }
        }
    }
    Ok(Exit::Passed)
}

/// Errors that come from this machine or the request are bad input (exit 2); a failure
/// while tracing is kpilot's own (exit 4).
fn unavailable(e: TraceTaskError) -> anyhow::Error {
    if e.is_unavailable() || e.is_bad_request() {
        Usage(format!("cannot trace packet drops: {}", e.explain())).into()
    } else {
        anyhow::Error::new(e).context("tracing packet drops")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// JSON at the end only.
    Quiet,
    /// A table redrawn in place.
    Table,
    /// One line per period, for a pipe.
    Lines,
}

impl View {
    fn show(self, report: &DropReport, duration: Duration) {
        let text = match self {
            View::Quiet => return,
            View::Table => live_table(report, duration),
            View::Lines => {
                let mut line = summary(report);
                if let Some(top) = report.drops.first() {
                    let _ = write!(line, "; top: {}", group_line(top));
                }
                line.push('\n');
                line
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

fn summary(report: &DropReport) -> String {
    format!(
        "[{:.1}s] {} drops matched, {} received, {} lost, {} groups",
        report.duration.as_secs_f64(),
        report.total,
        report.received,
        report.lost,
        report.drops.len()
    )
}

fn live_table(report: &DropReport, duration: Duration) -> String {
    let mut out = String::from("\x1b[H\x1b[2J");
    let _ = writeln!(
        out,
        "kpilot trace drops on {}: {} of {:.1}s (Ctrl-C to stop)",
        report.kernel.release,
        summary(report),
        duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:>7}  {:<22} {:<28} {:<12} {:<10} {:<7} SRC -> DST",
        "COUNT", "REASON", "LOCATION", "NETNS", "IFACE", "PROTO"
    );
    for g in report.drops.iter().take(LIVE_ROWS) {
        let _ = writeln!(
            out,
            "{:>7}  {:<22} {:<28} {:<12} {:<10} {:<7} {}",
            g.count,
            g.reason,
            g.location,
            g.netns,
            g.ifname.as_deref().unwrap_or("-"),
            g.protocol,
            kpilot_bpf::report::tuple(g.src, g.sport, g.dst, g.dport),
        );
    }
    if report.drops.len() > LIVE_ROWS {
        let _ = writeln!(
            out,
            "    ... {} more groups",
            report.drops.len() - LIVE_ROWS
        );
    }
    out
}
