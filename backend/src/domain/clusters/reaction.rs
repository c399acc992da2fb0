//! The reaction to revoked keys (R10), as a reconciliation rather than an event handler:
//! what a cluster should be follows from the recorded status of its keys, of the key
//! versions that wrapped its data keys, and its project's `revocation_policy`. It converges
//! whoever recorded the status (the monitor, Check now, an instance that died right after)
//! and however often it runs: each change is a compare-and-set in the store, audited (and so
//! alerted) once.
//!
//! It runs from a durable job queued in the same transaction as the status change, and
//! periodically over every revoked key, so nothing missed stays missed.

use std::collections::HashMap;

use serde_json::json;
use uuid::Uuid;

use super::service::Clusters;
use super::{Cluster, ClusterState};
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::identity::{Caller, Role};
use crate::domain::keys::{EncryptionKey, Provider};
use crate::domain::notice::{ClusterAlert, ClusterCause, Notice};
use crate::domain::ports::{Job, JobKind, KeyVersionStatus};
use crate::domain::projects::{Project, RevocationPolicy};

/// R10: what running clusters do when their key is revoked. AWS keeps them running (the
/// failure shows at resume); Azure and Google Cloud stop them (as Google's own CMEK services
/// make a resource unavailable when its key version is disabled).
pub fn effective_policy(project: &Project, provider: Provider) -> RevocationPolicy {
    project.revocation_policy.unwrap_or(match provider {
        Provider::AzureKeyVault | Provider::GcpKms => RevocationPolicy::Stop,
        Provider::AwsKms | Provider::Local => RevocationPolicy::KeepRunning,
    })
}

/// What a cluster needs to match its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    Nothing,
    /// `stop`: drop its data keys and make it `inaccessible`.
    MakeInaccessible,
    /// `keep_running`: it runs on, but say that its next resume would fail.
    MarkWillNotResume,
    /// Its keys work again: the "will not resume" mark goes.
    ClearMark,
}

/// What the recorded statuses of a cluster's keys (and key versions) say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// One is revoked (confirmed): its data key cannot be unwrapped.
    Revoked,
    /// None is revoked but one is `unreachable`: nothing is known, so nothing changes
    /// (R10: an outage is not a revocation, and not a recovery either).
    Unknown,
    /// Every one is `active`.
    Usable,
}

/// The rule: a cluster a revoked key (or key version) blocks is stopped under `stop` when it
/// runs (or is about to), and marked under `keep_running` while it exists; once every key
/// works again, its mark goes. A stopped cluster stays `inaccessible` until its owner
/// resumes it (R10: the owner decides when it serves again).
pub fn reaction(
    policy: RevocationPolicy,
    keys: Keys,
    state: ClusterState,
    marked: bool,
) -> Reaction {
    use ClusterState as S;
    match (keys, policy) {
        (Keys::Revoked, RevocationPolicy::Stop)
            if matches!(state, S::Available | S::Resuming | S::Pausing) =>
        {
            Reaction::MakeInaccessible
        }
        (Keys::Revoked, RevocationPolicy::KeepRunning)
            if !marked && matches!(state, S::Available | S::Paused | S::Pausing | S::Resuming) =>
        {
            Reaction::MarkWillNotResume
        }
        (Keys::Usable, _) if marked => Reaction::ClearMark,
        _ => Reaction::Nothing,
    }
}

/// What one reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub stopped: usize,
    pub marked: usize,
    pub cleared: usize,
}

impl ReconcileReport {
    fn add(&mut self, other: ReconcileReport) {
        self.stopped += other.stopped;
        self.marked += other.marked;
        self.cleared += other.cleared;
    }
}

/// The recorded statuses a reconciliation reads: each key, and each revoked key version.
#[derive(Default)]
struct Known {
    keys: HashMap<Uuid, Option<EncryptionKey>>,
    revoked_versions: HashMap<Uuid, Vec<KeyVersionStatus>>,
}

