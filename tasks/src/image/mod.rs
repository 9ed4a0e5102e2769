//! What an image step puts in the cluster, and how kpilot reads it back.
//!
//! On the `global` executor an image step is a Job of one Pod that is never
//! retried by Kubernetes (`backoffLimit: 0`: kpilot's `retry` decides); for a
//! node it is a bare Pod pinned to that node with `nodeName` and tolerating
//! every taint, so that a cordoned or tainted node is inspected too, the way a
//! DaemonSet's pods are. Either carries labels naming the run, step, instance
//! and attempt it belongs to, and the run's ledger names it before it is
//! created: a run resumed after kill -9 finds it again instead of creating a
//! second ([`cluster`]).

pub mod cluster;

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The label every object kpilot creates for an image step carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kpilot");
/// The label (and annotation, in full) naming the run.
pub const RUN_LABEL: &str = "kpilot.io/run";
/// The label (and annotation, in full) naming the step.
pub const STEP_LABEL: &str = "kpilot.io/step";
/// The label (and annotation, in full) naming the instance: `global` or a node.
pub const INSTANCE_LABEL: &str = "kpilot.io/instance";
/// The label naming the attempt that created the object.
pub const ATTEMPT_LABEL: &str = "kpilot.io/attempt";
/// The name of the step's container in the Pod.
pub const CONTAINER: &str = "step";
/// The ledger prefix of the objects image steps created (`image/STEP/INSTANCE`).
pub const LEDGER_PREFIX: &str = "image/";

/// Which object an image step's attempt runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// A Job of one Pod, placed by the scheduler (the `global` executor).
    Job,
    /// A Pod pinned to a node (one instance of a step run on every node).
    Pod,
}

impl Kind {
    /// The kind as Kubernetes names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Pod => "Pod",
        }
    }

    /// The resource as kubectl takes it (`kubectl delete job NAME`).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Pod => "pod",
        }
    }
}

/// The object an attempt made, as the run's ledger keeps it
/// (`image/STEP/INSTANCE`), from before it is created until it is deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    /// A Job or a Pod.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The attempt that created it.
    pub attempt: u32,
    /// Its attempt ended but kpilot could not delete it.
    #[serde(default)]
    pub ended: bool,
}

impl LedgerEntry {
    /// The object as a person names it: `Job ns/name`.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// The objects a run's image steps left in the cluster, by step and
/// instance (`STEP/INSTANCE`): those of attempts kpilot lost, or could not
/// delete.
pub fn left_behind(ledger: &kpilot_engine::store::Ledger) -> Vec<(String, LedgerEntry)> {
    ledger
        .entries(LEDGER_PREFIX)
        .into_iter()
        .filter_map(|(key, value)| {
            let entry = serde_json::from_value(value).ok()?;
            let at = key.strip_prefix(LEDGER_PREFIX).unwrap_or(&key).to_owned();
            Some((at, entry))
        })
        .collect()
}

/// Which run, step, instance and attempt an object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The run's id.
    pub run: String,
    /// The step's id (`GROUP.MEMBER` for a member of a group).
    pub step: String,
    /// `global`, or the node of the instance.
    pub instance: String,
    /// The attempt that creates the object.
    pub attempt: u32,
}

impl Owner {
    /// The object's name: readable (the step's id), unique per run, step,
    /// instance and attempt (a digest of them), and short enough for a Job,
    /// whose name becomes a label value of its Pod (at most 63 characters).
    pub fn object_name(&self) -> String {
        let step: String = self
            .step
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(30)
            .collect::<String>()
            .trim_matches('-')
            .to_ascii_lowercase();
        let digest = short_digest(&[&self.run, &self.step, &self.instance]);
        format!("kpilot-{step}-{digest}-a{}", self.attempt)
    }

    /// The labels that select the object (`kubectl get pods -l kpilot.io/run=RUN`).
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (RUN_LABEL.to_owned(), label_value(&self.run)),
            (STEP_LABEL.to_owned(), label_value(&self.step)),
            (INSTANCE_LABEL.to_owned(), label_value(&self.instance)),
            (ATTEMPT_LABEL.to_owned(), self.attempt.to_string()),
        ])
    }

    /// The same names in full, for the ones a label value cannot hold.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (RUN_LABEL.to_owned(), self.run.clone()),
            (STEP_LABEL.to_owned(), self.step.clone()),
            (INSTANCE_LABEL.to_owned(), self.instance.clone()),
        ])
    }

    /// The ledger entry naming the object of this step's instance.
    pub fn ledger_key(&self) -> String {
        format!("{LEDGER_PREFIX}{}/{}", self.step, self.instance)
    }
}

