//! Clusters, their regions, their objects' index and their backups, scoped by organization
//! in every query that a caller's id reaches. Object writes take the chain lock too (with
//! no event): that orders them with a backup's start, so a snapshot never loses a version.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::{
    backup_objects, backups, cluster_garbage, cluster_objects, cluster_regions, clusters,
};
use super::{SeaStore, jobs};
use crate::domain::audit::AuditDraft;
use crate::domain::blobs::CopyOwner;
use crate::domain::clusters::{
    Backup, BackupState, Cluster, ClusterName, ClusterRegion, ClusterState, ObjectName,
    RestoreProgress, StoredObject, Tier,
};
use crate::domain::jobs::JobKind;
use crate::domain::keys::EncryptionKey;
use crate::domain::keys::Provider;
use crate::domain::keys::region::Region;
use crate::domain::keys::rewrap::{DataKeySwap, DataKeyToMove, Rewrap, RewrapFailure, RewrapState};
use crate::domain::page::PageRequest;
use crate::domain::ports::{
    BackupCopy, BackupStart, ClusterStore, DataKeyRow, ObjectWrite, StoreError,
};

fn corrupt(what: &str, id: Uuid) -> StoreError {
    StoreError::Corrupt(format!("{what} {id}"))
}

fn region_from(m: cluster_regions::Model) -> Result<ClusterRegion, StoreError> {
    Ok(ClusterRegion {
        region: Region::parse_known("region", &m.region)
            .map_err(|_| corrupt("cluster region of", m.cluster_id))?,
        key_id: m.key_id,
        key_ref: m.key_ref,
        wrapped_key: m.wrapped_key,
        key_version: m.key_version,
    })
}

