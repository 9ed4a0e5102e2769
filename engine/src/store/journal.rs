//! The `journal` tree: the append-only events of a run, keyed `run/seq`.

use sled::transaction::TransactionalTree;

use sled::transaction::ConflictableTransactionError;

use super::{decode, encode, Result, StoreError};
use crate::id::RunId;
use crate::state::Event;

fn prefix(run: &RunId) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn key(run: &RunId, seq: u64) -> Vec<u8> {
    let mut key = prefix(run);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number the next event of `run` gets.
pub fn next_seq(tree: &sled::Tree, run: &RunId) -> Result<u64> {
    match tree.scan_prefix(prefix(run)).next_back() {
        Some(item) => {
            let (k, v) = item?;
            let event: Event = decode(&k, &v)?;
            Ok(event.seq + 1)
        }
        None => Ok(0),
    }
}

/// Appends an event inside a transaction.
pub fn put(
    tree: &TransactionalTree,
    run: &RunId,
    event: &Event,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let bytes = encode("journal", event).map_err(ConflictableTransactionError::Abort)?;
    tree.insert(key(run, event.seq), bytes)?;
    Ok(())
}

/// Every event of a run, oldest first.
pub fn scan(tree: &sled::Tree, run: &RunId) -> Result<Vec<Event>> {
    tree.scan_prefix(prefix(run))
        .map(|item| {
            let (k, v) = item?;
            decode(&k, &v)
        })
        .collect()
}
