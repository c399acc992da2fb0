//! The storage adapter: sea-orm over SQLite or PostgreSQL, implementing the domain's `Store`.
//!
//! Every write that carries audit events runs in one transaction that first takes the lock of
//! each organization whose chain the events go to, in the database itself: on PostgreSQL an
//! advisory lock per organization (`pg_advisory_xact_lock(class, hashtext(org))`), so writes
//! in different organizations never wait for each other; on SQLite `BEGIN IMMEDIATE` (one
//! writer at a time, which SQLite has anyway). So each organization's chain stays linear and
//! the guards that read before they write (the last owner, R4's pre-check, one invitation per
//! email) hold across every console process on the database. Writes without events (object
//! index rows, leases) take no audit lock: they are ordered by row locks on what they touch
//! (a cluster's row, a backup's, a delivery's) or by a lock of their own (each kind of lease
//! scan). Before format 1's chain is closed, every audited write takes its one lock, as it
//! always did. A transaction that loses a race anyway (deadlock, serialization failure, a
//! busy SQLite file) is rolled back and run again.

/// Runs `$body` (an expression using `$txn` that yields `(value, happened)`) in a write
/// transaction holding the locks `$locks`; appends `$events` and commits when the change
/// happened, rolls back otherwise. A transaction that lost a race is run again from the
/// start, with a short growing pause, up to `WRITE_ATTEMPTS` times.
macro_rules! audited {
    (@write $store:expr, $locks:expr, $events:expr, $invalidate:expr, |$txn:ident| $body:expr) => {{
        let mut attempt = 1;
        let result = loop {
            let result: Result<_, $crate::domain::ports::StoreError> = async {
                let write = $store.begin($locks).await?;
                let $txn = &write.txn;
                let (value, happened) = $body;
                if happened {
                    write.commit_with($events).await?;
                }
                Ok(value)
            }
            .await;
            match result {
                Err($crate::domain::ports::StoreError::Damaged(why)) => {
                    $store.mark_damaged(&why);
                    break Err($crate::domain::ports::StoreError::Damaged(why));
                }
                Err($crate::domain::ports::StoreError::Contention(why))
                    if attempt < $crate::store::WRITE_ATTEMPTS =>
                {
                    tracing::debug!(attempt, why, "write lost a race; running it again");
                    tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        // Whatever was cached may predate this change.
        if $invalidate {
            $store.cache.changed();
        }
        result
    }};
    // A write with no event (a cluster's object index, a lease): no audit lock, retried the
    // same way, and it changes nothing the read cache holds.
    ($store:expr, quietly, |$txn:ident| $body:expr) => {
        audited!(@write $store, $crate::store::Locks::Quiet, Vec::new(), false, |$txn| $body)
    };
    ($store:expr, $audit:expr, |$txn:ident| $body:expr) => {
        audited!($store, events: vec![$audit.clone()], |$txn| $body)
    };
    ($store:expr, events: $events:expr, |$txn:ident| $body:expr) => {
        audited!(@write $store, $crate::store::Locks::of(&$events), $events, true, |$txn| $body)
    };
}

/// What a write transaction locks before its body runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Locks {
    /// No audit lock: a write with no event, ordered by the rows it touches.
    Quiet,
    /// The chains (organization ids, or `platform`) its events go to, sorted, each once.
    Chains(Vec<String>),
}

impl Locks {
    pub(crate) fn of(events: &[AuditDraft]) -> Self {
        Self::chains(events.iter().map(|e| e.organization_id))
    }

    pub(crate) fn chains(organizations: impl IntoIterator<Item = Option<uuid::Uuid>>) -> Self {
        let mut names: Vec<String> = organizations.into_iter().map(audit::chain_of).collect();
        names.sort_unstable();
        names.dedup();
        Self::Chains(names)
    }
}

/// The class of the console's named advisory locks on PostgreSQL (`"cmek"`), used with
/// `hashtext(name)`; the two-key form never meets format 1's one-key `CHAIN_LOCK`.
const LOCK_CLASS: i32 = 0x636d_656b;

/// Takes, on PostgreSQL, the advisory lock named `name` until the transaction ends; SQLite's
/// write transactions already run one at a time.
pub(crate) async fn lock_named(db: &impl ConnectionTrait, name: &str) -> Result<(), StoreError> {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    db.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        [LOCK_CLASS.into(), name.into()],
    ))
    .await?;
    Ok(())
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

mod audit;
mod cache;
pub mod chain_keys;
mod clusters;
mod entities;
mod errors;
mod identity;
mod jobs;
mod keys;
pub mod local_kms;
mod members;
mod projects;
mod rate_limits;
mod rewraps;
pub mod signing_keys;
mod webhooks;

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

use crate::domain::audit::{AuditDraft, ChainKey, ChainKeys};
use crate::domain::ports::{Store, StoreError};

/// Every how many events of a chain a checkpoint is signed, unless configured otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// The advisory lock that orders appends to the audit chain on PostgreSQL ("cmekaudt").
const CHAIN_LOCK: i64 = 0x636d_656b_6175_6474;
/// Attempts of a write transaction that keeps losing races before the error is returned.
pub(crate) const WRITE_ATTEMPTS: u32 = 4;

pub struct SeaStore {
    db: DatabaseConnection,
    /// Seals appended events (the current key) and re-seals legacy ones.
    chain_keys: ChainKeys,
    /// This process's writers queue here on SQLite (and on PostgreSQL before format 1's chain
    /// closes), so only one of them waits for the database's lock (and holds a connection
    /// meanwhile). Correctness does not rest on it: the locks in the database do.
    local_writers: Mutex<()>,
    /// The same on PostgreSQL, by organization: writers of one organization queue here.
    local_chains: Vec<Mutex<()>>,
    /// Set once the SQLite file is found damaged: no more writes go into it, and readiness
    /// fails, until an operator restores it and restarts.
    damaged: AtomicBool,
    /// When the SQLite file last passed its integrity check (readiness runs it now and then).
    checked_at: std::sync::Mutex<Option<Instant>>,
    /// What the read path repeats, kept in memory (see `cache`).
    cache: cache::ReadCache,
    /// Held by the one request that reads the audit head for the cache.
    head_poll: Mutex<()>,
    /// Signs each new event into its organization's chain (format 2), when the console has
    /// the signing key file.
    signing: crate::crypto::audit_chain::SigningKeyRing,
    /// Every how many events of a chain its head is checkpointed in the append's transaction.
    checkpoint_every: u64,
    /// Where format 1's chain ended, once it is closed (read or closed at start).
    legacy: std::sync::OnceLock<crate::domain::audit::LegacyEnd>,
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
    if sqlite {
        // Write-ahead logging: a commit appends to one file and syncs it, where the default
        // rollback journal creates, syncs and deletes a file (and syncs its directory) per
        // commit. FULL keeps every commit durable once it returns. The mode is a setting of
        // the file, so every later connection (`audit verify`, the CLI) uses it too.
        options.map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
        });
    } else {
        // A connection left over from before a database restart is found dead at once.
        options.test_before_acquire(true);
    }
    Database::connect(options).await
}

