//! The key monitor: every key is checked once per interval (across all instances: a key is
//! leased before it is checked), with bounded concurrency and jitter. The probe is the
//! checklist (describe, a data key generated and decrypted). `unreachable` is a KMS
//! availability problem and never changes what clusters do. A key that stops working
//! (access denied, disabled, pending deletion, not found) is suspected first and confirmed by
//! a second probe before anything acts on it. Recording the status queues the reconciliation
//! of the clusters using the key in the same transaction (`clusters::reaction`), which
//! applies the project's revocation policy. Every version of the key that still wraps a data
//! key is watched by the same rule.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use rand::Rng;

use super::checks;
use super::{EncryptionKey, KeyStatus};
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::identity::{Caller, Role};
use crate::domain::keys::Keys;
use crate::domain::kms::KeyProvider;
use crate::domain::notice::{KeyChange, Notice};
use crate::domain::ports::KeyVersionStatus;

/// How the monitor runs (`CMEK_KEY_CHECK_INTERVAL`, `CMEK_KEY_CHECK_CONCURRENCY`).
#[derive(Clone, Copy, Debug)]
pub struct MonitorPolicy {
    pub interval: std::time::Duration,
    pub concurrency: usize,
}

impl MonitorPolicy {
    fn interval(&self) -> Duration {
        Duration::from_std(self.interval).unwrap_or(Duration::minutes(5))
    }

    /// How soon a suspected revocation is probed again: a quarter of the interval, at most
    /// 30 s, so it is confirmed well within one interval.
    fn confirm_after(&self) -> Duration {
        (self.interval() / 4).min(Duration::seconds(30))
    }
}

