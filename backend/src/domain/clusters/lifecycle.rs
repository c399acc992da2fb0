//! Create, read, pause, resume and delete clusters, and make them inaccessible when their
//! key is known to be unusable (R5-R8, R10, R11). Every step and every failure is audited.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use uuid::Uuid;

use super::keyring::ClusterKeys;
use super::service::Clusters;
use super::{
    Cluster, ClusterRegion, ClusterRequestInput, ClusterState, NewCluster, RegionFailure, Tier,
};
use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::error::Rule;
use crate::domain::error::{Constraint, StoreError};
use crate::domain::identity::Caller;
use crate::domain::keys::region::Region;
use crate::domain::keys::{EncryptionKey, KeyStatus, Provider};
use crate::domain::kms::{DataKey, EncryptionContext, PlaintextKey};
use crate::domain::notice::{ClusterAlert, ClusterCause, Notice};
use crate::domain::page::{Page, PageRequest};
use crate::domain::projects::Project;

/// What the platform says when it holds the key itself.
pub const PLATFORM_KEY: &str = "platform-managed key";

pub(super) fn wrong_state(cluster: &Cluster, wanted: &str) -> DomainError {
    DomainError::Conflict {
        rule: Rule::ClusterState,
        field: None,
        detail: format!(
            "Cluster \"{}\" is {}: {wanted}.",
            cluster.name.as_str(),
            cluster.state.as_str()
        ),
    }
}

impl Clusters {
    /// Audits a request a rule refused (R3, R5-R7, R11, a state or a name), with the rule.
    pub(super) async fn record_refusal(
        &self,
        caller: &Caller,
        action: &'static str,
        target: &str,
        err: &DomainError,
    ) -> Result<(), DomainError> {
        let rule = match err {
            DomainError::Refused { rule, .. }
            | DomainError::Conflict { rule, .. }
            | DomainError::Forbidden { rule, .. } => rule.slug(),
            _ => return Ok(()),
        };
        let audit = AuditDraft::by(caller, self.clock.now(), action, target.to_owned())
            .outcome(Outcome::Denied)
            .detail(json!({ "rule": rule, "reason": err.to_string() }));
        self.record(audit).await
    }

    /// The KMS context a data key is bound to: the KMS refuses to unwrap it for anything else.
    pub fn data_key_context(
        organization_id: Uuid,
        project_id: Uuid,
        owner: Uuid,
        region: &Region,
        purpose: &str,
    ) -> EncryptionContext {
        let owner_field = if purpose == "backup" {
            "backup_id"
        } else {
            "cluster_id"
        };
        EncryptionContext::default()
            .with("organization_id", organization_id.to_string())
            .with("project_id", project_id.to_string())
            .with(owner_field, owner.to_string())
            .with("region", region.as_str())
            .with("purpose", purpose)
    }

    /// A new data key wrapped by the region's key (or the platform's), with the key version
    /// that wrapped it (`None` under the platform key).
    pub(super) async fn new_data_key(
        &self,
        key: Option<&EncryptionKey>,
        region: &Region,
        context: &EncryptionContext,
    ) -> Result<(DataKey, Option<String>), RegionFailure> {
        let parts = &self.parts;
        parts.kms_calls.fetch_add(1, Ordering::Relaxed);
        match key {
            None => parts
                .platform
                .generate_data_key(context)
                .map(|data_key| (data_key, None))
                .map_err(|error| RegionFailure {
                    region: region.to_string(),
                    key: PLATFORM_KEY.into(),
                    error,
                }),
            Some(key) => {
                let provider = self
                    .provider_for(&key.key_ref)
                    .map_err(|e| failure(region, Some(key), e.to_string()))?;
                let data_key = provider
                    .generate_data_key(&key.key_ref, context)
                    .await
                    .map_err(|error| RegionFailure {
                        region: region.to_string(),
                        key: key.key_ref.display(),
                        error,
                    })?;
                let version = provider.wrapped_version(&key.key_ref, &data_key.wrapped);
                Ok((data_key, version))
            }
        }
    }

