//! Changing a key in place over the API: `POST .../encryption-keys/{key_id}/replace` (a key
//! body: tested, then saved as the region's key) and `.../rewrap` (to the key's current
//! version). Both answer 202 with the change; its progress is on the key (`change`, whose
//! shape is with the key's, in `keys.rs`).

use actix_web::{HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use crate::http::AppState;
use crate::http::api::keys::{KeyBody, KeyChangeBody};
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::ApiJson;
use crate::http::wire::{Checklist, KeyRequestInput};

/// A replacement that started.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplacementBody {
    /// The new key, now the region's key.
    pub key: KeyBody,
    /// What its checks said (all required ones passed).
    pub checks: Checklist,
    pub change: KeyChangeBody,
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}/replace", operation_id = "replaceEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    request_body = KeyRequestInput,
    responses(
        (status = 202, body = ReplacementBody, description = "The new key passed every check and is now the region's key; the old key's data keys are being moved to it (progress: `change` on either key). The old key stays until nothing it wrapped remains."),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The key was replaced already, or a change of it is running (rules/key-change)"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Invalid request (another provider or region, the same key), or the new key failed the checklist (problems/key-test-failed, with `checks`)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn replace(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
    body: ApiJson<KeyRequestInput>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let input = body.0.into();
    let replaced = state
        .console
        .keys()
        .replace_key(&caller.0, project_id, key_id, &input, None)
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Location",
            format!(
                "/api/v1/projects/{project_id}/encryption-keys/{}",
                replaced.key.id
            ),
        ))
        .json(ReplacementBody {
            key: replaced.key.into(),
            checks: replaced.checklist.into(),
            change: replaced.rewrap.into(),
        }))
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}/rewrap", operation_id = "rewrapEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 202, body = KeyChangeBody, description = "The key's data keys are being moved to its current version (after a rotation in Azure Key Vault or the local KMS; an AWS key has nothing to move: KMS decrypts with the backing key that encrypted). On a replaced key: what it still wraps (a replacement that ended failed) is moved to its successor."),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "A change of the key is running, or the key is an AWS key, which has nothing to re-wrap (rules/key-change)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn rewrap(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let rewrap = state
        .console
        .keys()
        .rewrap_key(&caller.0, project_id, key_id)
        .await?;
    Ok(HttpResponse::Accepted().json(KeyChangeBody::from(rewrap)))
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys/{key_id}/repin", operation_id = "repinEncryptionKey", tag = "encryption keys",
    params(("project_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 200, body = KeyBody, description = "The key's vault answers for another Microsoft Entra tenant, and unwrapped a data key this key wrapped there: the key now follows the vault to that tenant"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Nothing to re-pin (the vault did not move), or the vault where it is now could not prove it holds the same key material (rules/key-change)"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "Not an Azure Key Vault key"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn repin(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, key_id) = path.into_inner();
    let key = state
        .console
        .keys()
        .repin_key(&caller.0, project_id, key_id)
        .await?;
    Ok(HttpResponse::Ok().json(KeyBody::from(key)))
}
