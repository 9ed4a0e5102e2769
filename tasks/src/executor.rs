//! The `per-node` executor and custom pools (`spec.executors`): step attempts
//! sent to node agents listed in an inventory.
//!
//! [`executors`] builds every executor a plan can name: `global` (the
//! engine's), `per-node` and one per pool. The scheduler asks each for a
//! step's instances (one per node for a fan-out step, sorted by name) and
//! rolls over them with the step's `nodes.maxParallel` and `maxFailures`.
//!
//! Which inventory a run uses, first match wins:
//! 1. `--inventory FILE` given to `kpilot run` or `kpilot resume`;
//! 2. the inventory the run used before (kept in the run's facts as
//!    [`INVENTORY_FACT`], so `kpilot resume` needs no flag);
//! 3. `spec.inventory`, relative to the run's working directory.
//!
//! A pool with its own `inventory:` uses that file (relative to the working
//! directory). Without any inventory a per-node step fails and says to pass
//! `--inventory`.
//!
//! An inventory with a `cluster:` section lists no agents: they are the
//! cluster's nodes (reached through [`ExecutorOptions::cluster`], the CLI's
//! `--kubeconfig` and `--context`), each at its address of the section's
//! `addressType` and `port`. The node list is read once per run and kept in
//! the run's facts as [`NODES_FACT`] (the fact an unfiltered `cluster.nodes`
//! check shares), so a resume rolls over the same nodes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpilot_engine::executor::{AttemptFuture, Executor, Executors, InstancesFuture};
use kpilot_engine::plan::Placement;
use kpilot_engine::store::Facts;
use kpilot_engine::workflow::ExecutorSpec;
use kpilot_engine::{Body, InstanceId, Plan, PlannedStep, TaskContext, TaskOutput};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::agent::{Agent, AgentClient, AgentError, Inventory, RunRequest, Selector};
use crate::data::{Cluster, ClusterConfig};

/// The fact under which a run keeps the absolute path of its inventory.
pub const INVENTORY_FACT: &str = "kpilot.inventory";

/// The fact under which a run keeps the cluster's node list that a
/// `cluster:` inventory's agents were made from.
pub const NODES_FACT: &str = "cluster.nodes";

/// How long listing the cluster's nodes may keep retrying.
const NODES_BUDGET: Duration = Duration::from_secs(30);

/// What the CLI knows that the plan does not.
#[derive(Debug, Clone, Default)]
pub struct ExecutorOptions {
    /// `--inventory FILE`, absolute.
    pub inventory: Option<PathBuf>,
    /// The run's working directory: `spec.inventory` and pools' `inventory`
    /// are relative to it.
    pub workdir: PathBuf,
    /// The cluster whose nodes a `cluster:` inventory names (`--kubeconfig`,
    /// `--context`); nothing connects unless such an inventory is used.
    pub cluster: ClusterConfig,
}

/// What is wrong with a plan's executors before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A pool's or a step's label selector does not parse.
    #[error("{whose}: {message}")]
    Selector {
        /// `executor POOL` or `step ID`.
        whose: String,
        /// What is wrong.
        message: String,
    },
}

/// Builds `global`, `per-node` and every pool of `plan.executors`.
pub fn executors(plan: &Plan, options: &ExecutorOptions) -> Result<Executors, ExecutorError> {
    let fleet = Arc::new(Fleet {
        cli: options.inventory.clone(),
        spec: plan.inventory.clone(),
        workdir: options.workdir.clone(),
        cluster: Cluster::new(options.cluster.clone()),
        loaded: Mutex::default(),
    });
    for step in &plan.steps {
        if let Some(s) = &step.fan_out.selector {
            Selector::parse(s).map_err(|message| ExecutorError::Selector {
                whose: format!("step {}: nodes.selector", step.id),
                message,
            })?;
        }
    }
    let mut all = Executors::new();
    all.insert(
        "cluster-nodes",
        Arc::new(ClusterNodes {
            fleet: Arc::clone(&fleet),
        }),
    );
    all.insert(
        "per-node",
        Arc::new(PerNode {
            fleet: Arc::clone(&fleet),
            pool: None,
        }),
    );
    for spec in &plan.executors {
        let selector = match &spec.selector {
            Some(s) => Some(
                Selector::parse(s).map_err(|message| ExecutorError::Selector {
                    whose: format!("executor {}", spec.name),
                    message,
                })?,
            ),
            None => None,
        };
        let pool = Pool {
            spec: spec.clone(),
            selector,
            slots: Arc::new(Semaphore::new(spec.concurrency.unwrap_or(usize::MAX >> 4))),
        };
        all.insert(
            spec.name.clone(),
            Arc::new(PerNode {
                fleet: Arc::clone(&fleet),
                pool: Some(pool),
            }),
        );
    }
    Ok(all)
}

