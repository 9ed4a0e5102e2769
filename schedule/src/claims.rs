//! Claims: one record per slot of a schedule, in a sled database under
//! `STATE/patrols/NAME/`, written and made durable before the slot's run
//! starts, so that no slot ever runs twice, whatever kills the daemon.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use kpilot_engine::store::{open_db, Durable, StoreError};
use serde::{Deserialize, Serialize};

/// What can go wrong with the claims.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another daemon runs this patrol.
    #[error("patrol state {dir} is held by another `kpilot patrol` (one daemon per patrol); stop it first")]
    Busy {
        /// The patrol's state directory.
        dir: PathBuf,
    },
    /// The database failed.
    #[error("patrol state {dir}")]
    Sled {
        /// The patrol's state directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// Making it durable failed.
    #[error("patrol state")]
    Durable(#[from] StoreError),
    /// A record does not decode.
    #[error("patrol state {dir}: a claim does not decode")]
    Decode {
        /// The patrol's state directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// What became of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SlotState {
    /// Claimed; its run started and has not ended (after a crash: resumed).
    Running,
    /// Its run ended and every check passed (or every step succeeded).
    Passed,
    /// A check or step failed.
    Failed,
    /// Something could not be checked, or the run is blocked on a person.
    Blocked,
    /// kpilot could not run it (its file, the state dir, kpilot itself).
    Error,
    /// SIGTERM or SIGINT stopped its run; `kpilot resume RUN` goes on with it.
    Interrupted,
    /// `concurrencyPolicy: Replace`: a later slot stopped its run.
    Replaced,
    /// `concurrencyPolicy: Forbid`: the previous run was still going.
    Skipped,
    /// Passed while no daemon ran, or later than `startingDeadline`.
    Missed,
}

impl SlotState {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Running => "running",
            SlotState::Passed => "passed",
            SlotState::Failed => "failed",
            SlotState::Blocked => "blocked",
            SlotState::Error => "error",
            SlotState::Interrupted => "interrupted",
            SlotState::Replaced => "replaced",
            SlotState::Skipped => "skipped",
            SlotState::Missed => "missed",
        }
    }

    /// Whether a run ended in it and can be compared with the next.
    pub fn is_completed_run(self) -> bool {
        matches!(
            self,
            SlotState::Passed | SlotState::Failed | SlotState::Blocked
        )
    }
}

/// One slot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// The schedule.
    pub schedule: String,
    /// The slot's time.
    pub slot: DateTime<Utc>,
    /// What became of it.
    pub state: SlotState,
    /// Its run's id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
    /// When its run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Why, when it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The claims of one patrol, held by one daemon at a time (sled's lock).
pub struct Claims {
    dir: PathBuf,
    db: sled::Db,
    slots: sled::Tree,
    durable: Durable,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims").field("dir", &self.dir).finish()
    }
}

/// A claim's key: the schedule, then the slot's seconds, zero-padded so
/// that keys sort by time.
fn key(schedule: &str, slot: DateTime<Utc>) -> Vec<u8> {
    format!("{schedule}\0{:020}", slot.timestamp().max(0)).into_bytes()
}

impl Claims {
    /// Opens (or creates) the claims in `dir`, `STATE/patrols/NAME/`.
    pub fn open(dir: &Path) -> Result<Self, ClaimError> {
        let sled_err = |source| ClaimError::Sled {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| sled_err(sled::Error::Io(e)))?;
        let db = match open_db(&dir.join("db"), 4 * 1024 * 1024) {
            Ok(db) => db,
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                return Err(ClaimError::Busy {
                    dir: dir.to_owned(),
                })
            }
            Err(e) => return Err(sled_err(e)),
        };
        let slots = db.open_tree("slots").map_err(sled_err)?;
        let durable = Durable::open(&dir.join("db"))?;
        Ok(Claims {
            dir: dir.to_owned(),
            db,
            slots,
            durable,
        })
    }

    fn sync(&mut self) -> Result<(), ClaimError> {
        self.db.flush().map_err(|source| ClaimError::Sled {
            dir: self.dir.clone(),
            source,
        })?;
        self.durable.sync()?;
        Ok(())
    }

    fn encode(&self, claim: &Claim) -> Result<Vec<u8>, ClaimError> {
        serde_json::to_vec(claim).map_err(|source| ClaimError::Decode {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Claims `claim.slot` for `claim.schedule`, durably, unless it was
    /// claimed before: returns whether this call claimed it.
    pub fn claim(&mut self, claim: &Claim) -> Result<bool, ClaimError> {
        let bytes = self.encode(claim)?;
        let swapped = self
            .slots
            .compare_and_swap(
                key(&claim.schedule, claim.slot),
                None as Option<&[u8]>,
                Some(bytes),
            )
            .map_err(|source| ClaimError::Sled {
                dir: self.dir.clone(),
                source,
            })?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    /// Records what became of a claimed slot, durably.
    pub fn update(&mut self, claim: &Claim) -> Result<(), ClaimError> {
        let bytes = self.encode(claim)?;
        self.slots
            .insert(key(&claim.schedule, claim.slot), bytes)
            .map_err(|source| ClaimError::Sled {
                dir: self.dir.clone(),
                source,
            })?;
        self.sync()
    }

    /// Forgets a slot (the history limit), durably.
    pub fn remove(&mut self, schedule: &str, slot: DateTime<Utc>) -> Result<(), ClaimError> {
        self.slots
            .remove(key(schedule, slot))
            .map_err(|source| ClaimError::Sled {
                dir: self.dir.clone(),
                source,
            })?;
        self.sync()
    }

    /// Every claim of `schedule`, oldest first.
    pub fn of(&self, schedule: &str) -> Result<Vec<Claim>, ClaimError> {
        let mut prefix = schedule.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.slots.scan_prefix(prefix) {
            let (_, bytes) = entry.map_err(|source| ClaimError::Sled {
                dir: self.dir.clone(),
                source,
            })?;
            out.push(
                serde_json::from_slice(&bytes).map_err(|source| ClaimError::Decode {
                    dir: self.dir.clone(),
                    source,
                })?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_claimed_once_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = Utc::now();
        let claim = Claim {
            schedule: "a".into(),
            slot,
            state: SlotState::Running,
            run: Some("r".into()),
            claimed_at: slot,
            ended_at: None,
            reason: None,
        };
        {
            let mut claims = Claims::open(dir.path()).expect("open");
            assert!(claims.claim(&claim).expect("claim"));
            assert!(!claims.claim(&claim).expect("claim again"));
        }
        let claims = Claims::open(dir.path()).expect("reopen");
        assert_eq!(claims.of("a").expect("scan").len(), 1);
        assert!(claims.of("b").expect("scan").is_empty());
    }
}