    /// Unwraps a stored data key through the key that wrapped it. The outer error is the
    /// console's own (its database could not be read): it says nothing about the customer's
    /// key, and callers answer it as the console's fault (503), not as a refused key.
    pub(super) async fn unwrap_data_key(
        &self,
        organization_id: Uuid,
        region: &ClusterRegion,
        context: &EncryptionContext,
    ) -> Result<Result<PlaintextKey, RegionFailure>, DomainError> {
        let parts = &self.parts;
        let Some(key_id) = region.key_id else {
            parts.kms_calls.fetch_add(1, Ordering::Relaxed);
            return Ok(parts
                .platform
                .unwrap_data_key(&region.wrapped_key, context)
                .map_err(|error| RegionFailure {
                    region: region.region.to_string(),
                    key: PLATFORM_KEY.into(),
                    error,
                }));
        };
        let Some(key) = self.keys.key(organization_id, key_id).await? else {
            return Ok(Err(RegionFailure {
                region: region.region.to_string(),
                key: region.key_ref.clone().unwrap_or_default(),
                error: crate::domain::kms::KmsError::NotFound {
                    code: "KeyNotRegistered".into(),
                },
            }));
        };
        let provider = match self.provider_for(&key.key_ref) {
            Ok(provider) => provider,
            Err(e) => return Ok(Err(failure(&region.region, Some(&key), e.to_string()))),
        };
        parts.kms_calls.fetch_add(1, Ordering::Relaxed);
        Ok(provider
            .decrypt_data_key(&key.key_ref, &region.wrapped_key, context)
            .await
            .map_err(|error| RegionFailure {
                region: region.region.to_string(),
                key: key.key_ref.display(),
                error,
            }))
    }

    /// R5, R11: the project's active key for each region, matched by provider and region.
    pub(super) async fn keys_for_regions(
        &self,
        caller: &Caller,
        project: &Project,
        new: &NewCluster,
    ) -> Result<Vec<Option<EncryptionKey>>, DomainError> {
        if !project.cmek_enabled {
            return Ok(vec![None; new.regions.len()]);
        }
        let keys = self.keys.keys(caller.organization_id, project.id).await?;
        let mut chosen = Vec::new();
        let mut missing = Vec::new();
        for region in &new.regions {
            let key = keys.iter().find(|k| {
                k.replaced_by.is_none()
                    && k.key_ref.provider() == new.provider
                    && &k.region == region
            });
            match key {
                Some(key) if key.status == KeyStatus::Active => chosen.push(Some(key.clone())),
                Some(key) => missing.push(format!(
                    "{region} (its key is {}: press Check now once it is fixed)",
                    key.status.as_str()
                )),
                None => missing.push(format!(
                    "{region} (create one: /projects/{}/encryption-keys/new?provider={}&region={region})",
                    project.id,
                    new.provider.as_str()
                )),
            }
        }
        if !missing.is_empty() {
            return Err(DomainError::Conflict {
                rule: Rule::KeyRequiredForRegion,
                field: Some("regions"),
                detail: format!(
                    "A cluster in a CMEK project needs an active {} key in each of its regions; \
                     none for {}.",
                    new.provider.title(),
                    missing.join("; ")
                ),
            });
        }
        Ok(chosen)
    }

    /// R6, R7 and R3 for the cluster's cloud, before any key is asked for.
    pub(super) fn check_cluster_rules(
        &self,
        project: &Project,
        new: &NewCluster,
    ) -> Result<(), DomainError> {
        if project.cmek_enabled && new.tier == Tier::Serverless {
            return Err(DomainError::Refused {
                rule: Rule::DedicatedOnly,
                field: "tier",
                detail: "CMEK projects hold Dedicated clusters only: choose tier \"dedicated\"."
                    .into(),
            });
        }
        if project.cmek_enabled && new.dual_region_backup {
            return Err(DomainError::Refused {
                rule: Rule::NoDualRegionBackup,
                field: "backup.dual_region",
                detail: "Dual-region backup is not available in CMEK projects: backups stay in \
                         the cluster's primary region, under its key."
                    .into(),
            });
        }
        if new.provider == Provider::Local {
            self.refuse_local_kms_in_production()?;
        }
        Ok(())
    }

