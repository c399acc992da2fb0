//! Encryption keys: a project's customer-managed keys, one per (provider, region) (R4),
//! created only after the checklist passes, with the built-in `local` KMS refused in
//! production (R3). The types are here; `request` parses what clients send, `service`
//! holds the use cases.

pub mod arn;
pub mod azure;
mod change;
pub mod checks;
pub mod gcp;
mod impact;
mod local;
mod monitor;
pub mod policy;
pub mod policy_doctor;
pub mod region;
mod request;
pub mod rewrap;
mod service;
pub mod status_report;
mod versions;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::FieldError;
use crate::domain::kms::KeyProvider;
use arn::{KmsKeyArn, RoleArn};
use checks::Checklist;
use policy::AccessMode;
use region::Region;

pub use change::Replacement;
pub use impact::{BackupImpact, ClusterImpact, IfRevoked, KeyImpact, Verdict};
pub(crate) use monitor::StatusChangeEvent;
pub use monitor::{LATENCY_BUCKETS, MonitorPolicy, MonitorStats, SweepReport};
pub use request::{KeyRequest, KeyRequestInput};
pub use service::{ConfirmProgress, Confirmation, KeyCheck, Keys};
pub use versions::VersionInUse;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    AwsKms,
    AzureKeyVault,
    GcpKms,
    Local,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::AwsKms => "aws_kms",
            Provider::AzureKeyVault => "azure_key_vault",
            Provider::GcpKms => "gcp_kms",
            Provider::Local => "local",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "aws_kms" => Ok(Provider::AwsKms),
            "azure_key_vault" => Ok(Provider::AzureKeyVault),
            "gcp_kms" => Ok(Provider::GcpKms),
            "local" => Ok(Provider::Local),
            _ => Err(FieldError::new(
                "provider",
                "must be \"aws_kms\", \"azure_key_vault\", \"gcp_kms\" or \"local\"",
            )),
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Provider::AwsKms => "AWS KMS",
            Provider::AzureKeyVault => "Azure Key Vault",
            Provider::GcpKms => "Google Cloud KMS",
            Provider::Local => "Local KMS (development)",
        }
    }
}

/// Which keys Key Status and the API list: by status, provider and project.
#[derive(Clone, Debug, Default)]
pub struct KeyStatusFilter {
    pub status: Option<KeyStatus>,
    pub provider: Option<Provider>,
    pub project_id: Option<Uuid>,
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
    /// A key in a customer's Azure Key Vault. The vault's tenant is found from its challenge;
    /// once the key is saved, the tenant it was found in is kept and required.
    Azure {
        vault: azure::VaultName,
        key_name: azure::KeyName,
        tenant: Option<String>,
    },
    /// A key in a customer's Google Cloud KMS, by its full resource name. Cloud KMS uses
    /// the key's primary version to encrypt and the version a ciphertext names to decrypt.
    Gcp {
        name: gcp::GcpKeyName,
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
            KeyRef::Azure { .. } => Provider::AzureKeyVault,
            KeyRef::Gcp { .. } => Provider::GcpKms,
            KeyRef::Local { .. } => Provider::Local,
        }
    }

    /// The reference users see: the ARN, `vault/key` for Azure, or the local key id.
    pub fn display(&self) -> String {
        match self {
            KeyRef::Aws { arn, .. } => arn.as_str().to_owned(),
            KeyRef::Azure {
                vault, key_name, ..
            } => {
                format!("{}/{}", vault.as_str(), key_name.as_str())
            }
            KeyRef::Gcp { name } => name.as_string(),
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
            KeyRef::Azure { .. } | KeyRef::Gcp { .. } | KeyRef::Local { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

    /// A status that says the customer took the platform's use of the key away (the KMS
    /// refused it): a confirmed one makes the project's revocation policy apply.
    /// `unreachable` says nothing about the key and never does.
    pub fn is_revocation(self) -> bool {
        matches!(
            self,
            KeyStatus::AccessDenied
                | KeyStatus::Disabled
                | KeyStatus::PendingDeletion
                | KeyStatus::NotFound
        )
    }

    /// The status a checklist implies: its first failure decides. A failure that names no
    /// status (a key of the wrong kind or region, a round trip that does not match) means
    /// the platform cannot use the key: access denied.
    pub fn from_checklist(checklist: &Checklist) -> Self {
        match checklist.first_failure() {
            None => KeyStatus::Active,
            Some(failed) => failed.shows.unwrap_or(KeyStatus::AccessDenied),
        }
    }
}

/// One change of a key's status, as the checks saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub from: KeyStatus,
    pub to: KeyStatus,
    /// What the KMS said (the failed check and its error), when the key stopped working.
    pub message: Option<String>,
}

#[derive(Clone, Debug)]
pub struct EncryptionKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    pub region: Region,
    pub key_ref: KeyRef,
    pub status: KeyStatus,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Automatic rotation as the last check saw it (`None`: not reported or not checked yet).
    pub rotation_enabled: Option<bool>,
    /// Set once a replacement took over this key's region: the key stays, watched, until
    /// nothing it wrapped remains; new clusters and R4 count only its successor.
    pub replaced_by: Option<Uuid>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The KMS adapters the console can use; a provider left unconfigured is refused clearly.
#[derive(Clone, Default)]
pub struct KmsProviders {
    pub aws: Option<Arc<dyn KeyProvider>>,
    pub local: Option<Arc<dyn KeyProvider>>,
    /// The platform's AWS account (`CMEK_AWS_ACCOUNT_ID`), named in the policies customers paste.
    pub aws_account_id: Option<String>,
    pub azure: Option<Arc<dyn KeyProvider>>,
    /// The platform's Entra application, named in the Azure wizard.
    pub azure_app: Option<AzureApp>,
    pub gcp: Option<Arc<dyn KeyProvider>>,
    /// The platform's Google Cloud service account (`CMEK_GCP_SERVICE_ACCOUNT`), named in the
    /// Google Cloud wizard.
    pub gcp_service_account: Option<String>,
}

/// The platform's multi-tenant Microsoft Entra application (`CMEK_AZURE_APP_ID`, `..._NAME`).
#[derive(Clone, Debug)]
pub struct AzureApp {
    pub id: String,
    pub name: String,
}
