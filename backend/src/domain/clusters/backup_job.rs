//! The `backup` job: copies the objects of a `creating` backup page by page, re-sealed under
//! the backup's data key, then makes it available (or failed) and releases its cluster.
//!
//! - Durable: the job row was written with the backup (`start_backup`); whichever instance
//!   leases it runs it, and one that dies leaves the lease to lapse and the job to resume from
//!   the first object not recorded as copied.
//! - Bounded: a round copies for at most `SLICE` and then gives the job back (due at once),
//!   so a large backup never holds a worker round for long, and backups take turns.
//! - Flat memory: a page of `PAGE` index rows at a time, each object streamed.
//! - Held by one instance: a heartbeat renews the lease while the job runs, and an instance
//!   whose lease went to another (it stalled past it) stops at its next object.
//! - A copy written but not recorded (a crash between the two) names no row: the storage
//!   sweeper removes it after its grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::keyring::ClusterKeys;
use super::lifecycle::{PLATFORM_KEY, public_text, wrong_state};
use super::objects::{bound_name, open_sealed, storage_error, write_sealed};
use super::service::Clusters;
use super::{Backup, BackupState, Cluster, ClusterRegion, StoredObject};
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::clock::Clock;
use crate::domain::error::Rule;
use crate::domain::identity::{Caller, Role};
use crate::domain::jobs::{Job, JobKind};
use crate::domain::keys::KeyStatus;
use crate::domain::kms::PlaintextKey;
use crate::domain::ports::BackupCopy;
use crate::domain::ports::JobStore;

/// Index rows read at a time.
pub(super) const PAGE: u64 = 64;
/// How long one round copies before giving the job back.
pub(super) const SLICE: Duration = Duration::from_secs(20);
/// A job's lease; renewed by its heartbeat every third of it.
pub(super) const LEASE: chrono::Duration = chrono::Duration::minutes(2);
/// Attempts after a passing fault (storage or KMS unreachable) before the job fails.
pub(super) const MAX_ATTEMPTS: i32 = 8;

/// What a round of the `backups` worker did, backups and restores together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Objects copied.
    pub copied: usize,
    /// Jobs that ended with their backup (or restored cluster) available.
    pub available: usize,
    pub failed: usize,
}

impl BackupReport {
    pub(super) fn ended(&mut self, failed: bool) {
        if failed {
            self.failed += 1;
        } else {
            self.available += 1;
        }
    }
}

/// Copies made and not yet recorded. They are recorded at the latest `RECORD_WITHIN` after
/// the first of them was finished (or once there are `PAGE` of them): the storage sweeper
/// removes only what it found orphaned at least an interval (a second or more) earlier, so a
/// copy is never unrecorded for long enough to be taken for an orphan.
pub(super) struct Pending<T = BackupCopy> {
    items: Vec<T>,
    since: Option<Instant>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            since: None,
        }
    }
}

/// See `Pending`.
pub(super) const RECORD_WITHIN: Duration = Duration::from_millis(500);

impl<T> Pending<T> {
    pub(super) fn push(&mut self, item: T) {
        self.since.get_or_insert_with(Instant::now);
        self.items.push(item);
    }

    pub(super) fn due(&self) -> bool {
        self.items.len() >= PAGE as usize
            || self.since.is_some_and(|t| t.elapsed() >= RECORD_WITHIN)
    }

    pub(super) fn take(&mut self) -> Vec<T> {
        self.since = None;
        std::mem::take(&mut self.items)
    }
}

/// Keeps a long job's lease alive while it runs, renewing it every third of the lease from a
/// task of its own (so one large object's copy never outlasts the lease); once a renewal is
/// refused (the lease lapsed and went to another holder) `lost()` says so, and the job stops
/// at its next object. Stopped when dropped.
pub(super) struct Heartbeat {
    lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    pub(super) fn start(jobs: Arc<dyn JobStore>, clock: Arc<dyn Clock>, job: Job) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let every = (LEASE / 3).to_std().unwrap_or(Duration::from_secs(40));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match jobs.renew_job(&job, clock.now() + LEASE).await {
                    Ok(true) => {}
                    Ok(false) => {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, job = %job.id, "a job's lease could not be renewed; trying again");
                    }
                }
            }
        });
        Self { lost, task }
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How far a run of a job got.
pub(super) enum Run {
    /// Every object is copied.
    Done,
    /// The round's share is used up: the job goes back to the queue.
    Paused,
    /// The backup stopped being `creating`, or the lease went to another holder.
    Stopped,
}

