//! `check`: a query, a CEL expectation over its data, a severity and a message.
//!
//! ```yaml
//! check:
//!   query: cluster.nodes          # see crate::data for every form
//!   forEach: true                 # evaluate `expect` per element, as `item`
//!   expect: item.ready
//!   severity: error               # error | warning | info
//!   message: "{{item.name}} is not Ready"
//!   timeout: 15s                  # how long the query may retry
//!   snapshots: [before]           # snapshot steps the expression reads as snapshots['before']
//! ```
//!
//! A failed check of severity `error` fails the step; `warning` and `info`
//! record their outcome and let the step succeed. A query that gives no data
//! or an expectation that cannot be evaluated fails the step whatever the
//! severity: a check never passes on data it did not see.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};
use serde_json::{json, Value};

use super::expect::{Expectation, Miss, Summary};
use crate::data::Cluster;

/// How long a query retries an unreachable cluster unless `timeout` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest `timeout` a check may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How bad a failed check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Fails the step, so a gate after it stays closed.
    Error,
    /// Recorded as `warning`; the step succeeds.
    Warning,
    /// Recorded as `info`; the step succeeds.
    Info,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// The outcome of a check of this severity that did not hold.
    fn outcome(self) -> &'static str {
        match self {
            Severity::Error => "failed",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// The `check` kind; its cluster queries go through one lazily connected
/// [`Cluster`].
#[derive(Debug, Clone)]
pub struct CheckKind {
    cluster: Arc<Cluster>,
}

impl CheckKind {
    /// Checks whose cluster queries use `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        CheckKind { cluster }
    }
}

/// A parsed `check` body.
#[derive(Debug)]
pub struct Check {
    cluster: Arc<Cluster>,
    expectation: Expectation,
    severity: Severity,
    timeout: Duration,
}

const HINT: &str = "write `check: {query: cluster.nodes, forEach: true, expect: item.ready, severity: error, message: \"{{item.name}} is not Ready\"}`";

const KEYS: [&str; 9] = [
    "query",
    "expect",
    "severity",
    "message",
    "forEach",
    "minItems",
    "timeout",
    "params",
    "snapshots",
];

/// Parses a `timeout` of body `at`: a duration from 1s to `max`.
pub(crate) fn parse_duration(
    value: Option<&serde_yaml::Value>,
    field: &str,
    default: Duration,
    min: Duration,
    max: Duration,
    example: &str,
) -> Result<Duration, String> {
    let fmt = |d: Duration| humantime::format_duration(d).to_string();
    match value {
        None => Ok(default),
        Some(serde_yaml::Value::String(s)) => humantime::parse_duration(s)
            .ok()
            .filter(|d| *d >= min && *d <= max && !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "`{field}` is `{s}`; write a duration from {} to {}, like `{example}`",
                    fmt(min),
                    fmt(max)
                )
            }),
        Some(_) => Err(format!("`{field}` must be a duration like `{example}`")),
    }
}

impl TaskKind for CheckKind {
    fn name(&self) -> &'static str {
        "check"
    }

    fn idempotent_by_default(&self) -> bool {
        true
    }

    fn parse(
        &self,
        body: &serde_yaml::Value,
        ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String> {
        let map = super::body_mapping(body, "check", &KEYS, HINT)?;
        let expectation = Expectation::parse(map, "check", HINT, &[], ctx)?;
        let severity = match map.get("severity").map(|s| s.as_str()) {
            None | Some(Some("error")) => Severity::Error,
            Some(Some("warning")) => Severity::Warning,
            Some(Some("info")) => Severity::Info,
            Some(other) => {
                return Err(format!(
                    "`check.severity` is {}; write error, warning or info",
                    other.unwrap_or("not a string")
                ))
            }
        };
        let timeout = parse_duration(
            map.get("timeout"),
            "check.timeout",
            DEFAULT_TIMEOUT,
            Duration::from_secs(1),
            MAX_TIMEOUT,
            "timeout: 20s",
        )?;
        Ok(Arc::new(Check {
            cluster: Arc::clone(&self.cluster),
            expectation,
            severity,
            timeout,
        }))
    }
}

