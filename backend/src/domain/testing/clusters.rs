//! The in-memory ClusterStore: clusters and their regions, the objects' index, the versions a
//! cluster keeps for a backup being taken, backups and their objects, with the adapter's
//! promises (unique names per project, compare-and-set transitions, a backup's snapshot taken
//! in the same write as its hold on the cluster). Each write records its audit event, and
//! queues its job, in the shared `MemoryStore`, as the adapter does in one transaction.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::domain::blobs::CopyOwner;
use crate::domain::clusters::{
    Backup, BackupState, Cluster, ClusterState, ObjectName, StoredObject,
};
use crate::domain::keys::rewrap::{
    DataKeySwap, DataKeyToMove, FAILURES_SHOWN, Rewrap, RewrapFailure, RewrapState,
};
use crate::domain::ports::{BackupCopy, BackupStart, ClusterStore, DataKeyRow, ObjectWrite};

/// One row of a backup's index: the version (the cluster's until copied, then the copy's).
#[derive(Clone, Copy)]
struct Row {
    version: Uuid,
    size_bytes: u64,
    copied: bool,
}

#[derive(Default)]
struct Clusters {
    clusters: Vec<Cluster>,
    objects: HashMap<Uuid, BTreeMap<String, StoredObject>>,
    /// The backup each cluster is held by, and the versions it keeps for it.
    held: HashMap<Uuid, (Uuid, Vec<Uuid>)>,
    backups: Vec<Backup>,
    rows: HashMap<Uuid, BTreeMap<String, Row>>,
    rewraps: Vec<Rewrap>,
    /// The re-wrap that gave up on each data key (by its label).
    gave_up: HashMap<String, Uuid>,
    failures: Vec<(Uuid, RewrapFailure)>,
}

pub struct MemoryClusters {
    state: Mutex<Clusters>,
    store: Arc<MemoryStore>,
}

impl MemoryClusters {
    pub fn new(store: Arc<MemoryStore>) -> Self {
        Self {
            state: Mutex::default(),
            store,
        }
    }

    /// A change and its audit event (when it happened), under both locks.
    fn write<T>(
        &self,
        audit: Option<AuditDraft>,
        change: impl FnOnce(&mut Clusters, &mut State) -> (T, bool),
    ) -> T {
        let mut clusters = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut store = self.store.state();
        let (value, happened) = change(&mut clusters, &mut store);
        if happened && let Some(audit) = audit {
            store.append(&self.store.key, audit);
        }
        value
    }

    /// The backups that `keep` selects, newest first, a page of them.
    fn newest_backups(&self, page: PageRequest, keep: impl Fn(&Backup) -> bool) -> Vec<Backup> {
        let found = self.read(|c| c.backups.iter().filter(|b| keep(b)).cloned().collect());
        newest(found, page)
    }

