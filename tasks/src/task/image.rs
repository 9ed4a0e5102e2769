//! `image`: a container image run in the cluster as one step of a run, and
//! judged by its exit code and the result it writes (see [`crate::image`]).
//!
//! ```yaml
//! image:
//!   image: registry.example/netprobe:1.2   # {{params.NAME}} allowed here, in command, args, env
//!   command: [/probe]
//!   args: [--target, "{{params.target}}"]
//!   env: {LEVEL: debug}
//!   namespace: kpilot-checks                # default: default
//!   serviceAccount: netprobe
//!   resources: {requests: {cpu: 100m}}
//!   tolerations: [{key: dedicated, operator: Exists}]
//!   nodeSelector: {pool: infra}             # the global Job's Pod only
//!   hostNetwork: false
//!   hostPID: false
//!   privileged: false
//!   volumes: [{hostPath: /var/log, mountPath: /host/var/log}]
//!   labels: {team: sre}
//!   annotations: {sidecar.istio.io/inject: "false"}
//!   result: termination-message             # exit-code | termination-message | {file: PATH}
//!   expect: "result.ok"                     # CEL over result, exitCode, params, node
//!   keepOnFailure: false
//! ```
//!
//! The attempt's object is named in the run's ledger before it is created
//! and forgotten once it is deleted, so an attempt that finds an entry knows
//! an earlier one was lost (kpilot was killed) and takes its object over
//! instead of creating a second, unless a person asked for a retry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, HostPathVolumeSource, PodSpec, ResourceRequirements, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use kpilot_engine::task::OUTPUT_TAIL;
use kpilot_engine::{InstanceId, ParseContext, Task, TaskContext, TaskKind, TaskOutput};
use kpilot_expr::{Expr, Scope};
use serde_json::{json, Value};

use super::body_mapping;
use crate::data::Cluster;
use crate::image::cluster::{Ended, ImageError, Objects, Observed};
use crate::image::{Kind, Launch, LedgerEntry, Owner, CONTAINER};
use crate::params::{env_name, Template};

/// How long an image step may run when its step has no `timeout`: an image
/// that never ends (a Pod that is never scheduled) must not hold a run for ever.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);

/// How long kpilot waits for a deleted object to be gone.
const DELETE_BUDGET: Duration = Duration::from_secs(30);

/// How long the API server may keep failing while kpilot waits for a verdict.
const API_PATIENCE: Duration = Duration::from_secs(60);

const FIELDS: &[&str] = &[
    "image",
    "command",
    "args",
    "env",
    "namespace",
    "serviceAccount",
    "resources",
    "tolerations",
    "nodeSelector",
    "hostNetwork",
    "hostPID",
    "privileged",
    "volumes",
    "labels",
    "annotations",
    "result",
    "expect",
    "keepOnFailure",
];

const HINT: &str = "write `image: {image: REGISTRY/NAME:TAG, command: [PROGRAM, ARG]}`";

/// Where the step's verdict beyond its exit code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultFrom {
    /// The exit code alone.
    ExitCode,
    /// The container's termination message (`/dev/termination-log`).
    TerminationMessage,
    /// A file the container writes, handed over by the kubelet as the
    /// termination message (`terminationMessagePath`).
    File(String),
}

/// A `hostPath` volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostVolume {
    host_path: String,
    mount_path: String,
    read_only: bool,
}

/// The `image` kind; its objects go through the run's [`Cluster`].
#[derive(Debug, Clone)]
pub struct ImageKind {
    cluster: Arc<Cluster>,
}

impl ImageKind {
    /// The kind, reaching the cluster through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        ImageKind { cluster }
    }
}

/// A parsed `image` body.
#[derive(Debug)]
pub struct ImageStep {
    image: Template,
    command: Option<Vec<Template>>,
    args: Vec<Template>,
    env: Vec<(String, Template)>,
    namespace: Template,
    service_account: Option<String>,
    resources: Option<ResourceRequirements>,
    tolerations: Vec<Toleration>,
    node_selector: BTreeMap<String, String>,
    host_network: bool,
    host_pid: bool,
    privileged: bool,
    volumes: Vec<HostVolume>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    result: ResultFrom,
    expect: Option<Expr>,
    keep_on_failure: bool,
    cluster: Arc<Cluster>,
}

impl TaskKind for ImageKind {
    fn name(&self) -> &'static str {
        "image"
    }

    /// An image may change anything; running it twice is for a person to allow.
    fn idempotent_by_default(&self) -> bool {
        false
    }

    /// Its object is made through the API server, for the instance's node.
    fn runs_in_kpilot(&self) -> bool {
        true
    }

    fn parse(
        &self,
        body: &serde_yaml::Value,
        ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String> {
        Ok(Arc::new(self.body(body, ctx)?))
    }
}

