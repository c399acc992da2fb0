//! Durable jobs (the reaction to a key's status change) and the key versions in use.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::SeaStore;
use super::entities::{backups, cluster_regions, clusters, encryption_keys, jobs, key_versions};
use crate::domain::audit::AuditDraft;
use crate::domain::keys::KeyStatus;
use crate::domain::ports::{
    DataKeyRow, Job, JobKind, JobStore, KeyVersionStatus, StoreError, UnversionedDataKey,
};

/// The stored names of the statuses that are revocations (`KeyStatus::is_revocation`).
fn revocations() -> Vec<&'static str> {
    crate::domain::keys::status_report::STATUSES
        .into_iter()
        .filter(|s| s.is_revocation())
        .map(KeyStatus::as_str)
        .collect()
}

/// Queues the job inside the caller's transaction (which holds the write lock, so the
/// read-then-write is not raced; the unique index on (kind, subject) backs it up).
pub(super) async fn enqueue(
    db: &impl ConnectionTrait,
    kind: JobKind,
    organization_id: Uuid,
    subject: Uuid,
    due_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    use sea_orm::sea_query::OnConflict;
    // One statement, so no lock is needed against a job finishing meanwhile: a new one, or
    // the pending one again (its generation moved on, so a run in progress does not finish
    // it, and due at the earlier of the two times).
    let earlier = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "LEAST",
        _ => "MIN",
    };
    jobs::Entity::insert(jobs::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(kind.as_str().to_owned()),
        organization_id: Set(organization_id),
        subject: Set(subject),
        due_at: Set(due_at),
        lease_until: Set(None),
        attempts: Set(0),
        generation: Set(0),
        last_error: Set(None),
        created_at: Set(due_at),
        holder: Set(None),
    })
    .on_conflict(
        OnConflict::columns([jobs::Column::Kind, jobs::Column::Subject])
            .value(jobs::Column::Generation, Expr::cust("jobs.generation + 1"))
            .value(
                jobs::Column::DueAt,
                Expr::cust(format!("{earlier}(jobs.due_at, excluded.due_at)")),
            )
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Removes the job of `kind` for `subject`, inside the caller's transaction (the work it stood
/// for ended with what the transaction records).
pub(super) async fn forget(
    db: &impl ConnectionTrait,
    kind: JobKind,
    subject: Uuid,
) -> Result<(), StoreError> {
    jobs::Entity::delete_many()
        .filter(jobs::Column::Kind.eq(kind.as_str()))
        .filter(jobs::Column::Subject.eq(subject))
        .exec(db)
        .await?;
    Ok(())
}

fn kind_from(raw: &str) -> Option<JobKind> {
    JobKind::ALL.into_iter().find(|k| k.as_str() == raw)
}

fn version_from(m: key_versions::Model) -> Result<KeyVersionStatus, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("key version {}/{}", m.key_id, m.version));
    Ok(KeyVersionStatus {
        key_id: m.key_id,
        status: KeyStatus::parse(&m.status).ok_or_else(corrupt)?,
        suspected: match m.suspected_status.as_deref() {
            Some(raw) => Some(KeyStatus::parse(raw).ok_or_else(corrupt)?),
            None => None,
        },
        last_checked_at: m.last_checked_at,
        last_error: m.last_error,
        version: m.version,
    })
}

#[async_trait]
impl JobStore for SeaStore {
    async fn enqueue_job(
        &self,
        kind: JobKind,
        organization_id: Uuid,
        subject: Uuid,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        audited!(self, quietly, |txn| {
            enqueue(txn, kind, organization_id, subject, due_at).await?;
            ((), true)
        })
    }

