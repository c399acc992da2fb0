//! The storage adapter: sea-orm over SQLite or PostgreSQL, implementing the domain's `Store`.
//! Writes that carry an audit event run in one transaction under one in-process lock, which
//! keeps the audit chain linear; the primary key on `seq` catches a second process racing.

mod audit;
mod entities;
mod identity;
mod projects;

use std::time::Duration;

use async_trait::async_trait;
use cmek_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqlErr, TransactionTrait,
};
use tokio::sync::{Mutex, MutexGuard};

use crate::domain::audit::AuditDraft;
use crate::domain::ports::StoreError;

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
    /// Appends the event and commits everything written in this transaction.
    async fn commit_with(self, audit: AuditDraft) -> Result<(), StoreError> {
        audit::append(&self.txn, audit).await?;
        self.txn.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl crate::domain::ports::Store for SeaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        // A ping can succeed on a pooled connection while queries fail; ask for a row too.
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .map_err(StoreError::from)
    }

    async fn organizations(
        &self,
    ) -> Result<Vec<crate::domain::identity::Organization>, StoreError> {
        identity::organizations(&self.db).await
    }

    async fn organization(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<crate::domain::identity::Organization>, StoreError> {
        identity::organization(&self.db, id).await
    }

    async fn create_organization(
        &self,
        organization: &crate::domain::identity::Organization,
        owner: &crate::domain::identity::User,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::insert_organization(&write.txn, organization, owner).await?;
        write.commit_with(audit).await
    }

    async fn first_owner(&self) -> Result<Option<crate::domain::identity::User>, StoreError> {
        identity::first_owner(&self.db).await
    }

    async fn user(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<crate::domain::identity::User>, StoreError> {
        identity::user(&self.db, id).await
    }

    async fn replace_sign_in_link(
        &self,
        link: &crate::domain::identity::SignInLink,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::replace_sign_in_link(&write.txn, link).await?;
        write.txn.commit().await?;
        Ok(())
    }

    async fn sign_in_link(
        &self,
        token_hash: &str,
    ) -> Result<Option<crate::domain::identity::SignInLink>, StoreError> {
        identity::sign_in_link(&self.db, token_hash).await
    }

    async fn redeem_sign_in_link(
        &self,
        link_id: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
        session: &crate::domain::identity::Session,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let write = self.begin().await?;
        if !identity::redeem_sign_in_link(&write.txn, link_id, now, session).await? {
            return Ok(false);
        }
        write.commit_with(audit).await?;
        Ok(true)
    }

    async fn session(
        &self,
        token_hash: &str,
    ) -> Result<Option<crate::domain::identity::Session>, StoreError> {
        identity::session(&self.db, token_hash).await
    }

    async fn touch_session(
        &self,
        id: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        identity::touch_session(&self.db, id, now).await
    }

    async fn delete_session(&self, id: uuid::Uuid, audit: AuditDraft) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::delete_session(&write.txn, id).await?;
        write.commit_with(audit).await
    }

    async fn insert_api_key(
        &self,
        key: &crate::domain::identity::ApiKey,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        identity::insert_api_key(&write.txn, key).await?;
        write.commit_with(audit).await
    }

    async fn api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<crate::domain::identity::ApiKey>, StoreError> {
        identity::api_key_by_hash(&self.db, key_hash).await
    }

    async fn api_keys(
        &self,
        organization_id: uuid::Uuid,
    ) -> Result<Vec<crate::domain::identity::ApiKey>, StoreError> {
        identity::api_keys(&self.db, organization_id).await
    }

    async fn revoke_api_key(
        &self,
        organization_id: uuid::Uuid,
        id: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        let write = self.begin().await?;
        if !identity::revoke_api_key(&write.txn, organization_id, id, now).await? {
            return Ok(false);
        }
        write.commit_with(audit).await?;
        Ok(true)
    }

    async fn touch_api_key(
        &self,
        id: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        identity::touch_api_key(&self.db, id, now).await
    }

    async fn insert_project(
        &self,
        project: &crate::domain::projects::Project,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        projects::insert(&write.txn, project).await?;
        write.commit_with(audit).await
    }

    async fn project(
        &self,
        organization_id: uuid::Uuid,
        id: uuid::Uuid,
    ) -> Result<Option<crate::domain::projects::Project>, StoreError> {
        projects::get(&self.db, organization_id, id).await
    }

    async fn projects(
        &self,
        organization_id: uuid::Uuid,
        page: crate::domain::page::PageRequest,
    ) -> Result<Vec<crate::domain::projects::Project>, StoreError> {
        projects::list(&self.db, organization_id, page).await
    }

    async fn update_project(
        &self,
        project: &crate::domain::projects::Project,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let write = self.begin().await?;
        projects::update(&write.txn, project).await?;
        write.commit_with(audit).await
    }

    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError> {
        self.begin().await?.commit_with(audit).await
    }

    async fn audit_events(
        &self,
        organization_id: uuid::Uuid,
        filter: &crate::domain::audit::AuditFilter,
        page: crate::domain::page::PageRequest,
    ) -> Result<Vec<crate::domain::audit::AuditEvent>, StoreError> {
        audit::list(&self.db, organization_id, filter, page).await
    }

    async fn audit_chain(
        &self,
        from_seq: i64,
        limit: u64,
    ) -> Result<Vec<crate::domain::audit::AuditEvent>, StoreError> {
        audit::chain(&self.db, from_seq, limit).await
    }
}