impl ImageKind {
    fn body(&self, body: &serde_yaml::Value, ctx: &ParseContext<'_>) -> Result<ImageStep, String> {
        let map = body_mapping(body, "image", FIELDS, HINT)?;
        let template = |field: &str, v: &serde_yaml::Value| -> Result<Template, String> {
            let text = scalar(v).ok_or_else(|| format!("`image.{field}` must be a text"))?;
            Template::parse(&text, ctx.params).map_err(|e| format!("`image.{field}`: {e}"))
        };
        let image = match map.get("image") {
            Some(v) => {
                let t = template("image", v)?;
                if scalar(v).is_some_and(|s| s.trim().is_empty()) {
                    return Err(format!("`image.image` is empty; {HINT}"));
                }
                t
            }
            None => return Err(format!("`image.image` is missing; {HINT}")),
        };
        let list = |field: &str| -> Result<Option<Vec<Template>>, String> {
            match map.get(field) {
                None | Some(serde_yaml::Value::Null) => Ok(None),
                Some(serde_yaml::Value::Sequence(items)) => items
                    .iter()
                    .map(|v| template(field, v))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(format!(
                    "`image.{field}` is not a list; write `{field}: [ARG, ARG]`"
                )),
            }
        };
        let command = list("command")?;
        if command.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "`image.command` is empty; leave it out to run the image's entrypoint".into(),
            );
        }
        let args = list("args")?.unwrap_or_default();
        let mut env = Vec::new();
        for (k, v) in texts(map, "env", "env: {LEVEL: debug}")? {
            if k.starts_with("KPILOT_") || k.starts_with("PARAM_") {
                return Err(format!(
                    "`image.env.{k}`: names starting with KPILOT_ or PARAM_ are kpilot's own; choose another name"
                ));
            }
            let t = Template::parse(&v, ctx.params).map_err(|e| format!("`image.env.{k}`: {e}"))?;
            env.push((k, t));
        }
        let namespace = match map.get("namespace") {
            Some(v) => template("namespace", v)?,
            None => Template::parse("default", &[])?,
        };
        let service_account = match map.get("serviceAccount") {
            None => None,
            Some(v) => Some(
                scalar(v)
                    .filter(|s| !s.is_empty())
                    .ok_or("`image.serviceAccount` must be the name of a service account")?,
            ),
        };
        let resources = match map.get("resources") {
            None => None,
            Some(v) => Some(kube_field::<ResourceRequirements>(
                "resources",
                v,
                "resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}",
            )?),
        };
        let tolerations = match map.get("tolerations") {
            None => Vec::new(),
            Some(v) => kube_field::<Vec<Toleration>>(
                "tolerations",
                v,
                "tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]",
            )?,
        };
        let node_selector = texts(map, "nodeSelector", "nodeSelector: {pool: infra}")?
            .into_iter()
            .collect();
        let labels: BTreeMap<String, String> = texts(map, "labels", "labels: {team: sre}")?
            .into_iter()
            .collect();
        if let Some(k) = labels.keys().find(|k| k.starts_with("kpilot.io/")) {
            return Err(format!(
                "`image.labels.{k}`: labels under kpilot.io/ are kpilot's own; choose another key"
            ));
        }
        let annotations = texts(
            map,
            "annotations",
            "annotations: {sidecar.istio.io/inject: \"false\"}",
        )?
        .into_iter()
        .collect();
        let flag = |field: &str| match map.get(field) {
            None => Ok(false),
            Some(serde_yaml::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!(
                "`image.{field}` is not true or false; write `{field}: true` or leave it out"
            )),
        };
        let volumes = parse_volumes(map.get("volumes"))?;
        let result = parse_result(map.get("result"))?;
        let expect = match map.get("expect") {
            None => None,
            Some(serde_yaml::Value::String(s)) => Some(
                Expr::compile(s, &["result", "exitCode", "params", "node"])
                    .map_err(|e| format!("`image.expect`: {e}"))?,
            ),
            Some(_) => return Err(
                "`image.expect` must be a CEL expression in quotes, like `expect: \"result.ok\"`"
                    .into(),
            ),
        };
        if let Some(e) = &expect {
            if e.uses_variable("result") && result == ResultFrom::ExitCode {
                return Err("`image.expect` reads `result`, but the step has no result: add `result: termination-message` or `result: {file: PATH}`".into());
            }
        }
        Ok(ImageStep {
            image,
            command,
            args,
            env,
            namespace,
            service_account,
            resources,
            tolerations,
            node_selector,
            host_network: flag("hostNetwork")?,
            host_pid: flag("hostPID")?,
            privileged: flag("privileged")?,
            volumes,
            labels,
            annotations,
            result,
            expect,
            keep_on_failure: flag("keepOnFailure")?,
            cluster: Arc::clone(&self.cluster),
        })
    }
}

