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

fn commits_key(id: &RunId) -> Vec<u8> {
    let mut key = id.as_str().as_bytes().to_vec();
    key.extend_from_slice(b"\0commits");
    key
}

/// How many commits the run's store has had (0 for a run kept before they
/// were counted).
pub fn commits(tree: &sled::Tree, id: &RunId) -> Result<u64> {
    Ok(tree
        .get(commits_key(id))?
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
    tree.insert(commits_key(id), &commits.to_be_bytes())?;
    Ok(())
}
