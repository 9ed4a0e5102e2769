//! The daemon: waits for each schedule's slots, claims each before its run
//! starts, applies the concurrency policy, resumes after a crash what it was
//! driving, keeps the history limit, compares each patrol with the previous
//! one of its schedule and notifies, and keeps `status.json` for
//! `kpilot patrols`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kpilot_engine::store::{StateDir, StoreError};
use kpilot_engine::RunId;
use kpilot_report::findings::{self, Comparison};
use kpilot_report::Report;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::claims::{Claim, ClaimError, Claims, SlotState};
use crate::file::{Patrol, Schedule, Target};
use crate::metrics::ScheduleMetrics;
use crate::notify::{self, Notification};
use crate::slots;

/// What stops the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The claims failed: no slot can be run safely.
    #[error(transparent)]
    Claims(#[from] ClaimError),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `status.json` cannot be written.
    #[error("{path}: cannot write the patrol's status")]
    Status {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How a slot's run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// Passed, failed, blocked, error or interrupted.
    pub state: SlotState,
    /// Why, when it did not pass.
    pub reason: Option<String>,
}

/// What a slot runs: the `kpilot` binary implements it with the code of
/// `kpilot inspect` and `kpilot run`.
#[async_trait::async_trait(?Send)]
pub trait Launcher {
    /// Creates the run `run` for `schedule` and drives it to its end.
    async fn start(&self, schedule: &Schedule, run: &RunId) -> RunEnd;
    /// Drives on the run `run`, left running by a daemon that died.
    async fn resume(&self, schedule: &Schedule, run: &RunId) -> RunEnd;
    /// Records that `run`, stopped by `concurrencyPolicy: Replace`, ends here.
    async fn replaced(&self, run: &RunId);
}

/// What `/metrics` reads while the daemon writes it.
#[derive(Debug, Default)]
pub struct Shared {
    /// Per schedule.
    pub schedules: BTreeMap<String, ScheduleMetrics>,
    /// The report of each schedule's last patrol.
    pub reports: BTreeMap<String, Report>,
}

/// How the daemon ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A signal asked it to stop.
    Signal(&'static str),
    /// `--once`: how each slot it ran ended.
    Once(Vec<SlotState>),
}

/// One schedule's line in `status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// Its name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub time_zone: String,
    /// Forbid, Replace or Allow.
    pub concurrency_policy: String,
    /// `report: FILE` or `workflow: FILE`.
    pub runs: String,
    /// Its last slot, claimed or recorded.
    pub last_slot: Option<DateTime<Utc>>,
    /// What became of it.
    pub last_outcome: Option<SlotState>,
    /// Its next slot, as of `updatedAt`.
    pub next_slot: Option<DateTime<Utc>>,
    /// Every slot kept, newest first.
    pub slots: Vec<Claim>,
}

/// `STATE/patrols/NAME/status.json`: what `kpilot patrols` reads while a
/// daemon holds the claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The patrol.
    pub patrol: String,
    /// Its file.
    pub file: PathBuf,
    /// The daemon's pid.
    pub pid: u32,
    /// Whether the daemon was running when it wrote this.
    pub running: bool,
    /// When it wrote this.
    pub updated_at: DateTime<Utc>,
    /// Its schedules.
    pub schedules: Vec<ScheduleStatus>,
}

/// A patrol's state directory: `STATE/patrols/NAME/`.
pub fn patrol_dir(state: &StateDir, name: &str) -> PathBuf {
    state.root().join("patrols").join(name)
}

/// The status file in a patrol's state directory.
pub fn status_path(dir: &Path) -> PathBuf {
    dir.join("status.json")
}

/// The run id of a slot: the patrol, the schedule and the slot's UTC time,
/// so that a slot names its run whoever starts it.
pub fn run_id(patrol: &str, schedule: &str, slot: DateTime<Utc>) -> RunId {
    let stamp = slot.format("%Y%m%d-%H%M%S").to_string();
    let mut head = format!("{patrol}-{schedule}");
    head.truncate(128 - stamp.len() - 1);
    RunId::parse(&format!("{head}-{stamp}")).unwrap_or_else(|_| RunId::generate(patrol))
}

