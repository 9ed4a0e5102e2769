//! `kpilot runs`: the runs in the state directory.

use clap::Args;

use super::{Format, StateArgs};
use crate::{render, Exit};

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

pub fn runs(args: RunsArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let state_dir = state.state_dir()?;
    let mut views = Vec::new();
    for id in state_dir.list()? {
        match render::RunView::load(&state_dir, &id) {
            Ok(view) => views.push(view),
            Err(e) => eprintln!("kpilot: run {id}: {e:#}"),
        }
    }
    match args.output {
        Format::Json => {
            let list: Vec<_> = views.iter().map(|v| v.summary_json()).collect();
            crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
        }
        Format::Text => {
            crate::outln!(
                "{:<44} {:<24} {:<10} {:<20} {:<20}",
                "RUN",
                "WORKFLOW",
                "STATE",
                "CREATED",
                "UPDATED"
            )?;
            for v in &views {
                crate::outln!(
                    "{:<44} {:<24} {:<10} {:<20} {:<20}",
                    v.run.id.as_str(),
                    v.run.workflow,
                    v.state_label(),
                    render::time(Some(v.run.created_at)),
                    render::time(Some(v.run.updated_at)),
                )?;
            }
        }
    }
    Ok(Exit::Passed)
}
