//! The `command` driver: a program (never a shell) whose standard output,
//! one JSON document, becomes the query's data.
//!
//! It runs in the run's directory with the step's environment (`PARAM_*`,
//! `KPILOT_*`), once per run for the same argv; it must exit 0 within the
//! check's `timeout`.

use std::process::Stdio;
use std::time::Duration;

use kpilot_engine::TaskContext;
use serde_json::Value;

use super::DataError;

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
    let Some((program, args)) = argv.split_first() else {
        return Err(err("the command is empty".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&ctx.workdir)
        .envs(super::super::task::step_env(ctx))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot start `{program}`: {e}")))?;
    let output = match tokio::time::timeout(budget, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(err(format!("`{program}`: {e}"))),
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
            None => "was killed by a signal".to_owned(),
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
