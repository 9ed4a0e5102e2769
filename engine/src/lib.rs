//! kpilot's engine: validates workflows, schedules their steps as a DAG and
//! persists every run so that it survives a crash and resumes after repair.
//!
//! The engine never talks to a cluster or a node. It knows gates and
//! approvals; every other step body is a [`task::Task`] that another crate
//! registers in a [`task::TaskRegistry`].
//!
//! - [`workflow`]: the YAML model; [`validate`]: from text to a [`Plan`].
//! - [`dag`]: the step graph; `when` conditions are [`kpilot_expr::Expr`]s.
//! - [`store`]: one sled database per run; [`state`]: what it keeps.
//! - [`scheduler`]: drives a run; [`executor`]: where attempts run.
//!
//! ```
//! use kpilot_engine::{validate, TaskRegistry, WorkflowSource};
//!
//! let source = WorkflowSource {
//!     path: "drill.yaml".into(),
//!     text: r#"
//! apiVersion: kpilot/v1
//! kind: Workflow
//! metadata: {name: drill}
//! spec:
//!   steps:
//!     - {id: checks-done, phase: pre-check, gate: {}}
//!     - {id: go-ahead, phase: upgrade, needs: [checks-done], approval: {message: "upgrade now?"}}
//! "#.into(),
//! };
//! let plan = validate::validate(&source, &TaskRegistry::new()).expect("valid");
//! assert_eq!(plan.dag.order(), &[0, 1]);
//! ```

pub mod dag;
pub mod duration;
pub mod executor;
pub mod id;
pub mod plan;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod suggest;
pub mod task;
pub mod validate;
pub mod workflow;

pub use id::{InstanceId, RunId, StepId};
pub use plan::{Body, Plan, PlannedStep};
pub use task::{ParseContext, Task, TaskContext, TaskKind, TaskOutput, TaskRegistry};
pub use workflow::WorkflowSource;
