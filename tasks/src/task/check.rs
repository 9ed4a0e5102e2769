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
//! ```
//!
//! A failed check of severity `error` fails the step; `warning` and `info`
//! record their outcome and let the step succeed. A query that gives no data
//! or an expectation that cannot be evaluated fails the step whatever the
//! severity: a check never passes on data it did not see.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};
use serde_json::{json, Value};

use crate::data::{Cluster, Query};
use kpilot_expr::{Expr, ExprError, MessageTemplate, Scope};

/// How long a query retries an unreachable cluster unless `timeout` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest `timeout` a check may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// At most this many failed items are named in a step's reason.
const REASON_ITEMS: usize = 20;

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
    query: Query,
    /// Where in the query's data the check looks (`coredns.version` of
    /// `cluster.addons.coredns.version`); empty for all of it.
    path: Vec<String>,
    /// Values for `params.NAME` in this check only, over the run's: a catalog
    /// check's own params.
    params: BTreeMap<String, String>,
    expect: Expr,
    severity: Severity,
    message: Option<MessageTemplate>,
    for_each: bool,
    min_items: u64,
    timeout: Duration,
}

const HINT: &str = "write `check: {query: cluster.nodes, forEach: true, expect: item.ready, severity: error, message: \"{{item.name}} is not Ready\"}`";

const KEYS: [&str; 8] = [
    "query", "expect", "severity", "message", "forEach", "minItems", "timeout", "params",
];

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
        let Some(map) = body.as_mapping() else {
            return Err(format!("`check` is not a mapping; {HINT}"));
        };
        for key in map.keys() {
            if !key.as_str().is_some_and(|k| KEYS.contains(&k)) {
                return Err(format!(
                    "unknown key `{}` in `check`; it takes {}",
                    key.as_str().unwrap_or("(not text)"),
                    KEYS.join(", ")
                ));
            }
        }
        let params = match map.get("params") {
            None | Some(serde_yaml::Value::Null) => BTreeMap::new(),
            Some(serde_yaml::Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().ok_or("`check.params` keys must be names")?;
                    let value = match v {
                        serde_yaml::Value::String(s) => s.clone(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        serde_yaml::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        _ => {
                            return Err(format!(
                                "`check.params.{key}` must be a text; quote it"
                            ))
                        }
                    };
                    Ok((key.to_owned(), value))
                })
                .collect::<Result<_, String>>()?,
            Some(_) => {
                return Err(
                    "`check.params` must be a mapping of names to texts, like `params: {nodeSelector: \"pool=a\"}`"
                        .into(),
                )
            }
        };
        let mut names: Vec<String> = ctx.params.to_vec();
        names.extend(params.keys().cloned());
        let query = map
            .get("query")
            .ok_or_else(|| format!("`check.query` is missing; {HINT}"))?;
        let (query, path) =
            Query::parse_path(query, &names).map_err(|e| format!("check.query: {e}"))?;
        let expect = match map.get("expect") {
            Some(serde_yaml::Value::String(s)) => s.clone(),
            Some(serde_yaml::Value::Bool(b)) => b.to_string(),
            Some(_) => return Err("`check.expect` must be a CEL expression in a string".into()),
            None => return Err(format!("`check.expect` is missing; {HINT}")),
        };
        let for_each = match map.get("forEach") {
            None => false,
            Some(serde_yaml::Value::Bool(b)) => *b,
            Some(_) => return Err("`check.forEach` must be true or false".into()),
        };
        let vars: &[&str] = if for_each {
            &["params", "data", "item"]
        } else {
            &["params", "data"]
        };
        let refused = |field: &str, e: ExprError| {
            let reads_item = match &e {
                ExprError::UnknownVariable { name, .. } => name == "item",
                ExprError::Hole { error, .. } => {
                    matches!(&**error, ExprError::UnknownVariable { name, .. } if name == "item")
                }
                _ => false,
            };
            if reads_item {
                format!("{field}: {e} (`item` is each element under `forEach: true`)")
            } else {
                format!("{field}: {e}")
            }
        };
        let expect = Expr::compile(&expect, vars).map_err(|e| refused("check.expect", e))?;
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
        let message = match map.get("message") {
            None | Some(serde_yaml::Value::Null) => None,
            Some(serde_yaml::Value::String(s)) => {
                Some(MessageTemplate::compile(s, vars).map_err(|e| refused("check.message", e))?)
            }
            Some(_) => return Err("`check.message` must be a string".into()),
        };
        let min_items = match map.get("minItems") {
            None => 0,
            Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some() && for_each => {
                n.as_u64().unwrap_or(0)
            }
            Some(_) if !for_each => {
                return Err("`check.minItems` needs `forEach: true`".into());
            }
            Some(_) => return Err("`check.minItems` must be a whole number".into()),
        };
        let timeout = match map.get("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(serde_yaml::Value::String(s)) => humantime::parse_duration(s)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
                .ok_or_else(|| {
                    format!("`check.timeout` is `{s}`; write a duration from 1s to 1h, like `timeout: 20s`")
                })?,
            Some(_) => {
                return Err("`check.timeout` must be a duration like `20s`".into());
            }
        };
        Ok(Arc::new(Check {
            cluster: Arc::clone(&self.cluster),
            query,
            path,
            params,
            expect,
            severity,
            message,
            for_each,
            min_items,
            timeout,
        }))
    }
}

