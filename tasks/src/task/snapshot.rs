//! `snapshot`: keeps the cluster's facts at this point of the run
//! ([`crate::data::snapshot`]) as the step's output, and as the run's fact
//! `snapshot/STEP` that checks and waits read with `snapshots: [STEP]`.
//!
//! ```yaml
//! snapshot:
//!   nodeSelector: "pool=a"          # optional: only these nodes
//!   namespaces: [shop, payments]    # optional: only these namespaces' workloads and pods
//! ```
//!
//! The first snapshot a step takes is the one the run keeps: a retry or a
//! resume after a crash gives the same snapshot again, so "before" stays the
//! state before the change, whatever happened since.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};

use super::expect::snapshot_fact;
use crate::data::snapshot::{take, Scope};
use crate::data::Cluster;
use crate::params::Template;

/// How long each request retries an API server that does not answer.
const BUDGET: Duration = Duration::from_secs(30);

/// The `snapshot` kind; it reads the cluster through the run's [`Cluster`].
#[derive(Debug, Clone)]
pub struct SnapshotKind {
    cluster: Arc<Cluster>,
}

impl SnapshotKind {
    /// Snapshots read through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        SnapshotKind { cluster }
    }
}

/// A parsed `snapshot` body.
#[derive(Debug)]
pub struct Snapshot {
    cluster: Arc<Cluster>,
    scope: Scope,
}

const HINT: &str = "write `snapshot: {}`, or `snapshot: {nodeSelector: \"pool=a\", namespaces: [shop]}` to narrow it";

impl TaskKind for SnapshotKind {
    fn name(&self) -> &'static str {
        "snapshot"
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
        let empty = serde_yaml::Mapping::new();
        let map = match body {
            serde_yaml::Value::Null => &empty,
            serde_yaml::Value::Mapping(m) => m,
            _ => return Err(format!("`snapshot` is not a mapping; {HINT}")),
        };
        for key in map.keys() {
            if !matches!(key.as_str(), Some("nodeSelector" | "namespaces")) {
                return Err(format!(
                    "unknown key `{}` in `snapshot`; it takes nodeSelector, namespaces; {HINT}",
                    key.as_str().unwrap_or("(not text)")
                ));
            }
        }
        let node_selector = match map.get("nodeSelector") {
            None | Some(serde_yaml::Value::Null) => None,
            Some(serde_yaml::Value::String(s)) => Some(
                Template::parse(s, ctx.params).map_err(|e| format!("snapshot.nodeSelector: {e}"))?,
            ),
            Some(_) => {
                return Err(
                    "`snapshot.nodeSelector` must be a label selector in a string, like `nodeSelector: \"pool=a\"`"
                        .into(),
                )
            }
        };
        let namespaces = match map.get("namespaces") {
            None | Some(serde_yaml::Value::Null) => Vec::new(),
            Some(serde_yaml::Value::Sequence(items)) => items
                .iter()
                .map(|item| match item.as_str() {
                    Some(s) => Template::parse(s, ctx.params)
                        .map_err(|e| format!("snapshot.namespaces: {e}")),
                    None => Err("`snapshot.namespaces` must list namespace names, like `namespaces: [shop]`".to_owned()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(
                    "`snapshot.namespaces` must be a list of namespace names, like `namespaces: [shop]`"
                        .into(),
                )
            }
        };
        Ok(Arc::new(Snapshot {
            cluster: Arc::clone(&self.cluster),
            scope: Scope {
                node_selector,
                namespaces,
            },
        }))
    }
}

#[async_trait]
impl Task for Snapshot {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let fact = snapshot_fact(ctx.step_id.as_str());
        let taken = ctx
            .facts
            .get_or_fetch(&fact, || async {
                take(&self.cluster, &self.scope, ctx, BUDGET)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        match taken {
            Ok(snapshot) => {
                let mut stdout = String::new();
                let _ = writeln!(
                    stdout,
                    "snapshot {} at {}: version {}, {} of {} nodes Ready, {} deployments, {} daemon sets, {} pods, {} API versions",
                    ctx.step_id,
                    snapshot["takenAt"].as_str().unwrap_or("?"),
                    snapshot["version"]["gitVersion"].as_str().unwrap_or("?"),
                    snapshot["nodes"]["ready"],
                    snapshot["nodes"]["total"],
                    snapshot["workloads"]["deployments"]["total"],
                    snapshot["workloads"]["daemonSets"]["total"],
                    snapshot["pods"]["total"],
                    snapshot["apis"].as_array().map_or(0, Vec::len),
                );
                TaskOutput {
                    stdout: stdout.into_bytes(),
                    output: Some((*snapshot).clone()),
                    ..TaskOutput::default()
                }
            }
            Err(e) => TaskOutput::failed(format!("the snapshot could not be taken: {e}")),
        }
    }
}
