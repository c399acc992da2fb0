//! The keys feature as a service (`Keys`) and its use cases: policies to paste, Test
//! Encryption Key, Test Encryption Key and Create, list, read, delete and Check now. The
//! monitor, Key Status, the versions in use and the development KMS are its methods too
//! (`monitor.rs`, `status_report.rs`, `versions.rs`, `../local_kms.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::arn::KmsKeyArn;
use super::azure::{self, AzureSetup};
use super::checks::{self, Checklist, Progress};
use super::gcp::{self, GcpSetup};
use super::monitor::MonitorStats;
use super::policy::{self, AccessMode, AwsAccessPolicies, PolicyScope};
use super::region::Region;
use super::{EncryptionKey, KeyRef, KeyRequest, KeyRequestInput, KeyStatus, KmsProviders};
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::clock::Clock;
use crate::domain::error::Rule;
use crate::domain::error::{Constraint, StoreError};
use crate::domain::identity::Caller;
use crate::domain::kms::{EncryptionContext, KeyProvider};
use crate::domain::local_kms::LocalKeyAdmin;
use crate::domain::notice::{KeyChange, Notice};
use crate::domain::ports::{AuditStore, ClusterStore, JobStore, KeyStore, ProjectStore};
use crate::domain::projects::Project;
use crate::domain::{DomainError, Environment, FieldError};

impl KmsProviders {
    /// The adapter for the key's KMS, refused clearly when it is not configured (and the
    /// local KMS in production, R3).
    pub(crate) fn provider_for(
        &self,
        key: &KeyRef,
        environment: crate::domain::Environment,
    ) -> Result<Arc<dyn KeyProvider>, crate::domain::DomainError> {
        match key {
            KeyRef::Aws { .. } => self.aws.clone().ok_or_else(|| unconfigured("AWS KMS is not configured on this console (the operator sets CMEK_AWS_ACCOUNT_ID).")),
            KeyRef::Azure { .. } => self.azure.clone().ok_or_else(|| unconfigured("Azure Key Vault is not configured on this console (the operator sets CMEK_AZURE_APP_ID and CMEK_AZURE_CLIENT_SECRET).")),
            KeyRef::Gcp { .. } => self.gcp.clone().ok_or_else(|| unconfigured("Google Cloud KMS is not configured on this console (the operator sets CMEK_GCP_SERVICE_ACCOUNT and CMEK_GCP_CREDENTIALS_FILE).")),
            KeyRef::Local { .. } => {
                crate::domain::local_kms::refuse_in_production(environment)?;
                self.local.clone().ok_or_else(|| unconfigured("The local KMS is not available."))
            }
        }
    }
}

fn unconfigured(detail: &str) -> crate::domain::DomainError {
    crate::domain::DomainError::invalid("provider", detail)
}

/// An Azure key is saved with the tenant its vault was found in: the vault is the customer's
/// only while it stays there. A key whose tenant was not seen is not saved.
pub(super) fn pin_tenant(
    request: &mut KeyRequest,
    checklist: &Checklist,
) -> Result<(), DomainError> {
    if let KeyRef::Azure { tenant, .. } = &mut request.key_ref {
        match &checklist.tenant {
            Some(found) => *tenant = Some(found.clone()),
            None => {
                return Err(DomainError::invalid(
                    "vault_name",
                    "the vault's Microsoft Entra tenant could not be confirmed: test the key again",
                ));
            }
        }
    }
    Ok(())
}

fn unavailable(detail: &str) -> DomainError {
    DomainError::invalid("provider", detail)
}

/// The keys feature: over the ports it needs (key, job, project and audit ports, the shared
/// rate counters, the cluster store's port to read what keys protect), the KMS adapters and
/// the clock; nothing of the rest of the console.
#[derive(Clone)]
pub struct Keys {
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) jobs: Arc<dyn JobStore>,
    pub(crate) projects: Arc<dyn ProjectStore>,
    pub(crate) audit: Arc<dyn AuditStore>,
    /// The shared rate counters (Check now presses).
    pub(crate) windows: crate::domain::rate::Windows,
    /// The cluster store's port, once clusters are turned on: what a key protects.
    pub(crate) clusters: Arc<OnceLock<Arc<dyn ClusterStore>>>,
    pub(crate) kms: KmsProviders,
    pub(crate) local_admin: Option<Arc<dyn LocalKeyAdmin>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) environment: Environment,
    /// How long Check now waits before the probe that confirms a revocation it saw.
    pub(crate) confirm_delay: Duration,
    /// How long Test Encryption Key waits out an access refusal a fresh grant typically
    /// causes (`CMEK_KEY_TEST_PROPAGATION`; zero: it does not).
    pub(crate) propagation: Duration,
    /// Keys the monitor of this process has checked (for metrics and tests).
    pub(crate) monitor_checks: Arc<MonitorStats>,
    /// Wakes this process's reconciliation worker when a status change queued one.
    pub(crate) reactions: Arc<Notify>,
}