    pub async fn create_cluster(
        &self,
        caller: &Caller,
        project_id: Uuid,
        input: &ClusterRequestInput,
    ) -> Result<Cluster, DomainError> {
        let project = self.project(caller, project_id).await?;
        caller.require_owner("create clusters")?;
        let new = NewCluster::parse(input)?;
        let checked = match self.check_cluster_rules(&project, &new) {
            Ok(()) => self.keys_for_regions(caller, &project, &new).await,
            Err(err) => Err(err),
        };
        let keys = match checked {
            Ok(keys) => keys,
            Err(err) => {
                self.record_refusal(
                    caller,
                    "cluster.create_refused",
                    &format!("project/{project_id}"),
                    &err,
                )
                .await?;
                return Err(err);
            }
        };
        let now = self.clock.now();
        let mut cluster = Cluster {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            project_id,
            name: new.name.clone(),
            provider: new.provider,
            tier: new.tier,
            dual_region_backup: new.dual_region_backup,
            regions: Vec::new(),
            state: ClusterState::Available,
            last_error: None,
            will_not_resume: None,
            restore: None,
            created_by: caller.actor.label(),
            created_at: now,
            updated_at: now,
        };
        let plaintexts = self
            .new_cluster_keys(caller, &mut cluster, &new.regions, &keys)
            .await?;
        self.provision_and_save(
            caller,
            cluster,
            plaintexts,
            &[],
            "cluster.created",
            json!({}),
        )
        .await
    }

    /// One data key per region, wrapped by that region's key; all or none.
    pub(super) async fn new_cluster_keys(
        &self,
        caller: &Caller,
        cluster: &mut Cluster,
        regions: &[Region],
        keys: &[Option<EncryptionKey>],
    ) -> Result<ClusterKeys, DomainError> {
        let mut plaintexts = Vec::new();
        let mut failures = Vec::new();
        for (region, key) in regions.iter().zip(keys) {
            let context = Self::data_key_context(
                caller.organization_id,
                cluster.project_id,
                cluster.id,
                region,
                "cluster-data",
            );
            match self.new_data_key(key.as_ref(), region, &context).await {
                Ok((data_key, key_version)) => {
                    cluster.regions.push(ClusterRegion {
                        region: region.clone(),
                        key_id: key.as_ref().map(|k| k.id),
                        key_ref: key.as_ref().map(|k| k.key_ref.display()),
                        wrapped_key: data_key.wrapped,
                        key_version,
                    });
                    plaintexts.push((region.clone(), data_key.plaintext));
                }
                Err(failed) => failures.push(failed),
            }
        }
        if !failures.is_empty() {
            let audit = AuditDraft::by(
                caller,
                self.clock.now(),
                "cluster.create_failed",
                format!("project/{}", cluster.project_id),
            )
            .outcome(Outcome::Failure)
            .detail(
                json!({ "name": cluster.name.as_str(), "failures": failure_detail(&failures) }),
            );
            self.record(audit).await?;
            return Err(DomainError::KeyUnusable {
                action: "create the cluster",
                failures,
            });
        }
        Ok(ClusterKeys::new(plaintexts))
    }

