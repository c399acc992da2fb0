//! `/api/v1/projects/{project_id}/encryption-keys`: the Encryption Access wizard over the API
//! (policies to paste, Test Encryption Key, Test Encryption Key and Create), and the keys.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::keys::rewrap::{Rewrap, RewrapState};
use crate::domain::keys::{
    AwsAccess, Confirmation, EncryptionKey, IfRevoked, KeyImpact, KeyRef, StatusChange,
    VersionInUse,
};
use crate::domain::page::PageRequest;
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::ApiJson;
use crate::http::shared::query::PageQuery;
use crate::http::wire::{
    AccessMode, AwsAccessPolicies, AzureSetup, Checklist, GcpSetup, KeyRequestInput, KeyStatus,
    Provider,
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyBody {
    pub id: Uuid,
    pub project_id: Uuid,
    pub provider: Provider,
    pub region: String,
    /// AWS: the key ARN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_arn: Option<String>,
    /// Azure Key Vault: the vault's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_name: Option<String>,
    /// Azure Key Vault: the key's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Local KMS: the key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// AWS: `key_policy` or `role`.
    pub access_mode: Option<AccessMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    pub status: KeyStatus,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Automatic rotation as the last check saw it (absent until a check reports it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_enabled: Option<bool>,
    /// Set once a replacement took over: the key that is now the region's. This key stays,
    /// watched, until nothing it wrapped remains (`versions` empty), then may be deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<Uuid>,
    /// The latest change (replacement or re-wrap) from or to this key, with its progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<KeyChangeBody>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// On a single key's read: its latest status changes, newest first (the whole history is
    /// at `.../history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<StatusChangeBody>>,
    /// On a single key's read: the key versions that still wrap data keys, each with how many
    /// it wraps, its status and what disabling it breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<KeyVersionBody>>,
    /// On a single key's read: `versions_ok`, or `version_revoked` when a version in use is
    /// disabled, expired or gone (the clusters and backups it wraps would not resume or
    /// restore; the project's revocation policy applies to the clusters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions_status: Option<VersionsStatus>,
}

/// Whether every key version that still wraps data keys is usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionsStatus {
    VersionsOk,
    /// A version in use is disabled, expired or gone.
    VersionRevoked,
}

impl VersionsStatus {
    pub fn of(any_revoked: bool) -> Self {
        if any_revoked {
            Self::VersionRevoked
        } else {
            Self::VersionsOk
        }
    }
}

/// A key version that still wraps data keys.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyVersionBody {
    /// Azure: the key version; local: its number; AWS: the key ARN (AWS finds the backing
    /// key itself, so rotation never breaks an old data key).
    pub version: String,
    /// Data keys it wraps (cluster regions and backups).
    pub data_keys: u64,
    pub status: KeyStatus,
    /// A status a first probe saw that a second must confirm before it counts.
    pub suspected: Option<KeyStatus>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Clusters with a region whose data key it wraps: they would not resume without it.
    pub clusters: Vec<String>,
    /// Backups whose data key it wraps: they would not restore without it.
    pub backups: Vec<Uuid>,
}

impl From<VersionInUse> for KeyVersionBody {
    fn from(v: VersionInUse) -> Self {
        Self {
            version: v.version,
            data_keys: v.data_keys,
            status: v.status.into(),
            suspected: v.suspected.map(Into::into),
            last_checked_at: v.last_checked_at,
            last_error: v.last_error,
            clusters: v.clusters,
            backups: v.backups,
        }
    }
}

/// A change of a key's status.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusChangeBody {
    pub at: DateTime<Utc>,
    pub from: KeyStatus,
    pub to: KeyStatus,
    /// What the KMS said, when the key stopped working.
    pub message: Option<String>,
}

impl From<StatusChange> for StatusChangeBody {
    fn from(c: StatusChange) -> Self {
        Self {
            at: c.at,
            from: c.from.into(),
            to: c.to.into(),
            message: c.message,
        }
    }
}

