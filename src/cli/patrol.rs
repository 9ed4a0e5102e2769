//! `kpilot patrol FILE`: a Patrol file's schedules as a foreground daemon
//! (kpilot-schedule does the scheduling; this file parses, calls, prints),
//! and `kpilot patrols`: what each patrol in the state directory did.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kpilot_engine::scheduler::{Decisions, RunOutcome};
use kpilot_engine::state::RunState;
use kpilot_engine::store::RunStore;
use kpilot_engine::RunId;
use kpilot_schedule::daemon::{self, Daemon, Ended, Launcher, RunEnd};
use kpilot_schedule::{Patrol, Schedule, SlotState, Target};

use super::run::{drive_new, NewRun};
use super::{load, replan, ClusterArgs, Format, StateArgs, Usage};
use crate::Exit;

#[derive(Debug, Args)]
pub struct PatrolArgs {
    /// The `kind: Patrol` file.
    file: PathBuf,
    /// Run the due (or else the next) slot of every schedule once, and exit with its outcome.
    #[arg(long)]
    once: bool,
    /// Serve `/metrics` (Prometheus text format) on this address, like 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct PatrolsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

/// Runs each slot as `kpilot inspect` or `kpilot run` would.
struct Cli {
    cluster: ClusterArgs,
    state: StateArgs,
}

/// How a drive of a slot's run ended, as a slot's state.
fn end_of(schedule: &Schedule, result: anyhow::Result<RunOutcome>) -> RunEnd {
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            return RunEnd {
                state: SlotState::Error,
                reason: Some(format!("{e:#}")),
            }
        }
    };
    if let Some(signal) = outcome.stopped_by {
        return RunEnd {
            state: SlotState::Interrupted,
            reason: Some(format!(
                "kpilot received {signal}; run {} is kept as it stopped and can be resumed",
                outcome.snapshot.run.id
            )),
        };
    }
    if !outcome.internal.is_empty() {
        return RunEnd {
            state: SlotState::Error,
            reason: Some(outcome.internal.join("; ")),
        };
    }
    if let Target::Report(_) = schedule.target {
        if let Ok(report) =
            kpilot_report::Report::from_run(&outcome.snapshot.run, &outcome.snapshot.steps)
        {
            let (state, reason) = if report.has_failed() {
                (
                    SlotState::Failed,
                    Some(format!("{} checks failed", report.summary.failed)),
                )
            } else if report.has_error() {
                (
                    SlotState::Blocked,
                    Some(format!(
                        "{} checks could not be checked",
                        report.summary.error
                    )),
                )
            } else {
                (SlotState::Passed, None)
            };
            return RunEnd { state, reason };
        }
    }
    match outcome.state {
        RunState::Succeeded => RunEnd {
            state: SlotState::Passed,
            reason: None,
        },
        RunState::Failed | RunState::Aborted => RunEnd {
            state: SlotState::Failed,
            reason: Some(format!("the run ended {:?}", outcome.state).to_lowercase()),
        },
        RunState::Blocked | RunState::Running => RunEnd {
            state: SlotState::Blocked,
            reason: Some(format!(
                "run {} is blocked: a step waits on a person or could not be checked",
                outcome.snapshot.run.id
            )),
        },
    }
}

impl Cli {
    async fn start_run(&self, schedule: &Schedule, run: &RunId) -> anyhow::Result<RunOutcome> {
        match &schedule.target {
            Target::Report(file) => {
                super::inspect::patrol_inspection(
                    file.clone(),
                    run.to_string(),
                    self.cluster.clone(),
                    &self.state,
                )
                .await
            }
            Target::Workflow { file, params } => {
                let (source, plan, tree) = load(file, &self.cluster.registry())?;
                super::print_warnings(&plan);
                let (outcome, _) = drive_new(
                    NewRun {
                        file: file.clone(),
                        source,
                        plan,
                        tree,
                        overrides: params.clone(),
                        run_id: Some(run.to_string()),
                        inventory: None,
                    },
                    &self.cluster,
                    &self.state,
                )
                .await?;
                Ok(outcome)
            }
        }
    }

    async fn resume_run(&self, run: &RunId) -> anyhow::Result<RunOutcome> {
        let state_dir = self.state.state_dir()?;
        let store = RunStore::open(&state_dir, run)?;
        let record = store.run()?;
        let plan = Arc::new(replan(&record, &self.cluster.registry(), Some(&store))?);
        let executors = super::executors(&plan, None, &record.workdir, &self.cluster)?;
        let progress = crate::progress::Progress::new(&plan);
        let ledger = store.ledger();
        let outcome = kpilot_engine::scheduler::resume(
            Arc::clone(&plan),
            store,
            Decisions {
                by: "kpilot patrol".into(),
                ..Decisions::default()
            },
            "resume",
            executors,
            &progress,
        )
        .await?;
        progress.finish();
        super::after_drive(&plan, &ledger, &outcome, &self.cluster).await;
        Ok(outcome)
    }
}

#[async_trait::async_trait(?Send)]
impl Launcher for Cli {
    async fn start(&self, schedule: &Schedule, run: &RunId) -> RunEnd {
        end_of(schedule, self.start_run(schedule, run).await)
    }