/// Where agents come from: inventory files, each read once per process, and
/// the cluster's nodes for an inventory with `cluster:`.
pub struct Fleet {
    cli: Option<PathBuf>,
    spec: Option<String>,
    workdir: PathBuf,
    cluster: Cluster,
    loaded: Mutex<HashMap<PathBuf, Arc<tokio::sync::OnceCell<Arc<Loaded>>>>>,
}

/// An inventory, its agents and a client for each agent that can be reached.
struct Loaded {
    inventory: Inventory,
    /// The inventory's agents, or the cluster's nodes; sorted by name.
    agents: Vec<Agent>,
    clients: BTreeMap<String, AgentClient>,
    /// Cluster nodes without an address to reach: why, by name.
    unaddressed: BTreeMap<String, String>,
}

impl Loaded {
    /// Where the nodes come from, for messages.
    fn source(&self) -> String {
        if self.inventory.cluster.is_some() {
            format!(
                "the cluster's nodes (inventory {})",
                self.inventory.path.display()
            )
        } else {
            format!("the inventory {}", self.inventory.path.display())
        }
    }
}

impl Fleet {
    /// The run's inventory path (see the module docs for the order).
    async fn main_path(&self, facts: &Facts) -> Result<PathBuf, String> {
        if let Some(path) = &self.cli {
            // Remembered for a resume without --inventory; a later
            // --inventory still wins over what is remembered.
            let remembered = path.display().to_string();
            let _ = facts
                .get_or_fetch(INVENTORY_FACT, || async move {
                    Ok(serde_json::Value::String(remembered))
                })
                .await;
            return Ok(path.clone());
        }
        let spec = self.spec.as_ref().map(|s| self.workdir.join(s));
        let found = facts
            .get_or_fetch(INVENTORY_FACT, || async move {
                match spec {
                    Some(p) => Ok(serde_json::Value::String(p.display().to_string())),
                    None => Err("no inventory".to_owned()),
                }
            })
            .await;
        match found.as_deref() {
            Ok(serde_json::Value::String(p)) => Ok(PathBuf::from(p)),
            _ => Err("this step runs on nodes, but no inventory of node agents is known and no cluster is configured: pass --inventory FILE to kpilot run (or resume), or set spec.inventory".to_owned()),
        }
    }

    async fn load(&self, path: &Path, facts: &Facts) -> Result<Arc<Loaded>, String> {
        let cell = {
            let mut loaded = self
                .loaded
                .lock()
                .map_err(|_| "the inventory cache is poisoned".to_owned())?;
            Arc::clone(loaded.entry(path.to_owned()).or_default())
        };
        cell.get_or_try_init(|| self.read(path, facts))
            .await
            .map(Arc::clone)
    }

