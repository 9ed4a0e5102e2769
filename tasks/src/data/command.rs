//! The `command` driver: a program (never a shell) whose standard output,
//! one JSON document, becomes the query's data.
//!
//! It runs in the run's directory with the step's environment (`PARAM_*`,
//! `KPILOT_*`), once per run for the same argv; it must exit 0 within the
//! check's `timeout`, and print at most [`MAX_OUTPUT`]. It is started like a
//! step's process (see [`crate::process`]): it dies with kpilot.

use std::time::Duration;

use kpilot_engine::task::OUTPUT_TAIL;
use kpilot_engine::TaskContext;
use serde_json::Value;

use super::DataError;
use crate::process::{self, Keep, ProcessSpec};

/// The most standard output a query command may print: its JSON is parsed
/// whole and kept with the run, so more is refused rather than held.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// How much of standard error a failure shows.
const STDERR_TAIL: usize = 2000;

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(STDERR_TAIL)
        .map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

/// Runs `argv` and parses what it prints.
pub(crate) async fn fetch(
    query: &str,
    argv: &[String],
    ctx: &TaskContext,
    budget: Duration,
) -> Result<Value, DataError> {
    let err = |message: String| DataError::Command {
        query: query.to_owned(),
        message,
    };
    let Some(program) = argv.first() else {
        return Err(err("the command is empty".into()));
    };
    let spec = ProcessSpec {
        argv: argv.to_vec(),
        env: super::super::task::step_env(ctx),
        workdir: ctx.workdir.clone(),
    };
    let run = process::execute(&spec, Keep::Whole(MAX_OUTPUT), Keep::Tail(OUTPUT_TAIL));
    let output = match tokio::time::timeout(budget, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(err(e.to_string())),
        Err(_) => {
            return Err(err(format!(
                "`{program}` did not finish within {:.1}s (the check's timeout)",
                budget.as_secs_f64()
            )))
        }
    };
    if !output.status.success() {
        let how = match output.status.code() {
            Some(code) => format!("exited with {code}"),
            None => format!("was killed by {}", process::signal_of(&output.status)),
        };
        let stderr = tail(&output.stderr);
        return Err(err(if stderr.is_empty() {
            format!("`{program}` {how}")
        } else {
            format!("`{program}` {how}: {stderr}")
        }));
    }
    serde_json::from_slice(&output.stdout).map_err(|source| DataError::NotJson {
        query: query.to_owned(),
        source,
    })
}