#[async_trait]
impl Task for Check {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let exp = &self.expectation;
        let overlaid = exp.overlay(ctx);
        let ctx = overlaid.as_ref().unwrap_or(ctx);
        let what = exp.query.key(ctx);
        // A first attempt shares the run's answer; a later one (a retry, a
        // resume after repair) asks again, and keeps what it saw under its
        // own name.
        // After a step changed the cluster (an upgrade, a repair), checks
        // share the data of their own generation only.
        let fact = match (ctx.attempt, ctx.facts.generation()) {
            (0 | 1, 0) => what.clone(),
            (0 | 1, generation) => format!("{what} ~{generation}"),
            (attempt, _) => format!("{what} @{}#{attempt}", ctx.step_id),
        };
        let started = Instant::now();
        let fetched = AtomicBool::new(false);
        let data = ctx
            .facts
            .get_or_fetch(&fact, || async {
                fetched.store(true, Ordering::Relaxed);
                exp.query
                    .fetch(&self.cluster, ctx, self.timeout)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        let mut stdout = String::new();
        let base = json!({
            "severity": self.severity.name(),
            "query": what,
            "fact": fact,
            "expect": exp.expect.source(),
        });
        let with = |mut extra: Value| {
            if let (Value::Object(b), Value::Object(e)) = (&base, &mut extra) {
                for (k, v) in b {
                    e.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            Some(extra)
        };
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                let reason = format!("the check could not read its data: {e}");
                let _ = writeln!(stdout, "{what}: {reason}\noutcome: failed");
                return TaskOutput {
                    failure: Some(reason.clone()),
                    stdout: stdout.into_bytes(),
                    output: with(json!({
                        "outcome": "failed",
                        "failed": [],
                        "message": reason,
                        "error": e,
                    })),
                    ..TaskOutput::default()
                };
            }
        };
        let _ = writeln!(
            stdout,
            "{what}: {} ({:.1}s)",
            if fetched.load(Ordering::Relaxed) {
                "fetched"
            } else {
                "from the run's facts"
            },
            started.elapsed().as_secs_f64()
        );
        let bindings = match exp.bindings(ctx).await {
            Ok(b) => b,
            Err(reason) => {
                let _ = writeln!(stdout, "{reason}\noutcome: failed");
                return TaskOutput {
                    failure: Some(reason.clone()),
                    stdout: stdout.into_bytes(),
                    output: with(json!({"outcome": "failed", "failed": [], "message": reason})),
                    ..TaskOutput::default()
                };
            }
        };
        let params = json!(*ctx.params);
        let (data, what) = match exp.select(&data, &what) {
            Ok(selected) => selected,
            Err(reason) => {
                let path = format!("{what}.{}", exp.path.join("."));
                let _ = writeln!(stdout, "{reason}\noutcome: failed");
                return TaskOutput {
                    failure: Some(reason.clone()),
                    stdout: stdout.into_bytes(),
                    output: with(json!({
                        "outcome": "failed",
                        "failed": [path],
                        "message": reason,
                        "missing": path,
                    })),
                    ..TaskOutput::default()
                };
            }
        };
        let verdict = match exp.evaluate(data, &params, &bindings, &what) {
            Ok(v) => v,
            Err(reason) => {
                let _ = writeln!(stdout, "{reason}\noutcome: failed");
                return TaskOutput {
                    failure: Some(reason.clone()),
                    stdout: stdout.into_bytes(),
                    output: with(json!({"outcome": "failed", "failed": [], "message": reason})),
                    ..TaskOutput::default()
                };
            }
        };
        for m in &verdict.misses {
            let _ = writeln!(
                stdout,
                "{} {}: {}",
                self.severity.outcome(),
                m.name,
                m.message
            );
        }
        for m in &verdict.errors {
            let _ = writeln!(stdout, "error {}: {}", m.name, m.message);
        }
        let mut failed: Vec<&str> = verdict
            .misses
            .iter()
            .chain(&verdict.errors)
            .map(|m| m.name.as_str())
            .collect();
        if verdict.too_few.is_some() {
            failed.push(&what);
        }
        let entry = |m: &Miss, key: &str| {
            let mut e = m.fields.clone();
            e.insert("name".into(), json!(m.name));
            e.insert(key.into(), json!(m.message));
            Value::Object(e)
        };
        let items: Vec<Value> = verdict.misses.iter().map(|m| entry(m, "message")).collect();
        let errors: Vec<Value> = verdict.errors.iter().map(|m| entry(m, "error")).collect();
        let (outcome, message) = match exp.summary(&verdict, &what) {
            Summary::Passed(m) => ("passed", m),
            Summary::Unevaluable(m) => ("failed", m),
            Summary::Failed(m) => (self.severity.outcome(), m),
        };
        let _ = writeln!(stdout, "outcome: {outcome}: {message}");
        let output = with(json!({
            "outcome": outcome,
            "failed": failed,
            "message": message,
            "total": verdict.total,
            "items": items,
            "errors": errors,
        }));
        TaskOutput {
            failure: (outcome == "failed").then_some(message),
            stdout: stdout.into_bytes(),
            output,
            ..TaskOutput::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kpilot_engine::store::Facts;
    use kpilot_engine::{InstanceId, RunId, StepId};

    use super::*;
    use crate::data::ClusterConfig;

    fn kind() -> CheckKind {
        CheckKind::new(Arc::new(Cluster::new(ClusterConfig::default())))
    }

    fn parse(yaml: &str) -> Result<Arc<dyn Task>, String> {
        let body: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        let params = vec!["to".to_owned()];
        kind().parse(
            &body,
            &ParseContext {
                step_id: "c",
                params: &params,
            },
        )
    }

    fn ctx(dir: &std::path::Path) -> TaskContext {
        let run = RunId::parse("r1").expect("run id");
        TaskContext {
            run_id: run.clone(),
            step_id: StepId::parse("c").expect("step id"),
            instance: InstanceId::global(),
            attempt: 1,
            params: Arc::new(BTreeMap::from([("to".to_owned(), "1.34".to_owned())])),
            workdir: dir.to_owned(),
            facts: Facts::in_memory(run.clone()),
            ledger: kpilot_engine::store::Ledger::in_memory(run),
            retried: false,
        }
    }

    #[test]
    fn bad_bodies_are_rejected() {
        for bad in [
            "{query: cluster.nodes}",
            "{expect: 'true'}",
            "{query: cluster.nodes, expect: 'item.ready &&'}",
            "{query: cluster.nodes, expect: 'true', severity: fatal}",
            "{query: cluster.nodes, expect: 'true', message: '{{item.name'}",
            "{query: cluster.nodes, expect: 'true', timeout: soon}",
            "{query: cluster.nodes, expect: 'true', timeout: 1000000000y}",
            "{query: cluster.nodes, expect: 'true', forEach: yes-please}",
            "{query: cluster.nodes, expect: 'true', selector: x}",
            "{query: cluster.nodes, expect: 'true', minItems: 1}",
            "{query: cluster.nodes, forEach: true, expect: 'true', minItems: -1}",
            "{query: cluster.version, expect: \"verison(data.gitVersion) > v('1')\"}",
            "{query: cluster.version, expect: 'true', message: '{{ semver(data.gitVersion) }}'}",
            "[cluster.nodes]",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        assert!(
            parse("{query: cluster.version, expect: \"v(data.gitVersion) >= v('1.12.0')\"}")
                .is_ok()
        );
    }

    fn script(dir: &std::path::Path, json: &str) -> String {
        let path = dir.join("data.json");
        std::fs::write(&path, json).expect("write");
        format!("{{command: [cat, {}]", path.display())
    }

    #[tokio::test]
    async fn for_each_names_the_failed_items() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = script(
            dir.path(),
            r#"[{"name": "a", "v": "1.34.1"}, {"name": "b", "v": "1.31.0"}, {"name": "c", "v": "1.35.0"}]"#,
        );
        let task = parse(&format!(
            "{{query: {query}}}, forEach: true, expect: \"v(item.v) >= v('1.32') && v(item.v) <= v(params.to + '.99')\", message: '{{{{item.name}}}} is at {{{{item.v}}}}'}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        let reason = out.failure.expect("fails");
        assert!(reason.contains("2 of 3"), "{reason}");
        assert!(
            reason.contains("b is at 1.31.0") && reason.contains("c is at 1.35.0"),
            "{reason}"
        );
        let output = out.output.expect("output");
        assert_eq!(output["outcome"], "failed");
        assert_eq!(output["failed"], json!(["b", "c"]));
    }

    #[tokio::test]
    async fn a_warning_does_not_fail_the_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = script(dir.path(), r#"{"coredns": {"version": "v1.8.0"}}"#);
        let task = parse(&format!(
            "{{query: {query}}}, forEach: true, severity: warning, expect: \"v(item.version) >= v('1.11')\"}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        assert_eq!(out.failure, None);
        let output = out.output.expect("output");
        assert_eq!(output["outcome"], "warning");
        assert_eq!(output["failed"], json!(["coredns"]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("outcome: warning"));
    }

    #[tokio::test]
    async fn an_expression_error_fails_even_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = script(
            dir.path(),
            r#"[{"name": "n", "kubeletVersion": "kwok-0.7.0"}]"#,
        );
        let task = parse(&format!(
            "{{query: {query}}}, forEach: true, severity: warning, expect: \"v(item.kubeletVersion) >= v('1.0')\"}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        let reason = out.failure.expect("fails");
        assert!(
            reason.contains("could not be evaluated") && reason.contains("kwok-0.7.0"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn an_unevaluable_expectation_is_said_once_then_each_item_and_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = script(
            dir.path(),
            r#"[{"name": "worker-1", "kubeletVersion": "kwok-0.7.0"},
                {"name": "worker-2", "kubeletVersion": "latest"},
                {"name": "worker-3", "kubeletVersion": "v1.31.0"}]"#,
        );
        let expect =
            "v(item.kubeletVersion) >= v('1.30') && v(item.kubeletVersion) <= v(params.to + '.99')";
        let task = parse(&format!(
            "{{query: {query}}}, forEach: true, expect: \"{expect}\"}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        let reason = out.failure.expect("fails");
        assert_eq!(reason.matches(expect).count(), 1, "{reason}");
        assert!(
            reason.contains("could not be evaluated for 2 of 3 items")
                && reason.contains(r#"worker-1: kubeletVersion "kwok-0.7.0" is not a version"#)
                && reason.contains(r#"worker-2: kubeletVersion "latest" is not a version"#),
            "{reason}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches(expect).count(), 1, "{stdout}");
        assert!(
            stdout.contains(r#"error worker-1: kubeletVersion "kwok-0.7.0" is not a version"#),
            "{stdout}"
        );
    }

    #[test]
    fn item_needs_for_each_and_names_are_checked_in_messages() {
        let e = parse("{query: cluster.nodes, expect: item.ready}").expect_err("no forEach");
        assert!(
            e.contains("check.expect: reads `item`") && e.contains("forEach: true"),
            "{e}"
        );
        let e = parse("{query: cluster.nodes, forEach: true, expect: item.ready, message: '{{nod.name}} is down'}")
            .expect_err("typo");
        assert!(
            e.contains("check.message")
                && e.contains("reads `nod`")
                && e.contains("params, data and item"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failing_command_fails_the_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = parse(
            "{query: {command: [sh, -c, 'echo boom >&2; exit 3']}, expect: 'true', severity: info}",
        )
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        let reason = out.failure.expect("fails");
        assert!(
            reason.contains("exited with 3") && reason.contains("boom"),
            "{reason}"
        );
        let task = parse("{query: {command: [echo, not json]}, expect: 'true'}").expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        assert!(out.failure.expect("fails").contains("not JSON"));
    }

    #[tokio::test]
    async fn min_items_fails_an_empty_fleet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = script(dir.path(), "[]");
        let task = parse(&format!(
            "{{query: {query}}}, forEach: true, minItems: 1, expect: item.ready}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        let reason = out.failure.expect("fails");
        assert!(
            reason.contains("0 item(s), fewer than minItems 1"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn single_check_passes_on_params() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = script(dir.path(), r#"{"gitVersion": "v1.34.4"}"#);
        let task = parse(&format!(
            "{{query: {query}}}, expect: \"minor(data.gitVersion) == minor(params.to)\"}}"
        ))
        .expect("parses");
        let out = task.run(&ctx(dir.path())).await;
        assert_eq!(out.failure, None);
        assert_eq!(out.output.expect("output")["outcome"], "passed");
    }
}