    /// Reads an inventory and makes its agents' clients; a `cluster:`
    /// inventory's agents are the nodes of the run's node list.
    async fn read(&self, path: &Path, facts: &Facts) -> Result<Arc<Loaded>, String> {
        let inventory = Inventory::read(path).map_err(|e| e.to_string())?;
        let (agents, unaddressed) = if inventory.cluster.is_some() {
            let nodes = facts
                .get_or_fetch(NODES_FACT, || async {
                    self.cluster
                        .nodes(NODES_BUDGET)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| {
                    format!(
                        "inventory {}: its `cluster:` section takes the agents from the cluster's nodes, but they cannot be listed: {e}; check --kubeconfig and --context (or KUBECONFIG) on kpilot run or resume",
                        path.display()
                    )
                })?;
            let made = inventory
                .cluster_agents(&nodes)
                .map_err(|e| e.to_string())?;
            (made.agents, made.unaddressed)
        } else {
            (inventory.agents.clone(), BTreeMap::new())
        };
        let clients = agents
            .iter()
            .filter(|a| !unaddressed.contains_key(&a.name))
            .map(|a| Ok((a.name.clone(), AgentClient::new(&inventory, a)?)))
            .collect::<Result<BTreeMap<_, _>, AgentError>>()
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Loaded {
            inventory,
            agents,
            clients,
            unaddressed,
        }))
    }
}

/// A named pool of `spec.executors`.
struct Pool {
    spec: ExecutorSpec,
    selector: Option<Selector>,
    /// `concurrency` of a pool that runs each step once.
    slots: Arc<Semaphore>,
}

/// `per-node`, or a pool: sends attempts to agents.
struct PerNode {
    fleet: Arc<Fleet>,
    pool: Option<Pool>,
}

impl PerNode {
    async fn inventory(&self, facts: &Facts) -> Result<Arc<Loaded>, String> {
        let path = match self.pool.as_ref().and_then(|p| p.spec.inventory.as_ref()) {
            Some(own) => self.fleet.workdir.join(own),
            None => self.fleet.main_path(facts).await?,
        };
        self.fleet.load(&path, facts).await
    }

    /// The agents of the pool (all of the inventory for `per-node`), by name.
    fn members<'l>(&self, loaded: &'l Loaded) -> Result<Vec<&'l Agent>, String> {
        let Some(pool) = &self.pool else {
            return Ok(loaded.agents.iter().collect());
        };
        let missing: Vec<&str> = pool
            .spec
            .nodes
            .iter()
            .filter(|n| !loaded.agents.iter().any(|a| &a.name == *n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "executor {}: nodes {} are not in {}",
                pool.spec.name,
                missing.join(", "),
                loaded.source()
            ));
        }
        Ok(loaded
            .agents
            .iter()
            .filter(|a| pool.spec.nodes.is_empty() || pool.spec.nodes.contains(&a.name))
            .filter(|a| pool.selector.as_ref().is_none_or(|s| s.matches(&a.labels)))
            .collect())
    }
}

/// The labels that mark a control-plane node (the second one before 1.20).
const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Where a node goes in a step's rollout (`nodes.order`): control-plane
/// nodes first if asked, then by the label's value (nodes without it last),
/// then by name.
fn rollout_key<'a>(step: &PlannedStep, agent: &'a Agent) -> (bool, bool, Option<&'a str>, &'a str) {
    let Some(order) = &step.fan_out.order else {
        return (false, false, None, &agent.name);
    };
    let control_plane = order.control_plane_first
        && CONTROL_PLANE_LABELS
            .iter()
            .any(|l| agent.labels.contains_key(*l));
    let value = order
        .label
        .as_ref()
        .and_then(|l| agent.labels.get(l))
        .map(String::as_str);
    (!control_plane, value.is_none(), value, &agent.name)
}

fn request(step: &PlannedStep, ctx: &TaskContext) -> Result<RunRequest, String> {
    let Body::Task { kind, spec, .. } = &step.body else {
        return Err(format!("a {} step has nothing to run", step.body.kind()));
    };
    Ok(RunRequest {
        kind: (*kind).to_owned(),
        body: spec.clone(),
        run_id: ctx.run_id.to_string(),
        step_id: ctx.step_id.to_string(),
        instance: ctx.instance.to_string(),
        attempt: ctx.attempt,
        params: ctx.params.as_ref().clone(),
        timeout_ms: step.timeout.map(|t| t.as_millis() as u64),
    })
}

