//! The storage adapter: sea-orm over SQLite or PostgreSQL, implementing the domain's `Store`.
//!
//! Every write that carries an audit event runs in one transaction that first takes the
//! chain lock in the database itself: `pg_advisory_xact_lock` on PostgreSQL, `BEGIN IMMEDIATE`
//! on SQLite. So the audit chain stays linear and the guards that read before they write
//! (the last owner, R4's pre-check) hold across every console process on the database, not
//! only inside one. A transaction that loses a race anyway (deadlock, serialization failure,
//! a busy SQLite file) is rolled back and run again.

mod audit;
mod cache;
pub mod chain_keys;
mod entities;
mod errors;
mod identity;
mod keys;
pub mod local_kms;
mod members;
mod projects;
mod rate_limits;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cmek_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};
use tokio::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::audit::{AuditDraft, AuditEvent, AuditFilter, ChainKey, ChainKeys, ChainRow};
use crate::domain::identity::{ApiKey, Organization, Role, Session, SignInLink, User};
use crate::domain::keys::{EncryptionKey, KeyStatus};
use crate::domain::local_kms::LocalKey;
use crate::domain::members::{Invitation, MembershipChange};
use crate::domain::page::PageRequest;
use crate::domain::ports::{Store, StoreError};
use crate::domain::projects::Project;

/// The advisory lock that orders appends to the audit chain on PostgreSQL ("cmekaudt").
const CHAIN_LOCK: i64 = 0x636d_656b_6175_6474;
/// Attempts of a write transaction that keeps losing races before the error is returned.
const WRITE_ATTEMPTS: u32 = 4;

pub struct SeaStore {
    db: DatabaseConnection,
    /// Seals appended events (the current key) and re-seals legacy ones.
    chain_keys: ChainKeys,
    /// SQLite has one writer per file: queueing this process's writers here keeps them from
    /// spinning on a busy file. Correctness does not rest on it (`BEGIN IMMEDIATE` does).
    local_writers: Option<Mutex<()>>,
    /// Set once the SQLite file is found damaged: no more writes go into it, and readiness
    /// fails, until an operator restores it and restarts.
    damaged: AtomicBool,
    /// When the SQLite file last passed its integrity check (readiness runs it now and then).
    checked_at: std::sync::Mutex<Option<Instant>>,
    /// What the read path repeats, kept in memory (see `cache`).
    cache: cache::ReadCache,
    /// Held by the one request that reads the audit head for the cache.
    head_poll: Mutex<()>,
}

/// How long a passed integrity check counts for readiness.
const INTEGRITY_CHECK_EVERY: Duration = Duration::from_secs(30);

/// SQLite's own integrity check, limited to the first few problems; `None` when the file is
/// sound (or the database is not SQLite). Run on a connection of its own, so pages cached by
/// the pool cannot hide damage on disk.
pub async fn integrity_problem(db: &DatabaseConnection) -> Result<Option<String>, DbErr> {
    if db.get_database_backend() != DatabaseBackend::Sqlite {
        return Ok(None);
    }
    let url = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_str()
        .filter(|file| !file.is_empty() && *file != ":memory:")
        .map(|file| format!("sqlite://{file}?mode=rw"));
    let fresh = match url {
        Some(url) => Some(
            Database::connect(
                ConnectOptions::new(url)
                    .max_connections(1)
                    .sqlx_logging(false)
                    .to_owned(),
            )
            .await?,
        ),
        None => None,
    };
    let db = fresh.as_ref().unwrap_or(db);
    let rows = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "PRAGMA quick_check(5)",
        ))
        .await?;
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|row| row.try_get_by_index::<String>(0).ok())
        .collect();
    if let Some(fresh) = fresh {
        fresh.close().await?;
    }
    Ok(match lines.as_slice() {
        [only] if only == "ok" => None,
        _ => Some(lines.join("; ")),
    })
}

