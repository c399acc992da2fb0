//! Encryption keys: a project's customer-managed keys, one per (provider, region) (R4),
//! created only after the checklist passes, with the built-in `local` KMS refused in
//! production (R3).

pub mod arn;
pub mod checks;
pub mod policy;
pub mod region;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::error::Rule;
use crate::domain::identity::Caller;
use crate::domain::kms::{EncryptionContext, KeyProvider};
use crate::domain::ports::StoreError;
use crate::domain::{Console, DomainError, FieldError};
use crate::settings::Environment;
use arn::{KmsKeyArn, RoleArn};
use checks::{Check, Checklist};
use policy::{AccessMode, AwsAccessPolicies, PolicyScope};
use region::AwsRegion;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    AwsKms,
    AzureKeyVault,
    Local,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::AwsKms => "aws_kms",
            Provider::AzureKeyVault => "azure_key_vault",
            Provider::Local => "local",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "aws_kms" => Ok(Provider::AwsKms),
            "azure_key_vault" => Ok(Provider::AzureKeyVault),
            "local" => Ok(Provider::Local),
            _ => Err(FieldError::new(
                "provider",
                "must be \"aws_kms\", \"azure_key_vault\" or \"local\"",
            )),
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Provider::AwsKms => "AWS KMS",
            Provider::AzureKeyVault => "Azure Key Vault",
            Provider::Local => "Local KMS (development)",
        }
    }
}

/// How the platform reaches an AWS key (R12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsAccess {
    KeyPolicy,
    /// The console assumes the customer's role, presenting the organization id.
    Role {
        role_arn: RoleArn,
        external_id: String,
    },
}

/// What identifies a key at its KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    Aws {
        arn: KmsKeyArn,
        access: AwsAccess,
    },
    /// A key of the built-in local KMS, scoped to its organization.
    Local {
        key_id: Uuid,
        organization_id: Uuid,
    },
}

impl KeyRef {
    pub fn provider(&self) -> Provider {
        match self {
            KeyRef::Aws { .. } => Provider::AwsKms,
            KeyRef::Local { .. } => Provider::Local,
        }
    }

    /// The reference users see: the ARN, or the local key id.
    pub fn display(&self) -> String {
        match self {
            KeyRef::Aws { arn, .. } => arn.as_str().to_owned(),
            KeyRef::Local { key_id, .. } => key_id.to_string(),
        }
    }

