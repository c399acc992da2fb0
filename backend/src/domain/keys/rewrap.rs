//! Changing a region's key in place: a replacement by a new key, or a re-wrap of every data
//! key under the key's current version (after a rotation in Azure or the local KMS). Either is
//! one `Rewrap`, done by a `rewrap` job (`clusters::rewrap_job`) while the clusters serve.
//!
//! What holds throughout:
//! - The data keys themselves never change, only their wrapped form: a running cluster keeps
//!   its plaintext keys and serves on; a paused one stays paused.
//! - A stored wrapped key is swapped only if it is still the one the job read
//!   (compare-and-swap), with an audit event per swap in the same transaction, so two
//!   instances (or a restarted one) never lose a data key or move one twice.
//! - A data key the job cannot move stays wrapped as it was (readable as before), is listed
//!   with the KMS's answer, and ends the re-wrap `failed` with an alert.
//! - The old key stays, watched by the monitor, until nothing it wrapped remains; only then
//!   may it be deleted.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Failures a re-wrap lists when read (the count is complete; the list stops here).
pub const FAILURES_SHOWN: u64 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewrapState {
    /// The job is moving data keys.
    Rewrapping,
    /// Every data key is wrapped by the target key (its current version).
    Done,
    /// Every data key it could move was moved; `failures` lists the others.
    Failed,
}

impl RewrapState {
    pub fn as_str(self) -> &'static str {
        match self {
            RewrapState::Rewrapping => "rewrapping",
            RewrapState::Done => "done",
            RewrapState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Rewrapping, Self::Done, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A data key the job could not move, and what the KMS said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrapFailure {
    /// `cluster/<id>/<region>` or `backup/<id>`.
    pub data_key: String,
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Rewrap {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    /// The key whose data keys are moved.
    pub from_key_id: Uuid,
    /// The key they are moved to: the replacement, or `from_key_id` itself for a re-wrap
    /// under its current version.
    pub to_key_id: Uuid,
    pub state: RewrapState,
    /// The version new wraps get (learned by the job's first wrap; a re-wrap under the same
    /// key moves the data keys wrapped by any other version).
    pub target_version: Option<String>,
    /// Data keys to move when it started.
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    pub failures: Vec<RewrapFailure>,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Rewrap {
    /// A replacement by another key (not a re-wrap under the same key).
    pub fn replaces(&self) -> bool {
        self.from_key_id != self.to_key_id
    }
}

/// Where a wrapped data key is stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataKeyRow {
    ClusterRegion { cluster_id: Uuid, region: String },
    Backup { id: Uuid },
}

impl DataKeyRow {
    /// How users and the audit log name a data key.
    pub fn label(&self) -> String {
        match self {
            DataKeyRow::ClusterRegion { cluster_id, region } => {
                format!("cluster/{cluster_id}/{region}")
            }
            DataKeyRow::Backup { id } => format!("backup/{id}"),
        }
    }
}

/// A data key the job still has to move: where it is stored, what wraps it now, and what
/// its wrapped form is bound to.
#[derive(Clone, Debug)]
pub struct DataKeyToMove {
    pub row: DataKeyRow,
    pub project_id: Uuid,
    /// The region whose key wraps it (a backup's: its cluster's primary region).
    pub region: crate::domain::keys::region::Region,
    pub wrapped: Vec<u8>,
}

/// A data key moved: the stored wrapped form `old` becomes `new`, under the target key's
/// `version`.
#[derive(Clone, Debug)]
pub struct DataKeySwap {
    pub row: DataKeyRow,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub version: Option<String>,
}
