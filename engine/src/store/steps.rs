//! The `steps` tree: one [`StepRecord`] per step instance, keyed `run/step/instance`.

use sled::transaction::TransactionalTree;

use sled::transaction::ConflictableTransactionError;

use super::{decode, encode, Result, StoreError};
use crate::id::{InstanceId, RunId, StepId};
use crate::state::StepRecord;

fn prefix(run: &RunId) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn key(run: &RunId, step: &StepId, instance: &InstanceId) -> Vec<u8> {
    let mut key = prefix(run);
    key.extend_from_slice(step.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(instance.as_str().as_bytes());
    key
}

/// Writes a step instance's record inside a transaction.
pub fn put(
    tree: &TransactionalTree,
    run: &RunId,
    step: &StepId,
    instance: &InstanceId,
    record: &StepRecord,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let bytes = encode(step.as_str(), record).map_err(ConflictableTransactionError::Abort)?;
    tree.insert(key(run, step, instance), bytes)?;
    Ok(())
}

/// Every step instance of a run, sorted by step id and instance.
pub fn scan(tree: &sled::Tree, run: &RunId) -> Result<Vec<(StepId, InstanceId, StepRecord)>> {
    let prefix = prefix(run);
    let mut out = Vec::new();
    for item in tree.scan_prefix(&prefix) {
        let (k, v) = item?;
        let rest = &k[prefix.len()..];
        let mut parts = rest.splitn(2, |b| *b == 0);
        let step = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let instance = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let Ok(step) = StepId::parse(&step) else {
            continue;
        };
        out.push((step, InstanceId::named(instance), decode(&k, &v)?));
    }
    Ok(out)
}
