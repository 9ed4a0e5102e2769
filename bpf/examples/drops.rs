//! Traces packet drops and prints them: live lines while tracing, then the aggregated table
//! (or the JSON report with `--json`).
//!
//! ```text
//! cargo run -p kpilot-bpf --example drops -- --duration 5s [--reason NETFILTER_DROP]
//!     [--netns INODE|/run/netns/NAME] [--addr IP] [--port N] [--json] [--no-stacks] [--quiet]
//! ```
//! Needs root. Ctrl-C (SIGINT) or SIGTERM ends the trace early and still prints the report.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kpilot_bpf::{DropFilter, DropTracer, PacketDrop, TraceConfig, netns_inode};

const USAGE: &str = "usage: drops [--duration 5s] [--reason NAME] [--netns INODE|PATH] \
                     [--addr IP] [--port N] [--ring-bytes N] [--json] [--no-stacks] [--no-kernel-stacks] [--quiet]";

/// Set by SIGINT/SIGTERM: stop tracing and print what was seen.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

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
            "--no-kernel-stacks" => config.stacks = false,
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
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let live = !args.json && !args.quiet;
    let print = |d: &PacketDrop| {
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
    };
    // DropTracer rather than trace_drops_with, to say on stderr when the probe is live
    // (scripts/bench-trace waits for that line).
    let result = DropTracer::start(&args.config).and_then(|mut tracer| {
        eprintln!(
            "tracing drops for {:.1}s on kernel {}",
            args.config.duration.as_secs_f64(),
            tracer.kernel().release
        );
        let end = Instant::now() + args.config.duration;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || STOP.load(Ordering::Relaxed) {
                break;
            }
            tracer.poll(left.min(Duration::from_millis(100)), print)?;
        }
        tracer.stop(print)
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