/// One element of the data that did not pass.
struct Miss {
    name: String,
    message: String,
    /// What the report says about the element besides its message: the
    /// object it is, where it was found ([`report_fields`]).
    fields: serde_json::Map<String, Value>,
}

/// The fields of an element that a report item carries: `object` (the
/// Kubernetes object it is: its `object` field, its `apiVersion`, `kind` and
/// `metadata`, or a flat `kind` and `name`; `kind` when the query names one),
/// and its `source`, `replacement` and `removedIn`.
fn report_fields(item: &Value, kind: Option<&(String, String)>) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Value::Object(fields) = item else {
        return out;
    };
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let object = if let Some(Value::Object(o)) = fields.get("object") {
        Some(Value::Object(o.clone()))
    } else {
        let meta = fields.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(text)
            .or_else(|| fields.get("name").and_then(text));
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(text)
            .or_else(|| fields.get("namespace").and_then(text));
        let api_version = fields
            .get("apiVersion")
            .and_then(text)
            .or_else(|| kind.map(|k| k.0.clone()));
        let kind = fields
            .get("kind")
            .and_then(text)
            .or_else(|| kind.map(|k| k.1.clone()));
        match (kind, name) {
            (Some(kind), Some(name)) => {
                let mut o = serde_json::Map::new();
                if let Some(v) = api_version {
                    o.insert("apiVersion".into(), json!(v));
                }
                o.insert("kind".into(), json!(kind));
                if let Some(ns) = namespace {
                    o.insert("namespace".into(), json!(ns));
                }
                o.insert("name".into(), json!(name));
                Some(Value::Object(o))
            }
            _ => None,
        }
    };
    if let Some(object) = object {
        out.insert("object".into(), object);
    }
    for key in ["source", "replacement", "removedIn"] {
        if let Some(v) = fields.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    out
}

/// What evaluating `expect` over the data found.
struct Verdict {
    total: usize,
    misses: Vec<Miss>,
    errors: Vec<Miss>,
    /// Set when `forEach` saw fewer items than `minItems`.
    too_few: Option<String>,
}

/// The name of element `index` of a list: its `name`, `metadata.name` (with
/// the namespace) or, failing those, its index.
fn item_name(item: &Value, index: usize) -> String {
    if let Some(name) = item.get("name").and_then(Value::as_str) {
        return name.to_owned();
    }
    // A finding about an object (removed APIs): `Kind ns/name`.
    let object = &item["object"];
    if let (Some(kind), Some(name)) = (object["kind"].as_str(), object["name"].as_str()) {
        return match object["namespace"].as_str().filter(|ns| !ns.is_empty()) {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
    }
    let meta = &item["metadata"];
    match (meta["namespace"].as_str(), meta["name"].as_str()) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => format!("[{index}]"),
    }
}