/// The first of the cluster's keys or key versions that is revoked, with why.
fn blocking(cluster: &Cluster, known: &Known) -> (Keys, Option<(Uuid, String)>) {
    let unknown = cluster.regions.iter().any(|region| {
        region
            .key_id
            .and_then(|id| known.keys.get(&id))
            .is_some_and(|key| {
                key.as_ref()
                    .is_some_and(|k| k.status == crate::domain::keys::KeyStatus::Unreachable)
            })
    });
    match first_revoked(cluster, known) {
        Some(why) => (Keys::Revoked, Some(why)),
        None if unknown => (Keys::Unknown, None),
        None => (Keys::Usable, None),
    }
}

/// The first of the cluster's keys or key versions that is revoked, with why.
fn first_revoked(cluster: &Cluster, known: &Known) -> Option<(Uuid, String)> {
    for region in &cluster.regions {
        let Some(key_id) = region.key_id else {
            continue;
        };
        let Some(Some(key)) = known.keys.get(&key_id) else {
            continue;
        };
        if key.status.is_revocation() {
            return Some((
                key_id,
                format!(
                    "{} {}: {}",
                    key.key_ref.display(),
                    key.status.as_str(),
                    key.last_error
                        .as_deref()
                        .unwrap_or("the KMS refused the key")
                ),
            ));
        }
        let version = known.revoked_versions.get(&key_id).and_then(|versions| {
            versions
                .iter()
                .find(|v| Some(&v.version) == region.key_version.as_ref())
        });
        if let Some(version) = version {
            return Some((
                key_id,
                format!(
                    "{} version {} {}: {}",
                    key.key_ref.display(),
                    version.version,
                    version.status.as_str(),
                    version
                        .last_error
                        .as_deref()
                        .unwrap_or("the KMS refused the key version")
                ),
            ));
        }
    }
    None
}

/// How long a failed reconciliation waits before its next attempt: 1 s doubling, at most
/// 5 minutes.
fn backoff(attempts: i32) -> chrono::Duration {
    chrono::Duration::seconds(1_i64 << attempts.clamp(0, 9)).min(chrono::Duration::minutes(5))
}

