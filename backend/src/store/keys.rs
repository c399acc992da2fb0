//! Encryption keys, scoped by organization in every query.

use super::SeaStore;
use crate::domain::audit::AuditDraft;
use crate::domain::local_kms::LocalKey;
use crate::domain::ports::KeyStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::{
    encryption_keys, key_status_counts, key_status_counts_by_project, key_status_history,
};
use crate::domain::keys::arn::{KmsKeyArn, RoleArn};
use crate::domain::keys::azure::{KeyName, VaultName};
use crate::domain::keys::gcp::GcpKeyName;
use crate::domain::keys::policy::AccessMode;
use crate::domain::keys::region::Region;
use crate::domain::keys::status_report::KeyStatusFilter;
use crate::domain::keys::{AwsAccess, EncryptionKey, KeyRef, KeyStatus, Provider, StatusChange};
use crate::domain::page::PageRequest;
use crate::domain::ports::StoreError;

fn from_model(m: encryption_keys::Model) -> Result<EncryptionKey, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("encryption key {}: {what}", m.id));
    let key_ref = match Provider::parse(&m.provider).map_err(|_| corrupt("provider"))? {
        Provider::AwsKms => {
            let arn = KmsKeyArn::parse("key_ref", &m.key_ref).map_err(|_| corrupt("key ARN"))?;
            let access = match m.access_mode.as_deref() {
                Some("role") => AwsAccess::Role {
                    role_arn: RoleArn::parse("role_arn", m.role_arn.as_deref().unwrap_or_default())
                        .map_err(|_| corrupt("role ARN"))?,
                    external_id: m.organization_id.to_string(),
                },
                _ => AwsAccess::KeyPolicy,
            };
            KeyRef::Aws { arn, access }
        }
        Provider::GcpKms => KeyRef::Gcp {
            name: GcpKeyName::parse("key_name", &m.key_ref)
                .map_err(|_| corrupt("Cloud KMS key name"))?,
        },
        Provider::Local => KeyRef::Local {
            key_id: Uuid::parse_str(&m.key_ref).map_err(|_| corrupt("local key id"))?,
            organization_id: m.organization_id,
        },
        Provider::AzureKeyVault => {
            let (vault, key_name) = m
                .key_ref
                .split_once('/')
                .ok_or_else(|| corrupt("Key Vault key reference"))?;
            KeyRef::Azure {
                vault: VaultName::parse("vault_name", vault).map_err(|_| corrupt("vault name"))?,
                key_name: KeyName::parse("key_name", key_name).map_err(|_| corrupt("key name"))?,
                tenant: m.azure_tenant_id.clone(),
            }
        }
    };
    Ok(EncryptionKey {
        id: m.id,
        organization_id: m.organization_id,
        project_id: m.project_id,
        region: Region::parse_known("region", &m.region).map_err(|_| corrupt("region"))?,
        key_ref,
        status: KeyStatus::parse(&m.status).ok_or_else(|| corrupt("status"))?,
        last_checked_at: m.last_checked_at,
        last_error: m.last_error,
        rotation_enabled: m.rotation_enabled,
        replaced_by: m.replaced_by,
        created_by: m.created_by,
        created_at: m.created_at,
    })
}

