//! The storage adapter: sea-orm over SQLite or PostgreSQL, implementing the domain's `Store`.
//! Writes that carry an audit event run in one transaction under one in-process lock, which
//! keeps the audit chain linear; the primary key on `seq` catches a second process racing.

mod audit;
mod entities;
mod identity;
mod keys;
pub mod local_kms;
mod members;
mod projects;

use std::time::Duration;

use async_trait::async_trait;
use cmek_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqlErr, TransactionTrait,
};
use tokio::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::audit::{AuditDraft, AuditEvent, AuditFilter};
use crate::domain::identity::{ApiKey, Organization, Role, Session, SignInLink, User};
use crate::domain::keys::{EncryptionKey, KeyStatus};
use crate::domain::members::{Invitation, MembershipChange};
use crate::domain::page::PageRequest;
use crate::domain::ports::{Store, StoreError};
use crate::domain::projects::Project;

pub struct SeaStore {
    db: DatabaseConnection,
    write_lock: Mutex<()>,
}

/// Connects with bounded time-outs, so a database that is down fails a request quickly
/// instead of hanging it.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite:") { 4 } else { 10 })
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(what)) => StoreError::Conflict(what),
            _ => StoreError::Database(err.to_string()),
        }
    }
}

struct Write<'a> {
    _guard: MutexGuard<'a, ()>,
    txn: DatabaseTransaction,
}

impl SeaStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            write_lock: Mutex::new(()),
        }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn begin(&self) -> Result<Write<'_>, StoreError> {
        let guard = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        Ok(Write { _guard: guard, txn })
    }
}