/// Whether a key file is the one the database knows by `name`: its fingerprint is compared
/// with the one recorded at the first start that had the file (and recorded now if none
/// was and `record`: only `serve` records). False when another file took its place.
pub async fn same_key_file(
    db: &DatabaseConnection,
    name: &str,
    fingerprint: &str,
    now: chrono::DateTime<chrono::Utc>,
    record: bool,
) -> Result<bool, DbErr> {
    use entities::key_file_checks;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let known = |row: Option<key_file_checks::Model>| row.map(|r| r.fingerprint == fingerprint);
    if let Some(same) = known(
        key_file_checks::Entity::find_by_id(name.to_owned())
            .one(db)
            .await?,
    ) {
        return Ok(same);
    }
    if !record {
        return Ok(true);
    }
    let recorded = key_file_checks::Entity::insert(key_file_checks::ActiveModel {
        name: Set(name.to_owned()),
        fingerprint: Set(fingerprint.to_owned()),
        recorded_at: Set(now),
    })
    .exec_without_returning(db)
    .await;
    match recorded {
        Ok(_) => Ok(true),
        // Another instance starting at the same moment recorded it first: compare with it.
        Err(err) => known(
            key_file_checks::Entity::find_by_id(name.to_owned())
                .one(db)
                .await?,
        )
        .ok_or(err),
    }
}

/// The chain key that sealed the newest event, if any event is sealed.
pub async fn newest_chain_key(db: &DatabaseConnection) -> Result<Option<String>, DbErr> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    // Once format 1's chain is closed, the key that sealed where it ended.
    if let Some(end) = entities::audit_legacy::Entity::find_by_id(1)
        .one(db)
        .await?
    {
        return Ok(Some(end.key_id));
    }
    Ok(entities::audit_events::Entity::find()
        .filter(entities::audit_events::Column::KeyId.is_not_null())
        .order_by_desc(entities::audit_events::Column::Seq)
        .one(db)
        .await?
        .and_then(|event| event.key_id))
}

/// The signing key of the newest event signed into an organization's chain, if any.
pub async fn newest_signing_key(db: &DatabaseConnection) -> Result<Option<String>, DbErr> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    Ok(entities::audit_events::Entity::find()
        .filter(entities::audit_events::Column::SigningKeyId.is_not_null())
        .order_by_desc(entities::audit_events::Column::Seq)
        .one(db)
        .await?
        .and_then(|event| event.signing_key_id))
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

struct Write<'a> {
    // Dropped in this order: the transaction ends before the next local writer may begin.
    txn: DatabaseTransaction,
    _local: Vec<MutexGuard<'a, ()>>,
    key: &'a ChainKey,
    /// The signing keys as they were when the write began (a rotation read meanwhile
    /// applies to the next write).
    signing: std::sync::Arc<crate::crypto::audit_chain::SigningKeys>,
    checkpoint_every: u64,
    legacy: Option<&'a crate::domain::audit::LegacyEnd>,
}

