//! What `check` and `wait` share: a query, a path into its data, a CEL
//! expectation judged over the data (per element with `forEach`), the
//! snapshots it compares against, and the words for what it found.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use kpilot_engine::{InstanceId, ParseContext, TaskContext};
use kpilot_expr::{Expr, ExprError, MessageTemplate, Scope};
use serde_json::{json, Value};

use crate::data::Query;

/// At most this many failed items are named in a step's reason.
const REASON_ITEMS: usize = 20;

/// The fact a `snapshot` step keeps its snapshot under, for `snapshots:`.
pub fn snapshot_fact(step: &str) -> String {
    format!("snapshot/{step}")
}

/// The parsed fields every expectation body has.
#[derive(Debug)]
pub(crate) struct Expectation {
    pub query: Query,
    /// Where in the query's data the expectation looks (`coredns.version` of
    /// `cluster.addons.coredns.version`); empty for all of it.
    pub path: Vec<String>,
    /// Values for `params.NAME` in this body only, over the run's: a catalog
    /// check's own params.
    pub params: BTreeMap<String, String>,
    pub expect: Expr,
    pub message: Option<MessageTemplate>,
    pub for_each: bool,
    pub min_items: u64,
    /// Ids of the `snapshot` steps whose snapshots the expression reads as
    /// `snapshots['ID']`.
    pub snapshots: Vec<String>,
}

/// One element of the data that did not pass.
pub(crate) struct Miss {
    pub name: String,
    pub message: String,
    /// What the report says about the element besides its message: the
    /// object it is, where it was found ([`report_fields`]).
    pub fields: serde_json::Map<String, Value>,
}

/// What evaluating `expect` over the data found.
pub(crate) struct Verdict {
    pub total: usize,
    pub misses: Vec<Miss>,
    pub errors: Vec<Miss>,
    /// Set when `forEach` saw fewer items than `minItems`.
    pub too_few: Option<String>,
}

/// What a verdict says, in words.
pub(crate) enum Summary {
    /// Every element held.
    Passed(String),
    /// The expectation could not be evaluated for some element.
    Unevaluable(String),
    /// Some element did not hold, or too few were there.
    Failed(String),
}

/// What an expression may read besides `params` and `data`.
pub(crate) struct Bindings {
    /// `snapshots`: step id → snapshot, when the body names any.
    pub snapshots: Option<Value>,
    /// `node`: the node of a per-node instance.
    pub node: Option<String>,
}

/// Why `snapshots` could not be bound.
pub(crate) const SNAPSHOT_HINT: &str =
    "add the snapshot step to this step's `needs` so that it runs (and succeeds) before";

