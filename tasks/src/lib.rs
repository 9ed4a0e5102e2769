//! kpilot's task kinds: what a step body does once the engine starts it.
//!
//! Each kind lives in [`task`] and is registered by [`registry`]: `command`
//! (an argv, never through a shell), `script` (a source run by an
//! interpreter), `check` (data read through a [`data`] driver, judged by a CEL
//! expectation with kpilot's functions, [`kpilot_expr`]), `wait` (a check's query
//! polled until its expectation holds), `snapshot` (the cluster's facts kept
//! with the run, for checks and `kpilot diff` to compare against) and `trace`
//! (packet drops traced with eBPF, judged by CEL).
//! Processes are started by [`process`], which owns their process groups so
//! that a timeout or a stop kills everything they started.
//! [`apis`] finds removed and deprecated Kubernetes APIs in manifests and in a
//! cluster; checks read it through `query: {removedApis: ...}` ([`data::apis`]).
//! [`actions`] cordons, uncordons and drains nodes (`cordon`, `uncordon`,
//! `drain`) and undoes a run's cordons (node safety).
//! [`upgrade`] plans an upgrade: its hops, what each removes and needs.
//! [`image`] runs an `image` step's container in the cluster, as a Job or a
//! Pod pinned to a node, exactly once per attempt.

pub mod actions;
pub mod agent;
pub mod apis;
pub mod data;
pub mod executor;
pub mod image;
pub mod node;
pub mod params;
pub mod process;
pub mod task;
pub mod upgrade;

use std::sync::Arc;

use kpilot_engine::TaskRegistry;

pub use data::ClusterConfig;

pub use executor::{executors, ExecutorError, ExecutorOptions};

/// A registry with every task kind of this crate; `check` steps reach the
/// cluster as kubectl would with no flags (`$KUBECONFIG`, `~/.kube/config`,
/// then in-cluster).
pub fn registry() -> TaskRegistry {
    registry_with(ClusterConfig::default())
}

/// A registry with every task kind of this crate; `check` steps reach the
/// cluster through `cluster` (the CLI's `--kubeconfig` and `--context`).
/// Nothing connects until a check queries `cluster.*`.
pub fn registry_with(cluster: ClusterConfig) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    // One cluster for every kind: one connection, made on first use.
    let cluster = Arc::new(data::Cluster::new(cluster));
    registry.register(Box::new(task::check::CheckKind::new(Arc::clone(&cluster))));
    registry.register(Box::new(task::node_action::NodeActionKind::cordon(
        Arc::clone(&cluster),
    )));
    registry.register(Box::new(task::node_action::NodeActionKind::uncordon(
        Arc::clone(&cluster),
    )));
    registry.register(Box::new(task::node_action::NodeActionKind::drain(
        Arc::clone(&cluster),
    )));
    registry.register(Box::new(task::wait::WaitKind::new(Arc::clone(&cluster))));
    registry.register(Box::new(task::image::ImageKind::new(Arc::clone(&cluster))));
    registry.register(Box::new(task::snapshot::SnapshotKind::new(cluster)));
    registry.register(Box::new(task::command::CommandKind));
    registry.register(Box::new(task::script::ScriptKind));
    registry.register(Box::new(task::trace::TraceKind));
    registry.set_selector_check(|s| agent::Selector::parse(s).map(|_| ()));
    registry
}
