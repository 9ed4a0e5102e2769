//! `wait`: polls a query until a CEL expectation holds, with backoff.
//!
//! ```yaml
//! wait:
//!   query: cluster.nodes            # any check query, path forms too
//!   expect: "data.all(n, n.ready && n.kubeletVersion.startsWith('v1.35.'))"
//!   forEach: false                  # as check: `expect` per element as `item`, all must hold
//!   interval: 2s                    # first pause between polls; doubled up to maxInterval
//!   maxInterval: 30s
//!   timeout: 10m                    # how long to poll before failing with the last data
//!   snapshots: [before]             # snapshot steps the expression reads as snapshots['before']
//! ```
//!
//! Every poll reads the cluster afresh: a wait is about what changes, so it
//! never reads (or keeps) the run's facts. An API server that does not
//! answer (it is being restarted by the upgrade the wait follows) is polled
//! again; any other error of the query fails the wait at once. An
//! expectation that cannot be evaluated on the data of a poll (a node that
//! does not report its version yet) counts as not holding, and is named in
//! the reason if the wait times out.
//!
//! The wait ends itself at its own `timeout`, so it can say what it saw
//! last; the step's `timeout`, when set, must be longer, or the engine ends
//! the step first, without the last data.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};
use serde_json::{json, Value};

use super::check::parse_duration;
use super::expect::{Expectation, Summary};
use crate::data::{Cluster, DataError, Query};

/// How long a wait polls unless its `timeout` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest `timeout` a wait may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The first pause between polls unless `interval` says.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// The longest pause between polls unless `maxInterval` says.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// How long one poll's request may retry an API server that does not answer.
const POLL_BUDGET: Duration = Duration::from_secs(15);

/// The most of the last data kept in the step's output, serialized.
const OUTPUT_DATA: usize = 32 * 1024;

/// The most of the last data quoted in a failure's reason.
const REASON_DATA: usize = 1500;

/// The `wait` kind; its cluster queries go through the run's [`Cluster`].
#[derive(Debug, Clone)]
pub struct WaitKind {
    cluster: Arc<Cluster>,
}

impl WaitKind {
    /// Waits whose cluster queries use `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        WaitKind { cluster }
    }
}

/// A parsed `wait` body.
#[derive(Debug)]
pub struct Wait {
    cluster: Arc<Cluster>,
    expectation: Expectation,
    interval: Duration,
    max_interval: Duration,
    timeout: Duration,
}

const HINT: &str = "write `wait: {query: cluster.nodes, expect: \"data.all(n, n.ready)\", interval: 2s, maxInterval: 30s, timeout: 10m}`";

const KEYS: [&str; 9] = [
    "query",
    "expect",
    "forEach",
    "minItems",
    "interval",
    "maxInterval",
    "timeout",
    "params",
    "snapshots",
];

impl TaskKind for WaitKind {
    fn name(&self) -> &'static str {
        "wait"
    }

    fn idempotent_by_default(&self) -> bool {
        true
    }

    fn runs_in_kpilot(&self) -> bool {
        true
    }

    fn parse(
        &self,
        body: &serde_yaml::Value,
        ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String> {
        let map = super::body_mapping(body, "wait", &KEYS, HINT)?;
        let expectation = Expectation::parse(map, "wait", HINT, &["node"], ctx)?;
        if matches!(expectation.query, Query::Node { .. }) {
            return Err(
                "`wait.query` reads node.*, which a node's agent answers, and a wait runs in kpilot; wait on cluster data (like `query: cluster.nodes`), or use a check with `retry` on a per-node executor"
                    .into(),
            );
        }
        let interval = parse_duration(
            map.get("interval"),
            "wait.interval",
            DEFAULT_INTERVAL,
            Duration::from_millis(100),
            Duration::from_secs(3600),
            "interval: 2s",
        )?;
        let max_interval = parse_duration(
            map.get("maxInterval"),
            "wait.maxInterval",
            DEFAULT_MAX_INTERVAL.max(interval),
            Duration::from_millis(100),
            Duration::from_secs(3600),
            "maxInterval: 30s",
        )?;
        if max_interval < interval {
            return Err(format!(
                "`wait.maxInterval` ({}) is shorter than `wait.interval` ({}); the pause only grows, so write a maxInterval at least as long",
                humantime::format_duration(max_interval),
                humantime::format_duration(interval)
            ));
        }
        let timeout = parse_duration(
            map.get("timeout"),
            "wait.timeout",
            DEFAULT_TIMEOUT,
            Duration::from_secs(1),
            MAX_TIMEOUT,
            "timeout: 5m",
        )?;
        Ok(Arc::new(Wait {
            cluster: Arc::clone(&self.cluster),
            expectation,
            interval,
            max_interval,
            timeout,
        }))
    }
}

