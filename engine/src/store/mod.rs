//! The run store: one embedded sled database per run, owned by one process at a time.
//!
//! Each sled tree has a module of its own: [`runs`] (with the `commits` tree,
//! the count of commits), [`steps`], [`journal`] and [`outputs`]. Writers
//! describe what changed in a [`Change`]; [`RunStore::commit`] applies it in
//! one transaction (a few for a very large change) and makes it durable
//! before returning, so the scheduler can announce a side effect only after
//! it is on disk.

pub mod facts;
pub mod journal;
pub mod ledger;
pub mod outputs;
pub mod parsed;
pub mod runs;
pub mod steps;

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use sled::transaction::{TransactionError, Transactional};

use crate::id::{InstanceId, RunId, StepId};
use crate::state::{Event, EventKind, RunRecord, StepRecord};

pub use facts::Facts;
pub use ledger::Ledger;
pub use outputs::StoredOutput;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No run has this id in the state directory.
    #[error("no run `{id}` in {dir}")]
    NoSuchRun {
        /// The id asked for.
        id: RunId,
        /// The state directory.
        dir: PathBuf,
    },
    /// A run with this id exists already.
    #[error("a run `{id}` already exists in {dir}")]
    RunExists {
        /// The id asked for.
        id: RunId,
        /// The state directory.
        dir: PathBuf,
    },
    /// Another process holds the run.
    #[error("run `{id}` is being driven by another process{}; wait for it to end, or stop it, then try again", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        /// The run.
        id: RunId,
        /// The process holding it, when it wrote its pid.
        pid: Option<u32>,
    },
    /// The state directory cannot hold runs (a file, not writable, …): the
    /// user's `--state-dir` is wrong.
    #[error("state directory {dir} cannot be used (check --state-dir or KPILOT_STATE_DIR)")]
    StateDir {
        /// The state directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A run's files are damaged: its database does not open or a record
    /// does not decode.
    #[error("run `{id}`: its files in {dir} are damaged ({cause}); it cannot be read or resumed")]
    Damaged {
        /// The run.
        id: RunId,
        /// Its directory.
        dir: PathBuf,
        /// What was found, in one line.
        cause: String,
    },
    /// File system trouble around the database.
    #[error("state directory {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// sled failed.
    #[error("run database")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode: the store was written by another version or damaged.
    #[error("stored record {key} does not decode")]
    Decode {
        /// Which record.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The file whose presence says a run was created whole.
const CREATED: &str = "created";

/// The file holding a run's [`Outline`].
const OUTLINE: &str = "outline.json";

/// The most records of one kind one transaction writes (see [`RunStore::commit`]).
const COMMIT_CHUNK: usize = 1024;

/// How long a driver waits for a reader that holds a run for a moment.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who takes a run's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// `run`, `resume`, `approve`: writes, for as long as the drive lasts.
    Driver,
    /// `status`, `runs`, `logs`: reads, for a moment.
    Reader,
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The directory holding every run (`--state-dir`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state directory at `root`; nothing is created until a run is.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Where the state directory is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, id: &RunId) -> PathBuf {
        self.root.join("runs").join(id.as_str())
    }

    /// The ids of every run, sorted.
    pub fn list(&self) -> Result<Vec<RunId>> {
        let dir = self.root.join("runs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::StateDir {
                    dir: self.root.clone(),
                    source,
                })
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| RunId::parse(n).ok())
            {
                if entry.path().join(CREATED).exists() {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Deletes a run and everything kept with it (a patrol's history limit).
    /// Its marker goes first, so a crash halfway leaves no run that lists
    /// but cannot be read; fails with [`StoreError::Busy`] while a process
    /// holds it.
    pub fn delete(&self, id: &RunId) -> Result<()> {
        let dir = self.run_dir(id);
        if !dir.join(CREATED).exists() {
            return match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&dir)(e)),
            };
        }
        let _lock = RunStore::lock(id, &dir, Holder::Driver)?;
        let marker = dir.join(CREATED);
        std::fs::remove_file(&marker).map_err(io_err(&marker))?;
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }

    /// The outline of a run's plan, when one was written (runs created
    /// before outlines were kept have none) and reads whole.
    pub fn outline(&self, id: &RunId) -> Option<Outline> {
        let bytes = std::fs::read(self.run_dir(id).join(OUTLINE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The last snapshot the driving process wrote, for reading a run that
    /// another process holds.
    pub fn snapshot(&self, id: &RunId) -> Result<Option<Snapshot>> {
        let path = self.run_dir(id).join("snapshot.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Decode {
                        key: path.display().to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// A run and its steps as of some moment, written as JSON beside the database
/// so that other processes can read a run that is being driven.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The run.
    pub run: RunRecord,
    /// Every step instance.
    pub steps: Vec<(StepId, InstanceId, StepRecord)>,
    /// The store's count of commits the snapshot shows (none in snapshots
    /// written before commits were counted): a reader that finds the
    /// store's count equal reads the snapshot instead of the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<u64>,
}

/// A run's steps in its plan's order, with what `status` shows of each
/// besides its record: written once, when the run is created, so that
/// reading a run never has to validate its workflow again (a second for
/// 100,000 steps).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Outline {
    /// Every step of the plan, in its order.
    pub steps: Vec<OutlineStep>,
}

/// One step of an [`Outline`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OutlineStep {
    /// The step's id.
    pub id: StepId,
    /// Its phase, as written (`pre-check`, `upgrade`, …).
    pub phase: String,
    /// Its body's kind (`command`, `check`, `gate`, …).
    pub kind: String,
}

/// Everything one commit changes.
#[derive(Debug, Default)]
pub struct Change {
    /// The run record, when it changed.
    pub run: Option<RunRecord>,
    /// Step records that changed.
    pub steps: Vec<(StepId, InstanceId, StepRecord)>,
    /// Events to append to the journal.
    pub events: Vec<EventKind>,
    /// Output of ended attempts.
    pub outputs: Vec<(StepId, InstanceId, u32, StoredOutput)>,
    /// The run's facts generation, when a step that changes what checks
    /// look at ended (see [`Facts::generation`]).
    pub facts_generation: Option<u64>,
}

impl Change {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.run.is_none()
            && self.steps.is_empty()
            && self.events.is_empty()
            && self.outputs.is_empty()
            && self.facts_generation.is_none()
    }
}

/// An open run, held by this process until dropped.
pub struct RunStore {
    id: RunId,
    dir: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    steps: sled::Tree,
    journal: sled::Tree,
    outputs: sled::Tree,
    facts: sled::Tree,
    ledger: sled::Tree,
    next_seq: u64,
    /// Commits so far (see [`Snapshot::commits`]).
    commits: u64,
    /// Where `commits` is kept (see [`runs::commits`]).
    commits_tree: sled::Tree,
    durable: Durable,
    _lock: File,
}

/// Makes what sled flushed survive a power cut. sled 0.34 ends a flush with
/// `sync_file_range`, which neither empties the drive's write cache nor
/// writes the file's metadata (sled issue #1452), so every commit that
/// precedes a side effect is followed by an `fdatasync` of sled's log file
/// and of any blob file (large values) it wrote since the last commit.
///
/// Public for the other sled databases kpilot keeps (the patrol's claims),
/// which must be as durable as a run's before they allow a side effect.
pub struct Durable {
    log: File,
    blobs: PathBuf,
    synced_blobs: std::collections::HashSet<std::ffi::OsString>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("blobs", &self.blobs)
            .finish()
    }
}

impl Durable {
    /// Opens the files of the sled database at `db` (the directory given to
    /// `sled::Config::path`) and syncs them once.
    pub fn open(db: &Path) -> Result<Self> {
        let log_path = db.join("db");
        let log = File::open(&log_path).map_err(io_err(&log_path))?;
        // The files sled just created must be found after a power cut too.
        File::open(db)
            .and_then(|d| d.sync_all())
            .map_err(io_err(db))?;
        let mut durable = Durable {
            log,
            blobs: db.join("blobs"),
            synced_blobs: Default::default(),
        };
        durable.sync()?;
        Ok(durable)
    }

    /// Makes what the last `flush` of the database wrote survive a power cut.
    pub fn sync(&mut self) -> Result<()> {
        self.log
            .sync_data()
            .map_err(io_err(&self.blobs.with_file_name("db")))?;
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&self.blobs)(e)),
        };
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.blobs))?;
            let name = entry.file_name();
            if self.synced_blobs.contains(&name) {
                continue;
            }
            let path = entry.path();
            match File::open(&path) {
                Ok(f) => f.sync_data().map_err(io_err(&path))?,
                // sled removes blobs it no longer needs.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
            self.synced_blobs.insert(name);
            new = true;
        }
        if new {
            File::open(&self.blobs)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.blobs))?;
        }
        Ok(())
    }
}