impl Executor for PerNode {
    fn instances<'a>(&'a self, step: &'a PlannedStep, facts: &'a Facts) -> InstancesFuture<'a> {
        Box::pin(async move {
            if let (Some(pool), Placement::PoolMember) = (&self.pool, step.placement) {
                // One instance, named after the pool (`global` is the
                // scheduler's own); it runs on the first member that answers.
                return Ok(vec![InstanceId::named(pool.spec.name.clone())]);
            }
            let loaded = self.inventory(facts).await?;
            let selector = match &step.fan_out.selector {
                Some(s) => Some(Selector::parse(s)?),
                None => None,
            };
            let mut chosen: Vec<&Agent> = self
                .members(&loaded)?
                .into_iter()
                .filter(|a| selector.as_ref().is_none_or(|s| s.matches(&a.labels)))
                .collect();
            chosen.sort_by(|a, b| rollout_key(step, a).cmp(&rollout_key(step, b)));
            let names: Vec<String> = chosen.into_iter().map(|a| a.name.clone()).collect();
            if names.is_empty() && !step.members().is_empty() {
                // A group with no node to roll has nothing to do (a cluster
                // with a single control-plane node has no others).
                return Ok(Vec::new());
            }
            if names.is_empty() {
                return Err(format!(
                    "no node of {} matches{}{}",
                    loaded.source(),
                    self.pool
                        .as_ref()
                        .map(|p| format!(" executor {}", p.spec.name))
                        .unwrap_or_default(),
                    step.fan_out
                        .selector
                        .as_ref()
                        .map(|s| format!(" selector `{s}`"))
                        .unwrap_or_default()
                ));
            }
            Ok(names.into_iter().map(InstanceId::named).collect())
        })
    }

    fn run(&self, step: &PlannedStep, ctx: TaskContext) -> AttemptFuture {
        if let (Body::Task { local: true, .. }, Placement::PoolMember) =
            (&step.body, step.placement)
        {
            // The instance is the pool, not a node: there is no node to act
            // on, and no agent does it.
            let kind = step.body.kind();
            let pool = self
                .pool
                .as_ref()
                .map(|p| p.spec.name.clone())
                .unwrap_or_default();
            return Box::pin(async move {
                TaskOutput::failed(format!(
                    "a `{kind}` step acts through the API server for a node, and pool `{pool}` runs a step once, on no node in particular: give the pool `perNode: true` to run it for each of its nodes, or use `executor: global`"
                ))
            });
        }
        if let Body::Task {
            task, local: true, ..
        } = &step.body
        {
            // A Kubernetes action on the instance's node: made here, through
            // the API server, whatever the node's agent could do.
            let task = Arc::clone(task);
            let span = tracing::info_span!("local", node.name = %ctx.instance);
            let limit = step.timeout;
            return Box::pin(
                kpilot_engine::task::within_time_limit(limit, async move { task.run(&ctx).await })
                    .instrument(span),
            );
        }
        let request = match request(step, &ctx) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { TaskOutput::failed(e) }),
        };
        let fans_out = step.placement == Placement::EveryNode;
        let fleet = Arc::clone(&self.fleet);
        // The pool's own parts, cloned so that the future owns them.
        let pool = self.pool.as_ref().map(|p| Pool {
            spec: p.spec.clone(),
            selector: p.selector.clone(),
            slots: Arc::clone(&p.slots),
        });
        let this = PerNode { fleet, pool };
        let span = tracing::info_span!("agent", node.name = %ctx.instance);
        Box::pin(
            async move {
                let loaded = match this.inventory(&ctx.facts).await {
                    Ok(l) => l,
                    Err(e) => return TaskOutput::failed(e),
                };
                let members = match this.members(&loaded) {
                    Ok(m) => m,
                    Err(e) => return TaskOutput::failed(e),
                };
                if fans_out {
                    let name = ctx.instance.as_str();
                    if !members.iter().any(|a| a.name == name) {
                        return TaskOutput::failed(format!(
                            "node {name} is not in {}{}",
                            loaded.source(),
                            this.pool
                                .as_ref()
                                .map(|p| format!(" (executor {})", p.spec.name))
                                .unwrap_or_default()
                        ));
                    }
                    return match loaded.clients.get(name) {
                        Some(client) => client.run(&request).await,
                        None => TaskOutput::failed(
                            loaded
                                .unaddressed
                                .get(name)
                                .cloned()
                                .unwrap_or_else(|| format!("node {name} has no agent client")),
                        ),
                    };
                }
                // Once, on the first member that answers.
                let Some(pool) = &this.pool else {
                    return TaskOutput::failed("a per-node step has no node");
                };
                let Ok(_slot) = pool.slots.acquire().await else {
                    return TaskOutput::failed("the pool is closed");
                };
                let mut tried = Vec::new();
                for agent in members {
                    let Some(client) = loaded.clients.get(&agent.name) else {
                        if let Some(why) = loaded.unaddressed.get(&agent.name) {
                            tried.push(why.clone());
                        }
                        continue;
                    };
                    match client.healthy(Duration::from_secs(3)).await {
                        Ok(()) => {
                            let mut request = request;
                            request.instance = agent.name.clone();
                            tracing::info!(node = %agent.name, "running once on this pool member");
                            return client.run(&request).await;
                        }
                        Err(e) => tried.push(e),
                    }
                }
                TaskOutput::failed(format!(
                    "no agent of executor {} answered: {}",
                    pool.spec.name,
                    if tried.is_empty() {
                        "the pool has no agents".to_owned()
                    } else {
                        tried.join("; ")
                    }
                ))
            }
            .instrument(span),
        )
    }
}