impl Keys {
    /// Another organization's project is "not found", as everywhere.
    pub(crate) async fn project(&self, caller: &Caller, id: Uuid) -> Result<Project, DomainError> {
        crate::domain::projects_service::find(self.projects.as_ref(), caller, id).await
    }

    pub(crate) async fn record(&self, draft: AuditDraft) -> Result<(), DomainError> {
        Ok(self.audit.append_audit(draft).await?)
    }

    pub(crate) fn provider_for(&self, key: &KeyRef) -> Result<Arc<dyn KeyProvider>, DomainError> {
        self.kms.provider_for(key, self.environment)
    }

    pub(crate) fn refuse_local_kms_in_production(&self) -> Result<(), DomainError> {
        crate::domain::local_kms::refuse_in_production(self.environment)
    }

    /// Tells this process's reconciliation worker that a reaction was queued.
    pub(crate) fn wake_reactions(&self) {
        self.reactions.notify_one();
    }
}

impl Keys {
    pub fn aws_account_id(&self) -> Option<&str> {
        self.kms.aws_account_id.as_deref()
    }

    /// The JSON to paste into AWS for this project (step 2 of the wizard).
    pub async fn aws_access_policies(
        &self,
        caller: &Caller,
        project_id: Uuid,
        region: &str,
        mode: Option<&str>,
        key_arn: Option<&str>,
        customer_account: Option<&str>,
    ) -> Result<AwsAccessPolicies, DomainError> {
        self.cmek_project(caller, project_id).await?;
        let account = self.kms.aws_account_id.clone().ok_or_else(|| unavailable(
            "AWS KMS is not configured on this console (the operator sets CMEK_AWS_ACCOUNT_ID).",
        ))?;
        let scope = match region {
            "*" => Ok(PolicyScope::AllRegions),
            code => Region::parse("region", code).map(PolicyScope::Region),
        };
        let mode = AccessMode::parse("mode", mode);
        let key = key_arn
            .filter(|k| !k.is_empty())
            .map(|k| KmsKeyArn::parse("key_arn", k))
            .transpose();
        let customer = match customer_account.filter(|a| !a.is_empty()) {
            Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(a)),
            Some(_) => Err(FieldError::new(
                "account_id",
                "an AWS account ID is 12 digits",
            )),
            None => Ok(None),
        };
        match (scope, mode, key, customer) {
            (Ok(scope), Ok(mode), Ok(key), Ok(customer)) => Ok(policy::aws_policies(
                mode,
                &scope,
                &account,
                &caller.organization_id.to_string(),
                key.as_ref(),
                customer,
            )),
            (scope, mode, key, customer) => Err(DomainError::Invalid(
                [scope.err(), mode.err(), key.err(), customer.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        }
    }

    /// The policy doctor (AWS): what is missing or wrong in a pasted key policy (or a role's
    /// trust and permission policies) for this project, region and mode. Reads nothing
    /// from AWS and sends nothing anywhere.
    pub async fn aws_policy_check(
        &self,
        caller: &Caller,
        project_id: Uuid,
        input: &super::policy_doctor::PolicyCheckInput,
    ) -> Result<super::policy_doctor::Diagnosis, DomainError> {
        self.cmek_project(caller, project_id).await?;
        let account = self.kms.aws_account_id.clone().ok_or_else(|| unavailable(
            "AWS KMS is not configured on this console (the operator sets CMEK_AWS_ACCOUNT_ID).",
        ))?;
        let scope = match input.region.trim() {
            "*" => Ok(PolicyScope::AllRegions),
            code => Region::parse("region", code).map(PolicyScope::Region),
        };
        let mode = match input.mode.as_deref() {
            // Given, it must be one of the two (absent means key_policy).
            Some("") => Err(FieldError::new(
                "mode",
                "must be \"key_policy\" or \"role\"",
            )),
            other => AccessMode::parse("mode", other),
        };
        let sized = |field: &str, text: Option<&str>, required: bool| match text {
            Some(t) if t.chars().count() > super::policy_doctor::MAX_POLICY_CHARS => {
                Err(FieldError::new(field, "must be at most 16384 characters"))
            }
            Some(t) if !t.trim().is_empty() => Ok(()),
            _ if required => Err(FieldError::new(field, "paste the policy to check")),
            _ => Ok(()),
        };
        let policy = sized("policy", Some(input.policy.as_str()), true);
        let permission = sized(
            "permission_policy",
            input.permission_policy.as_deref(),
            false,
        );
        match (scope, mode, policy, permission) {
            (Ok(scope), Ok(mode), Ok(()), Ok(())) => {
                let organization = caller.organization_id.to_string();
                let needs = super::policy_doctor::Needs {
                    mode,
                    scope: &scope,
                    platform_account: &account,
                    organization_id: &organization,
                };
                Ok(super::policy_doctor::diagnose(
                    &needs,
                    &input.policy,
                    input.permission_policy.as_deref(),
                ))
            }
            (scope, mode, policy, permission) => Err(DomainError::Invalid(
                [scope.err(), mode.err(), policy.err(), permission.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        }
    }

    /// What the Azure wizard shows for this project and region (steps 2 and 3): the platform's
    /// Entra application, the commands, the full key name for a prefix, the checklist and the
    /// Resource Manager template.
    pub async fn azure_setup(
        &self,
        caller: &Caller,
        project_id: Uuid,
        region: &str,
        key_name_prefix: Option<&str>,
    ) -> Result<AzureSetup, DomainError> {
        self.cmek_project(caller, project_id).await?;
        let app = self.kms.azure_app.clone().ok_or_else(|| unavailable(
            "Azure Key Vault is not configured on this console (the operator sets CMEK_AZURE_APP_ID and CMEK_AZURE_CLIENT_SECRET).",
        ))?;
        let region = Region::parse_azure("region", region);
        let key_name = match (&region, key_name_prefix.filter(|p| !p.trim().is_empty())) {
            (Ok(region), Some(prefix)) => {
                azure::full_key_name("key_name_prefix", prefix, project_id, region).map(Some)
            }
            _ => Ok(None),
        };
        match (region, key_name) {
            (Ok(region), Ok(key_name)) => {
                Ok(azure::setup(&region, &app.name, &app.id, key_name.as_ref()))
            }
            (region, key_name) => Err(DomainError::Invalid(
                [region.err(), key_name.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        }
    }

    pub fn azure_app(&self) -> Option<&super::AzureApp> {
        self.kms.azure_app.as_ref()
    }

    /// What the Google Cloud wizard shows for this project and region: the platform's service
    /// account, the key's full name (with this project's suffix) when its parts are given, the
    /// commands and the Terraform configuration. Parts not given yet show as placeholders.
    pub async fn gcp_setup(
        &self,
        caller: &Caller,
        project_id: Uuid,
        region: &str,
        parts: gcp::KeyParts<'_>,
    ) -> Result<GcpSetup, DomainError> {
        self.cmek_project(caller, project_id).await?;
        let account = self.kms.gcp_service_account.clone().ok_or_else(|| unavailable(
            "Google Cloud KMS is not configured on this console (the operator sets CMEK_GCP_SERVICE_ACCOUNT and CMEK_GCP_CREDENTIALS_FILE).",
        ))?;
        // Every problem at once: the parts are checked even when the region is wrong (their
        // rules do not depend on it).
        let region = Region::parse_gcp("region", region);
        let any_region = region
            .clone()
            .or_else(|_| Region::parse_gcp("region", gcp::SOME_REGION));
        let key = match &any_region {
            Ok(r) => gcp::key_for(&parts, project_id, r),
            Err(e) => Err(vec![e.clone()]),
        };
        match (region, key) {
            (Ok(region), Ok(key)) => Ok(gcp::setup(
                &region,
                &account,
                &key,
                gcp::suffix(project_id, &region),
                self.clock.now() + chrono::Duration::days(90),
            )),
            (region, key) => Err(DomainError::Invalid(
                region
                    .err()
                    .into_iter()
                    .chain(key.err().unwrap_or_default())
                    .collect(),
            )),
        }
    }

    pub fn gcp_service_account(&self) -> Option<&str> {
        self.kms.gcp_service_account.as_deref()
    }

    async fn cmek_project(
        &self,
        caller: &Caller,
        project_id: Uuid,
    ) -> Result<crate::domain::projects::Project, DomainError> {
        let project = self.project(caller, project_id).await?;
        if !project.cmek_enabled {
            return Err(DomainError::Conflict {
                rule: Rule::CmekNotEnabled,
                field: None,
                detail: "This project was created without CMEK, so it takes no encryption keys (R1: CMEK is chosen when a project is created).".into(),
            });
        }
        Ok(project)
    }

    pub(super) fn context(&self, caller: &Caller, project_id: Uuid) -> EncryptionContext {
        EncryptionContext::default()
            .with("organization_id", caller.organization_id.to_string())
            .with("project_id", project_id.to_string())
            .with("purpose", "key-test")
    }

    /// Test Encryption Key: runs the checklist, creates nothing (owners only, R2).
    pub async fn test_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        input: &KeyRequestInput,
        progress: Option<&dyn Progress>,
    ) -> Result<Checklist, DomainError> {
        let request = self.key_request(caller, project_id, input).await?;
        self.run_checks(caller, project_id, &request, progress)
            .await
    }

    /// Test Encryption Key and Create: created only when every required check passes (R4:
    /// one key per project, provider and region, also enforced by a unique index).
    pub async fn create_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        input: &KeyRequestInput,
        progress: Option<&dyn Progress>,
    ) -> Result<(EncryptionKey, Checklist), DomainError> {
        let request = self.key_request(caller, project_id, input).await?;
        self.ensure_free_slot(caller, project_id, &request).await?;
        let checklist = self
            .run_checks(caller, project_id, &request, progress)
            .await?;
        if !checklist.passed {
            return Err(DomainError::ChecksFailed(checklist));
        }
        let mut request = request;
        pin_tenant(&mut request, &checklist)?;
        let key = self.save_key(caller, project_id, request).await?;
        Ok((key, checklist))
    }

    /// The TiDB Cloud v1beta form: several regions at once. Every spec is parsed and tested
    /// before any is saved, so a failure leaves nothing half-created.
    pub async fn create_keys(
        &self,
        caller: &Caller,
        project_id: Uuid,
        inputs: &[KeyRequestInput],
    ) -> Result<Vec<EncryptionKey>, DomainError> {
        if inputs.is_empty() {
            return Err(DomainError::invalid(
                "specs",
                "must list at least one region and key",
            ));
        }
        let mut requests: Vec<KeyRequest> = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let request =
                self.key_request(caller, project_id, input)
                    .await
                    .map_err(|err| match err {
                        DomainError::Invalid(fields) => DomainError::Invalid(
                            fields
                                .into_iter()
                                .map(|f| {
                                    FieldError::new(
                                        format!("specs[{i}].{}", spec_field(&f.field)),
                                        f.reason,
                                    )
                                })
                                .collect(),
                        ),
                        other => other,
                    })?;
            if requests.iter().any(|r| r.region == request.region) {
                return Err(DomainError::invalid(
                    &format!("specs[{i}].region"),
                    format!("{} is listed twice", request.region),
                ));
            }
            self.ensure_free_slot(caller, project_id, &request).await?;
            requests.push(request);
        }
        for request in &mut requests {
            let checklist = self.run_checks(caller, project_id, request, None).await?;
            if !checklist.passed {
                return Err(DomainError::ChecksFailed(checklist));
            }
            pin_tenant(request, &checklist)?;
        }
        let (keys, events): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|request| self.new_key(caller, project_id, request))
            .unzip();
        match self.keys.insert_keys(&keys, events).await {
            Ok(()) => Ok(keys),
            Err(StoreError::Conflict(Constraint::KeyPerRegion)) => Err(one_key_per_region(
                &keys
                    .iter()
                    .map(request_label)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            Err(other) => Err(other.into()),
        }
    }

    async fn save_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        request: KeyRequest,
    ) -> Result<EncryptionKey, DomainError> {
        let (key, audit) = self.new_key(caller, project_id, request);
        match self.keys.insert_key(&key, audit).await {
            Ok(()) => Ok(key),
            Err(StoreError::Conflict(Constraint::KeyPerRegion)) => {
                Err(one_key_per_region(&request_label(&key)))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// A key that passed its checks, and the event that records its creation.
    pub(super) fn new_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        request: KeyRequest,
    ) -> (EncryptionKey, AuditDraft) {
        let now = self.clock.now();
        let key = EncryptionKey {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            project_id,
            region: request.region,
            key_ref: request.key_ref,
            status: KeyStatus::Active,
            last_checked_at: Some(now),
            last_error: None,
            rotation_enabled: None,
            replaced_by: None,
            created_by: caller.actor.label(),
            created_at: now,
        };
        let audit = AuditDraft::by(
            caller,
            now,
            "encryption_key.created",
            format!("encryption_key/{}", key.id),
        )
        .detail(serde_json::json!({
            "provider": key.key_ref.provider().as_str(),
            "region": key.region.as_str(),
            "key": key.key_ref.display(),
            "access_mode": key.key_ref.access_mode().map(AccessMode::as_str),
        }))
        .in_project(project_id);
        (key, audit)
    }

    /// R2, a CMEK project, a well-formed request, and a provider this console can reach.
    /// Who may ask for a key test in this project at all (R2 and a CMEK project of the
    /// caller's organization), before any input is read: the streaming wizard answers 403 or
    /// 404 up front, as every other route does, instead of inside its stream.
    pub async fn may_request_keys(
        &self,
        caller: &Caller,
        project_id: Uuid,
    ) -> Result<(), DomainError> {
        caller.require_owner("manage encryption keys")?;
        self.cmek_project(caller, project_id).await?;
        Ok(())
    }

    pub(super) async fn key_request(
        &self,
        caller: &Caller,
        project_id: Uuid,
        input: &KeyRequestInput,
    ) -> Result<KeyRequest, DomainError> {
        caller.require_owner("manage encryption keys")?;
        self.cmek_project(caller, project_id).await?;
        let request = KeyRequest::parse(input, caller.organization_id)?;
        self.provider_for(&request.key_ref)?;
        match &request.key_ref {
            KeyRef::Azure { key_name, .. } => {
                azure::require_suffix("key_name", key_name, project_id, &request.region)
                    .map_err(|e| DomainError::Invalid(vec![e]))?;
            }
            KeyRef::Gcp { name } => {
                gcp::require_suffix("key_name", name, project_id, &request.region)
                    .map_err(|e| DomainError::Invalid(vec![e]))?;
            }
            KeyRef::Aws { .. } | KeyRef::Local { .. } => {}
        }
        Ok(request)
    }

    pub(super) async fn run_checks(
        &self,
        caller: &Caller,
        project_id: Uuid,
        request: &KeyRequest,
        progress: Option<&dyn Progress>,
    ) -> Result<Checklist, DomainError> {
        let provider = self.provider_for(&request.key_ref)?;
        // A grant made a moment ago is refused until it propagates (IAM, RBAC): such a
        // refusal is retried with back-off for up to `propagation`; anything else fails at
        // once.
        let started = std::time::Instant::now();
        let mut attempts = 1u32;
        let mut checklist = loop {
            let checklist = checks::run(
                provider.as_ref(),
                &request.key_ref,
                &request.region,
                &self.context(caller, project_id),
                self.clock.now(),
                progress,
            )
            .await;
            let waited = started.elapsed();
            if checklist.passed || !checklist.awaits_propagation() || waited >= self.propagation {
                break checklist;
            }
            if let (Some(progress), Some(failed)) = (progress, checklist.first_failure()) {
                progress.waiting(attempts, waited, failed);
            }
            let pause = propagation_pause(attempts).min(self.propagation - waited);
            tokio::time::sleep(pause).await;
            attempts += 1;
        };
        if attempts > 1 {
            checklist.waited = started.elapsed();
            checklist.attempts = attempts;
        }
        let failed = checklist.first_failure();
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "encryption_key.tested",
            format!("project/{project_id}"),
        )
        .outcome(if checklist.passed {
            Outcome::Success
        } else {
            Outcome::Failure
        })
        .detail(serde_json::json!({
            "provider": request.key_ref.provider().as_str(),
            "region": request.region.as_str(),
            "key": request.key_ref.display(),
            "failed_check": failed.map(|c| c.id),
            "failed_code": failed.and_then(|c| c.code.clone()),
            "attempts": checklist.attempts,
            "waited_seconds": checklist.waited.as_secs(),
        }));
        self.record(audit).await?;
        Ok(checklist)
    }

    async fn ensure_free_slot(
        &self,
        caller: &Caller,
        project_id: Uuid,
        request: &KeyRequest,
    ) -> Result<(), DomainError> {
        let provider = request.key_ref.provider();
        let taken = self
            .keys
            .keys(caller.organization_id, project_id)
            .await?
            .into_iter()
            .any(|k| {
                k.replaced_by.is_none()
                    && k.key_ref.provider() == provider
                    && k.region == request.region
            });
        if taken {
            return Err(one_key_per_region(&format!(
                "{} in {}",
                provider.title(),
                request.region
            )));
        }
        Ok(())
    }

    pub async fn encryption_keys(
        &self,
        caller: &Caller,
        project_id: Uuid,
    ) -> Result<Vec<EncryptionKey>, DomainError> {
        self.project(caller, project_id).await?;
        Ok(self.keys.keys(caller.organization_id, project_id).await?)
    }

    pub async fn encryption_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<EncryptionKey, DomainError> {
        self.keys
            .key(caller.organization_id, key_id)
            .await?
            .filter(|k| k.project_id == project_id)
            .ok_or(DomainError::NotFound("encryption key"))
    }

    /// Deletes a key, unless a cluster or a backup uses it (409, naming them: their data
    /// keys would become impossible to unwrap).
    pub async fn delete_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<(), DomainError> {
        let key = self.encryption_key(caller, project_id, key_id).await?;
        caller.require_owner("manage encryption keys")?;
        self.refuse_while_changing(&key).await?;
        self.refuse_while_predecessor_wraps(&key).await?;
        let users = self.key_users(caller.organization_id, key_id).await?;
        if !users.is_empty() {
            return Err(key_in_use(&users));
        }
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "encryption_key.deleted",
            format!("encryption_key/{key_id}"),
        )
        .detail(serde_json::json!({ "key": key.key_ref.display(), "region": key.region.as_str() }))
        .in_project(project_id);
        match self
            .keys
            .delete_key(caller.organization_id, key_id, audit)
            .await
        {
            Ok(()) => Ok(()),
            // A cluster or backup took the key meanwhile.
            Err(StoreError::Conflict(Constraint::InUse)) => Err(key_in_use(
                &self.key_users(caller.organization_id, key_id).await?,
            )),
            Err(other) => Err(other.into()),
        }
    }

    /// What uses a key: `cluster "name"` and `backup <id> of "name"`.
    pub(super) async fn key_users(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<String>, DomainError> {
        let Some(parts) = self.clusters.get() else {
            return Ok(Vec::new());
        };
        let mut users: Vec<String> = parts
            .clusters_using_key(organization_id, key_id)
            .await?
            .into_iter()
            .map(|c| format!("cluster \"{}\" ({})", c.name.as_str(), c.id))
            .collect();
        users.extend(
            parts
                .backups_using_key(organization_id, key_id)
                .await?
                .into_iter()
                .map(|b| format!("backup {} of cluster \"{}\"", b.id, b.cluster_name)),
        );
        Ok(users)
    }

    /// The key's status changes, newest first (anyone who can see the key).
    pub async fn key_history(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
        page: crate::domain::page::PageRequest,
    ) -> Result<crate::domain::page::Page<super::StatusChange>, DomainError> {
        self.encryption_key(caller, project_id, key_id).await?;
        let items = self
            .keys
            .key_history(caller.organization_id, key_id, page)
            .await?;
        Ok(page.finish(items, |c| c.id))
    }

    /// Check now: runs the checklist against a saved key and records its status by the
    /// monitor's rule. A revocation seen for the first time is probed again at once (after
    /// `confirm_delay`) and recorded only if the second probe sees it too, so a blip never
    /// stops clusters, whoever pressed the button; once recorded, the project's policy
    /// applies (the reconciliation queued with the status). `progress` hears when the
    /// confirmation starts.
    pub async fn check_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
        progress: Option<&dyn ConfirmProgress>,
    ) -> Result<KeyCheck, DomainError> {
        let mut key = self.encryption_key(caller, project_id, key_id).await?;
        if let Some(reused) = self.bound_check_now(caller, &key).await? {
            return Ok(reused);
        }
        let provider = self.provider_for(&key.key_ref)?;
        let probe = || async {
            checks::run(
                provider.as_ref(),
                &key.key_ref,
                &key.region,
                &self.context(caller, project_id),
                self.clock.now(),
                None,
            )
            .await
        };
        let first = probe().await;
        let seen = KeyStatus::from_checklist(&first);
        let (checklist, confirmation) = if seen.is_revocation() && seen != key.status {
            if let Some(progress) = progress {
                progress.confirming(seen);
            }
            tokio::time::sleep(self.confirm_delay).await;
            let second = probe().await;
            let again = KeyStatus::from_checklist(&second);
            let confirmation = if again == seen {
                Confirmation::Confirmed { status: seen }
            } else {
                Confirmation::NotConfirmed {
                    first: seen,
                    second: again,
                }
            };
            (second, confirmation)
        } else {
            (first, Confirmation::NotNeeded)
        };
        let probed = KeyStatus::from_checklist(&checklist);
        // A second probe that saw another revocation than the first records nothing: the
        // monitor confirms it at its next look.
        let status = match confirmation {
            Confirmation::NotConfirmed { second, .. } if second.is_revocation() => key.status,
            _ => probed,
        };
        if checklist.rotation_enabled.is_some()
            && checklist.rotation_enabled != key.rotation_enabled
        {
            self.keys
                .record_rotation(key_id, checklist.rotation_enabled)
                .await?;
            key.rotation_enabled = checklist.rotation_enabled;
        }
        let now = self.clock.now();
        let error = if status == probed {
            checklist
                .first_failure()
                .map(|c| format!("{}: {}", c.title, c.detail))
        } else {
            key.last_error.clone()
        };
        let audit = AuditDraft::by(
            caller,
            now,
            "encryption_key.checked",
            format!("encryption_key/{key_id}"),
        )
        .outcome(if checklist.passed {
            Outcome::Success
        } else {
            Outcome::Failure
        })
        .detail(serde_json::json!({
            "provider": key.key_ref.provider().as_str(),
            "region": key.region.as_str(),
            "key": key.key_ref.display(),
            "from": key.status.as_str(),
            "to": status.as_str(),
            "message": error,
            "confirmation": confirmation.as_str(),
        }))
        .in_project(project_id)
        .notifies((status != key.status).then(|| {
            Notice::Key(KeyChange {
                key_id,
                project_id,
                provider: key.key_ref.provider().as_str(),
                region: key.region.as_str().to_owned(),
                key: key.key_ref.display(),
                from: key.status.as_str(),
                to: status.as_str(),
                message: error.clone(),
                version: None,
            })
        }));
        if status == probed {
            self.keys
                .update_key_status(key_id, status, now, error.clone(), audit)
                .await?;
            if status != key.status {
                self.wake_reactions();
            }
            key.status = status;
            key.last_checked_at = Some(now);
            key.last_error = error;
        } else {
            // Nothing recorded of the key (what was read before the probes may be stale by
            // now: the monitor may have confirmed something meanwhile); the press is audited.
            self.audit.append_audit(audit).await?;
            key = self
                .keys
                .key(caller.organization_id, key_id)
                .await?
                .ok_or(DomainError::NotFound("encryption key"))?;
        }
        Ok(KeyCheck {
            key,
            checklist,
            confirmation,
        })
    }
}

/// How long a Check now's result answers the next presses of the same key, whoever makes
/// them, instead of another call to the customer's KMS.
const CHECK_FRESH_SECONDS: i64 = 10;
/// How many times one caller may press Check now in a minute (every key together).
const CHECKS_PER_CALLER_PER_MINUTE: u32 = 20;
/// How long a press waits for the check another one started in its window, beyond that
/// check's confirmation delay (its probes, each bounded by the KMS time-out).
const WAIT_FOR_RUNNING_CHECK: std::time::Duration = std::time::Duration::from_secs(20);

impl Keys {
    /// Check now's bounds, counted in the database so every instance shares them (each
    /// check costs the customer several calls to their KMS, billed and throttled per
    /// account): a caller may press it `CHECKS_PER_CALLER_PER_MINUTE` times a minute, then
    /// gets 429 with when to try again; and one check per key runs per
    /// `CHECK_FRESH_SECONDS` window, whoever asks: a press while one is running or just done
    /// waits for it and answers its result (`Confirmation::Reused`).
    async fn bound_check_now(
        &self,
        caller: &Caller,
        key: &EncryptionKey,
    ) -> Result<Option<KeyCheck>, DomainError> {
        use crate::domain::identity::Actor;
        let who = match &caller.actor {
            Actor::User { id, .. } => format!("user:{id}"),
            Actor::ApiKey { id, .. } => format!("api-key:{id}"),
            Actor::System => "system".to_owned(),
        };
        let presses = self
            .windows
            .count(&format!("check-now:{}:{who}", caller.organization_id), 60)
            .await?;
        if presses.count > CHECKS_PER_CALLER_PER_MINUTE {
            return Err(DomainError::TooManyRequests {
                detail: format!(
                    "Check now may be pressed {CHECKS_PER_CALLER_PER_MINUTE} times a minute: each \
                     check calls your KMS several times. The key monitor keeps checking every \
                     key. Try again in {} seconds.",
                    presses.retry_after.as_secs()
                ),
                retry_after: presses.retry_after,
            });
        }
        let this_key = self
            .windows
            .count(&format!("check-now-key:{}", key.id), CHECK_FRESH_SECONDS)
            .await?;
        let window = this_key.window_start;
        let first = this_key.count == 1;
        if first {
            return Ok(None);
        }
        // Another press made (or is making) this window's check: wait for its result.
        let started = std::time::Instant::now();
        let mut recorded = key.clone();
        while recorded.last_checked_at.is_none_or(|at| at < window)
            && started.elapsed() < WAIT_FOR_RUNNING_CHECK + self.confirm_delay
        {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            recorded = self
                .keys
                .key(caller.organization_id, key.id)
                .await?
                .ok_or(DomainError::NotFound("encryption key"))?;
        }
        let checklist = Checklist {
            passed: recorded.status == KeyStatus::Active,
            checks: Vec::new(),
            rotation_enabled: recorded.rotation_enabled,
            tenant: None,
            waited: Duration::ZERO,
            attempts: 1,
        };
        Ok(Some(KeyCheck {
            confirmation: Confirmation::Reused {
                checked_at: recorded.last_checked_at,
            },
            key: recorded,
            checklist,
        }))
    }
}

/// What Check now did about a revocation it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The key was checked moments ago (or is being checked) by another press: its recorded
    /// result answers, with no new call to the KMS.
    Reused {
        checked_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Nothing to confirm: the key works, is unreachable, or was already known revoked.
    NotNeeded,
    /// A second probe saw the same revocation: recorded, and the policy applies.
    Confirmed { status: KeyStatus },
    /// The second probe saw something else: the revocation is not recorded.
    NotConfirmed { first: KeyStatus, second: KeyStatus },
}

impl Confirmation {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirmation::NotNeeded => "not_needed",
            Confirmation::Reused { .. } => "reused",
            Confirmation::Confirmed { .. } => "confirmed",
            Confirmation::NotConfirmed { .. } => "not_confirmed",
        }
    }
}

/// Hears when Check now starts confirming a revocation (the page shows "confirming…").
pub trait ConfirmProgress: Send + Sync {
    fn confirming(&self, seen: KeyStatus);
}

/// What Check now answers: the key as recorded, the checklist of the last probe, and what
/// happened to a revocation it saw.
pub struct KeyCheck {
    pub key: EncryptionKey,
    pub checklist: Checklist,
    pub confirmation: Confirmation,
}

/// v1beta names the key ARN `kms_arn`.
fn spec_field(field: &str) -> &str {
    if field == "key_arn" { "kms_arn" } else { field }
}

pub(super) fn request_label(key: &EncryptionKey) -> String {
    format!("{} in {}", key.key_ref.provider().title(), key.region)
}

fn key_in_use(users: &[String]) -> DomainError {
    DomainError::Conflict {
        rule: Rule::KeyInUse,
        field: None,
        detail: format!(
            "This key wraps the data keys of {}: replace it (Change key, on its page) or delete \
             those first (their data could never be decrypted again without it).",
            if users.is_empty() {
                "a cluster or backup".to_owned()
            } else {
                users.join(", ")
            }
        ),
    }
}

/// The pause before attempt `after + 1` of a key test waiting for a grant to propagate:
/// 2 s, 4 s, 8 s, then every 10 s.
pub(super) fn propagation_pause(after: u32) -> Duration {
    Duration::from_secs((1u64 << after.min(4)).min(10))
}

pub(super) fn one_key_per_region(what: &str) -> DomainError {
    DomainError::Conflict {
        rule: Rule::OneKeyPerRegion,
        field: Some("region"),
        detail: format!(
            "This project already has an encryption key for {what}; a project has at most one key per provider and region."
        ),
    }
}
