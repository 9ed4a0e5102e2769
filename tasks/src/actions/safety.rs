//! Node safety: which nodes a run still has cordoned, and undoing them
//! (`kpilot abort --restore`, `spec.onFailure: {restore: true}`).

use kpilot_engine::store::Ledger;

use super::{uncordon, ActionError, Uncordoned, CORDONED};
use crate::data::Cluster;

/// The nodes the run has cordoned and not yet uncordoned, by its ledger
/// (`cordoned/NODE`), sorted.
pub fn cordoned(ledger: &Ledger) -> Vec<String> {
    ledger
        .entries(CORDONED)
        .into_iter()
        .map(|(name, _)| name[CORDONED.len()..].to_owned())
        .collect()
}

/// What [`restore`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Nodes uncordoned: the run had cordoned them.
    pub uncordoned: Vec<String>,
    /// Nodes left cordoned: cordoned, but no longer by this run (a person
    /// cordoned them, or took the run's annotation off).
    pub left_cordoned: Vec<String>,
    /// Nodes of the ledger that no longer exist.
    pub gone: Vec<String>,
}

/// Uncordons every node the run's ledger says it cordoned, when the node's
/// annotation still names the run, and clears those ledger entries. Stops at
/// the first node the API refuses, keeping the rest in the ledger.
pub async fn restore(
    run: &str,
    ledger: &Ledger,
    cluster: &Cluster,
) -> Result<Restored, ActionError> {
    let mut restored = Restored::default();
    for node in cordoned(ledger) {
        match uncordon(cluster, ledger, run, &node).await? {
            Uncordoned::Done => restored.uncordoned.push(node),
            Uncordoned::LeftCordoned => restored.left_cordoned.push(node),
            Uncordoned::Gone => restored.gone.push(node),
            // The kill came between the ledger entry and the cordon.
            Uncordoned::NotCordoned => {}
        }
    }
    Ok(restored)
}