impl Expectation {
    /// Parses the shared fields of body `at` (`check`, `wait`); `extra` are
    /// variables the body's kind binds besides `params`, `data`, `item` and
    /// `snapshots`. The caller has refused unknown keys.
    pub fn parse(
        map: &serde_yaml::Mapping,
        at: &str,
        hint: &str,
        extra: &[&str],
        ctx: &ParseContext<'_>,
    ) -> Result<Self, String> {
        let params = match map.get("params") {
            None | Some(serde_yaml::Value::Null) => BTreeMap::new(),
            Some(serde_yaml::Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| {
                    let key = k
                        .as_str()
                        .ok_or_else(|| format!("`{at}.params` keys must be names"))?;
                    let value = match v {
                        serde_yaml::Value::String(s) => s.clone(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        serde_yaml::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        _ => return Err(format!("`{at}.params.{key}` must be a text; quote it")),
                    };
                    Ok((key.to_owned(), value))
                })
                .collect::<Result<_, String>>()?,
            Some(_) => {
                return Err(format!(
                    "`{at}.params` must be a mapping of names to texts, like `params: {{nodeSelector: \"pool=a\"}}`"
                ))
            }
        };
        let mut names: Vec<String> = ctx.params.to_vec();
        names.extend(params.keys().cloned());
        let query = map
            .get("query")
            .ok_or_else(|| format!("`{at}.query` is missing; {hint}"))?;
        let (query, path) =
            Query::parse_path(query, &names).map_err(|e| format!("{at}.query: {e}"))?;
        let expect = match map.get("expect") {
            Some(serde_yaml::Value::String(s)) => s.clone(),
            Some(serde_yaml::Value::Bool(b)) => b.to_string(),
            Some(_) => {
                return Err(format!(
                    "`{at}.expect` must be a CEL expression in a string"
                ))
            }
            None => return Err(format!("`{at}.expect` is missing; {hint}")),
        };
        let for_each = match map.get("forEach") {
            None => false,
            Some(serde_yaml::Value::Bool(b)) => *b,
            Some(_) => return Err(format!("`{at}.forEach` must be true or false")),
        };
        let snapshots = match map.get("snapshots") {
            None | Some(serde_yaml::Value::Null) => Vec::new(),
            Some(serde_yaml::Value::Sequence(ids)) => ids
                .iter()
                .map(|id| match id.as_str() {
                    Some(s) if kpilot_engine::StepId::parse(s).is_ok() => Ok(s.to_owned()),
                    _ => Err(format!(
                        "`{at}.snapshots` holds {}, which is not a step id; write the ids of snapshot steps, like `snapshots: [before]`",
                        serde_yaml::to_string(id).unwrap_or_default().trim()
                    )),
                })
                .collect::<Result<_, String>>()?,
            Some(_) => {
                return Err(format!(
                    "`{at}.snapshots` must be a list of snapshot step ids, like `snapshots: [before]`"
                ))
            }
        };
        let mut vars: Vec<&str> = vec!["params", "data"];
        if for_each {
            vars.push("item");
        }
        if !snapshots.is_empty() {
            vars.push("snapshots");
        }
        vars.extend_from_slice(extra);
        let refused = |field: &str, e: ExprError| {
            let reads = |wanted: &str| match &e {
                ExprError::UnknownVariable { name, .. } => name == wanted,
                ExprError::Hole { error, .. } => {
                    matches!(&**error, ExprError::UnknownVariable { name, .. } if name == wanted)
                }
                _ => false,
            };
            if reads("item") {
                format!("{field}: {e} (`item` is each element under `forEach: true`)")
            } else if reads("snapshots") {
                format!("{field}: {e} (`snapshots` needs `{at}.snapshots: [STEP_ID]`, the snapshot steps it reads)")
            } else {
                format!("{field}: {e}")
            }
        };
        let expect =
            Expr::compile(&expect, &vars).map_err(|e| refused(&format!("{at}.expect"), e))?;
        let message = match map.get("message") {
            None | Some(serde_yaml::Value::Null) => None,
            Some(serde_yaml::Value::String(s)) => Some(
                MessageTemplate::compile(s, &vars)
                    .map_err(|e| refused(&format!("{at}.message"), e))?,
            ),
            Some(_) => return Err(format!("`{at}.message` must be a string")),
        };
        let min_items = match map.get("minItems") {
            None => 0,
            Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some() && for_each => {
                n.as_u64().unwrap_or(0)
            }
            Some(_) if !for_each => {
                return Err(format!("`{at}.minItems` needs `forEach: true`"));
            }
            Some(_) => return Err(format!("`{at}.minItems` must be a whole number")),
        };
        Ok(Expectation {
            query,
            path,
            params,
            expect,
            message,
            for_each,
            min_items,
            snapshots,
        })
    }

    /// `ctx` with this body's own params over the run's.
    pub fn overlay(&self, ctx: &TaskContext) -> Option<TaskContext> {
        if self.params.is_empty() {
            return None;
        }
        let mut params = (*ctx.params).clone();
        params.extend(self.params.clone());
        Some(TaskContext {
            params: Arc::new(params),
            ..ctx.clone()
        })
    }

    /// What the expression may read besides `params` and `data`: the
    /// snapshots it names (from the run's facts), and the node of a
    /// per-node instance. A snapshot the run does not have is an error that
    /// names its step.
    pub async fn bindings(&self, ctx: &TaskContext) -> Result<Bindings, String> {
        let snapshots = if self.snapshots.is_empty() {
            None
        } else {
            let mut map = serde_json::Map::new();
            for id in &self.snapshots {
                let fact = snapshot_fact(id);
                // The fetch never runs for a snapshot the run has; for one it
                // lacks it says so, and a failed fetch is not kept.
                const MISSING: &str = "\0missing";
                match ctx
                    .facts
                    .get_or_fetch(&fact, || async { Err(MISSING.to_owned()) })
                    .await
                {
                    Ok(value) => {
                        map.insert(id.clone(), (*value).clone());
                    }
                    Err(e) if e == MISSING => {
                        return Err(format!(
                            "snapshot `{id}` is not in this run: no snapshot step `{id}` has succeeded before this step; {SNAPSHOT_HINT}"
                        ))
                    }
                    Err(e) => return Err(format!("snapshot `{id}` could not be read: {e}")),
                }
            }
            Some(Value::Object(map))
        };
        let node = (ctx.instance != InstanceId::global()).then(|| ctx.instance.to_string());
        let reads_node = self.expect.uses_variable("node")
            || self
                .message
                .as_ref()
                .is_some_and(|m| m.uses_variable("node"));
        if reads_node && node.is_none() {
            return Err(
                "the expression reads `node`, the node of a per-node instance, and this step runs once, not per node; run it on a per-node executor or leave `node` out"
                    .into(),
            );
        }
        Ok(Bindings { snapshots, node })
    }

    /// The part of `data` the path names, and its name (`cluster.addons.coredns.version`).
    pub fn select<'a>(&self, data: &'a Value, what: &str) -> Result<(&'a Value, String), String> {
        if self.path.is_empty() {
            return Ok((data, what.to_owned()));
        }
        let path = format!("{what}.{}", self.path.join("."));
        match crate::data::select(data, &self.path, what) {
            Ok(value) => Ok((value, path)),
            Err(reason) => Err(format!("{path} does not exist: {reason}")),
        }
    }