impl Write<'_> {
    /// Commits with the event when the guarded change happened; otherwise writes nothing.
    async fn commit_if(self, happened: bool, audit: AuditDraft) -> Result<bool, StoreError> {
        if happened {
            self.commit_with(audit).await?;
        }
        Ok(happened)
    }

    /// Appends the event and commits everything written in this transaction.
    async fn commit_with(self, audit: AuditDraft) -> Result<(), StoreError> {
        audit::append(&self.txn, audit).await?;
        self.txn.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SeaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        // A ping can succeed on a pooled connection while queries fail; ask for a row too.
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .map_err(StoreError::from)
    }

    async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        identity::organizations(&self.db).await
    }

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        identity::organization(&self.db, id).await
    }

    async fn create_organization(
        &self,
        organization: &Organization,
        owner: &User,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::insert_organization(&write.txn, organization, Some(owner)).await?;
        write.commit_with(audit).await
    }

    async fn first_owner(&self) -> Result<Option<User>, StoreError> {
        identity::first_owner(&self.db).await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        identity::user(&self.db, id).await
    }

    async fn users_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Vec<User>, StoreError> {
        members::users_by_identity(&self.db, issuer, subject).await
    }

    async fn users(&self, organization_id: Uuid) -> Result<Vec<User>, StoreError> {
        members::users(&self.db, organization_id).await
    }

    async fn open_session(&self, session: &Session, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::open_session(&write.txn, session, session.created_at).await?;
        write.commit_with(audit).await
    }

    async fn set_session_user(&self, session_id: Uuid, user_id: Uuid) -> Result<(), StoreError> {
        members::set_session_user(&self.db, session_id, user_id).await
    }

    async fn change_role(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        role: Role,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        let write = self.begin().await?;
        let change = members::change_role(&write.txn, organization_id, user_id, role).await?;
        write
            .commit_if(change == MembershipChange::Done, audit)
            .await?;
        Ok(change)
    }

    async fn remove_user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        let write = self.begin().await?;
        let change = members::remove_user(&write.txn, organization_id, user_id).await?;
        write
            .commit_if(change == MembershipChange::Done, audit)
            .await?;
        Ok(change)
    }

    async fn insert_organization_with_invitation(
        &self,
        organization: &Organization,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::insert_organization(&write.txn, organization, None).await?;
        members::insert_invitation(&write.txn, invitation).await?;
        write.commit_with(audit).await
    }

    async fn insert_invitation(
        &self,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        members::insert_invitation(&write.txn, invitation).await?;
        write.commit_with(audit).await
    }

    async fn invitations(&self, organization_id: Uuid) -> Result<Vec<Invitation>, StoreError> {
        members::invitations(&self.db, organization_id).await
    }

    async fn invitations_for_email(&self, email: &str) -> Result<Vec<Invitation>, StoreError> {
        members::invitations_for_email(&self.db, email).await
    }

    async fn accept_invitation(
        &self,
        id: Uuid,
        user: &User,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let write = self.begin().await?;
        let happened = members::accept_invitation(&write.txn, id, user, now).await?;
        write.commit_if(happened, audit).await
    }

    async fn revoke_invitation(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let write = self.begin().await?;
        let happened = members::revoke_invitation(&write.txn, organization_id, id, now).await?;
        write.commit_if(happened, audit).await
    }

    async fn replace_sign_in_link(&self, link: &SignInLink) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::replace_sign_in_link(&write.txn, link).await?;
        write.txn.commit().await?;
        Ok(())
    }

    async fn sign_in_link(&self, token_hash: &str) -> Result<Option<SignInLink>, StoreError> {
        identity::sign_in_link(&self.db, token_hash).await
    }

    async fn redeem_sign_in_link(
        &self,
        link_id: Uuid,
        now: DateTime<Utc>,
        session: &Session,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let write = self.begin().await?;
        let happened = identity::redeem_sign_in_link(&write.txn, link_id, now, session).await?;
        write.commit_if(happened, audit).await
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        identity::session(&self.db, token_hash).await
    }

    async fn touch_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        identity::touch_session(&self.db, id, now).await
    }

    async fn delete_session(&self, id: Uuid, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::delete_session(&write.txn, id).await?;
        write.commit_with(audit).await
    }

    async fn insert_api_key(&self, key: &ApiKey, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::insert_api_key(&write.txn, key).await?;
        write.commit_with(audit).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        identity::api_key_by_hash(&self.db, key_hash).await
    }

    async fn api_keys(&self, organization_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        identity::api_keys(&self.db, organization_id).await
    }

    async fn revoke_api_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let write = self.begin().await?;
        let happened = identity::revoke_api_key(&write.txn, organization_id, id, now).await?;
        write.commit_if(happened, audit).await
    }

    async fn touch_api_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        identity::touch_api_key(&self.db, id, now).await
    }

    async fn insert_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        projects::insert(&write.txn, project).await?;
        write.commit_with(audit).await
    }

    async fn project(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        projects::get(&self.db, organization_id, id).await
    }

    async fn projects(
        &self,
        organization_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Project>, StoreError> {
        projects::list(&self.db, organization_id, page).await
    }

    async fn update_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        projects::update(&write.txn, project).await?;
        write.commit_with(audit).await
    }

    async fn insert_key(&self, key: &EncryptionKey, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        keys::insert(&write.txn, key).await?;
        write.commit_with(audit).await
    }

    async fn keys(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        keys::list(&self.db, organization_id, project_id).await
    }

    async fn key(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<EncryptionKey>, StoreError> {
        keys::get(&self.db, organization_id, id).await
    }

    async fn delete_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        keys::delete(&write.txn, organization_id, id).await?;
        write.commit_with(audit).await
    }

    async fn update_key_status(
        &self,
        id: Uuid,
        status: KeyStatus,
        checked_at: DateTime<Utc>,
        error: Option<String>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        keys::update_status(&write.txn, id, status, checked_at, error).await?;
        write.commit_with(audit).await
    }

    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError> {
        self.begin().await?.commit_with(audit).await
    }

    async fn audit_events(
        &self,
        organization_id: Uuid,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        audit::list(&self.db, organization_id, filter, page).await
    }

    async fn audit_chain(&self, from_seq: i64, limit: u64) -> Result<Vec<AuditEvent>, StoreError> {
        audit::chain(&self.db, from_seq, limit).await
    }
}