struct Active {
    run: RunId,
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Done {
    schedule: usize,
    slot: DateTime<Utc>,
    run: RunId,
    end: RunEnd,
    seconds: f64,
}

/// A patrol's daemon.
pub struct Daemon<L> {
    patrol: Patrol,
    state: StateDir,
    dir: PathBuf,
    claims: Claims,
    launcher: Rc<L>,
    shared: Arc<Mutex<Shared>>,
    started: DateTime<Utc>,
    active: Vec<Vec<Active>>,
    tasks: JoinSet<Done>,
    notifications: JoinSet<(usize, Vec<String>)>,
}

impl<L: Launcher + 'static> Daemon<L> {
    /// Takes the patrol's claims (one daemon per patrol).
    pub fn new(patrol: Patrol, state: StateDir, launcher: L) -> Result<Self, DaemonError> {
        let dir = patrol_dir(&state, &patrol.name);
        let claims = Claims::open(&dir)?;
        let mut shared = Shared::default();
        for s in &patrol.schedules {
            shared
                .schedules
                .insert(s.name.clone(), ScheduleMetrics::default());
        }
        let n = patrol.schedules.len();
        Ok(Daemon {
            patrol,
            state,
            dir,
            claims,
            launcher: Rc::new(launcher),
            shared: Arc::new(Mutex::new(shared)),
            started: Utc::now(),
            active: (0..n).map(|_| Vec::new()).collect(),
            tasks: JoinSet::new(),
            notifications: JoinSet::new(),
        })
    }

    /// What `/metrics` serves.
    pub fn shared(&self) -> Arc<Mutex<Shared>> {
        Arc::clone(&self.shared)
    }

    /// Runs until a signal (or, with `once`, until one slot of every
    /// schedule ran). Must run inside a `tokio::task::LocalSet`.
    pub async fn run(mut self, once: bool) -> Result<Ended, DaemonError> {
        let span = tracing::info_span!("patrol", patrol = %self.patrol.name);
        async move {
            let result = self.drive(once).await;
            let _ = self.write_status(false);
            result
        }
        .instrument(span)
        .await
    }

