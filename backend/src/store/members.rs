//! Memberships (users rows), single sign-on identities and invitations.

use super::SeaStore;
use crate::domain::audit::AuditDraft;
use crate::domain::ports::MemberStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, Statement,
};
use uuid::Uuid;

use super::entities::{invitations, sessions, users};
use super::identity::user_from;
use crate::domain::identity::{Organization, Role, User};
use crate::domain::members::{Invitation, MembershipChange};
use crate::domain::ports::StoreError;

pub async fn users_by_identity(
    db: &impl ConnectionTrait,
    issuer: &str,
    subject: &str,
) -> Result<Vec<User>, StoreError> {
    users::Entity::find()
        .filter(users::Column::OidcIssuer.eq(issuer))
        .filter(users::Column::OidcSubject.eq(subject))
        .order_by_asc(users::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(user_from)
        .collect()
}

pub async fn users(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
) -> Result<Vec<User>, StoreError> {
    users::Entity::find()
        .filter(users::Column::OrganizationId.eq(organization_id))
        .order_by_asc(users::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(user_from)
        .collect()
}

#[derive(FromQueryResult)]
struct MembershipRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    membership_id: Uuid,
}

/// One query: the person's memberships (the row itself, and every row with the same single
/// sign-on identity) joined to their organizations.
pub async fn memberships(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Vec<(Organization, Uuid)>, StoreError> {
    let backend = db.get_database_backend();
    let placeholder = if backend == DatabaseBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let sql = format!(
        "SELECT o.id, o.name, o.created_at, m.id AS membership_id \
         FROM users me \
         JOIN users m ON m.id = me.id OR (me.oidc_issuer IS NOT NULL \
              AND m.oidc_issuer = me.oidc_issuer AND m.oidc_subject = me.oidc_subject) \
         JOIN organizations o ON o.id = m.organization_id \
         WHERE me.id = {placeholder} ORDER BY o.name, o.id"
    );
    let rows = MembershipRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [user_id.into()],
    ))
    .all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                Organization {
                    id: r.id,
                    name: r.name,
                    created_at: r.created_at,
                },
                r.membership_id,
            )
        })
        .collect())
}

