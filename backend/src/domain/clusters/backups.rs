//! Backups: a consistent snapshot of a cluster's objects, re-sealed under a fresh backup
//! data key that the primary region's key wraps (R7: one region, never two in CMEK
//! projects), and restore into a new cluster of the same project and regions, which needs
//! the key again.

use serde_json::json;
use uuid::Uuid;

use super::lifecycle::PLATFORM_KEY;
use super::service::Clusters;
use super::{
    Backup, BackupState, Cluster, ClusterName, ClusterRegion, ClusterState, NewCluster,
    RestoreProgress, Tier,
};
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::error::Rule;
use crate::domain::identity::Caller;
use crate::domain::page::{Page, PageRequest};
use crate::domain::ports::BackupStart;

impl Clusters {
    /// A cluster's backups, newest first; also after the cluster was deleted.
    pub async fn backups(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<Backup>, DomainError> {
        let parts = &self.parts;
        let items = parts
            .store
            .backups(caller.organization_id, cluster_id, page)
            .await?;
        // A cluster of the organization, or one deleted since whose backups remain; any
        // other id is "not found", as everywhere.
        if items.is_empty()
            && page.after.is_none()
            && parts
                .store
                .cluster(caller.organization_id, cluster_id)
                .await?
                .is_none()
        {
            return Err(DomainError::NotFound("cluster"));
        }
        Ok(page.finish(items, |b| b.id))
    }

    /// A project's backups, newest first.
    pub async fn project_backups(
        &self,
        caller: &Caller,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<Backup>, DomainError> {
        self.project(caller, project_id).await?;
        let items = self
            .parts
            .store
            .project_backups(caller.organization_id, project_id, page)
            .await?;
        Ok(page.finish(items, |b| b.id))
    }

    pub async fn backup(&self, caller: &Caller, id: Uuid) -> Result<Backup, DomainError> {
        self.parts
            .store
            .backup(caller.organization_id, id)
            .await?
            .ok_or(DomainError::NotFound("backup"))
    }

    /// Starts a backup of an available cluster (owners only): the data key is made and the
    /// snapshot taken now, so a refused key or a busy cluster is answered at once; the
    /// objects are copied by the `backup` job. Answers the backup, `creating`.
    pub async fn create_backup(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
    ) -> Result<Backup, DomainError> {
        let cluster = self.cluster(caller, cluster_id).await?;
        caller.require_owner("take backups")?;
        // The cluster's own keys must work now: the job reads its objects with them.
        if let Err(err) = self.serving_keys(&cluster).await {
            self.record_refusal(
                caller,
                "backup.refused",
                &format!("cluster/{}", cluster.id),
                &err,
            )
            .await?;
            return Err(err);
        }
        let parts = &self.parts;
        let primary = cluster
            .primary()
            .cloned()
            .ok_or_else(|| DomainError::Integrity("the cluster has no region".into()))?;
        let mut key = match primary.key_id {
            Some(id) => self.keys.key(caller.organization_id, id).await?,
            None => None,
        };
        // A new backup's data key goes under the region's current key: while (or just after)
        // a replacement moves the cluster's data keys, the cluster may still name the old one,
        // and a backup wrapped by it would keep that key in use once the change has ended.
        for _ in 0..8 {
            let Some(successor) = key.as_ref().and_then(|k| k.replaced_by) else {
                break;
            };
            match self.keys.key(caller.organization_id, successor).await? {
                Some(next) => key = Some(next),
                None => break,
            }
        }
        if primary.key_id.is_some() && key.is_none() {
            return Err(DomainError::NotFound("encryption key"));
        }
        let id = Uuid::now_v7();
        let context = Self::data_key_context(
            caller.organization_id,
            cluster.project_id,
            id,
            &primary.region,
            "backup",
        );
        let (data_key, key_version) = match self
            .new_data_key(key.as_ref(), &primary.region, &context)
            .await
        {
            Ok(fresh) => fresh,
            Err(failed) => {
                let audit = AuditDraft::by(
                    caller,
                    self.clock.now(),
                    "backup.failed",
                    format!("cluster/{}", cluster.id),
                )
                .outcome(Outcome::Failure)
                .detail(json!({ "code": failed.error.code(), "region": failed.region }))
                .in_project(cluster.project_id);
                self.record(audit).await?;
                return Err(DomainError::KeyUnusable {
                    action: "take the backup",
                    failures: vec![failed],
                });
            }
        };
        let now = self.clock.now();
        let mut backup = Backup {
            id,
            organization_id: caller.organization_id,
            project_id: cluster.project_id,
            cluster_id: cluster.id,
            cluster_name: cluster.name.as_str().to_owned(),
            provider: cluster.provider,
            regions: cluster.regions.iter().map(|r| r.region.clone()).collect(),
            region: ClusterRegion {
                key_id: key.as_ref().map(|k| k.id),
                key_ref: key.as_ref().map(|k| k.key_ref.display()),
                wrapped_key: data_key.wrapped.clone(),
                key_version,
                ..primary.clone()
            },
            state: BackupState::Creating,
            size_bytes: 0,
            object_count: 0,
            objects_copied: 0,
            last_error: None,
            created_by: caller.actor.label(),
            created_at: now,
            finished_at: None,
        };
        // The plaintext data key is not kept: the job unwraps it when it runs (on whichever
        // instance leases it).
        drop(data_key);
        let audit = AuditDraft::by(caller, now, "backup.started", format!("backup/{id}"))
            .detail(json!({
                "cluster_id": cluster.id,
                "region": primary.region.as_str(),
                "key": primary.key_ref.as_deref().unwrap_or(PLATFORM_KEY),
            }))
            .in_project(cluster.project_id);
        let refused = match parts.store.start_backup(&backup, now, audit).await? {
            BackupStart::Started { objects } => {
                backup.object_count = objects;
                self.wake_backups();
                return Ok(backup);
            }
            BackupStart::NotAvailable => super::lifecycle::wrong_state(
                &cluster,
                "only an available cluster can be backed up",
            ),
            BackupStart::AlreadyRunning => super::lifecycle::wrong_state(
                &cluster,
                "another backup of it is being taken; try again when it is done",
            ),
        };
        self.record_refusal(
            caller,
            "backup.refused",
            &format!("cluster/{}", cluster.id),
            &refused,
        )
        .await?;
        Err(refused)
    }

    /// Restores a backup into a new cluster of the same project and regions; it needs the
    /// key that wrapped the backup, and an active key in every region (R5, R11). Both are
    /// checked, the cluster's data keys made and the cluster recorded `creating` now; the
    /// `restore` job copies the objects into it.
    pub async fn restore_backup(
        &self,
        caller: &Caller,
        backup_id: Uuid,
        name: Option<&str>,
    ) -> Result<Cluster, DomainError> {
        let backup = self.backup(caller, backup_id).await?;
        caller.require_owner("restore backups")?;
        require_available(&backup, "restored")?;
        let project = self.project(caller, backup.project_id).await?;
        let name = match name.filter(|n| !n.trim().is_empty()) {
            Some(name) => ClusterName::parse(name).map_err(|e| DomainError::Invalid(vec![e]))?,
            None => default_restore_name(&backup.cluster_name)?,
        };
        let new = NewCluster {
            name,
            provider: backup.provider,
            regions: backup.regions.clone(),
            tier: Tier::Dedicated,
            dual_region_backup: false,
        };
        let checked = match self.check_cluster_rules(&project, &new) {
            Ok(()) => self.keys_for_regions(caller, &project, &new).await,
            Err(err) => Err(err),
        };
        let keys = match checked {
            Ok(keys) => keys,
            Err(err) => {
                self.record_refusal(
                    caller,
                    "backup.restore_refused",
                    &format!("backup/{backup_id}"),
                    &err,
                )
                .await?;
                return Err(err);
            }
        };
        let context = Self::data_key_context(
            caller.organization_id,
            backup.project_id,
            backup.id,
            &backup.region.region,
            "backup",
        );
        let backup_key = match self
            .unwrap_data_key(caller.organization_id, &backup.region, &context)
            .await?
        {
            Ok(key) => key,
            Err(failed) => {
                let audit = AuditDraft::by(caller, self.clock.now(), "backup.restore_failed", format!("backup/{backup_id}"))
                    .outcome(Outcome::Failure)
                    .detail(json!({ "region": failed.region, "key": failed.key, "code": failed.error.code() }))
                    .in_project(backup.project_id);
                self.record(audit).await?;
                return Err(DomainError::KeyUnusable {
                    action: "restore the backup",
                    failures: vec![failed],
                });
            }
        };
        // The backup's key works: the job unwraps it again where it runs.
        drop(backup_key);
        let now = self.clock.now();
        let mut cluster = Cluster {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            project_id: backup.project_id,
            name: new.name.clone(),
            provider: new.provider,
            tier: new.tier,
            dual_region_backup: false,
            regions: Vec::new(),
            state: ClusterState::Creating,
            last_error: None,
            will_not_resume: None,
            restore: Some(RestoreProgress {
                backup_id: backup.id,
                objects_total: backup.object_count,
                objects_restored: 0,
            }),
            created_by: caller.actor.label(),
            created_at: now,
            updated_at: now,
        };
        let cluster_keys = self
            .new_cluster_keys(caller, &mut cluster, &new.regions, &keys)
            .await?;
        let cluster = self
            .provision_and_save(
                caller,
                cluster,
                cluster_keys,
                &[],
                "cluster.restore_started",
                json!({ "backup_id": backup.id, "objects": backup.object_count }),
            )
            .await?;
        self.wake_backups();
        Ok(cluster)
    }

    pub async fn delete_backup(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        let backup = self.backup(caller, id).await?;
        caller.require_owner("delete backups")?;
        if backup.state == BackupState::Creating {
            return Err(not_yet(&backup, "deleted"));
        }
        if self
            .parts
            .store
            .restoring_from(caller.organization_id, backup.id)
            .await?
        {
            return Err(DomainError::Conflict {
                rule: Rule::BackupState,
                field: None,
                detail: format!(
                    "A restore from backup {} is running: delete it once the restored cluster \
                     is available.",
                    backup.id
                ),
            });
        }
        let parts = &self.parts;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "backup.deleted",
            format!("backup/{id}"),
        )
        .detail(json!({ "cluster_id": backup.cluster_id }))
        .in_project(backup.project_id);
        // The record goes first: a crash (or storage down) after it leaves copies no row
        // names, which the storage sweeper removes; the other order could leave a backup
        // listed as available whose copies are gone.
        parts
            .store
            .delete_backup(caller.organization_id, id, audit)
            .await?;
        if let Err(err) = parts.blobs.delete_prefix(&backup.prefix()).await {
            tracing::warn!(error = %err, backup = %id, "a deleted backup's copies could not be removed now; the storage sweeper will");
        }
        Ok(())
    }
}

/// The backup is still being taken (or failed): what it cannot be yet.
fn not_yet(backup: &Backup, what: &str) -> DomainError {
    let detail = match backup.state {
        BackupState::Creating => format!(
            "Backup {} is still being taken ({} of {} objects copied): it can be {what} once it \
             is available.",
            backup.id, backup.objects_copied, backup.object_count
        ),
        _ => format!(
            "Backup {} failed ({}): it holds nothing to be {what}; delete it and take another.",
            backup.id,
            backup.last_error.as_deref().unwrap_or("no reason recorded")
        ),
    };
    DomainError::Conflict {
        rule: Rule::BackupState,
        field: None,
        detail,
    }
}

fn require_available(backup: &Backup, what: &str) -> Result<(), DomainError> {
    if backup.state == BackupState::Available {
        Ok(())
    } else {
        Err(not_yet(backup, what))
    }
}

/// `<cluster>-restored-<4 hex>`, within the 40 characters of a cluster name.
fn default_restore_name(cluster: &str) -> Result<ClusterName, DomainError> {
    let suffix = &Uuid::new_v4().simple().to_string()[..4];
    let stem: String = cluster.chars().take(40 - "-restored-".len() - 4).collect();
    let stem = stem.trim_end_matches('-');
    ClusterName::parse(&format!("{stem}-restored-{suffix}"))
        .map_err(|e| DomainError::Invalid(vec![e]))
}
