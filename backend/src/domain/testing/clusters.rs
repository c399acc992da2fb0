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
use crate::domain::ports::{BackupCopy, BackupStart, ClusterStore, ObjectWrite};

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
