//! Clusters: a lifecycle (R10) and real data the console stores for them, sealed at rest
//! under a data key per cluster-region (R8, R11) that the region's CMEK wraps. The types and
//! the ports are here; `request` parses what clients send, `lifecycle` creates, pauses,
//! resumes and deletes, `objects` stores the data, `backups` snapshots and restores it.

mod backup_job;
mod backups;
mod driver;
mod keyring;
mod lifecycle;
mod objects;
mod reaction;
mod request;
mod restore_job;
mod rewrap_job;
#[cfg(test)]
mod rewrap_tests;
#[cfg(test)]
mod rule_tests;
mod service;
pub mod sweeper;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::FieldError;
use crate::domain::keys::Provider;
use crate::domain::keys::region::Region;
use crate::domain::kms::{DataKey, EncryptionContext, KmsError, PlaintextKey};

pub use crate::domain::kms::RegionFailure;

pub mod parts;
pub use backup_job::BackupReport;
pub use driver::ManifestDriver;
pub use keyring::DataKeyRing;
pub use lifecycle::{PLATFORM_KEY, RegionKeyFacts, describe_failures};
pub use objects::{BodyError, MAX_OBJECT_BYTES, ObjectBody, ObjectRead};
pub use reaction::{Keys, Reaction, ReconcileReport, effective_policy, reaction};
pub use request::{ClusterRequestInput, NewCluster};
pub use rewrap_job::RewrapReport;
pub use service::{ClusterPorts, Clusters};

/// A budget of memory for uploads, in MiB.
#[derive(Clone)]
pub struct UploadMemory {
    permits: Arc<tokio::sync::Semaphore>,
    mib: u32,
}

impl UploadMemory {
    pub fn new(mib: u32) -> Self {
        let mib = mib.max(1);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(mib as usize)),
            mib,
        }
    }

    /// Reserves `bytes` (at most the whole budget, so one upload can always run alone), or
    /// `None` when that much is not free now.
    pub fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let mib = u32::try_from(bytes.div_ceil(1024 * 1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.mib);
        self.permits.clone().try_acquire_many_owned(mib).ok()
    }

    /// Whether any upload holds memory now.
    pub fn in_use(&self) -> bool {
        self.permits.available_permits() < self.mib as usize
    }
}

/// Rotation status per key id, with when the KMS was asked.
pub type RotationStatuses =
    Arc<std::sync::Mutex<std::collections::HashMap<Uuid, (DateTime<Utc>, Option<bool>)>>>;

/// The most regions one cluster spans.
pub const MAX_REGIONS: usize = 5;