impl SeaStore {
    pub fn new(db: DatabaseConnection, chain_keys: ChainKeys) -> Self {
        Self {
            db,
            chain_keys,
            local_writers: Mutex::new(()),
            local_chains: (0..LOCAL_STRIPES).map(|_| Mutex::new(())).collect(),
            damaged: AtomicBool::new(false),
            checked_at: std::sync::Mutex::new(None),
            cache: cache::ReadCache::default(),
            head_poll: Mutex::new(()),
            signing: crate::crypto::audit_chain::SigningKeyRing::default(),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            legacy: std::sync::OnceLock::new(),
        }
    }

    /// Reads where format 1's chain ended; with `close`, closes it first if it is still open
    /// (under its lock, so no append of an older console is in flight). From then on events
    /// go to their organization's chain only.
    pub async fn open_legacy(
        &self,
        close: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::domain::audit::LegacyEnd>, StoreError> {
        let end = match audit::legacy_end(&self.db).await? {
            Some(end) => Some(end),
            None if close => {
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
                        txn.execute_unprepared(&format!(
                            "SELECT pg_advisory_xact_lock({CHAIN_LOCK})"
                        ))
                        .await?;
                        txn
                    }
                };
                let end = audit::close_legacy(&txn, self.chain_keys.current(), now).await?;
                txn.commit().await?;
                Some(end)
            }
            None => None,
        };
        if let Some(end) = &end {
            let _ = self.legacy.set(end.clone());
        }
        Ok(end)
    }

    /// Every how many events of a chain its head is checkpointed (0: only on the interval).
    pub fn with_checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events;
        self
    }

    /// The keys that sign new events into their organizations' chains.
    pub fn with_signing_keys(mut self, keys: crate::crypto::audit_chain::SigningKeyRing) -> Self {
        self.signing = keys;
        self
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
                // Stamped before the query, so a slow one does not stretch how stale reads may be.
                let asked = Instant::now();
                let version = audit::version(&self.db).await?;
                self.cache.polled(version, asked);
            }
        }
        Ok(self.cache.tag())
    }

    /// Opens a write transaction that holds `locks` until it ends. Writers wait in this
    /// process first (for the same organization, or on SQLite for anyone), rather than each
    /// holding a pooled connection while it waits for the database's lock.
    async fn begin(&self, locks: Locks) -> Result<Write<'_>, StoreError> {
        if self.damaged.load(Ordering::SeqCst) {
            return Err(StoreError::Damaged(
                "writes stopped: the file is damaged".into(),
            ));
        }
        let sqlite = self.db.get_database_backend() == DatabaseBackend::Sqlite;
        // Until format 1's chain closes, every audited write appends to it: one lock.
        let single = !sqlite && self.legacy.get().is_none() && locks != Locks::Quiet;
        let mut local = Vec::new();
        if sqlite || single {
            local.push(self.local_writers.lock().await);
        } else if let Locks::Chains(names) = &locks {
            let mut stripes: Vec<usize> = names.iter().map(|n| stripe_of(n)).collect();
            stripes.sort_unstable();
            stripes.dedup();
            for stripe in stripes {
                local.push(self.local_chains[stripe].lock().await);
            }
        }
        let txn = if sqlite {
            self.db
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..TransactionOptions::default()
                })
                .await?
        } else {
            let txn = self.db.begin().await?;
            // A writer stuck while holding a lock must not hang every other one: the wait is
            // bounded, and a write that times out is a lost race (retried, then 503).
            txn.execute_unprepared("SET LOCAL lock_timeout = '5s'")
                .await?;
            match &locks {
                _ if single => {
                    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CHAIN_LOCK})"))
                        .await?;
                }
                Locks::Chains(names) => {
                    for name in names {
                        lock_named(&txn, &format!("chain:{name}")).await?;
                    }
                }
                Locks::Quiet => {}
            }
            txn
        };
        Ok(Write {
            txn,
            _local: local,
            key: self.chain_keys.current(),
            signing: self.signing.get(),
            checkpoint_every: self.checkpoint_every,
            legacy: self.legacy.get(),
        })
    }
}

/// Local queues of writers on PostgreSQL, by organization (a hash of its name picks one).
const LOCAL_STRIPES: usize = 64;

fn stripe_of(name: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    (hasher.finish() % LOCAL_STRIPES as u64) as usize
}

impl Write<'_> {
    /// Appends the events and commits everything written in this transaction.
    async fn commit_with(self, events: Vec<AuditDraft>) -> Result<(), StoreError> {
        for event in events {
            audit::append(
                &self.txn,
                event,
                self.key,
                &self.signing,
                self.checkpoint_every,
                self.legacy,
            )
            .await?;
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
}
