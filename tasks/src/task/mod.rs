//! One module per task kind.

pub mod check;
pub mod command;
pub(crate) mod expect;
pub mod node_action;
pub mod script;
pub mod snapshot;
pub mod trace;
pub mod wait;

use kpilot_engine::TaskContext;

use crate::params::env_name;

/// The environment every process of a step gets: its params as `PARAM_*`, and
/// where it runs as `KPILOT_*`.
pub(crate) fn step_env(ctx: &TaskContext) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ctx
        .params
        .iter()
        .map(|(k, v)| (env_name(k), v.clone()))
        .collect();
    env.push(("KPILOT_RUN_ID".into(), ctx.run_id.to_string()));
    env.push(("KPILOT_STEP_ID".into(), ctx.step_id.to_string()));
    env.push(("KPILOT_INSTANCE".into(), ctx.instance.to_string()));
    env.push(("KPILOT_ATTEMPT".into(), ctx.attempt.to_string()));
    env
}
