//! `/api/v1/local-kms/keys`: the built-in local KMS (development only) for scripts, as the
//! Local KMS page offers it: list, create, enable, disable and rotate keys. Owners change keys
//! (R2); with `CMEK_ENV=production` every operation is refused (R3,
//! rules/local-kms-not-in-production).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::identity::Caller;
use crate::domain::local_kms::{LocalKey, LocalKeyAction};
use crate::domain::{Console, DomainError};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::ApiJson;

/// A key of the local KMS. Its material never leaves the console.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LocalKeyBody {
    /// What an encryption key of provider `local` names as `key_id`.
    pub id: Uuid,
    pub name: String,
    /// A disabled key wraps and unwraps nothing: it plays a revoked customer key.
    pub enabled: bool,
    /// The current version; rotation adds one, older versions still unwrap.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl From<LocalKey> for LocalKeyBody {
    fn from(k: LocalKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            enabled: k.enabled,
            version: k.version,
            created_at: k.created_at,
            rotated_at: k.rotated_at,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocalKeyBody {
    /// 1-64 characters, no control characters.
    pub name: String,
}

#[utoipa::path(
    get, path = "/api/v1/local-kms/keys", operation_id = "listLocalKmsKeys", tag = "local KMS",
    responses(
        (status = 200, body = ListBody<LocalKeyBody>, description = "Every local key of the organization, oldest first (one page)"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The console runs in production (rules/local-kms-not-in-production)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(state: web::Data<AppState>, caller: ApiCaller) -> Result<HttpResponse, ApiError> {
    let keys = state.console.keys().local_keys(&caller.0).await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: keys.into_iter().map(LocalKeyBody::from).collect(),
        next_page_token: None,
    }))
}

#[utoipa::path(
    post, path = "/api/v1/local-kms/keys", operation_id = "createLocalKmsKey", tag = "local KMS",
    request_body = CreateLocalKeyBody,
    responses(
        (status = 201, body = LocalKeyBody, description = "Created, enabled, version 1; use its id as `key_id` of an encryption key with provider `local`"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Not an owner (rules/owner-only), or the console runs in production (rules/local-kms-not-in-production)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    body: ApiJson<CreateLocalKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .console
        .keys()
        .create_local_key(&caller.0, &body.0.name)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/local-kms/keys/{}", key.id)))
        .json(LocalKeyBody::from(key)))
}

/// One local key of the caller's organization (the local KMS holds a handful per
/// organization: a development tool).
async fn one(console: &Console, caller: &Caller, id: Uuid) -> Result<HttpResponse, ApiError> {
    let key = console
        .keys()
        .local_keys(caller)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or(DomainError::NotFound("local key"))?;
    Ok(HttpResponse::Ok().json(LocalKeyBody::from(key)))
}

#[utoipa::path(
    get, path = "/api/v1/local-kms/keys/{local_key_id}", operation_id = "getLocalKmsKey", tag = "local KMS",
    params(("local_key_id" = Uuid, Path)),
    responses((status = 200, body = LocalKeyBody)),
    security(("api_key" = []), ("session" = []))
)]
pub async fn read(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    one(&state.console, &caller.0, path.into_inner()).await
}

/// Disable, enable or rotate, then the key as it is now.
async fn change(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    action: LocalKeyAction,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    state
        .console
        .keys()
        .change_local_key(&caller.0, id, action)
        .await?;
    one(&state.console, &caller.0, id).await
}

#[utoipa::path(
    post, path = "/api/v1/local-kms/keys/{local_key_id}/disable", operation_id = "disableLocalKmsKey", tag = "local KMS",
    params(("local_key_id" = Uuid, Path)),
    responses(
        (status = 200, body = LocalKeyBody, description = "Disabled: the key now refuses to wrap and unwrap, as a revoked customer key does; the key monitor sees it at its next check"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn disable(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    change(state, caller, path, LocalKeyAction::Disable).await
}

#[utoipa::path(
    post, path = "/api/v1/local-kms/keys/{local_key_id}/enable", operation_id = "enableLocalKmsKey", tag = "local KMS",
    params(("local_key_id" = Uuid, Path)),
    responses((status = 200, body = LocalKeyBody, description = "Enabled again")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn enable(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    change(state, caller, path, LocalKeyAction::Enable).await
}

#[utoipa::path(
    post, path = "/api/v1/local-kms/keys/{local_key_id}/rotate", operation_id = "rotateLocalKmsKey", tag = "local KMS",
    params(("local_key_id" = Uuid, Path)),
    responses((status = 200, body = LocalKeyBody, description = "Rotated: new data keys are wrapped under the next version; older versions still unwrap")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    change(state, caller, path, LocalKeyAction::Rotate).await
}