impl Check {
    fn evaluate(&self, data: &Value, params: &Value, what: &str) -> Result<Verdict, String> {
        let mut scope = Scope::new();
        scope.set("params", params);
        // Binding is a copy into CEL's values: 5,000 nodes cost a hundred
        // megabytes more, so `data` is bound only for a check that reads it
        // (a `forEach` check usually reads only `item`).
        if self.expect.uses_variable("data")
            || self
                .message
                .as_ref()
                .is_some_and(|m| m.uses_variable("data"))
        {
            scope.set("data", data);
        }
        let mut verdict = Verdict {
            total: 0,
            misses: Vec::new(),
            errors: Vec::new(),
            too_few: None,
        };
        let kind = self.query.element_kind();
        let judge = |scope: &Scope, name: String, item: &Value, verdict: &mut Verdict| {
            verdict.total += 1;
            let fields = if self.for_each {
                report_fields(item, kind.as_ref())
            } else {
                serde_json::Map::new()
            };
            match self.expect.eval_bool(scope) {
                Ok(true) => {}
                Ok(false) => {
                    let message = match &self.message {
                        Some(t) => t.render(scope),
                        None => format!("`{}` is false", self.expect.source()),
                    };
                    verdict.misses.push(Miss {
                        name,
                        message,
                        fields,
                    });
                }
                Err(e) => verdict.errors.push(Miss {
                    name,
                    message: with_field(item, e.why()),
                    fields,
                }),
            }
        };
        if !self.for_each {
            judge(&scope, what.to_owned(), data, &mut verdict);
            return Ok(verdict);
        }
        let items: Vec<(String, &Value)> = match data {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (item_name(item, i), item))
                .collect(),
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            other => {
                return Err(format!(
                    "`forEach: true` needs a list or a map, and {what} gave {}",
                    match other {
                        Value::Null => "null",
                        Value::Bool(_) => "a boolean",
                        Value::Number(_) => "a number",
                        _ => "a string",
                    }
                ))
            }
        };
        let count = items.len();
        for (name, item) in items {
            scope.set("item", item);
            judge(&scope, name, item, &mut verdict);
        }
        if (count as u64) < self.min_items {
            verdict.too_few = Some(format!(
                "{what} has {count} item(s), fewer than minItems {}",
                self.min_items
            ));
        }
        Ok(verdict)
    }
}

/// `why`, led by the field of `item` that holds the text it quotes: kpilot's functions
/// quote the value they refuse (`"kwok-0.7.0" is not a version`), and naming where it
/// came from (`kubeletVersion "kwok-0.7.0" is not a version`) saves a look at the data.
fn with_field(item: &Value, why: String) -> String {
    let Value::Object(fields) = item else {
        return why;
    };
    let field = fields.iter().find_map(|(key, value)| {
        let text = value.as_str()?;
        why.starts_with(&Value::String(text.to_owned()).to_string())
            .then_some(key)
    });
    match field {
        Some(key) => format!("{key} {why}"),
        None => why,
    }
}

/// `a: m1; b: m2; ... and 3 more`.
fn list(misses: &[Miss]) -> String {
    let mut out = misses
        .iter()
        .take(REASON_ITEMS)
        .map(|m| {
            if m.message.contains(&m.name) {
                m.message.clone()
            } else {
                format!("{}: {}", m.name, m.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if misses.len() > REASON_ITEMS {
        let _ = write!(out, "; and {} more", misses.len() - REASON_ITEMS);
    }
    out
}

#[async_trait]
impl Task for Check {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let overlaid;
        let ctx = if self.params.is_empty() {
            ctx
        } else {
            let mut params = (*ctx.params).clone();
            params.extend(self.params.clone());
            overlaid = TaskContext {
                params: Arc::new(params),
                ..ctx.clone()
            };
            &overlaid
        };
        let what = self.query.key(ctx);
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
                self.query
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
            "expect": self.expect.source(),
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
        let params = json!(*ctx.params);
        let (data, what) = if self.path.is_empty() {
            (&*data, what)
        } else {
            let path = format!("{what}.{}", self.path.join("."));
            match crate::data::select(&data, &self.path, &what) {
                Ok(value) => (value, path),
                Err(reason) => {
                    let reason = format!("{path} does not exist: {reason}");
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
            }
        };
        let verdict = match self.evaluate(data, &params, &what) {
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
        let counted = |n: usize| {
            if self.for_each {
                format!("{n} of {} items of {what}", verdict.total)
            } else {
                what.clone()
            }
        };
        let (outcome, message) = if !verdict.errors.is_empty() {
            (
                "failed",
                format!(
                    "`{}` could not be evaluated for {}: {}",
                    self.expect.source(),
                    counted(verdict.errors.len()),
                    list(&verdict.errors)
                ),
            )
        } else if let Some(too_few) = &verdict.too_few {
            let mut message = too_few.clone();
            if !verdict.misses.is_empty() {
                let _ = write!(
                    message,
                    "; {} failed: {}",
                    counted(verdict.misses.len()),
                    list(&verdict.misses)
                );
            }
            (self.severity.outcome(), message)
        } else if verdict.misses.is_empty() {
            (
                "passed",
                if self.for_each {
                    format!("all {} items of {what} passed", verdict.total)
                } else {
                    format!("{what} passed")
                },
            )
        } else {
            (
                self.severity.outcome(),
                if self.for_each {
                    format!(
                        "{} failed: {}",
                        counted(verdict.misses.len()),
                        list(&verdict.misses)
                    )
                } else {
                    verdict
                        .misses
                        .iter()
                        .map(|m| m.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            )
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
