//! Organizations, users, sign-in links, sessions and API keys.

use super::SeaStore;
use crate::domain::audit::AuditDraft;
use crate::domain::ports::CredentialStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use super::entities::{api_keys, organizations, sessions, sign_in_links, users};
use crate::domain::identity::{ApiKey, Organization, Role, Session, SignInLink, User};
use crate::domain::ports::StoreError;

fn role(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown role {text:?}")))
}

fn organization_from(m: organizations::Model) -> Organization {
    Organization {
        id: m.id,
        name: m.name,
        created_at: m.created_at,
    }
}

pub(super) fn user_from(m: users::Model) -> Result<User, StoreError> {
    Ok(User {
        id: m.id,
        organization_id: m.organization_id,
        email: m.email,
        display_name: m.display_name,
        role: role(&m.role)?,
        created_at: m.created_at,
        last_sign_in_at: m.last_sign_in_at,
        identity: m.oidc_issuer.zip(m.oidc_subject),
    })
}

fn api_key_from(m: api_keys::Model) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: m.id,
        organization_id: m.organization_id,
        name: m.name,
        role: role(&m.role)?,
        prefix: m.prefix,
        key_hash: m.key_hash,
        created_by: m.created_by,
        created_at: m.created_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
    })
}

pub async fn organizations(db: &impl ConnectionTrait) -> Result<Vec<Organization>, StoreError> {
    let rows = organizations::Entity::find()
        .order_by_asc(organizations::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(organization_from).collect())
}

