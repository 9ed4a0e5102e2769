//! `kpilot status RUN`: every step's state, attempts, times and reason.

use clap::Args;
use kpilot_engine::RunId;

use super::{Format, StateArgs, Usage};
use crate::{render, Exit};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run's id.
    run: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

pub fn status(args: StatusArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let id = RunId::parse(&args.run).map_err(Usage)?;
    let state_dir = state.state_dir()?;
    let view = render::RunView::load(&state_dir, &id)?;
    match args.output {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&view.to_json())?)?,
        Format::Text => {
            crate::out!("{}", view.table())?;
            let waiting = view.waiting_text();
            if !waiting.is_empty() {
                crate::out!("waits on a person:\n{waiting}")?;
            }
            crate::out!("{}", view.cordoned_text())?;
        }
    }
    Ok(Exit::Passed)
}