/// `cluster-nodes`: the cluster's nodes, reached through the API server
/// only, for steps that act on nodes from kpilot (cordon, drain, wait; a
/// group whose members run in kpilot for each node). No agent is needed;
/// a step whose body runs on the node itself is refused.
struct ClusterNodes {
    fleet: Arc<Fleet>,
}

impl Executor for ClusterNodes {
    fn instances<'a>(&'a self, step: &'a PlannedStep, facts: &'a Facts) -> InstancesFuture<'a> {
        Box::pin(async move {
            let nodes = facts
                .get_or_fetch(NODES_FACT, || async {
                    self.fleet
                        .cluster
                        .nodes(NODES_BUDGET)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| {
                    format!("executor cluster-nodes cannot list the cluster's nodes: {e}; check --kubeconfig and --context (or KUBECONFIG)")
                })?;
            let selector = match &step.fan_out.selector {
                Some(s) => Some(Selector::parse(s)?),
                None => None,
            };
            let mut chosen: Vec<Agent> = nodes
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|n| {
                    Some(Agent {
                        name: n["name"].as_str()?.to_owned(),
                        address: String::new(),
                        labels: n["labels"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        fingerprint: None,
                    })
                })
                .filter(|a| selector.as_ref().is_none_or(|s| s.matches(&a.labels)))
                .collect();
            chosen.sort_by(|a, b| rollout_key(step, a).cmp(&rollout_key(step, b)));
            if chosen.is_empty() && step.members().is_empty() {
                return Err(format!(
                    "no node of the cluster matches{}",
                    step.fan_out
                        .selector
                        .as_ref()
                        .map(|s| format!(" selector `{s}`"))
                        .unwrap_or_default()
                ));
            }
            Ok(chosen
                .into_iter()
                .map(|a| InstanceId::named(a.name))
                .collect())
        })
    }

    fn run(&self, step: &PlannedStep, ctx: TaskContext) -> AttemptFuture {
        match &step.body {
            Body::Task {
                task, local: true, ..
            } => {
                let task = Arc::clone(task);
                let span = tracing::info_span!("local", node.name = %ctx.instance);
                let limit = step.timeout;
                Box::pin(
                    kpilot_engine::task::within_time_limit(
                        limit,
                        async move { task.run(&ctx).await },
                    )
                    .instrument(span),
                )
            }
            other => {
                let kind = other.kind();
                Box::pin(async move {
                    TaskOutput::failed(format!(
                        "executor cluster-nodes reaches nodes through the API server only, and a `{kind}` step runs on the node itself: use `executor: per-node` with an inventory of agents, or `executor: global` on a member of a group to run it in kpilot for each node"
                    ))
                })
            }
        }
    }
}