pub async fn insert(db: &impl ConnectionTrait, key: &EncryptionKey) -> Result<(), StoreError> {
    let role_arn = match &key.key_ref {
        KeyRef::Aws {
            access: AwsAccess::Role { role_arn, .. },
            ..
        } => Some(role_arn.as_str().to_owned()),
        _ => None,
    };
    encryption_keys::Entity::insert(encryption_keys::ActiveModel {
        id: Set(key.id),
        organization_id: Set(key.organization_id),
        project_id: Set(key.project_id),
        provider: Set(key.key_ref.provider().as_str().to_owned()),
        region: Set(key.region.as_str().to_owned()),
        key_ref: Set(key.key_ref.display()),
        access_mode: Set(key
            .key_ref
            .access_mode()
            .map(|m: AccessMode| m.as_str().to_owned())),
        role_arn: Set(role_arn),
        status: Set(key.status.as_str().to_owned()),
        last_checked_at: Set(key.last_checked_at),
        last_error: Set(key.last_error.clone()),
        created_by: Set(key.created_by.clone()),
        created_at: Set(key.created_at),
        // Just checked: the monitor's first look is one interval away (set when it runs).
        next_check_at: Set(None),
        lease_until: Set(None),
        suspected_status: Set(None),
        rotation_enabled: Set(key.rotation_enabled),
        azure_tenant_id: Set(match &key.key_ref {
            KeyRef::Azure { tenant, .. } => tenant.clone(),
            _ => None,
        }),
        replaced_by: Set(key.replaced_by),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    project_id: Uuid,
) -> Result<Vec<EncryptionKey>, StoreError> {
    encryption_keys::Entity::find()
        .filter(encryption_keys::Column::OrganizationId.eq(organization_id))
        .filter(encryption_keys::Column::ProjectId.eq(project_id))
        .order_by_asc(encryption_keys::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

pub async fn get(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<EncryptionKey>, StoreError> {
    encryption_keys::Entity::find_by_id(id)
        .filter(encryption_keys::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?
        .map(from_model)
        .transpose()
}

pub async fn delete(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<(), StoreError> {
    encryption_keys::Entity::delete_many()
        .filter(encryption_keys::Column::Id.eq(id))
        .filter(encryption_keys::Column::OrganizationId.eq(organization_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn update_status(
    db: &impl ConnectionTrait,
    id: Uuid,
    status: KeyStatus,
    checked_at: DateTime<Utc>,
    error: Option<String>,
) -> Result<(), StoreError> {
    // Read inside the write: the change is kept in the history once, whoever checked, and
    // its reaction is queued with it.
    if let Some(before) = encryption_keys::Entity::find_by_id(id).one(db).await?
        && before.status != status.as_str()
    {
        super::jobs::enqueue(
            db,
            crate::domain::ports::JobKind::ReconcileKey,
            before.organization_id,
            id,
            checked_at,
        )
        .await?;
        key_status_history::Entity::insert(key_status_history::ActiveModel {
            id: Set(Uuid::now_v7()),
            key_id: Set(id),
            organization_id: Set(before.organization_id),
            at: Set(checked_at),
            from_status: Set(before.status),
            to_status: Set(status.as_str().to_owned()),
            message: Set(error.clone()),
        })
        .exec_without_returning(db)
        .await?;
    }
    encryption_keys::Entity::update_many()
        .col_expr(
            encryption_keys::Column::Status,
            Expr::value(status.as_str()),
        )
        .col_expr(
            encryption_keys::Column::LastCheckedAt,
            Expr::value(checked_at),
        )
        .col_expr(encryption_keys::Column::LastError, Expr::value(error))
        .filter(encryption_keys::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The Key Status page's keys: each filter is an equality on an indexed column followed by
/// the keyset on `id` (see migration 000013), so a page reads about as many index entries as
/// it returns.
pub async fn status_page(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    filter: &KeyStatusFilter,
    page: PageRequest,
) -> Result<Vec<EncryptionKey>, StoreError> {
    let mut query = encryption_keys::Entity::find()
        .filter(encryption_keys::Column::OrganizationId.eq(organization_id))
        .order_by_asc(encryption_keys::Column::Id)
        .limit(page.fetch_limit());
    if let Some(status) = filter.status {
        query = query.filter(encryption_keys::Column::Status.eq(status.as_str()));
    }
    if let Some(provider) = filter.provider {
        query = query.filter(encryption_keys::Column::Provider.eq(provider.as_str()));
    }
    if let Some(project_id) = filter.project_id {
        query = query.filter(encryption_keys::Column::ProjectId.eq(project_id));
    }
    if let Some(after) = page.after {
        query = query.filter(encryption_keys::Column::Id.gt(after));
    }
    query.all(db).await?.into_iter().map(from_model).collect()
}

/// Counts per status from the tallies the triggers of migration 000013 keep: at most one
/// row per (provider, status), whatever the number of keys.
pub async fn tally(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    provider: Option<Provider>,
    project_id: Option<Uuid>,
) -> Result<Vec<(KeyStatus, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = match project_id {
        Some(project_id) => {
            let mut query = key_status_counts_by_project::Entity::find()
                .select_only()
                .column(key_status_counts_by_project::Column::Status)
                .column(key_status_counts_by_project::Column::N)
                .filter(key_status_counts_by_project::Column::OrganizationId.eq(organization_id))
                .filter(key_status_counts_by_project::Column::ProjectId.eq(project_id));
            if let Some(provider) = provider {
                query = query
                    .filter(key_status_counts_by_project::Column::Provider.eq(provider.as_str()));
            }
            query.into_tuple().all(db).await?
        }
        None => {
            let mut query = key_status_counts::Entity::find()
                .select_only()
                .column(key_status_counts::Column::Status)
                .column(key_status_counts::Column::N)
                .filter(key_status_counts::Column::OrganizationId.eq(organization_id));
            if let Some(provider) = provider {
                query = query.filter(key_status_counts::Column::Provider.eq(provider.as_str()));
            }
            query.into_tuple().all(db).await?
        }
    };
    // One row per provider: add them up per status.
    let mut counts: Vec<(KeyStatus, u64)> = Vec::new();
    for (raw, n) in rows {
        let status = KeyStatus::parse(&raw)
            .ok_or_else(|| StoreError::Corrupt(format!("key status count for {raw:?}")))?;
        let n = u64::try_from(n).unwrap_or(0);
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, total)) => *total += n,
            None => counts.push((status, n)),
        }
    }
    Ok(counts)
}

pub async fn statuses(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, KeyStatus)>, StoreError> {
    let rows: Vec<(Uuid, String)> = encryption_keys::Entity::find()
        .select_only()
        .column(encryption_keys::Column::Id)
        .column(encryption_keys::Column::Status)
        .filter(encryption_keys::Column::OrganizationId.eq(organization_id))
        .filter(encryption_keys::Column::Id.is_in(ids.to_vec()))
        .into_tuple()
        .all(db)
        .await?;
    rows.into_iter()
        .map(|(id, raw)| {
            KeyStatus::parse(&raw)
                .map(|status| (id, status))
                .ok_or_else(|| StoreError::Corrupt(format!("encryption key {id}: status")))
        })
        .collect()
}

#[async_trait]
impl KeyStore for SeaStore {
    async fn insert_key(&self, key: &EncryptionKey, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::keys::insert(txn, key).await?;
            ((), true)
        })
    }

    async fn insert_keys(
        &self,
        keys: &[EncryptionKey],
        events: Vec<AuditDraft>,
    ) -> Result<(), StoreError> {
        audited!(self, events: events.clone(), |txn| {
            for key in keys {
                super::keys::insert(txn, key).await?;
            }
            ((), true)
        })
    }

    async fn keys(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        cached!(
            self,
            keys,
            (organization_id, project_id),
            super::keys::list(&self.db, organization_id, project_id).await?
        )
    }

    async fn key(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<EncryptionKey>, StoreError> {
        super::keys::get(&self.db, organization_id, id).await
    }

    async fn delete_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::keys::delete(txn, organization_id, id).await?;
            ((), true)
        })
    }

    async fn update_key_status(
        &self,
        id: Uuid,
        status: KeyStatus,
        checked_at: DateTime<Utc>,
        error: Option<String>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::keys::update_status(txn, id, status, checked_at, error.clone()).await?;
            ((), true)
        })
    }

    async fn lease_due_keys(
        &self,
        now: DateTime<Utc>,
        checked_before: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(EncryptionKey, Option<KeyStatus>)>, StoreError> {
        use sea_orm::sea_query::Condition;
        // Under a lock of its own (on PostgreSQL; BEGIN IMMEDIATE on SQLite), so two instances
        // never lease the same key: each key is checked once per interval.
        audited!(self, quietly, |txn| {
            super::lock_named(txn, "lease:keys").await?;
            let due = encryption_keys::Entity::find()
                .filter(
                    Condition::any()
                        .add(encryption_keys::Column::NextCheckAt.lte(now))
                        .add(
                            Condition::all()
                                .add(encryption_keys::Column::NextCheckAt.is_null())
                                .add(
                                    Condition::any()
                                        .add(encryption_keys::Column::LastCheckedAt.is_null())
                                        .add(
                                            encryption_keys::Column::LastCheckedAt
                                                .lte(checked_before),
                                        ),
                                ),
                        ),
                )
                .filter(
                    Condition::any()
                        .add(encryption_keys::Column::LeaseUntil.is_null())
                        .add(encryption_keys::Column::LeaseUntil.lte(now)),
                )
                .order_by_asc(encryption_keys::Column::Id)
                .limit(limit)
                .all(txn)
                .await?;
            if !due.is_empty() {
                encryption_keys::Entity::update_many()
                    .col_expr(
                        encryption_keys::Column::LeaseUntil,
                        Expr::value(Some(lease_until)),
                    )
                    .filter(encryption_keys::Column::Id.is_in(due.iter().map(|k| k.id)))
                    .exec(txn)
                    .await?;
            }
            let leased = due
                .into_iter()
                .map(|m| {
                    let suspected = m.suspected_status.as_deref().and_then(KeyStatus::parse);
                    from_model(m).map(|key| (key, suspected))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let any = !leased.is_empty();
            (leased, any)
        })
    }

    async fn key_status_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = encryption_keys::Entity::find()
            .select_only()
            .column(encryption_keys::Column::Status)
            .column_as(encryption_keys::Column::Id.count(), "n")
            .group_by(encryption_keys::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(status, n)| (status, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn key_status_page(
        &self,
        organization_id: Uuid,
        filter: &KeyStatusFilter,
        page: PageRequest,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        cached!(
            self,
            key_status_pages,
            (
                organization_id,
                filter.status.map(KeyStatus::as_str),
                filter.provider.map(Provider::as_str),
                filter.project_id,
                page.after,
                page.size,
            ),
            super::keys::status_page(&self.db, organization_id, filter, page).await?
        )
    }

    async fn key_status_tally(
        &self,
        organization_id: Uuid,
        provider: Option<Provider>,
        project_id: Option<Uuid>,
    ) -> Result<Vec<(KeyStatus, u64)>, StoreError> {
        cached!(
            self,
            key_tallies,
            (organization_id, provider.map(Provider::as_str), project_id),
            super::keys::tally(&self.db, organization_id, provider, project_id).await?
        )
    }

    async fn key_statuses(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, KeyStatus)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        cached!(
            self,
            key_statuses,
            (organization_id, ids.to_vec()),
            super::keys::statuses(&self.db, organization_id, ids).await?
        )
    }

    async fn repin_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        from: &str,
        to: &str,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let moved = encryption_keys::Entity::update_many()
                .col_expr(
                    encryption_keys::Column::AzureTenantId,
                    Expr::value(Some(to.to_owned())),
                )
                .filter(encryption_keys::Column::Id.eq(id))
                .filter(encryption_keys::Column::OrganizationId.eq(organization_id))
                .filter(encryption_keys::Column::AzureTenantId.eq(from))
                .exec(txn)
                .await?
                .rows_affected
                > 0;
            (moved, moved)
        })
    }

    async fn record_rotation(&self, id: Uuid, enabled: Option<bool>) -> Result<(), StoreError> {
        audited!(self, events: Vec::new(), |txn| {
            encryption_keys::Entity::update_many()
                .col_expr(
                    encryption_keys::Column::RotationEnabled,
                    Expr::value(enabled),
                )
                .filter(encryption_keys::Column::Id.eq(id))
                .exec(txn)
                .await?;
            ((), true)
        })
    }

    async fn schedule_key_check(
        &self,
        id: Uuid,
        checked_at: DateTime<Utc>,
        next_check_at: DateTime<Utc>,
        suspected: Option<KeyStatus>,
    ) -> Result<(), StoreError> {
        // Not quiet: the key's last check shows on pages read from the cache.
        audited!(self, events: Vec::new(), |txn| {
            encryption_keys::Entity::update_many()
                .col_expr(
                    encryption_keys::Column::NextCheckAt,
                    Expr::value(Some(next_check_at)),
                )
                .col_expr(
                    encryption_keys::Column::LeaseUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .col_expr(
                    encryption_keys::Column::SuspectedStatus,
                    Expr::value(suspected.map(|s| s.as_str().to_owned())),
                )
                .col_expr(
                    encryption_keys::Column::LastCheckedAt,
                    Expr::value(Some(checked_at)),
                )
                .filter(encryption_keys::Column::Id.eq(id))
                .exec(txn)
                .await?;
            ((), true)
        })
    }

    async fn key_history(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let mut query = key_status_history::Entity::find()
            .filter(key_status_history::Column::OrganizationId.eq(organization_id))
            .filter(key_status_history::Column::KeyId.eq(key_id))
            .order_by_desc(key_status_history::Column::Id)
            .limit(page.fetch_limit());
        if let Some(after) = page.after {
            query = query.filter(key_status_history::Column::Id.lt(after));
        }
        query
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| {
                let status = |raw: &str| {
                    KeyStatus::parse(raw)
                        .ok_or_else(|| StoreError::Corrupt(format!("key history {}", m.id)))
                };
                Ok(StatusChange {
                    id: m.id,
                    at: m.at,
                    from: status(&m.from_status)?,
                    to: status(&m.to_status)?,
                    message: m.message.clone(),
                })
            })
            .collect()
    }

    async fn insert_local_key(
        &self,
        key: &LocalKey,
        material: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::local_kms::create(txn, key, material.clone()).await?;
            ((), true)
        })
    }

    async fn set_local_key_enabled(
        &self,
        organization_id: Uuid,
        id: Uuid,
        enabled: bool,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let found = super::local_kms::set_enabled(txn, organization_id, id, enabled).await?;
            (found, found)
        })
    }

    async fn rotate_local_key(
        &self,
        key: &LocalKey,
        material: Vec<u8>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let rotated = super::local_kms::rotate(txn, key, material.clone(), now).await?;
            (rotated, rotated)
        })
    }
}
