//! `/api/v1/projects/{project_id}/clusters` and `/api/v1/clusters/{cluster_id}`: create,
//! list, read, delete, pause and resume clusters. The rules (R5-R8, R10, R11) are the
//! domain's; handlers parse, call it and render.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::clusters::{Cluster, ClusterRequestInput, PLATFORM_KEY};
use crate::domain::keys::Provider as DomainProvider;
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::ApiJson;
use crate::http::shared::query::PageQuery;
use crate::http::wire::{ClusterState, Provider, Tier};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterRegionBody {
    pub region: String,
    /// The project's encryption key for this region (R5), `null` for platform-managed keys.
    pub key_id: Option<Uuid>,
    /// The key as you know it (the ARN, the local key id), or `platform-managed key`.
    pub key_ref: String,
    /// The key version that wrapped this region's data key (Azure: the key version; local:
    /// its version number; AWS: the key ARN, since AWS finds the backing key itself).
    pub key_version: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackupOptions {
    /// Whether backups are copied to a second region (refused in CMEK projects, R7).
    pub dual_region: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RestoreProgressBody {
    pub backup_id: Uuid,
    /// The backup's objects.
    pub objects_total: u32,
    /// How many are in the cluster so far.
    pub objects_restored: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterBody {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    /// The cloud, named as for its keys: `aws_kms`, `azure_key_vault`, `gcp_kms` or `local`.
    pub provider: Provider,
    pub tier: Tier,
    /// In order; the first is the primary region, where backups are kept.
    pub regions: Vec<ClusterRegionBody>,
    pub state: ClusterState,
    /// The last failure (a resume the KMS refused, with region, key and KMS error).
    pub last_error: Option<String>,
    /// Set while a key (or key version) it needs is revoked in a `keep_running` project: it
    /// runs on, but its next resume would fail until the key works again (why, as recorded).
    pub will_not_resume: Option<String>,
    /// The platform's AWS account that uses the key (AWS clusters).
    pub account_id: Option<String>,
    pub backup: BackupOptions,
    /// Set on a cluster restored from a backup: which, and the progress of its restore
    /// (the cluster is `creating` until every object is in it).
    pub restore: Option<RestoreProgressBody>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ClusterBody {
    pub fn new(c: Cluster, aws_account: Option<&str>) -> Self {
        Self {
            id: c.id,
            project_id: c.project_id,
            name: c.name.as_str().to_owned(),
            provider: c.provider.into(),
            tier: c.tier.into(),
            regions: c
                .regions
                .into_iter()
                .map(|r| ClusterRegionBody {
                    region: r.region.as_str().to_owned(),
                    key_id: r.key_id,
                    key_ref: r.key_ref.unwrap_or_else(|| PLATFORM_KEY.to_owned()),
                    key_version: r.key_version,
                })
                .collect(),
            state: c.state.into(),
            last_error: c.last_error,
            will_not_resume: c.will_not_resume,
            account_id: (c.provider == DomainProvider::AwsKms)
                .then(|| aws_account.map(str::to_owned))
                .flatten(),
            backup: BackupOptions {
                dual_region: c.dual_region_backup,
            },
            restore: c.restore.map(|r| RestoreProgressBody {
                backup_id: r.backup_id,
                objects_total: r.objects_total,
                objects_restored: r.objects_restored,
            }),
            created_by: c.created_by,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    #[serde(default)]
    pub dual_region: bool,
}

/// The cloud a cluster runs on, as a request names it (the short names are accepted too).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // documents `provider`; the domain parses it
pub enum ClusterProvider {
    AwsKms,
    Aws,
    AzureKeyVault,
    Azure,
    GcpKms,
    Gcp,
    Local,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClusterBody {
    /// 1-40 characters: lower-case letters, digits and `-`, starting with a letter and not
    /// ending with `-`.
    pub name: String,
    /// `aws_kms` (or `aws`), `azure_key_vault` (or `azure`), `gcp_kms` (or `gcp`), `local`.
    #[schema(value_type = ClusterProvider)]
    pub provider: String,
    /// One to five distinct regions of the provider (AWS region codes for `aws_kms` and
    /// `local`, Azure region names for `azure_key_vault`, Google Cloud regions for `gcp_kms`);
    /// in a CMEK project each needs an
    /// active key (R5, R11).
    #[schema(min_items = 1, max_items = 5)]
    pub regions: Vec<String>,
    /// `dedicated` (default) or `serverless` (refused in CMEK projects, R6).
    #[schema(value_type = Option<Tier>)]
    pub tier: Option<String>,
    pub backup: Option<BackupRequest>,
}

fn body(state: &AppState, cluster: Cluster) -> ClusterBody {
    ClusterBody::new(cluster, state.console.keys().aws_account_id())
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/clusters", operation_id = "createCluster", tag = "clusters",
    params(("project_id" = Uuid, Path)),
    request_body = CreateClusterBody,
    responses(
        (status = 201, body = ClusterBody, description = "Created with a data key per region, wrapped by the region's key"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "No active key for a region (rules/key-required-for-region), the name is taken (rules/cluster-name-taken), or the KMS refused a data key (problems/kms-key-unusable, with `failures`)"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Invalid input, Serverless in a CMEK project (rules/cmek-dedicated-only), dual-region backup in a CMEK project (rules/no-dual-region-backup)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body_in: ApiJson<CreateClusterBody>,
) -> Result<HttpResponse, ApiError> {
    let input = body_in.0;
    let input = ClusterRequestInput {
        name: input.name,
        provider: input.provider,
        regions: input.regions,
        tier: input.tier,
        dual_region_backup: input.backup.is_some_and(|b| b.dual_region),
    };
    let cluster = state
        .console
        .clusters()?
        .create_cluster(&caller.0, path.into_inner(), &input)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/clusters/{}", cluster.id)))
        .json(body(&state, cluster)))
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/clusters", operation_id = "listClusters", tag = "clusters",
    params(("project_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ListBody<ClusterBody>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .console
        .clusters()?
        .clusters(&caller.0, path.into_inner(), query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(|c| body(&state, c)).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/clusters/{cluster_id}", operation_id = "getCluster", tag = "clusters",
    params(("cluster_id" = Uuid, Path)),
    responses((status = 200, body = ClusterBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn read(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state
        .console
        .clusters()?
        .cluster(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(body(&state, cluster)))
}

#[utoipa::path(
    delete, path = "/api/v1/clusters/{cluster_id}", operation_id = "deleteCluster", tag = "clusters",
    params(("cluster_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted with its data; its backups stay until deleted"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "A backup of it is being taken (rules/backup-state): delete it once the backup is done"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    state
        .console
        .clusters()?
        .delete_cluster(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post, path = "/api/v1/clusters/{cluster_id}/pause", operation_id = "pauseCluster", tag = "clusters",
    params(("cluster_id" = Uuid, Path)),
    responses(
        (status = 200, body = ClusterBody, description = "Paused; its data keys are dropped"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not in a state that can be paused (rules/cluster-state)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn pause(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state
        .console
        .clusters()?
        .pause_cluster(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(body(&state, cluster)))
}

#[utoipa::path(
    post, path = "/api/v1/clusters/{cluster_id}/resume", operation_id = "resumeCluster", tag = "clusters",
    params(("cluster_id" = Uuid, Path)),
    responses(
        (status = 200, body = ClusterBody, description = "Available again: every region's data key unwrapped"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The KMS refused a data key (problems/kms-key-unusable, naming each region, key and KMS error); the cluster stays paused"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "The KMS could not be reached"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn resume(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state
        .console
        .clusters()?
        .resume_cluster(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(body(&state, cluster)))
}
