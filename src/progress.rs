//! Progress of a run as it happens: a bar on a terminal, plain lines when piped.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};
use kpilot_engine::scheduler::Observer;
use kpilot_engine::state::{EventKind, StepState};
use kpilot_engine::Plan;

/// Prints each durable event of a run to standard error.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(plan: &Plan) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(plan.steps.len() as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn line(&self, text: String) {
        let text = format!("{} {text}", chrono::Local::now().format("%H:%M:%S"));
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Observer for Progress {
    fn event(&self, _plan: &Plan, event: &EventKind) {
        match event {
            EventKind::AttemptStarted { step, attempt, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("running {step}"));
                }
                if *attempt > 1 {
                    self.line(format!("{step}: attempt {attempt}"));
                }
            }
            EventKind::AttemptEnded {
                step,
                attempt,
                succeeded: false,
                reason,
                ..
            } => {
                self.line(format!(
                    "{step}: attempt {attempt} failed: {}",
                    reason.as_deref().unwrap_or("")
                ));
            }
            EventKind::StepChanged {
                step,
                state,
                reason,
                ..
            } => {
                if state.is_final() {
                    if let Some(bar) = &self.bar {
                        bar.inc(1);
                    }
                }
                if *state == StepState::Pending {
                    return;
                }
                match reason {
                    Some(r) => self.line(format!("{step}: {} ({r})", state.as_str())),
                    None => self.line(format!("{step}: {}", state.as_str())),
                }
            }
            EventKind::Vouched { step, reason } => {
                self.line(format!("{step}: vouched as done: {reason}"))
            }
            EventKind::Retried { step } => self.line(format!("{step}: will run again, as asked")),
            EventKind::Approved { step, by, .. } => self.line(format!("{step}: approved by {by}")),
            _ => {}
        }
    }
}