/// Eight hex digits of SHA-256 over `parts`, stable across kpilot versions.
fn short_digest(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    ctx.finish().as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `text` as a label value: itself when it is one, else its first characters
/// and a digest of the whole (the annotation keeps it in full).
pub fn label_value(text: &str) -> String {
    let valid = text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && text
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric());
    if valid {
        return text.to_owned();
    }
    let head: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(54)
        .collect();
    let head = head.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{}", short_digest(&[text]))
}

/// Everything about the object but who owns it: made by the step's body
/// for one attempt.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The run, step, instance and attempt.
    pub owner: Owner,
    /// Where the object is created.
    pub namespace: String,
    /// `labels` of the body, added to kpilot's.
    pub labels: BTreeMap<String, String>,
    /// `annotations` of the body.
    pub annotations: BTreeMap<String, String>,
    /// The Pod's spec, without placement (`nodeName`, tolerations of the node).
    pub pod: PodSpec,
    /// The node a per-node instance is pinned to; `None` makes a Job.
    pub node: Option<String>,
}

impl Launch {
    /// Which object this launch makes.
    pub fn kind(&self) -> Kind {
        if self.node.is_some() {
            Kind::Pod
        } else {
            Kind::Job
        }
    }

    fn meta(&self) -> ObjectMeta {
        let mut labels = self.labels.clone();
        labels.extend(self.owner.labels());
        let mut annotations = self.annotations.clone();
        annotations.extend(self.owner.annotations());
        ObjectMeta {
            name: Some(self.owner.object_name()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }

    /// The Pod of a per-node instance: pinned, tolerating every taint
    /// (`nodeName` bypasses the scheduler, but the kubelet still refuses a
    /// pod that does not tolerate a NoExecute taint).
    pub fn pod(&self) -> Pod {
        let mut spec = self.pod.clone();
        if let Some(node) = &self.node {
            spec.node_name = Some(node.clone());
            spec.node_selector = None;
            spec.tolerations
                .get_or_insert_with(Vec::new)
                .push(Toleration {
                    operator: Some("Exists".into()),
                    ..Toleration::default()
                });
        }
        Pod {
            metadata: self.meta(),
            spec: Some(spec),
            status: None,
        }
    }

    /// The Job of a global step: one Pod, never retried by Kubernetes, never
    /// deleted by it either (kpilot deletes it once it read the verdict).
    pub fn job(&self) -> Job {
        let meta = self.meta();
        let template_meta = ObjectMeta {
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            ..ObjectMeta::default()
        };
        Job {
            metadata: meta,
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                completions: Some(1),
                parallelism: Some(1),
                template: PodTemplateSpec {
                    metadata: Some(template_meta),
                    spec: Some(self.pod.clone()),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(step: &str, instance: &str, attempt: u32) -> Owner {
        Owner {
            run: "probe-20261202-050000-00ff".into(),
            step: step.into(),
            instance: instance.into(),
            attempt,
        }
    }

    #[test]
    fn object_names_are_short_valid_and_differ_per_instance_and_attempt() {
        let a = owner("workers.probe", "kwok-node-1", 1).object_name();
        let b = owner("workers.probe", "kwok-node-2", 1).object_name();
        let c = owner("workers.probe", "kwok-node-1", 2).object_name();
        assert!(a.starts_with("kpilot-workers-probe-"), "{a}");
        assert!(a.ends_with("-a1"), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        let long = owner(&"x".repeat(128), &"n".repeat(253), 100).object_name();
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn long_or_odd_values_become_valid_labels_that_stay_distinct() {
        assert_eq!(label_value("global"), "global");
        let long = "a".repeat(80);
        let v = label_value(&long);
        assert!(v.len() <= 63, "{v}");
        assert_ne!(label_value(&"a".repeat(81)), v);
        let odd = label_value("node:1");
        assert!(
            odd.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{odd}"
        );
    }

    #[test]
    fn a_node_pod_is_pinned_and_tolerates_every_taint_and_a_job_never_retries() {
        let launch = Launch {
            owner: owner("probe", "kwok-node-1", 1),
            namespace: "checks".into(),
            labels: BTreeMap::from([("team".into(), "sre".into())]),
            annotations: BTreeMap::new(),
            pod: PodSpec {
                node_selector: Some(BTreeMap::from([("pool".into(), "a".into())])),
                ..PodSpec::default()
            },
            node: Some("kwok-node-1".into()),
        };
        let pod = launch.pod();
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("kwok-node-1"));
        assert_eq!(spec.node_selector, None);
        assert!(spec
            .tolerations
            .unwrap_or_default()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()));
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("sre"));
        assert_eq!(labels.get(ATTEMPT_LABEL).map(String::as_str), Some("1"));

        let job = Launch {
            node: None,
            ..launch
        }
        .job();
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, None);
        let template = spec.template.metadata.expect("template metadata");
        assert_eq!(
            template
                .labels
                .expect("labels")
                .get(RUN_LABEL)
                .map(String::as_str),
            Some("probe-20261202-050000-00ff")
        );
    }
}
