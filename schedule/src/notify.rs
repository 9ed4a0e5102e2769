//! Notifications: after a patrol, what is new and what was resolved since
//! the previous patrol of the same schedule, given to a command on stdin
//! and POSTed to a webhook, with retries; a notifier that keeps failing is
//! logged and counted, and never fails the patrol.

use std::time::Duration;

use kpilot_report::findings::{Comparison, Finding};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use crate::file::Notify;

/// What a notifier receives (docs/patrol.md).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The patrol's name.
    pub patrol: String,
    /// The schedule's name.
    pub schedule: String,
    /// The run of this patrol.
    pub run: String,
    /// The run it was compared with; `null` for a schedule's first patrol,
    /// whose findings are all new.
    pub previous_run: Option<String>,
    /// The slot, RFC 3339.
    pub slot: String,
    /// Found now, not before.
    pub new: Vec<Finding>,
    /// Found before, not now.
    pub resolved: Vec<Finding>,
    /// Found both times.
    pub persisting: Vec<Finding>,
}

impl Notification {
    /// The notification of `comparison`.
    pub fn new(
        patrol: &str,
        schedule: &str,
        run: &str,
        previous_run: Option<&str>,
        slot: chrono::DateTime<chrono::Utc>,
        comparison: Comparison,
    ) -> Self {
        Notification {
            patrol: patrol.to_owned(),
            schedule: schedule.to_owned(),
            run: run.to_owned(),
            previous_run: previous_run.map(str::to_owned),
            slot: slot.to_rfc3339(),
            new: comparison.new,
            resolved: comparison.resolved,
            persisting: comparison.persisting,
        }
    }
}

/// How long one call of a notifier may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait before a retry; it doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Calls every notifier, each with its retries; returns one line per
/// notifier that still failed after them.
pub async fn send(notify: &Notify, notification: &Notification) -> Vec<String> {
    let body = match serde_json::to_vec(notification) {
        Ok(b) => b,
        Err(e) => return vec![format!("the notification does not serialize: {e}")],
    };
    let mut failures = Vec::new();
    if !notify.command.is_empty() {
        if let Err(e) = retrying(notify.retries, "notify.command", || command(notify, &body)).await
        {
            failures.push(format!("notify.command {:?}: {e}", notify.command));
        }
    }
    if let Some(url) = &notify.webhook {
        if let Err(e) = retrying(notify.retries, "notify.webhook", || webhook(url, &body)).await {
            failures.push(format!("notify.webhook {url}: {e}"));
        }
    }
    failures
}

async fn retrying<F, Fut>(retries: u32, what: &str, mut call: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut wait = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, call()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if attempt >= retries => return Err(e),
            Err(_) if attempt >= retries => {
                return Err(format!("no answer within {}s", CALL_TIMEOUT.as_secs()))
            }
            Ok(Err(e)) => tracing::warn!(attempt, error = %e, "{what} failed; trying again"),
            Err(_) => tracing::warn!(attempt, "{what} timed out; trying again"),
        }
        attempt += 1;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

async fn command(notify: &Notify, body: &[u8]) -> Result<(), String> {
    let program = std::path::Path::new(&notify.command[0]);
    // `./notify.sh` is relative to the Patrol file, as its other paths.
    let program = if program.is_relative() && program.components().count() > 1 {
        notify.dir.join(program)
    } else {
        program.to_owned()
    };
    let mut child = tokio::process::Command::new(&program)
        .args(&notify.command[1..])
        .current_dir(&notify.dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is not a failure by itself.
        let _ = stdin.write_all(body).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for it: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{} ({})", output.status, stderr.trim()))
    }
}

async fn webhook(url: &str, body: &[u8]) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}