    async fn lease_jobs(
        &self,
        kind: JobKind,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Job>, StoreError> {
        use sea_orm::sea_query::Condition;
        // An unlocked look first: most rounds find nothing due and take no write lock.
        let any_due = jobs::Entity::find()
            .filter(jobs::Column::Kind.eq(kind.as_str()))
            .filter(jobs::Column::DueAt.lte(now))
            .filter(
                Condition::any()
                    .add(jobs::Column::LeaseUntil.is_null())
                    .add(jobs::Column::LeaseUntil.lte(now)),
            )
            .count(&self.db)
            .await?;
        if any_due == 0 {
            return Ok(Vec::new());
        }
        audited!(self, quietly, |txn| {
            // Two instances never lease the same job: the scan has a lock of its own.
            super::lock_named(txn, &format!("lease:jobs:{}", kind.as_str())).await?;
            let due = jobs::Entity::find()
                .filter(jobs::Column::Kind.eq(kind.as_str()))
                .filter(jobs::Column::DueAt.lte(now))
                .filter(
                    Condition::any()
                        .add(jobs::Column::LeaseUntil.is_null())
                        .add(jobs::Column::LeaseUntil.lte(now)),
                )
                .order_by_asc(jobs::Column::DueAt)
                .limit(limit)
                .all(txn)
                .await?;
            let lease = Uuid::now_v7();
            let mut leased_ids = std::collections::HashSet::new();
            if !due.is_empty() {
                // The lease conditions again: a holder renewing meanwhile keeps its job.
                jobs::Entity::update_many()
                    .col_expr(jobs::Column::LeaseUntil, Expr::value(Some(lease_until)))
                    .col_expr(jobs::Column::Holder, Expr::value(Some(lease)))
                    .filter(jobs::Column::Id.is_in(due.iter().map(|j| j.id)))
                    .filter(
                        Condition::any()
                            .add(jobs::Column::LeaseUntil.is_null())
                            .add(jobs::Column::LeaseUntil.lte(now)),
                    )
                    .exec(txn)
                    .await?;
                leased_ids = jobs::Entity::find()
                    .filter(jobs::Column::Holder.eq(lease))
                    .all(txn)
                    .await?
                    .into_iter()
                    .map(|j| j.id)
                    .collect();
            }
            let leased = due
                .into_iter()
                .filter(|m| leased_ids.contains(&m.id))
                .filter_map(|m| {
                    Some(Job {
                        kind: kind_from(&m.kind)?,
                        id: m.id,
                        organization_id: m.organization_id,
                        subject: m.subject,
                        generation: m.generation,
                        attempts: m.attempts,
                        lease,
                    })
                })
                .collect::<Vec<_>>();
            let happened = !leased.is_empty();
            (leased, happened)
        })
    }

    async fn finish_job(&self, job: &Job) -> Result<(), StoreError> {
        audited!(self, quietly, |txn| {
            let removed = jobs::Entity::delete_many()
                .filter(jobs::Column::Id.eq(job.id))
                .filter(jobs::Column::Generation.eq(job.generation))
                .filter(jobs::Column::Holder.eq(job.lease))
                .exec(txn)
                .await?;
            if removed.rows_affected == 0 {
                // Queued again while it ran: what it did may predate the newer change. (Or
                // its lease went to another holder, who finishes it.)
                jobs::Entity::update_many()
                    .col_expr(jobs::Column::LeaseUntil, Expr::value(None::<DateTime<Utc>>))
                    .col_expr(jobs::Column::Attempts, Expr::value(0))
                    .filter(jobs::Column::Id.eq(job.id))
                    .filter(jobs::Column::Holder.eq(job.lease))
                    .exec(txn)
                    .await?;
            }
            ((), true)
        })
    }

    async fn renew_job(&self, job: &Job, lease_until: DateTime<Utc>) -> Result<bool, StoreError> {
        audited!(self, quietly, |txn| {
            let renewed = jobs::Entity::update_many()
                .col_expr(jobs::Column::LeaseUntil, Expr::value(Some(lease_until)))
                .filter(jobs::Column::Id.eq(job.id))
                .filter(jobs::Column::Generation.eq(job.generation))
                .filter(jobs::Column::Holder.eq(job.lease))
                .exec(txn)
                .await?
                .rows_affected
                > 0;
            (renewed, renewed)
        })
    }

    async fn release_job(&self, job: &Job, due_at: DateTime<Utc>) -> Result<(), StoreError> {
        audited!(self, quietly, |txn| {
            jobs::Entity::update_many()
                .col_expr(jobs::Column::LeaseUntil, Expr::value(None::<DateTime<Utc>>))
                .col_expr(jobs::Column::DueAt, Expr::value(due_at))
                .col_expr(jobs::Column::Attempts, Expr::value(0))
                .col_expr(jobs::Column::LastError, Expr::value(None::<String>))
                .filter(jobs::Column::Id.eq(job.id))
                .filter(jobs::Column::Holder.eq(job.lease))
                .exec(txn)
                .await?;
            ((), true)
        })
    }

    async fn retry_job(
        &self,
        job: &Job,
        due_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(1000).collect();
        audited!(self, quietly, |txn| {
            jobs::Entity::update_many()
                .col_expr(jobs::Column::LeaseUntil, Expr::value(None::<DateTime<Utc>>))
                .col_expr(jobs::Column::DueAt, Expr::value(due_at))
                .col_expr(jobs::Column::Attempts, Expr::value(job.attempts + 1))
                .col_expr(jobs::Column::LastError, Expr::value(Some(error.clone())))
                .filter(jobs::Column::Id.eq(job.id))
                .filter(jobs::Column::Holder.eq(job.lease))
                .exec(txn)
                .await?;
            ((), true)
        })
    }

    async fn pending_jobs(&self, kind: JobKind) -> Result<u64, StoreError> {
        Ok(jobs::Entity::find()
            .filter(jobs::Column::Kind.eq(kind.as_str()))
            .count(&self.db)
            .await?)
    }

    async fn keys_to_reconcile(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let after = after.unwrap_or(Uuid::nil());
        let mut found = BTreeMap::new();
        for key in encryption_keys::Entity::find()
            .select_only()
            .column(encryption_keys::Column::Id)
            .column(encryption_keys::Column::OrganizationId)
            .filter(encryption_keys::Column::Status.is_in(revocations()))
            .filter(encryption_keys::Column::Id.gt(after))
            .order_by_asc(encryption_keys::Column::Id)
            .limit(limit)
            .into_tuple::<(Uuid, Uuid)>()
            .all(&self.db)
            .await?
        {
            found.insert(key.0, key.1);
        }
        let revoked_versions: Vec<Uuid> = key_versions::Entity::find()
            .select_only()
            .column(key_versions::Column::KeyId)
            .filter(key_versions::Column::Status.is_in(revocations()))
            .filter(key_versions::Column::KeyId.gt(after))
            .distinct()
            .order_by_asc(key_versions::Column::KeyId)
            .limit(limit)
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await?;
        // Marked clusters are few (a mark lasts while a key is revoked in a keep_running
        // project); their keys are read in key order like the rest.
        let marked: Vec<Uuid> = clusters::Entity::find()
            .select_only()
            .column(clusters::Column::Id)
            .filter(clusters::Column::WillNotResume.is_not_null())
            .limit(10_000)
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await?;
        let of_marked: Vec<Uuid> = if marked.is_empty() {
            Vec::new()
        } else {
            cluster_regions::Entity::find()
                .select_only()
                .column(cluster_regions::Column::KeyId)
                .filter(cluster_regions::Column::ClusterId.is_in(marked))
                .filter(cluster_regions::Column::KeyId.gt(after))
                .distinct()
                .order_by_asc(cluster_regions::Column::KeyId)
                .limit(limit)
                .into_tuple::<Option<Uuid>>()
                .all(&self.db)
                .await?
                .into_iter()
                .flatten()
                .collect()
        };
        let unknown: Vec<Uuid> = revoked_versions
            .into_iter()
            .chain(of_marked)
            .filter(|id| !found.contains_key(id))
            .collect();
        if !unknown.is_empty() {
            for (id, organization_id) in encryption_keys::Entity::find()
                .select_only()
                .column(encryption_keys::Column::Id)
                .column(encryption_keys::Column::OrganizationId)
                .filter(encryption_keys::Column::Id.is_in(unknown))
                .into_tuple::<(Uuid, Uuid)>()
                .all(&self.db)
                .await?
            {
                found.insert(id, organization_id);
            }
        }
        // The smallest `limit` ids of the three: every source was read up to its own
        // `limit` in id order, so nothing smaller than the last one taken is left behind.
        Ok(found
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(key, organization)| (organization, key))
            .collect())
    }

