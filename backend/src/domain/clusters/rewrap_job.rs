//! The `rewrap` job: moves the data keys of a key change (`keys::rewrap`) to the target key,
//! a page at a time, while the clusters serve.
//!
//! - Each data key is unwrapped from memory when this process serves its cluster (the ring
//!   holds it), else through the old key, and wrapped by the target key under the same
//!   context; `CONCURRENCY` of them at a time, as a client of the KMS would.
//! - A page's swaps are recorded in one transaction, each only where the stored wrapped key is
//!   still the one read, each with its audit event: a crash, a lapsed lease or a second
//!   instance never loses a data key or moves one twice.
//! - A KMS that cannot be reached (or throttles) is waited out with back-off, like the backup
//!   job's faults; a KMS that refuses (the old key disabled, the new one not granted) gives
//!   up on that data key: it is listed with the KMS's answer, stays as it was, and the change
//!   ends `failed` with a `key.rewrap_failed` alert.
//! - The change ends only when nothing is left to move, checked in the transaction that ends
//!   it (a backup taken meanwhile under the old key keeps it going).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;

use super::backup_job::{Heartbeat, LEASE, PAGE, SLICE, backoff};
use super::service::Clusters;
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::identity::{Caller, Role};
use crate::domain::jobs::{Job, JobKind};
use crate::domain::keys::rewrap::{DataKeySwap, DataKeyToMove, Rewrap, RewrapFailure, RewrapState};
use crate::domain::keys::{EncryptionKey, KeyStatus};
use crate::domain::kms::{EncryptionContext, KeyProvider, KmsError, PlaintextKey};
use crate::domain::notice::{Notice, RewrapAlert};
use crate::domain::ports::DataKeyRow;

/// Data keys in flight at once (unwrap, wrap, and the check that the new form unwraps).
pub const CONCURRENCY: usize = 8;
/// Rounds a change may fail (a KMS that cannot be reached, the console's own faults) before
/// what is left is given up on: with the back-off (2 s doubling, at most 5 minutes) about
/// an hour of waiting.
const MAX_ATTEMPTS: i32 = 16;

/// What a round of the `rewraps` worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Data keys moved.
    pub moved: usize,
    /// Data keys given up on.
    pub failed: usize,
    /// Changes that ended (done or failed).
    pub ended: usize,
}

/// How a round of one change ended.
enum Round {
    /// Nothing left to move.
    Done,
    /// The round's share is used up.
    Paused,
    /// The lease went to another holder.
    Stopped,
    /// The KMS could not be reached for some data keys: back off.
    Unreachable(String),
}

/// A data key that could not be moved, why, and whether it was the check that the new
/// wrapped form unwraps that failed.
struct NotMoved {
    item: DataKeyToMove,
    error: KmsError,
    at_verify: bool,
}

/// One data key's move, or why it could not be made.
type Moved = Result<DataKeySwap, Box<NotMoved>>;

fn not_moved(item: DataKeyToMove, error: KmsError, at_verify: bool) -> Moved {
    Err(Box::new(NotMoved {
        item,
        error,
        at_verify,
    }))
}

fn passing(error: &KmsError) -> bool {
    error.key_status() == KeyStatus::Unreachable
}

/// Worth another round: a KMS that cannot be reached, or an access refusal while a grant
/// made for the change may still be propagating (`CMEK_KEY_TEST_PROPAGATION` from its start).
fn retryable(error: &KmsError, propagating: bool) -> bool {
    passing(error) || (propagating && matches!(error, KmsError::AccessDenied { .. }))
}

impl Clusters {
    /// Runs the due key changes, one at a time, for at most a slice in all.
    pub async fn run_due_rewraps(&self) -> Result<RewrapReport, DomainError> {
        let started = Instant::now();
        let mut report = RewrapReport::default();
        while started.elapsed() < SLICE {
            let now = self.clock.now();
            let leased = self
                .jobs
                .lease_jobs(JobKind::Rewrap, now, now + LEASE, 1)
                .await?;
            let Some(job) = leased.into_iter().next() else {
                break;
            };
            self.run_rewrap_job(&job, started, &mut report).await?;
        }
        Ok(report)
    }

