//! The `outputs` tree: what each attempt printed, keyed `run/step/instance/attempt`.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{decode, Result, StoreError};
use crate::id::{InstanceId, RunId, StepId};

/// The kept tail of an attempt's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutput {
    /// Last 64 KiB of standard output.
    pub stdout: Vec<u8>,
    /// Last 64 KiB of standard error.
    pub stderr: Vec<u8>,
    /// The exit code, when there was a process.
    pub exit_code: Option<i32>,
}

fn key(run: &RunId, step: &StepId, instance: &InstanceId, attempt: u32) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(step.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(instance.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&attempt.to_be_bytes());
    key
}

/// Writes an attempt's output inside a transaction.
pub fn put(
    tree: &TransactionalTree,
    run: &RunId,
    step: &StepId,
    instance: &InstanceId,
    attempt: u32,
    output: &StoredOutput,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let bytes = serde_json::to_vec(output).map_err(|source| {
        ConflictableTransactionError::Abort(StoreError::Decode {
            key: "output".into(),
            source,
        })
    })?;
    tree.insert(key(run, step, instance, attempt), bytes)?;
    Ok(())
}

/// Reads an attempt's output.
pub fn get(
    tree: &sled::Tree,
    run: &RunId,
    step: &StepId,
    instance: &InstanceId,
    attempt: u32,
) -> Result<Option<StoredOutput>> {
    let k = key(run, step, instance, attempt);
    match tree.get(&k)? {
        Some(bytes) => decode(&k, &bytes).map(Some),
        None => Ok(None),
    }
}
