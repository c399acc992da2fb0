//! The storage sweeper: removes stored copies that no index row names (left by a process
//! killed between writing a copy and recording it, or between recording a change and
//! deleting what it replaced), and what unfinished writes left behind.
//!
//! A copy is removed only when all of these hold, so a write or a backup that may still
//! record it is never robbed of it:
//! - it is a copy of an object (`clusters/<id>/<region>/objects/<version>` or
//!   `backups/<id>/objects/<version>`), never a region's marker or anything else;
//! - the storage dates it before the grace period;
//! - the index names it nowhere: not the cluster's objects, not the versions the cluster keeps
//!   for a backup being taken, not a backup's objects (copied or still to copy);
//! - the previous sweep, an interval earlier, found it orphaned too (a write records its copy
//!   milliseconds after finishing it, so two sightings an interval apart are not a race).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use uuid::Uuid;

use super::service::Clusters;
use crate::domain::DomainError;
use crate::domain::blobs::BlobMeta;
pub use crate::domain::blobs::CopyOwner;

/// A stored copy of an object: whose, and which version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Copy {
    pub owner: CopyOwner,
    pub version: Uuid,
}

/// What a stored key names, if it is a copy of an object (the layout of `Cluster::blob` and
/// `Backup::blob`).
pub fn copy_of(key: &str) -> Option<Copy> {
    let parts: Vec<&str> = key.split('/').collect();
    let (owner, version) = match parts.as_slice() {
        ["clusters", id, _region, "objects", version] => {
            (CopyOwner::Cluster(Uuid::parse_str(id).ok()?), version)
        }
        ["backups", id, "objects", version] => {
            (CopyOwner::Backup(Uuid::parse_str(id).ok()?), version)
        }
        _ => return None,
    };
    Some(Copy {
        owner,
        version: Uuid::parse_str(version).ok()?,
    })
}

/// The choice, without I/O: of the listed copies, those to remove now (old enough, named by
/// no index row, and seen orphaned by the previous sweep), and those to remember as orphans
/// for the next one.
pub fn choose(
    listed: &[(BlobMeta, Copy)],
    live: &HashSet<Copy>,
    seen_before: &HashSet<String>,
    cutoff: DateTime<Utc>,
) -> (Vec<String>, Vec<String>) {
    let mut remove = Vec::new();
    let mut remember = Vec::new();
    for (meta, copy) in listed {
        if meta.modified >= cutoff || live.contains(copy) {
            continue;
        }
        if seen_before.contains(&meta.key) {
            remove.push(meta.key.clone());
        } else {
            remember.push(meta.key.clone());
        }
    }
    (remove, remember)
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub listed: u64,
    pub removed: u64,
    /// Orphans seen for the first time, removed by the next sweep if still orphaned.
    pub marked: u64,
    pub uploads_aborted: u64,
}

/// Copies checked against the index at a time.
const BATCH: usize = 500;

