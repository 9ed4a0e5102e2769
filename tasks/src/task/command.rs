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
            let n = i + 1;
            let text = match item {
                serde_yaml::Value::String(s) => s.clone(),
                // YAML reads `1.10` as the number 1.1: the text written is
                // lost, so a fraction is never passed on as a number.
                serde_yaml::Value::Number(x) if x.is_f64() => {
                    return Err(format!(
                        "argument {n} of `command` is a number with a fraction, which YAML reads as {x} (so `1.10` would run as `1.1`); quote it, like \"1.10\""
                    ))
                }
                serde_yaml::Value::Number(x) => x.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "argument {n} of `command` is a list or a mapping, not a word; write each argument as a string"
                    ))
                }
            };
            if text.contains('\0') {
                return Err(format!(
                    "argument {n} of `command` holds a NUL character, which no program can receive; remove it"
                ));
            }
            if i == 0 && text.trim().is_empty() {
                return Err(format!(
                    "the program (argument 1 of `command`) is empty; {hint}"
                ));
            }
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
