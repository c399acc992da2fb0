//! The key versions in use: every wrapped data key records the version that wrapped it, so
//! the console knows which versions still protect something, how many data keys each wraps,
//! what the monitor last saw of each, and what disabling one would break.

use uuid::Uuid;

use super::{EncryptionKey, KeyStatus};
use crate::domain::DomainError;
use crate::domain::clusters::Cluster;
use crate::domain::identity::{Caller, Role};
use crate::domain::keys::Keys;
use crate::domain::keys::StatusChangeEvent;
use crate::domain::ports::KeyVersionStatus;

/// One version of a key that still wraps data keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInUse {
    pub version: String,
    /// Data keys it wraps (cluster regions and backups).
    pub data_keys: u64,
    /// As the monitor last recorded it (`active` until it sees otherwise). The key itself
    /// (AWS, where the version is the key ARN) follows the key's status.
    pub status: KeyStatus,
    /// Seen once by a probe, awaiting the confirming one.
    pub suspected: Option<KeyStatus>,
    pub last_checked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    /// The clusters with a region whose data key it wraps (names).
    pub clusters: Vec<String>,
    /// The backups whose data key it wraps (ids).
    pub backups: Vec<Uuid>,
}

impl VersionInUse {
    /// Whether the data keys it wraps could not be unwrapped now: what it breaks is in
    /// `clusters` (they would not resume) and `backups` (they would not restore).
    pub fn revoked(&self) -> bool {
        self.status.is_revocation()
    }
}

impl Keys {
    /// The versions of the key that still wrap data keys (anyone who can see the key).
    pub async fn key_versions(
        &self,
        caller: &Caller,
        key: &EncryptionKey,
    ) -> Result<Vec<VersionInUse>, DomainError> {
        let Some(parts) = self.clusters.get() else {
            return Ok(Vec::new());
        };
        let itself = key.key_ref.display();
        let clusters = parts
            .clusters_using_key(caller.organization_id, key.id)
            .await?;
        let backups = parts
            .backups_using_key(caller.organization_id, key.id)
            .await?;
        let mut versions = Vec::new();
        for (version, data_keys, seen) in self.jobs.versions_in_use(key.id).await? {
            let (status, suspected, last_checked_at, last_error) = match seen {
                _ if version == itself => (key.status, None, key.last_checked_at, None),
                Some(seen) => (
                    seen.status,
                    seen.suspected,
                    seen.last_checked_at,
                    seen.last_error,
                ),
                None => (KeyStatus::Active, None, None, None),
            };
            versions.push(VersionInUse {
                clusters: clusters
                    .iter()
                    .filter(|c| {
                        c.regions.iter().any(|r| {
                            r.key_id == Some(key.id) && r.key_version.as_ref() == Some(&version)
                        })
                    })
                    .map(|c| c.name.as_str().to_owned())
                    .collect(),
                backups: backups
                    .iter()
                    .filter(|b| b.region.key_version.as_ref() == Some(&version))
                    .map(|b| b.id)
                    .collect(),
                version,
                data_keys,
                status,
                suspected,
                last_checked_at,
                last_error,
            });
        }
        Ok(versions)
    }

    /// Gives every data key stored before versions were recorded the version its wrapped
    /// form names (no KMS call), so the monitor watches those versions too. Run at start;
    /// returns how many were given one.
    pub async fn backfill_key_versions(&self) -> Result<usize, DomainError> {
        let mut done = 0;
        let mut skipped = std::collections::HashSet::new();
        loop {
            let batch = self.jobs.data_keys_without_version(500).await?;
            let fresh: Vec<_> = batch
                .into_iter()
                .filter(|d| !skipped.contains(&d.row))
                .collect();
            if fresh.is_empty() {
                return Ok(done);
            }
            for data_key in fresh {
                let key = self
                    .keys
                    .key(data_key.organization_id, data_key.key_id)
                    .await?;
                let version = key.and_then(|key| {
                    self.provider_for(&key.key_ref)
                        .ok()
                        .and_then(|p| p.wrapped_version(&key.key_ref, &data_key.wrapped))
                });
                match version {
                    Some(version) => {
                        self.jobs
                            .set_data_key_version(&data_key.row, &version)
                            .await?;
                        done += 1;
                    }
                    // A provider this console does not run, or a form it cannot read: left
                    // as it is (and not asked about again in this pass).
                    None => {
                        skipped.insert(data_key.row);
                    }
                }
            }
            if skipped.len() >= 500 {
                return Ok(done);
            }
        }
    }
}

impl Keys {
    /// A resume just unwrapped every data key of the cluster: any of its keys (or key
    /// versions) still recorded revoked works after all, and is recorded `active` at once, so
    /// the periodic reconciliation does not stop the cluster again on an outdated status.
    pub async fn note_keys_work(&self, cluster: &Cluster) -> Result<(), DomainError> {
        use crate::domain::keys::KeyStatus;
        let system = Caller::system(cluster.organization_id, Role::Owner);
        let mut changed = false;
        for region in &cluster.regions {
            let Some(key_id) = region.key_id else {
                continue;
            };
            let Some(key) = self.keys.key(cluster.organization_id, key_id).await? else {
                continue;
            };
            let now = self.clock.now();
            let message = "a resume unwrapped a data key under it";
            if key.status.is_revocation() {
                let audit = StatusChangeEvent {
                    key: &key,
                    version: None,
                    from: key.status,
                    to: KeyStatus::Active,
                    message: Some(message),
                }
                .audit(&system, now);
                self.keys
                    .update_key_status(key_id, KeyStatus::Active, now, None, audit)
                    .await?;
                changed = true;
            }
            for version in self.jobs.revoked_versions(&[key_id]).await? {
                if Some(&version.version) != region.key_version.as_ref() {
                    continue;
                }
                let audit = StatusChangeEvent {
                    key: &key,
                    version: Some((&version.version, 0)),
                    from: version.status,
                    to: KeyStatus::Active,
                    message: Some(message),
                }
                .audit(&system, now);
                let active = KeyVersionStatus {
                    status: KeyStatus::Active,
                    suspected: None,
                    last_checked_at: Some(now),
                    last_error: None,
                    ..version
                };
                self.jobs
                    .record_version_status(cluster.organization_id, active, Some(audit))
                    .await?;
                changed = true;
            }
        }
        if changed {
            self.wake_reactions();
        }
        Ok(())
    }
}