impl Clusters {
    /// One sweep of the storage. `orphans` holds the keys the previous sweep found orphaned
    /// and is replaced by this sweep's.
    pub async fn sweep_storage(
        &self,
        orphans: &mut HashSet<String>,
        grace: std::time::Duration,
    ) -> Result<SweepReport, DomainError> {
        let parts = &self.parts;
        let cutoff = self.clock.now()
            - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::hours(1));
        let mut report = SweepReport {
            uploads_aborted: parts
                .blobs
                .abort_stale_uploads(grace)
                .await
                .map_err(super::objects::storage_error)?,
            ..SweepReport::default()
        };
        let mut next = HashSet::new();
        for prefix in ["clusters/", "backups/"] {
            let mut listing = parts.blobs.list(prefix);
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let item = listing.next().await;
                let end = item.is_none();
                if let Some(item) = item {
                    let meta = item.map_err(super::objects::storage_error)?;
                    report.listed += 1;
                    if let Some(copy) = copy_of(&meta.key)
                        && meta.modified < cutoff
                    {
                        batch.push((meta, copy));
                    }
                }
                if batch.len() >= BATCH || (end && !batch.is_empty()) {
                    let live = self.live_copies(&batch).await?;
                    let (remove, remember) = choose(&batch, &live, orphans, cutoff);
                    for key in remove {
                        match parts.blobs.delete(&key).await {
                            Ok(()) => report.removed += 1,
                            Err(err) => {
                                tracing::warn!(error = %err, key, "the sweeper could not remove an orphaned copy");
                                next.insert(key);
                            }
                        }
                    }
                    report.marked += remember.len() as u64;
                    next.extend(remember);
                    batch.clear();
                }
                if end {
                    break;
                }
            }
        }
        *orphans = next;
        Ok(report)
    }

    /// Which of the listed copies an index row names, asked per owner.
    async fn live_copies(&self, batch: &[(BlobMeta, Copy)]) -> Result<HashSet<Copy>, DomainError> {
        let parts = &self.parts;
        let mut by_owner: BTreeMap<CopyOwner, Vec<Uuid>> = BTreeMap::new();
        for (_, copy) in batch {
            by_owner.entry(copy.owner).or_default().push(copy.version);
        }
        let mut live = HashSet::new();
        for (owner, versions) in by_owner {
            for version in parts.store.named_versions(owner, &versions).await? {
                live.insert(Copy { owner, version });
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes_ago: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() - chrono::Duration::minutes(minutes_ago)
    }

    fn listed(key: &str, minutes_ago: i64) -> (BlobMeta, Copy) {
        (
            BlobMeta {
                key: key.to_owned(),
                modified: at(minutes_ago),
            },
            copy_of(key).expect("a copy"),
        )
    }

    const CLUSTER: &str = "0193a5e0-0000-7000-8000-000000000001";
    const BACKUP: &str = "0193a5e0-0000-7000-8000-000000000002";
    const V1: &str = "0193a5e0-0000-7000-8000-0000000000a1";
    const V2: &str = "0193a5e0-0000-7000-8000-0000000000a2";

    #[test]
    fn only_copies_of_objects_are_candidates() {
        let copy = copy_of(&format!("clusters/{CLUSTER}/us-east-1/objects/{V1}")).unwrap();
        assert_eq!(
            copy.owner,
            CopyOwner::Cluster(Uuid::parse_str(CLUSTER).unwrap())
        );
        assert_eq!(copy.version, Uuid::parse_str(V1).unwrap());
        let copy = copy_of(&format!("backups/{BACKUP}/objects/{V2}")).unwrap();
        assert_eq!(
            copy.owner,
            CopyOwner::Backup(Uuid::parse_str(BACKUP).unwrap())
        );
        for other in [
            format!("clusters/{CLUSTER}/us-east-1/marker"),
            format!("clusters/{CLUSTER}/us-east-1/objects/{V1}/more"),
            format!("clusters/not-an-id/us-east-1/objects/{V1}"),
            format!("backups/{BACKUP}/objects/not-a-version"),
            format!("elsewhere/{BACKUP}/objects/{V1}"),
            "clusters".to_owned(),
        ] {
            assert_eq!(copy_of(&other), None, "{other}");
        }
    }

    #[test]
    fn an_orphan_is_removed_only_when_old_and_seen_by_the_previous_sweep() {
        let old_orphan = format!("clusters/{CLUSTER}/us-east-1/objects/{V1}");
        let live_one = format!("clusters/{CLUSTER}/us-east-1/objects/{V2}");
        let young_orphan = format!("backups/{BACKUP}/objects/{V1}");
        let batch = vec![
            listed(&old_orphan, 120),
            listed(&live_one, 120),
            listed(&young_orphan, 10),
        ];
        let live: HashSet<Copy> = [copy_of(&live_one).unwrap()].into();
        let cutoff = at(60);

        // First sighting: remembered, not removed.
        let (remove, remember) = choose(&batch, &live, &HashSet::new(), cutoff);
        assert!(remove.is_empty());
        assert_eq!(remember, vec![old_orphan.clone()]);

        // Second sighting: removed. A live copy never is, even if it was once remembered
        // (recorded between the two sweeps); a young one waits for its grace period.
        let seen: HashSet<String> =
            [old_orphan.clone(), live_one.clone(), young_orphan.clone()].into();
        let (remove, remember) = choose(&batch, &live, &seen, cutoff);
        assert_eq!(remove, vec![old_orphan]);
        assert!(remember.is_empty());
    }
}