/// A fault that may pass (the storage or the KMS could not be reached, the database
/// failed): retried with back-off. Anything else fails the backup at once.
pub(super) fn passing(err: &DomainError) -> bool {
    match err {
        DomainError::Storage(_) | DomainError::Store(_) | DomainError::Overloaded { .. } => true,
        DomainError::KeyUnusable { failures, .. } => failures
            .iter()
            .all(|f| f.error.key_status() == KeyStatus::Unreachable),
        _ => false,
    }
}

pub(super) fn backoff(attempts: i32) -> chrono::Duration {
    chrono::Duration::seconds(2_i64 << attempts.clamp(0, 8)).min(chrono::Duration::minutes(5))
}

impl Clusters {
    /// Tells this process's `backups` worker that a backup was queued.
    pub(super) fn wake_backups(&self) {
        self.backups_queued.notify_one();
    }

    /// Resolves when this process queued a backup (or at once if one was queued since the
    /// last wait).
    pub async fn backups_queued(&self) {
        self.backups_queued.notified().await;
    }

    /// Runs the backup and restore jobs that are due, one at a time, for at most a slice in
    /// all.
    pub async fn run_due_backups(&self) -> Result<BackupReport, DomainError> {
        let started = Instant::now();
        let mut report = BackupReport::default();
        while started.elapsed() < SLICE {
            let Some(job) = self.next_copy_job().await? else {
                break;
            };
            match job.kind {
                JobKind::Restore => self.run_restore_job(&job, started, &mut report).await?,
                _ => self.run_backup_job(&job, started, &mut report).await?,
            }
        }
        Ok(report)
    }

