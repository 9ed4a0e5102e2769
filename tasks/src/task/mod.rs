//! One module per task kind.

pub mod check;
pub mod command;
pub(crate) mod expect;
pub mod image;
pub mod node_action;
pub mod script;
pub mod snapshot;
pub mod trace;
pub mod wait;

use std::time::Duration;

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

/// A body that is a mapping of `keys` only; the error names the body and
/// says what it takes (`hint`: an example of the body written right).
pub(crate) fn body_mapping<'a>(
    body: &'a serde_yaml::Value,
    kind: &str,
    keys: &[&str],
    hint: &str,
) -> Result<&'a serde_yaml::Mapping, String> {
    let Some(map) = body.as_mapping() else {
        return Err(format!("`{kind}` is not a mapping; {hint}"));
    };
    for key in map.keys() {
        if !key.as_str().is_some_and(|k| keys.contains(&k)) {
            return Err(format!(
                "unknown key `{}` in `{kind}`; it takes {}",
                key.as_str().unwrap_or("(not text)"),
                keys.join(", ")
            ));
        }
    }
    Ok(map)
}

/// How long a task that waits on the cluster may wait: its step's time limit
/// (`timeout`) less a moment (a tenth, at most 5 s), so that it ends itself
/// with what it waited for, and undoes what it must, before the engine cuts
/// it off; `default` when the step has no limit.
pub(crate) fn wait_budget(limit: Option<Duration>, default: Duration) -> Duration {
    match limit {
        Some(limit) => limit.saturating_sub((limit / 10).min(Duration::from_secs(5))),
        None => default,
    }
}
