//! Rows of the built-in local KMS: keys and their wrapped material versions. The crypto is
//! in `kms::local`; this module only stores bytes it is given.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder,
};
use uuid::Uuid;

use super::entities::{local_key_versions, local_keys};
use crate::domain::local_kms::LocalKey;
use crate::domain::ports::StoreError;

fn from_model(m: local_keys::Model) -> LocalKey {
    LocalKey {
        id: m.id,
        organization_id: m.organization_id,
        name: m.name,
        enabled: m.enabled,
        version: m.version,
        created_at: m.created_at,
        rotated_at: m.rotated_at,
    }
}

pub async fn list(
    db: &DatabaseConnection,
    organization_id: Uuid,
) -> Result<Vec<LocalKey>, StoreError> {
    Ok(local_keys::Entity::find()
        .filter(local_keys::Column::OrganizationId.eq(organization_id))
        .order_by_asc(local_keys::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect())
}

pub async fn get(db: &DatabaseConnection, id: Uuid) -> Result<Option<LocalKey>, StoreError> {
    Ok(local_keys::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(from_model))
}

pub async fn material(
    db: &DatabaseConnection,
    id: Uuid,
    version: i32,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(local_key_versions::Entity::find_by_id((id, version))
        .one(db)
        .await?
        .map(|m| m.material))
}

async fn insert_version(
    db: &impl ConnectionTrait,
    id: Uuid,
    version: i32,
    material: Vec<u8>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    local_key_versions::Entity::insert(local_key_versions::ActiveModel {
        key_id: Set(id),
        version: Set(version),
        material: Set(material),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn create(
    txn: &impl ConnectionTrait,
    key: &LocalKey,
    material: Vec<u8>,
) -> Result<(), StoreError> {
    local_keys::Entity::insert(local_keys::ActiveModel {
        id: Set(key.id),
        organization_id: Set(key.organization_id),
        name: Set(key.name.clone()),
        enabled: Set(key.enabled),
        version: Set(key.version),
        created_at: Set(key.created_at),
        rotated_at: Set(key.rotated_at),
    })
    .exec_without_returning(txn)
    .await?;
    insert_version(txn, key.id, key.version, material, key.created_at).await
}

pub async fn set_enabled(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
    enabled: bool,
) -> Result<bool, StoreError> {
    let result = local_keys::Entity::update_many()
        .col_expr(
            local_keys::Column::Enabled,
            sea_orm::sea_query::Expr::value(enabled),
        )
        .filter(local_keys::Column::Id.eq(id))
        .filter(local_keys::Column::OrganizationId.eq(organization_id))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Adds version `key.version + 1` with `material` and makes it current, unless the key is
/// gone or no longer at `key.version` (false).
pub async fn rotate(
    txn: &impl ConnectionTrait,
    key: &LocalKey,
    material: Vec<u8>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let next = key.version + 1;
    let moved = local_keys::Entity::update_many()
        .col_expr(
            local_keys::Column::Version,
            sea_orm::sea_query::Expr::value(next),
        )
        .col_expr(
            local_keys::Column::RotatedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(local_keys::Column::Id.eq(key.id))
        .filter(local_keys::Column::OrganizationId.eq(key.organization_id))
        .filter(local_keys::Column::Version.eq(key.version))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        return Ok(false);
    }
    insert_version(txn, key.id, next, material, now).await?;
    Ok(true)
}