    pub fn access_mode(&self) -> Option<AccessMode> {
        match self {
            KeyRef::Aws {
                access: AwsAccess::KeyPolicy,
                ..
            } => Some(AccessMode::KeyPolicy),
            KeyRef::Aws {
                access: AwsAccess::Role { .. },
                ..
            } => Some(AccessMode::Role),
            KeyRef::Local { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    AccessDenied,
    Disabled,
    PendingDeletion,
    NotFound,
    Unreachable,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::AccessDenied => "access_denied",
            KeyStatus::Disabled => "disabled",
            KeyStatus::PendingDeletion => "pending_deletion",
            KeyStatus::NotFound => "not_found",
            KeyStatus::Unreachable => "unreachable",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Active,
            Self::AccessDenied,
            Self::Disabled,
            Self::PendingDeletion,
            Self::NotFound,
            Self::Unreachable,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// The status a checklist implies: its first failure decides.
    pub fn from_checklist(checklist: &Checklist) -> Self {
        let Some(failed) = checklist.first_failure() else {
            return KeyStatus::Active;
        };
        match failed.code.as_deref() {
            Some("Disabled" | "DisabledException") => KeyStatus::Disabled,
            Some("PendingDeletion" | "KMSInvalidStateException") => KeyStatus::PendingDeletion,
            Some("NotFoundException") => KeyStatus::NotFound,
            Some(
                "Unreachable"
                | "ThrottlingException"
                | "KMSInternalException"
                | "DependencyTimeoutException",
            ) => KeyStatus::Unreachable,
            _ if failed.id == "enabled" => KeyStatus::Disabled,
            _ => KeyStatus::AccessDenied,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EncryptionKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    pub region: AwsRegion,
    pub key_ref: KeyRef,
    pub status: KeyStatus,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A key request as clients send it (every provider's fields; each uses its own).
#[derive(Clone, Debug, Default)]
pub struct KeyRequestInput {
    pub provider: String,
    pub region: String,
    pub key_arn: Option<String>,
    pub access_mode: Option<String>,
    pub role_arn: Option<String>,
    pub vault_name: Option<String>,
    pub key_name: Option<String>,
    pub key_id: Option<String>,
}

/// A parsed key request.
#[derive(Clone, Debug)]
pub struct KeyRequest {
    pub region: AwsRegion,
    pub key_ref: KeyRef,
}

impl KeyRequest {
    pub fn parse(input: &KeyRequestInput, organization_id: Uuid) -> Result<Self, DomainError> {
        let mut errors: Vec<FieldError> = Vec::new();
        let region = AwsRegion::parse("region", &input.region)
            .map_err(|e| errors.push(e))
            .ok();
        let key_ref = match Provider::parse(&input.provider) {
            Err(e) => {
                errors.push(e);
                None
            }
            Ok(Provider::AzureKeyVault) => {
                errors.push(FieldError::new(
                    "provider",
                    "Azure Key Vault is not available in this version of the console yet; use aws_kms or local",
                ));
                None
            }
            Ok(Provider::AwsKms) => parse_aws(input, region.as_ref(), organization_id, &mut errors),
            Ok(Provider::Local) => parse_local(input, organization_id, &mut errors),
        };
        match (region, key_ref) {
            (Some(region), Some(key_ref)) if errors.is_empty() => Ok(Self { region, key_ref }),
            _ => Err(DomainError::Invalid(errors)),
        }
    }
}

fn parse_local(
    input: &KeyRequestInput,
    organization_id: Uuid,
    errors: &mut Vec<FieldError>,
) -> Option<KeyRef> {
    let raw = input.key_id.as_deref().map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        errors.push(FieldError::new(
            "key_id",
            "is required: the id of a key on the Local KMS page",
        ));
        return None;
    }
    match Uuid::parse_str(raw) {
        Ok(key_id) => Some(KeyRef::Local {
            key_id,
            organization_id,
        }),
        Err(_) => {
            errors.push(FieldError::new("key_id", "is not a local key id (a UUID)"));
            None
        }
    }
}

fn parse_aws(
    input: &KeyRequestInput,
    region: Option<&AwsRegion>,
    organization_id: Uuid,
    errors: &mut Vec<FieldError>,
) -> Option<KeyRef> {
    let arn = KmsKeyArn::parse("key_arn", input.key_arn.as_deref().unwrap_or(""));
    let mode = AccessMode::parse("access_mode", input.access_mode.as_deref());
    let arn = match arn {
        Ok(arn) => match region {
            Some(region) if arn.region() != region => {
                errors.push(FieldError::new("key_arn", format!(
                    "is a key in {}, but you chose {region}: use a key in {region}, or choose {} as the region",
                    arn.region(), arn.region()
                )));
                None
            }
            _ => Some(arn),
        },
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let access = match mode {
        Err(e) => {
            errors.push(e);
            None
        }
        Ok(AccessMode::KeyPolicy) => Some(AwsAccess::KeyPolicy),
        Ok(AccessMode::Role) => match input.role_arn.as_deref().filter(|r| !r.trim().is_empty()) {
            None => {
                errors.push(FieldError::new(
                    "role_arn",
                    "is required in role mode: the ARN of the IAM role you created in step 2",
                ));
                None
            }
            Some(raw) => match RoleArn::parse("role_arn", raw) {
                Ok(role_arn) => Some(AwsAccess::Role {
                    role_arn,
                    external_id: organization_id.to_string(),
                }),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        },
    };
    match (arn, access) {
        (Some(arn), Some(access)) => Some(KeyRef::Aws { arn, access }),
        _ => None,
    }
}

/// The KMS adapters the console can use; a provider left unconfigured is refused clearly.
#[derive(Clone, Default)]
pub struct KmsProviders {
    pub aws: Option<Arc<dyn KeyProvider>>,
    pub local: Option<Arc<dyn KeyProvider>>,
    /// The platform's AWS account (`CMEK_AWS_ACCOUNT_ID`), named in the policies customers paste.
    pub aws_account_id: Option<String>,
}

fn unavailable(detail: &str) -> DomainError {
    DomainError::invalid("provider", detail)
}

impl Console {
    fn provider_for(&self, key: &KeyRef) -> Result<Arc<dyn KeyProvider>, DomainError> {
        match key {
            KeyRef::Aws { .. } => self.kms.aws.clone().ok_or_else(|| unavailable("AWS KMS is not configured on this console (the operator sets CMEK_AWS_ACCOUNT_ID).")),
            KeyRef::Local { .. } => {
                if self.policy.environment == Environment::Production {
                    return Err(DomainError::Forbidden {
                        rule: Rule::LocalKmsInProduction,
                        detail: "The built-in local KMS is for development and is refused when CMEK_ENV=production.".into(),
                    });
                }
                self.kms.local.clone().ok_or_else(|| unavailable("The local KMS is not available."))
            }
        }
    }

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
            code => AwsRegion::parse("region", code).map(PolicyScope::Region),
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

    fn context(&self, caller: &Caller, project_id: Uuid) -> EncryptionContext {
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
        progress: Option<&UnboundedSender<Check>>,
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
        progress: Option<&UnboundedSender<Check>>,
    ) -> Result<(EncryptionKey, Checklist), DomainError> {
        let request = self.key_request(caller, project_id, input).await?;
        self.ensure_free_slot(caller, project_id, &request).await?;
        let checklist = self
            .run_checks(caller, project_id, &request, progress)
            .await?;
        if !checklist.passed {
            return Err(DomainError::ChecksFailed(checklist));
        }
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
        for request in &requests {
            let checklist = self.run_checks(caller, project_id, request, None).await?;
            if !checklist.passed {
                return Err(DomainError::ChecksFailed(checklist));
            }
        }
        let mut created = Vec::new();
        for request in requests {
            created.push(self.save_key(caller, project_id, request).await?);
        }
        Ok(created)
    }

    async fn save_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        request: KeyRequest,
    ) -> Result<EncryptionKey, DomainError> {
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
            "project_id": project_id,
            "provider": key.key_ref.provider().as_str(),
            "region": key.region.as_str(),
            "key": key.key_ref.display(),
            "access_mode": key.key_ref.access_mode().map(AccessMode::as_str),
        }));
        match self.store.insert_key(&key, audit).await {
            Ok(()) => Ok(key),
            Err(StoreError::Conflict(_)) => Err(one_key_per_region(&request_label(&key))),
            Err(other) => Err(other.into()),
        }
    }

    /// R2, a CMEK project, a well-formed request, and a provider this console can reach.
    async fn key_request(
        &self,
        caller: &Caller,
        project_id: Uuid,
        input: &KeyRequestInput,
    ) -> Result<KeyRequest, DomainError> {
        caller.require_owner("manage encryption keys")?;
        self.cmek_project(caller, project_id).await?;
        let request = KeyRequest::parse(input, caller.organization_id)?;
        self.provider_for(&request.key_ref)?;
        Ok(request)
    }

    async fn run_checks(
        &self,
        caller: &Caller,
        project_id: Uuid,
        request: &KeyRequest,
        progress: Option<&UnboundedSender<Check>>,
    ) -> Result<Checklist, DomainError> {
        let provider = self.provider_for(&request.key_ref)?;
        let checklist = checks::run(
            provider.as_ref(),
            &request.key_ref,
            &request.region,
            &self.context(caller, project_id),
            progress,
        )
        .await;
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
            .store
            .keys(caller.organization_id, project_id)
            .await?
            .into_iter()
            .any(|k| k.key_ref.provider() == provider && k.region == request.region);
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
        Ok(self.store.keys(caller.organization_id, project_id).await?)
    }

    pub async fn encryption_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<EncryptionKey, DomainError> {
        self.store
            .key(caller.organization_id, key_id)
            .await?
            .filter(|k| k.project_id == project_id)
            .ok_or(DomainError::NotFound("encryption key"))
    }

    /// Deletes a key. Clusters do not exist yet; when they do, a key in use will be refused.
    pub async fn delete_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<(), DomainError> {
        let key = self.encryption_key(caller, project_id, key_id).await?;
        caller.require_owner("manage encryption keys")?;
        let audit = AuditDraft::by(caller, self.clock.now(), "encryption_key.deleted", format!("encryption_key/{key_id}"))
            .detail(serde_json::json!({ "project_id": project_id, "key": key.key_ref.display(), "region": key.region.as_str() }));
        Ok(self
            .store
            .delete_key(caller.organization_id, key_id, audit)
            .await?)
    }

    /// Check now: runs the checklist against a saved key and records its status.
    pub async fn check_key(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<(EncryptionKey, Checklist), DomainError> {
        let mut key = self.encryption_key(caller, project_id, key_id).await?;
        let provider = self.provider_for(&key.key_ref)?;
        let checklist = checks::run(
            provider.as_ref(),
            &key.key_ref,
            &key.region,
            &self.context(caller, project_id),
            None,
        )
        .await;
        let status = KeyStatus::from_checklist(&checklist);
        let now = self.clock.now();
        let error = checklist
            .first_failure()
            .map(|c| format!("{}: {}", c.title, c.detail));
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
        .detail(serde_json::json!({ "from": key.status.as_str(), "to": status.as_str() }));
        self.store
            .update_key_status(key_id, status, now, error.clone(), audit)
            .await?;
        key.status = status;
        key.last_checked_at = Some(now);
        key.last_error = error;
        Ok((key, checklist))
    }
}

/// v1beta names the key ARN `kms_arn`.
fn spec_field(field: &str) -> &str {
    if field == "key_arn" { "kms_arn" } else { field }
}

fn request_label(key: &EncryptionKey) -> String {
    format!("{} in {}", key.key_ref.provider().title(), key.region)
}

fn one_key_per_region(what: &str) -> DomainError {
    DomainError::Conflict {
        rule: Rule::OneKeyPerRegion,
        field: Some("region"),
        detail: format!(
            "This project already has an encryption key for {what}; a project has at most one key per provider and region."
        ),
    }
}