    /// Judges `data` (named `what` in messages).
    pub fn evaluate(
        &self,
        data: &Value,
        params: &Value,
        bindings: &Bindings,
        what: &str,
    ) -> Result<Verdict, String> {
        let mut scope = Scope::new();
        scope.set("params", params);
        if let Some(snapshots) = &bindings.snapshots {
            scope.set("snapshots", snapshots);
        }
        let node_value;
        if let Some(node) = &bindings.node {
            node_value = json!(node);
            scope.set("node", &node_value);
        }
        // Binding is a copy into CEL's values: 5,000 nodes cost a hundred
        // megabytes more, so `data` is bound only for a body that reads it
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

    /// What `verdict` says about `what`, in one sentence.
    pub fn summary(&self, verdict: &Verdict, what: &str) -> Summary {
        let counted = |n: usize| {
            if self.for_each {
                format!("{n} of {} items of {what}", verdict.total)
            } else {
                what.to_owned()
            }
        };
        if !verdict.errors.is_empty() {
            Summary::Unevaluable(format!(
                "`{}` could not be evaluated for {}: {}",
                self.expect.source(),
                counted(verdict.errors.len()),
                list(&verdict.errors)
            ))
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
            Summary::Failed(message)
        } else if verdict.misses.is_empty() {
            Summary::Passed(if self.for_each {
                format!("all {} items of {what} passed", verdict.total)
            } else {
                format!("{what} passed")
            })
        } else if self.for_each {
            Summary::Failed(format!(
                "{} failed: {}",
                counted(verdict.misses.len()),
                list(&verdict.misses)
            ))
        } else {
            Summary::Failed(
                verdict
                    .misses
                    .iter()
                    .map(|m| m.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    }
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
