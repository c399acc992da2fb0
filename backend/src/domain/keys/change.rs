//! Changing a key in place (owners only): **Replace** tests a new key for the same provider
//! and region, as Test Encryption Key and Create does, then saves it as the region's key and
//! starts moving the old key's data keys to it; **Re-wrap** moves a key's data keys to its
//! current version. The `rewrap` job (`clusters::rewrap_job`) does the moving.

use serde_json::json;
use uuid::Uuid;

use super::checks::{Check, CheckOutcome, Checklist, Progress};
use super::rewrap::{Rewrap, RewrapState};
use super::service::{one_key_per_region, pin_tenant, request_label};
use super::{EncryptionKey, KeyRequestInput, Keys};
use crate::domain::audit::AuditDraft;
use crate::domain::error::{Constraint, Rule, StoreError};
use crate::domain::identity::Caller;
use crate::domain::kms::PlaintextKey;
use crate::domain::ports::ClusterStore;
use crate::domain::{DomainError, FieldError};

/// A replacement that started: the new key, what its checks said, and the change.
#[derive(Debug)]
pub struct Replacement {
    pub key: EncryptionKey,
    pub checklist: Checklist,
    pub rewrap: Rewrap,
}

fn key_change(detail: String) -> DomainError {
    DomainError::Conflict {
        rule: Rule::KeyChange,
        field: None,
        detail,
    }
}

impl Keys {
    fn data_keys(&self) -> Result<&dyn ClusterStore, DomainError> {
        self.clusters
            .get()
            .map(|store| store.as_ref())
            .ok_or_else(|| {
                DomainError::invalid("key_id", "clusters are not enabled on this console")
            })
    }

    /// Refuses a change of a key that was replaced, or that a running change involves.
    async fn may_change(&self, key: &EncryptionKey) -> Result<(), DomainError> {
        if let Some(successor) = key.replaced_by {
            return Err(key_change(format!(
                "This key was replaced by key {successor}: change that one instead."
            )));
        }
        if let Some(running) = self.running_change(key).await? {
            return Err(key_change(format!(
                "A change of this key is running ({} of {} data keys moved): wait until it ends.",
                running.done, running.total
            )));
        }
        Ok(())
    }