    async fn resume(&self, schedule: &Schedule, run: &RunId) -> RunEnd {
        end_of(schedule, self.resume_run(run).await)
    }

    async fn replaced(&self, run: &RunId) {
        // The run's drive was dropped (its steps' processes killed): mark it
        // aborted, as `kpilot abort` would, so nobody resumes it by mistake.
        // The drive's tasks, aborted with it, let go of the run's database
        // only once this thread runs them to their end: wait for that
        // without blocking it.
        let mut store = Err(anyhow::anyhow!("not opened"));
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            store = self
                .state
                .state_dir()
                .and_then(|dir| RunStore::open(&dir, run).map_err(Into::into));
            match &store {
                Err(e)
                    if matches!(
                        e.downcast_ref(),
                        Some(kpilot_engine::store::StoreError::Busy { .. })
                    ) =>
                {
                    continue
                }
                _ => break,
            }
        }
        let result = (move || -> anyhow::Result<()> {
            let mut store = match store {
                Ok(s) => s,
                // Replaced before its run was created.
                Err(e)
                    if matches!(
                        e.downcast_ref(),
                        Some(kpilot_engine::store::StoreError::NoSuchRun { .. })
                    ) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e),
            };
            store.abort(
                "kpilot patrol".into(),
                Some("concurrencyPolicy Replace: a later slot replaced it".into()),
            )?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(run = %run, error = %format!("{e:#}"), "cannot record the replaced run as aborted");
        }
    }
}

pub async fn patrol(args: PatrolArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    super::regular_file(&args.file, "a `kind: Patrol` YAML file")?;
    let patrol = Patrol::read(&args.file).map_err(|e| Usage(e.to_string()))?;
    let listener = match &args.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Usage(format!("--listen {addr}: cannot listen there: {e}; give a free HOST:PORT like 127.0.0.1:9464"))
        })?),
        None => None,
    };
    let name = patrol.name.clone();
    let daemon = Daemon::new(
        patrol,
        state.state_dir()?,
        Cli {
            cluster: args.cluster.clone(),
            state: state.clone(),
        },
    )
    .map_err(|e| match e {
        daemon::DaemonError::Claims(kpilot_schedule::claims::ClaimError::Busy { .. }) => {
            anyhow::Error::from(Usage(e.to_string()))
        }
        other => other.into(),
    })?;
    if let Some(listener) = listener {
        let addr = listener.local_addr()?;
        eprintln!("kpilot: patrol {name}: serving http://{addr}/metrics");
        let shared = daemon.shared();
        let patrol = name.clone();
        tokio::spawn(async move {
            if let Err(e) = kpilot_schedule::metrics::serve(listener, patrol, shared).await {
                tracing::error!(error = %e, "the /metrics server stopped");
            }
        });
    }
    let local = tokio::task::LocalSet::new();
    let ended = local.run_until(daemon.run(args.once)).await?;
    Ok(match ended {
        Ended::Signal(signal) => {
            eprintln!("kpilot: patrol {name}: stopped by {signal}");
            Exit::Passed
        }
        Ended::Once(states) => {
            let worst = |s: SlotState| states.contains(&s);
            eprintln!(
                "kpilot: patrol {name}: {}; `kpilot patrols` lists them",
                states
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if worst(SlotState::Error) {
                Exit::Internal
            } else if worst(SlotState::Failed) {
                Exit::Failed
            } else if worst(SlotState::Blocked) || worst(SlotState::Interrupted) {
                Exit::Blocked
            } else {
                Exit::Passed
            }
        }
    })
}

pub fn patrols(args: PatrolsArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let mut statuses = daemon::statuses(&state.state_dir()?).map_err(Usage)?;
    // The next slot as of now: the daemon wrote it as of its last change.
    let now = chrono::Utc::now();
    for status in &mut statuses {
        for s in &mut status.schedules {
            if let Ok(zone) = s.time_zone.parse() {
                if let Ok(cron) = kpilot_schedule::slots::Cron::parse(&s.cron, zone) {
                    s.next_slot = cron.next_after(now);
                }
            }
        }
        status.running =
            status.running && std::path::Path::new(&format!("/proc/{}", status.pid)).exists();
    }
    if args.output == Format::Json {
        crate::outln!("{}", serde_json::to_string_pretty(&statuses)?)?;
        return Ok(Exit::Passed);
    }
    if statuses.is_empty() {
        eprintln!("kpilot: no patrol in the state directory; `kpilot patrol FILE` starts one");
        return Ok(Exit::Passed);
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "PATROL".to_string(),
        "SCHEDULE".into(),
        "CRON".into(),
        "LAST SLOT (UTC)".into(),
        "OUTCOME".into(),
        "NEXT SLOT (UTC)".into(),
        "DAEMON".into(),
    ]];
    for status in &statuses {
        for s in &status.schedules {
            rows.push([
                status.patrol.clone(),
                s.name.clone(),
                s.cron.clone(),
                time(s.last_slot),
                s.last_outcome.map(|o| o.as_str()).unwrap_or("-").into(),
                time(s.next_slot),
                if status.running {
                    format!("running (pid {})", status.pid)
                } else {
                    "stopped".into()
                },
            ]);
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        crate::outln!("{}", line.join("  ").trim_end())?;
    }
    Ok(Exit::Passed)
}