/// 1-40 characters: lower-case letters, digits and `-`, starting with a letter and not
/// ending with `-` (it becomes part of host names, as on the platforms of the seeds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        let invalid = |reason: &str| FieldError::new("name", reason);
        if name.is_empty() {
            return Err(invalid("is required"));
        }
        if name.len() > 40 {
            return Err(invalid("must be at most 40 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid("must start with a lower-case letter"));
        }
        if name.ends_with('-') {
            return Err(invalid("must not end with '-'"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(&format!(
                "may contain lower-case letters, digits and '-', not {bad:?}"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Dedicated,
    Serverless,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Dedicated => "dedicated",
            Tier::Serverless => "serverless",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "dedicated" => Ok(Tier::Dedicated),
            "serverless" => Ok(Tier::Serverless),
            _ => Err(FieldError::new(
                "tier",
                "must be \"dedicated\" or \"serverless\"",
            )),
        }
    }
}

/// creating -> available -> pausing -> paused -> resuming -> available; inaccessible;
/// deleting. `creating` is never stored: a cluster is saved once its data keys exist, so
/// a crash during creation leaves nothing behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    Creating,
    Available,
    Pausing,
    Paused,
    Resuming,
    Inaccessible,
    Deleting,
    /// A restore that could not finish (`last_error` says why): it serves nothing and can
    /// only be deleted.
    Failed,
}

impl ClusterState {
    pub const ALL: [ClusterState; 8] = [
        ClusterState::Creating,
        ClusterState::Available,
        ClusterState::Pausing,
        ClusterState::Paused,
        ClusterState::Resuming,
        ClusterState::Inaccessible,
        ClusterState::Deleting,
        ClusterState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Creating => "creating",
            ClusterState::Available => "available",
            ClusterState::Pausing => "pausing",
            ClusterState::Paused => "paused",
            ClusterState::Resuming => "resuming",
            ClusterState::Inaccessible => "inaccessible",
            ClusterState::Deleting => "deleting",
            ClusterState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One region of a cluster: the key that wraps its data key (none for a project with
/// platform-managed keys), and the wrapped data key itself. Only the wrapped form is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRegion {
    pub region: Region,
    /// The project's encryption key for this provider and region (R5), if CMEK.
    pub key_id: Option<Uuid>,
    /// The key as users know it (ARN, local key id), kept for display.
    pub key_ref: Option<String>,
    pub wrapped_key: Vec<u8>,
    /// The key version that wrapped the data key (Azure: the `kid` version; local: its
    /// version; AWS: the key ARN, since Decrypt finds the backing key itself); `None` under
    /// the platform key.
    pub key_version: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    pub name: ClusterName,
    pub provider: Provider,
    pub tier: Tier,
    pub dual_region_backup: bool,
    /// In order: the first is the primary region, where backups are kept.
    pub regions: Vec<ClusterRegion>,
    pub state: ClusterState,
    pub last_error: Option<String>,
    /// Set while a key it needs is revoked in a `keep_running` project: it runs on but its
    /// next resume would fail (why, as recorded).
    pub will_not_resume: Option<String>,
    /// Set on a cluster made by restoring a backup: which, and how far its job got.
    pub restore: Option<RestoreProgress>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A restore's progress: the cluster is `creating` until every object of the backup is in
/// it, then `available` (or `failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreProgress {
    pub backup_id: Uuid,
    pub objects_total: u32,
    pub objects_restored: u32,
}

impl Cluster {
    pub fn primary(&self) -> Option<&ClusterRegion> {
        self.regions.first()
    }

    /// Where a region's copy of an object version is stored.
    pub fn blob(&self, region: &Region, version: Uuid) -> String {
        format!("clusters/{}/{}/objects/{version}", self.id, region)
    }

    /// The sealed marker the driver writes in each region: opening it proves the data key.
    pub fn manifest(&self, region: &Region) -> String {
        format!("clusters/{}/{}/manifest", self.id, region)
    }

    pub fn prefix(&self) -> String {
        format!("clusters/{}/", self.id)
    }

    pub fn uses_key(&self, key_id: Uuid) -> bool {
        self.regions.iter().any(|r| r.key_id == Some(key_id))
    }
}

/// An object of a cluster: the name users gave it, the version whose bytes are stored, and
/// its size in plaintext bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub id: Uuid,
    pub name: ObjectName,
    pub version: Uuid,
    pub size_bytes: u64,
    pub updated_at: DateTime<Utc>,
}

/// 1-1024 bytes of UTF-8, `/` separating non-empty segments, no `.` or `..` segment, no
/// control characters, no backslash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectName(String);

pub const OBJECT_NAME_MAX: usize = 1024;

impl ObjectName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = |reason: &str| FieldError::new("name", reason);
        if raw.is_empty() {
            return Err(invalid("is required"));
        }
        if raw.len() > OBJECT_NAME_MAX {
            return Err(invalid("must be at most 1024 bytes"));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        if raw.contains('\\') {
            return Err(invalid("must not contain '\\'"));
        }
        for segment in raw.split('/') {
            match segment {
                "" => {
                    return Err(invalid("must not start or end with '/' or contain '//'"));
                }
                "." | ".." => return Err(invalid("must not contain a '.' or '..' segment")),
                _ => {}
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupState {
    Creating,
    Available,
    Failed,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Creating => "creating",
            BackupState::Available => "available",
            BackupState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Creating, Self::Available, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A snapshot of a cluster's objects, sealed under a data key of its own that the primary
/// region's key wraps. It outlives its cluster until it is deleted.
#[derive(Clone, Debug)]
pub struct Backup {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub provider: Provider,
    /// The cluster's regions, for a restore into the same ones.
    pub regions: Vec<Region>,
    /// Where the backup is kept, and whose key wraps its data key.
    pub region: ClusterRegion,
    pub state: BackupState,
    /// Plaintext bytes copied so far (all of them once available).
    pub size_bytes: u64,
    /// The objects of the snapshot.
    pub object_count: u32,
    /// How many of them are copied (`object_count` once available).
    pub objects_copied: u32,
    /// Why it failed, in words fit for its owner (no key material, no internal detail).
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// When it became available or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Backup {
    pub fn blob(&self, version: Uuid) -> String {
        format!("backups/{}/objects/{version}", self.id)
    }

    pub fn prefix(&self) -> String {
        format!("backups/{}/", self.id)
    }
}

/// The platform-held key that wraps the data keys of projects without CMEK (the seeds'
/// "encrypted storage under a platform-held key").
pub trait PlatformKey: Send + Sync {
    fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, KmsError>;
    fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError>;
}

/// Where a cloud driver would hand the plaintext data key to the disks of each region (EBS,
/// Azure managed disks). Here the bytes are the objects the console stores, and the driver
/// keeps a sealed manifest per region that proves, on every resume, that the unwrapped key
/// is the one the region's data was sealed with.
#[async_trait::async_trait]
pub trait ClusterDriver: Send + Sync {
    async fn provision(
        &self,
        cluster: &Cluster,
        keys: &[(Region, &PlaintextKey)],
    ) -> Result<(), crate::domain::DomainError>;
    async fn attach(
        &self,
        cluster: &Cluster,
        keys: &[(Region, &PlaintextKey)],
    ) -> Result<(), crate::domain::DomainError>;
    async fn destroy(&self, cluster: &Cluster) -> Result<(), crate::domain::DomainError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_host_name_friendly() {
        assert!(ClusterName::parse("prod-eu-1").is_ok());
        assert!(ClusterName::parse("Prod").is_err());
        assert!(ClusterName::parse("1abc").is_err());
        assert!(ClusterName::parse("abc-").is_err());
        assert!(ClusterName::parse("a_b").is_err());
        assert!(ClusterName::parse(&"a".repeat(41)).is_err());
    }

    #[test]
    fn object_names_cannot_climb_out_or_hide_control_characters() {
        for good in ["a", "dir/file.txt", "über/ünïcode", "a..b", ".hidden"] {
            assert!(ObjectName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "../x", "a/../b", "./a", "a/.", "/abs", "a//b", "end/", "a\nb", "a\u{7f}", "a\\b",
        ] {
            assert!(ObjectName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectName::parse(&"x".repeat(1025)).is_err());
        assert!(ObjectName::parse(&"x".repeat(1024)).is_ok());
    }
}