pub async fn organization(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<Organization>, StoreError> {
    Ok(organizations::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(organization_from))
}

pub async fn insert_organization(
    db: &impl ConnectionTrait,
    organization: &Organization,
    owner: Option<&User>,
) -> Result<(), StoreError> {
    organizations::Entity::insert(organizations::ActiveModel {
        id: Set(organization.id),
        name: Set(organization.name.clone()),
        created_at: Set(organization.created_at),
    })
    .exec_without_returning(db)
    .await?;
    match owner {
        Some(owner) => insert_user(db, owner).await,
        None => Ok(()),
    }
}

pub(super) async fn insert_user(db: &impl ConnectionTrait, user: &User) -> Result<(), StoreError> {
    let (issuer, subject) = user.identity.clone().unzip();
    users::Entity::insert(users::ActiveModel {
        id: Set(user.id),
        organization_id: Set(user.organization_id),
        email: Set(user.email.clone()),
        display_name: Set(user.display_name.clone()),
        role: Set(user.role.as_str().into()),
        created_at: Set(user.created_at),
        last_sign_in_at: Set(user.last_sign_in_at),
        oidc_issuer: Set(issuer),
        oidc_subject: Set(subject),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn first_owner(db: &impl ConnectionTrait) -> Result<Option<User>, StoreError> {
    users::Entity::find()
        .filter(users::Column::Role.eq(Role::Owner.as_str()))
        .order_by_asc(users::Column::Id)
        .one(db)
        .await?
        .map(user_from)
        .transpose()
}

pub async fn user(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<User>, StoreError> {
    users::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(user_from)
        .transpose()
}

/// Adds a link. The user's expired unused links go; unexpired ones stay valid, so a link an
/// operator already holds keeps working until it is used or expires.
pub async fn insert_sign_in_link(
    db: &impl ConnectionTrait,
    link: &SignInLink,
) -> Result<(), StoreError> {
    sign_in_links::Entity::delete_many()
        .filter(sign_in_links::Column::UserId.eq(link.user_id))
        .filter(sign_in_links::Column::UsedAt.is_null())
        .filter(sign_in_links::Column::ExpiresAt.lte(link.created_at))
        .exec(db)
        .await?;
    sign_in_links::Entity::insert(sign_in_links::ActiveModel {
        id: Set(link.id),
        user_id: Set(link.user_id),
        token_hash: Set(link.token_hash.clone()),
        created_at: Set(link.created_at),
        expires_at: Set(link.expires_at),
        used_at: Set(link.used_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn sign_in_link(
    db: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<Option<SignInLink>, StoreError> {
    Ok(sign_in_links::Entity::find()
        .filter(sign_in_links::Column::TokenHash.eq(token_hash))
        .one(db)
        .await?
        .map(|m| SignInLink {
            id: m.id,
            user_id: m.user_id,
            token_hash: m.token_hash,
            created_at: m.created_at,
            expires_at: m.expires_at,
            used_at: m.used_at,
        }))
}

/// The conditional update is what makes a link single-use under concurrent requests.
pub async fn redeem_sign_in_link(
    db: &impl ConnectionTrait,
    link_id: Uuid,
    now: DateTime<Utc>,
    session: &Session,
) -> Result<bool, StoreError> {
    let claimed = sign_in_links::Entity::update_many()
        .col_expr(sign_in_links::Column::UsedAt, Expr::value(now))
        .filter(sign_in_links::Column::Id.eq(link_id))
        .filter(sign_in_links::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(false);
    }
    // The user is in now: the other links issued for this first sign-in are spent too.
    sign_in_links::Entity::delete_many()
        .filter(sign_in_links::Column::UserId.eq(session.user_id))
        .filter(sign_in_links::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    open_session(db, session, now).await?;
    Ok(true)
}

/// Stores a new session and the user's sign-in time.
pub async fn open_session(
    db: &impl ConnectionTrait,
    session: &Session,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    users::Entity::update_many()
        .col_expr(users::Column::LastSignInAt, Expr::value(now))
        .filter(users::Column::Id.eq(session.user_id))
        .exec(db)
        .await?;
    sessions::Entity::insert(sessions::ActiveModel {
        id: Set(session.id),
        user_id: Set(session.user_id),
        token_hash: Set(session.token_hash.clone()),
        created_at: Set(session.created_at),
        last_seen_at: Set(session.last_seen_at),
        expires_at: Set(session.expires_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn session(
    db: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<Option<Session>, StoreError> {
    Ok(sessions::Entity::find()
        .filter(sessions::Column::TokenHash.eq(token_hash))
        .one(db)
        .await?
        .map(|m| Session {
            id: m.id,
            user_id: m.user_id,
            token_hash: m.token_hash,
            created_at: m.created_at,
            last_seen_at: m.last_seen_at,
            expires_at: m.expires_at,
        }))
}

pub async fn touch_session(
    db: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sessions::Entity::update_many()
        .col_expr(sessions::Column::LastSeenAt, Expr::value(now))
        .filter(sessions::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn delete_session(db: &impl ConnectionTrait, id: Uuid) -> Result<(), StoreError> {
    sessions::Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

pub async fn insert_api_key(db: &impl ConnectionTrait, key: &ApiKey) -> Result<(), StoreError> {
    api_keys::Entity::insert(api_keys::ActiveModel {
        id: Set(key.id),
        organization_id: Set(key.organization_id),
        name: Set(key.name.clone()),
        role: Set(key.role.as_str().into()),
        prefix: Set(key.prefix.clone()),
        key_hash: Set(key.key_hash.clone()),
        created_by: Set(key.created_by.clone()),
        created_at: Set(key.created_at),
        last_used_at: Set(key.last_used_at),
        revoked_at: Set(key.revoked_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn api_key_by_hash(
    db: &impl ConnectionTrait,
    key_hash: &str,
) -> Result<Option<ApiKey>, StoreError> {
    api_keys::Entity::find()
        .filter(api_keys::Column::KeyHash.eq(key_hash))
        .one(db)
        .await?
        .map(api_key_from)
        .transpose()
}

pub async fn api_keys(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
) -> Result<Vec<ApiKey>, StoreError> {
    api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(organization_id))
        .order_by_asc(api_keys::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(api_key_from)
        .collect()
}

pub async fn revoke_api_key(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let revoked = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(id))
        .filter(api_keys::Column::OrganizationId.eq(organization_id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(revoked.rows_affected == 1)
}

pub async fn touch_api_key(
    db: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::LastUsedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

#[async_trait]
impl CredentialStore for SeaStore {
    async fn open_session(&self, session: &Session, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::identity::open_session(txn, session, session.created_at).await?;
            ((), true)
        })
    }

    async fn switch_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            set_session_user(txn, session_id, user_id).await?;
            ((), true)
        })
    }

    async fn insert_sign_in_link(
        &self,
        link: &SignInLink,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::identity::insert_sign_in_link(txn, link).await?;
            ((), true)
        })
    }

    async fn sign_in_link(&self, token_hash: &str) -> Result<Option<SignInLink>, StoreError> {
        super::identity::sign_in_link(&self.db, token_hash).await
    }

    async fn redeem_sign_in_link(
        &self,
        link_id: Uuid,
        now: DateTime<Utc>,
        session: &Session,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let happened = super::identity::redeem_sign_in_link(txn, link_id, now, session).await?;
            (happened, happened)
        })
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        cached_if_found!(
            self,
            sessions,
            token_hash.to_owned(),
            super::identity::session(&self.db, token_hash).await?
        )
    }

    async fn touch_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        super::identity::touch_session(&self.db, id, now).await?;
        self.cache.session_seen(id, now);
        Ok(())
    }

    async fn delete_session(&self, id: Uuid, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::identity::delete_session(txn, id).await?;
            ((), true)
        })
    }

    async fn insert_api_key(&self, key: &ApiKey, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::identity::insert_api_key(txn, key).await?;
            ((), true)
        })
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        cached_if_found!(
            self,
            api_keys,
            key_hash.to_owned(),
            super::identity::api_key_by_hash(&self.db, key_hash).await?
        )
    }

    async fn api_keys(&self, organization_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        super::identity::api_keys(&self.db, organization_id).await
    }

    async fn revoke_api_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let happened = super::identity::revoke_api_key(txn, organization_id, id, now).await?;
            (happened, happened)
        })
    }

    async fn touch_api_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        super::identity::touch_api_key(&self.db, id, now).await?;
        self.cache.api_key_used(id, now);
        Ok(())
    }
}

#[async_trait]
impl crate::domain::ports::Counters for SeaStore {
    async fn count_attempt(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        super::rate_limits::count(&self.db, bucket, window_start).await
    }
}

pub async fn set_session_user(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<(), StoreError> {
    sessions::Entity::update_many()
        .col_expr(sessions::Column::UserId, Expr::value(user_id))
        .filter(sessions::Column::Id.eq(session_id))
        .exec(db)
        .await?;
    Ok(())
}
