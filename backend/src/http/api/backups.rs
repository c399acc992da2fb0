//! Backups: `POST/GET /api/v1/clusters/{cluster_id}/backups`, `GET/DELETE
//! /api/v1/backups/{backup_id}` and `POST /api/v1/backups/{backup_id}/restore`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::clusters::{Backup, PLATFORM_KEY};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::api::clusters::ClusterBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::decode;
use crate::http::shared::query::PageQuery;
use crate::http::wire::BackupState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackupBody {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub project_id: Uuid,
    /// `creating` while its job copies the objects, then `available` (or `failed`, with
    /// `error`).
    pub state: BackupState,
    /// Plaintext bytes of the objects it holds (copied so far while `creating`).
    pub size_bytes: u64,
    /// The objects of the snapshot.
    pub object_count: u32,
    /// How many are copied: the progress while `creating`.
    pub objects_copied: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// Where it is kept: the cluster's primary region.
    pub region: String,
    /// The key that wraps its data key (`platform-managed key` without CMEK).
    pub key_id: Option<Uuid>,
    pub key_ref: String,
    /// The regions a restore creates the new cluster in.
    pub regions: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// When it became available or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Backup> for BackupBody {
    fn from(b: Backup) -> Self {
        Self {
            id: b.id,
            cluster_id: b.cluster_id,
            cluster_name: b.cluster_name,
            project_id: b.project_id,
            state: b.state.into(),
            size_bytes: b.size_bytes,
            object_count: b.object_count,
            objects_copied: b.objects_copied,
            error: b.last_error,
            region: b.region.region.as_str().to_owned(),
            key_id: b.region.key_id,
            key_ref: b.region.key_ref.unwrap_or_else(|| PLATFORM_KEY.to_owned()),
            regions: b.regions.iter().map(|r| r.as_str().to_owned()).collect(),
            created_by: b.created_by,
            created_at: b.created_at,
            finished_at: b.finished_at,
        }
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The new cluster's name (as for a new cluster); default `<cluster>-restored-<4 hex>`.
    pub name: Option<String>,
}

#[utoipa::path(
    post, path = "/api/v1/clusters/{cluster_id}/backups", operation_id = "createBackup", tag = "backups",
    params(("cluster_id" = Uuid, Path)),
    responses(
        (status = 202, body = BackupBody, description = "Started: the snapshot is taken and the backup's data key made; the backup is `creating` while a background job copies the objects (follow `Location` until it is `available` or `failed`)"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The cluster is not available, a backup of it is being taken, or the KMS refused the backup's data key"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let backup = state
        .console
        .clusters()?
        .create_backup(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/backups/{}", backup.id)))
        .json(BackupBody::from(backup)))
}

#[utoipa::path(
    get, path = "/api/v1/clusters/{cluster_id}/backups", operation_id = "listClusterBackups", tag = "backups",
    params(("cluster_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ListBody<BackupBody>, description = "Newest first; also for a cluster that was deleted")),
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
        .backups(&caller.0, path.into_inner(), query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(BackupBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}/backups", operation_id = "listProjectBackups", tag = "backups",
    params(("project_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ListBody<BackupBody>, description = "Every backup of the project, newest first, those of deleted clusters included"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn project_list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .console
        .clusters()?
        .project_backups(&caller.0, path.into_inner(), query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(BackupBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/backups/{backup_id}", operation_id = "getBackup", tag = "backups",
    params(("backup_id" = Uuid, Path)),
    responses((status = 200, body = BackupBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn read(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let backup = state
        .console
        .clusters()?
        .backup(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(BackupBody::from(backup)))
}

#[utoipa::path(
    delete, path = "/api/v1/backups/{backup_id}", operation_id = "deleteBackup", tag = "backups",
    params(("backup_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted with its data"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The backup is still being taken, or a restore from it is running (rules/backup-state)"),
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
        .delete_backup(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post, path = "/api/v1/backups/{backup_id}/restore", operation_id = "restoreBackup", tag = "backups",
    params(("backup_id" = Uuid, Path)),
    request_body(content = RestoreBody, description = "Optional"),
    responses(
        (status = 202, body = ClusterBody, description = "Started: a new cluster in the same project and regions, `creating` while a background job copies the backup's objects into it (`restore` shows the progress; follow `Location` until it is `available` or `failed`)"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The backup is not available (rules/backup-state), the key that wraps it is refused (problems/kms-key-unusable), a region has no active key, or the name is taken"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn restore(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is optional; one that is sent must be valid.
    let name = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        decode::<RestoreBody>(&body)?.name
    };
    let cluster = state
        .console
        .clusters()?
        .restore_backup(&caller.0, path.into_inner(), name.as_deref())
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/clusters/{}", cluster.id)))
        .json(ClusterBody::new(
            cluster,
            state.console.keys().aws_account_id(),
        )))
}