/// `data` as the step's output keeps it: whole when small, else the first
/// elements of a list (or a prefix of its JSON) and a note of what was left.
fn bounded(data: &Value) -> (Value, Option<String>) {
    let text = data.to_string();
    if text.len() <= OUTPUT_DATA {
        return (data.clone(), None);
    }
    if let Value::Array(items) = data {
        let mut kept = Vec::new();
        let mut size = 2;
        for item in items {
            size += item.to_string().len() + 1;
            if size > OUTPUT_DATA {
                break;
            }
            kept.push(item.clone());
        }
        let note = format!(
            "the first {} of {} items ({} bytes of JSON in all)",
            kept.len(),
            items.len(),
            text.len()
        );
        return (Value::Array(kept), Some(note));
    }
    (
        Value::String(prefix(&text, OUTPUT_DATA)),
        Some(format!("the first {OUTPUT_DATA} of {} bytes", text.len())),
    )
}

/// At most `n` bytes of `text`, cut at a character boundary, with `...`.
fn prefix(text: &str, n: usize) -> String {
    if text.len() <= n {
        return text.to_owned();
    }
    let mut end = n;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What one poll saw.
enum Poll {
    /// The expectation held.
    Held,
    /// It did not, and why.
    NotYet(String),
}

#[async_trait]
impl Task for Wait {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let exp = &self.expectation;
        let overlaid = exp.overlay(ctx);
        let ctx = overlaid.as_ref().unwrap_or(ctx);
        let what = exp.query.key(ctx);
        let expect = exp.expect.source();
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut stdout = String::new();
        let failed = |stdout: String, reason: String, extra: Value| {
            let mut output = json!({"query": what, "expect": expect, "held": false});
            if let (Value::Object(o), Value::Object(e)) = (&mut output, extra) {
                o.extend(e);
            }
            TaskOutput {
                failure: Some(reason),
                stdout: stdout.into_bytes(),
                output: Some(output),
                ..TaskOutput::default()
            }
        };
        let bindings = match exp.bindings(ctx).await {
            Ok(b) => b,
            Err(reason) => {
                let _ = writeln!(stdout, "{reason}");
                return failed(stdout, reason, json!({"polls": 0}));
            }
        };
        let params = json!(*ctx.params);
        let mut pause = self.interval;
        let mut polls: u64 = 0;
        let mut last: Option<Value> = None;
        let mut said: String;
        loop {
            polls += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = POLL_BUDGET.min(left).max(Duration::from_millis(200));
            // Fresh every time: never the run's facts (see the module's doc).
            let poll = match exp.query.fetch(&self.cluster, ctx, budget).await {
                Err(e @ DataError::Unreachable { .. }) => Poll::NotYet(e.to_string()),
                Err(e) => {
                    let reason = format!("the wait could not read its data: {e}");
                    let _ = writeln!(stdout, "poll {polls}: {reason}");
                    return failed(
                        stdout,
                        reason,
                        json!({"polls": polls, "error": e.to_string()}),
                    );
                }
                // What the expression judges (the path's part of the data,
                // when the query has a path) is what the output shows.
                Ok(data) => match exp.select(&data, &what) {
                    Ok((selected, name)) => {
                        let judged = exp
                            .evaluate(selected, &params, &bindings, &name)
                            .map(|verdict| exp.summary(&verdict, &name));
                        last = Some(selected.clone());
                        match judged {
                            Ok(Summary::Passed(_)) => Poll::Held,
                            Ok(Summary::Failed(m) | Summary::Unevaluable(m)) | Err(m) => {
                                Poll::NotYet(m)
                            }
                        }
                    }
                    Err(m) => {
                        last = Some(data);
                        Poll::NotYet(m)
                    }
                },
            };
            match poll {
                Poll::Held => {
                    let _ = writeln!(
                        stdout,
                        "poll {polls}: `{expect}` holds ({:.1}s)",
                        started.elapsed().as_secs_f64()
                    );
                    let (data, note) = bounded(last.as_ref().unwrap_or(&Value::Null));
                    let mut output = json!({
                        "polls": polls,
                        "held": true,
                        "query": what,
                        "expect": expect,
                        "data": data,
                    });
                    if let Some(note) = note {
                        output["dataTruncated"] = json!(note);
                    }
                    return TaskOutput {
                        stdout: stdout.into_bytes(),
                        output: Some(output),
                        ..TaskOutput::default()
                    };
                }
                Poll::NotYet(why) => {
                    let _ = writeln!(stdout, "poll {polls}: not yet: {}", prefix(&why, 500));
                    said = why;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(self.max_interval);
        }
        let seen = match &last {
            Some(data) => prefix(&data.to_string(), REASON_DATA),
            None => "nothing (no poll was answered)".to_owned(),
        };
        // Without a message of its own, a false expectation says only that.
        let what_said = if said == format!("`{expect}` is false") {
            String::new()
        } else {
            format!(": {said}")
        };
        let reason = format!(
            "timeout after {}: `{expect}` did not hold after {polls} poll(s){what_said}; last seen: {seen}",
            humantime::format_duration(self.timeout)
        );
        let _ = writeln!(stdout, "{reason}");
        let (data, note) = bounded(last.as_ref().unwrap_or(&Value::Null));
        let mut extra = json!({"polls": polls, "data": data, "said": said});
        if let Some(note) = note {
            extra["dataTruncated"] = json!(note);
        }
        failed(stdout, reason, extra)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kpilot_engine::store::Facts;
    use kpilot_engine::{InstanceId, RunId, StepId};

    use super::*;
    use crate::data::ClusterConfig;

    fn parse(yaml: &str) -> Result<Arc<dyn Task>, String> {
        let body: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        WaitKind::new(Arc::new(Cluster::new(ClusterConfig::default()))).parse(
            &body,
            &ParseContext {
                step_id: "w",
                params: &[],
            },
        )
    }

    fn ctx(dir: &std::path::Path, instance: InstanceId) -> TaskContext {
        let run = RunId::parse("r1").expect("run id");
        TaskContext {
            run_id: run.clone(),
            step_id: StepId::parse("w").expect("step id"),
            instance,
            attempt: 1,
            params: Arc::new(BTreeMap::new()),
            workdir: dir.to_owned(),
            facts: Facts::in_memory(run.clone()),
            ledger: kpilot_engine::store::Ledger::in_memory(run),
            retried: false,
        }
    }

    #[test]
    fn bad_bodies_are_rejected() {
        for (bad, says) in [
            ("{query: cluster.nodes}", "wait.expect"),
            (
                "{query: cluster.nodes, expect: 'true', interval: soon}",
                "wait.interval",
            ),
            (
                "{query: cluster.nodes, expect: 'true', interval: 0s}",
                "wait.interval",
            ),
            (
                "{query: cluster.nodes, expect: 'true', interval: 10s, maxInterval: 1s}",
                "maxInterval",
            ),
            (
                "{query: cluster.nodes, expect: 'true', timeout: 100d}",
                "wait.timeout",
            ),
            (
                "{query: cluster.nodes, expect: 'true', every: 1s}",
                "unknown key `every`",
            ),
            (
                "{query: cluster.nodes, expect: 'true', snapshots: ['Not An Id']}",
                "wait.snapshots",
            ),
            (
                "{query: cluster.nodes, expect: 'true', snapshots: before}",
                "wait.snapshots",
            ),
            (
                "{query: cluster.nodes, expect: \"snapshots['b'].nodes.ready > 0\"}",
                "wait.snapshots: [STEP_ID]",
            ),
            ("{query: node.sysctl, expect: 'true'}", "node.*"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(parse("{query: cluster.nodes, expect: \"data.exists(n, n.name == node)\", snapshots: [before]}").is_ok());
    }

    #[tokio::test]
    async fn polls_until_the_data_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = dir.path().join("n");
        // Counts its calls; holds from the third.
        let script = format!(
            "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo \"{{\\\"n\\\": $n}}\"",
            counter.display()
        );
        let task = parse(&format!(
            "{{query: {{command: [sh, -c, '{script}']}}, expect: 'data.n >= 3', interval: 100ms, maxInterval: 200ms, timeout: 30s}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path(), InstanceId::global())).await;
        assert_eq!(
            out.failure,
            None,
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let output = out.output.expect("output");
        assert_eq!(output["polls"], 3);
        assert_eq!(output["held"], true);
        assert_eq!(output["data"], json!({"n": 3}));
    }

    #[tokio::test]
    async fn a_timeout_names_the_expression_and_the_last_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = parse(
            "{query: {command: [echo, '{\"phase\": \"Pending\"}']}, expect: \"data.phase == 'Running'\", interval: 100ms, timeout: 1s}",
        )
        .expect("parses");
        let out = task.run(&ctx(dir.path(), InstanceId::global())).await;
        let reason = out.failure.expect("fails");
        assert!(
            reason.starts_with("timeout after 1s: `data.phase == 'Running'` did not hold")
                && reason.contains(r#"last seen: {"phase":"Pending"}"#),
            "{reason}"
        );
        let output = out.output.expect("output");
        assert_eq!(output["held"], false);
        assert!(output["polls"].as_u64().unwrap_or(0) > 1, "{output}");
    }

    #[tokio::test]
    async fn node_is_the_instance_and_needs_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = parse(
            "{query: {command: [echo, '[{\"name\": \"n1\", \"ready\": true}]']}, expect: 'data.exists(n, n.name == node && n.ready)', timeout: 1s}",
        )
        .expect("parses");
        let out = task.run(&ctx(dir.path(), InstanceId::named("n1"))).await;
        assert_eq!(out.failure, None);
        let out = task.run(&ctx(dir.path(), InstanceId::global())).await;
        assert!(out.failure.expect("fails").contains("per-node"));
    }

    #[tokio::test]
    async fn a_missing_snapshot_names_its_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = parse(
            "{query: {command: [echo, '1']}, expect: \"data >= snapshots['before'].nodes.ready\", snapshots: [before]}",
        )
        .expect("parses");
        let out = task.run(&ctx(dir.path(), InstanceId::global())).await;
        let reason = out.failure.expect("fails");
        assert!(
            reason.contains("snapshot `before` is not in this run") && reason.contains("needs"),
            "{reason}"
        );
    }
}