/// A YAML scalar as text: strings as written, numbers and booleans as YAML prints them.
fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A mapping of names to texts (`env`, `labels`, ...).
fn texts(
    map: &serde_yaml::Mapping,
    field: &str,
    example: &str,
) -> Result<Vec<(String, String)>, String> {
    match map.get(field) {
        None | Some(serde_yaml::Value::Null) => Ok(Vec::new()),
        Some(serde_yaml::Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let k = k.as_str().ok_or_else(|| {
                    format!("`image.{field}` keys must be names; write `{example}`")
                })?;
                let v = scalar(v).ok_or_else(|| {
                    format!("`image.{field}.{k}` must be a text; quote it, like `{example}`")
                })?;
                Ok((k.to_owned(), v))
            })
            .collect(),
        Some(_) => Err(format!(
            "`image.{field}` is not a mapping; write `{example}`"
        )),
    }
}

/// A field written as the Kubernetes API writes it (`resources`, `tolerations`).
fn kube_field<T: serde::de::DeserializeOwned>(
    field: &str,
    v: &serde_yaml::Value,
    example: &str,
) -> Result<T, String> {
    let json = serde_json::to_value(v).map_err(|e| format!("`image.{field}`: {e}"))?;
    serde_json::from_value(json)
        .map_err(|e| format!("`image.{field}` is not as a Pod writes it ({e}); write `{example}`"))
}

fn parse_volumes(v: Option<&serde_yaml::Value>) -> Result<Vec<HostVolume>, String> {
    let example = "volumes: [{hostPath: /var/log, mountPath: /host/var/log, readOnly: true}]";
    let items = match v {
        None | Some(serde_yaml::Value::Null) => return Ok(Vec::new()),
        Some(serde_yaml::Value::Sequence(items)) => items,
        Some(_) => return Err(format!("`image.volumes` is not a list; write `{example}`")),
    };
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let at = format!("image.volumes[{n}]");
        let Some(m) = item.as_mapping() else {
            return Err(format!("`{at}` is not a mapping; write `{example}`"));
        };
        for key in m.keys() {
            let k = key.as_str().unwrap_or("?");
            if !matches!(k, "hostPath" | "mountPath" | "readOnly") {
                return Err(format!(
                    "`{at}` has no field `{k}`; a volume is a host path: `{{hostPath, mountPath, readOnly}}`"
                ));
            }
        }
        let path = |k: &str| -> Result<String, String> {
            match m.get(k).and_then(|v| v.as_str()) {
                Some(p) if p.starts_with('/') => Ok(p.to_owned()),
                Some(p) => Err(format!("`{at}.{k}` `{p}` is not an absolute path")),
                None => Err(format!("`{at}.{k}` is missing; write `{example}`")),
            }
        };
        let read_only = match m.get("readOnly") {
            None => true,
            Some(serde_yaml::Value::Bool(b)) => *b,
            Some(_) => return Err(format!("`{at}.readOnly` is not true or false")),
        };
        out.push(HostVolume {
            host_path: path("hostPath")?,
            mount_path: path("mountPath")?,
            read_only,
        });
    }
    Ok(out)
}

fn parse_result(v: Option<&serde_yaml::Value>) -> Result<ResultFrom, String> {
    let hint = "write `result: exit-code`, `result: termination-message` or `result: {file: /out/result.json}`";
    match v {
        None => Ok(ResultFrom::ExitCode),
        Some(serde_yaml::Value::String(s)) => match s.as_str() {
            "exit-code" => Ok(ResultFrom::ExitCode),
            "termination-message" => Ok(ResultFrom::TerminationMessage),
            other => Err(format!("`image.result` `{other}` is not known; {hint}")),
        },
        Some(serde_yaml::Value::Mapping(m)) => {
            if m.len() != 1 {
                return Err(format!("`image.result` takes only `file`; {hint}"));
            }
            match m.get("file").and_then(|p| p.as_str()) {
                Some(p) if p.starts_with('/') => Ok(ResultFrom::File(p.to_owned())),
                Some(p) => Err(format!(
                    "`image.result.file` `{p}` is not an absolute path; {hint}"
                )),
                None => Err(format!("`image.result` takes only `file`; {hint}")),
            }
        }
        Some(_) => Err(format!("`image.result` is not valid; {hint}")),
    }
}

