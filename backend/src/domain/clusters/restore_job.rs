//! The `restore` job: copies a backup's objects into the cluster being restored from it (made
//! `creating` by the request), page by page in name order, then makes the cluster available
//! (or failed). Durable and bounded as the backup job is (`backup_job.rs`): a crash resumes
//! after the last object recorded in the cluster; a copy written but not recorded is the
//! storage sweeper's.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use uuid::Uuid;

use super::backup_job::{BackupReport, Heartbeat, PAGE, Pending, Run, SLICE};
use super::keyring::ClusterKeys;
use super::objects::{bound_name, open_sealed, region_targets, storage_error, write_sealed};
use super::service::Clusters;
use super::{Cluster, ClusterState, StoredObject};
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::error::Rule;
use crate::domain::identity::{Caller, Role};
use crate::domain::jobs::Job;

impl Clusters {
    pub(super) async fn run_restore_job(
        &self,
        job: &Job,
        started: Instant,
        report: &mut BackupReport,
    ) -> Result<(), DomainError> {
        let parts = &self.parts;
        let cluster = parts
            .store
            .cluster(job.organization_id, job.subject)
            .await?
            .filter(|c| c.state == ClusterState::Creating && c.restore.is_some());
        let Some(cluster) = cluster else {
            // Ended, or deleted meanwhile: nothing left to do.
            return Ok(self.jobs.finish_job(job).await?);
        };
        let run = self.restore_into(job, &cluster, started, report).await;
        if let Some(failure) = self.settle(job, "restore", run).await? {
            let failed = failure.is_some();
            if self.end_restore(&cluster, failure).await? {
                report.ended(failed);
            }
        }
        Ok(())
    }

    async fn restore_into(
        &self,
        job: &Job,
        cluster: &Cluster,
        started: Instant,
        report: &mut BackupReport,
    ) -> Result<Run, DomainError> {
        let parts = &self.parts;
        let Some(progress) = cluster.restore else {
            return Ok(Run::Done);
        };
        let backup = parts
            .store
            .backup(cluster.organization_id, progress.backup_id)
            .await?
            .ok_or_else(|| DomainError::Conflict {
                rule: Rule::BackupState,
                field: None,
                detail: "The backup was deleted before the restore finished.".into(),
            })?;
        let backup_key = self.backup_key(&backup, "restore the backup").await?;
        let backup_keys = Arc::new(ClusterKeys::new(vec![(
            backup.region.region.clone(),
            backup_key,
        )]));
        let cluster_keys = match parts.ring.get(cluster.id) {
            Some(keys) => keys,
            None => match self.open_cluster_keys(cluster).await? {
                Ok(keys) => Arc::new(keys),
                Err(failures) => {
                    return Err(DomainError::KeyUnusable {
                        action: "restore the backup",
                        failures,
                    });
                }
            },
        };
        let heartbeat = Heartbeat::start(self.jobs.clone(), self.clock.clone(), job.clone());
        let mut pending: Pending<StoredObject> = Pending::default();
        let mut after = parts.store.restored_up_to(cluster.id).await?;
        loop {
            if !matches!(
                self.record_restored(cluster, &mut pending, report, Run::Done)
                    .await?,
                Run::Done
            ) {
                return Ok(Run::Stopped);
            }
            if started.elapsed() >= SLICE {
                return Ok(Run::Paused);
            }
            let page = parts
                .store
                .backup_objects(backup.id, backup.created_at, after.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(Run::Done);
            };
            after = Some(last.name.clone());
            for object in page {
                let version = Uuid::now_v7();
                let targets = region_targets(cluster, &cluster_keys, version)?;
                let copied = async {
                    let source = parts
                        .blobs
                        .read(&backup.blob(object.version))
                        .await
                        .map_err(storage_error)?;
                    let plain = open_sealed(
                        source,
                        backup_keys.clone(),
                        backup.region.region.clone(),
                        backup.id,
                        bound_name(object.version, object.name.as_str()),
                    );
                    write_sealed(
                        parts.blobs.as_ref(),
                        &targets,
                        cluster.id,
                        &bound_name(version, object.name.as_str()),
                        plain,
                        None,
                        None,
                    )
                    .await
                }
                .await;
                let size_bytes = match copied {
                    Ok(size) => size,
                    Err(err) => {
                        // What was restored is recorded; the rest is copied again.
                        self.record_restored(cluster, &mut pending, report, Run::Stopped)
                            .await?;
                        return Err(err);
                    }
                };
                pending.push(StoredObject {
                    id: Uuid::now_v7(),
                    version,
                    size_bytes,
                    updated_at: self.clock.now(),
                    ..object
                });
                if heartbeat.lost() {
                    return self
                        .record_restored(cluster, &mut pending, report, Run::Stopped)
                        .await;
                }
                if pending.due()
                    && !matches!(
                        self.record_restored(cluster, &mut pending, report, Run::Done)
                            .await?,
                        Run::Done
                    )
                {
                    return Ok(Run::Stopped);
                }
            }
        }
    }

    /// Records the objects restored and not yet recorded; `then` if they were, `Stopped`
    /// (and their copies deleted) when the cluster is no longer `creating`.
    async fn record_restored(
        &self,
        cluster: &Cluster,
        pending: &mut Pending<StoredObject>,
        report: &mut BackupReport,
        then: Run,
    ) -> Result<Run, DomainError> {
        let restored = pending.take();
        if restored.is_empty() {
            return Ok(then);
        }
        if !self
            .parts
            .store
            .record_restored(cluster.id, &restored)
            .await?
        {
            let versions: Vec<Uuid> = restored.iter().map(|o| o.version).collect();
            self.delete_versions(cluster, &versions).await;
            return Ok(Run::Stopped);
        }
        report.copied += restored.len();
        Ok(then)
    }

    /// Ends the restore (available, or failed with `failure`), audited as the console's own
    /// act. False when it had already ended.
    async fn end_restore(
        &self,
        cluster: &Cluster,
        failure: Option<String>,
    ) -> Result<bool, DomainError> {
        let parts = &self.parts;
        let system = Caller::system(cluster.organization_id, Role::Owner);
        let now = self.clock.now();
        let backup_id = cluster.restore.map(|r| r.backup_id);
        let done = parts
            .store
            .cluster(cluster.organization_id, cluster.id)
            .await?
            .and_then(|c| c.restore)
            .map_or(0, |r| r.objects_restored);
        let audit = match &failure {
            None => AuditDraft::by(
                &system,
                now,
                "cluster.restored",
                format!("cluster/{}", cluster.id),
            )
            .detail(json!({
                "name": cluster.name.as_str(),
                "backup_id": backup_id,
                "objects": done,
                "requested_by": cluster.created_by,
            })),
            Some(why) => AuditDraft::by(
                &system,
                now,
                "backup.restore_failed",
                format!("backup/{}", backup_id.unwrap_or_default()),
            )
            .outcome(Outcome::Failure)
            .detail(json!({
                "cluster_id": cluster.id,
                "error": why,
                "requested_by": cluster.created_by,
            })),
        }
        .in_project(cluster.project_id);
        Ok(parts
            .store
            .end_restore(cluster.id, failure, now, audit)
            .await?)
    }
}
