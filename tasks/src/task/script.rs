//! `script`: a source run by `/bin/sh`, or by an interpreter the step names.

use std::io::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};

use crate::params::env_name;
use crate::process::{self, ProcessSpec};

/// The `script` kind.
#[derive(Debug, Clone, Copy)]
pub struct ScriptKind;

/// A parsed `script` body.
#[derive(Debug)]
pub struct Script {
    interpreter: Vec<String>,
    source: String,
}

impl TaskKind for ScriptKind {
    fn name(&self) -> &'static str {
        "script"
    }

    fn idempotent_by_default(&self) -> bool {
        false
    }

    fn parse(
        &self,
        body: &serde_yaml::Value,
        _ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String> {
        let hint = "write `script: |` and the source, or `script: {interpreter: [python3], source: \"...\"}`";
        match body {
            serde_yaml::Value::String(source) => Ok(Arc::new(Script {
                interpreter: vec!["/bin/sh".to_owned()],
                source: source.clone(),
            })),
            serde_yaml::Value::Mapping(m) => {
                for key in m.keys() {
                    match key.as_str() {
                        Some("interpreter" | "source") => {}
                        Some(other) => {
                            return Err(format!("unknown key `{other}` in `script`; {hint}"))
                        }
                        None => return Err(format!("a key of `script` is not text; {hint}")),
                    }
                }
                let source = body
                    .get("source")
                    .and_then(|s| s.as_str())
                    .ok_or_else(|| format!("`script.source` is missing or not a string; {hint}"))?;
                let interpreter = match body.get("interpreter") {
                    None => vec!["/bin/sh".to_owned()],
                    Some(serde_yaml::Value::Sequence(items)) if !items.is_empty() => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("`script.interpreter` must list strings; {hint}"))?,
                    Some(_) => {
                        return Err(format!(
                        "`script.interpreter` must be a non-empty list, like [python3, -u]; {hint}"
                    ))
                    }
                };
                if interpreter[0].trim().is_empty() {
                    return Err(format!(
                        "`script.interpreter` names an empty program; {hint}"
                    ));
                }
                if interpreter.iter().any(|a| a.contains('\0')) {
                    return Err(
                        "`script.interpreter` holds a NUL character, which no program can receive; remove it"
                            .to_owned(),
                    );
                }
                Ok(Arc::new(Script {
                    interpreter,
                    source: source.to_owned(),
                }))
            }
            _ => Err(format!(
                "`script` is neither a string nor a mapping; {hint}"
            )),
        }
    }

    /// Scripts are not templated: `{{params.x}}` stays as written, and the
    /// value is in `$PARAM_X`.
    fn warnings(&self, body: &serde_yaml::Value, _ctx: &ParseContext<'_>) -> Vec<String> {
        let source = match body {
            serde_yaml::Value::String(s) => s.as_str(),
            other => other.get("source").and_then(|s| s.as_str()).unwrap_or(""),
        };
        let mut out = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            if let Some(name) = after[..end].trim().strip_prefix("params.") {
                let warning = format!(
                    "`{{{{params.{name}}}}}` in a script is not replaced (only `command` arguments are templated); the script gets the value as ${}",
                    env_name(name)
                );
                if !out.contains(&warning) {
                    out.push(warning);
                }
            }
            rest = &after[end + 2..];
        }
        out
    }
}

#[async_trait]
impl Task for Script {
    async fn run(&self, ctx: &TaskContext) -> TaskOutput {
        // The source goes to a file, so that any interpreter can read it and
        // the script's own standard input stays free.
        let file = tempfile::Builder::new()
            .prefix(&format!("kpilot-{}-", ctx.step_id))
            .tempfile()
            .and_then(|mut f| f.write_all(self.source.as_bytes()).map(|_| f));
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                return TaskOutput::failed(format!(
                    "cannot write the script to a temporary file: {e}"
                ))
            }
        };
        let mut argv = self.interpreter.clone();
        argv.push(file.path().display().to_string());
        let spec = ProcessSpec {
            argv,
            env: super::step_env(ctx),
            workdir: ctx.workdir.clone(),
        };
        process::run(&spec).await
    }
}