/// Opens the sled database at `db` (the directory given to
/// `sled::Config::path`) with kpilot's settings: no background flush, every
/// flush is the caller's.
///
/// sled 0.34 writes a snapshot of its page table each time it opens a
/// database, as `snap.LSN.generating`, synced, then renamed to `snap.LSN`;
/// but it reads the newest `snap.*` file, `.generating` ones included. A
/// process killed while it opened the database (a `kpilot status` or a
/// resume killed at the wrong moment) so leaves a part-written snapshot that
/// makes every later open fail as corrupted. Such a file is only ever the
/// unfinished copy of what the log and the previous snapshot still hold, so
/// when an open fails as corrupted with one there, it is removed and the
/// database opened again.
pub fn open_db(db: &Path, cache_capacity: u64) -> sled::Result<sled::Db> {
    let open = || {
        sled::Config::new()
            .path(db)
            .cache_capacity(cache_capacity)
            .flush_every_ms(None)
            .open()
    };
    match open() {
        Err(sled::Error::Corruption { .. }) if remove_unfinished_snapshots(db)? => open(),
        other => other,
    }
}

/// Removes the `snap.*.generating` files in `db`; says whether there were any.
fn remove_unfinished_snapshots(db: &Path) -> sled::Result<bool> {
    let mut removed = false;
    for entry in std::fs::read_dir(db)? {
        let path = entry?.path();
        let unfinished = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|name| name.starts_with("snap.") && name.ends_with(".generating"));
        if unfinished {
            tracing::warn!(file = %path.display(), "removing a sled snapshot whose writing was interrupted");
            std::fs::remove_file(&path)?;
            removed = true;
        }
    }
    Ok(removed)
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish()
    }
}