async fn member(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<Option<users::Model>, StoreError> {
    Ok(users::Entity::find_by_id(user_id)
        .filter(users::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?)
}

async fn owners(db: &impl ConnectionTrait, organization_id: Uuid) -> Result<u64, StoreError> {
    Ok(users::Entity::find()
        .filter(users::Column::OrganizationId.eq(organization_id))
        .filter(users::Column::Role.eq(Role::Owner.as_str()))
        .count(db)
        .await?)
}

/// Whether the person acting is still an owner, read inside the write: an owner demoted a
/// moment ago by someone else (on any instance) can no longer act as one.
async fn still_owner(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    acting: Option<Uuid>,
) -> Result<bool, StoreError> {
    let Some(acting) = acting else {
        return Ok(true);
    };
    Ok(member(db, organization_id, acting)
        .await?
        .is_some_and(|m| m.role == Role::Owner.as_str()))
}

/// Runs inside the store's write lock and transaction, so two owners demoting each other
/// at once cannot both succeed.
pub async fn change_role(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
    acting: Option<Uuid>,
) -> Result<MembershipChange, StoreError> {
    if !still_owner(db, organization_id, acting).await? {
        return Ok(MembershipChange::ActorNotOwner);
    }
    let Some(current) = member(db, organization_id, user_id).await? else {
        return Ok(MembershipChange::NotFound);
    };
    if current.role == Role::Owner.as_str()
        && role != Role::Owner
        && owners(db, organization_id).await? <= 1
    {
        return Ok(MembershipChange::LastOwner);
    }
    users::Entity::update_many()
        .col_expr(users::Column::Role, Expr::value(role.as_str()))
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(MembershipChange::Done)
}

pub async fn remove_user(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    user_id: Uuid,
    acting: Option<Uuid>,
) -> Result<MembershipChange, StoreError> {
    if !still_owner(db, organization_id, acting).await? {
        return Ok(MembershipChange::ActorNotOwner);
    }
    let Some(current) = member(db, organization_id, user_id).await? else {
        return Ok(MembershipChange::NotFound);
    };
    if current.role == Role::Owner.as_str() && owners(db, organization_id).await? <= 1 {
        return Ok(MembershipChange::LastOwner);
    }
    sessions::Entity::delete_many()
        .filter(sessions::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    super::entities::sign_in_links::Entity::delete_many()
        .filter(super::entities::sign_in_links::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    users::Entity::delete_by_id(user_id).exec(db).await?;
    Ok(MembershipChange::Done)
}

fn invitation_from(m: invitations::Model) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        role: Role::parse(&m.role)
            .ok_or_else(|| StoreError::Corrupt(format!("invitation {}: role", m.id)))?,
        id: m.id,
        organization_id: m.organization_id,
        email: m.email,
        created_by: m.created_by,
        created_at: m.created_at,
        expires_at: m.expires_at,
        accepted_at: m.accepted_at,
        revoked_at: m.revoked_at,
    })
}

/// An expired invitation is no longer pending, but the unique index on open invitations
/// still sees it: close it at its expiry time before a new one for the same email goes in.
pub async fn close_expired_invitations(
    db: &impl ConnectionTrait,
    new: &Invitation,
) -> Result<(), StoreError> {
    invitations::Entity::update_many()
        .col_expr(
            invitations::Column::RevokedAt,
            Expr::col(invitations::Column::ExpiresAt),
        )
        .filter(invitations::Column::OrganizationId.eq(new.organization_id))
        .filter(invitations::Column::Email.eq(new.email.as_str()))
        .filter(invitations::Column::AcceptedAt.is_null())
        .filter(invitations::Column::RevokedAt.is_null())
        .filter(invitations::Column::ExpiresAt.lte(new.created_at))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn insert_invitation(
    db: &impl ConnectionTrait,
    i: &Invitation,
) -> Result<(), StoreError> {
    invitations::Entity::insert(invitations::ActiveModel {
        id: Set(i.id),
        organization_id: Set(i.organization_id),
        email: Set(i.email.clone()),
        role: Set(i.role.as_str().to_owned()),
        created_by: Set(i.created_by.clone()),
        created_at: Set(i.created_at),
        expires_at: Set(i.expires_at),
        accepted_at: Set(i.accepted_at),
        revoked_at: Set(i.revoked_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn invitations(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
) -> Result<Vec<Invitation>, StoreError> {
    invitations::Entity::find()
        .filter(invitations::Column::OrganizationId.eq(organization_id))
        .order_by_desc(invitations::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(invitation_from)
        .collect()
}

pub async fn invitations_for_email(
    db: &impl ConnectionTrait,
    email: &str,
) -> Result<Vec<Invitation>, StoreError> {
    invitations::Entity::find()
        .filter(invitations::Column::Email.eq(email))
        .order_by_asc(invitations::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(invitation_from)
        .collect()
}

/// Claims the invitation (only if still pending) and adds the member.
pub async fn accept_invitation(
    db: &impl ConnectionTrait,
    id: Uuid,
    user: &User,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let claimed = invitations::Entity::update_many()
        .col_expr(invitations::Column::AcceptedAt, Expr::value(now))
        .filter(invitations::Column::Id.eq(id))
        .filter(invitations::Column::AcceptedAt.is_null())
        .filter(invitations::Column::RevokedAt.is_null())
        .filter(invitations::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(false);
    }
    super::identity::insert_user(db, user).await?;
    Ok(true)
}

pub async fn revoke_invitation(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let revoked = invitations::Entity::update_many()
        .col_expr(invitations::Column::RevokedAt, Expr::value(now))
        .filter(invitations::Column::Id.eq(id))
        .filter(invitations::Column::OrganizationId.eq(organization_id))
        .filter(invitations::Column::AcceptedAt.is_null())
        .filter(invitations::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(revoked.rows_affected == 1)
}

#[async_trait]
impl MemberStore for SeaStore {
    async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        super::identity::organizations(&self.db).await
    }

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        cached_if_found!(
            self,
            organizations,
            id,
            super::identity::organization(&self.db, id).await?
        )
    }

    async fn create_first_organization(
        &self,
        organization: &Organization,
        owner: &User,
        audit: AuditDraft,
    ) -> Result<User, StoreError> {
        audited!(self, audit, |txn| {
            // Its events go to the new organization's chain, whose lock nobody else holds:
            // two consoles starting at once wait here for each other, so one makes it.
            super::lock_named(txn, "first-organization").await?;
            match super::identity::first_owner(txn).await? {
                Some(existing) => (existing, false),
                None => {
                    super::identity::insert_organization(txn, organization, Some(owner)).await?;
                    (owner.clone(), true)
                }
            }
        })
    }

    async fn first_owner(&self) -> Result<Option<User>, StoreError> {
        super::identity::first_owner(&self.db).await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        cached_if_found!(self, users, id, super::identity::user(&self.db, id).await?)
    }

    async fn users_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Vec<User>, StoreError> {
        super::members::users_by_identity(&self.db, issuer, subject).await
    }

    async fn users(&self, organization_id: Uuid) -> Result<Vec<User>, StoreError> {
        super::members::users(&self.db, organization_id).await
    }

    async fn memberships(&self, user_id: Uuid) -> Result<Vec<(Organization, Uuid)>, StoreError> {
        cached!(
            self,
            memberships,
            user_id,
            super::members::memberships(&self.db, user_id).await?
        )
    }

    async fn change_role(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        role: Role,
        acting: Option<Uuid>,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        audited!(self, audit, |txn| {
            let change =
                super::members::change_role(txn, organization_id, user_id, role, acting).await?;
            let done = change == MembershipChange::Done;
            (change, done)
        })
    }

    async fn remove_user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        acting: Option<Uuid>,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        audited!(self, audit, |txn| {
            let change = super::members::remove_user(txn, organization_id, user_id, acting).await?;
            let done = change == MembershipChange::Done;
            (change, done)
        })
    }

    async fn insert_organization_with_invitation(
        &self,
        organization: &Organization,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::identity::insert_organization(txn, organization, None).await?;
            super::members::insert_invitation(txn, invitation).await?;
            ((), true)
        })
    }

    async fn insert_invitation(
        &self,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::members::close_expired_invitations(txn, invitation).await?;
            super::members::insert_invitation(txn, invitation).await?;
            ((), true)
        })
    }

    async fn invitations(&self, organization_id: Uuid) -> Result<Vec<Invitation>, StoreError> {
        super::members::invitations(&self.db, organization_id).await
    }

    async fn invitations_for_email(&self, email: &str) -> Result<Vec<Invitation>, StoreError> {
        super::members::invitations_for_email(&self.db, email).await
    }

    async fn accept_invitation(
        &self,
        id: Uuid,
        user: &User,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let happened = super::members::accept_invitation(txn, id, user, now).await?;
            (happened, happened)
        })
    }

    async fn revoke_invitation(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            let happened = super::members::revoke_invitation(txn, organization_id, id, now).await?;
            (happened, happened)
        })
    }
}
