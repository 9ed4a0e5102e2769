//! The `runs` tree: one [`RunRecord`] per run, keyed by run id.

use sled::transaction::TransactionalTree;

use sled::transaction::ConflictableTransactionError;

use super::{decode, encode, Result, StoreError};
use crate::id::RunId;
use crate::state::RunRecord;

/// Reads a run's record.
pub fn get(tree: &sled::Tree, id: &RunId) -> Result<Option<RunRecord>> {
    match tree.get(id.as_str())? {
        Some(bytes) => decode(id.as_str().as_bytes(), &bytes).map(Some),
        None => Ok(None),
    }
}

/// Writes a run's record inside a transaction.
pub fn put(
    tree: &TransactionalTree,
    run: &RunRecord,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let bytes = encode(run.id.as_str(), run).map_err(ConflictableTransactionError::Abort)?;
    tree.insert(run.id.as_str().as_bytes(), bytes)?;
    Ok(())
}

/// How many commits the run's store has had (0 for a run kept before they
/// were counted), from the `commits` tree: not beside the run record, whose
/// leaf sled would rewrite whole, workflow text and all, on every commit.
pub fn commits(tree: &sled::Tree, id: &RunId) -> Result<u64> {
    Ok(tree
        .get(id.as_str())?
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// Records the count of commits inside a transaction.
pub fn put_commits(
    tree: &TransactionalTree,
    id: &RunId,
    commits: u64,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    tree.insert(id.as_str(), &commits.to_be_bytes())?;
    Ok(())
}