/// Upper bounds (seconds) of the check latency histogram.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the monitor of this process did, for `/metrics`: checks by provider and result, and
/// how long they took.
#[derive(Debug, Default)]
pub struct MonitorStats {
    checks: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Cumulative counts per bucket of `LATENCY_BUCKETS`, then +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl MonitorStats {
    fn record(&self, provider: &'static str, result: &'static str, took: std::time::Duration) {
        if let Ok(mut checks) = self.checks.lock() {
            *checks.entry((provider, result)).or_default() += 1;
        }
        let seconds = took.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.buckets[LATENCY_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// (provider, result, count), sorted.
    pub fn by_result(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.checks
            .lock()
            .map(|c| c.iter().map(|((p, r), n)| (*p, *r, *n)).collect())
            .unwrap_or_default()
    }

    /// Cumulative bucket counts (the last is +Inf) and the sum in seconds.
    pub fn latency(&self) -> (Vec<u64>, f64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub checked: usize,
    pub changed: usize,
    pub suspected: usize,
}

#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// Nothing to record but the schedule.
    Same,
    /// Seen once; probe again soon before acting.
    Suspect(KeyStatus),
    /// Record the new status (and, for a confirmed revocation, act on clusters).
    Change(KeyStatus),
}

fn verdict(current: KeyStatus, suspected: Option<KeyStatus>, probed: KeyStatus) -> Verdict {
    if probed == current {
        Verdict::Same
    } else if !probed.is_revocation() || suspected == Some(probed) {
        Verdict::Change(probed)
    } else {
        Verdict::Suspect(probed)
    }
}

/// A change of a key's status (or of one of its versions', `version` named), recorded by
/// `by` (the monitor, or a resume that found the key working): one event shape whoever
/// records it, with the alert (`Notice::Key`) it raises when the status moved.
pub(crate) struct StatusChangeEvent<'a> {
    pub key: &'a EncryptionKey,
    pub version: Option<(&'a str, u64)>,
    pub from: KeyStatus,
    pub to: KeyStatus,
    pub message: Option<&'a str>,
}

impl StatusChangeEvent<'_> {
    pub(crate) fn audit(&self, by: &Caller, now: DateTime<Utc>) -> AuditDraft {
        let action = if self.version.is_some() {
            "encryption_key.version_status_changed"
        } else {
            "encryption_key.status_changed"
        };
        let mut detail = serde_json::json!({
            "provider": self.key.key_ref.provider().as_str(),
            "region": self.key.region.as_str(),
            "key": self.key.key_ref.display(),
            "message": self.message,
            "from": self.from.as_str(),
            "to": self.to.as_str(),
            "confirmed": self.to.is_revocation(),
        });
        if let (Some((version, data_keys)), Some(fields)) = (self.version, detail.as_object_mut()) {
            fields.insert("version".into(), version.into());
            // Unknown (0) when the change was not seen by counting what the version wraps.
            if data_keys > 0 {
                fields.insert("data_keys".into(), data_keys.into());
            }
        }
        AuditDraft::by(by, now, action, format!("encryption_key/{}", self.key.id))
            .outcome(if self.to == KeyStatus::Active {
                Outcome::Success
            } else {
                Outcome::Failure
            })
            .detail(detail)
            .in_project(self.key.project_id)
            .notifies((self.from != self.to).then(|| {
                Notice::Key(KeyChange {
                    key_id: self.key.id,
                    project_id: self.key.project_id,
                    provider: self.key.key_ref.provider().as_str(),
                    region: self.key.region.as_str().to_owned(),
                    key: self.key.key_ref.display(),
                    from: self.from.as_str(),
                    to: self.to.as_str(),
                    message: self.message.map(str::to_owned),
                    version: self
                        .version
                        .map(|(v, n)| (v.to_owned(), (n > 0).then_some(n))),
                })
            }))
    }
}

impl Keys {
    /// One sweep: leases the keys that are due, a batch at a time, and checks them
    /// `concurrency` at a time. The next batch is leased while the last probes of the one
    /// before still run, so the KMS sees a steady `concurrency` calls in flight, and the sweep
    /// goes on until no key is due (it does not wait for the next tick between batches).
    pub async fn check_due_keys(&self, policy: &MonitorPolicy) -> Result<SweepReport, DomainError> {
        let concurrency = policy.concurrency.max(1);
        let limit = u64::try_from(concurrency * 8).unwrap_or(128);
        let mut queue = std::collections::VecDeque::new();
        // Each probe is a task of its own, so probes go on while this loop waits for the next
        // lease: a probe inside its write transaction is never left unpolled while the lease
        // waits for that same write lock (which would stop the monitor for good).
        let mut in_flight = tokio::task::JoinSet::new();
        let mut more = true;
        let mut report = SweepReport::default();
        loop {
            while in_flight.len() < concurrency {
                if queue.is_empty() && more {
                    let now = self.clock.now();
                    // Long enough for the slowest probe (a few KMS calls, each bounded by its
                    // time-out) of a batch waiting behind the probes in flight.
                    let lease_until = now + Duration::minutes(2);
                    // A key just created (or checked with Check now) was checked then: its
                    // first look by the monitor is one interval later.
                    match self
                        .keys
                        .lease_due_keys(now, now - policy.interval(), lease_until, limit)
                        .await
                    {
                        Ok(batch) => {
                            more = batch.len() as u64 == limit;
                            queue.extend(batch);
                        }
                        Err(err) if report.checked == 0 && in_flight.is_empty() => {
                            return Err(err.into());
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "the key monitor could not lease more keys");
                            more = false;
                        }
                    }
                }
                match queue.pop_front() {
                    Some((key, suspected)) => {
                        let console = self.clone();
                        let policy = *policy;
                        in_flight.spawn(async move {
                            console.monitor_key(key, suspected, &policy).await
                        });
                    }
                    None => break,
                }
            }
            let outcome = match in_flight.join_next().await {
                None => break,
                Some(Ok(outcome)) => outcome,
                Some(Err(err)) => {
                    tracing::error!(error = %err, "a key check stopped unexpectedly");
                    continue;
                }
            };
            report.checked += 1;
            match outcome {
                Ok(Verdict::Same) => {}
                Ok(Verdict::Suspect(_)) => report.suspected += 1,
                Ok(Verdict::Change(_)) => report.changed += 1,
                Err(err) => tracing::warn!(error = %err, "a key check could not be recorded"),
            }
        }
        Ok(report)
    }

    async fn monitor_key(
        &self,
        key: EncryptionKey,
        suspected: Option<KeyStatus>,
        policy: &MonitorPolicy,
    ) -> Result<Verdict, DomainError> {
        let system = Caller::system(key.organization_id, Role::Auditor);
        let jitter = Duration::milliseconds(
            rand::rng().random_range(0..=policy.interval().num_milliseconds().max(10) / 10),
        );
        let next = |from: DateTime<Utc>| from + policy.interval() + jitter;
        let Ok(provider) = self.provider_for(&key.key_ref) else {
            // A provider this console does not run (turned off since): check again later.
            let now = self.clock.now();
            self.keys
                .schedule_key_check(key.id, now, next(now), None)
                .await?;
            return Ok(Verdict::Same);
        };
        let started = std::time::Instant::now();
        let checklist = checks::run(
            provider.as_ref(),
            &key.key_ref,
            &key.region,
            &self.context(&system, key.project_id),
            self.clock.now(),
            None,
        )
        .await;
        let probed = KeyStatus::from_checklist(&checklist);
        let took = started.elapsed();
        if checklist.rotation_enabled.is_some()
            && checklist.rotation_enabled != key.rotation_enabled
        {
            self.keys
                .record_rotation(key.id, checklist.rotation_enabled)
                .await?;
        }
        let message = checklist
            .first_failure()
            .map(|c| format!("{}: {}", c.title, c.detail));
        let now = self.clock.now();
        let decided = verdict(key.status, suspected, probed);
        let status_now = match decided {
            Verdict::Change(status) => status,
            _ => key.status,
        };
        // The versions in use are watched while the key itself works: a revoked key already
        // blocks everything it wrapped.
        let versions_suspected = if status_now.is_revocation() || !provider.has_versions() {
            false
        } else {
            self.monitor_versions(&system, &key, provider.as_ref())
                .await?
        };
        let mut changed = false;
        match decided {
            Verdict::Same => {}
            Verdict::Suspect(_) => {}
            Verdict::Change(status) => {
                let audit = StatusChangeEvent {
                    key: &key,
                    version: None,
                    from: key.status,
                    to: status,
                    message: message.as_deref(),
                }
                .audit(&system, now);
                // The reaction is queued with the status, in one transaction.
                self.keys
                    .update_key_status(key.id, status, now, message.clone(), audit)
                    .await?;
                changed = true;
            }
        }
        let (next_at, suspect) = match decided {
            Verdict::Suspect(status) => (now + policy.confirm_after(), Some(status)),
            _ if versions_suspected => (now + policy.confirm_after(), None),
            _ => (next(now), None),
        };
        self.keys
            .schedule_key_check(key.id, now, next_at, suspect)
            .await?;
        // Counted once recorded and scheduled: whoever waits for a check (a test moving the
        // clock, say) then sees its next time fixed from this probe's own now.
        self.monitor_checks
            .record(key.key_ref.provider().as_str(), probed.as_str(), took);
        if changed {
            self.wake_reactions();
        }
        Ok(decided)
    }

    /// Probes each version of the key that still wraps a data key (beyond the key itself),
    /// recording a change by the key's own rule: a revocation only once a second probe
    /// confirms it, a return to `active` at once. True when a version awaits confirmation.
    async fn monitor_versions(
        &self,
        system: &Caller,
        key: &EncryptionKey,
        provider: &dyn KeyProvider,
    ) -> Result<bool, DomainError> {
        let itself = key.key_ref.display();
        let mut awaiting = false;
        let in_use = self.jobs.versions_in_use(key.id).await?;
        // What was seen of versions nothing uses any more is no longer news.
        let names: Vec<String> = in_use.iter().map(|(v, _, _)| v.clone()).collect();
        self.jobs.forget_versions_not_in(key.id, &names).await?;
        for (version, data_keys, known) in in_use {
            if version == itself {
                continue;
            }
            let (probed, message) = match provider.version_state(&key.key_ref, &version).await {
                Ok(state) => {
                    let status = state.status_at(self.clock.now());
                    let why = (status != KeyStatus::Active).then(|| {
                        if state.enabled {
                            "the version is expired or not yet valid".to_owned()
                        } else {
                            "the version is disabled".to_owned()
                        }
                    });
                    (status, why)
                }
                Err(err) => (err.key_status(), Some(format!("{}: {err}", err.code()))),
            };
            let current = known.as_ref().map_or(KeyStatus::Active, |k| k.status);
            let suspected = known.as_ref().and_then(|k| k.suspected);
            let now = self.clock.now();
            let record = |status: KeyStatus, suspected: Option<KeyStatus>| KeyVersionStatus {
                key_id: key.id,
                version: version.clone(),
                status,
                suspected,
                last_checked_at: Some(now),
                last_error: message.clone(),
            };
            match verdict(current, suspected, probed) {
                Verdict::Same if suspected.is_none() && known.is_some() => {}
                Verdict::Same => {
                    self.jobs
                        .record_version_status(key.organization_id, record(current, None), None)
                        .await?;
                }
                Verdict::Suspect(status) => {
                    awaiting = true;
                    self.jobs
                        .record_version_status(
                            key.organization_id,
                            record(current, Some(status)),
                            None,
                        )
                        .await?;
                }
                Verdict::Change(status) => {
                    let audit = StatusChangeEvent {
                        key,
                        version: Some((&version, data_keys)),
                        from: current,
                        to: status,
                        message: message.as_deref(),
                    }
                    .audit(system, now);
                    self.jobs
                        .record_version_status(
                            key.organization_id,
                            record(status, None),
                            Some(audit),
                        )
                        .await?;
                    self.wake_reactions();
                }
            }
        }
        Ok(awaiting)
    }

    /// How many keys the monitor of this process has checked.
    pub fn monitor_checks(&self) -> u64 {
        self.monitor_checks.total()
    }

    /// Keys per status across the database, for `/metrics`.
    pub async fn key_status_counts(&self) -> Result<Vec<(String, u64)>, DomainError> {
        Ok(self.keys.key_status_counts().await?)
    }

    /// The monitor's counters, for `/metrics`.
    pub fn monitor_stats(&self) -> &MonitorStats {
        &self.monitor_checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_denial_is_a_suspicion_and_a_second_confirms_it() {
        use KeyStatus::*;
        assert!(matches!(
            verdict(Active, None, Disabled),
            Verdict::Suspect(Disabled)
        ));
        assert!(matches!(
            verdict(Active, Some(Disabled), Disabled),
            Verdict::Change(Disabled)
        ));
        assert!(matches!(
            verdict(Active, Some(Disabled), NotFound),
            Verdict::Suspect(NotFound)
        ));
        assert!(matches!(
            verdict(Active, Some(Disabled), Active),
            Verdict::Same
        ));
    }

    #[test]
    fn unreachable_and_recovery_are_recorded_at_once_and_never_suspected() {
        use KeyStatus::*;
        assert!(matches!(
            verdict(Active, None, Unreachable),
            Verdict::Change(Unreachable)
        ));
        assert!(matches!(
            verdict(Disabled, None, Active),
            Verdict::Change(Active)
        ));
        assert!(matches!(
            verdict(Unreachable, None, Active),
            Verdict::Change(Active)
        ));
        assert!(matches!(verdict(Disabled, None, Disabled), Verdict::Same));
    }
}
