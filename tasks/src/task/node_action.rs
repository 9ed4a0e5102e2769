//! `cordon`, `uncordon` and `drain`: Kubernetes actions on nodes, made from
//! the kpilot process through the API server (see [`crate::actions`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};
use serde_json::json;

use crate::actions::drain::{self, DrainOptions};
use crate::actions::{self, mapping, Cordoned, NodeChoice, Uncordoned};
use crate::data::Cluster;
use crate::params::Template;

/// How long a drain may take when its step has no `timeout`: a drain
/// blocked by a PodDisruptionBudget must end, not hang (kubectl's does).
pub const DRAIN_DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

/// Which of the three actions a kind is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Cordon,
    Uncordon,
    Drain,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Cordon => "cordon",
            Action::Uncordon => "uncordon",
            Action::Drain => "drain",
        }
    }
}

/// The `cordon`, `uncordon` or `drain` kind, sharing the cluster of `check`.
pub struct NodeActionKind {
    action: Action,
    cluster: Arc<Cluster>,
}

impl NodeActionKind {
    /// The `cordon` kind.
    pub fn cordon(cluster: Arc<Cluster>) -> Self {
        NodeActionKind {
            action: Action::Cordon,
            cluster,
        }
    }

    /// The `uncordon` kind.
    pub fn uncordon(cluster: Arc<Cluster>) -> Self {
        NodeActionKind {
            action: Action::Uncordon,
            cluster,
        }
    }

    /// The `drain` kind.
    pub fn drain(cluster: Arc<Cluster>) -> Self {
        NodeActionKind {
            action: Action::Drain,
            cluster,
        }
    }
}

/// A parsed `cordon`, `uncordon` or `drain` body.
#[derive(Debug)]
pub struct NodeAction {
    action: Action,
    nodes: NodeChoice,
    drain: DrainOptions,
    /// `drain.podSelector`, rendered with the run's params.
    pod_selector: Option<Template>,
    cluster: Arc<Cluster>,
}

impl TaskKind for NodeActionKind {
    fn name(&self) -> &'static str {
        self.action.name()
    }

    /// Each action looks at the node before it writes, so running it again
    /// after a crash does what is left and nothing twice.
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
        let kind = self.action.name();
        let fields: &[&str] = match self.action {
            Action::Cordon | Action::Uncordon => &["nodes", "selector"],
            Action::Drain => &[
                "nodes",
                "selector",
                "deleteEmptyDirData",
                "force",
                "gracePeriod",
                "podSelector",
            ],
        };
        let map = mapping(kind, body, fields)?;
        let nodes = NodeChoice::parse(kind, &map, ctx.params)?;
        let mut pod_selector = None;
        let mut drain = DrainOptions::default();
        if self.action == Action::Drain {
            drain.delete_empty_dir_data = actions::flag(kind, &map, "deleteEmptyDirData")?;
            drain.force = actions::flag(kind, &map, "force")?;
            if let Some(v) = map.get("gracePeriod") {
                drain.grace_period = Some(actions::seconds(kind, "gracePeriod", v)?);
            }
            if let Some(v) = map.get("podSelector") {
                let Some(text) = v.as_str() else {
                    return Err("`drain.podSelector` is not a string; write a label selector, like `podSelector: \"app!=kpilot\"`".into());
                };
                if !text.contains("{{") {
                    actions::check_selector(kind, "podSelector", text)?;
                }
                pod_selector = Some(
                    Template::parse(text, ctx.params)
                        .map_err(|e| format!("`drain.podSelector`: {e}"))?,
                );
            }
        }
        Ok(Arc::new(NodeAction {
            action: self.action,
            nodes,
            drain,
            pod_selector,
            cluster: Arc::clone(&self.cluster),
        }))
    }
}