    fn read<T>(&self, f: impl FnOnce(&Clusters) -> T) -> T {
        f(&self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Clusters {
    fn cluster_mut(&mut self, organization_id: Uuid, id: Uuid) -> Option<&mut Cluster> {
        self.clusters
            .iter_mut()
            .find(|c| c.id == id && c.organization_id == organization_id)
    }

    /// Available, and whether a backup holds it.
    fn serving(&self, id: Uuid) -> Option<bool> {
        self.clusters
            .iter()
            .find(|c| c.id == id && c.state == ClusterState::Available)
            .map(|_| self.held.contains_key(&id))
    }

    /// A replaced version: to delete now, or kept for the backup holding the cluster.
    fn superseded(&mut self, cluster_id: Uuid, version: Uuid) -> Option<Uuid> {
        match self.held.get_mut(&cluster_id) {
            Some((_, kept)) => {
                kept.push(version);
                None
            }
            None => Some(version),
        }
    }

    fn backup_mut(&mut self, id: Uuid) -> Option<&mut Backup> {
        self.backups.iter_mut().find(|b| b.id == id)
    }

    /// The data keys a re-wrap still has to move, as the adapter selects them.
    fn to_move(&self, rewrap: &Rewrap) -> Vec<DataKeyToMove> {
        let pending = |key_id: Option<Uuid>, version: &Option<String>, row: &DataKeyRow| {
            key_id == Some(rewrap.from_key_id)
                && self.gave_up.get(&row.label()) != Some(&rewrap.id)
                && (rewrap.replaces()
                    || rewrap.target_version.is_none()
                    || version != &rewrap.target_version)
        };
        let mut left = Vec::new();
        for cluster in &self.clusters {
            for region in &cluster.regions {
                let row = DataKeyRow::ClusterRegion {
                    cluster_id: cluster.id,
                    region: region.region.as_str().to_owned(),
                };
                if pending(region.key_id, &region.key_version, &row) {
                    left.push(DataKeyToMove {
                        row,
                        region: region.region.clone(),
                        project_id: cluster.project_id,
                        wrapped: region.wrapped_key.clone(),
                    });
                }
            }
        }
        for backup in &self.backups {
            let row = DataKeyRow::Backup { id: backup.id };
            if pending(backup.region.key_id, &backup.region.key_version, &row) {
                left.push(DataKeyToMove {
                    row,
                    region: backup.region.region.clone(),
                    project_id: backup.project_id,
                    wrapped: backup.region.wrapped_key.clone(),
                });
            }
        }
        left
    }

    /// The stored data key `row` names, if it is still wrapped by the re-wrap's old key.
    fn data_key_mut(
        &mut self,
        row: &DataKeyRow,
    ) -> Option<&mut crate::domain::clusters::ClusterRegion> {
        match row {
            DataKeyRow::ClusterRegion { cluster_id, region } => self
                .clusters
                .iter_mut()
                .find(|c| c.id == *cluster_id)?
                .regions
                .iter_mut()
                .find(|r| r.region.as_str() == region),
            DataKeyRow::Backup { id } => self.backup_mut(*id).map(|b| &mut b.region),
        }
    }

    fn with_failures(&self, rewrap: &Rewrap) -> Rewrap {
        let mut shown = rewrap.clone();
        shown.failures = self
            .failures
            .iter()
            .filter(|(id, _)| *id == rewrap.id)
            .map(|(_, f)| f.clone())
            .take(FAILURES_SHOWN as usize)
            .collect();
        shown
    }
}

/// A backup's row as the object it names, dated when the backup was taken.
fn row_object(name: &str, row: &Row, taken_at: DateTime<Utc>) -> Option<StoredObject> {
    Some(StoredObject {
        id: row.version,
        name: ObjectName::parse(name).ok()?,
        version: row.version,
        size_bytes: row.size_bytes,
        updated_at: taken_at,
    })
}

fn forget(store: &mut State, kind: JobKind, subject: Uuid) {
    store
        .jobs
        .retain(|(j, _)| !(j.kind == kind && j.subject == subject));
}

fn newest(backups: Vec<Backup>, page: PageRequest) -> Vec<Backup> {
    let mut backups = backups;
    backups.sort_by_key(|b| std::cmp::Reverse(b.id));
    backups
        .into_iter()
        .filter(|b| page.after.is_none_or(|after| b.id < after))
        .take(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX))
        .collect()
}

#[async_trait]
impl ClusterStore for MemoryClusters {
    async fn insert_cluster(
        &self,
        cluster: &Cluster,
        objects: &[StoredObject],
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(Some(audit), |c, store| {
            if c.clusters
                .iter()
                .any(|o| o.project_id == cluster.project_id && o.name == cluster.name)
            {
                return (Err(StoreError::Conflict(Constraint::ClusterName)), false);
            }
            c.clusters.push(cluster.clone());
            let index = c.objects.entry(cluster.id).or_default();
            for object in objects {
                index.insert(object.name.as_str().to_owned(), object.clone());
            }
            if cluster.restore.is_some() && cluster.state == ClusterState::Creating {
                store.enqueue(
                    JobKind::Restore,
                    cluster.organization_id,
                    cluster.id,
                    cluster.created_at,
                );
            }
            (Ok(()), true)
        })
    }

    async fn cluster(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Cluster>, StoreError> {
        Ok(self.read(|c| {
            c.clusters
                .iter()
                .find(|c| c.id == id && c.organization_id == organization_id)
                .cloned()
        }))
    }

    async fn clusters(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Cluster>, StoreError> {
        let mut found: Vec<Cluster> = self.read(|c| {
            c.clusters
                .iter()
                .filter(|c| c.organization_id == organization_id && c.project_id == project_id)
                .cloned()
                .collect()
        });
        found.sort_by_key(|c| c.id);
        Ok(super::page(&found, page, |c| c.id))
    }

    async fn cluster_states(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, ClusterState)>, StoreError> {
        Ok(self.read(|c| {
            c.clusters
                .iter()
                .filter(|c| ids.contains(&c.id))
                .map(|c| (c.id, c.state))
                .collect()
        }))
    }

    async fn clusters_using_keys(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<Cluster>, StoreError> {
        Ok(self.read(|c| {
            c.clusters
                .iter()
                .filter(|c| {
                    c.organization_id == organization_id
                        && key_ids.iter().any(|key| c.uses_key(*key))
                })
                .cloned()
                .collect()
        }))
    }

    async fn clusters_using_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<Cluster>, StoreError> {
        self.clusters_using_keys(organization_id, &[key_id]).await
    }

    async fn set_will_not_resume(
        &self,
        organization_id: Uuid,
        id: Uuid,
        reason: Option<String>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        Ok(self.write(Some(audit), |c, _| {
            match c.cluster_mut(organization_id, id) {
                Some(cluster) if cluster.will_not_resume.is_some() != reason.is_some() => {
                    cluster.will_not_resume = reason;
                    (true, true)
                }
                _ => (false, false),
            }
        }))
    }

    async fn transition(
        &self,
        organization_id: Uuid,
        id: Uuid,
        from: &[ClusterState],
        to: ClusterState,
        last_error: Option<String>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let at = audit.occurred_at;
        Ok(self.write(Some(audit), |c, _| {
            match c.cluster_mut(organization_id, id) {
                Some(cluster) if from.contains(&cluster.state) => {
                    cluster.state = to;
                    cluster.last_error = last_error;
                    cluster.updated_at = at;
                    (true, true)
                }
                _ => (false, false),
            }
        }))
    }

    async fn delete_cluster(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(Some(audit), |c, _| {
            let was = c.clusters.len();
            c.clusters
                .retain(|c| !(c.id == id && c.organization_id == organization_id));
            let mine = c.clusters.len() < was;
            if mine {
                c.objects.remove(&id);
                c.held.remove(&id);
            }
            ((), mine)
        });
        Ok(())
    }

    async fn objects(
        &self,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let mut found: Vec<StoredObject> = self.read(|c| {
            c.objects
                .get(&cluster_id)
                .map(|o| o.values().cloned().collect())
                .unwrap_or_default()
        });
        found.sort_by_key(|o| o.id);
        Ok(super::page(&found, page, |o| o.id))
    }

    async fn object(
        &self,
        cluster_id: Uuid,
        name: &ObjectName,
    ) -> Result<Option<StoredObject>, StoreError> {
        Ok(self.read(|c| {
            c.objects
                .get(&cluster_id)
                .and_then(|o| o.get(name.as_str()))
                .cloned()
        }))
    }

    async fn put_object(
        &self,
        cluster_id: Uuid,
        object: &StoredObject,
    ) -> Result<ObjectWrite, StoreError> {
        Ok(self.write(None, |c, _| {
            if c.serving(cluster_id).is_none() {
                return (ObjectWrite::ClusterNotAvailable, false);
            }
            let index = c.objects.entry(cluster_id).or_default();
            let replaced = match index.get_mut(object.name.as_str()) {
                Some(old) => {
                    let version = old.version;
                    old.version = object.version;
                    old.size_bytes = object.size_bytes;
                    old.updated_at = object.updated_at;
                    c.superseded(cluster_id, version)
                }
                None => {
                    index.insert(object.name.as_str().to_owned(), object.clone());
                    None
                }
            };
            (ObjectWrite::Recorded { replaced }, true)
        }))
    }

    async fn delete_object(
        &self,
        cluster_id: Uuid,
        name: &ObjectName,
    ) -> Result<Option<ObjectWrite>, StoreError> {
        Ok(self.write(None, |c, _| {
            if c.serving(cluster_id).is_none() {
                return (Some(ObjectWrite::ClusterNotAvailable), false);
            }
            let removed = c
                .objects
                .get_mut(&cluster_id)
                .and_then(|o| o.remove(name.as_str()));
            match removed {
                None => (None, false),
                Some(old) => {
                    let replaced = c.superseded(cluster_id, old.version);
                    (Some(ObjectWrite::Recorded { replaced }), true)
                }
            }
        }))
    }

    async fn start_backup(
        &self,
        backup: &Backup,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<BackupStart, StoreError> {
        Ok(
            self.write(Some(audit), |c, store| match c.serving(backup.cluster_id) {
                None => (BackupStart::NotAvailable, false),
                Some(true) => (BackupStart::AlreadyRunning, false),
                Some(false) => {
                    c.held.insert(backup.cluster_id, (backup.id, Vec::new()));
                    let snapshot: BTreeMap<String, Row> = c
                        .objects
                        .get(&backup.cluster_id)
                        .into_iter()
                        .flat_map(|o| o.iter())
                        .map(|(name, o)| {
                            (
                                name.clone(),
                                Row {
                                    version: o.version,
                                    size_bytes: o.size_bytes,
                                    copied: false,
                                },
                            )
                        })
                        .collect();
                    let objects = u32::try_from(snapshot.len()).unwrap_or(u32::MAX);
                    c.rows.insert(backup.id, snapshot);
                    c.backups.push(Backup {
                        state: BackupState::Creating,
                        object_count: objects,
                        objects_copied: 0,
                        size_bytes: 0,
                        ..backup.clone()
                    });
                    store.enqueue(JobKind::Backup, backup.organization_id, backup.id, now);
                    (BackupStart::Started { objects }, true)
                }
            }),
        )
    }

    async fn backup_objects_to_copy(
        &self,
        backup_id: Uuid,
        limit: u64,
    ) -> Result<Vec<StoredObject>, StoreError> {
        Ok(self.read(|c| {
            let taken_at = c
                .backups
                .iter()
                .find(|b| b.id == backup_id)
                .map(|b| b.created_at)
                .unwrap_or_default();
            c.rows
                .get(&backup_id)
                .into_iter()
                .flat_map(|rows| rows.iter())
                .filter(|(_, row)| !row.copied)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .filter_map(|(name, row)| row_object(name, row, taken_at))
                .collect()
        }))
    }

    async fn record_backup_copies(
        &self,
        backup_id: Uuid,
        copies: &[BackupCopy],
    ) -> Result<bool, StoreError> {
        Ok(self.write(None, |c, _| {
            let creating = c
                .backups
                .iter()
                .any(|b| b.id == backup_id && b.state == BackupState::Creating);
            if !creating {
                return (false, false);
            }
            let rows = c.rows.entry(backup_id).or_default();
            let (mut done, mut bytes) = (0u32, 0u64);
            for copy in copies {
                if let Some(row) = rows.get_mut(copy.name.as_str())
                    && !row.copied
                {
                    *row = Row {
                        version: copy.version,
                        size_bytes: copy.size_bytes,
                        copied: true,
                    };
                    done += 1;
                    bytes += copy.size_bytes;
                }
            }
            if let Some(backup) = c.backup_mut(backup_id) {
                backup.objects_copied += done;
                backup.size_bytes += bytes;
            }
            (true, true)
        }))
    }

    async fn end_backup(
        &self,
        backup: &Backup,
        failure: Option<String>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<Option<Vec<Uuid>>, StoreError> {
        Ok(self.write(Some(audit), |c, store| {
            let Some(row) = c
                .backup_mut(backup.id)
                .filter(|b| b.state == BackupState::Creating)
            else {
                return (None, false);
            };
            row.state = if failure.is_some() {
                BackupState::Failed
            } else {
                BackupState::Available
            };
            row.finished_at = Some(now);
            if failure.is_some() {
                c.rows.remove(&backup.id);
            }
            if let Some(row) = c.backup_mut(backup.id) {
                row.last_error = failure;
            }
            forget(store, JobKind::Backup, backup.id);
            let kept = match c.held.get(&backup.cluster_id) {
                Some((holder, _)) if *holder == backup.id => c
                    .held
                    .remove(&backup.cluster_id)
                    .map(|(_, kept)| kept)
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            (Some(kept), true)
        }))
    }

    async fn backup(&self, organization_id: Uuid, id: Uuid) -> Result<Option<Backup>, StoreError> {
        Ok(self.read(|c| {
            c.backups
                .iter()
                .find(|b| b.id == id && b.organization_id == organization_id)
                .cloned()
        }))
    }

    async fn backups(
        &self,
        organization_id: Uuid,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Backup>, StoreError> {
        Ok(self.newest_backups(page, |b| {
            b.organization_id == organization_id && b.cluster_id == cluster_id
        }))
    }

    async fn project_backups(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Backup>, StoreError> {
        Ok(self.newest_backups(page, |b| {
            b.organization_id == organization_id && b.project_id == project_id
        }))
    }

    async fn backups_using_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<Backup>, StoreError> {
        Ok(self.read(|c| {
            c.backups
                .iter()
                .filter(|b| b.organization_id == organization_id && b.region.key_id == Some(key_id))
                .cloned()
                .collect()
        }))
    }

    async fn backup_objects(
        &self,
        backup_id: Uuid,
        taken_at: DateTime<Utc>,
        after: Option<&ObjectName>,
        limit: u64,
    ) -> Result<Vec<StoredObject>, StoreError> {
        Ok(self.read(|c| {
            c.rows
                .get(&backup_id)
                .into_iter()
                .flat_map(|rows| rows.iter())
                .filter(|(name, row)| {
                    row.copied && after.is_none_or(|a| name.as_str() > a.as_str())
                })
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .filter_map(|(name, row)| row_object(name, row, taken_at))
                .collect()
        }))
    }

    async fn delete_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(Some(audit), |c, _| {
            let was = c.backups.len();
            c.backups
                .retain(|b| !(b.id == id && b.organization_id == organization_id));
            let mine = c.backups.len() < was;
            if mine {
                c.rows.remove(&id);
            }
            ((), mine)
        });
        Ok(())
    }

    async fn restoring_from(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
    ) -> Result<bool, StoreError> {
        Ok(self.read(|c| {
            c.clusters.iter().any(|c| {
                c.organization_id == organization_id
                    && c.state == ClusterState::Creating
                    && c.restore.is_some_and(|r| r.backup_id == backup_id)
            })
        }))
    }

    async fn restored_up_to(&self, cluster_id: Uuid) -> Result<Option<ObjectName>, StoreError> {
        Ok(self.read(|c| {
            c.objects
                .get(&cluster_id)
                .and_then(|o| o.keys().next_back().cloned())
                .and_then(|name| ObjectName::parse(&name).ok())
        }))
    }

    async fn record_restored(
        &self,
        cluster_id: Uuid,
        objects: &[StoredObject],
    ) -> Result<bool, StoreError> {
        Ok(self.write(None, |c, _| {
            let Some(cluster) = c
                .clusters
                .iter_mut()
                .find(|c| c.id == cluster_id && c.state == ClusterState::Creating)
            else {
                return (false, false);
            };
            if let Some(restore) = cluster.restore.as_mut() {
                restore.objects_restored += u32::try_from(objects.len()).unwrap_or(u32::MAX);
            }
            let index = c.objects.entry(cluster_id).or_default();
            for object in objects {
                index.insert(object.name.as_str().to_owned(), object.clone());
            }
            (true, true)
        }))
    }

    async fn end_restore(
        &self,
        cluster_id: Uuid,
        failure: Option<String>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        Ok(self.write(Some(audit), |c, store| {
            let Some(cluster) = c
                .clusters
                .iter_mut()
                .find(|c| c.id == cluster_id && c.state == ClusterState::Creating)
            else {
                return (false, false);
            };
            cluster.state = if failure.is_some() {
                ClusterState::Failed
            } else {
                ClusterState::Available
            };
            cluster.last_error = failure;
            cluster.updated_at = now;
            forget(store, JobKind::Restore, cluster_id);
            (true, true)
        }))
    }

    async fn start_rewrap(
        &self,
        rewrap: &Rewrap,
        replacement: Option<&EncryptionKey>,
        events: Vec<AuditDraft>,
    ) -> Result<Rewrap, StoreError> {
        let mut c = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut store = self.store.state();
        let ids = [rewrap.from_key_id, rewrap.to_key_id];
        if c.rewraps.iter().any(|r| {
            r.state == RewrapState::Rewrapping
                && (ids.contains(&r.from_key_id) || ids.contains(&r.to_key_id))
        }) {
            return Err(StoreError::Conflict(Constraint::KeyChange));
        }
        // What is left of a replacement: the old key must still be replaced, and the target
        // (the slot's current key) must exist and not be replaced.
        let retry = replacement.is_none() && rewrap.replaces();
        if retry
            && !store
                .keys
                .iter()
                .any(|k| k.id == rewrap.to_key_id && k.replaced_by.is_none())
        {
            return Err(StoreError::Conflict(Constraint::KeyChange));
        }
        let Some(old) = store.keys.iter().position(|k| {
            k.id == rewrap.from_key_id
                && k.organization_id == rewrap.organization_id
                && k.replaced_by.is_some() == retry
        }) else {
            return Err(StoreError::Conflict(Constraint::KeyChange));
        };
        if retry {
            store.keys[old].replaced_by = Some(rewrap.to_key_id);
        }
        if let Some(new) = replacement {
            let mut keys = store.keys.clone();
            keys[old].replaced_by = Some(new.id);
            if keys.iter().any(|k| super::keys::same_slot(k, new)) {
                return Err(StoreError::Conflict(Constraint::KeyPerRegion));
            }
            keys.push(new.clone());
            store.keys = keys;
        }
        let mut started = rewrap.clone();
        started.total = u32::try_from(c.to_move(rewrap).len()).unwrap_or(u32::MAX);
        c.rewraps.push(started.clone());
        store.enqueue(
            JobKind::Rewrap,
            rewrap.organization_id,
            rewrap.id,
            rewrap.started_at,
        );
        for event in events {
            store.append(&self.store.key, event);
        }
        Ok(started)
    }

    async fn rewrap(&self, organization_id: Uuid, id: Uuid) -> Result<Option<Rewrap>, StoreError> {
        Ok(self.read(|c| {
            c.rewraps
                .iter()
                .find(|r| r.id == id && r.organization_id == organization_id)
                .map(|r| c.with_failures(r))
        }))
    }

    async fn latest_rewraps(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Rewrap)>, StoreError> {
        Ok(self.read(|c| {
            key_ids
                .iter()
                .filter_map(|key| {
                    c.rewraps
                        .iter()
                        .rev()
                        .find(|r| {
                            r.organization_id == organization_id
                                && (r.from_key_id == *key || r.to_key_id == *key)
                        })
                        .map(|r| (*key, c.with_failures(r)))
                })
                .collect()
        }))
    }

    async fn data_keys_to_move(
        &self,
        rewrap: &Rewrap,
        limit: u64,
    ) -> Result<Vec<DataKeyToMove>, StoreError> {
        Ok(self.read(|c| {
            c.to_move(rewrap)
                .into_iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
        }))
    }

    async fn record_rewrap(
        &self,
        rewrap: &Rewrap,
        to_key_ref: &str,
        swaps: Vec<(DataKeySwap, AuditDraft)>,
        failures: &[(DataKeyRow, Vec<u8>, RewrapFailure)],
    ) -> Result<u32, StoreError> {
        let mut c = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut store = self.store.state();
        let mut swapped = 0u32;
        for (swap, event) in swaps {
            if c.gave_up.get(&swap.row.label()) == Some(&rewrap.id) {
                continue;
            }
            let moved = c.data_key_mut(&swap.row).is_some_and(|stored| {
                let still =
                    stored.key_id == Some(rewrap.from_key_id) && stored.wrapped_key == swap.old;
                if still {
                    stored.key_id = Some(rewrap.to_key_id);
                    stored.key_ref = Some(to_key_ref.to_owned());
                    stored.wrapped_key = swap.new.clone();
                    stored.key_version = swap.version.clone();
                }
                still
            });
            if moved {
                store.append(&self.store.key, event);
                swapped += 1;
            }
        }
        let mut failed = 0u32;
        for (row, old, failure) in failures {
            let pending = c
                .to_move(rewrap)
                .iter()
                .any(|k| &k.row == row && &k.wrapped == old);
            if pending {
                c.gave_up.insert(row.label(), rewrap.id);
                c.failures.push((rewrap.id, failure.clone()));
                failed += 1;
            }
        }
        let left = u32::try_from(c.to_move(rewrap).len()).unwrap_or(u32::MAX);
        if let Some(stored) = c.rewraps.iter_mut().find(|r| r.id == rewrap.id) {
            stored.done += swapped;
            stored.failed += failed;
            if stored.target_version != rewrap.target_version {
                stored.total = stored.done + stored.failed + left;
                stored.target_version = rewrap.target_version.clone();
            }
        }
        Ok(swapped)
    }

    async fn finish_rewrap(
        &self,
        rewrap: &Rewrap,
        state: RewrapState,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        Ok(self.write(Some(audit), |c, store| {
            if !c.to_move(rewrap).is_empty() {
                return (false, false);
            }
            match c
                .rewraps
                .iter_mut()
                .find(|r| r.id == rewrap.id && r.state == RewrapState::Rewrapping)
            {
                Some(stored) => {
                    stored.state = state;
                    stored.finished_at = Some(now);
                    forget(store, JobKind::Rewrap, rewrap.id);
                    (true, true)
                }
                None => (false, false),
            }
        }))
    }

    async fn named_versions(
        &self,
        owner: CopyOwner,
        versions: &[Uuid],
    ) -> Result<Vec<Uuid>, StoreError> {
        Ok(self.read(|c| {
            let mut named: Vec<Uuid> = Vec::new();
            match owner {
                CopyOwner::Cluster(id) => {
                    named.extend(
                        c.objects
                            .get(&id)
                            .into_iter()
                            .flat_map(|o| o.values().map(|o| o.version)),
                    );
                    named.extend(
                        c.held
                            .get(&id)
                            .into_iter()
                            .flat_map(|(_, kept)| kept.iter().copied()),
                    );
                    for backup in c
                        .backups
                        .iter()
                        .filter(|b| b.cluster_id == id && b.state == BackupState::Creating)
                    {
                        named.extend(
                            c.rows
                                .get(&backup.id)
                                .into_iter()
                                .flat_map(|rows| rows.values())
                                .filter(|row| !row.copied)
                                .map(|row| row.version),
                        );
                    }
                }
                CopyOwner::Backup(id) => named.extend(
                    c.rows
                        .get(&id)
                        .into_iter()
                        .flat_map(|rows| rows.values())
                        .filter(|row| row.copied)
                        .map(|row| row.version),
                ),
            }
            named.retain(|v| versions.contains(v));
            named
        }))
    }
}