    async fn running_change(&self, key: &EncryptionKey) -> Result<Option<Rewrap>, DomainError> {
        let Some(store) = self.clusters.get() else {
            return Ok(None);
        };
        Ok(store
            .latest_rewraps(key.organization_id, &[key.id])
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r.state == RewrapState::Rewrapping))
    }

    /// Deleting a key (or moving what a replaced key still wraps) is refused while a change
    /// moves data keys from or to it.
    pub(super) async fn refuse_while_changing(
        &self,
        key: &EncryptionKey,
    ) -> Result<(), DomainError> {
        match self.running_change(key).await? {
            Some(running) => Err(key_change(format!(
                "A change of this key is running ({} of {} data keys moved): it can be deleted \
                 once the change ends and nothing it wraps remains.",
                running.done, running.total
            ))),
            None => Ok(()),
        }
    }

    fn new_rewrap(&self, caller: &Caller, from: &EncryptionKey, to: Uuid) -> Rewrap {
        Rewrap {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            project_id: from.project_id,
            from_key_id: from.id,
            to_key_id: to,
            state: RewrapState::Rewrapping,
            target_version: None,
            total: 0,
            done: 0,
            failed: 0,
            failures: Vec::new(),
            started_by: caller.actor.label(),
            started_at: self.clock.now(),
            finished_at: None,
        }
    }

    /// Replace key: the new key (the same body as creating one) must be for the same provider
    /// and region and pass every check; then it becomes the region's key (R4 counts it, new
    /// clusters use it) and the old key's data keys move to it in the background. The old
    /// key stays, watched, until nothing it wrapped remains.
    pub async fn replace_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
        input: &KeyRequestInput,
        progress: Option<&dyn Progress>,
    ) -> Result<Replacement, DomainError> {
        let old = self.encryption_key(caller, project_id, key_id).await?;
        caller.require_owner("change encryption keys")?;
        let request = self.key_request(caller, project_id, input).await?;
        let mut wrong = Vec::new();
        if request.key_ref.provider() != old.key_ref.provider() {
            wrong.push(FieldError::new(
                "provider",
                format!(
                    "must be \"{}\", the provider of the key it replaces (a region's key is \
                     replaced by a key of the same KMS)",
                    old.key_ref.provider().as_str()
                ),
            ));
        }
        if request.region != old.region {
            wrong.push(FieldError::new(
                "region",
                format!("must be {}, the region of the key it replaces", old.region),
            ));
        }
        if request.key_ref.display() == old.key_ref.display() {
            let field = match old.key_ref.provider() {
                super::Provider::AwsKms => "key_arn",
                super::Provider::AzureKeyVault | super::Provider::GcpKms => "key_name",
                super::Provider::Local => "key_id",
            };
            wrong.push(FieldError::new(
                field,
                "is the key being replaced: to move its data keys to its current version, \
                 re-wrap it instead",
            ));
        }
        if !wrong.is_empty() {
            return Err(DomainError::Invalid(wrong));
        }
        self.may_change(&old).await?;
        let store = self.data_keys()?;
        let checklist = self
            .run_checks(caller, project_id, &request, progress)
            .await?;
        if !checklist.passed {
            return Err(DomainError::ChecksFailed(checklist));
        }
        // What the job will do with this key, tried once now: wrap a data key that exists
        // (AWS: Encrypt, not GenerateDataKey) and unwrap it again.
        let mut checklist = checklist;
        let check = self
            .rewrap_check(&request.key_ref, caller, project_id)
            .await?;
        let refused = check.outcome == CheckOutcome::Fail;
        checklist.checks.push(check);
        if refused {
            checklist.passed = false;
            return Err(DomainError::ChecksFailed(checklist));
        }
        let mut request = request;
        pin_tenant(&mut request, &checklist)?;
        let (key, created) = self.new_key(caller, project_id, request);
        let rewrap = self.new_rewrap(caller, &old, key.id);
        let started = AuditDraft::by(
            caller,
            rewrap.started_at,
            "encryption_key.replace_started",
            format!("encryption_key/{}", old.id),
        )
        .detail(json!({
            "rewrap_id": rewrap.id,
            "key": old.key_ref.display(),
            "region": old.region.as_str(),
            "replacement_key_id": key.id,
            "replacement": key.key_ref.display(),
        }))
        .in_project(project_id);
        let rewrap = match store
            .start_rewrap(&rewrap, Some(&key), vec![created, started])
            .await
        {
            Ok(rewrap) => rewrap,
            Err(StoreError::Conflict(Constraint::KeyChange)) => {
                return Err(key_change(
                    "This key was replaced, or a change of it started, meanwhile.".into(),
                ));
            }
            Err(StoreError::Conflict(Constraint::KeyPerRegion)) => {
                return Err(one_key_per_region(&request_label(&key)));
            }
            Err(other) => return Err(other.into()),
        };
        Ok(Replacement {
            key,
            checklist,
            rewrap,
        })
    }

    /// The check Replace adds to the checklist: the new key wraps a data key made here (as
    /// the re-wrap job will, with the same kind of context) and unwraps it to the same bytes.
    async fn rewrap_check(
        &self,
        key: &super::KeyRef,
        caller: &Caller,
        project_id: Uuid,
    ) -> Result<Check, DomainError> {
        let provider = self.provider_for(key)?;
        let probe = PlaintextKey::random();
        let context = self.context(caller, project_id);
        let result = match provider.wrap_data_key(key, &probe, &context).await {
            Ok(wrapped) => provider
                .decrypt_data_key(key, &wrapped, &context)
                .await
                .map(|back| back.same_as(&probe)),
            Err(err) => Err(err),
        };
        let (outcome, detail, code, fix, shows) = match result {
            Ok(true) => (
                CheckOutcome::Pass,
                "An existing data key was wrapped by the new key and unwrapped to the same bytes."
                    .to_owned(),
                None,
                None,
                None,
            ),
            Ok(false) => (
                CheckOutcome::Fail,
                "The data key wrapped by the new key unwrapped to other bytes.".to_owned(),
                None,
                Some("Use another key: this one does not round-trip.".to_owned()),
                None,
            ),
            Err(err) => (
                CheckOutcome::Fail,
                format!("Wrapping an existing data key failed: {err}."),
                Some(err.code().to_owned()),
                Some(match key.provider() {
                    super::Provider::AwsKms => "Allow the platform's account kms:Encrypt on the key (Check my key policy shows the statement), then try again.".to_owned(),
                    super::Provider::AzureKeyVault => "Allow wrapKey and unwrapKey on the key (Key Vault Crypto Service Encryption User), then try again.".to_owned(),
                    super::Provider::GcpKms => "Grant roles/cloudkms.cryptoKeyEncrypterDecrypter on the key to the platform's service account, then try again.".to_owned(),
                    super::Provider::Local => "Enable the key, then try again.".to_owned(),
                }),
                Some(err.key_status()),
            ),
        };
        Ok(Check {
            id: "wrap_existing_data_key",
            title: "Wraps an existing data key and unwraps it (what the re-wrap does)",
            required: true,
            outcome,
            detail,
            code,
            fix,
            shows,
        })
    }

    /// The key the region's slot holds now: following `replaced_by` from `key` to the key
    /// that was not replaced (a chain of replacements ends there).
    async fn current_successor(&self, key: &EncryptionKey) -> Result<Uuid, DomainError> {
        let keys = self.keys.keys(key.organization_id, key.project_id).await?;
        let mut at = key.replaced_by;
        for _ in 0..keys.len() {
            let Some(id) = at else { break };
            match keys.iter().find(|k| k.id == id) {
                Some(next) if next.replaced_by.is_none() => return Ok(next.id),
                Some(next) => at = next.replaced_by,
                None => break,
            }
        }
        Err(key_change(
            "The key that replaced this one no longer exists, so what this key still wraps has no key to move to.".into(),
        ))
    }

    /// Deleting a key that a replaced key still points at, while that one still wraps data
    /// keys, would strand them: refused until they are moved here.
    pub(super) async fn refuse_while_predecessor_wraps(
        &self,
        key: &EncryptionKey,
    ) -> Result<(), DomainError> {
        let keys = self.keys.keys(key.organization_id, key.project_id).await?;
        // Every key whose chain of replacements leads here (A replaced by B, B by this key).
        let mut chain = vec![key.id];
        let mut grew = true;
        while grew {
            grew = false;
            for k in &keys {
                if !chain.contains(&k.id) && k.replaced_by.is_some_and(|to| chain.contains(&to)) {
                    chain.push(k.id);
                    grew = true;
                }
            }
        }
        for old in chain.iter().skip(1) {
            let users = self.key_users(key.organization_id, *old).await?;
            if !users.is_empty() {
                return Err(key_change(format!(
                    "Key {old} was replaced by this one and still wraps the data keys of {}: \
                     move them here first (Move the remaining data keys, on that key's page).",
                    users.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Re-wrap: moves the key's data keys to its current version (after a rotation in Azure
    /// or the local KMS; AWS KMS keeps every backing key and decrypts with the right one, so
    /// an AWS key has nothing to move). On a key that was replaced, it moves what is left
    /// (a replacement that ended `failed`, once what the KMS refused is fixed) to its
    /// successor.
    pub async fn rewrap_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<Rewrap, DomainError> {
        let key = self.encryption_key(caller, project_id, key_id).await?;
        caller.require_owner("change encryption keys")?;
        let provider = self.provider_for(&key.key_ref)?;
        let to = match key.replaced_by {
            Some(_) => {
                self.refuse_while_changing(&key).await?;
                self.current_successor(&key).await?
            }
            None => {
                if !provider.has_versions() {
                    return Err(key_change(
                        "AWS KMS keeps every backing key of a rotated key and decrypts with the one \
                         that encrypted, so an AWS key has nothing to re-wrap. To move to another \
                         key, replace it."
                            .into(),
                    ));
                }
                self.may_change(&key).await?;
                key.id
            }
        };
        let store = self.data_keys()?;
        let rewrap = self.new_rewrap(caller, &key, to);
        let started = AuditDraft::by(
            caller,
            rewrap.started_at,
            "encryption_key.rewrap_started",
            format!("encryption_key/{}", key.id),
        )
        .detail(json!({
            "rewrap_id": rewrap.id,
            "key": key.key_ref.display(),
            "region": key.region.as_str(),
            "to_key_id": to,
        }))
        .in_project(project_id);
        match store.start_rewrap(&rewrap, None, vec![started]).await {
            Ok(rewrap) => Ok(rewrap),
            Err(StoreError::Conflict(Constraint::KeyChange)) => Err(key_change(
                "This key was replaced, or a change of it started, meanwhile.".into(),
            )),
            Err(other) => Err(other.into()),
        }
    }

    /// Re-pin (Azure, owners only): a saved key's vault now answers for another Microsoft
    /// Entra tenant (re-created there, or the subscription moved). The key follows it only
    /// once the vault in the new tenant has unwrapped a data key this key wrapped, which
    /// proves it holds the same key material; otherwise it stays pinned, refused as before.
    /// Either way it is audited.
    pub async fn repin_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<EncryptionKey, DomainError> {
        let key = self.encryption_key(caller, project_id, key_id).await?;
        caller.require_owner("re-pin encryption keys")?;
        let super::KeyRef::Azure {
            vault,
            key_name,
            tenant: Some(pinned),
        } = &key.key_ref
        else {
            return Err(DomainError::invalid(
                "key_id",
                "only an Azure Key Vault key, saved with its vault's tenant, can be re-pinned",
            ));
        };
        let provider = self.provider_for(&key.key_ref)?;
        self.refuse_while_changing(&key).await?;
        let unpinned = super::KeyRef::Azure {
            vault: vault.clone(),
            key_name: key_name.clone(),
            tenant: None,
        };
        let found = match provider.describe(&unpinned).await {
            Ok(described) => described.azure.map(|a| a.tenant).unwrap_or_default(),
            Err(err) => {
                return Err(key_change(format!(
                    "The vault could not be read where it is now ({}): the key stays pinned to tenant {pinned}.",
                    err.code()
                )));
            }
        };
        if found.is_empty() || &found == pinned {
            return Err(key_change(format!(
                "The vault still answers for tenant {pinned}: there is nothing to re-pin."
            )));
        }
        let refuse =
            async |why: String, code: Option<&str>| -> Result<EncryptionKey, DomainError> {
                let audit = AuditDraft::by(
                    caller,
                    self.clock.now(),
                    "encryption_key.repin_refused",
                    format!("encryption_key/{}", key.id),
                )
                .outcome(crate::domain::audit::Outcome::Failure)
                .detail(json!({ "from_tenant": pinned, "to_tenant": found, "code": code }))
                .in_project(project_id);
                self.record(audit).await?;
                Err(key_change(why))
            };
        // A data key this key wrapped, and what it is bound to.
        let store = self.data_keys()?;
        let mut proof = None;
        for cluster in store
            .clusters_using_key(caller.organization_id, key.id)
            .await?
        {
            if let Some(region) = cluster.regions.iter().find(|r| r.key_id == Some(key.id)) {
                let context = crate::domain::clusters::Clusters::data_key_context(
                    cluster.organization_id,
                    cluster.project_id,
                    cluster.id,
                    &region.region,
                    "cluster-data",
                );
                proof = Some((
                    format!("cluster/{}/{}", cluster.id, region.region),
                    region.wrapped_key.clone(),
                    context,
                ));
                break;
            }
        }
        if proof.is_none()
            && let Some(backup) = store
                .backups_using_key(caller.organization_id, key.id)
                .await?
                .into_iter()
                .next()
        {
            let context = crate::domain::clusters::Clusters::data_key_context(
                backup.organization_id,
                backup.project_id,
                backup.id,
                &backup.region.region,
                "backup",
            );
            proof = Some((
                format!("backup/{}", backup.id),
                backup.region.wrapped_key.clone(),
                context,
            ));
        }
        let Some((data_key, wrapped, context)) = proof else {
            return refuse(
                format!(
                    "No data key is wrapped under this key, so nothing can prove that the vault in tenant {found} holds the same key material: delete the key and create it again (nothing uses it)."
                ),
                None,
            )
            .await;
        };
        // The proof is asked of the tenant that will be recorded, not of whichever the vault
        // names by then.
        let candidate = super::KeyRef::Azure {
            vault: vault.clone(),
            key_name: key_name.clone(),
            tenant: Some(found.clone()),
        };
        if let Err(err) = provider
            .decrypt_data_key(&candidate, &wrapped, &context)
            .await
        {
            return refuse(
                format!(
                    "The vault in tenant {found} could not unwrap a data key this key wrapped ({}: {err}): it does not hold the same key material, so the key stays pinned to tenant {pinned}.",
                    err.code()
                ),
                Some(err.code()),
            )
            .await;
        }
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "encryption_key.repinned",
            format!("encryption_key/{}", key.id),
        )
        .detail(json!({
            "key": key.key_ref.display(),
            "from_tenant": pinned,
            "to_tenant": found,
            "proved_with": data_key,
        }))
        .in_project(project_id);
        if !self
            .keys
            .repin_key(caller.organization_id, key.id, pinned, &found, audit)
            .await?
        {
            return Err(key_change(
                "The key was re-pinned (or changed) meanwhile.".into(),
            ));
        }
        self.encryption_key(caller, project_id, key_id).await
    }

    /// The latest change from or to the key, if any (anyone who can see the key).
    pub async fn key_change(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<Rewrap>, DomainError> {
        let key = self.encryption_key(caller, project_id, key_id).await?;
        let Some(store) = self.clusters.get() else {
            return Ok(None);
        };
        Ok(store
            .latest_rewraps(caller.organization_id, &[key.id])
            .await?
            .into_iter()
            .next()
            .map(|(_, r)| r))
    }

    /// The latest change of each of these keys of the organization (a page of Key Status).
    pub async fn key_changes(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Rewrap)>, DomainError> {
        let Some(store) = self.clusters.get() else {
            return Ok(Vec::new());
        };
        Ok(store.latest_rewraps(organization_id, key_ids).await?)
    }
}
