//! Backups: a consistent snapshot of a cluster's objects, re-sealed under a fresh backup
//! data key that the primary region's key wraps (R7: one region, never two in CMEK
//! projects), and restore into a new cluster of the same project and regions, which needs
//! the key again.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::keyring::ClusterKeys;
use super::lifecycle::PLATFORM_KEY;
use super::objects::{bound_name, open_sealed, region_targets, storage_error, write_sealed};
use super::{
    Backup, BackupState, Cluster, ClusterName, ClusterRegion, ClusterState, NewCluster,
    StoredObject, Tier,
};
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::identity::Caller;
use crate::domain::page::{Page, PageRequest};
use crate::domain::ports::BackupStart;
use crate::domain::{Console, DomainError};

impl Console {
    /// A cluster's backups, newest first; also after the cluster was deleted.
    pub async fn backups(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<Backup>, DomainError> {
        let parts = self.cluster_parts()?;
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
            .cluster_parts()?
            .store
            .project_backups(caller.organization_id, project_id, page)
            .await?;
        Ok(page.finish(items, |b| b.id))
    }

    pub async fn backup(&self, caller: &Caller, id: Uuid) -> Result<Backup, DomainError> {
        self.cluster_parts()?
            .store
            .backup(caller.organization_id, id)
            .await?
            .ok_or(DomainError::NotFound("backup"))
    }

    /// Takes a backup of an available cluster (owners only).
    pub async fn create_backup(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
    ) -> Result<Backup, DomainError> {
        let cluster = self.cluster(caller, cluster_id).await?;
        caller.require_owner("take backups")?;
        let keys = self.serving_keys(&cluster).await?;
        let parts = self.cluster_parts()?;
        let primary = cluster
            .primary()
            .cloned()
            .ok_or_else(|| DomainError::Integrity("the cluster has no region".into()))?;
        let key = match primary.key_id {
            Some(id) => self.store.key(caller.organization_id, id).await?,
            None => None,
        };
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
                self.backup_failed(
                    caller,
                    &cluster,
                    json!({ "code": failed.error.code(), "region": failed.region }),
                )
                .await?;
                return Err(DomainError::KeyUnusable {
                    action: "take the backup",
                    failures: vec![failed],
                });
            }
        };
        let now = self.clock.now();
        let refused = match parts.store.start_backup(cluster.id, id, now).await? {
            BackupStart::Started(objects) => Ok(objects),
            BackupStart::NotAvailable => Err(super::lifecycle::wrong_state(
                &cluster,
                "only an available cluster can be backed up",
            )),
            BackupStart::AlreadyRunning => Err(super::lifecycle::wrong_state(
                &cluster,
                "another backup of it is being taken; try again when it is done",
            )),
        };
        let objects = match refused {
            Ok(objects) => objects,
            Err(err) => {
                self.record_refusal(
                    caller,
                    "backup.refused",
                    &format!("cluster/{}", cluster.id),
                    &err,
                )
                .await?;
                return Err(err);
            }
        };
        let mut backup = Backup {
            id,
            organization_id: caller.organization_id,
            project_id: cluster.project_id,
            cluster_id: cluster.id,
            cluster_name: cluster.name.as_str().to_owned(),
            provider: cluster.provider,
            regions: cluster.regions.iter().map(|r| r.region.clone()).collect(),
            region: ClusterRegion {
                wrapped_key: data_key.wrapped,
                key_version,
                ..primary.clone()
            },
            state: BackupState::Available,
            size_bytes: 0,
            object_count: 0,
            created_by: caller.actor.label(),
            created_at: now,
        };
        let copied = self
            .copy_objects(
                &cluster,
                &keys,
                &primary,
                &backup,
                &data_key.plaintext,
                &objects,
            )
            .await;
        let replaced = parts.store.finish_backup(cluster.id, id).await;
        if let Ok(replaced) = &replaced {
            self.delete_versions(&cluster, replaced).await;
        }
        let copied = match copied {
            Ok(copied) => copied,
            Err(err) => {
                let _ = parts.blobs.delete_prefix(&backup.prefix()).await;
                self.backup_failed(
                    caller,
                    &cluster,
                    json!({ "error": super::lifecycle::public_text(&err) }),
                )
                .await?;
                return Err(err);
            }
        };
        backup.size_bytes = copied.iter().map(|o| o.size_bytes).sum();
        backup.object_count = u32::try_from(copied.len()).unwrap_or(u32::MAX);
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "backup.created",
            format!("backup/{id}"),
        )
        .detail(json!({
            "cluster_id": cluster.id,
            "region": primary.region.as_str(),
            "key": primary.key_ref.as_deref().unwrap_or(PLATFORM_KEY),
            "objects": backup.object_count,
            "size_bytes": backup.size_bytes,
        }))
        .in_project(cluster.project_id);
        if let Err(err) = parts.store.insert_backup(&backup, &copied, audit).await {
            let _ = parts.blobs.delete_prefix(&backup.prefix()).await;
            return Err(err.into());
        }
        Ok(backup)
    }

    async fn backup_failed(
        &self,
        caller: &Caller,
        cluster: &Cluster,
        detail: serde_json::Value,
    ) -> Result<(), DomainError> {
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "backup.failed",
            format!("cluster/{}", cluster.id),
        )
        .outcome(Outcome::Failure)
        .detail(detail)
        .in_project(cluster.project_id);
        self.record(audit).await
    }

    /// Re-seals each object of the snapshot from the cluster's primary copy under the
    /// backup's data key.
    async fn copy_objects(
        &self,
        cluster: &Cluster,
        keys: &Arc<ClusterKeys>,
        primary: &ClusterRegion,
        backup: &Backup,
        backup_key: &crate::domain::kms::PlaintextKey,
        objects: &[StoredObject],
    ) -> Result<Vec<StoredObject>, DomainError> {
        let parts = self.cluster_parts()?;
        let mut copied = Vec::new();
        for object in objects {
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
            let version = Uuid::now_v7();
            let size = write_sealed(
                parts.blobs.as_ref(),
                &[(backup.blob(version), backup_key)],
                backup.id,
                &bound_name(version, object.name.as_str()),
                plain,
                None,
                Some(keys),
            )
            .await?;
            copied.push(StoredObject {
                version,
                size_bytes: size,
                ..object.clone()
            });
            let renewed = parts
                .store
                .renew_backup(cluster.id, backup.id, self.clock.now())
                .await?;
            if !renewed {
                return Err(DomainError::Conflict {
                    rule: crate::domain::error::Rule::ClusterState,
                    field: None,
                    detail: "The backup took too long on one object and another backup of the \
                             cluster took over; try again."
                        .into(),
                });
            }
        }
        Ok(copied)
    }

    /// Restores a backup into a new cluster of the same project and regions; it needs the
    /// key that wrapped the backup, and an active key in every region (R5, R11).
    pub async fn restore_backup(
        &self,
        caller: &Caller,
        backup_id: Uuid,
        name: Option<&str>,
    ) -> Result<Cluster, DomainError> {
        let backup = self.backup(caller, backup_id).await?;
        caller.require_owner("restore backups")?;
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
        let backup_keys = Arc::new(ClusterKeys::new(vec![(
            backup.region.region.clone(),
            backup_key,
        )]));
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
            state: ClusterState::Available,
            last_error: None,
            will_not_resume: None,
            created_by: caller.actor.label(),
            created_at: now,
            updated_at: now,
        };
        let cluster_keys = self
            .new_cluster_keys(caller, &mut cluster, &new.regions, &keys)
            .await?;
        let restored = match self
            .restore_objects(&backup, &backup_keys, &cluster, &cluster_keys)
            .await
        {
            Ok(restored) => restored,
            Err(err) => {
                let parts = self.cluster_parts()?;
                let _ = parts.blobs.delete_prefix(&cluster.prefix()).await;
                let audit = AuditDraft::by(
                    caller,
                    self.clock.now(),
                    "backup.restore_failed",
                    format!("backup/{backup_id}"),
                )
                .outcome(Outcome::Failure)
                .detail(json!({ "error": super::lifecycle::public_text(&err) }))
                .in_project(backup.project_id);
                self.record(audit).await?;
                return Err(err);
            }
        };
        self.provision_and_save(
            caller,
            cluster,
            cluster_keys,
            &restored,
            "cluster.restored",
            json!({ "backup_id": backup.id, "objects": restored.len() }),
        )
        .await
    }

    /// Re-seals every object of the backup under the new cluster's keys, in every region.
    async fn restore_objects(
        &self,
        backup: &Backup,
        backup_keys: &Arc<ClusterKeys>,
        cluster: &Cluster,
        cluster_keys: &ClusterKeys,
    ) -> Result<Vec<StoredObject>, DomainError> {
        let parts = self.cluster_parts()?;
        let now = self.clock.now();
        let mut restored = Vec::new();
        for object in parts
            .store
            .backup_objects(backup.id, backup.created_at)
            .await?
        {
            let version = Uuid::now_v7();
            let targets = region_targets(cluster, cluster_keys, version)?;
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
            let size = write_sealed(
                parts.blobs.as_ref(),
                &targets,
                cluster.id,
                &bound_name(version, object.name.as_str()),
                plain,
                None,
                None,
            )
            .await?;
            restored.push(StoredObject {
                id: Uuid::now_v7(),
                version,
                size_bytes: size,
                updated_at: now,
                ..object
            });
        }
        Ok(restored)
    }

    pub async fn delete_backup(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        let backup = self.backup(caller, id).await?;
        caller.require_owner("delete backups")?;
        let parts = self.cluster_parts()?;
        parts
            .blobs
            .delete_prefix(&backup.prefix())
            .await
            .map_err(storage_error)?;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "backup.deleted",
            format!("backup/{id}"),
        )
        .detail(json!({ "cluster_id": backup.cluster_id }))
        .in_project(backup.project_id);
        parts
            .store
            .delete_backup(caller.organization_id, id, audit)
            .await?;
        Ok(())
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