    async fn drive(&mut self, once: bool) -> Result<Ended, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        tracing::info!(file = %self.patrol.file.display(), schedules = self.patrol.schedules.len(), once, "patrol started");
        self.resume_claimed()?;
        let mut pending: Vec<(usize, DateTime<Utc>)> = Vec::new();
        let mut outcomes = Vec::new();
        if once {
            pending = self.once_slots()?;
        }
        self.write_status(true)?;
        let mut stopping: Option<&'static str> = None;
        loop {
            let now = Utc::now();
            if stopping.is_none() {
                if once {
                    let (due, later): (Vec<_>, Vec<_>) =
                        pending.into_iter().partition(|(_, slot)| *slot <= now);
                    pending = later;
                    for (i, slot) in due {
                        self.fire(i, slot)?;
                    }
                } else {
                    self.fire_due(now)?;
                }
                self.write_status(true)?;
            }
            let wake = if stopping.is_some() {
                None
            } else if once {
                pending.iter().map(|(_, s)| *s).min()
            } else {
                self.patrol
                    .schedules
                    .iter()
                    .filter_map(|s| s.cron.next_after(now))
                    .min()
            };
            if self.tasks.is_empty() && (stopping.is_some() || (once && pending.is_empty())) {
                // Notifications of the last patrols go out before the end.
                while let Some(done) = self.notifications.join_next().await {
                    self.notified(done);
                }
                return Ok(match stopping {
                    Some(name) => Ended::Signal(name),
                    None => Ended::Once(outcomes),
                });
            }
            let sleep = wake
                .map(|w| (w - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(sleep), if wake.is_some() => {}
                done = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Some(Ok(done)) = done {
                        outcomes.push(done.end.state);
                        self.ended(done)?;
                    }
                }
                done = self.notifications.join_next(), if !self.notifications.is_empty() => {
                    if let Some(done) = done {
                        self.notified(done);
                    }
                }
                _ = next_signal(&mut term) => stopping = Some(self.stop("SIGTERM")),
                _ = next_signal(&mut int) => stopping = Some(self.stop("SIGINT")),
            }
        }
    }

    /// A signal: no slot starts any more; the runs going on were sent the
    /// same signal, and their schedulers stop and record them.
    fn stop(&mut self, name: &'static str) -> &'static str {
        let running: usize = self.active.iter().map(Vec::len).sum();
        tracing::info!(
            signal = name,
            running,
            "stopping: no new slot starts; the running patrols are recorded as interrupted"
        );
        name
    }

    /// The slot each schedule runs with `--once`: the latest one not yet
    /// claimed, else the next.
    fn once_slots(&self) -> Result<Vec<(usize, DateTime<Utc>)>, DaemonError> {
        let now = Utc::now();
        let mut out = Vec::new();
        for (i, s) in self.patrol.schedules.iter().enumerate() {
            let last = self.claims.of(&s.name)?.last().map(|c| c.slot);
            let latest = s.cron.latest_at_or_before(now);
            let slot = match latest {
                Some(l) if last.is_none_or(|last| l > last) => Some(l),
                _ => s.cron.next_after(now),
            };
            if let Some(slot) = slot {
                out.push((i, slot));
            }
        }
        Ok(out)
    }

    /// After a crash: the slots claimed and never ended are driven on.
    fn resume_claimed(&mut self) -> Result<(), DaemonError> {
        let existing = self.state.list()?;
        for i in 0..self.patrol.schedules.len() {
            let name = self.patrol.schedules[i].name.clone();
            for claim in self.claims.of(&name)? {
                if claim.state != SlotState::Running {
                    continue;
                }
                let Some(run) = claim.run.as_deref().and_then(|r| RunId::parse(r).ok()) else {
                    continue;
                };
                let created = existing.contains(&run);
                tracing::info!(schedule = %name, slot = %claim.slot, run = %run, "resuming the run of a slot claimed before the daemon stopped");
                self.spawn(i, claim.slot, run, created);
            }
        }
        Ok(())
    }

    fn fire_due(&mut self, now: DateTime<Utc>) -> Result<(), DaemonError> {
        for i in 0..self.patrol.schedules.len() {
            let s = &self.patrol.schedules[i];
            let last = self.claims.of(&s.name)?.last().map(|c| c.slot);
            let due = slots::due(&s.cron, last, self.started, now, s.starting_deadline);
            let name = s.name.clone();
            for slot in &due.missed {
                let claim = Claim {
                    schedule: name.clone(),
                    slot: *slot,
                    state: SlotState::Missed,
                    run: None,
                    claimed_at: now,
                    ended_at: None,
                    reason: Some(
                        "no daemon ran at its time, or it came later than startingDeadline".into(),
                    ),
                };
                if self.claims.claim(&claim)? {
                    tracing::warn!(schedule = %name, slot = %slot, "slot missed");
                }
            }
            let missed = due.missed.len() as u64 + due.missed_uncounted;
            if missed > 0 {
                self.with_metrics(&name, |m| m.missed += missed);
            }
            if let Some(slot) = due.run {
                self.fire(i, slot)?;
            }
        }
        Ok(())
    }

    fn with_metrics(&self, schedule: &str, f: impl FnOnce(&mut ScheduleMetrics)) {
        if let Ok(mut shared) = self.shared.lock() {
            f(shared.schedules.entry(schedule.to_owned()).or_default());
        }
    }

    /// A slot is due: the policy decides, then the slot is claimed and its
    /// run starts.
    fn fire(&mut self, i: usize, slot: DateTime<Utc>) -> Result<(), DaemonError> {
        let s = &self.patrol.schedules[i];
        let name = s.name.clone();
        let run = run_id(&self.patrol.name, &name, slot);
        let now = Utc::now();
        if !self.active[i].is_empty() {
            match s.policy {
                crate::Policy::Forbid => {
                    let going: Vec<String> =
                        self.active[i].iter().map(|a| a.run.to_string()).collect();
                    let claim = Claim {
                        schedule: name.clone(),
                        slot,
                        state: SlotState::Skipped,
                        run: None,
                        claimed_at: now,
                        ended_at: None,
                        reason: Some(format!(
                            "concurrencyPolicy Forbid: run {} still goes",
                            going.join(", ")
                        )),
                    };
                    if self.claims.claim(&claim)? {
                        tracing::info!(schedule = %name, slot = %slot, "slot skipped: the previous run still goes (Forbid)");
                        self.with_metrics(&name, |m| m.skipped += 1);
                    }
                    return Ok(());
                }
                crate::Policy::Replace => {
                    for a in &mut self.active[i] {
                        tracing::info!(schedule = %name, run = %a.run, "stopping the running patrol for the new slot (Replace)");
                        if let Some(cancel) = a.cancel.take() {
                            let _ = cancel.send(());
                        }
                    }
                }
                crate::Policy::Allow => {}
            }
        }
        let claim = Claim {
            schedule: name.clone(),
            slot,
            state: SlotState::Running,
            run: Some(run.to_string()),
            claimed_at: now,
            ended_at: None,
            reason: None,
        };
        // Durable before anything runs: a daemon killed from here on finds
        // the claim and resumes this run rather than starting another.
        if !self.claims.claim(&claim)? {
            return Ok(());
        }
        self.spawn(i, slot, run, false);
        Ok(())
    }

    fn spawn(&mut self, i: usize, slot: DateTime<Utc>, run: RunId, resume: bool) {
        let schedule = self.patrol.schedules[i].clone();
        let launcher = Rc::clone(&self.launcher);
        let (cancel, mut cancelled) = tokio::sync::oneshot::channel();
        self.active[i].push(Active {
            run: run.clone(),
            cancel: Some(cancel),
        });
        let span = tracing::info_span!("schedule", schedule = %schedule.name);
        let slot_span = tracing::info_span!(parent: &span, "slot", slot = %slot.to_rfc3339());
        let run_span = tracing::info_span!(parent: &slot_span, "run", run = %run);
        let task = async move {
            let started = std::time::Instant::now();
            tracing::info!(resume, "patrol run starts");
            let drive = async {
                if resume {
                    launcher.resume(&schedule, &run).await
                } else {
                    launcher.start(&schedule, &run).await
                }
            };
            let end = tokio::select! {
                end = drive => end,
                Ok(()) = &mut cancelled => {
                    launcher.replaced(&run).await;
                    RunEnd { state: SlotState::Replaced, reason: Some("concurrencyPolicy Replace: a later slot stopped it".into()) }
                }
            };
            tracing::info!(outcome = end.state.as_str(), reason = end.reason.as_deref().unwrap_or(""), "patrol run ended");
            Done {
                schedule: i,
                slot,
                run,
                end,
                seconds: started.elapsed().as_secs_f64(),
            }
        }
        .instrument(run_span);
        self.tasks.spawn_local(task);
    }

    /// A run ended: record it, count it, compare and notify, keep the history.
    fn ended(&mut self, done: Done) -> Result<(), DaemonError> {
        let s = self.patrol.schedules[done.schedule].clone();
        self.active[done.schedule].retain(|a| a.run != done.run);
        let claim = Claim {
            schedule: s.name.clone(),
            slot: done.slot,
            state: done.end.state,
            run: Some(done.run.to_string()),
            claimed_at: self
                .claims
                .of(&s.name)?
                .iter()
                .find(|c| c.slot == done.slot)
                .map(|c| c.claimed_at)
                .unwrap_or_else(Utc::now),
            ended_at: Some(Utc::now()),
            reason: done.end.reason.clone(),
        };
        self.claims.update(&claim)?;
        self.with_metrics(&s.name, |m| {
            m.observe(done.end.state.as_str(), done.seconds);
            if done.end.state == SlotState::Passed {
                m.last_success = Some(Utc::now().timestamp() as f64);
            }
        });
        if done.end.state.is_completed_run() {
            self.compare(done.schedule, &s, &claim)?;
        }
        self.keep_history(&s)?;
        self.write_status(true)
    }

    fn report_of(&self, run: &str) -> Result<Report, String> {
        let id = RunId::parse(run)?;
        let snapshot = self
            .state
            .snapshot(&id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run {run} has no snapshot"))?;
        Report::from_run(&snapshot.run, &snapshot.steps).map_err(|e| e.to_string())
    }

    /// Compares the patrol with the previous completed one of the schedule
    /// and, when something is new or resolved, notifies.
    fn compare(&mut self, i: usize, s: &Schedule, claim: &Claim) -> Result<(), DaemonError> {
        let Some(run) = claim.run.clone() else {
            return Ok(());
        };
        let report = match self.report_of(&run) {
            Ok(r) => r,
            Err(e) => {
                // Every run has a report; one that cannot be read (a
                // damaged store) must not stop the daemon.
                tracing::warn!(schedule = %s.name, run = %run, error = %e, "the patrol's run has no report: it is not compared and nothing is notified");
                return Ok(());
            }
        };
        let previous = self
            .claims
            .of(&s.name)?
            .into_iter()
            .rfind(|c| c.slot < claim.slot && c.state.is_completed_run() && c.run.is_some());
        let (previous_run, comparison) = match previous.and_then(|c| c.run) {
            Some(prev) => match self.report_of(&prev) {
                Ok(before) => (Some(prev), findings::compare(&before, &report)),
                Err(e) => {
                    tracing::warn!(run = %prev, error = %e, "the previous patrol's report cannot be read: comparing with nothing");
                    (None, all_new(&report))
                }
            },
            None => (None, all_new(&report)),
        };
        if let Ok(mut shared) = self.shared.lock() {
            shared.reports.insert(s.name.clone(), report);
        }
        tracing::info!(
            new = comparison.new.len(),
            resolved = comparison.resolved.len(),
            persisting = comparison.persisting.len(),
            "compared with the previous patrol"
        );
        let Some(notify) = self.patrol.notify.clone() else {
            return Ok(());
        };
        if !comparison.changed() {
            return Ok(());
        }
        let notification = Notification::new(
            &self.patrol.name,
            &s.name,
            &run,
            previous_run.as_deref(),
            claim.slot,
            comparison,
        );
        let span = tracing::info_span!("notify", schedule = %s.name, run = %run);
        self.notifications.spawn_local(
            async move { (i, notify::send(&notify, &notification).await) }.instrument(span),
        );
        Ok(())
    }

    fn notified(&mut self, done: Result<(usize, Vec<String>), tokio::task::JoinError>) {
        let Ok((i, failures)) = done else { return };
        let name = self.patrol.schedules[i].name.clone();
        for f in &failures {
            tracing::error!(schedule = %name, error = %f, "notifier failed after its retries; the patrol is not failed for it");
        }
        let n = failures.len() as u64;
        if n > 0 {
            self.with_metrics(&name, |m| m.notifier_failures += n);
        }
    }

    /// Deletes the runs of `s` beyond its history, oldest first, and the
    /// records of skipped and missed slots older than the oldest run kept.
    fn keep_history(&mut self, s: &Schedule) -> Result<(), DaemonError> {
        let claims = self.claims.of(&s.name)?;
        let runs: Vec<&Claim> = claims
            .iter()
            .filter(|c| c.run.is_some() && c.state != SlotState::Running)
            .collect();
        let keep = s.history as usize;
        if runs.len() <= keep {
            return Ok(());
        }
        let cut = runs.len() - keep;
        let oldest_kept = runs[cut].slot;
        for c in &runs[..cut] {
            let Some(run) = c.run.as_deref().and_then(|r| RunId::parse(r).ok()) else {
                continue;
            };
            match self.state.delete(&run) {
                Ok(()) => {
                    tracing::info!(schedule = %s.name, run = %run, "deleted: beyond the schedule's history");
                    self.claims.remove(&s.name, c.slot)?;
                }
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "cannot delete a run beyond the history; trying again after the next patrol")
                }
            }
        }
        for c in &claims {
            if c.run.is_none() && c.slot < oldest_kept {
                self.claims.remove(&s.name, c.slot)?;
            }
        }
        Ok(())
    }

    fn write_status(&self, running: bool) -> Result<(), DaemonError> {
        let now = Utc::now();
        let mut schedules = Vec::new();
        for s in &self.patrol.schedules {
            let mut slots = self.claims.of(&s.name)?;
            slots.reverse();
            let runs = match &s.target {
                Target::Report(p) => format!("report: {}", p.display()),
                Target::Workflow { file, .. } => format!("workflow: {}", file.display()),
            };
            schedules.push(ScheduleStatus {
                name: s.name.clone(),
                cron: s.cron.text().to_owned(),
                time_zone: s.cron.zone().name().to_owned(),
                concurrency_policy: s.policy.as_str().to_owned(),
                runs,
                last_slot: slots.first().map(|c| c.slot),
                last_outcome: slots.first().map(|c| c.state),
                next_slot: s.cron.next_after(now),
                slots,
            });
        }
        let status = Status {
            patrol: self.patrol.name.clone(),
            file: self.patrol.file.clone(),
            pid: std::process::id(),
            running,
            updated_at: now,
            schedules,
        };
        let path = status_path(&self.dir);
        let tmp = self.dir.join("status.json.tmp");
        let failed = |source| DaemonError::Status {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&status).map_err(|e| failed(e.into()))?;
        std::fs::write(&tmp, bytes).map_err(failed)?;
        std::fs::rename(&tmp, &path).map_err(failed)?;
        Ok(())
    }
}

/// A schedule's first patrol (or one whose previous report is gone):
/// every finding is new.
fn all_new(report: &Report) -> Comparison {
    Comparison {
        new: findings::findings(report),
        ..Comparison::default()
    }
}

async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Reads every patrol's `status.json` in the state directory, sorted by name.
pub fn statuses(state: &StateDir) -> Result<Vec<Status>, String> {
    let dir = state.root().join("patrols");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = status_path(&entry.path());
        match std::fs::read(&path) {
            Ok(bytes) => out.push(
                serde_json::from_slice::<Status>(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    out.sort_by(|a, b| a.patrol.cmp(&b.patrol));
    Ok(out)
}