    /// The next due backup job, else the next due restore job, leased.
    async fn next_copy_job(&self) -> Result<Option<Job>, DomainError> {
        for kind in [JobKind::Backup, JobKind::Restore] {
            let now = self.clock.now();
            let leased = self.jobs.lease_jobs(kind, now, now + LEASE, 1).await?;
            if let Some(job) = leased.into_iter().next() {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn run_backup_job(
        &self,
        job: &Job,
        started: Instant,
        report: &mut BackupReport,
    ) -> Result<(), DomainError> {
        let parts = &self.parts;
        let backup = parts
            .store
            .backup(job.organization_id, job.subject)
            .await?
            .filter(|b| b.state == BackupState::Creating);
        let Some(backup) = backup else {
            // Ended or deleted meanwhile: nothing left to do.
            return Ok(self.jobs.finish_job(job).await?);
        };
        let run = self.copy_backup(job, &backup, started, report).await;
        if let Some(failure) = self.settle(job, "backup", run).await? {
            let failed = failure.is_some();
            if self.end_backup(&backup, failure).await? {
                report.ended(failed);
            }
        }
        Ok(())
    }

    /// What a run of a copying job leads to. Given back (its share of the round used up),
    /// left (another holder has it), or retried later (a fault that may pass): `None`. To be
    /// ended: `Some(None)` when every object is copied, `Some(Some(why))` when it failed.
    pub(super) async fn settle(
        &self,
        job: &Job,
        what: &'static str,
        run: Result<Run, DomainError>,
    ) -> Result<Option<Option<String>>, DomainError> {
        match run {
            Ok(Run::Done) => Ok(Some(None)),
            Ok(Run::Paused) => {
                self.jobs.release_job(job, self.clock.now()).await?;
                Ok(None)
            }
            Ok(Run::Stopped) => Ok(None),
            Err(err) if passing(&err) && job.attempts + 1 < MAX_ATTEMPTS => {
                let why = public_text(&err);
                tracing::warn!(what, subject = %job.subject, attempts = job.attempts + 1, error = %why, "a copying job could not go on; it will be retried");
                let due = self.clock.now() + backoff(job.attempts);
                self.jobs.retry_job(job, due, &why).await?;
                Ok(None)
            }
            Err(err) => {
                let why = public_text(&err);
                tracing::warn!(what, subject = %job.subject, error = %why, "a copying job failed");
                Ok(Some(Some(why)))
            }
        }
    }

    /// Copies the objects not copied yet, page by page, until none is left or the slice is
    /// used up.
    async fn copy_backup(
        &self,
        job: &Job,
        backup: &Backup,
        started: Instant,
        report: &mut BackupReport,
    ) -> Result<Run, DomainError> {
        let parts = &self.parts;
        let cluster = parts
            .store
            .cluster(backup.organization_id, backup.cluster_id)
            .await?
            .ok_or_else(|| DomainError::Conflict {
                rule: Rule::BackupState,
                field: None,
                detail: "The cluster was deleted before the backup was taken.".into(),
            })?;
        let keys = self.serving_keys(&cluster).await.map_err(|err| match err {
            DomainError::Conflict { .. } => wrong_state(
                &cluster,
                "the backup needs it available until every object is copied",
            ),
            other => other,
        })?;
        let primary = cluster
            .regions
            .iter()
            .find(|r| r.region == backup.region.region)
            .cloned()
            .ok_or_else(|| DomainError::Integrity("the backup's region left the cluster".into()))?;
        let backup_key = self.backup_key(backup, "take the backup").await?;
        let heartbeat = Heartbeat::start(self.jobs.clone(), self.clock.clone(), job.clone());
        let mut pending: Pending = Pending::default();
        loop {
            // Everything copied is recorded before the next page is read (which would
            // otherwise hand out again what is copied but not yet recorded).
            if !matches!(
                self.record_copies(backup, &mut pending, report, Run::Done)
                    .await?,
                Run::Done
            ) {
                return Ok(Run::Stopped);
            }
            if started.elapsed() >= SLICE {
                return Ok(Run::Paused);
            }
            let page = parts.store.backup_objects_to_copy(backup.id, PAGE).await?;
            if page.is_empty() {
                return Ok(Run::Done);
            }
            for object in &page {
                let copy = self
                    .copy_object(&cluster, &keys, &primary, backup, &backup_key, object)
                    .await;
                let copy = match copy {
                    Ok(copy) => copy,
                    Err(err) => {
                        // What was copied is recorded; the rest is copied again.
                        self.record_copies(backup, &mut pending, report, Run::Stopped)
                            .await?;
                        return Err(err);
                    }
                };
                pending.push(copy);
                if heartbeat.lost() {
                    // Another holder took the job over: what this one copied is recorded
                    // (a row already copied by the other is left as it is), and it stops.
                    return self
                        .record_copies(backup, &mut pending, report, Run::Stopped)
                        .await;
                }
                if !parts.ring.holds(cluster.id) {
                    // Paused, made inaccessible or deleted meanwhile: its keys were dropped.
                    self.record_copies(backup, &mut pending, report, Run::Stopped)
                        .await?;
                    return Err(wrong_state(
                        &cluster,
                        "it stopped serving data before every object was copied",
                    ));
                }
                if pending.due() {
                    let go_on = self
                        .record_copies(backup, &mut pending, report, Run::Done)
                        .await?;
                    if !matches!(go_on, Run::Done) {
                        return Ok(go_on);
                    }
                }
            }
        }
    }

    /// Records the copies made and not yet recorded; `then` if they were, `Stopped` (and the
    /// copies deleted) when the backup is no longer `creating`.
    async fn record_copies(
        &self,
        backup: &Backup,
        pending: &mut Pending,
        report: &mut BackupReport,
        then: Run,
    ) -> Result<Run, DomainError> {
        let copies = pending.take();
        if copies.is_empty() {
            return Ok(then);
        }
        if !self
            .parts
            .store
            .record_backup_copies(backup.id, &copies)
            .await?
        {
            for copy in &copies {
                let _ = self.parts.blobs.delete(&backup.blob(copy.version)).await;
            }
            return Ok(Run::Stopped);
        }
        report.copied += copies.len();
        Ok(then)
    }

    /// The backup's data key, unwrapped through the key that wrapped it; refused with what
    /// the KMS said (`action` names what needed it).
    pub(super) async fn backup_key(
        &self,
        backup: &Backup,
        action: &'static str,
    ) -> Result<PlaintextKey, DomainError> {
        let context = Self::data_key_context(
            backup.organization_id,
            backup.project_id,
            backup.id,
            &backup.region.region,
            "backup",
        );
        match self
            .unwrap_data_key(backup.organization_id, &backup.region, &context)
            .await?
        {
            Ok(key) => Ok(key),
            Err(failed) => Err(DomainError::KeyUnusable {
                action,
                failures: vec![failed],
            }),
        }
    }

    /// Re-seals one object of the snapshot from the cluster's primary copy under the
    /// backup's data key.
    async fn copy_object(
        &self,
        cluster: &Cluster,
        keys: &Arc<ClusterKeys>,
        primary: &ClusterRegion,
        backup: &Backup,
        backup_key: &PlaintextKey,
        object: &StoredObject,
    ) -> Result<BackupCopy, DomainError> {
        let parts = &self.parts;
        let source = parts
            .blobs
            .read(&cluster.blob(&primary.region, object.version))
            .await
            .map_err(storage_error)?;
        let plain = open_sealed(
            source,
            keys.clone(),
            primary.region.clone(),
            cluster.id,
            bound_name(object.version, object.name.as_str()),
        );
        let version = uuid::Uuid::now_v7();
        let size_bytes = write_sealed(
            parts.blobs.as_ref(),
            &[(backup.blob(version), backup_key)],
            backup.id,
            &bound_name(version, object.name.as_str()),
            plain,
            None,
            Some(keys),
        )
        .await?;
        Ok(BackupCopy {
            name: object.name.clone(),
            version,
            size_bytes,
        })
    }

    /// Ends the backup (available, or failed with `failure`), audited as the console's own
    /// act, and deletes what the cluster kept for it (and, when it failed, its copies).
    /// False when it had already ended.
    async fn end_backup(
        &self,
        backup: &Backup,
        failure: Option<String>,
    ) -> Result<bool, DomainError> {
        let parts = &self.parts;
        // The progress as recorded (this job is the only writer of it).
        let done = parts
            .store
            .backup(backup.organization_id, backup.id)
            .await?
            .unwrap_or_else(|| backup.clone());
        let system = Caller::system(backup.organization_id, Role::Owner);
        let now = self.clock.now();
        let target = format!("backup/{}", backup.id);
        let audit = match &failure {
            None => AuditDraft::by(&system, now, "backup.created", target).detail(json!({
                "cluster_id": backup.cluster_id,
                "region": backup.region.region.as_str(),
                "key": backup.region.key_ref.as_deref().unwrap_or(PLATFORM_KEY),
                "objects": done.objects_copied,
                "size_bytes": done.size_bytes,
                "requested_by": backup.created_by,
            })),
            Some(why) => AuditDraft::by(&system, now, "backup.failed", target)
                .outcome(Outcome::Failure)
                .detail(json!({
                    "cluster_id": backup.cluster_id,
                    "error": why,
                    "requested_by": backup.created_by,
                })),
        }
        .in_project(backup.project_id);
        let failed = failure.is_some();
        let Some(kept) = parts.store.end_backup(backup, failure, now, audit).await? else {
            return Ok(false);
        };
        if !kept.is_empty()
            && let Some(cluster) = parts
                .store
                .cluster(backup.organization_id, backup.cluster_id)
                .await?
        {
            self.delete_versions(&cluster, &kept).await;
        }
        if failed && let Err(err) = parts.blobs.delete_prefix(&backup.prefix()).await {
            tracing::warn!(error = %err, backup = %backup.id, "could not delete a failed backup's copies; the storage sweeper will");
        }
        Ok(true)
    }
}
