//! The `kpilot` command: parses arguments, runs the verb, prints, and maps
//! the result to an exit code in one place.

mod cli;
mod output;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser as _;

/// What a verb ended with, as the exit code a script can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything passed.
    Passed = 0,
    /// 1: a step or check failed.
    Failed = 1,
    /// 2: bad input or usage.
    BadInput = 2,
    /// 3: the run is blocked and waits on a person.
    Blocked = 3,
    /// 4: kpilot itself failed (state store, I/O).
    Internal = 4,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(kpilot_tasks::process::GUARDIAN_ARG))
    {
        kpilot_tasks::process::guardian_main();
    }
    let args = cli::Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kpilot: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Internal as u8);
        }
    };
    let result = runtime
        .block_on(cli::dispatch(args))
        .and_then(|exit| output::flush().map(|()| exit).map_err(Into::into));
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            let exit = cli::classify(&e);
            match cli::hint(&e) {
                Some(hint) => eprintln!("kpilot: {e:#}; {hint}"),
                None => eprintln!("kpilot: {e:#}"),
            }
            exit
        }
    };
    ExitCode::from(exit as u8)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // sled's own log lines say nothing a person can act on; kpilot reports a
    // damaged run itself, once. A patrol daemon's log says what each slot
    // did (info).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,sled=off,kube_client=off,kpilot_schedule=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // No colour codes in logs written to a file or a journal (an agent's).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