impl From<EncryptionKey> for KeyBody {
    fn from(k: EncryptionKey) -> Self {
        let (mut key_arn, mut role_arn, mut vault_name, mut key_name, mut key_id) =
            (None, None, None, None, None);
        match &k.key_ref {
            KeyRef::Aws { arn, access } => {
                key_arn = Some(arn.as_str().to_owned());
                if let AwsAccess::Role { role_arn: r, .. } = access {
                    role_arn = Some(r.as_str().to_owned());
                }
            }
            KeyRef::Azure {
                vault, key_name: k, ..
            } => {
                vault_name = Some(vault.as_str().to_owned());
                key_name = Some(k.as_str().to_owned());
            }
            KeyRef::Gcp { name } => key_name = Some(name.as_string()),
            KeyRef::Local { key_id: id, .. } => key_id = Some(id.to_string()),
        }
        Self {
            id: k.id,
            project_id: k.project_id,
            provider: k.key_ref.provider().into(),
            region: k.region.as_str().to_owned(),
            key_arn,
            vault_name,
            key_name,
            key_id,
            access_mode: k.key_ref.access_mode().map(AccessMode::from),
            role_arn,
            status: k.status.into(),
            last_checked_at: k.last_checked_at,
            last_error: k.last_error,
            rotation_enabled: k.rotation_enabled,
            replaced_by: k.replaced_by,
            change: None,
            created_by: k.created_by,
            created_at: k.created_at,
            history: None,
            versions: None,
            versions_status: None,
        }
    }
}

/// Where a change of key stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyChangeState {
    /// Data keys are being moved; the clusters serve meanwhile.
    Rewrapping,
    /// Every data key is wrapped by the target key.
    Done,
    /// Some data keys could not be moved (`failures`): they stay wrapped as they were, and
    /// readable; the old key must stay until they are moved (re-run the change).
    Failed,
}

/// Which change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyChangeKind {
    /// To another key (`to_key_id`), which is now the region's key.
    Replace,
    /// To the key's current version.
    Rewrap,
}