fn cluster_from(
    m: clusters::Model,
    regions: Vec<cluster_regions::Model>,
) -> Result<Cluster, StoreError> {
    let bad = |what: &str| corrupt(&format!("cluster ({what})"), m.id);
    Ok(Cluster {
        id: m.id,
        organization_id: m.organization_id,
        project_id: m.project_id,
        name: ClusterName::parse(&m.name).map_err(|_| bad("name"))?,
        provider: Provider::parse(&m.provider).map_err(|_| bad("provider"))?,
        tier: Tier::parse(&m.tier).map_err(|_| bad("tier"))?,
        dual_region_backup: m.dual_region_backup,
        regions: regions
            .into_iter()
            .map(region_from)
            .collect::<Result<_, _>>()?,
        state: ClusterState::parse(&m.state).ok_or_else(|| bad("state"))?,
        last_error: m.last_error,
        will_not_resume: m.will_not_resume,
        restore: match m.restored_from {
            Some(backup_id) => Some(RestoreProgress {
                backup_id,
                objects_total: u32::try_from(m.restore_total).map_err(|_| bad("restore"))?,
                objects_restored: u32::try_from(m.restore_done).map_err(|_| bad("restore"))?,
            }),
            None => None,
        },
        created_by: m.created_by,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn object_from(m: cluster_objects::Model) -> Result<StoredObject, StoreError> {
    Ok(StoredObject {
        id: m.id,
        name: ObjectName::parse(&m.name).map_err(|_| corrupt("object", m.id))?,
        version: m.version,
        size_bytes: u64::try_from(m.size_bytes).map_err(|_| corrupt("object", m.id))?,
        updated_at: m.updated_at,
    })
}

fn backup_from(m: backups::Model) -> Result<Backup, StoreError> {
    let bad = |what: &str| corrupt(&format!("backup ({what})"), m.id);
    let regions: Vec<String> = serde_json::from_str(&m.regions).map_err(|_| bad("regions"))?;
    Ok(Backup {
        id: m.id,
        organization_id: m.organization_id,
        project_id: m.project_id,
        cluster_id: m.cluster_id,
        cluster_name: m.cluster_name,
        provider: Provider::parse(&m.provider).map_err(|_| bad("provider"))?,
        regions: regions
            .iter()
            .map(|r| Region::parse_known("region", r).map_err(|_| bad("regions")))
            .collect::<Result<_, _>>()?,
        region: ClusterRegion {
            region: Region::parse_known("region", &m.region).map_err(|_| bad("region"))?,
            key_id: m.key_id,
            key_ref: m.key_ref,
            wrapped_key: m.wrapped_key,
            key_version: m.key_version,
        },
        state: BackupState::parse(&m.state).ok_or_else(|| bad("state"))?,
        size_bytes: u64::try_from(m.size_bytes).map_err(|_| bad("size"))?,
        object_count: u32::try_from(m.object_count).map_err(|_| bad("count"))?,
        objects_copied: u32::try_from(m.objects_copied).map_err(|_| bad("progress"))?,
        last_error: m.last_error,
        created_by: m.created_by,
        created_at: m.created_at,
        finished_at: m.finished_at,
    })
}

fn size(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

async fn with_regions(
    db: &impl ConnectionTrait,
    rows: Vec<clusters::Model>,
) -> Result<Vec<Cluster>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
    let regions = cluster_regions::Entity::find()
        .filter(cluster_regions::Column::ClusterId.is_in(ids))
        .order_by_asc(cluster_regions::Column::Position)
        .all(db)
        .await?;
    rows.into_iter()
        .map(|c| {
            let mine = regions
                .iter()
                .filter(|r| r.cluster_id == c.id)
                .cloned()
                .collect();
            cluster_from(c, mine)
        })
        .collect()
}

async fn get(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<Cluster>, StoreError> {
    let row = clusters::Entity::find_by_id(id)
        .filter(clusters::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?;
    Ok(with_regions(db, row.into_iter().collect())
        .await?
        .into_iter()
        .next())
}

async fn insert_objects(
    db: &impl ConnectionTrait,
    cluster_id: Uuid,
    objects: &[StoredObject],
) -> Result<(), StoreError> {
    for object in objects {
        cluster_objects::Entity::insert(cluster_objects::ActiveModel {
            id: Set(object.id),
            cluster_id: Set(cluster_id),
            name: Set(object.name.as_str().to_owned()),
            version: Set(object.version),
            size_bytes: Set(size(object.size_bytes)),
            updated_at: Set(object.updated_at),
        })
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// Backups of the organization matching `which`, newest first, a page at a time.
async fn newest_backups(
    db: &impl ConnectionTrait,
    which: sea_orm::sea_query::SimpleExpr,
    organization_id: Uuid,
    page: PageRequest,
) -> Result<Vec<Backup>, StoreError> {
    let mut query = backups::Entity::find()
        .filter(backups::Column::OrganizationId.eq(organization_id))
        .filter(which)
        .order_by_desc(backups::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = page.after {
        query = query.filter(backups::Column::Id.lt(after));
    }
    query.all(db).await?.into_iter().map(backup_from).collect()
}

async fn object_row(
    db: &impl ConnectionTrait,
    cluster_id: Uuid,
    name: &ObjectName,
) -> Result<Option<cluster_objects::Model>, StoreError> {
    Ok(cluster_objects::Entity::find()
        .filter(cluster_objects::Column::ClusterId.eq(cluster_id))
        .filter(cluster_objects::Column::Name.eq(name.as_str()))
        .one(db)
        .await?)
}

/// Whether the cluster is available, and whether a backup is reading it (its lease lasts as
/// long as the backup's job: until it ends, whatever happens to the instance running it).
async fn serving(db: &impl ConnectionTrait, cluster_id: Uuid) -> Result<Option<bool>, StoreError> {
    // Its row share-locked: a pause, a delete or a backup starting (each updates the row)
    // waits for the object writes in flight, and they for it; writes to other clusters do
    // not wait at all.
    let row = clusters::Entity::find_by_id(cluster_id)
        .lock_shared()
        .one(db)
        .await?;
    Ok(row
        .filter(|c| c.state == ClusterState::Available.as_str())
        .map(|c| c.backup_lease.is_some()))
}

/// Ends backup `backup`'s reading of the cluster if it holds it: the versions replaced
/// meanwhile, now to be deleted by the caller.
async fn release_cluster(
    db: &impl ConnectionTrait,
    cluster_id: Uuid,
    backup: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    let ours = clusters::Entity::update_many()
        .col_expr(
            clusters::Column::BackupLease,
            Expr::value(Option::<Uuid>::None),
        )
        .filter(clusters::Column::Id.eq(cluster_id))
        .filter(clusters::Column::BackupLease.eq(backup))
        .exec(db)
        .await?
        .rows_affected
        > 0;
    if !ours {
        return Ok(Vec::new());
    }
    let kept = cluster_garbage::Entity::find()
        .filter(cluster_garbage::Column::ClusterId.eq(cluster_id))
        .all(db)
        .await?;
    cluster_garbage::Entity::delete_many()
        .filter(cluster_garbage::Column::ClusterId.eq(cluster_id))
        .exec(db)
        .await?;
    Ok(kept
        .iter()
        .filter_map(|g| Uuid::parse_str(&g.blob).ok())
        .collect())
}

fn backup_object_from(
    m: backup_objects::Model,
    taken_at: DateTime<Utc>,
) -> Result<StoredObject, StoreError> {
    Ok(StoredObject {
        id: m.version,
        name: ObjectName::parse(&m.name).map_err(|_| corrupt("backup object of", m.backup_id))?,
        version: m.version,
        size_bytes: u64::try_from(m.size_bytes)
            .map_err(|_| corrupt("backup object of", m.backup_id))?,
        updated_at: taken_at,
    })
}

/// A replaced version: deleted by the caller now, or kept until the backup reading the
/// cluster ends.
async fn superseded(
    db: &impl ConnectionTrait,
    cluster_id: Uuid,
    version: Uuid,
    backup_running: bool,
) -> Result<Option<Uuid>, StoreError> {
    if !backup_running {
        return Ok(Some(version));
    }
    cluster_garbage::Entity::insert(cluster_garbage::ActiveModel {
        blob: Set(version.to_string()),
        cluster_id: Set(cluster_id),
    })
    .exec_without_returning(db)
    .await?;
    Ok(None)
}

#[async_trait]
impl ClusterStore for SeaStore {
    async fn insert_cluster(
        &self,
        cluster: &Cluster,
        objects: &[StoredObject],
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            clusters::Entity::insert(clusters::ActiveModel {
                id: Set(cluster.id),
                organization_id: Set(cluster.organization_id),
                project_id: Set(cluster.project_id),
                name: Set(cluster.name.as_str().to_owned()),
                provider: Set(cluster.provider.as_str().to_owned()),
                tier: Set(cluster.tier.as_str().to_owned()),
                dual_region_backup: Set(cluster.dual_region_backup),
                state: Set(cluster.state.as_str().to_owned()),
                last_error: Set(cluster.last_error.clone()),
                backup_started_at: Set(None),
                backup_lease: Set(None),
                created_by: Set(cluster.created_by.clone()),
                created_at: Set(cluster.created_at),
                updated_at: Set(cluster.updated_at),
                will_not_resume: Set(None),
                restored_from: Set(cluster.restore.map(|r| r.backup_id)),
                restore_total: Set(cluster
                    .restore
                    .map_or(0, |r| i32::try_from(r.objects_total).unwrap_or(i32::MAX))),
                restore_done: Set(0),
            })
            .exec_without_returning(txn)
            .await?;
            if cluster.restore.is_some() && cluster.state == ClusterState::Creating {
                jobs::enqueue(
                    txn,
                    JobKind::Restore,
                    cluster.organization_id,
                    cluster.id,
                    cluster.created_at,
                )
                .await?;
            }
            for (position, region) in cluster.regions.iter().enumerate() {
                cluster_regions::Entity::insert(cluster_regions::ActiveModel {
                    cluster_id: Set(cluster.id),
                    region: Set(region.region.as_str().to_owned()),
                    position: Set(i32::try_from(position).unwrap_or(i32::MAX)),
                    key_id: Set(region.key_id),
                    key_ref: Set(region.key_ref.clone()),
                    wrapped_key: Set(region.wrapped_key.clone()),
                    key_version: Set(region.key_version.clone()),
                    rewrap_failed: Set(None),
                })
                .exec_without_returning(txn)
                .await?;
            }
            insert_objects(txn, cluster.id, objects).await?;
            ((), true)
        })
    }

    async fn cluster(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Cluster>, StoreError> {
        cached_if_found!(
            self,
            clusters,
            (organization_id, id),
            get(&self.db, organization_id, id).await?
        )
    }

    async fn clusters(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Cluster>, StoreError> {
        let mut query = clusters::Entity::find()
            .filter(clusters::Column::OrganizationId.eq(organization_id))
            .filter(clusters::Column::ProjectId.eq(project_id))
            .order_by_asc(clusters::Column::Id)
            .limit(page.fetch_limit());
        if let Some(after) = page.after {
            query = query.filter(clusters::Column::Id.gt(after));
        }
        with_regions(&self.db, query.all(&self.db).await?).await
    }

    async fn cluster_states(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, ClusterState)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        clusters::Entity::find()
            .filter(clusters::Column::Id.is_in(ids.to_vec()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| {
                ClusterState::parse(&c.state)
                    .map(|state| (c.id, state))
                    .ok_or_else(|| corrupt("cluster (state)", c.id))
            })
            .collect()
    }

    async fn clusters_using_keys(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<Cluster>, StoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        cached!(
            self,
            clusters_using_keys,
            (organization_id, key_ids.to_vec()),
            {
                // On the key_id index (migration 000013): the regions of these keys only.
                let mut ids: Vec<Uuid> = cluster_regions::Entity::find()
                    .select_only()
                    .column(cluster_regions::Column::ClusterId)
                    .filter(cluster_regions::Column::KeyId.is_in(key_ids.to_vec()))
                    .into_tuple()
                    .all(&self.db)
                    .await?;
                ids.sort_unstable();
                ids.dedup();
                if ids.is_empty() {
                    Vec::new()
                } else {
                    let rows = clusters::Entity::find()
                        .filter(clusters::Column::OrganizationId.eq(organization_id))
                        .filter(clusters::Column::Id.is_in(ids))
                        .order_by_asc(clusters::Column::Id)
                        .all(&self.db)
                        .await?;
                    with_regions(&self.db, rows).await?
                }
            }
        )
    }

    async fn clusters_using_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<Cluster>, StoreError> {
        let ids: Vec<Uuid> = cluster_regions::Entity::find()
            .filter(cluster_regions::Column::KeyId.eq(key_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| r.cluster_id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = clusters::Entity::find()
            .filter(clusters::Column::OrganizationId.eq(organization_id))
            .filter(clusters::Column::Id.is_in(ids))
            .order_by_asc(clusters::Column::Id)
            .all(&self.db)
            .await?;
        with_regions(&self.db, rows).await
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
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let at = audit.occurred_at;
        audited!(self, audit, |txn| {
            let moved = clusters::Entity::update_many()
                .col_expr(clusters::Column::State, Expr::value(to.as_str()))
                .col_expr(clusters::Column::LastError, Expr::value(last_error.clone()))
                .col_expr(clusters::Column::UpdatedAt, Expr::value(at))
                .filter(clusters::Column::Id.eq(id))
                .filter(clusters::Column::OrganizationId.eq(organization_id))
                .filter(clusters::Column::State.is_in(from.clone()))
                .exec(txn)
                .await?
                .rows_affected
                > 0;
            (moved, moved)
        })
    }

    async fn set_will_not_resume(
        &self,
        organization_id: Uuid,
        id: Uuid,
        reason: Option<String>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let mut update = clusters::Entity::update_many()
                .col_expr(clusters::Column::WillNotResume, Expr::value(reason.clone()))
                .filter(clusters::Column::Id.eq(id))
                .filter(clusters::Column::OrganizationId.eq(organization_id));
            update = if reason.is_some() {
                update.filter(clusters::Column::WillNotResume.is_null())
            } else {
                update.filter(clusters::Column::WillNotResume.is_not_null())
            };
            let changed = update.exec(txn).await?.rows_affected > 0;
            (changed, changed)
        })
    }

    async fn delete_cluster(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            let mine = clusters::Entity::find_by_id(id)
                .filter(clusters::Column::OrganizationId.eq(organization_id))
                .one(txn)
                .await?
                .is_some();
            if mine {
                cluster_objects::Entity::delete_many()
                    .filter(cluster_objects::Column::ClusterId.eq(id))
                    .exec(txn)
                    .await?;
                cluster_garbage::Entity::delete_many()
                    .filter(cluster_garbage::Column::ClusterId.eq(id))
                    .exec(txn)
                    .await?;
                cluster_regions::Entity::delete_many()
                    .filter(cluster_regions::Column::ClusterId.eq(id))
                    .exec(txn)
                    .await?;
                clusters::Entity::delete_by_id(id).exec(txn).await?;
            }
            ((), mine)
        })
    }

    async fn objects(
        &self,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let mut query = cluster_objects::Entity::find()
            .filter(cluster_objects::Column::ClusterId.eq(cluster_id))
            .order_by_asc(cluster_objects::Column::Id)
            .limit(page.fetch_limit());
        if let Some(after) = page.after {
            query = query.filter(cluster_objects::Column::Id.gt(after));
        }
        query
            .all(&self.db)
            .await?
            .into_iter()
            .map(object_from)
            .collect()
    }

    async fn object(
        &self,
        cluster_id: Uuid,
        name: &ObjectName,
    ) -> Result<Option<StoredObject>, StoreError> {
        object_row(&self.db, cluster_id, name)
            .await?
            .map(object_from)
            .transpose()
    }

    async fn put_object(
        &self,
        cluster_id: Uuid,
        object: &StoredObject,
    ) -> Result<ObjectWrite, StoreError> {
        audited!(self, quietly, |txn| {
            match serving(txn, cluster_id).await? {
                None => (ObjectWrite::ClusterNotAvailable, false),
                Some(backup_running) => {
                    // Writes of one object name, one at a time: the version replaced is the
                    // one read, and a new name is inserted once.
                    super::lock_named(
                        txn,
                        &format!("object:{cluster_id}:{}", object.name.as_str()),
                    )
                    .await?;
                    let existing = object_row(txn, cluster_id, &object.name).await?;
                    let replaced = match existing {
                        Some(old) => {
                            cluster_objects::Entity::update_many()
                                .col_expr(
                                    cluster_objects::Column::Version,
                                    Expr::value(object.version),
                                )
                                .col_expr(
                                    cluster_objects::Column::SizeBytes,
                                    Expr::value(size(object.size_bytes)),
                                )
                                .col_expr(
                                    cluster_objects::Column::UpdatedAt,
                                    Expr::value(object.updated_at),
                                )
                                .filter(cluster_objects::Column::Id.eq(old.id))
                                .exec(txn)
                                .await?;
                            superseded(txn, cluster_id, old.version, backup_running).await?
                        }
                        None => {
                            insert_objects(txn, cluster_id, std::slice::from_ref(object)).await?;
                            None
                        }
                    };
                    (ObjectWrite::Recorded { replaced }, true)
                }
            }
        })
    }

    async fn delete_object(
        &self,
        cluster_id: Uuid,
        name: &ObjectName,
    ) -> Result<Option<ObjectWrite>, StoreError> {
        audited!(self, quietly, |txn| {
            match serving(txn, cluster_id).await? {
                None => (Some(ObjectWrite::ClusterNotAvailable), false),
                Some(backup_running) => {
                    super::lock_named(txn, &format!("object:{cluster_id}:{}", name.as_str()))
                        .await?;
                    let existing = object_row(txn, cluster_id, name).await?;
                    match existing {
                        None => (None, false),
                        Some(old) => {
                            cluster_objects::Entity::delete_by_id(old.id)
                                .exec(txn)
                                .await?;
                            let replaced =
                                superseded(txn, cluster_id, old.version, backup_running).await?;
                            (Some(ObjectWrite::Recorded { replaced }), true)
                        }
                    }
                }
            }
        })
    }

    async fn start_backup(
        &self,
        backup: &Backup,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<BackupStart, StoreError> {
        use sea_orm::sea_query::Query;
        let regions: Vec<&str> = backup.regions.iter().map(Region::as_str).collect();
        let regions = serde_json::to_string(&regions).unwrap_or_else(|_| "[]".into());
        let cluster_id = backup.cluster_id;
        audited!(self, audit, |txn| {
            match serving(txn, cluster_id).await? {
                None => (BackupStart::NotAvailable, false),
                Some(true) => (BackupStart::AlreadyRunning, false),
                Some(false) => {
                    clusters::Entity::update_many()
                        .col_expr(clusters::Column::BackupLease, Expr::value(Some(backup.id)))
                        .filter(clusters::Column::Id.eq(cluster_id))
                        .exec(txn)
                        .await?;
                    let objects: u32 = {
                        use sea_orm::PaginatorTrait;
                        let n = cluster_objects::Entity::find()
                            .filter(cluster_objects::Column::ClusterId.eq(cluster_id))
                            .count(txn)
                            .await?;
                        u32::try_from(n).unwrap_or(u32::MAX)
                    };
                    backups::Entity::insert(backups::ActiveModel {
                        id: Set(backup.id),
                        organization_id: Set(backup.organization_id),
                        project_id: Set(backup.project_id),
                        cluster_id: Set(cluster_id),
                        cluster_name: Set(backup.cluster_name.clone()),
                        provider: Set(backup.provider.as_str().to_owned()),
                        regions: Set(regions.clone()),
                        region: Set(backup.region.region.as_str().to_owned()),
                        key_id: Set(backup.region.key_id),
                        key_ref: Set(backup.region.key_ref.clone()),
                        wrapped_key: Set(backup.region.wrapped_key.clone()),
                        key_version: Set(backup.region.key_version.clone()),
                        state: Set(BackupState::Creating.as_str().to_owned()),
                        size_bytes: Set(0),
                        object_count: Set(i32::try_from(objects).unwrap_or(i32::MAX)),
                        objects_copied: Set(0),
                        last_error: Set(None),
                        created_by: Set(backup.created_by.clone()),
                        created_at: Set(backup.created_at),
                        finished_at: Set(None),
                        rewrap_failed: Set(None),
                    })
                    .exec_without_returning(txn)
                    .await?;
                    // The snapshot: the index as it is now, copied inside the database (no
                    // row passes through this process, whatever the cluster holds).
                    let snapshot = Query::select()
                        .expr(Expr::val(backup.id))
                        .column(cluster_objects::Column::Name)
                        .column(cluster_objects::Column::Version)
                        .column(cluster_objects::Column::SizeBytes)
                        .expr(Expr::val(false))
                        .from(cluster_objects::Entity)
                        .and_where(cluster_objects::Column::ClusterId.eq(cluster_id))
                        .to_owned();
                    let insert = Query::insert()
                        .into_table(backup_objects::Entity)
                        .columns([
                            backup_objects::Column::BackupId,
                            backup_objects::Column::Name,
                            backup_objects::Column::Version,
                            backup_objects::Column::SizeBytes,
                            backup_objects::Column::Copied,
                        ])
                        .select_from(snapshot)
                        .map_err(|e| StoreError::Database(e.to_string()))?
                        .to_owned();
                    txn.execute(&insert).await?;
                    jobs::enqueue(txn, JobKind::Backup, backup.organization_id, backup.id, now)
                        .await?;
                    (BackupStart::Started { objects }, true)
                }
            }
        })
    }

    async fn backup_objects_to_copy(
        &self,
        backup_id: Uuid,
        limit: u64,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let taken_at = backups::Entity::find_by_id(backup_id)
            .one(&self.db)
            .await?
            .map(|b| b.created_at)
            .unwrap_or_default();
        backup_objects::Entity::find()
            .filter(backup_objects::Column::BackupId.eq(backup_id))
            .filter(backup_objects::Column::Copied.eq(false))
            .order_by_asc(backup_objects::Column::Name)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| backup_object_from(m, taken_at))
            .collect()
    }

    async fn record_backup_copies(
        &self,
        backup_id: Uuid,
        copies: &[BackupCopy],
    ) -> Result<bool, StoreError> {
        let copies = copies.to_vec();
        audited!(self, quietly, |txn| {
            // Its row locked: the backup's end or deletion (each updates it) is ordered
            // against these copies.
            let creating = backups::Entity::find_by_id(backup_id)
                .lock_exclusive()
                .one(txn)
                .await?
                .filter(|b| b.state == BackupState::Creating.as_str());
            match creating {
                None => (false, false),
                Some(row) => {
                    let mut copied = 0i32;
                    let mut bytes = 0i64;
                    for copy in &copies {
                        let done = backup_objects::Entity::update_many()
                            .col_expr(backup_objects::Column::Version, Expr::value(copy.version))
                            .col_expr(
                                backup_objects::Column::SizeBytes,
                                Expr::value(size(copy.size_bytes)),
                            )
                            .col_expr(backup_objects::Column::Copied, Expr::value(true))
                            .filter(backup_objects::Column::BackupId.eq(backup_id))
                            .filter(backup_objects::Column::Name.eq(copy.name.as_str()))
                            .filter(backup_objects::Column::Copied.eq(false))
                            .exec(txn)
                            .await?
                            .rows_affected;
                        if done > 0 {
                            copied += 1;
                            bytes = bytes.saturating_add(size(copy.size_bytes));
                        }
                    }
                    backups::Entity::update_many()
                        .col_expr(
                            backups::Column::ObjectsCopied,
                            Expr::value(row.objects_copied.saturating_add(copied)),
                        )
                        .col_expr(
                            backups::Column::SizeBytes,
                            Expr::value(row.size_bytes.saturating_add(bytes)),
                        )
                        .filter(backups::Column::Id.eq(backup_id))
                        .exec(txn)
                        .await?;
                    (true, true)
                }
            }
        })
    }

    async fn end_backup(
        &self,
        backup: &Backup,
        failure: Option<String>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<Option<Vec<Uuid>>, StoreError> {
        let state = match failure {
            None => BackupState::Available,
            Some(_) => BackupState::Failed,
        };
        audited!(self, audit, |txn| {
            let ended = backups::Entity::update_many()
                .col_expr(backups::Column::State, Expr::value(state.as_str()))
                .col_expr(backups::Column::LastError, Expr::value(failure.clone()))
                .col_expr(backups::Column::FinishedAt, Expr::value(Some(now)))
                .filter(backups::Column::Id.eq(backup.id))
                .filter(backups::Column::State.eq(BackupState::Creating.as_str()))
                .exec(txn)
                .await?
                .rows_affected
                > 0;
            if !ended {
                (None, false)
            } else {
                if failure.is_some() {
                    // A failed backup holds nothing: its rows go, its copies are deleted by
                    // the caller (or, if it dies first, by the storage sweeper).
                    backup_objects::Entity::delete_many()
                        .filter(backup_objects::Column::BackupId.eq(backup.id))
                        .exec(txn)
                        .await?;
                }
                jobs::forget(txn, JobKind::Backup, backup.id).await?;
                let released = release_cluster(txn, backup.cluster_id, backup.id).await?;
                (Some(released), true)
            }
        })
    }

    async fn backup(&self, organization_id: Uuid, id: Uuid) -> Result<Option<Backup>, StoreError> {
        backups::Entity::find_by_id(id)
            .filter(backups::Column::OrganizationId.eq(organization_id))
            .one(&self.db)
            .await?
            .map(backup_from)
            .transpose()
    }

    async fn backups(
        &self,
        organization_id: Uuid,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Backup>, StoreError> {
        newest_backups(
            &self.db,
            backups::Column::ClusterId.eq(cluster_id),
            organization_id,
            page,
        )
        .await
    }

    async fn project_backups(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Backup>, StoreError> {
        newest_backups(
            &self.db,
            backups::Column::ProjectId.eq(project_id),
            organization_id,
            page,
        )
        .await
    }

    async fn backups_using_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<Backup>, StoreError> {
        backups::Entity::find()
            .filter(backups::Column::OrganizationId.eq(organization_id))
            .filter(backups::Column::KeyId.eq(key_id))
            .order_by_asc(backups::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(backup_from)
            .collect()
    }

    async fn backup_objects(
        &self,
        backup_id: Uuid,
        taken_at: DateTime<Utc>,
        after: Option<&ObjectName>,
        limit: u64,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let mut query = backup_objects::Entity::find()
            .filter(backup_objects::Column::BackupId.eq(backup_id))
            .filter(backup_objects::Column::Copied.eq(true))
            .order_by_asc(backup_objects::Column::Name)
            .limit(limit);
        if let Some(after) = after {
            query = query.filter(backup_objects::Column::Name.gt(after.as_str()));
        }
        query
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| backup_object_from(m, taken_at))
            .collect()
    }

    async fn delete_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            let mine = backups::Entity::find_by_id(id)
                .filter(backups::Column::OrganizationId.eq(organization_id))
                .one(txn)
                .await?
                .is_some();
            if mine {
                backup_objects::Entity::delete_many()
                    .filter(backup_objects::Column::BackupId.eq(id))
                    .exec(txn)
                    .await?;
                backups::Entity::delete_by_id(id).exec(txn).await?;
            }
            ((), mine)
        })
    }

    async fn restoring_from(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
    ) -> Result<bool, StoreError> {
        use sea_orm::PaginatorTrait;
        Ok(clusters::Entity::find()
            .filter(clusters::Column::OrganizationId.eq(organization_id))
            .filter(clusters::Column::RestoredFrom.eq(backup_id))
            .filter(clusters::Column::State.eq(ClusterState::Creating.as_str()))
            .count(&self.db)
            .await?
            > 0)
    }

    async fn restored_up_to(&self, cluster_id: Uuid) -> Result<Option<ObjectName>, StoreError> {
        let last: Option<String> = cluster_objects::Entity::find()
            .select_only()
            .column(cluster_objects::Column::Name)
            .filter(cluster_objects::Column::ClusterId.eq(cluster_id))
            .order_by_desc(cluster_objects::Column::Name)
            .limit(1)
            .into_tuple::<String>()
            .one(&self.db)
            .await?;
        last.map(|name| ObjectName::parse(&name).map_err(|_| corrupt("object of", cluster_id)))
            .transpose()
    }

    async fn record_restored(
        &self,
        cluster_id: Uuid,
        objects: &[StoredObject],
    ) -> Result<bool, StoreError> {
        let objects = objects.to_vec();
        // No event, but the cluster's progress is cached with it: invalidated.
        audited!(self, events: Vec::new(), |txn| {
            // Its row locked: the restore's end or the cluster's deletion is ordered against
            // these objects.
            let row = clusters::Entity::find_by_id(cluster_id)
                .lock_exclusive()
                .one(txn)
                .await?
                .filter(|c| c.state == ClusterState::Creating.as_str());
            match row {
                None => (false, false),
                Some(row) => {
                    insert_objects(txn, cluster_id, &objects).await?;
                    let done = i32::try_from(objects.len()).unwrap_or(i32::MAX);
                    clusters::Entity::update_many()
                        .col_expr(
                            clusters::Column::RestoreDone,
                            Expr::value(row.restore_done.saturating_add(done)),
                        )
                        .filter(clusters::Column::Id.eq(cluster_id))
                        .exec(txn)
                        .await?;
                    (true, true)
                }
            }
        })
    }

    async fn end_restore(
        &self,
        cluster_id: Uuid,
        failure: Option<String>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let state = match failure {
            None => ClusterState::Available,
            Some(_) => ClusterState::Failed,
        };
        audited!(self, audit, |txn| {
            let ended = clusters::Entity::update_many()
                .col_expr(clusters::Column::State, Expr::value(state.as_str()))
                .col_expr(clusters::Column::LastError, Expr::value(failure.clone()))
                .col_expr(clusters::Column::UpdatedAt, Expr::value(now))
                .filter(clusters::Column::Id.eq(cluster_id))
                .filter(clusters::Column::State.eq(ClusterState::Creating.as_str()))
                .exec(txn)
                .await?
                .rows_affected
                > 0;
            if ended {
                jobs::forget(txn, JobKind::Restore, cluster_id).await?;
            }
            (ended, ended)
        })
    }

    async fn start_rewrap(
        &self,
        rewrap: &Rewrap,
        replacement: Option<&EncryptionKey>,
        events: Vec<AuditDraft>,
    ) -> Result<Rewrap, StoreError> {
        self.start_rewrap_now(rewrap, replacement, events).await
    }

    async fn rewrap(&self, organization_id: Uuid, id: Uuid) -> Result<Option<Rewrap>, StoreError> {
        self.rewrap_by_id(organization_id, id).await
    }

    async fn latest_rewraps(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Rewrap)>, StoreError> {
        self.latest_rewraps_of(organization_id, key_ids).await
    }

    async fn data_keys_to_move(
        &self,
        rewrap: &Rewrap,
        limit: u64,
    ) -> Result<Vec<DataKeyToMove>, StoreError> {
        self.data_keys_left(rewrap, limit).await
    }

    async fn record_rewrap(
        &self,
        rewrap: &Rewrap,
        to_key_ref: &str,
        swaps: Vec<(DataKeySwap, AuditDraft)>,
        failures: &[(DataKeyRow, Vec<u8>, RewrapFailure)],
    ) -> Result<u32, StoreError> {
        self.record_rewrap_page(rewrap, to_key_ref, swaps, failures)
            .await
    }

    async fn finish_rewrap(
        &self,
        rewrap: &Rewrap,
        state: RewrapState,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.finish_rewrap_now(rewrap, state, now, audit).await
    }

    async fn named_versions(
        &self,
        owner: CopyOwner,
        versions: &[Uuid],
    ) -> Result<Vec<Uuid>, StoreError> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = versions.to_vec();
        let mut named: Vec<Uuid> = Vec::new();
        match owner {
            CopyOwner::Cluster(cluster_id) => {
                named.extend(
                    cluster_objects::Entity::find()
                        .select_only()
                        .column(cluster_objects::Column::Version)
                        .filter(cluster_objects::Column::ClusterId.eq(cluster_id))
                        .filter(cluster_objects::Column::Version.is_in(wanted.clone()))
                        .into_tuple::<Uuid>()
                        .all(&self.db)
                        .await?,
                );
                named.extend(
                    cluster_garbage::Entity::find()
                        .filter(cluster_garbage::Column::ClusterId.eq(cluster_id))
                        .filter(
                            cluster_garbage::Column::Blob.is_in(wanted.iter().map(Uuid::to_string)),
                        )
                        .all(&self.db)
                        .await?
                        .into_iter()
                        .filter_map(|g| Uuid::parse_str(&g.blob).ok()),
                );
                let taking: Vec<Uuid> = backups::Entity::find()
                    .select_only()
                    .column(backups::Column::Id)
                    .filter(backups::Column::ClusterId.eq(cluster_id))
                    .filter(backups::Column::State.eq(BackupState::Creating.as_str()))
                    .into_tuple::<Uuid>()
                    .all(&self.db)
                    .await?;
                if !taking.is_empty() {
                    named.extend(
                        backup_objects::Entity::find()
                            .select_only()
                            .column(backup_objects::Column::Version)
                            .filter(backup_objects::Column::BackupId.is_in(taking))
                            .filter(backup_objects::Column::Copied.eq(false))
                            .filter(backup_objects::Column::Version.is_in(wanted))
                            .into_tuple::<Uuid>()
                            .all(&self.db)
                            .await?,
                    );
                }
            }
            CopyOwner::Backup(backup_id) => {
                named.extend(
                    backup_objects::Entity::find()
                        .select_only()
                        .column(backup_objects::Column::Version)
                        .filter(backup_objects::Column::BackupId.eq(backup_id))
                        .filter(backup_objects::Column::Copied.eq(true))
                        .filter(backup_objects::Column::Version.is_in(wanted))
                        .into_tuple::<Uuid>()
                        .all(&self.db)
                        .await?,
                );
            }
        }
        Ok(named)
    }
}