    /// Writes the regions' manifests, then saves the cluster (and any restored objects) with
    /// its event; a name already taken undoes the manifests.
    pub(super) async fn provision_and_save(
        &self,
        caller: &Caller,
        cluster: Cluster,
        keys: ClusterKeys,
        objects: &[super::StoredObject],
        action: &'static str,
        extra: serde_json::Value,
    ) -> Result<Cluster, DomainError> {
        let parts = &self.parts;
        let refs: Vec<(Region, &PlaintextKey)> = keys.iter().map(|(r, k)| (r.clone(), k)).collect();
        parts.driver.provision(&cluster, &refs).await?;
        let mut detail = json!({
            "name": cluster.name.as_str(),
            "provider": cluster.provider.as_str(),
            "tier": cluster.tier.as_str(),
            "regions": cluster.regions.iter().map(|r| json!({
                "region": r.region.as_str(),
                "key": r.key_ref.as_deref().unwrap_or(PLATFORM_KEY),
            })).collect::<Vec<_>>(),
        });
        if let (Some(detail), Some(extra)) = (detail.as_object_mut(), extra.as_object()) {
            detail.extend(extra.clone());
        }
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            action,
            format!("cluster/{}", cluster.id),
        )
        .detail(detail)
        .in_project(cluster.project_id);
        match parts.store.insert_cluster(&cluster, objects, audit).await {
            Ok(()) => {}
            Err(err) => {
                if let Err(cleanup) = parts.driver.destroy(&cluster).await {
                    tracing::warn!(error = %cleanup, cluster = %cluster.id, "could not remove the manifests of a cluster that was not saved");
                }
                let refused = match err {
                    StoreError::Conflict(Constraint::ClusterName) => DomainError::Conflict {
                        rule: Rule::ClusterNameTaken,
                        field: Some("name"),
                        detail: format!(
                            "A cluster named \"{}\" already exists in this project.",
                            cluster.name.as_str()
                        ),
                    },
                    StoreError::Conflict(Constraint::InUse) => DomainError::Conflict {
                        rule: Rule::KeyRequiredForRegion,
                        field: Some("regions"),
                        detail: "An encryption key of this cluster was deleted meanwhile.".into(),
                    },
                    other => other.into(),
                };
                self.record_refusal(
                    caller,
                    "cluster.create_refused",
                    &format!("project/{}", cluster.project_id),
                    &refused,
                )
                .await?;
                return Err(refused);
            }
        }
        parts.ring.put(cluster.id, keys);
        Ok(cluster)
    }

    pub async fn clusters(
        &self,
        caller: &Caller,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<Cluster>, DomainError> {
        self.project(caller, project_id).await?;
        let items = self
            .parts
            .store
            .clusters(caller.organization_id, project_id, page)
            .await?;
        Ok(page.finish(items, |c| c.id))
    }

    /// Another organization's cluster is "not found".
    pub async fn cluster(&self, caller: &Caller, id: Uuid) -> Result<Cluster, DomainError> {
        self.parts
            .store
            .cluster(caller.organization_id, id)
            .await?
            .ok_or(DomainError::NotFound("cluster"))
    }

    /// Drops the data keys of every cluster this process holds that is no longer available
    /// (paused, made inaccessible or deleted by another instance); `serve` runs it every
    /// second, so no instance keeps a key it should not hold.
    pub async fn sweep_data_keys(&self) -> Result<usize, DomainError> {
        let parts = &self.parts;
        let held = parts.ring.held();
        if held.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
        let states = parts.store.cluster_states(&ids).await?;
        let mut dropped = 0;
        for (id, keys) in held {
            let available = states
                .iter()
                .any(|(c, state)| *c == id && *state == ClusterState::Available);
            if !available {
                parts.ring.drop_if_unchanged(id, &keys);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Whether this process holds the cluster's data keys.
    pub fn holds_data_keys(&self, cluster: Uuid) -> bool {
        self.parts.ring.holds(cluster)
    }

    /// Whether an upload holds memory now (the memory-trim worker waits for none).
    pub fn uploads_in_progress(&self) -> bool {
        self.parts.upload_memory.in_use()
    }

    /// How many data-key calls the KMS got for clusters and backups.
    pub fn cluster_kms_calls(&self) -> u64 {
        self.parts.kms_calls.load(Ordering::Relaxed)
    }

    pub(super) async fn move_cluster(
        &self,
        caller: &Caller,
        cluster: &Cluster,
        from: &[ClusterState],
        to: ClusterState,
        last_error: Option<String>,
        (action, outcome, mut detail, cause): (
            &'static str,
            Outcome,
            serde_json::Value,
            Option<ClusterCause>,
        ),
    ) -> Result<bool, DomainError> {
        // Every cluster event names its cluster and its project (the audit log filters by
        // project).
        if let Some(fields) = detail.as_object_mut() {
            fields
                .entry("name")
                .or_insert_with(|| json!(cluster.name.as_str()));
        }
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            action,
            format!("cluster/{}", cluster.id),
        )
        .outcome(outcome)
        .detail(detail)
        .in_project(cluster.project_id)
        .notifies(cause.map(|cause| {
            Notice::Cluster(ClusterAlert {
                cluster_id: cluster.id,
                project_id: cluster.project_id,
                name: cluster.name.as_str().to_owned(),
                cause,
            })
        }));
        Ok(self
            .parts
            .store
            .transition(
                cluster.organization_id,
                cluster.id,
                from,
                to,
                last_error,
                audit,
            )
            .await?)
    }

    /// Pause drops the data keys (R10). Pausing a paused cluster changes nothing.
    pub async fn pause_cluster(&self, caller: &Caller, id: Uuid) -> Result<Cluster, DomainError> {
        let cluster = self.cluster(caller, id).await?;
        caller.require_owner("pause clusters")?;
        if cluster.state == ClusterState::Paused {
            return Ok(cluster);
        }
        use ClusterState as S;
        let from = [S::Available, S::Pausing, S::Resuming, S::Inaccessible];
        if !from.contains(&cluster.state) {
            return Err(wrong_state(
                &cluster,
                "only a running cluster can be paused",
            ));
        }
        let moved = self
            .move_cluster(
                caller,
                &cluster,
                &from,
                S::Paused,
                cluster.last_error.clone(),
                (
                    "cluster.paused",
                    Outcome::Success,
                    json!({ "from": cluster.state.as_str() }),
                    None,
                ),
            )
            .await?;
        self.parts.ring.drop_keys(id);
        if !moved {
            return Err(wrong_state(
                &self.cluster(caller, id).await?,
                "it changed meanwhile",
            ));
        }
        self.cluster(caller, id).await
    }

    /// Resume unwraps every region's data key through its KMS; if any fails the cluster stays
    /// paused and the problem names each region, key and KMS error (R10, R11).
    pub async fn resume_cluster(&self, caller: &Caller, id: Uuid) -> Result<Cluster, DomainError> {
        let cluster = self.cluster(caller, id).await?;
        caller.require_owner("resume clusters")?;
        use ClusterState as S;
        if cluster.state == S::Available {
            return Ok(cluster);
        }
        let from = [S::Paused, S::Inaccessible, S::Resuming];
        if !from.contains(&cluster.state) {
            return Err(wrong_state(
                &cluster,
                "only a paused or inaccessible cluster can be resumed",
            ));
        }
        let started = self
            .move_cluster(
                caller,
                &cluster,
                &from,
                S::Resuming,
                None,
                (
                    "cluster.resume_started",
                    Outcome::Success,
                    json!({ "from": cluster.state.as_str() }),
                    None,
                ),
            )
            .await?;
        if !started {
            return Err(wrong_state(
                &self.cluster(caller, id).await?,
                "it changed meanwhile",
            ));
        }
        let back_to = if cluster.state == S::Inaccessible {
            S::Inaccessible
        } else {
            S::Paused
        };
        let opened = match self.open_cluster_keys(&cluster).await {
            Ok(opened) => opened,
            Err(own) => {
                // The console's own failure (its database), not the customer's KMS: no
                // `resume_failed` alert blaming the key. The cluster goes back if it can; if
                // the database is down it stays `resuming`, from which a resume may start again.
                tracing::error!(error = %own, cluster = %cluster.id, "a resume could not read what it needs");
                let _ = self
                    .move_cluster(
                        caller,
                        &cluster,
                        &[S::Resuming],
                        back_to,
                        None,
                        (
                            "cluster.resume_interrupted",
                            Outcome::Failure,
                            json!({ "reason": "the console's database could not be read" }),
                            None,
                        ),
                    )
                    .await;
                return Err(own);
            }
        };
        let keys = match opened {
            Ok(keys) => {
                if let Err(err) = self.key_service.note_keys_work(&cluster).await {
                    tracing::warn!(error = %err, cluster = %cluster.id, "could not record that the cluster's keys work again");
                }
                keys
            }
            Err(failures) => {
                let last_error = describe_failures(&failures);
                self.move_cluster(
                    caller,
                    &cluster,
                    &[S::Resuming],
                    back_to,
                    Some(last_error),
                    (
                        "cluster.resume_failed",
                        Outcome::Failure,
                        json!({ "failures": failure_detail(&failures) }),
                        Some(ClusterCause::ResumeFailed {
                            failures: Some(json!(failure_detail(&failures))),
                            error: None,
                        }),
                    ),
                )
                .await?;
                return Err(DomainError::KeyUnusable {
                    action: "resume the cluster",
                    failures,
                });
            }
        };
        let parts = &self.parts;
        let refs: Vec<(Region, &PlaintextKey)> = keys.iter().map(|(r, k)| (r.clone(), k)).collect();
        if let Err(err) = parts.driver.attach(&cluster, &refs).await {
            let said = public_text(&err);
            self.move_cluster(
                caller,
                &cluster,
                &[S::Resuming],
                back_to,
                Some(said.clone()),
                (
                    "cluster.resume_failed",
                    Outcome::Failure,
                    json!({ "error": said }),
                    Some(ClusterCause::ResumeFailed {
                        failures: None,
                        error: Some(said.clone()),
                    }),
                ),
            )
            .await?;
            return Err(err);
        }
        drop(refs);
        // Keys go into memory only once the cluster is recorded available, and come out again
        // if it was paused, deleted or made inaccessible meanwhile.
        let resumed = self
            .move_cluster(
                caller,
                &cluster,
                &[S::Resuming],
                S::Available,
                None,
                (
                    "cluster.resumed",
                    Outcome::Success,
                    json!({ "regions": cluster.regions.len() }),
                    None,
                ),
            )
            .await?;
        if !resumed {
            return Err(wrong_state(
                &self.cluster(caller, id).await?,
                "it changed while it was resuming",
            ));
        }
        parts.ring.put(id, keys);
        let now = self.cluster(caller, id).await?;
        if now.state != S::Available {
            parts.ring.drop_keys(id);
        }
        Ok(now)
    }

    /// Every region's data key, unwrapped; or every region that failed (the outer error: the
    /// console's own, see `unwrap_data_key`).
    pub(super) async fn open_cluster_keys(
        &self,
        cluster: &Cluster,
    ) -> Result<Result<ClusterKeys, Vec<RegionFailure>>, DomainError> {
        let mut keys = Vec::new();
        let mut failures = Vec::new();
        for region in &cluster.regions {
            let context = Self::data_key_context(
                cluster.organization_id,
                cluster.project_id,
                cluster.id,
                &region.region,
                "cluster-data",
            );
            match self
                .unwrap_data_key(cluster.organization_id, region, &context)
                .await?
            {
                Ok(key) => keys.push((region.region.clone(), key)),
                Err(failed) => failures.push(failed),
            }
        }
        Ok(if failures.is_empty() {
            Ok(ClusterKeys::new(keys))
        } else {
            Err(failures)
        })
    }

    /// The data keys of a cluster this process serves: from memory, or unwrapped once when
    /// another instance resumed it. Refused unless the cluster is available.
    pub(super) async fn serving_keys(
        &self,
        cluster: &Cluster,
    ) -> Result<Arc<ClusterKeys>, DomainError> {
        let parts = &self.parts;
        if cluster.state != ClusterState::Available {
            parts.ring.drop_keys(cluster.id);
            return Err(wrong_state(
                cluster,
                "its data can be read and written only while it is available (resume it first)",
            ));
        }
        if let Some(keys) = parts.ring.get(cluster.id) {
            return Ok(keys);
        }
        match self.open_cluster_keys(cluster).await? {
            Ok(keys) => Ok(parts.ring.put(cluster.id, keys)),
            Err(failures) => Err(DomainError::KeyUnusable {
                action: "open the cluster's data",
                failures,
            }),
        }
    }

    /// Deletes the cluster and its data; its backups stay until they are deleted.
    pub async fn delete_cluster(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        let cluster = self.cluster(caller, id).await?;
        caller.require_owner("delete clusters")?;
        let parts = &self.parts;
        // A backup being taken reads the cluster's data: deleting it now would lose the
        // backup (the newest is the one being taken, if any).
        let newest = parts
            .store
            .backups(
                caller.organization_id,
                id,
                PageRequest {
                    size: 1,
                    after: None,
                },
            )
            .await?;
        if let Some(taking) = newest
            .first()
            .filter(|b| b.state == super::BackupState::Creating)
        {
            return Err(DomainError::Conflict {
                rule: Rule::BackupState,
                field: None,
                detail: format!(
                    "Backup {} of cluster \"{}\" is being taken ({} of {} objects copied): \
                     delete the cluster once it is done, or it would be lost.",
                    taking.id,
                    cluster.name.as_str(),
                    taking.objects_copied,
                    taking.object_count
                ),
            });
        }
        if cluster.state != ClusterState::Deleting {
            let from: Vec<ClusterState> = ClusterState::ALL.to_vec();
            self.move_cluster(
                caller,
                &cluster,
                &from,
                ClusterState::Deleting,
                None,
                (
                    "cluster.delete_started",
                    Outcome::Success,
                    json!({ "from": cluster.state.as_str() }),
                    None,
                ),
            )
            .await?;
        }
        parts.ring.drop_keys(id);
        parts.driver.destroy(&cluster).await?;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "cluster.deleted",
            format!("cluster/{id}"),
        )
        .detail(json!({ "name": cluster.name.as_str() }))
        .in_project(cluster.project_id);
        parts
            .store
            .delete_cluster(caller.organization_id, id, audit)
            .await?;
        Ok(())
    }
}

/// What a failure may say to clients and in `last_error`: storage and database causes stay
/// in the log.
pub(super) fn public_text(err: &DomainError) -> String {
    match err {
        DomainError::Storage(why) => {
            tracing::warn!(error = %why, "object storage failed");
            "object storage could not be reached".into()
        }
        DomainError::Store(why) => {
            tracing::warn!(error = %why, "the database failed");
            "the console's database could not be reached".into()
        }
        other => other.to_string(),
    }
}

fn failure(region: &Region, key: Option<&EncryptionKey>, message: String) -> RegionFailure {
    RegionFailure {
        region: region.to_string(),
        key: key.map_or_else(|| PLATFORM_KEY.into(), |k| k.key_ref.display()),
        error: crate::domain::kms::KmsError::Other {
            code: "Unavailable".into(),
            message,
        },
    }
}

/// `region: key: CODE: message`, one per failed region.
pub fn describe_failures(failures: &[RegionFailure]) -> String {
    failures
        .iter()
        .map(|f| {
            format!(
                "{}: key {}: {}: {}",
                f.region,
                f.key,
                f.error.code(),
                f.error
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn failure_detail(failures: &[RegionFailure]) -> Vec<serde_json::Value> {
    failures
        .iter()
        .map(|f| json!({ "region": f.region, "key": f.key, "code": f.error.code() }))
        .collect()
}

/// How long a key's rotation status, once asked, is shown without asking the KMS again.
const ROTATION_FRESH: chrono::Duration = chrono::Duration::minutes(5);

impl Clusters {
    /// Whether the KMS rotates the key: asked at most every five minutes per key, so page
    /// views do not each call the KMS.
    async fn rotation_status(&self, key: &EncryptionKey) -> Option<bool> {
        let parts = &self.parts;
        let now = self.clock.now();
        if let Ok(known) = parts.rotation.lock()
            && let Some((at, enabled)) = known.get(&key.id)
            && now - *at < ROTATION_FRESH
        {
            return *enabled;
        }
        let enabled = match self.provider_for(&key.key_ref) {
            Ok(provider) => provider.rotation_enabled(&key.key_ref).await.ok().flatten(),
            Err(_) => None,
        };
        if let Ok(mut known) = parts.rotation.lock() {
            if known.len() > 10_000 {
                known.clear();
            }
            known.insert(key.id, (now, enabled));
        }
        enabled
    }
}

/// What the cluster page shows about each region's key (R9: rotation happens in the KMS;
/// the console only shows whether it is on).
pub struct RegionKeyFacts {
    pub region: String,
    pub key_ref: String,
    pub key_id: Option<Uuid>,
    pub status: Option<KeyStatus>,
    /// `None` when the KMS does not say (or could not be asked).
    pub rotation_enabled: Option<bool>,
}

impl Clusters {
    pub async fn cluster_key_facts(
        &self,
        caller: &Caller,
        cluster: &Cluster,
    ) -> Result<Vec<RegionKeyFacts>, DomainError> {
        let mut facts = Vec::new();
        for region in &cluster.regions {
            let key = match region.key_id {
                Some(id) => self.keys.key(caller.organization_id, id).await?,
                None => None,
            };
            let rotation_enabled = match &key {
                Some(key) => self.rotation_status(key).await,
                None => None,
            };
            facts.push(RegionKeyFacts {
                region: region.region.to_string(),
                key_ref: region
                    .key_ref
                    .clone()
                    .unwrap_or_else(|| PLATFORM_KEY.to_owned()),
                key_id: region.key_id,
                status: key.map(|k| k.status),
                rotation_enabled,
            });
        }
        Ok(facts)
    }
}