/// Connects with bounded time-outs, so a database that is down fails a request quickly
/// instead of hanging it.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite { 4 } else { 10 })
        .connect_timeout(Duration::from_secs(3))
        .acquire_timeout(Duration::from_secs(3))
        .sqlx_logging(false);
    if !sqlite {
        // A connection left over from before a database restart is found dead at once.
        options.test_before_acquire(true);
    }
    Database::connect(options).await
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

struct Write<'a> {
    _local: Option<MutexGuard<'a, ()>>,
    txn: DatabaseTransaction,
    key: &'a ChainKey,
}

/// Runs `$body` (an expression using `$txn` that yields `(value, happened)`) in a write
/// transaction holding the chain lock; appends `$audit` and commits when the change happened,
/// rolls back otherwise. A transaction that lost a race is run again from the start, with
/// a short growing pause, up to `WRITE_ATTEMPTS` times.
macro_rules! audited {
    ($store:expr, $audit:expr, |$txn:ident| $body:expr) => {
        audited!($store, events: vec![$audit.clone()], |$txn| $body)
    };
    ($store:expr, events: $events:expr, |$txn:ident| $body:expr) => {{
        let mut attempt = 1;
        let result = loop {
            let result: Result<_, StoreError> = async {
                let write = $store.begin().await?;
                let $txn = &write.txn;
                let (value, happened) = $body;
                if happened {
                    write.commit_with($events).await?;
                }
                Ok(value)
            }
            .await;
            match result {
                Err(StoreError::Damaged(why)) => {
                    $store.mark_damaged(&why);
                    break Err(StoreError::Damaged(why));
                }
                Err(StoreError::Contention(why)) if attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(attempt, why, "write lost a race; running it again");
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        // Whatever was cached may predate this change.
        $store.cache.changed();
        result
    }};
}

/// Answers a read from the cache when it holds it under the current version, else from the
/// database (`$fetch`), keeping the answer for the next caller.
macro_rules! cached {
    ($store:expr, $map:ident, $key:expr, $fetch:expr) => {{
        let tag = $store.read_tag().await?;
        let key = $key;
        if let Some(hit) = $store.cache.$map.get(&key, tag) {
            return Ok(hit);
        }
        let value = $fetch;
        $store.cache.$map.put(key, tag, value.clone());
        Ok(value)
    }};
}

/// The same for credentials, which are cached only when they exist.
macro_rules! cached_if_found {
    ($store:expr, $map:ident, $key:expr, $fetch:expr) => {{
        let tag = $store.read_tag().await?;
        let key = $key;
        if let Some(hit) = $store.cache.$map.get(&key, tag) {
            return Ok(Some(hit));
        }
        let value = $fetch;
        if let Some(found) = &value {
            $store.cache.$map.put(key, tag, found.clone());
        }
        Ok(value)
    }};
}

impl SeaStore {
    pub fn new(db: DatabaseConnection, chain_keys: ChainKeys) -> Self {
        let local_writers =
            (db.get_database_backend() == DatabaseBackend::Sqlite).then(|| Mutex::new(()));
        Self {
            db,
            chain_keys,
            local_writers,
            damaged: AtomicBool::new(false),
            checked_at: std::sync::Mutex::new(None),
            cache: cache::ReadCache::default(),
            head_poll: Mutex::new(()),
        }
    }

    fn mark_damaged(&self, why: &str) {
        if !self.damaged.swap(true, Ordering::SeqCst) {
            tracing::error!(
                why,
                "the database file is damaged: writes are refused and readiness fails until it \
                 is restored from a backup and the console restarted"
            );
        }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The version to read under; reads the audit head first when it is due. One request
    /// reads it while the others go on with the version they have, so a busy instance does
    /// not send a burst of head queries every interval; once the version is two intervals
    /// old (or was never read), everyone waits for a fresh one.
    async fn read_tag(&self) -> Result<cache::Tag, StoreError> {
        if self.cache.poll_due() {
            let polling = if self.cache.poll_overdue() {
                Some(self.head_poll.lock().await)
            } else {
                self.head_poll.try_lock().ok()
            };
            if polling.is_some() && self.cache.poll_due() {
                let head = audit::head(&self.db).await?.map_or(0, |(seq, _)| seq);
                self.cache.polled(head);
            }
        }
        Ok(self.cache.tag())
    }

    /// Opens a write transaction that holds the chain lock until it ends.
    async fn begin(&self) -> Result<Write<'_>, StoreError> {
        if self.damaged.load(Ordering::SeqCst) {
            return Err(StoreError::Damaged(
                "writes stopped: the file is damaged".into(),
            ));
        }
        let local = match &self.local_writers {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let txn = match self.db.get_database_backend() {
            DatabaseBackend::Sqlite => {
                self.db
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..TransactionOptions::default()
                    })
                    .await?
            }
            _ => {
                let txn = self.db.begin().await?;
                txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CHAIN_LOCK})"))
                    .await?;
                txn
            }
        };
        Ok(Write {
            _local: local,
            txn,
            key: self.chain_keys.current(),
        })
    }
}