impl RunStore {
    /// Creates a run; fails if one with the same id exists.
    pub fn create(state: &StateDir, record: &RunRecord) -> Result<Self> {
        let dir = state.run_dir(&record.id);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::StateDir {
            dir: state.root.clone(),
            source,
        })?;
        let lock = Self::lock(&record.id, &dir, Holder::Driver)?;
        let exists = || StoreError::RunExists {
            id: record.id.clone(),
            dir: state.root.clone(),
        };
        if dir.join(CREATED).exists() {
            return Err(exists());
        }
        // A database without the marker is what a crash during an earlier
        // creation left: no run was ever announced from it, so start afresh
        // rather than trust whatever half-written state it holds.
        let db = dir.join("db");
        if db.exists() {
            std::fs::remove_dir_all(&db).map_err(io_err(&db))?;
        }
        let mut store = Self::open_locked(record.id.clone(), dir.clone(), lock, Holder::Driver)?;
        store.commit(Change {
            run: Some(record.clone()),
            events: vec![EventKind::RunCreated {
                workflow: record.workflow.clone(),
            }],
            ..Change::default()
        })?;
        // A reader that finds the run (its marker) while the driver holds it
        // reads this snapshot: it must be there before the marker is.
        store.write_snapshot()?;
        // From here on the run exists.
        let marker = dir.join(CREATED);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .and_then(|_| File::open(&dir)?.sync_all())
            .map_err(io_err(&marker))?;
        Ok(store)
    }

    /// Opens an existing run to drive it; fails if another driver holds it.
    /// A reader's brief hold (`status`, `logs`) is waited out.
    pub fn open(state: &StateDir, id: &RunId) -> Result<Self> {
        Self::open_as(state, id, Holder::Driver)
    }

    /// Opens an existing run to read it, for a moment: fails at once with
    /// [`StoreError::Busy`] while a driver holds it (its `snapshot.json` is
    /// then what to read), and never makes a driver fail.
    pub fn open_to_read(state: &StateDir, id: &RunId) -> Result<Self> {
        Self::open_as(state, id, Holder::Reader)
    }

    fn open_as(state: &StateDir, id: &RunId, holder: Holder) -> Result<Self> {
        let dir = state.run_dir(id);
        if !dir.join(CREATED).exists() {
            return Err(StoreError::NoSuchRun {
                id: id.clone(),
                dir: state.root.clone(),
            });
        }
        let lock = Self::lock(id, &dir, holder)?;
        let store =
            Self::open_locked(id.clone(), dir.clone(), lock, holder).map_err(|e| match e {
                StoreError::Sled(e) => StoreError::Damaged {
                    id: id.clone(),
                    dir: dir.clone(),
                    cause: e.to_string(),
                },
                StoreError::Decode { key, source } => StoreError::Damaged {
                    id: id.clone(),
                    dir: dir.clone(),
                    cause: format!("record {key}: {source}"),
                },
                other => other,
            })?;
        // The run record must decode, or nothing about the run can be said.
        store.run().map_err(|e| StoreError::Damaged {
            id: id.clone(),
            dir,
            cause: error_line(&e),
        })?;
        Ok(store)
    }

    /// Takes the run's lock file, or says which process holds it. The file
    /// holds the pid of the last driver; a reader leaves it as it is, so a
    /// driver that finds the lock taken while that pid is gone knows a reader
    /// has it and waits for it.
    fn lock(id: &RunId, dir: &Path, holder: Holder) -> Result<File> {
        let lock_path = dir.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let waited = std::time::Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = lock.rewind();
                    let _ = lock.read_to_string(&mut text);
                    let pid: Option<u32> = text.trim().parse().ok();
                    let driver_alive =
                        pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if holder == Holder::Reader || driver_alive || waited.elapsed() > READER_WAIT {
                        return Err(StoreError::Busy {
                            id: id.clone(),
                            pid: pid.filter(|_| driver_alive),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
            }
        }
        if holder == Holder::Reader {
            return Ok(lock);
        }
        lock.set_len(0).map_err(io_err(&lock_path))?;
        lock.rewind().map_err(io_err(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
        Ok(lock)
    }

    fn open_locked(id: RunId, dir: PathBuf, lock: File, holder: Holder) -> Result<Self> {
        // The process that held the run last may still have sled's own file
        // lock for a moment after it let go of `lock` (its tasks drop their
        // handles last): that is the run being busy, not damaged.
        let waited = std::time::Instant::now();
        let db = loop {
            let opened = open_db(&dir.join("db"), 8 * 1024 * 1024);
            match opened {
                // sled words it "could not acquire lock on …" (kind Other).
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock") =>
                {
                    if holder == Holder::Reader || waited.elapsed() > READER_WAIT {
                        return Err(StoreError::Busy { id, pid: None });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let runs = db.open_tree("runs")?;
        let steps = db.open_tree("steps")?;
        let journal = db.open_tree("journal")?;
        let outputs = db.open_tree("outputs")?;
        let facts = db.open_tree("facts")?;
        let ledger = db.open_tree("ledger")?;
        let next_seq = journal::next_seq(&journal, &id)?;
        let commits_tree = db.open_tree("commits")?;
        let commits = runs::commits(&commits_tree, &id)?;
        let durable = Durable::open(&dir.join("db"))?;
        Ok(RunStore {
            id,
            dir,
            db,
            runs,
            steps,
            journal,
            outputs,
            facts,
            ledger,
            next_seq,
            commits,
            commits_tree,
            durable,
            _lock: lock,
        })
    }

    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run's facts, shared by every task of the run.
    pub fn facts(&self) -> Facts {
        Facts::stored(self.id.clone(), self.facts.clone())
    }

    /// The run's ledger of changes its steps may have to undo.
    pub fn ledger(&self) -> Ledger {
        Ledger::stored(self.id.clone(), self.ledger.clone())
    }

    /// The run record.
    pub fn run(&self) -> Result<RunRecord> {
        runs::get(&self.runs, &self.id)?.ok_or_else(|| StoreError::NoSuchRun {
            id: self.id.clone(),
            dir: self.dir.clone(),
        })
    }

    /// Every step instance's record, sorted by step and instance.
    pub fn steps(&self) -> Result<Vec<(StepId, InstanceId, StepRecord)>> {
        steps::scan(&self.steps, &self.id)
    }

    /// The journal, oldest first.
    pub fn journal(&self) -> Result<Vec<Event>> {
        journal::scan(&self.journal, &self.id)
    }

    /// The kept output of one attempt.
    pub fn output(
        &self,
        step: &StepId,
        instance: &InstanceId,
        attempt: u32,
    ) -> Result<Option<StoredOutput>> {
        outputs::get(&self.outputs, &self.id, step, instance, attempt)
    }

    /// Applies `change` and flushes it to disk before returning.
    ///
    /// A change of up to [`COMMIT_CHUNK`] records of each kind is one
    /// transaction. A larger one (a turn that decides 100,000 gates at once)
    /// is applied as several, in order, then flushed once: sled keeps a
    /// transaction's whole write set in memory, and no side effect the change
    /// announces starts before the flush, so a crash between two of them
    /// leaves records that resume judges as it judges any crash (a step
    /// recorded running whose attempt never began is held as interrupted).
    pub fn commit(&mut self, change: Change) -> Result<()> {
        if change.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        let first_seq = self.next_seq;
        let events: Vec<Event> = change
            .events
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                seq: first_seq + i as u64,
                at: now,
                kind,
            })
            .collect();
        let id = &self.id;
        let commits = self.commits + 1;
        let chunks = [change.steps.len(), events.len(), change.outputs.len()]
            .into_iter()
            .max()
            .unwrap_or(0)
            .div_ceil(COMMIT_CHUNK)
            .max(1);
        let part =
            |k: usize, len: usize| (k * COMMIT_CHUNK).min(len)..((k + 1) * COMMIT_CHUNK).min(len);
        for k in 0..chunks {
            let steps = &change.steps[part(k, change.steps.len())];
            let events = &events[part(k, events.len())];
            let outputs = &change.outputs[part(k, change.outputs.len())];
            let run = change.run.as_ref().filter(|_| k == 0);
            let trees = (
                &self.runs,
                &self.steps,
                &self.journal,
                &self.outputs,
                &self.commits_tree,
                &self.facts,
            );
            let result = trees.transaction(|(tr, ts, tj, to, tc, tf)| {
                if let Some(run) = run {
                    runs::put(tr, run)?;
                }
                if k == 0 {
                    runs::put_commits(tc, id, commits)?;
                    if let Some(generation) = change.facts_generation {
                        facts::put_generation(tf, id, generation)?;
                    }
                }
                for (step, instance, record) in steps {
                    steps::put(ts, id, step, instance, record)?;
                }
                for event in events {
                    journal::put(tj, id, event)?;
                }
                for (step, instance, attempt, output) in outputs {
                    outputs::put(to, id, step, instance, *attempt, output)?;
                }
                Ok(())
            });
            match result {
                Ok(()) => {}
                Err(TransactionError::Abort(e)) => return Err(e),
                Err(TransactionError::Storage(e)) => return Err(StoreError::Sled(e)),
            }
        }
        self.next_seq = first_seq + events.len() as u64;
        self.commits = commits;
        self.db.flush()?;
        self.durable.sync()
    }

    /// The run and its steps as they are now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            run: self.run()?,
            steps: self.steps()?,
            commits: Some(self.commits),
        })
    }

    /// [`snapshot`](Self::snapshot), read from `snapshot.json` when that shows
    /// the last commit (a run of 100,000 steps decodes in a fraction of the
    /// time its database takes to scan), else from the database.
    pub fn current_snapshot(&self) -> Result<Snapshot> {
        let path = self.dir.join("snapshot.json");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&bytes) {
                if snapshot.commits == Some(self.commits) {
                    return Ok(snapshot);
                }
            }
        }
        self.snapshot()
    }

    /// Ends the run for good (`kpilot abort`, a patrol slot replaced): it is
    /// recorded as aborted, by whom and why, and can no longer be resumed.
    pub fn abort(&mut self, by: String, reason: Option<String>) -> Result<()> {
        let mut record = self.run()?;
        record.state = crate::state::RunState::Aborted;
        record.updated_at = chrono::Utc::now();
        self.commit(Change {
            run: Some(record),
            events: vec![
                crate::state::EventKind::Aborted { by, reason },
                crate::state::EventKind::RunEnded {
                    state: crate::state::RunState::Aborted,
                },
            ],
            ..Change::default()
        })?;
        self.write_snapshot()?;
        Ok(())
    }

    /// Keeps the run's workflow as parsed beside its database (see
    /// [`parsed`]); a tree JSON cannot hold exactly is not kept.
    pub fn write_parsed_workflow(&self, source: &str, tree: &serde_yaml::Value) -> Result<()> {
        parsed::write(&self.dir, source, tree)
            .map(|_| ())
            .map_err(io_err(&self.dir.join(parsed::FILE)))
    }

    /// The run's workflow as parsed from `source`, when this kpilot kept it
    /// (see [`parsed`]); `None` means parse `source`.
    pub fn parsed_workflow(&self, source: &str) -> Option<serde_yaml::Value> {
        parsed::read(&self.dir, source)
    }

    /// Keeps the outline of the run's plan beside its database (see [`Outline`]).
    pub fn write_outline(&self, outline: &Outline) -> Result<()> {
        let path = self.dir.join(OUTLINE);
        let tmp = self.dir.join("outline.json.tmp");
        let bytes = serde_json::to_vec(outline).map_err(|source| StoreError::Decode {
            key: "outline".into(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Writes the current run and steps as `snapshot.json`, replacing the last
    /// one, and returns them.
    pub fn write_snapshot(&self) -> Result<Snapshot> {
        let snapshot = self.snapshot()?;
        let steps = snapshot.steps.iter().map(|(s, i, r)| (s, i, r)).collect();
        self.write_snapshot_of(&snapshot.run, steps)?;
        Ok(snapshot)
    }

    /// Writes `snapshot.json` from what the caller holds in memory: the
    /// scheduler, which has every record the store has and writes a snapshot
    /// every second, must not read the whole run back from sled for it.
    pub fn write_snapshot_of(
        &self,
        run: &RunRecord,
        steps: Vec<(&StepId, &InstanceId, &StepRecord)>,
    ) -> Result<()> {
        // Serialized as a `Snapshot` is, without cloning a record.
        #[derive(serde::Serialize)]
        struct Borrowed<'a> {
            run: &'a RunRecord,
            steps: Vec<(&'a StepId, &'a InstanceId, &'a StepRecord)>,
            commits: u64,
        }
        let path = self.dir.join("snapshot.json");
        let tmp = self.dir.join("snapshot.json.tmp");
        let bytes = serde_json::to_vec(&Borrowed {
            run,
            steps,
            commits: self.commits,
        })
        .map_err(|source| StoreError::Decode {
            key: "snapshot".into(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(())
    }
}

/// An error and its causes on one line.
fn error_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| StoreError::Decode {
        key: key.to_owned(),
        source,
    })
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        source,
    })
}

#[cfg(test)]
mod tests;
