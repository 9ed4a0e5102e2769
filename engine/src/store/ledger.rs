//! The `ledger` tree: what a run's steps changed outside kpilot and may have
//! to undo (a node cordoned by the run), written before the change is made
//! and removed once it is undone, so that a run killed at any moment still
//! knows what it left changed.
//!
//! The engine keeps the entries and never reads their meaning; the task kind
//! that writes them (and the CLI verbs that undo them) give it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::id::RunId;

/// A run's ledger: entries by name, each a JSON value.
#[derive(Clone)]
pub struct Ledger {
    run: RunId,
    tree: Option<sled::Tree>,
    /// The entries of a ledger kept in memory only.
    memory: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("run", &self.run).finish()
    }
}

fn key(run: &RunId, name: &str) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

impl Ledger {
    /// A ledger backed by a run's `ledger` tree.
    pub(crate) fn stored(run: RunId, tree: sled::Tree) -> Self {
        Ledger {
            run,
            tree: Some(tree),
            memory: Arc::default(),
        }
    }

    /// A ledger kept in memory only (an agent answering one request, a unit test).
    pub fn in_memory(run: RunId) -> Self {
        Ledger {
            run,
            tree: None,
            memory: Arc::default(),
        }
    }

    /// Records `name`, durably (flushed) before it returns.
    pub async fn record(&self, name: &str, value: &serde_json::Value) -> Result<(), String> {
        let Some(tree) = &self.tree else {
            self.memory
                .lock()
                .map_err(|_| "ledger poisoned".to_owned())?
                .insert(name.to_owned(), value.clone());
            return Ok(());
        };
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        tree.insert(key(&self.run, name), bytes)
            .map_err(|e| format!("recording `{name}` in the run's ledger: {e}"))?;
        tree.flush_async()
            .await
            .map_err(|e| format!("recording `{name}` in the run's ledger: {e}"))?;
        Ok(())
    }

    /// Removes `name` (undone), durably.
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        let Some(tree) = &self.tree else {
            self.memory
                .lock()
                .map_err(|_| "ledger poisoned".to_owned())?
                .remove(name);
            return Ok(());
        };
        tree.remove(key(&self.run, name))
            .map_err(|e| format!("removing `{name}` from the run's ledger: {e}"))?;
        tree.flush_async()
            .await
            .map_err(|e| format!("removing `{name}` from the run's ledger: {e}"))?;
        Ok(())
    }

    /// The entry under `name`.
    pub fn get(&self, name: &str) -> Option<serde_json::Value> {
        let Some(tree) = &self.tree else {
            return self.memory.lock().ok()?.get(name).cloned();
        };
        let bytes = tree.get(key(&self.run, name)).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every entry whose name starts with `prefix`, by name.
    pub fn entries(&self, prefix: &str) -> Vec<(String, serde_json::Value)> {
        let Some(tree) = &self.tree else {
            return self
                .memory
                .lock()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
        };
        let run_prefix = key(&self.run, "");
        tree.scan_prefix(key(&self.run, prefix))
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let name = String::from_utf8_lossy(&k[run_prefix.len()..]).into_owned();
                serde_json::from_slice(&v).ok().map(|v| (name, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_recorded_listed_by_prefix_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let run = RunId::parse("r1").unwrap();
        let other = Ledger::stored(RunId::parse("r10").unwrap(), db.open_tree("l").unwrap());
        let ledger = Ledger::stored(run, db.open_tree("l").unwrap());
        ledger
            .record("cordoned/n1", &serde_json::json!({"step": "a"}))
            .await
            .unwrap();
        ledger
            .record("cordoned/n2", &serde_json::json!({"step": "b"}))
            .await
            .unwrap();
        ledger.record("other", &serde_json::json!(1)).await.unwrap();
        other
            .record("cordoned/n9", &serde_json::json!(1))
            .await
            .unwrap();
        let names: Vec<String> = ledger
            .entries("cordoned/")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["cordoned/n1", "cordoned/n2"]);
        ledger.remove("cordoned/n1").await.unwrap();
        assert_eq!(ledger.entries("cordoned/").len(), 1);
        assert_eq!(ledger.get("cordoned/n2").unwrap()["step"], "b");
        assert!(ledger.get("cordoned/n1").is_none());
    }
}
