//! The API's wire format for the domain's values: what clients send and receive, with the
//! OpenAPI schemas, converted from the domain's types at the edge. The domain derives no
//! schema; renaming a domain field cannot change what clients see (the OpenAPI snapshot test
//! would show it anyway). Schema names match the types' names here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain;
use crate::domain::keys::checks as domain_checks;
use crate::domain::keys::policy as domain_policy;

/// Converts a domain enum into its wire twin, variant by variant.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident from $domain:path { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl From<$domain> for $name {
            fn from(value: $domain) -> Self {
                match value {
                    $(<$domain>::$variant => Self::$variant),*
                }
            }
        }
    };
}

wire_enum!(Role from domain::identity::Role { Owner, Member, Auditor });
wire_enum!(Outcome from domain::audit::Outcome { Success, Denied, Failure });
wire_enum!(
    /// R10: what happens to running clusters when key access is revoked. Null on a project
    /// means the provider's default (AWS keeps running, Azure and Google Cloud stop).
    RevocationPolicy from domain::projects::RevocationPolicy { KeepRunning, Stop }
);
wire_enum!(Provider from domain::keys::Provider { AwsKms, AzureKeyVault, GcpKms, Local });
wire_enum!(KeyStatus from domain::keys::KeyStatus {
    Active,
    AccessDenied,
    Disabled,
    PendingDeletion,
    NotFound,
    Unreachable,
});
wire_enum!(AccessMode from domain_policy::AccessMode {
    /// The key policy names the platform's account (TiDB Cloud).
    KeyPolicy,
    /// The customer's IAM role trusts the platform's account with an ExternalId (CockroachDB Cloud).
    Role,
});
wire_enum!(CheckOutcome from domain_checks::CheckOutcome {
    Pass,
    Fail,
    /// Not run, because an earlier check failed.
    Skipped,
    /// Information only; never blocks creation.
    Info,
});

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The offending field, as named in the request (`name`, `revocation_policy`, ...).
    pub field: String,
    /// Why it was refused, in a sentence.
    pub reason: String,
}

impl From<domain::FieldError> for FieldError {
    fn from(e: domain::FieldError) -> Self {
        Self {
            field: e.field,
            reason: e.reason,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// The install-wide order events were recorded in (what pages are sorted by); an
    /// organization's own numbering is `chain_seq`.
    pub seq: i64,
    pub id: Uuid,
    pub organization_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    /// The chain key that sealed the event (format 1's legacy segment only).
    pub key_id: Option<String>,
    /// The event's place in its organization's chain, as an export and the verifiers number
    /// it (`null` for events of format 1's legacy segment).
    pub chain_seq: Option<i64>,
    /// The signing key (`GET /api/v1/audit/signing-keys`) that signed the event in its chain.
    pub signing_key_id: Option<String>,
}

/// A signed checkpoint of an organization's audit chain (format 2): what an export carries
/// first, and an `audit.checkpoint` webhook's `data`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditCheckpoint {
    /// The organization's id (`platform` for events of none).
    pub chain: String,
    pub seq: u64,
    /// The hash of the chain's event `seq`, 64 lowercase hex digits.
    pub hash: String,
    /// When it was signed: RFC 3339, UTC, six fractional digits.
    pub at: String,
    pub key_id: String,
    /// Ed25519, base64.
    pub signature: String,
}

/// An event in its organization's chain (format 2), as an export carries it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ChainedAuditEvent {
    pub chain: String,
    pub seq: u64,
    pub id: String,
    pub occurred_at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub signed_at: String,
    pub prev_hash: String,
    pub hash: String,
    pub key_id: String,
    pub signature: String,
}

/// An organization's audit export in format 2 (docs/audit-export.md): its newest signed
/// checkpoint, then its chain's events, oldest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditExport {
    /// `cmek-console-audit/2`.
    pub format: String,
    pub chain: String,
    pub checkpoint: Option<AuditCheckpoint>,
    pub items: Vec<ChainedAuditEvent>,
}

/// What `GET /api/v1/audit-events` answers in JSON: a page, or (`format=json`) an export.
/// Described by hand as `anyOf`: an export also reads as a list (it has `items`), so `oneOf`
/// would match it twice.
pub struct AuditEventsAnswer;

/// The name of a page of audit events in the OpenAPI document.
const AUDIT_PAGE: &str = "ListBody_AuditEvent";

impl utoipa::PartialSchema for AuditEventsAnswer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::AnyOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name(AUDIT_PAGE))
            .item(utoipa::openapi::Ref::from_schema_name(
                <AuditExport as utoipa::ToSchema>::name(),
            ))
            .description(Some(
                "Without `format`: a page of events, newest first. With `format=json`: the organization's chain in format 2 (docs/audit-export.md).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for AuditEventsAnswer {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::{PartialSchema, ToSchema};
        type Page = crate::http::api::ListBody<AuditEvent>;
        schemas.push((AUDIT_PAGE.into(), Page::schema()));
        <Page as ToSchema>::schemas(schemas);
        schemas.push((AuditExport::name().into(), AuditExport::schema()));
        <AuditExport as ToSchema>::schemas(schemas);
    }
}