/// What kpilot knows about the object of this attempt while it runs.
struct Tracked {
    kind: Kind,
    objects: Objects,
    namespace: String,
    name: String,
    /// The lost attempt whose object this attempt took over.
    taken_over: Option<u32>,
}

impl ImageStep {
    /// The Pod spec and placement of this attempt, with params rendered.
    fn launch(&self, ctx: &TaskContext) -> Launch {
        let p = &ctx.params;
        let node = (ctx.instance != InstanceId::global()).then(|| ctx.instance.to_string());
        let mut env: Vec<EnvVar> = ctx
            .params
            .iter()
            .map(|(k, v)| env_var(&env_name(k), v))
            .collect();
        env.push(env_var("KPILOT_RUN_ID", ctx.run_id.as_str()));
        env.push(env_var("KPILOT_STEP_ID", ctx.step_id.as_str()));
        env.push(env_var("KPILOT_INSTANCE", ctx.instance.as_str()));
        env.push(env_var("KPILOT_ATTEMPT", &ctx.attempt.to_string()));
        if let Some(n) = &node {
            env.push(env_var("KPILOT_NODE", n));
        }
        env.extend(self.env.iter().map(|(k, t)| env_var(k, &t.render(p))));
        let mounts: Vec<VolumeMount> = self
            .volumes
            .iter()
            .enumerate()
            .map(|(n, v)| VolumeMount {
                name: format!("host-{n}"),
                mount_path: v.mount_path.clone(),
                read_only: Some(v.read_only),
                ..VolumeMount::default()
            })
            .collect();
        let volumes: Vec<Volume> = self
            .volumes
            .iter()
            .enumerate()
            .map(|(n, v)| Volume {
                name: format!("host-{n}"),
                host_path: Some(HostPathVolumeSource {
                    path: v.host_path.clone(),
                    type_: None,
                }),
                ..Volume::default()
            })
            .collect();
        let container = Container {
            name: CONTAINER.into(),
            image: Some(self.image.render(p)),
            command: self
                .command
                .as_ref()
                .map(|c| c.iter().map(|t| t.render(p)).collect()),
            args: (!self.args.is_empty()).then(|| self.args.iter().map(|t| t.render(p)).collect()),
            env: Some(env),
            resources: self.resources.clone(),
            security_context: self.privileged.then(|| SecurityContext {
                privileged: Some(true),
                ..SecurityContext::default()
            }),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            termination_message_path: match &self.result {
                ResultFrom::File(path) => Some(path.clone()),
                _ => None,
            },
            termination_message_policy: Some("File".into()),
            ..Container::default()
        };
        let limit = kpilot_engine::task::time_limit().unwrap_or(DEFAULT_DEADLINE);
        let pod = PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            service_account_name: self.service_account.clone(),
            host_network: self.host_network.then_some(true),
            host_pid: self.host_pid.then_some(true),
            node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
            tolerations: (!self.tolerations.is_empty()).then(|| self.tolerations.clone()),
            volumes: (!volumes.is_empty()).then_some(volumes),
            // A backstop for when kpilot is gone: the kubelet ends the Pod a
            // minute after the step's own time limit.
            active_deadline_seconds: Some(
                i64::try_from(limit.as_secs())
                    .unwrap_or(i64::MAX)
                    .saturating_add(60),
            ),
            ..PodSpec::default()
        };
        Launch {
            owner: Owner {
                run: ctx.run_id.to_string(),
                step: ctx.step_id.to_string(),
                instance: ctx.instance.to_string(),
                attempt: ctx.attempt,
            },
            namespace: self.namespace.render(p),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            pod,
            node,
        }
    }

    /// Takes over the object a lost attempt left, or clears away what an
    /// ended one could not delete, and creates this attempt's object.
    async fn start(
        &self,
        ctx: &TaskContext,
        client: &kube::Client,
        launch: &Launch,
    ) -> Result<Tracked, ImageError> {
        let key = launch.owner.ledger_key();
        if let Some(entry) = ctx
            .ledger
            .get(&key)
            .and_then(|v| serde_json::from_value::<LedgerEntry>(v).ok())
        {
            let earlier = Objects::new(client.clone(), &entry.namespace);
            if !entry.ended && !ctx.retried {
                match earlier.observe(entry.kind, &entry.name).await? {
                    Observed::Gone => {}
                    _ => {
                        tracing::info!(object = %entry.name, attempt = entry.attempt, "taking over the object of a lost attempt");
                        return Ok(Tracked {
                            kind: entry.kind,
                            objects: earlier,
                            namespace: entry.namespace,
                            name: entry.name,
                            taken_over: Some(entry.attempt),
                        });
                    }
                }
            } else {
                // A person asked for a new attempt, or the last one ended:
                // never two objects of one step's instance at once.
                let gone = earlier
                    .delete(entry.kind, &entry.name, DELETE_BUDGET)
                    .await?;
                if !gone {
                    return Err(ImageError::Refused {
                        message: format!(
                            "{} `{}/{}` of attempt {} is still being deleted",
                            entry.kind.as_str(),
                            entry.namespace,
                            entry.name,
                            entry.attempt
                        ),
                        hint: "retry once it is gone".into(),
                    });
                }
            }
            ledger_remove(ctx, &key).await;
        }
        let objects = Objects::new(client.clone(), &launch.namespace);
        objects.check(launch).await?;
        let name = launch.owner.object_name();
        let entry = LedgerEntry {
            kind: launch.kind(),
            namespace: launch.namespace.clone(),
            name: name.clone(),
            attempt: ctx.attempt,
            ended: false,
        };
        let value = serde_json::to_value(&entry).unwrap_or(Value::Null);
        ctx.ledger
            .record(&key, &value)
            .await
            .map_err(|e| ImageError::Connect(format!("the run's ledger: {e}")))?;
        let existed = objects.create(launch).await?;
        if existed {
            tracing::info!(object = %name, "the object of this attempt exists already; waiting for it");
        }
        Ok(Tracked {
            kind: launch.kind(),
            objects,
            namespace: launch.namespace.clone(),
            name,
            taken_over: None,
        })
    }

    /// The verdict over what the container ended with.
    fn judge(&self, ended: &Ended, ctx: &TaskContext) -> (Option<String>, Value) {
        if let Some(failure) = &ended.failure {
            return (Some(failure.clone()), Value::Null);
        }
        let result = match (&self.result, &ended.message) {
            (ResultFrom::ExitCode, _) => Value::Null,
            (_, None) => Value::Null,
            (_, Some(text)) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
        };
        let code = ended.exit_code.unwrap_or(-1);
        if let Some(expect) = &self.expect {
            let scope = Scope::with(&[
                ("result", &result),
                ("exitCode", &json!(code)),
                ("params", &json!(*ctx.params)),
                ("node", &json!(ended.node.clone().unwrap_or_default())),
            ]);
            return match expect.eval_bool(&scope) {
                Ok(true) => (None, result),
                Ok(false) => (
                    Some(format!(
                        "`{}` does not hold (exit code {code}, result {})",
                        expect.source(),
                        brief(&result)
                    )),
                    result,
                ),
                Err(e) => (
                    Some(format!(
                        "`{}` cannot be evaluated: {}",
                        expect.source(),
                        e.why()
                    )),
                    result,
                ),
            };
        }
        if code != 0 {
            let why = ended.reason.as_deref().unwrap_or("Error");
            return (
                Some(format!("the container exited with code {code} ({why})")),
                result,
            );
        }
        if self.result != ResultFrom::ExitCode && result.is_null() {
            let place = match &self.result {
                ResultFrom::File(p) => p.as_str(),
                _ => "/dev/termination-log",
            };
            return (
                Some(format!(
                    "the container exited 0 but wrote no result to {place}"
                )),
                result,
            );
        }
        // The Kuberhealthy contract: `{"ok": false, "errors": [...]}` (its
        // own reports spell them `OK` and `Errors`).
        let field = |a: &str, b: &str| result.get(a).or_else(|| result.get(b));
        if field("ok", "OK") == Some(&Value::Bool(false)) {
            let errors: Vec<String> = field("errors", "Errors")
                .and_then(Value::as_array)
                .map(|es| {
                    es.iter()
                        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let said = if errors.is_empty() {
                "no errors given".to_owned()
            } else {
                errors.join("; ")
            };
            return (
                Some(format!("the container reported not ok: {said}")),
                result,
            );
        }
        (None, result)
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn brief(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

async fn ledger_remove(ctx: &TaskContext, key: &str) {
    if let Err(e) = ctx.ledger.remove(key).await {
        tracing::warn!(error = %e, "forgetting a deleted object in the run's ledger");
    }
}

#[async_trait]
impl Task for ImageStep {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let started = Instant::now();
        let limit = kpilot_engine::task::time_limit();
        // A moment before the step's limit: time to delete the object and
        // say what it saw.
        let deadline = started + super::wait_budget(limit, DEFAULT_DEADLINE);
        let client = match self.cluster.client().await {
            Ok(c) => c,
            Err(e) => return TaskOutput::failed(format!("cannot reach the cluster: {e}")),
        };
        let launch = self.launch(ctx);
        let tracked = match self.start(ctx, &client, &launch).await {
            Ok(t) => t,
            Err(e) => {
                return with_output(
                    TaskOutput::failed(e.to_string()),
                    json!({"kind": launch.kind().as_str(), "namespace": launch.namespace, "name": Value::Null}),
                )
            }
        };
        let key = launch.owner.ledger_key();
        let mut out = json!({
            "kind": tracked.kind.as_str(),
            "namespace": tracked.namespace,
            "name": tracked.name,
            "pod": Value::Null,
            "node": launch.node,
            "exitCode": Value::Null,
            "reason": Value::Null,
            "result": Value::Null,
            "logs": Value::Null,
            "takenOver": tracked.taken_over,
            "kept": false,
        });

        // Wait for the verdict.
        let mut pause = Duration::from_millis(100);
        let mut last: String;
        let mut failing_since: Option<Instant> = None;
        let ended = loop {
            match tracked.objects.observe(tracked.kind, &tracked.name).await {
                Ok(Observed::Ended(ended)) => break Ok(ended),
                Ok(Observed::Gone) => {
                    break Err(format!(
                        "{} `{}/{}` was deleted before it gave a verdict (not by kpilot)",
                        tracked.kind.as_str(),
                        tracked.namespace,
                        tracked.name
                    ))
                }
                Ok(Observed::Waiting(what)) => {
                    last = what;
                    failing_since = None;
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > API_PATIENCE {
                        break Err(format!("kpilot lost sight of its object: {e}"));
                    }
                    last = e.to_string();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let took = limit.unwrap_or(DEFAULT_DEADLINE);
                let budget_left = limit
                    .map(|l| (started + l).saturating_duration_since(Instant::now()))
                    .unwrap_or(DELETE_BUDGET)
                    .min(DELETE_BUDGET);
                let deleted = tracked
                    .objects
                    .delete(tracked.kind, &tracked.name, budget_left)
                    .await;
                let what = match &deleted {
                    Ok(_) => {
                        ledger_remove(ctx, &key).await;
                        "kpilot deleted it".to_owned()
                    }
                    Err(e) => format!("kpilot could not delete it ({e})"),
                };
                let failure = format!(
                    "timeout: {} `{}/{}` gave no verdict within {} ({last}); {what}",
                    tracked.kind.as_str(),
                    tracked.namespace,
                    tracked.name,
                    humantime::format_duration(took)
                );
                return with_output(TaskOutput::failed(failure), out);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        };
        let ended = match ended {
            Ok(e) => e,
            Err(failure) => {
                ledger_remove(ctx, &key).await;
                return with_output(TaskOutput::failed(failure), out);
            }
        };

        // Logs, from the kubelet through the API server, when it serves them.
        let mut stdout = Vec::new();
        if let Some(pod) = &ended.pod {
            match tracked.objects.logs(pod).await {
                Ok(text) => {
                    let bytes = text.into_bytes();
                    let from = bytes.len().saturating_sub(OUTPUT_TAIL);
                    stdout = bytes[from..].to_vec();
                    out["logs"] = json!("collected");
                }
                Err(why) => out["logs"] = json!(format!("unavailable: {why}")),
            }
        }
        let (failure, result) = self.judge(&ended, ctx);
        out["pod"] = json!(ended.pod);
        if ended.node.is_some() {
            out["node"] = json!(ended.node);
        }
        out["exitCode"] = json!(ended.exit_code);
        out["reason"] = json!(ended.reason);
        out["result"] = result;

        // Clean up, unless a person wants to look at a failure.
        let mut failure = failure;
        if failure.is_some() && self.keep_on_failure {
            out["kept"] = json!(true);
            ledger_remove(ctx, &key).await;
            if let Some(f) = &mut failure {
                f.push_str(&format!(
                    "; kept {} `{}/{}` (keepOnFailure): delete it with `kubectl -n {} delete {} {}`",
                    tracked.kind.as_str(),
                    tracked.namespace,
                    tracked.name,
                    tracked.namespace,
                    tracked.kind.resource(),
                    tracked.name
                ));
            }
        } else {
            match tracked
                .objects
                .delete(tracked.kind, &tracked.name, DELETE_BUDGET)
                .await
            {
                Ok(_) => ledger_remove(ctx, &key).await,
                Err(e) => {
                    tracing::warn!(error = %e, "deleting the step's object");
                    let entry = LedgerEntry {
                        kind: tracked.kind,
                        namespace: tracked.namespace.clone(),
                        name: tracked.name.clone(),
                        attempt: ctx.attempt,
                        ended: true,
                    };
                    if let Ok(v) = serde_json::to_value(&entry) {
                        if let Err(e) = ctx.ledger.record(&key, &v).await {
                            tracing::warn!(error = %e, "recording an object left behind");
                        }
                    }
                    out["leftBehind"] = json!(e.to_string());
                }
            }
        }
        TaskOutput {
            failure,
            exit_code: ended.exit_code,
            stdout,
            stderr: Vec::new(),
            output: Some(out),
            internal: false,
        }
    }

    async fn left_behind(&self, ctx: &TaskContext) -> Option<String> {
        let entry: LedgerEntry = serde_json::from_value(
            ctx.ledger.get(
                &Owner {
                    run: ctx.run_id.to_string(),
                    step: ctx.step_id.to_string(),
                    instance: ctx.instance.to_string(),
                    attempt: ctx.attempt,
                }
                .ledger_key(),
            )?,
        )
        .ok()?;
        let what = format!(
            "{} `{}/{}`",
            entry.kind.as_str(),
            entry.namespace,
            entry.name
        );
        let client = match self.cluster.client().await {
            Ok(c) => c,
            Err(e) => {
                return Some(format!(
                    "{what} in the ledger, and could not look at it: {e}"
                ))
            }
        };
        let objects = Objects::new(client, &entry.namespace);
        Some(match objects.observe(entry.kind, &entry.name).await {
            Ok(Observed::Gone) => format!("{what} gone from the cluster"),
            Ok(Observed::Waiting(w)) => format!("{what} still running: {w}"),
            Ok(Observed::Ended(e)) => match (e.exit_code, e.failure) {
                (_, Some(f)) => format!("{what} ended: {f}"),
                (Some(code), None) => format!("{what} ended with exit code {code}"),
                (None, None) => format!("{what} ended"),
            },
            Err(e) => format!("{what}, and could not look at it: {e}"),
        })
    }
}

fn with_output(mut output: TaskOutput, value: Value) -> TaskOutput {
    output.output = Some(value);
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Arc<dyn Task>, String> {
        let body: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
        let kind = ImageKind::new(Arc::new(Cluster::new(crate::ClusterConfig::default())));
        kind.parse(
            &body,
            &ParseContext {
                step_id: "probe",
                params: &["target".to_owned()],
            },
        )
    }

    #[test]
    fn a_full_body_parses() {
        parse(
            r#"{image: "reg/probe:{{params.target}}", command: [/probe], args: [--to, "{{params.target}}"],
               env: {LEVEL: debug}, namespace: checks, serviceAccount: probe,
               resources: {requests: {cpu: 100m}}, tolerations: [{key: a, operator: Exists}],
               nodeSelector: {pool: infra}, hostNetwork: true, hostPID: true, privileged: true,
               volumes: [{hostPath: /var/log, mountPath: /host/log}], labels: {team: sre},
               annotations: {a: b}, result: {file: /out/r.json}, expect: "result.ok", keepOnFailure: true}"#,
        )
        .expect("parses");
    }

    #[test]
    fn mistakes_are_named_with_what_to_write() {
        let cases = [
            ("{command: [x]}", "`image.image` is missing"),
            (
                "{image: a, imagePullPolicy: Always}",
                "unknown key `imagePullPolicy`",
            ),
            (
                "{image: a, result: stdout}",
                "`image.result` `stdout` is not known",
            ),
            (
                "{image: a, result: {file: out.json}}",
                "not an absolute path",
            ),
            (
                "{image: a, expect: \"result.ok\"}",
                "the step has no result",
            ),
            (
                "{image: a, volumes: [{hostPath: /x}]}",
                "`image.volumes[0].mountPath` is missing",
            ),
            (
                "{image: a, volumes: [{emptyDir: {}}]}",
                "has no field `emptyDir`",
            ),
            ("{image: a, env: {KPILOT_RUN_ID: x}}", "kpilot's own"),
            ("{image: a, labels: {kpilot.io/run: x}}", "kpilot's own"),
            ("{image: a, args: \"--x\"}", "`image.args` is not a list"),
            ("{image: a, command: []}", "`image.command` is empty"),
            ("{image: \"{{params.nope}}\"}", "does not declare"),
            (
                "{image: a, tolerations: [{operator: 3}]}",
                "`image.tolerations` is not as a Pod writes it",
            ),
            (
                "{image: a, hostPID: yes please}",
                "`image.hostPID` is not true or false",
            ),
        ];
        for (body, wanted) in cases {
            let err = parse(body).expect_err(body);
            assert!(err.contains(wanted), "{body}: {err}");
        }
    }

    fn step(text: &str) -> ImageStep {
        let body: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
        let kind = ImageKind::new(Arc::new(Cluster::new(crate::ClusterConfig::default())));
        kind.body(
            &body,
            &ParseContext {
                step_id: "p",
                params: &[],
            },
        )
        .expect("parses")
    }

    fn ctx() -> TaskContext {
        let run = kpilot_engine::RunId::parse("r").expect("id");
        TaskContext {
            run_id: run.clone(),
            step_id: kpilot_engine::StepId::parse("p").expect("id"),
            instance: InstanceId::global(),
            attempt: 1,
            params: Arc::default(),
            workdir: std::env::temp_dir(),
            facts: kpilot_engine::store::Facts::in_memory(run.clone()),
            ledger: kpilot_engine::store::Ledger::in_memory(run),
            retried: false,
        }
    }

    #[test]
    fn the_pod_runs_the_body_with_params_and_hands_a_result_file_over() {
        let body: serde_yaml::Value = serde_yaml::from_str(
            r#"{image: "reg/probe:{{params.target}}", args: ["--to={{params.target}}"],
               env: {LEVEL: debug}, hostPID: true, privileged: true, result: {file: /out/r.json},
               volumes: [{hostPath: /var/log, mountPath: /host/log}], nodeSelector: {pool: a}}"#,
        )
        .expect("yaml");
        let kind = ImageKind::new(Arc::new(Cluster::new(crate::ClusterConfig::default())));
        let step = kind
            .body(
                &body,
                &ParseContext {
                    step_id: "p",
                    params: &["target".to_owned()],
                },
            )
            .expect("parses");
        let mut c = ctx();
        c.params = Arc::new(BTreeMap::from([("target".to_owned(), "v1.35".to_owned())]));
        c.instance = InstanceId::named("node-1");
        let launch = step.launch(&c);
        assert_eq!(launch.kind(), Kind::Pod);
        let pod = launch.pod();
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.host_pid, Some(true));
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("reg/probe:v1.35"));
        assert_eq!(container.args, Some(vec!["--to=v1.35".to_owned()]));
        assert_eq!(
            container.termination_message_path.as_deref(),
            Some("/out/r.json")
        );
        let env: BTreeMap<String, String> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env.get("PARAM_TARGET").map(String::as_str), Some("v1.35"));
        assert_eq!(env.get("KPILOT_NODE").map(String::as_str), Some("node-1"));
        assert_eq!(env.get("LEVEL").map(String::as_str), Some("debug"));
        let mount = &container.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/host/log", Some(true))
        );
        assert_eq!(
            container
                .security_context
                .as_ref()
                .and_then(|s| s.privileged),
            Some(true)
        );
    }

    fn ended(code: i32, message: Option<&str>) -> Ended {
        Ended {
            pod: Some("p".into()),
            exit_code: Some(code),
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            message: message.map(str::to_owned),
            ..Ended::default()
        }
    }

    #[test]
    fn the_verdict_follows_exit_code_result_and_expect() {
        let s = step("{image: a}");
        assert_eq!(s.judge(&ended(0, None), &ctx()).0, None);
        let (f, _) = s.judge(&ended(3, None), &ctx());
        assert!(f.expect("fails").contains("exited with code 3"));

        let s = step("{image: a, result: termination-message}");
        let (f, r) = s.judge(
            &ended(
                0,
                Some(r#"{"ok": false, "errors": ["dns down", "no route"]}"#),
            ),
            &ctx(),
        );
        assert!(f.expect("fails").contains("dns down; no route"));
        assert_eq!(r["ok"], json!(false));
        let (f, _) = s.judge(&ended(0, None), &ctx());
        assert!(f.expect("fails").contains("wrote no result"));
        let (f, r) = s.judge(&ended(0, Some("plain words")), &ctx());
        assert_eq!((f, r), (None, json!("plain words")));

        let s = step("{image: a, result: termination-message, expect: \"exitCode == 1 && result.found > 2\"}");
        assert_eq!(s.judge(&ended(1, Some(r#"{"found": 3}"#)), &ctx()).0, None);
        let (f, _) = s.judge(&ended(1, Some(r#"{"found": 1}"#)), &ctx());
        assert!(f.expect("fails").contains("does not hold"));
    }
}
