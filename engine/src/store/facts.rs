//! The `facts` tree: data a run's checks read (a cluster's nodes, a node's
//! sysctls), fetched once per run and kept so that a report or a resumed run
//! sees what the check saw.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use tokio::sync::Mutex as AsyncMutex;

use super::StoreError;
use crate::id::RunId;

/// A run's facts: each key fetched at most once, then served from memory or
/// the store. Every task that asks for a key while another holds it shares
/// that one parsed copy: a list of 5,000 nodes is tens of megabytes once
/// parsed, too much to copy per check, or to keep once no check reads it.
#[derive(Clone)]
pub struct Facts {
    run: RunId,
    tree: Option<sled::Tree>,
    cells: Arc<Mutex<HashMap<String, Cell>>>,
    /// How many times the run changed what it checks (see [`Facts::generation`]).
    generation: Arc<AtomicU64>,
}

/// The name the generation is stored under; no fact name starts with NUL.
const GENERATION: &str = "\0generation";

/// One key's answer. The lock makes the first task that asks fetch it and the
/// others wait for that answer rather than fetch again.
type Cell = Arc<AsyncMutex<Slot>>;

/// Where a key's parsed answer is held.
#[derive(Default)]
enum Slot {
    /// Not asked yet in this process.
    #[default]
    Empty,
    /// Stored in the run: in memory only while a task holds it, so that a run
    /// of many large lists (5,000 nodes, 20,000 objects) keeps in memory only
    /// those its running checks read; a later check parses it again from the
    /// store.
    Shared(Weak<serde_json::Value>),
    /// Not stored (facts in memory only): kept for good, since it could not be
    /// read again.
    Kept(Arc<serde_json::Value>),
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts").field("run", &self.run).finish()
    }
}

fn key(run: &RunId, name: &str) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Stores `run`'s facts generation, in a transaction of the commit.
pub(crate) fn put_generation(
    tx: &TransactionalTree,
    run: &RunId,
    generation: u64,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    tx.insert(key(run, GENERATION), &generation.to_be_bytes())?;
    Ok(())
}

impl Facts {
    /// Facts backed by a run's `facts` tree.
    pub(crate) fn stored(run: RunId, tree: sled::Tree) -> Self {
        let generation = tree
            .get(key(&run, GENERATION))
            .ok()
            .flatten()
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        Facts {
            run,
            tree: Some(tree),
            cells: Arc::default(),
            generation: Arc::new(AtomicU64::new(generation)),
        }
    }

    /// Facts kept in memory only, for tasks run outside a stored run (an
    /// agent answering one request, a unit test).
    pub fn in_memory(run: RunId) -> Self {
        Facts {
            run,
            tree: None,
            cells: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// The value under `name`: from memory, else from the store, else from
    /// `fetch`, whose success is stored (and flushed) before it is returned.
    /// A failed fetch is not kept, so a later attempt fetches again.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        name: &str,
        fetch: F,
    ) -> Result<Arc<serde_json::Value>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<serde_json::Value, String>>,
    {
        let cell = {
            let mut cells = self
                .cells
                .lock()
                .map_err(|_| "facts cache poisoned".to_owned())?;
            Arc::clone(cells.entry(name.to_owned()).or_default())
        };
        let mut slot = cell.lock().await;
        match &*slot {
            Slot::Kept(value) => return Ok(Arc::clone(value)),
            Slot::Shared(weak) => {
                if let Some(value) = weak.upgrade() {
                    return Ok(value);
                }
            }
            Slot::Empty => {}
        }
        let Some(tree) = &self.tree else {
            let value = Arc::new(fetch().await?);
            *slot = Slot::Kept(Arc::clone(&value));
            return Ok(value);
        };
        if let Ok(Some(bytes)) = tree.get(key(&self.run, name)) {
            if let Ok(value) = serde_json::from_slice(&bytes) {
                let value = Arc::new(value);
                *slot = Slot::Shared(Arc::downgrade(&value));
                return Ok(value);
            }
        }
        let value = fetch().await?;
        let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        tree.insert(key(&self.run, name), bytes)
            .map_err(|e| format!("storing fact `{name}`: {e}"))?;
        tree.flush_async()
            .await
            .map_err(|e| format!("storing fact `{name}`: {e}"))?;
        let value = Arc::new(value);
        *slot = Slot::Shared(Arc::downgrade(&value));
        Ok(value)
    }

    /// How many steps of phase `upgrade` have ended in this run: data a check
    /// reads is shared only among checks of one generation, so a post-check
    /// never judges the cluster by what a pre-check saw before the change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// A step that changes what checks look at ended: later checks read
    /// their data again. Returns the new generation, for the scheduler to
    /// store with its next commit ([`Change::facts_generation`]), in the
    /// same transaction as the step's end, so a resumed run stays in the
    /// same generation (and the commit writes one buffer fewer to sled's log).
    ///
    /// [`Change::facts_generation`]: super::Change::facts_generation
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every stored fact of the run, by name.
    pub fn all(&self) -> Vec<(String, serde_json::Value)> {
        let Some(tree) = &self.tree else {
            return Vec::new();
        };
        let prefix = key(&self.run, "");
        tree.scan_prefix(&prefix)
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                if name.starts_with('\0') {
                    return None;
                }
                serde_json::from_slice(&v).ok().map(|v| (name, v))
            })
            .collect()
    }
}
