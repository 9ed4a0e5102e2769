//! `kpilot validate FILE`: check a workflow without running it.

use std::path::PathBuf;

use clap::Args;
use kpilot_engine::validate::Invalid;

use super::{check_inventory, load, print_warnings, Format};
use crate::Exit;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The workflow file.
    file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
    /// Also check this inventory of node agents, as `kpilot run --inventory` would.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
}

pub fn validate(args: ValidateArgs) -> anyhow::Result<Exit> {
    let loaded = load(&args.file, &kpilot_tasks::registry());
    if let Ok((_, plan, _)) = &loaded {
        if let Some(inventory) = &args.inventory {
            check_inventory(inventory)?;
        }
        if args.output == Format::Text {
            print_warnings(plan);
        }
    }
    match (loaded, args.output) {
        (Ok((_, plan, _)), Format::Text) => {
            crate::outln!(
                "{}: valid workflow `{}` with {} steps",
                args.file.display(),
                plan.name,
                plan.steps.len()
            )?;
            Ok(Exit::Passed)
        }
        (Ok((_, plan, _)), Format::Json) => {
            let json = serde_json::json!({
                "valid": true,
                "file": args.file,
                "name": plan.name,
                "steps": plan.steps.iter().map(|s| serde_json::json!({
                    "id": s.id, "phase": s.phase.as_str(), "body": s.body.kind(),
                    "needs": s.needs.iter().map(|n| plan.steps[n.step].id.to_string()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "params": plan.params.iter().map(|p| serde_json::json!({
                    "name": p.name, "default": p.default, "description": p.description,
                })).collect::<Vec<_>>(),
                "warnings": plan.warnings.iter().map(|p| serde_json::json!({
                    "file": p.file, "line": p.line, "step": p.step, "field": p.field,
                    "message": p.message, "text": p.to_string(),
                })).collect::<Vec<_>>(),
            });
            crate::outln!("{}", serde_json::to_string_pretty(&json)?)?;
            Ok(Exit::Passed)
        }
        (Err(e), Format::Json) => match e.downcast_ref::<Invalid>() {
            Some(invalid) => {
                let json = serde_json::json!({
                    "valid": false,
                    "file": args.file,
                    "problems": invalid.problems.iter().map(|p| serde_json::json!({
                        "file": p.file, "line": p.line, "column": p.column,
                        "step": p.step, "field": p.field, "message": p.message,
                        "text": p.to_string(),
                    })).collect::<Vec<_>>(),
                });
                crate::outln!("{}", serde_json::to_string_pretty(&json)?)?;
                Ok(Exit::BadInput)
            }
            None => Err(e),
        },
        (Err(e), Format::Text) => Err(e),
    }
}
