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
//! - a sweep found it orphaned at least `settle` earlier (the sweep interval, a second or
//!   more): a write records its copy milliseconds after finishing it, and a backup or restore
//!   job within half a second (`RECORD_WITHIN`), so two sightings that far apart are not a
//!   write in progress.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

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

/// When the sweeps first found each orphaned copy (by key), kept between sweeps.
pub type Sightings = HashMap<String, Instant>;

/// The choice, without I/O: of the listed copies, those to remove now (older than `cutoff` by
/// the storage's date, named by no index row, and first found orphaned at least `settle`
/// ago), and those to remember as orphans for a later sweep, with when they were first seen.
pub fn choose(
    listed: &[(BlobMeta, Copy)],
    live: &HashSet<Copy>,
    seen_before: &Sightings,
    cutoff: DateTime<Utc>,
    settle: Duration,
) -> (Vec<String>, Vec<(String, Instant)>) {
    let mut remove = Vec::new();
    let mut remember = Vec::new();
    for (meta, copy) in listed {
        if meta.modified >= cutoff || live.contains(copy) {
            continue;
        }
        match seen_before.get(&meta.key) {
            Some(first) if first.elapsed() >= settle => remove.push(meta.key.clone()),
            Some(first) => remember.push((meta.key.clone(), *first)),
            None => remember.push((meta.key.clone(), Instant::now())),
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
    /// One sweep of the storage. `orphans` holds the copies earlier sweeps found orphaned
    /// (and when they first did), and is replaced by what is still orphaned now.
    pub async fn sweep_storage(
        &self,
        orphans: &mut Sightings,
        grace: Duration,
        settle: Duration,
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
        let mut next = Sightings::new();
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
                    let (remove, remember) = choose(&batch, &live, orphans, cutoff, settle);
                    for key in remove {
                        match parts.blobs.delete(&key).await {
                            Ok(()) => report.removed += 1,
                            Err(err) => {
                                tracing::warn!(error = %err, key, "the sweeper could not remove an orphaned copy");
                                next.insert(key, Instant::now());
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
    fn an_orphan_is_removed_only_when_old_and_first_seen_long_enough_ago() {
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

        let settle = Duration::from_millis(30);

        // First sighting: remembered, not removed.
        let (remove, remember) = choose(&batch, &live, &Sightings::new(), cutoff, settle);
        assert!(remove.is_empty());
        let keys: Vec<&String> = remember.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&old_orphan]);

        // Seen again too soon: still only remembered, with its first sighting.
        let first = Instant::now();
        let seen: Sightings = [&old_orphan, &live_one, &young_orphan]
            .into_iter()
            .map(|k| (k.clone(), first))
            .collect();
        let (remove, remember) = choose(&batch, &live, &seen, cutoff, settle);
        assert!(remove.is_empty());
        assert_eq!(remember, vec![(old_orphan.clone(), first)]);

        // Seen again `settle` later: removed. A live copy never is, even if it was once
        // remembered (recorded between the two sweeps); a young one waits for its grace.
        std::thread::sleep(settle + Duration::from_millis(5));
        let (remove, remember) = choose(&batch, &live, &seen, cutoff, settle);
        assert_eq!(remove, vec![old_orphan]);
        assert!(remember.is_empty());
    }
}