impl From<domain::audit::AuditEvent> for AuditEvent {
    fn from(e: domain::audit::AuditEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            organization_id: e.organization_id,
            occurred_at: e.occurred_at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome.into(),
            source_ip: e.source_ip,
            detail: e.detail,
            prev_hash: e.prev_hash,
            hash: e.hash,
            key_id: e.key_id,
            chain_seq: e.chain_seq,
            signing_key_id: e.signing_key_id,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// Stable id: `reachable`, `enabled`, `key_spec`, `region`, `generate_data_key`,
    /// `decrypt_round_trip`, `rotation`.
    pub id: String,
    pub title: String,
    /// Whether the key can be created without this check passing.
    pub required: bool,
    pub outcome: CheckOutcome,
    pub detail: String,
    /// The KMS error code, when a KMS call failed.
    pub code: Option<String>,
    /// What to do about a failure, in one line.
    pub fix: Option<String>,
}

impl From<domain_checks::Check> for Check {
    fn from(c: domain_checks::Check) -> Self {
        Self {
            id: c.id.to_owned(),
            title: c.title.to_owned(),
            required: c.required,
            outcome: c.outcome.into(),
            detail: c.detail,
            code: c.code,
            fix: c.fix,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Checklist {
    /// True when every required check passed.
    pub passed: bool,
    pub checks: Vec<Check>,
    /// How many times the checks ran: more than 1 when the KMS refused access the way a
    /// grant made a moment ago is refused until it propagates, and the console waited
    /// (`CMEK_KEY_TEST_PROPAGATION`).
    #[schema(required = false)]
    pub attempts: u32,
    /// Seconds spent waiting for such a grant to propagate (0 when it did not wait).
    #[schema(required = false)]
    pub waited_seconds: u64,
}

impl From<domain_checks::Checklist> for Checklist {
    fn from(c: domain_checks::Checklist) -> Self {
        Self {
            passed: c.passed,
            checks: c.checks.into_iter().map(Check::from).collect(),
            attempts: c.attempts.max(1),
            waited_seconds: c.waited.as_secs(),
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Statement {
    /// The statement's `Sid`.
    pub sid: String,
    /// What the statement allows and why it is needed.
    pub explanation: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyDocument {
    /// The file name of the download.
    pub file_name: String,
    pub title: String,
    /// Where to paste it.
    pub instructions: String,
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
    pub statements: Vec<Statement>,
}

/// What the Azure Key Vault wizard shows: the platform's Entra application, the commands to
/// create and find its service principal, the full key name, the checklist and an Azure
/// Resource Manager template.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AzureSetup {
    pub region: String,
    /// The Microsoft Entra application name (its enterprise application in your tenant).
    pub app_name: String,
    /// The application (client) id.
    pub app_id: String,
    /// `az ad sp create --id <app-id>`: creates the service principal in your tenant.
    pub create_service_principal_command: String,
    /// `az ad sp show --id <app-id> --query id -o tsv`: its object id, for the template.
    pub show_service_principal_command: String,
    /// The prefix with the console's unique suffix (when `key_name_prefix` was given).
    pub key_name: Option<String>,
    pub checklist: Vec<String>,
    /// File name of the template download.
    pub arm_template_file_name: String,
    #[schema(value_type = Object)]
    pub arm_template: serde_json::Value,
}

impl From<domain::keys::azure::AzureSetup> for AzureSetup {
    fn from(s: domain::keys::azure::AzureSetup) -> Self {
        Self {
            region: s.region,
            app_name: s.app_name,
            app_id: s.app_id,
            create_service_principal_command: s.create_service_principal_command,
            show_service_principal_command: s.show_service_principal_command,
            key_name: s.key_name,
            checklist: s.checklist.into_iter().map(str::to_owned).collect(),
            arm_template_file_name: domain::keys::azure::ARM_TEMPLATE_FILE.to_owned(),
            arm_template: s.arm_template,
        }
    }
}

/// What the Google Cloud KMS wizard shows: the platform's service account, the commands to
/// create the key ring and key and grant the account, the key's name with the console's
/// suffix, and a Terraform configuration in Terraform's JSON syntax.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct GcpSetup {
    pub region: String,
    /// The platform's service account: grant it the two roles on your key.
    pub service_account: String,
    /// The roles to grant, on the key.
    pub roles: Vec<String>,
    pub key_ring: String,
    /// The key's name: your prefix and the console's suffix.
    pub key_id: String,
    /// What every key name of this project and region must end with.
    pub suffix: String,
    /// The key's full resource name (once `gcp_project_id` was given): the `key_name` to
    /// register.
    pub key_name: Option<String>,
    /// `gcloud` commands, in order: the key ring, the key (90-day rotation), the two grants.
    pub commands: Vec<String>,
    /// File name of the Terraform download.
    pub terraform_file_name: String,
    #[schema(value_type = Object)]
    pub terraform: serde_json::Value,
}

impl From<domain::keys::gcp::GcpSetup> for GcpSetup {
    fn from(s: domain::keys::gcp::GcpSetup) -> Self {
        Self {
            region: s.region,
            service_account: s.service_account,
            roles: domain::keys::gcp::ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            key_ring: s.key_ring,
            key_id: s.key_id,
            suffix: s.suffix,
            key_name: s.key_name,
            commands: s.commands,
            terraform_file_name: domain::keys::gcp::TERRAFORM_FILE.to_owned(),
            terraform: s.terraform,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AwsAccessPolicies {
    pub mode: AccessMode,
    /// The region the policy is for, or `*` for every region.
    pub region: String,
    pub platform_account_id: String,
    /// In role mode: the `sts:ExternalId` the role must require (the organization id).
    pub external_id: Option<String>,
    pub documents: Vec<PolicyDocument>,
}

impl From<domain_policy::AwsAccessPolicies> for AwsAccessPolicies {
    fn from(p: domain_policy::AwsAccessPolicies) -> Self {
        Self {
            mode: p.mode.into(),
            region: p.region,
            platform_account_id: p.platform_account_id,
            external_id: p.external_id,
            documents: p
                .documents
                .into_iter()
                .map(|d| PolicyDocument {
                    file_name: d.file_name,
                    title: d.title,
                    instructions: d.instructions,
                    policy: d.policy,
                    statements: d
                        .statements
                        .into_iter()
                        .map(|s| Statement {
                            sid: s.sid,
                            explanation: s.explanation,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A key request as clients send it (every provider's fields; each uses its own). AWS:
/// `provider: "aws_kms", region, key_arn, access_mode?, role_arn?`; Azure: `provider:
/// "azure_key_vault", region, vault_name, key_name`; Google Cloud: `provider: "gcp_kms",
/// region, key_name` (the full resource name); local: `provider: "local", region, key_id`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequestInput {
    #[schema(value_type = Provider)]
    pub provider: String,
    /// The provider's region: an AWS region code for `aws_kms` and `local`, an Azure region
    /// name for `azure_key_vault`, a Google Cloud region for `gcp_kms` (the key's location).
    pub region: String,
    /// AWS: the key's own ARN (not an alias), in `region`.
    pub key_arn: Option<String>,
    /// AWS: `key_policy` (default) or `role` (then `role_arn` is required).
    #[schema(value_type = Option<AccessMode>)]
    pub access_mode: Option<String>,
    /// AWS role mode: your IAM role that trusts the platform's account.
    pub role_arn: Option<String>,
    /// Azure: the Key Vault's name.
    pub vault_name: Option<String>,
    /// Azure: the full key name, with the console's suffix (from `azure-setup`). Google
    /// Cloud: the key's full resource name,
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K`, K ending with the console's suffix
    /// (from `gcp-setup`).
    pub key_name: Option<String>,
    /// Local KMS: the local key's id.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub key_id: Option<String>,
}

impl From<KeyRequestInput> for domain::keys::KeyRequestInput {
    fn from(b: KeyRequestInput) -> Self {
        Self {
            provider: b.provider,
            region: b.region,
            key_arn: b.key_arn,
            access_mode: b.access_mode,
            role_arn: b.role_arn,
            vault_name: b.vault_name,
            key_name: b.key_name,
            key_id: b.key_id,
        }
    }
}

wire_enum!(ClusterState from domain::clusters::ClusterState {
    Creating,
    Available,
    Pausing,
    Paused,
    Resuming,
    Inaccessible,
    Deleting,
    Failed,
});
wire_enum!(Tier from domain::clusters::Tier { Dedicated, Serverless });
wire_enum!(BackupState from domain::clusters::BackupState { Creating, Available, Failed });

/// A region whose data key the KMS refused or could not be reached for.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RegionFailure {
    pub region: String,
    /// The key as you know it (ARN, local key id), or `platform-managed key`.
    pub key: String,
    /// The KMS error code (`AccessDeniedException`, `DisabledException`, `Unreachable`, ...).
    pub code: String,
    pub message: String,
}

impl From<domain::clusters::RegionFailure> for RegionFailure {
    fn from(f: domain::clusters::RegionFailure) -> Self {
        Self {
            region: f.region,
            key: f.key,
            code: f.error.code().to_owned(),
            message: f.error.to_string(),
        }
    }
}
