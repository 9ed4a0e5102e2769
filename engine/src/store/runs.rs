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
