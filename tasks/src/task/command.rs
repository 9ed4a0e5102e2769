//! `command`: an argv run directly, never through a shell.

use std::sync::Arc;

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};

use crate::params::Template;
use crate::process::{self, ProcessSpec};

/// The `command` kind.
#[derive(Debug, Clone, Copy)]
pub struct CommandKind;

/// A parsed `command` body.
#[derive(Debug)]
pub struct Command {
    argv: Vec<Template>,
}

impl TaskKind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }

    fn idempotent_by_default(&self) -> bool {
        false
    }

    fn parse(
        &self,
        body: &serde_yaml::Value,
        ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String> {
        let hint = "write the program and its arguments as a list, like `command: [kubeadm, upgrade, apply, \"{{params.to}}\"]`";
        let Some(items) = body.as_sequence() else {
            return Err(format!("`command` is not a list; {hint}"));
        };
        if items.is_empty() {
            return Err(format!("`command` is empty; {hint}"));
        }
        let mut argv = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let text = match item {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "argument {} of `command` is not a string; quote it",
                        i + 1
                    ))
                }
            };
            argv.push(Template::parse(&text, ctx.params)?);
        }
        Ok(Arc::new(Command { argv }))
    }
}

#[async_trait]
impl Task for Command {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        let spec = ProcessSpec {
            argv: self.argv.iter().map(|t| t.render(&ctx.params)).collect(),
            env: super::step_env(ctx),
            workdir: ctx.workdir.clone(),
        };
        process::run(&spec).await
    }
}
