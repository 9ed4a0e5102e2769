//! Standard output, for people and scripts alike: a reader that goes away
//! (`kpilot graph … | head -c1`) ends the output quietly and the verb still
//! exits with its own code; any other write error (a full disk) is kpilot's
//! own failure, reported once, exit 4.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output's reader has gone: nothing more is written.
static GONE: AtomicBool = AtomicBool::new(false);

/// Standard output could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct OutputError(#[source] pub std::io::Error);

fn settle(result: std::io::Result<()>) -> Result<(), OutputError> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other.map_err(OutputError),
    }
}

/// Writes formatted text (see [`out!`](crate::out) and [`outln!`](crate::outln)).
pub fn write_fmt(args: std::fmt::Arguments<'_>) -> Result<(), OutputError> {
    if GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    settle(std::io::stdout().lock().write_fmt(args))
}

/// Writes bytes as they are (a step's output).
pub fn write_all(bytes: &[u8]) -> Result<(), OutputError> {
    if GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    settle(std::io::stdout().lock().write_all(bytes))
}

/// Flushes what is buffered, so a write error is seen before kpilot exits.
pub fn flush() -> Result<(), OutputError> {
    if GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    settle(std::io::stdout().lock().flush())
}

/// `print!` that returns a [`OutputError`] instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_fmt(format_args!($($arg)*)) };
}

/// `println!` that returns a [`OutputError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