impl Clusters {
    /// Brings every cluster that uses the key in line with the recorded statuses of its keys
    /// and key versions. Each cluster on its own: one that cannot be changed now does not
    /// hold the others back (the first error is returned, so the job is retried).
    pub async fn reconcile_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<ReconcileReport, DomainError> {
        let parts = &self.parts;
        let system = Caller::system(organization_id, Role::Owner);
        let mut known = Known::default();
        let mut projects: HashMap<Uuid, Project> = HashMap::new();
        let mut report = ReconcileReport::default();
        let mut failed = None;
        for cluster in parts
            .store
            .clusters_using_key(organization_id, key_id)
            .await?
        {
            for region in &cluster.regions {
                if let Some(id) = region.key_id
                    && !known.keys.contains_key(&id)
                {
                    known
                        .keys
                        .insert(id, self.keys.key(organization_id, id).await?);
                    let revoked = self.jobs.revoked_versions(&[id]).await?;
                    known.revoked_versions.insert(id, revoked);
                }
            }
            if !projects.contains_key(&cluster.project_id) {
                match self
                    .projects
                    .project(organization_id, cluster.project_id)
                    .await?
                {
                    Some(project) => {
                        projects.insert(project.id, project);
                    }
                    None => continue,
                }
            }
            let Some(project) = projects.get(&cluster.project_id) else {
                continue;
            };
            match self
                .react(&system, &cluster, project, blocking(&cluster, &known))
                .await
            {
                Ok(done) => report.add(done),
                Err(err) => {
                    tracing::error!(error = %err, cluster = %cluster.id, "could not bring a cluster in line with its keys");
                    failed.get_or_insert(err);
                }
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    async fn react(
        &self,
        system: &Caller,
        cluster: &Cluster,
        project: &Project,
        (keys, blocked): (Keys, Option<(Uuid, String)>),
    ) -> Result<ReconcileReport, DomainError> {
        let policy = effective_policy(project, cluster.provider);
        let mut report = ReconcileReport::default();
        let parts = &self.parts;
        match (
            reaction(
                policy,
                keys,
                cluster.state,
                cluster.will_not_resume.is_some(),
            ),
            blocked,
        ) {
            (Reaction::MakeInaccessible, Some((key_id, reason))) => {
                use ClusterState as S;
                parts.ring.drop_keys(cluster.id);
                let moved = self
                    .move_cluster(
                        system,
                        cluster,
                        &[S::Available, S::Resuming, S::Pausing],
                        S::Inaccessible,
                        Some(reason.clone()),
                        (
                            "cluster.inaccessible",
                            Outcome::Failure,
                            json!({ "key_id": key_id, "reason": reason }),
                            Some(ClusterCause::Inaccessible {
                                key_id,
                                reason: reason.clone(),
                            }),
                        ),
                    )
                    .await?;
                report.stopped += usize::from(moved);
            }
            (Reaction::MarkWillNotResume, Some((key_id, reason))) => {
                let audit = AuditDraft::by(
                    system,
                    self.clock.now(),
                    "cluster.will_not_resume",
                    format!("cluster/{}", cluster.id),
                )
                .outcome(Outcome::Failure)
                .detail(json!({
                    "name": cluster.name.as_str(),
                    "state": cluster.state.as_str(),
                    "key_id": key_id,
                    "reason": reason,
                }))
                .in_project(cluster.project_id)
                .notifies(Some(Notice::Cluster(ClusterAlert {
                    cluster_id: cluster.id,
                    project_id: cluster.project_id,
                    name: cluster.name.as_str().to_owned(),
                    cause: ClusterCause::WillNotResume {
                        state: cluster.state.as_str(),
                        key_id,
                        reason: reason.clone(),
                    },
                })));
                let marked = parts
                    .store
                    .set_will_not_resume(cluster.organization_id, cluster.id, Some(reason), audit)
                    .await?;
                report.marked += usize::from(marked);
            }
            (Reaction::ClearMark, _) => {
                let audit = AuditDraft::by(
                    system,
                    self.clock.now(),
                    "cluster.will_resume",
                    format!("cluster/{}", cluster.id),
                )
                .detail(json!({
                    "name": cluster.name.as_str(),
                    "state": cluster.state.as_str(),
                }))
                .in_project(cluster.project_id);
                let cleared = parts
                    .store
                    .set_will_not_resume(cluster.organization_id, cluster.id, None, audit)
                    .await?;
                report.cleared += usize::from(cleared);
            }
            _ => {}
        }
        Ok(report)
    }

    /// Runs the reconciliations that are due (queued with a status change, or retried),
    /// each leased so one instance runs it.
    pub async fn run_due_reactions(&self) -> Result<ReconcileReport, DomainError> {
        let now = self.clock.now();
        let jobs = self
            .jobs
            .lease_jobs(
                JobKind::ReconcileKey,
                now,
                now + chrono::Duration::minutes(2),
                32,
            )
            .await?;
        let mut report = ReconcileReport::default();
        // Each job on its own: one whose bookkeeping fails does not strand the others (its
        // lease lapses and it runs again).
        for job in jobs {
            match self.run_job(&job).await {
                Ok(done) => report.add(done),
                Err(err) => {
                    tracing::warn!(error = %err, key = %job.subject, "a reconciliation could not be recorded")
                }
            }
        }
        Ok(report)
    }

    async fn run_job(&self, job: &Job) -> Result<ReconcileReport, DomainError> {
        match self.reconcile_key(job.organization_id, job.subject).await {
            Ok(report) => {
                self.jobs.finish_job(job).await?;
                Ok(report)
            }
            Err(err) => {
                tracing::warn!(error = %err, key = %job.subject, attempts = job.attempts + 1, "a reconciliation failed; it will be retried");
                let due = self.clock.now() + backoff(job.attempts);
                self.jobs.retry_job(job, due, &err.to_string()).await?;
                Ok(ReconcileReport::default())
            }
        }
    }

    /// The periodic pass: every key with a revoked status or version, and every key of a
    /// marked cluster, reconciled again (a reaction lost to anything is made here).
    pub async fn reconcile_revoked_keys(&self) -> Result<ReconcileReport, DomainError> {
        let mut report = ReconcileReport::default();
        let mut after = None;
        loop {
            let batch = self.jobs.keys_to_reconcile(after, 500).await?;
            let Some(&(_, last)) = batch.last() else {
                return Ok(report);
            };
            for (organization_id, key_id) in batch {
                match self.reconcile_key(organization_id, key_id).await {
                    Ok(done) => report.add(done),
                    Err(err) => {
                        tracing::warn!(error = %err, key = %key_id, "the periodic reconciliation of a key failed")
                    }
                }
            }
            after = Some(last);
        }
    }

    /// Reconciliations waiting, for `/metrics`.
    pub async fn pending_reactions(&self) -> Result<u64, DomainError> {
        Ok(self.jobs.pending_jobs(JobKind::ReconcileKey).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [ClusterState; 8] = ClusterState::ALL;

    /// What applying a reaction leaves: the state and the mark.
    fn apply(reaction: Reaction, state: ClusterState, marked: bool) -> (ClusterState, bool) {
        match reaction {
            Reaction::Nothing => (state, marked),
            Reaction::MakeInaccessible => (ClusterState::Inaccessible, marked),
            Reaction::MarkWillNotResume => (state, true),
            Reaction::ClearMark => (state, false),
        }
    }

    #[test]
    fn reconciling_twice_gives_what_reconciling_once_gives() {
        for policy in [RevocationPolicy::Stop, RevocationPolicy::KeepRunning] {
            for blocked in [Keys::Revoked, Keys::Unknown, Keys::Usable] {
                for state in STATES {
                    for marked in [true, false] {
                        let once = apply(reaction(policy, blocked, state, marked), state, marked);
                        let twice =
                            apply(reaction(policy, blocked, once.0, once.1), once.0, once.1);
                        assert_eq!(
                            once, twice,
                            "{policy:?} {blocked:?} {state:?} marked={marked}"
                        );
                        assert_eq!(
                            reaction(policy, blocked, once.0, once.1),
                            Reaction::Nothing,
                            "a converged cluster needs nothing more: {policy:?} {blocked:?} {state:?} marked={marked}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_revoked_key_stops_running_clusters_of_stop_projects_and_marks_those_of_keep_running() {
        use ClusterState as S;
        use RevocationPolicy::{KeepRunning, Stop};
        assert_eq!(
            reaction(Stop, Keys::Revoked, S::Available, false),
            Reaction::MakeInaccessible
        );
        assert_eq!(
            reaction(Stop, Keys::Revoked, S::Resuming, false),
            Reaction::MakeInaccessible
        );
        assert_eq!(
            reaction(Stop, Keys::Revoked, S::Paused, false),
            Reaction::Nothing
        );
        assert_eq!(
            reaction(Stop, Keys::Revoked, S::Inaccessible, false),
            Reaction::Nothing
        );
        assert_eq!(
            reaction(KeepRunning, Keys::Revoked, S::Available, false),
            Reaction::MarkWillNotResume
        );
        assert_eq!(
            reaction(KeepRunning, Keys::Revoked, S::Paused, false),
            Reaction::MarkWillNotResume
        );
        assert_eq!(
            reaction(KeepRunning, Keys::Revoked, S::Available, true),
            Reaction::Nothing
        );
        assert_eq!(
            reaction(KeepRunning, Keys::Revoked, S::Deleting, false),
            Reaction::Nothing
        );
    }

    #[test]
    fn a_key_that_works_again_clears_the_mark_but_never_resumes_a_stopped_cluster() {
        use ClusterState as S;
        for policy in [RevocationPolicy::Stop, RevocationPolicy::KeepRunning] {
            assert_eq!(
                reaction(policy, Keys::Usable, S::Available, true),
                Reaction::ClearMark
            );
            assert_eq!(
                reaction(policy, Keys::Usable, S::Inaccessible, false),
                Reaction::Nothing
            );
            assert_eq!(
                reaction(policy, Keys::Usable, S::Available, false),
                Reaction::Nothing
            );
        }
    }

    #[test]
    fn an_unreachable_kms_neither_stops_nor_clears_anything() {
        for policy in [RevocationPolicy::Stop, RevocationPolicy::KeepRunning] {
            for state in STATES {
                for marked in [true, false] {
                    assert_eq!(
                        reaction(policy, Keys::Unknown, state, marked),
                        Reaction::Nothing,
                        "{policy:?} {state:?} marked={marked}"
                    );
                }
            }
        }
    }

    #[test]
    fn failed_reconciliations_back_off_up_to_five_minutes() {
        assert_eq!(backoff(0), chrono::Duration::seconds(1));
        assert_eq!(backoff(3), chrono::Duration::seconds(8));
        assert_eq!(backoff(20), chrono::Duration::minutes(5));
    }
}