    async fn run_rewrap_job(
        &self,
        job: &Job,
        started: Instant,
        report: &mut RewrapReport,
    ) -> Result<(), DomainError> {
        let store = &self.parts.store;
        let rewrap = store
            .rewrap(job.organization_id, job.subject)
            .await?
            .filter(|r| r.state == RewrapState::Rewrapping);
        let Some(mut rewrap) = rewrap else {
            return Ok(self.jobs.finish_job(job).await?);
        };
        let from = self
            .keys
            .key(job.organization_id, rewrap.from_key_id)
            .await?;
        let to = self.keys.key(job.organization_id, rewrap.to_key_id).await?;
        let heartbeat = Heartbeat::start(self.jobs.clone(), self.clock.clone(), job.clone());
        let round = match (from, to) {
            (Some(from), Some(to)) => {
                self.move_data_keys(job, &mut rewrap, &from, &to, started, &heartbeat, report)
                    .await
            }
            // A key is gone (deleted by an operator behind the console's back): nothing can
            // be moved; everything left is listed as failed.
            _ => {
                self.give_up_on_all(
                    &mut rewrap,
                    report,
                    "KeyNotFound",
                    "the key was deleted from the console during the change",
                )
                .await
            }
        };
        drop(heartbeat);
        match round {
            Ok(Round::Done) => self.end_rewrap(job, &rewrap, report).await,
            Ok(Round::Paused) => Ok(self.jobs.release_job(job, self.clock.now()).await?),
            Ok(Round::Stopped) => Ok(()),
            Ok(Round::Unreachable(why)) => {
                tracing::warn!(rewrap = %rewrap.id, attempts = job.attempts + 1, error = %why, "a key change could not reach the KMS; it will be retried");
                let due = self.clock.now() + backoff(job.attempts);
                Ok(self.jobs.retry_job(job, due, &why).await?)
            }
            Err(err) if job.attempts + 1 < MAX_ATTEMPTS => {
                let why = super::lifecycle::public_text(&err);
                tracing::warn!(rewrap = %rewrap.id, error = %why, "a key change could not go on; it will be retried");
                let due = self.clock.now() + backoff(job.attempts);
                Ok(self.jobs.retry_job(job, due, &why).await?)
            }
            // It kept failing: what is left is given up on, the change ends failed and alerts.
            Err(err) => {
                let why = super::lifecycle::public_text(&err);
                tracing::warn!(rewrap = %rewrap.id, error = %why, "a key change failed");
                self.give_up_on_all(&mut rewrap, report, "ChangeFailed", &why)
                    .await?;
                self.end_rewrap(job, &rewrap, report).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn move_data_keys(
        &self,
        job: &Job,
        rewrap: &mut Rewrap,
        from: &EncryptionKey,
        to: &EncryptionKey,
        started: Instant,
        heartbeat: &Heartbeat,
        report: &mut RewrapReport,
    ) -> Result<Round, DomainError> {
        let old = self.provider_for(&from.key_ref)?;
        let new = self.provider_for(&to.key_ref)?;
        let store = &self.parts.store;
        let to_ref = to.key_ref.display();
        // Waited out so far: give up on unreachable data keys only after the last attempt.
        let last_attempt = job.attempts + 1 >= MAX_ATTEMPTS;
        let propagating = self.clock.now()
            < rewrap.started_at
                + chrono::Duration::from_std(self.key_service.propagation).unwrap_or_default();
        loop {
            if heartbeat.lost() {
                return Ok(Round::Stopped);
            }
            if rewrap.target_version.is_none() {
                match self.current_version(new.as_ref(), to, rewrap).await {
                    Ok(Some(version)) => rewrap.target_version = Some(version),
                    Err(error) if retryable(&error, propagating) && !last_attempt => {
                        return Ok(Round::Unreachable(error.to_string()));
                    }
                    // A re-wrap under the same key moves what another version wrapped: without
                    // the current version it could not tell what is left, so it stops here.
                    Ok(None) if !rewrap.replaces() => {
                        return self
                            .give_up_on_all(
                                rewrap,
                                report,
                                "NoKeyVersion",
                                "the KMS names no key version, so there is nothing to re-wrap to",
                            )
                            .await;
                    }
                    Err(error) if !rewrap.replaces() => {
                        return self
                            .give_up_on_all(rewrap, report, error.code(), &error.to_string())
                            .await;
                    }
                    // A replacement: a refusal shows on each data key below.
                    Ok(None) | Err(_) => {}
                }
            }
            let page = store.data_keys_to_move(rewrap, PAGE).await?;
            if page.is_empty() {
                return Ok(Round::Done);
            }
            // The new key must unwrap what it wrapped: checked for the first data keys of the
            // change's first page, and for at least one of every page (the first move that
            // gets that far checks; later ones skip once one passed). A key policy or role
            // that lets the platform encrypt but not decrypt fails there, and its page with it.
            let first_page = rewrap.done == 0 && rewrap.failed == 0;
            let checked = AtomicBool::new(false);
            let mut moves: Vec<Moved> = futures_util::stream::iter(page.into_iter().enumerate())
                .map(|(i, item)| {
                    let always = first_page && i < CONCURRENCY;
                    self.move_one(
                        rewrap,
                        old.clone(),
                        new.clone(),
                        from,
                        to,
                        item,
                        always,
                        &checked,
                    )
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let refused = moves
                .iter()
                .filter_map(|m| match m {
                    Err(failed) if failed.at_verify && !retryable(&failed.error, propagating) => {
                        Some((failed.item.row.label(), failed.error.clone()))
                    }
                    _ => None,
                })
                .min_by(|a, b| a.0.cmp(&b.0));
            let unchecked = !checked.load(Ordering::SeqCst) && moves.iter().any(Result::is_ok);
            let mut unverified = None;
            if let Some((_, error)) = refused {
                // The new key refused to give back what it wrapped: nothing of the page moves.
                moves = moves
                    .into_iter()
                    .map(|m| match m {
                        Ok(swap) => not_moved(
                            DataKeyToMove {
                                row: swap.row,
                                project_id: rewrap.project_id,
                                region: from.region.clone(),
                                wrapped: swap.old,
                            },
                            error.clone(),
                            true,
                        ),
                        failed => failed,
                    })
                    .collect();
            } else if unchecked {
                // No check could run (it met a KMS that could not be reached): the page's
                // swaps wait for another round rather than go unchecked.
                moves.retain(Result::is_err);
                unverified = Some("the new key's check could not run".to_owned());
            }
            let now = self.clock.now();
            let system = Caller::system(rewrap.organization_id, Role::Owner);
            let mut swaps = Vec::new();
            let mut failures = Vec::new();
            let mut unreachable = unverified;
            for moved in moves {
                match moved {
                    Ok(swap) => {
                        // Rotated meanwhile: the version new wraps get is the target now.
                        if !rewrap.replaces() && swap.version != rewrap.target_version {
                            rewrap.target_version = swap.version.clone();
                        }
                        let event = swap_event(&system, now, rewrap, from, &swap);
                        swaps.push((swap, event));
                    }
                    Err(failed) if retryable(&failed.error, propagating) && !last_attempt => {
                        unreachable = Some(failed.error.to_string());
                    }
                    Err(failed) => {
                        let NotMoved { item, error, .. } = *failed;
                        failures.push((
                            item.row,
                            item.wrapped,
                            RewrapFailure {
                                data_key: String::new(),
                                code: error.code().to_owned(),
                                message: error.to_string(),
                                at: now,
                            },
                        ));
                    }
                }
            }
            for (row, _, failure) in &mut failures {
                failure.data_key = row.label();
            }
            let moved = store
                .record_rewrap(rewrap, &to_ref, swaps, &failures)
                .await?;
            report.moved += moved as usize;
            report.failed += failures.len();
            rewrap.done += moved;
            rewrap.failed += u32::try_from(failures.len()).unwrap_or(u32::MAX);
            if let Some(why) = unreachable {
                return Ok(Round::Unreachable(why));
            }
            if started.elapsed() >= SLICE {
                return Ok(Round::Paused);
            }
        }
    }

    /// The version the target key wraps with now, learned by wrapping a throwaway key.
    async fn current_version(
        &self,
        provider: &dyn KeyProvider,
        to: &EncryptionKey,
        rewrap: &Rewrap,
    ) -> Result<Option<String>, KmsError> {
        let probe = PlaintextKey::random();
        let context = EncryptionContext::default()
            .with("organization_id", rewrap.organization_id.to_string())
            .with("project_id", rewrap.project_id.to_string())
            .with("purpose", "rewrap-probe");
        let wrapped = provider
            .wrap_data_key(&to.key_ref, &probe, &context)
            .await?;
        Ok(provider.wrapped_version(&to.key_ref, &wrapped))
    }

    /// Unwraps one data key (from memory when this process serves its cluster) and wraps it
    /// by the target key under the same context; with `verify`, unwraps the new form too and
    /// compares.
    #[allow(clippy::too_many_arguments)]
    async fn move_one(
        &self,
        rewrap: &Rewrap,
        old: Arc<dyn KeyProvider>,
        new: Arc<dyn KeyProvider>,
        from: &EncryptionKey,
        to: &EncryptionKey,
        item: DataKeyToMove,
        always: bool,
        checked: &AtomicBool,
    ) -> Moved {
        let (owner, purpose) = match &item.row {
            DataKeyRow::ClusterRegion { cluster_id, .. } => (*cluster_id, "cluster-data"),
            DataKeyRow::Backup { id } => (*id, "backup"),
        };
        let context = Self::data_key_context(
            rewrap.organization_id,
            item.project_id,
            owner,
            &item.region,
            purpose,
        );
        let held = match &item.row {
            DataKeyRow::ClusterRegion { cluster_id, .. } => self.parts.ring.get(*cluster_id),
            DataKeyRow::Backup { .. } => None,
        };
        let in_memory = held.as_ref().and_then(|keys| keys.get(&item.region));
        let unwrapped;
        let plaintext = match in_memory {
            Some(key) => key,
            None => {
                self.parts
                    .kms_calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match old
                    .decrypt_data_key(&from.key_ref, &item.wrapped, &context)
                    .await
                {
                    Ok(key) => {
                        unwrapped = key;
                        &unwrapped
                    }
                    Err(error) => return not_moved(item, error, false),
                }
            }
        };
        self.parts
            .kms_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wrapped = match new.wrap_data_key(&to.key_ref, plaintext, &context).await {
            Ok(wrapped) => wrapped,
            Err(error) => return not_moved(item, error, false),
        };
        // The new form must unwrap to the same key before it replaces the old one: once the
        // old key goes, it is the only way back to the data.
        if always || !checked.load(Ordering::SeqCst) {
            self.parts
                .kms_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match new.decrypt_data_key(&to.key_ref, &wrapped, &context).await {
                Ok(back) if back.same_as(plaintext) => checked.store(true, Ordering::SeqCst),
                Ok(_) => {
                    let error = KmsError::Other {
                        code: "RewrapVerifyFailed".into(),
                        message:
                            "the data key wrapped by the new key did not unwrap to the same key"
                                .into(),
                    };
                    return not_moved(item, error, true);
                }
                Err(error) => return not_moved(item, error, true),
            }
        }
        Ok(DataKeySwap {
            version: new.wrapped_version(&to.key_ref, &wrapped),
            row: item.row,
            old: item.wrapped,
            new: wrapped,
        })
    }

    /// Nothing more can be moved (a key of the change is gone, the current version is
    /// unknown, the change kept failing): every data key left is listed as failed, why.
    async fn give_up_on_all(
        &self,
        rewrap: &mut Rewrap,
        report: &mut RewrapReport,
        code: &str,
        message: &str,
    ) -> Result<Round, DomainError> {
        let store = &self.parts.store;
        loop {
            let page = store.data_keys_to_move(rewrap, PAGE).await?;
            if page.is_empty() {
                return Ok(Round::Done);
            }
            let now = self.clock.now();
            let failures: Vec<_> = page
                .into_iter()
                .map(|item| {
                    let failure = RewrapFailure {
                        data_key: item.row.label(),
                        code: code.to_owned(),
                        message: message.to_owned(),
                        at: now,
                    };
                    (item.row, item.wrapped, failure)
                })
                .collect();
            store
                .record_rewrap(rewrap, "", Vec::new(), &failures)
                .await?;
            report.failed += failures.len();
            rewrap.failed += u32::try_from(failures.len()).unwrap_or(u32::MAX);
        }
    }

    /// Ends the change once nothing is left to move: done, or failed (with its alert) when
    /// some data keys could not be moved.
    async fn end_rewrap(
        &self,
        job: &Job,
        rewrap: &Rewrap,
        report: &mut RewrapReport,
    ) -> Result<(), DomainError> {
        let store = &self.parts.store;
        let now = self.clock.now();
        // The counts as recorded (this round's and earlier rounds').
        let recorded = store
            .rewrap(rewrap.organization_id, rewrap.id)
            .await?
            .unwrap_or_else(|| rewrap.clone());
        let mut ended = recorded.clone();
        ended.target_version = rewrap.target_version.clone();
        let system = Caller::system(rewrap.organization_id, Role::Owner);
        let state = if recorded.failed > 0 {
            RewrapState::Failed
        } else {
            RewrapState::Done
        };
        let detail = json!({
            "rewrap_id": rewrap.id,
            "to_key_id": rewrap.to_key_id,
            "total": recorded.total,
            "done": recorded.done,
            "failed": recorded.failed,
        });
        let audit = match state {
            RewrapState::Failed => AuditDraft::by(
                &system,
                now,
                "encryption_key.rewrap_failed",
                format!("encryption_key/{}", rewrap.from_key_id),
            )
            .outcome(Outcome::Failure)
            .detail(detail)
            .notifies(Some(Notice::RewrapFailed(RewrapAlert {
                rewrap_id: rewrap.id,
                project_id: rewrap.project_id,
                key_id: rewrap.from_key_id,
                to_key_id: rewrap.to_key_id,
                total: recorded.total,
                done: recorded.done,
                failed: recorded.failed,
                failures: json!(
                    recorded
                        .failures
                        .iter()
                        .take(10)
                        .map(|f| json!({"data_key": f.data_key, "code": f.code, "message": f.message}))
                        .collect::<Vec<_>>()
                ),
            }))),
            _ => AuditDraft::by(
                &system,
                now,
                "encryption_key.rewrap_done",
                format!("encryption_key/{}", rewrap.from_key_id),
            )
            .detail(detail),
        }
        .in_project(rewrap.project_id);
        if store.finish_rewrap(&ended, state, now, audit).await? {
            report.ended += 1;
            Ok(())
        } else {
            // Something was added meanwhile (a backup under the old key): another round.
            Ok(self.jobs.release_job(job, now).await?)
        }
    }
}

/// The audit event of one data key moved.
fn swap_event(
    system: &Caller,
    now: chrono::DateTime<chrono::Utc>,
    rewrap: &Rewrap,
    from: &EncryptionKey,
    swap: &DataKeySwap,
) -> AuditDraft {
    let (target, region) = match &swap.row {
        DataKeyRow::ClusterRegion { cluster_id, region } => {
            (format!("cluster/{cluster_id}"), Some(region.clone()))
        }
        DataKeyRow::Backup { id } => (format!("backup/{id}"), None),
    };
    AuditDraft::by(system, now, "data_key.rewrapped", target)
        .detail(json!({
            "rewrap_id": rewrap.id,
            "region": region,
            "from_key_id": rewrap.from_key_id,
            "from_key": from.key_ref.display(),
            "to_key_id": rewrap.to_key_id,
            "to_version": swap.version,
        }))
        .in_project(rewrap.project_id)
}
