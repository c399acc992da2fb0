//! Key changes (replacements and re-wraps) and their job's work on the data keys' rows: the
//! cluster regions and the backups whose wrapped data keys a key wraps. The cluster store's
//! trait methods (`store/clusters.rs`) call these.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::entities::{
    backups, cluster_regions, clusters, encryption_keys, key_rewrap_failures, key_rewraps,
};
use super::{SeaStore, jobs};
use crate::domain::audit::AuditDraft;
use crate::domain::error::Constraint;
use crate::domain::jobs::JobKind;
use crate::domain::keys::EncryptionKey;
use crate::domain::keys::region::Region;
use crate::domain::keys::rewrap::{
    DataKeySwap, DataKeyToMove, FAILURES_SHOWN, Rewrap, RewrapFailure, RewrapState,
};
use crate::domain::ports::{DataKeyRow, StoreError};

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn unsigned(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// The rows a re-wrap still has to move, for a table with these columns: wrapped by its old
/// key (and, for a re-wrap under the same key, by a version other than the target), not
/// given up on by this re-wrap.
fn to_move<C: ColumnTrait>(rewrap: &Rewrap, key_id: C, failed: C, version: C) -> Condition {
    let mut pending = Condition::all().add(key_id.eq(rewrap.from_key_id)).add(
        Condition::any()
            .add(failed.is_null())
            .add(failed.ne(rewrap.id)),
    );
    if let (false, Some(target)) = (rewrap.replaces(), &rewrap.target_version) {
        pending = pending.add(
            Condition::any()
                .add(version.is_null())
                .add(version.ne(target.clone())),
        );
    }
    pending
}

fn regions_to_move(rewrap: &Rewrap) -> Condition {
    use cluster_regions::Column as C;
    to_move(rewrap, C::KeyId, C::RewrapFailed, C::KeyVersion)
}

fn backups_to_move(rewrap: &Rewrap) -> Condition {
    use backups::Column as C;
    to_move(rewrap, C::KeyId, C::RewrapFailed, C::KeyVersion)
}

async fn left_to_move(db: &impl ConnectionTrait, rewrap: &Rewrap) -> Result<u64, StoreError> {
    let regions = cluster_regions::Entity::find()
        .filter(regions_to_move(rewrap))
        .count(db)
        .await?;
    let kept = backups::Entity::find()
        .filter(backups_to_move(rewrap))
        .count(db)
        .await?;
    Ok(regions + kept)
}

fn rewrap_from(m: key_rewraps::Model, failures: Vec<RewrapFailure>) -> Result<Rewrap, StoreError> {
    Ok(Rewrap {
        id: m.id,
        organization_id: m.organization_id,
        project_id: m.project_id,
        from_key_id: m.from_key_id,
        to_key_id: m.to_key_id,
        state: RewrapState::parse(&m.state)
            .ok_or_else(|| StoreError::Corrupt(format!("key re-wrap {}: state", m.id)))?,
        target_version: m.target_version,
        total: unsigned(m.total),
        done: unsigned(m.done),
        failed: unsigned(m.failed),
        failures,
        started_by: m.started_by,
        started_at: m.started_at,
        finished_at: m.finished_at,
    })
}

async fn failures_of(
    db: &impl ConnectionTrait,
    rewrap_id: Uuid,
) -> Result<Vec<RewrapFailure>, StoreError> {
    Ok(key_rewrap_failures::Entity::find()
        .filter(key_rewrap_failures::Column::RewrapId.eq(rewrap_id))
        .order_by_asc(key_rewrap_failures::Column::At)
        .order_by_asc(key_rewrap_failures::Column::DataKey)
        .limit(FAILURES_SHOWN)
        .all(db)
        .await?
        .into_iter()
        .map(|f| RewrapFailure {
            data_key: f.data_key,
            code: f.code,
            message: f.message,
            at: f.at,
        })
        .collect())
}

/// Marks a data key given up on by the re-wrap, if it is still wrapped as it was read.
async fn mark_failed(
    db: &impl ConnectionTrait,
    rewrap: &Rewrap,
    row: &DataKeyRow,
    old: &[u8],
) -> Result<bool, StoreError> {
    let marked = match row {
        DataKeyRow::ClusterRegion { cluster_id, region } => {
            cluster_regions::Entity::update_many()
                .col_expr(
                    cluster_regions::Column::RewrapFailed,
                    Expr::value(Some(rewrap.id)),
                )
                .filter(cluster_regions::Column::ClusterId.eq(*cluster_id))
                .filter(cluster_regions::Column::Region.eq(region.clone()))
                .filter(cluster_regions::Column::WrappedKey.eq(old.to_vec()))
                .filter(regions_to_move(rewrap))
                .exec(db)
                .await?
                .rows_affected
        }
        DataKeyRow::Backup { id } => {
            backups::Entity::update_many()
                .col_expr(backups::Column::RewrapFailed, Expr::value(Some(rewrap.id)))
                .filter(backups::Column::Id.eq(*id))
                .filter(backups::Column::WrappedKey.eq(old.to_vec()))
                .filter(backups_to_move(rewrap))
                .exec(db)
                .await?
                .rows_affected
        }
    };
    Ok(marked > 0)
}

/// Moves one data key to the target key, only if it is still wrapped as it was read.
async fn swap(
    db: &impl ConnectionTrait,
    rewrap: &Rewrap,
    to_key_ref: &str,
    swap: &DataKeySwap,
) -> Result<bool, StoreError> {
    let moved = match &swap.row {
        DataKeyRow::ClusterRegion { cluster_id, region } => {
            use cluster_regions::Column as C;
            cluster_regions::Entity::update_many()
                .col_expr(C::KeyId, Expr::value(Some(rewrap.to_key_id)))
                .col_expr(C::KeyRef, Expr::value(Some(to_key_ref.to_owned())))
                .col_expr(C::WrappedKey, Expr::value(swap.new.clone()))
                .col_expr(C::KeyVersion, Expr::value(swap.version.clone()))
                .col_expr(C::RewrapFailed, Expr::value(Option::<Uuid>::None))
                .filter(C::ClusterId.eq(*cluster_id))
                .filter(C::Region.eq(region.clone()))
                .filter(regions_to_move(rewrap))
                .filter(C::WrappedKey.eq(swap.old.clone()))
                .exec(db)
                .await?
                .rows_affected
        }
        DataKeyRow::Backup { id } => {
            use backups::Column as C;
            backups::Entity::update_many()
                .col_expr(C::KeyId, Expr::value(Some(rewrap.to_key_id)))
                .col_expr(C::KeyRef, Expr::value(Some(to_key_ref.to_owned())))
                .col_expr(C::WrappedKey, Expr::value(swap.new.clone()))
                .col_expr(C::KeyVersion, Expr::value(swap.version.clone()))
                .col_expr(C::RewrapFailed, Expr::value(Option::<Uuid>::None))
                .filter(C::Id.eq(*id))
                .filter(backups_to_move(rewrap))
                .filter(C::WrappedKey.eq(swap.old.clone()))
                .exec(db)
                .await?
                .rows_affected
        }
    };
    Ok(moved > 0)
}

impl SeaStore {
    pub(super) async fn start_rewrap_now(
        &self,
        rewrap: &Rewrap,
        replacement: Option<&EncryptionKey>,
        events: Vec<AuditDraft>,
    ) -> Result<Rewrap, StoreError> {
        audited!(self, events: events.clone(), |txn| {
            let keys = [rewrap.from_key_id, rewrap.to_key_id];
            let running = key_rewraps::Entity::find()
                .filter(key_rewraps::Column::State.eq(RewrapState::Rewrapping.as_str()))
                .filter(
                    Condition::any()
                        .add(key_rewraps::Column::FromKeyId.is_in(keys))
                        .add(key_rewraps::Column::ToKeyId.is_in(keys)),
                )
                .count(txn)
                .await?;
            if running > 0 {
                return Err(StoreError::Conflict(Constraint::KeyChange));
            }
            // A replacement or a re-wrap: the old key must still be its region's key (not
            // replaced meanwhile). What is left of a replacement: the old key must still be
            // replaced, and now points at the slot's current key, the change's target, which
            // must exist and not be replaced itself.
            let retry = replacement.is_none() && rewrap.replaces();
            if retry {
                let target = encryption_keys::Entity::find_by_id(rewrap.to_key_id)
                    .filter(encryption_keys::Column::OrganizationId.eq(rewrap.organization_id))
                    .filter(encryption_keys::Column::ReplacedBy.is_null())
                    .count(txn)
                    .await?;
                if target == 0 {
                    return Err(StoreError::Conflict(Constraint::KeyChange));
                }
            }
            let claimed = encryption_keys::Entity::update_many()
                .col_expr(
                    encryption_keys::Column::ReplacedBy,
                    Expr::value(
                        replacement
                            .map(|k| k.id)
                            .or(retry.then_some(rewrap.to_key_id)),
                    ),
                )
                .filter(encryption_keys::Column::Id.eq(rewrap.from_key_id))
                .filter(encryption_keys::Column::OrganizationId.eq(rewrap.organization_id))
                .filter(if retry {
                    encryption_keys::Column::ReplacedBy.is_not_null()
                } else {
                    encryption_keys::Column::ReplacedBy.is_null()
                })
                .exec(txn)
                .await?
                .rows_affected;
            if claimed == 0 {
                return Err(StoreError::Conflict(Constraint::KeyChange));
            }
            if let Some(new) = replacement {
                super::keys::insert(txn, new).await?;
            }
            let total = left_to_move(txn, rewrap).await?;
            key_rewraps::Entity::insert(key_rewraps::ActiveModel {
                id: Set(rewrap.id),
                organization_id: Set(rewrap.organization_id),
                project_id: Set(rewrap.project_id),
                from_key_id: Set(rewrap.from_key_id),
                to_key_id: Set(rewrap.to_key_id),
                state: Set(RewrapState::Rewrapping.as_str().to_owned()),
                target_version: Set(rewrap.target_version.clone()),
                total: Set(count(total)),
                done: Set(0),
                failed: Set(0),
                started_by: Set(rewrap.started_by.clone()),
                started_at: Set(rewrap.started_at),
                finished_at: Set(None),
            })
            .exec_without_returning(txn)
            .await?;
            jobs::enqueue(
                txn,
                JobKind::Rewrap,
                rewrap.organization_id,
                rewrap.id,
                rewrap.started_at,
            )
            .await?;
            let mut started = rewrap.clone();
            started.total = u32::try_from(total).unwrap_or(u32::MAX);
            (started, true)
        })
    }

    pub(super) async fn rewrap_by_id(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Rewrap>, StoreError> {
        let Some(row) = key_rewraps::Entity::find_by_id(id)
            .filter(key_rewraps::Column::OrganizationId.eq(organization_id))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let failures = failures_of(&self.db, id).await?;
        rewrap_from(row, failures).map(Some)
    }

    pub(super) async fn latest_rewraps_of(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Rewrap)>, StoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = key_rewraps::Entity::find()
            .filter(key_rewraps::Column::OrganizationId.eq(organization_id))
            .filter(
                Condition::any()
                    .add(key_rewraps::Column::FromKeyId.is_in(key_ids.iter().copied()))
                    .add(key_rewraps::Column::ToKeyId.is_in(key_ids.iter().copied())),
            )
            .order_by_desc(key_rewraps::Column::StartedAt)
            .order_by_desc(key_rewraps::Column::Id)
            .all(&self.db)
            .await?;
        let mut latest = Vec::new();
        for key in key_ids {
            if let Some(row) = rows
                .iter()
                .find(|r| r.from_key_id == *key || r.to_key_id == *key)
            {
                let failures = failures_of(&self.db, row.id).await?;
                latest.push((*key, rewrap_from(row.clone(), failures)?));
            }
        }
        Ok(latest)
    }

    pub(super) async fn data_keys_left(
        &self,
        rewrap: &Rewrap,
        limit: u64,
    ) -> Result<Vec<DataKeyToMove>, StoreError> {
        let regions = cluster_regions::Entity::find()
            .filter(regions_to_move(rewrap))
            .order_by_asc(cluster_regions::Column::ClusterId)
            .order_by_asc(cluster_regions::Column::Region)
            .limit(limit)
            .all(&self.db)
            .await?;
        let projects: Vec<(Uuid, Uuid)> = if regions.is_empty() {
            Vec::new()
        } else {
            clusters::Entity::find()
                .select_only()
                .column(clusters::Column::Id)
                .column(clusters::Column::ProjectId)
                .filter(clusters::Column::Id.is_in(regions.iter().map(|r| r.cluster_id)))
                .into_tuple::<(Uuid, Uuid)>()
                .all(&self.db)
                .await?
        };
        let mut left = Vec::new();
        for region in regions {
            let Some((_, project_id)) = projects.iter().find(|(id, _)| *id == region.cluster_id)
            else {
                continue;
            };
            let parsed = Region::parse_known("region", &region.region).map_err(|_| {
                StoreError::Corrupt(format!("cluster region of {}", region.cluster_id))
            })?;
            left.push(DataKeyToMove {
                region: parsed,
                row: DataKeyRow::ClusterRegion {
                    cluster_id: region.cluster_id,
                    region: region.region,
                },
                project_id: *project_id,
                wrapped: region.wrapped_key,
            });
        }
        let room = limit.saturating_sub(left.len() as u64);
        if room > 0 {
            let kept = backups::Entity::find()
                .filter(backups_to_move(rewrap))
                .order_by_asc(backups::Column::Id)
                .limit(room)
                .all(&self.db)
                .await?;
            for b in kept {
                let region = Region::parse_known("region", &b.region)
                    .map_err(|_| StoreError::Corrupt(format!("backup {}: region", b.id)))?;
                left.push(DataKeyToMove {
                    row: DataKeyRow::Backup { id: b.id },
                    region,
                    project_id: b.project_id,
                    wrapped: b.wrapped_key,
                });
            }
        }
        Ok(left)
    }

    pub(super) async fn record_rewrap_page(
        &self,
        rewrap: &Rewrap,
        to_key_ref: &str,
        swaps: Vec<(DataKeySwap, AuditDraft)>,
        failures: &[(DataKeyRow, Vec<u8>, RewrapFailure)],
    ) -> Result<u32, StoreError> {
        // The events of the swaps made, gathered inside the transaction (a swap that found
        // the row changed is not recorded, nor is its event).
        let mut made: Vec<AuditDraft> = Vec::new();
        audited!(@write self, super::Locks::chains([Some(rewrap.organization_id)]), std::mem::take(&mut made), true, |txn| {
            made.clear();
            for (one, event) in &swaps {
                if swap(txn, rewrap, to_key_ref, one).await? {
                    made.push(event.clone());
                }
            }
            let mut failed = 0;
            for (row, old, failure) in failures {
                if mark_failed(txn, rewrap, row, old).await? {
                    key_rewrap_failures::Entity::insert(key_rewrap_failures::ActiveModel {
                        rewrap_id: Set(rewrap.id),
                        data_key: Set(row.label()),
                        code: Set(failure.code.clone()),
                        message: Set(failure.message.clone()),
                        at: Set(failure.at),
                    })
                    .exec_without_returning(txn)
                    .await?;
                    failed += 1;
                }
            }
            let current = key_rewraps::Entity::find_by_id(rewrap.id)
                .one(txn)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("key re-wrap {} is gone", rewrap.id)))?;
            let swapped = made.len();
            let done = current.done.saturating_add(count(swapped as u64));
            let mut update = key_rewraps::Entity::update_many()
                .col_expr(key_rewraps::Column::Done, Expr::value(done))
                .col_expr(
                    key_rewraps::Column::Failed,
                    Expr::value(current.failed.saturating_add(failed)),
                )
                .col_expr(
                    key_rewraps::Column::TargetVersion,
                    Expr::value(rewrap.target_version.clone()),
                );
            if current.target_version != rewrap.target_version {
                // What is left is known only now that the target version is.
                let left = left_to_move(txn, rewrap).await?;
                update = update.col_expr(
                    key_rewraps::Column::Total,
                    Expr::value(
                        done.saturating_add(current.failed)
                            .saturating_add(failed)
                            .saturating_add(count(left)),
                    ),
                );
            }
            update
                .filter(key_rewraps::Column::Id.eq(rewrap.id))
                .exec(txn)
                .await?;
            (u32::try_from(swapped).unwrap_or(u32::MAX), true)
        })
    }

    pub(super) async fn finish_rewrap_now(
        &self,
        rewrap: &Rewrap,
        state: RewrapState,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            if left_to_move(txn, rewrap).await? > 0 {
                (false, false)
            } else {
                let ended = key_rewraps::Entity::update_many()
                    .col_expr(key_rewraps::Column::State, Expr::value(state.as_str()))
                    .col_expr(key_rewraps::Column::FinishedAt, Expr::value(Some(now)))
                    .filter(key_rewraps::Column::Id.eq(rewrap.id))
                    .filter(key_rewraps::Column::State.eq(RewrapState::Rewrapping.as_str()))
                    .exec(txn)
                    .await?
                    .rows_affected
                    > 0;
                if ended {
                    jobs::forget(txn, JobKind::Rewrap, rewrap.id).await?;
                }
                (ended, ended)
            }
        })
    }
}
