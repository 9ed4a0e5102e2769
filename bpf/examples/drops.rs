//! Traces packet drops and prints them: live lines while tracing, then the aggregated table
//! (or the JSON report with `--json`).
//!
//! ```text
//! cargo run -p kpilot-bpf --example drops -- --duration 5s [--reason NETFILTER_DROP]
//!     [--netns INODE|/run/netns/NAME] [--addr IP] [--port N] [--json] [--no-stacks] [--quiet]
//! ```
//! Needs root.

use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Duration;

use kpilot_bpf::{DropFilter, TraceConfig, netns_inode, trace_drops_with};

const USAGE: &str = "usage: drops [--duration 5s] [--reason NAME] [--netns INODE|PATH] \
                     [--addr IP] [--port N] [--ring-bytes N] [--json] [--no-stacks] [--quiet]";

struct Args {
    config: TraceConfig,
    json: bool,
    stacks: bool,
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut config = TraceConfig::new(Duration::from_secs(5));
    let mut filter = DropFilter::default();
    let (mut json, mut stacks, mut quiet) = (false, true, false);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--duration" | "-d" => config.duration = parse_duration(&value()?)?,
            "--reason" => filter.reason = Some(value()?),
            "--netns" => {
                let v = value()?;
                filter.netns = Some(match v.parse() {
                    Ok(n) => n,
                    Err(_) => netns_inode(&v).map_err(|e| format!("--netns {v}: {e}"))?,
                });
            }
            "--addr" => {
                let v = value()?;
                filter.addr = Some(v.parse().map_err(|_| format!("bad address {v:?}"))?);
            }
            "--port" => {
                let v = value()?;
                filter.port = Some(v.parse().map_err(|_| format!("bad port {v:?}"))?);
            }
            "--ring-bytes" => {
                let v = value()?;
                config.ring_bytes = v.parse().map_err(|_| format!("bad size {v:?}"))?;
            }
            "--json" => json = true,
            "--no-stacks" => stacks = false,
            "--quiet" | "-q" => quiet = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    config.filter = filter;
    Ok(Args {
        config,
        json,
        stacks,
        quiet,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let live = !args.json && !args.quiet;
    let result = trace_drops_with(&args.config, |d| {
        if live {
            println!(
                "{} {:<20} {:<28} netns={} if={} {} {}{}",
                d.time.format("%H:%M:%S%.3f"),
                d.reason,
                d.location,
                d.netns,
                d.ifname.as_deref().unwrap_or("-"),
                d.protocol,
                kpilot_bpf::report::tuple(d.src, d.sport, d.dst, d.dport),
                d.tcp_flags
                    .as_deref()
                    .map(|f| format!(" [{f}]"))
                    .unwrap_or_default(),
            );
        }
        ControlFlow::Continue(())
    });
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.to_table(args.stacks));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