/// A data key a change could not move, with what the KMS said.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyChangeFailureBody {
    /// `cluster/<id>/<region>` or `backup/<id>`.
    pub data_key: String,
    /// The KMS's error code (`DisabledException`, `Forbidden`, ...).
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// A replacement or re-wrap and its progress.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyChangeBody {
    pub id: Uuid,
    pub kind: KeyChangeKind,
    pub state: KeyChangeState,
    /// The key whose data keys are moved.
    pub from_key_id: Uuid,
    /// The key they are moved to (the same key for a re-wrap).
    pub to_key_id: Uuid,
    /// The key version new wraps get, once the job has seen it.
    pub target_version: Option<String>,
    /// Data keys (cluster regions and backups) to move.
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    /// The first 50 data keys not moved.
    pub failures: Vec<KeyChangeFailureBody>,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Rewrap> for KeyChangeBody {
    fn from(r: Rewrap) -> Self {
        Self {
            id: r.id,
            kind: if r.replaces() {
                KeyChangeKind::Replace
            } else {
                KeyChangeKind::Rewrap
            },
            state: match r.state {
                RewrapState::Rewrapping => KeyChangeState::Rewrapping,
                RewrapState::Done => KeyChangeState::Done,
                RewrapState::Failed => KeyChangeState::Failed,
            },
            from_key_id: r.from_key_id,
            to_key_id: r.to_key_id,
            target_version: r.target_version,
            total: r.total,
            done: r.done,
            failed: r.failed,
            failures: r
                .failures
                .into_iter()
                .map(|f| KeyChangeFailureBody {
                    data_key: f.data_key,
                    code: f.code,
                    message: f.message,
                    at: f.at,
                })
                .collect(),
            started_by: r.started_by,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    pub key: KeyBody,
    pub checks: Checklist,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// An AWS region code, or `*` for one policy that serves every region.
    pub region: String,
    /// `key_policy` (default) or `role`.
    #[param(value_type = Option<AccessMode>)]
    pub mode: Option<String>,
    /// Role mode: narrows the permission policy to this key.
    #[param(value_type = Option<String>)]
    pub key_arn: Option<String>,
    /// Key policy mode: your AWS account id, to include the statement that keeps you in control of the key.
    #[param(value_type = Option<String>)]
    pub account_id: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys/aws-trust-policy", operation_id = "getAwsTrustPolicy", tag = "encryption keys",
    params(("project_id" = Uuid, Path), PolicyQuery),
    responses(
        (status = 200, body = AwsAccessPolicies, description = "The JSON to paste into AWS"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not a CMEK project"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn aws_trust_policy(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    query: web::Query<PolicyQuery>,
) -> Result<HttpResponse, ApiError> {
    let policies = state
        .console
        .keys()
        .aws_access_policies(
            &caller.0,
            path.into_inner(),
            &query.region,
            query.mode.as_deref(),
            query.key_arn.as_deref(),
            query.account_id.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(AwsAccessPolicies::from(policies)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AzureSetupQuery {
    /// An Azure region name, e.g. `eastus2`.
    pub region: String,
    /// Your key name prefix; the answer's `key_name` adds the console's unique suffix.
    #[param(value_type = Option<String>)]
    pub key_name_prefix: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys/azure-setup", operation_id = "getAzureSetup", tag = "encryption keys",
    params(("project_id" = Uuid, Path), AzureSetupQuery),
    responses(
        (status = 200, body = AzureSetup, description = "The Entra application, commands, full key name and ARM template"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not a CMEK project"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A bad region or prefix, or Azure Key Vault is not configured"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn azure_setup(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    query: web::Query<AzureSetupQuery>,
) -> Result<HttpResponse, ApiError> {
    let setup = state
        .console
        .keys()
        .azure_setup(
            &caller.0,
            path.into_inner(),
            &query.region,
            query.key_name_prefix.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(AzureSetup::from(setup)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GcpSetupQuery {
    /// A Google Cloud region, e.g. `us-east1`: the key ring's location.
    pub region: String,
    /// Your Google Cloud project id, for the commands and the key's full name.
    #[param(value_type = Option<String>)]
    pub gcp_project_id: Option<String>,
    /// The key ring's name (default `cmek`).
    #[param(value_type = Option<String>)]
    pub key_ring: Option<String>,
    /// Your key name prefix (default `cmek`); the answer's `key_id` adds the console's
    /// unique suffix.
    #[param(value_type = Option<String>)]
    pub key_name_prefix: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys/gcp-setup", operation_id = "getGcpSetup", tag = "encryption keys",
    params(("project_id" = Uuid, Path), GcpSetupQuery),
    responses(
        (status = 200, body = GcpSetup, description = "The platform's service account, the commands, the key's name and the Terraform configuration"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not a CMEK project"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A bad region, project id, key ring or prefix, or Google Cloud KMS is not configured"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn gcp_setup(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    query: web::Query<GcpSetupQuery>,
) -> Result<HttpResponse, ApiError> {
    let setup = state
        .console
        .keys()
        .gcp_setup(
            &caller.0,
            path.into_inner(),
            &query.region,
            crate::domain::keys::gcp::KeyParts {
                gcp_project_id: query.gcp_project_id.as_deref(),
                key_ring: query.key_ring.as_deref(),
                key_name_prefix: query.key_name_prefix.as_deref(),
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(GcpSetup::from(setup)))
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys/test", operation_id = "testEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path)),
    request_body = KeyRequestInput,
    responses(
        (status = 200, body = Checklist, description = "The checklist; `passed` says whether the key could be created. Nothing is created."),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn test(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body: ApiJson<KeyRequestInput>,
) -> Result<HttpResponse, ApiError> {
    let input = body.0.into();
    let checklist = state
        .console
        .keys()
        .test_key(&caller.0, path.into_inner(), &input, None)
        .await?;
    Ok(HttpResponse::Ok().json(Checklist::from(checklist)))
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys", operation_id = "createEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path)),
    request_body = KeyRequestInput,
    responses(
        (status = 201, body = CreatedKeyBody, description = "Every required check passed; the key is saved"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "A key exists for this provider and region (rules/one-key-per-region), or not a CMEK project"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Invalid request, or the key failed the checklist (problems/key-test-failed, with `checks`)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body: ApiJson<KeyRequestInput>,
) -> Result<HttpResponse, ApiError> {
    let project_id = path.into_inner();
    let input = body.0.into();
    let (key, checks) = state
        .console
        .keys()
        .create_key(&caller.0, project_id, &input, None)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/v1/projects/{project_id}/encryption-keys/{}", key.id),
        ))
        .json(CreatedKeyBody {
            key: key.into(),
            checks: checks.into(),
        }))
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys", operation_id = "listEncryptionKeys", tag = "encryption keys",
    params(("project_id" = Uuid, Path)),
    responses(
        (status = 200, body = ListBody<KeyBody>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let keys = state
        .console
        .keys()
        .encryption_keys(&caller.0, path.into_inner())
        .await?;
    let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
    let mut changes = state
        .console
        .keys()
        .key_changes(caller.0.organization_id, &ids)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: keys
            .into_iter()
            .map(|k| {
                let change = changes
                    .iter()
                    .position(|(id, _)| *id == k.id)
                    .map(|i| changes.swap_remove(i).1.into());
                KeyBody {
                    change,
                    ..KeyBody::from(k)
                }
            })
            .collect(),
        next_page_token: None,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}", operation_id = "getEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 200, body = KeyBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn read(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let key = state
        .console
        .keys()
        .encryption_key(&caller.0, project_id, key_id)
        .await?;
    let latest = PageRequest {
        size: 10,
        after: None,
    };
    let history = state
        .console
        .keys()
        .key_history(&caller.0, project_id, key_id, latest)
        .await?;
    let versions = state.console.keys().key_versions(&caller.0, &key).await?;
    let revoked = versions.iter().any(VersionInUse::revoked);
    let change = state
        .console
        .keys()
        .key_change(&caller.0, project_id, key_id)
        .await?;
    Ok(HttpResponse::Ok().json(KeyBody {
        change: change.map(Into::into),
        history: Some(
            history
                .items
                .into_iter()
                .map(StatusChangeBody::from)
                .collect(),
        ),
        versions_status: Some(VersionsStatus::of(revoked)),
        versions: Some(versions.into_iter().map(KeyVersionBody::from).collect()),
        ..KeyBody::from(key)
    }))
}

/// What a revocation of the key, confirmed now, would do to a cluster.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfRevokedBody {
    /// `stop` policy: its data keys are dropped and it becomes `inaccessible`.
    BecomesInaccessible,
    /// `keep_running` policy: it runs on but would not resume once paused.
    WouldNotResume,
    /// Nothing changes for it now (paused, inaccessible, ...); it could not resume.
    Unchanged,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterImpactBody {
    pub id: Uuid,
    pub name: String,
    pub state: crate::http::wire::ClusterState,
    pub if_revoked: IfRevokedBody,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackupImpactBody {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub state: crate::http::wire::BackupState,
    /// The key version that wrapped its data key.
    pub key_version: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An action on the key and whether it is safe now.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImpactAction {
    /// Delete the key from the console.
    Delete,
    /// Disable (or schedule the deletion of) the key in your KMS.
    DisableKey,
    /// Disable one version of the key in your KMS (`version` names it).
    DisableVersion,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VerdictBody {
    pub action: ImpactAction,
    pub version: Option<String>,
    pub safe: bool,
    /// Why, naming what would break.
    pub reason: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyImpactBody {
    pub key_id: Uuid,
    pub clusters: Vec<ClusterImpactBody>,
    pub backups: Vec<BackupImpactBody>,
    /// The key versions that wrap data keys the console holds. A version not listed wraps
    /// nothing here.
    pub versions: Vec<KeyVersionBody>,
    pub verdicts: Vec<VerdictBody>,
}

impl From<KeyImpact> for KeyImpactBody {
    fn from(i: KeyImpact) -> Self {
        Self {
            key_id: i.key.id,
            clusters: i
                .clusters
                .into_iter()
                .map(|c| ClusterImpactBody {
                    id: c.id,
                    name: c.name,
                    state: c.state.into(),
                    if_revoked: match c.if_revoked {
                        IfRevoked::BecomesInaccessible => IfRevokedBody::BecomesInaccessible,
                        IfRevoked::WouldNotResume => IfRevokedBody::WouldNotResume,
                        IfRevoked::Unchanged => IfRevokedBody::Unchanged,
                    },
                })
                .collect(),
            backups: i
                .backups
                .into_iter()
                .map(|b| BackupImpactBody {
                    id: b.id,
                    cluster_id: b.cluster_id,
                    cluster_name: b.cluster_name,
                    state: b.state.into(),
                    key_version: b.key_version,
                    created_at: b.created_at,
                })
                .collect(),
            versions: i.versions.into_iter().map(KeyVersionBody::from).collect(),
            verdicts: i
                .verdicts
                .into_iter()
                .map(|v| VerdictBody {
                    action: match v.action {
                        "delete" => ImpactAction::Delete,
                        "disable_key" => ImpactAction::DisableKey,
                        _ => ImpactAction::DisableVersion,
                    },
                    version: v.version,
                    safe: v.safe,
                    reason: v.reason,
                })
                .collect(),
        }
    }
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}/impact", operation_id = "getEncryptionKeyImpact", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 200, body = KeyImpactBody, description = "What the key protects (clusters, with what a revocation confirmed now would do to each under the project's policy; backups; data keys per key version) and a verdict per action: delete, disable the key in your KMS, disable one of its versions"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn impact(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let impact = state
        .console
        .keys()
        .key_impact(&caller.0, project_id, key_id)
        .await?;
    Ok(HttpResponse::Ok().json(KeyImpactBody::from(impact)))
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}/history", operation_id = "listEncryptionKeyHistory", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = ListBody<StatusChangeBody>, description = "Status transitions, newest first"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn history(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let page = state
        .console
        .keys()
        .key_history(&caller.0, project_id, key_id, query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(StatusChangeBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    delete, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}", operation_id = "deleteEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    state
        .console
        .keys()
        .delete_key(&caller.0, project_id, key_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}/check", operation_id = "checkEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 200, body = CheckedKeyBody, description = "The key with its status as recorded, the checklist of the last probe, and what became of a revocation it saw (confirmed by a second probe a few seconds later, or not recorded)"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn check(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let checked = state
        .console
        .keys()
        .check_key(&caller.0, project_id, key_id, None)
        .await?;
    Ok(HttpResponse::Ok().json(CheckedKeyBody {
        confirmation: checked.confirmation.into(),
        key: checked.key.into(),
        checks: checked.checklist.into(),
    }))
}

/// Check now's answer: the key and checklist, and the confirmation of a revocation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckedKeyBody {
    #[serde(flatten)]
    pub key: KeyBody,
    pub checks: Checklist,
    pub confirmation: ConfirmationBody,
}

/// What Check now did about a revocation: `not_needed` (nothing to confirm), `confirmed`
/// (a second probe saw it too: recorded, and the project's revocation policy applies),
/// `not_confirmed` (the second probe saw something else: the revocation is not recorded) or
/// `reused` (the key was checked in the last 10 seconds, or is being checked, by another
/// press: that result answers, `checks` is empty and the KMS was not called again).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConfirmationBody {
    #[schema(value_type = String, example = "confirmed")]
    pub state: &'static str,
    /// How many probes were made (1, or 2 when a revocation was confirmed or not).
    pub probes: u8,
    /// What the first probe saw, when a revocation needed confirming.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub first: Option<&'static str>,
    /// What the confirming probe saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub second: Option<&'static str>,
}

impl From<Confirmation> for ConfirmationBody {
    fn from(c: Confirmation) -> Self {
        let (first, second) = match c {
            Confirmation::NotNeeded | Confirmation::Reused { .. } => (None, None),
            Confirmation::Confirmed { status } => (Some(status), Some(status)),
            Confirmation::NotConfirmed { first, second } => (Some(first), Some(second)),
        };
        ConfirmationBody {
            state: c.as_str(),
            probes: match c {
                Confirmation::Reused { .. } => 0,
                _ if first.is_some() => 2,
                _ => 1,
            },
            first: first.map(|s| s.as_str()),
            second: second.map(|s| s.as_str()),
        }
    }
}

/// TiDB Cloud's v1beta shape: `{"specs": [{"region", "kms_arn"}]}`.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsCmekBody {
    #[schema(min_items = 1)]
    pub specs: Vec<AwsCmekSpec>,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsCmekSpec {
    /// An AWS region code.
    pub region: String,
    pub kms_arn: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AwsCmekList {
    pub items: Vec<AwsCmekSpec>,
}

#[utoipa::path(
    get, path = "/api/v1beta/projects/{project_id}/aws-cmek", operation_id = "listAwsCmekV1beta", tag = "TiDB Cloud compatible",
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = AwsCmekList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn v1beta_list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let keys = state
        .console
        .keys()
        .encryption_keys(&caller.0, path.into_inner())
        .await?;
    // One spec per region: the region's key (a replaced one stays listed on the v1 API).
    let items = keys
        .into_iter()
        .filter(|k| k.replaced_by.is_none())
        .filter_map(|k| match k.key_ref {
            KeyRef::Aws { arn, .. } => Some(AwsCmekSpec {
                region: k.region.as_str().to_owned(),
                kms_arn: arn.as_str().to_owned(),
            }),
            KeyRef::Azure { .. } | KeyRef::Gcp { .. } | KeyRef::Local { .. } => None,
        })
        .collect();
    Ok(HttpResponse::Ok().json(AwsCmekList { items }))
}

#[utoipa::path(
    post, path = "/api/v1beta/projects/{project_id}/aws-cmek", operation_id = "createAwsCmekV1beta", tag = "TiDB Cloud compatible",
    params(("project_id" = Uuid, Path)),
    request_body = AwsCmekBody,
    responses(
        (status = 200, body = AwsCmekList, description = "Every spec tested and created (key policy mode)"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A spec is invalid or failed the checklist; nothing was created"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn v1beta_create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body: ApiJson<AwsCmekBody>,
) -> Result<HttpResponse, ApiError> {
    let project_id = path.into_inner();
    let inputs: Vec<crate::domain::keys::KeyRequestInput> = body
        .0
        .specs
        .into_iter()
        .map(|spec| crate::domain::keys::KeyRequestInput {
            provider: "aws_kms".into(),
            region: spec.region,
            key_arn: Some(spec.kms_arn),
            ..crate::domain::keys::KeyRequestInput::default()
        })
        .collect();
    let created = state
        .console
        .keys()
        .create_keys(&caller.0, project_id, &inputs)
        .await?;
    Ok(HttpResponse::Ok().json(AwsCmekList {
        items: created
            .into_iter()
            .map(|k| AwsCmekSpec {
                region: k.region.as_str().to_owned(),
                kms_arn: k.key_ref.display(),
            })
            .collect(),
    }))
}