#[async_trait]
impl Task for NodeAction {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let started = Instant::now();
        let kind = self.action.name();
        let nodes = match self
            .nodes
            .resolve(kind, ctx.instance.as_str(), &ctx.params, &self.cluster)
            .await
        {
            Ok(nodes) => nodes,
            Err(e) => return TaskOutput::failed(e),
        };
        let run = ctx.run_id.as_str();
        match self.action {
            Action::Cordon => {
                let (mut cordoned, mut already) = (Vec::new(), Vec::new());
                for node in &nodes {
                    match actions::cordon(
                        &self.cluster,
                        &ctx.ledger,
                        run,
                        ctx.step_id.as_str(),
                        node,
                    )
                    .await
                    {
                        Ok(Cordoned::ByThisRun) => cordoned.push(node.clone()),
                        Ok(Cordoned::Already) => already.push(node.clone()),
                        Err(e) => {
                            return with_output(
                                TaskOutput::failed(e.to_string()),
                                json!({"cordoned": cordoned, "alreadyCordoned": already}),
                            )
                        }
                    }
                }
                with_output(
                    TaskOutput::default(),
                    json!({"cordoned": cordoned, "alreadyCordoned": already}),
                )
            }
            Action::Uncordon => {
                let (mut done, mut left) = (Vec::new(), Vec::new());
                for node in &nodes {
                    match actions::uncordon(&self.cluster, &ctx.ledger, run, node).await {
                        Ok(Uncordoned::Done) => done.push(node.clone()),
                        Ok(Uncordoned::LeftCordoned) => left.push(node.clone()),
                        Ok(Uncordoned::NotCordoned | Uncordoned::Gone) => {}
                        Err(e) => {
                            return with_output(
                                TaskOutput::failed(e.to_string()),
                                json!({"uncordoned": done, "leftCordoned": left}),
                            )
                        }
                    }
                }
                with_output(
                    TaskOutput::default(),
                    json!({"uncordoned": done, "leftCordoned": left}),
                )
            }
            Action::Drain => {
                let deadline = started + drain_budget(kpilot_engine::task::time_limit());
                let mut options = self.drain.clone();
                if let Some(t) = &self.pod_selector {
                    let selector = t.render(&ctx.params);
                    if let Err(e) = actions::check_selector(kind, "podSelector", &selector) {
                        return TaskOutput::failed(e);
                    }
                    options.pod_selector = Some(selector);
                }
                let (report, result) = drain::drain(
                    &self.cluster,
                    &ctx.ledger,
                    ctx.step_id.as_str(),
                    &nodes,
                    &options,
                    deadline,
                )
                .await;
                let output = match result {
                    Ok(()) => TaskOutput::default(),
                    Err(e) => TaskOutput::failed(e),
                };
                with_output(output, report.to_json())
            }
        }
    }
}

/// How long a drain may take: its step's `timeout` less a moment, to end
/// with what blocked it before the engine cuts it off; else the default.
fn drain_budget(limit: Option<Duration>) -> Duration {
    super::wait_budget(limit, DRAIN_DEFAULT_DEADLINE)
}

fn with_output(mut output: TaskOutput, value: serde_json::Value) -> TaskOutput {
    output.output = Some(value);
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: &NodeActionKind, text: &str) -> Result<Arc<dyn Task>, String> {
        let body: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
        kind.parse(
            &body,
            &ParseContext {
                step_id: "s",
                params: &[],
            },
        )
    }

    fn cluster() -> Arc<Cluster> {
        Arc::new(Cluster::new(crate::ClusterConfig::default()))
    }

    #[test]
    fn drain_bodies_are_checked_field_by_field() {
        let drain = NodeActionKind::drain(cluster());
        assert!(parse(&drain, "{deleteEmptyDirData: true, force: true, gracePeriod: 30s, podSelector: \"app!=kpilot\"}").is_ok());
        let e = parse(&drain, "{gracePeriod: soon}").unwrap_err();
        assert!(
            e.contains("`drain.gracePeriod`") && e.contains("30s"),
            "{e}"
        );
        let e = parse(&drain, "{podSelector: \"app in (a\"}").unwrap_err();
        assert!(e.contains("`drain.podSelector`"), "{e}");
        let e = parse(&drain, "{deleteEmptyDir: true}").unwrap_err();
        assert!(
            e.contains("`deleteEmptyDir`") && e.contains("`deleteEmptyDirData`"),
            "{e}"
        );
        let e = parse(&drain, "{force: yes please}").unwrap_err();
        assert!(e.contains("`drain.force`"), "{e}");
    }

    #[test]
    fn cordon_takes_no_drain_fields() {
        let cordon = NodeActionKind::cordon(cluster());
        assert!(parse(&cordon, "{}").is_ok());
        assert!(parse(&cordon, "").is_ok());
        let e = parse(&cordon, "{force: true}").unwrap_err();
        assert!(e.contains("no field `force`"), "{e}");
    }

    #[test]
    fn a_drain_ends_before_its_steps_timeout() {
        assert_eq!(drain_budget(None), DRAIN_DEFAULT_DEADLINE);
        assert_eq!(
            drain_budget(Some(Duration::from_secs(10))),
            Duration::from_secs(9)
        );
        assert_eq!(
            drain_budget(Some(Duration::from_secs(600))),
            Duration::from_secs(595)
        );
    }
}