    async fn versions_in_use(
        &self,
        key_id: Uuid,
    ) -> Result<Vec<(String, u64, Option<KeyVersionStatus>)>, StoreError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let regions: Vec<Option<String>> = cluster_regions::Entity::find()
            .select_only()
            .column(cluster_regions::Column::KeyVersion)
            .filter(cluster_regions::Column::KeyId.eq(key_id))
            .into_tuple::<Option<String>>()
            .all(&self.db)
            .await?;
        let kept: Vec<Option<String>> = backups::Entity::find()
            .select_only()
            .column(backups::Column::KeyVersion)
            .filter(backups::Column::KeyId.eq(key_id))
            .into_tuple::<Option<String>>()
            .all(&self.db)
            .await?;
        for version in regions.into_iter().chain(kept).flatten() {
            *counts.entry(version).or_default() += 1;
        }
        let mut seen: BTreeMap<String, KeyVersionStatus> = BTreeMap::new();
        for row in key_versions::Entity::find()
            .filter(key_versions::Column::KeyId.eq(key_id))
            .all(&self.db)
            .await?
        {
            let status = version_from(row)?;
            seen.insert(status.version.clone(), status);
        }
        Ok(counts
            .into_iter()
            .map(|(version, n)| {
                let status = seen.remove(&version);
                (version, n, status)
            })
            .collect())
    }

    async fn data_keys_without_version(
        &self,
        limit: u64,
    ) -> Result<Vec<UnversionedDataKey>, StoreError> {
        let regions = cluster_regions::Entity::find()
            .filter(cluster_regions::Column::KeyVersion.is_null())
            .filter(cluster_regions::Column::KeyId.is_not_null())
            .limit(limit)
            .all(&self.db)
            .await?;
        let owners: BTreeMap<Uuid, Uuid> = if regions.is_empty() {
            BTreeMap::new()
        } else {
            clusters::Entity::find()
                .select_only()
                .column(clusters::Column::Id)
                .column(clusters::Column::OrganizationId)
                .filter(clusters::Column::Id.is_in(regions.iter().map(|r| r.cluster_id)))
                .into_tuple::<(Uuid, Uuid)>()
                .all(&self.db)
                .await?
                .into_iter()
                .collect()
        };
        let mut found: Vec<UnversionedDataKey> = regions
            .into_iter()
            .filter_map(|r| {
                Some(UnversionedDataKey {
                    organization_id: *owners.get(&r.cluster_id)?,
                    key_id: r.key_id?,
                    row: DataKeyRow::ClusterRegion {
                        cluster_id: r.cluster_id,
                        region: r.region,
                    },
                    wrapped: r.wrapped_key,
                })
            })
            .collect();
        let room = limit.saturating_sub(found.len() as u64);
        if room > 0 {
            found.extend(
                backups::Entity::find()
                    .filter(backups::Column::KeyVersion.is_null())
                    .filter(backups::Column::KeyId.is_not_null())
                    .limit(room)
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .filter_map(|b| {
                        Some(UnversionedDataKey {
                            organization_id: b.organization_id,
                            key_id: b.key_id?,
                            row: DataKeyRow::Backup { id: b.id },
                            wrapped: b.wrapped_key,
                        })
                    }),
            );
        }
        Ok(found)
    }

    async fn set_data_key_version(
        &self,
        row: &DataKeyRow,
        version: &str,
    ) -> Result<(), StoreError> {
        let version = version.to_owned();
        audited!(self, quietly, |txn| {
            match row {
                DataKeyRow::ClusterRegion { cluster_id, region } => {
                    cluster_regions::Entity::update_many()
                        .col_expr(
                            cluster_regions::Column::KeyVersion,
                            Expr::value(Some(version.clone())),
                        )
                        .filter(cluster_regions::Column::ClusterId.eq(*cluster_id))
                        .filter(cluster_regions::Column::Region.eq(region.clone()))
                        .filter(cluster_regions::Column::KeyVersion.is_null())
                        .exec(txn)
                        .await?;
                }
                DataKeyRow::Backup { id } => {
                    backups::Entity::update_many()
                        .col_expr(
                            backups::Column::KeyVersion,
                            Expr::value(Some(version.clone())),
                        )
                        .filter(backups::Column::Id.eq(*id))
                        .filter(backups::Column::KeyVersion.is_null())
                        .exec(txn)
                        .await?;
                }
            }
            ((), true)
        })
    }

    async fn forget_versions_not_in(
        &self,
        key_id: Uuid,
        in_use: &[String],
    ) -> Result<(), StoreError> {
        let in_use = in_use.to_vec();
        // Most checks find nothing to forget: no write (and no write lock) for them.
        let stale = key_versions::Entity::find()
            .filter(key_versions::Column::KeyId.eq(key_id))
            .filter(key_versions::Column::Version.is_not_in(in_use.clone()))
            .count(&self.db)
            .await?;
        if stale == 0 {
            return Ok(());
        }
        audited!(self, quietly, |txn| {
            key_versions::Entity::delete_many()
                .filter(key_versions::Column::KeyId.eq(key_id))
                .filter(key_versions::Column::Version.is_not_in(in_use.clone()))
                .exec(txn)
                .await?;
            ((), true)
        })
    }

    async fn revoked_versions(
        &self,
        key_ids: &[Uuid],
    ) -> Result<Vec<KeyVersionStatus>, StoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        key_versions::Entity::find()
            .filter(key_versions::Column::KeyId.is_in(key_ids.iter().copied()))
            .filter(key_versions::Column::Status.is_in(revocations()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(version_from)
            .collect()
    }

    async fn record_version_status(
        &self,
        organization_id: Uuid,
        status: KeyVersionStatus,
        audit: Option<AuditDraft>,
    ) -> Result<(), StoreError> {
        let events: Vec<AuditDraft> = audit.into_iter().collect();
        let changed = !events.is_empty();
        let now = status.last_checked_at.unwrap_or_default();
        // The organization's lock even with no event: the version's row is read, then
        // written.
        audited!(@write self, super::Locks::chains([Some(organization_id)]), events.clone(), true, |txn| {
            let row = key_versions::ActiveModel {
                key_id: Set(status.key_id),
                version: Set(status.version.clone()),
                status: Set(status.status.as_str().to_owned()),
                suspected_status: Set(status.suspected.map(|s| s.as_str().to_owned())),
                last_checked_at: Set(status.last_checked_at),
                last_error: Set(status.last_error.clone()),
            };
            let exists = key_versions::Entity::find()
                .filter(key_versions::Column::KeyId.eq(status.key_id))
                .filter(key_versions::Column::Version.eq(status.version.clone()))
                .one(txn)
                .await?
                .is_some();
            if exists {
                key_versions::Entity::update(row).exec(txn).await?;
            } else {
                key_versions::Entity::insert(row)
                    .exec_without_returning(txn)
                    .await?;
            }
            if changed {
                enqueue(
                    txn,
                    JobKind::ReconcileKey,
                    organization_id,
                    status.key_id,
                    now,
                )
                .await?;
            }
            ((), true)
        })
    }
}