impl Write<'_> {
    /// Appends the events and commits everything written in this transaction.
    async fn commit_with(self, events: Vec<AuditDraft>) -> Result<(), StoreError> {
        for event in events {
            audit::append(&self.txn, event, self.key).await?;
        }
        self.txn.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SeaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        if self.damaged.load(Ordering::SeqCst) {
            return Err(StoreError::Damaged("found damaged earlier".into()));
        }
        self.db.ping().await?;
        // A ping can succeed on a pooled connection while queries fail; ask for a row too.
        self.db.execute_unprepared("SELECT 1").await?;
        let due = self
            .checked_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= INTEGRITY_CHECK_EVERY))
            .unwrap_or(true);
        if due {
            match integrity_problem(&self.db).await {
                Ok(None) => {
                    if let Ok(mut at) = self.checked_at.lock() {
                        *at = Some(Instant::now());
                    }
                }
                Ok(Some(problem)) => {
                    self.mark_damaged(&problem);
                    return Err(StoreError::Damaged(problem));
                }
                Err(err) => {
                    let err = StoreError::from(err);
                    if let StoreError::Damaged(why) = &err {
                        self.mark_damaged(why);
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        identity::organizations(&self.db).await
    }

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        cached_if_found!(
            self,
            organizations,
            id,
            identity::organization(&self.db, id).await?
        )
    }

    async fn create_first_organization(
        &self,
        organization: &Organization,
        owner: &User,
        audit: AuditDraft,
    ) -> Result<User, StoreError> {
        audited!(self, audit, |txn| {
            match identity::first_owner(txn).await? {
                Some(existing) => (existing, false),
                None => {
                    identity::insert_organization(txn, organization, Some(owner)).await?;
                    (owner.clone(), true)
                }
            }
        })
    }

    async fn first_owner(&self) -> Result<Option<User>, StoreError> {
        identity::first_owner(&self.db).await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        cached_if_found!(self, users, id, identity::user(&self.db, id).await?)
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

    async fn memberships(&self, user_id: Uuid) -> Result<Vec<(Organization, Uuid)>, StoreError> {
        cached!(
            self,
            memberships,
            user_id,
            members::memberships(&self.db, user_id).await?
        )
    }

    async fn open_session(&self, session: &Session, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            identity::open_session(txn, session, session.created_at).await?;
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
            members::set_session_user(txn, session_id, user_id).await?;
            ((), true)
        })
    }

    async fn change_role(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        role: Role,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        audited!(self, audit, |txn| {
            let change = members::change_role(txn, organization_id, user_id, role).await?;
            let done = change == MembershipChange::Done;
            (change, done)
        })
    }

    async fn remove_user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        audited!(self, audit, |txn| {
            let change = members::remove_user(txn, organization_id, user_id).await?;
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
            identity::insert_organization(txn, organization, None).await?;
            members::insert_invitation(txn, invitation).await?;
            ((), true)
        })
    }

    async fn insert_invitation(
        &self,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            members::close_expired_invitations(txn, invitation).await?;
            members::insert_invitation(txn, invitation).await?;
            ((), true)
        })
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
        audited!(self, audit, |txn| {
            let happened = members::accept_invitation(txn, id, user, now).await?;
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
            let happened = members::revoke_invitation(txn, organization_id, id, now).await?;
            (happened, happened)
        })
    }

    async fn insert_sign_in_link(
        &self,
        link: &SignInLink,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            identity::insert_sign_in_link(txn, link).await?;
            ((), true)
        })
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
        audited!(self, audit, |txn| {
            let happened = identity::redeem_sign_in_link(txn, link_id, now, session).await?;
            (happened, happened)
        })
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        cached_if_found!(
            self,
            sessions,
            token_hash.to_owned(),
            identity::session(&self.db, token_hash).await?
        )
    }

    async fn touch_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        identity::touch_session(&self.db, id, now).await?;
        self.cache.session_seen(id, now);
        Ok(())
    }

    async fn delete_session(&self, id: Uuid, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            identity::delete_session(txn, id).await?;
            ((), true)
        })
    }

    async fn insert_api_key(&self, key: &ApiKey, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            identity::insert_api_key(txn, key).await?;
            ((), true)
        })
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        cached_if_found!(
            self,
            api_keys,
            key_hash.to_owned(),
            identity::api_key_by_hash(&self.db, key_hash).await?
        )
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
        audited!(self, audit, |txn| {
            let happened = identity::revoke_api_key(txn, organization_id, id, now).await?;
            (happened, happened)
        })
    }

    async fn touch_api_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        identity::touch_api_key(&self.db, id, now).await?;
        self.cache.api_key_used(id, now);
        Ok(())
    }

    async fn insert_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            projects::insert(txn, project).await?;
            ((), true)
        })
    }

    async fn project(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        cached!(
            self,
            project,
            (organization_id, id),
            projects::get(&self.db, organization_id, id).await?
        )
    }

    async fn projects(
        &self,
        organization_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Project>, StoreError> {
        cached!(
            self,
            projects,
            (organization_id, page.after, page.size),
            projects::list(&self.db, organization_id, page).await?
        )
    }

    async fn update_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            projects::update(txn, project).await?;
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
                keys::insert(txn, key).await?;
            }
            ((), true)
        })
    }

    async fn insert_local_key(
        &self,
        key: &LocalKey,
        material: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            local_kms::create(txn, key, material.clone()).await?;
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
            let found = local_kms::set_enabled(txn, organization_id, id, enabled).await?;
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
            let rotated = local_kms::rotate(txn, key, material.clone(), now).await?;
            (rotated, rotated)
        })
    }

    async fn count_attempt(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        rate_limits::count(&self.db, bucket, window_start).await
    }

    async fn insert_key(&self, key: &EncryptionKey, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            keys::insert(txn, key).await?;
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
            keys::list(&self.db, organization_id, project_id).await?
        )
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
        audited!(self, audit, |txn| {
            keys::delete(txn, organization_id, id).await?;
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
            keys::update_status(txn, id, status, checked_at, error.clone()).await?;
            ((), true)
        })
    }

    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |_txn| ((), true))
    }

    async fn audit_events(
        &self,
        organization_id: Uuid,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        audit::list(&self.db, organization_id, filter, page).await
    }

    async fn audit_chain(&self, from_seq: i64, limit: u64) -> Result<Vec<ChainRow>, StoreError> {
        audit::chain(&self.db, from_seq, limit).await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        audit::head(&self.db).await
    }

    async fn reseal_legacy_audit_chain(&self) -> Result<u64, StoreError> {
        let write = self.begin().await?;
        let count = audit::reseal_legacy(&write.txn, write.key).await?;
        write.txn.commit().await?;
        self.cache.changed();
        Ok(count)
    }
}
