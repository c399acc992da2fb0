//! `/api/v1/clusters/{cluster_id}/objects`: a cluster's data, streamed in both directions
//! with flat memory and stored sealed under the cluster's data keys.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::clusters::{BodyError, MAX_OBJECT_BYTES, StoredObject};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::shared::query::PageQuery;
use crate::http::shared::query::query_value;
use crate::http::shared::stream::{body_stream, declared_length, download};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ObjectBody {
    pub name: String,
    /// Plaintext bytes.
    pub size_bytes: u64,
    /// Changes with every write of the object.
    pub version: Uuid,
    pub updated_at: DateTime<Utc>,
}

impl From<StoredObject> for ObjectBody {
    fn from(o: StoredObject) -> Self {
        Self {
            name: o.name.as_str().to_owned(),
            size_bytes: o.size_bytes,
            version: o.version,
            updated_at: o.updated_at,
        }
    }
}

#[utoipa::path(
    get, path = "/api/v1/clusters/{cluster_id}/objects", operation_id = "listObjects", tag = "cluster data",
    params(("cluster_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ListBody<ObjectBody>), (status = 404, body = Problem, content_type = "application/problem+json")),
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
        .objects(&caller.0, path.into_inner(), query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(ObjectBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    put, path = "/api/v1/clusters/{cluster_id}/objects/{name}", operation_id = "putObject", tag = "cluster data",
    params(("cluster_id" = Uuid, Path), ("name" = String, Path, description = "1-1024 bytes; `/` separates segments; no `..`, no control characters")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The object's bytes, streamed (at most 5 GiB)"),
    responses(
        (status = 201, body = ObjectBody, description = "Stored sealed in every region of the cluster"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The cluster is not available (paused, inaccessible, ...)"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "The name is not valid"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn put(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, String)>,
    request: actix_web::HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (cluster_id, _) = path.into_inner();
    let name = object_name(&request)?;
    if declared_length(&request).is_some_and(|length| length > MAX_OBJECT_BYTES) {
        return Err(ApiError::Domain(crate::domain::DomainError::Body(
            BodyError::TooLarge,
        )));
    }
    let object = state
        .console
        .clusters()?
        .put_object(&caller.0, cluster_id, &name, body_stream(payload))
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!(
                "/api/v1/clusters/{cluster_id}/objects/{}",
                object_path(object.name.as_str())
            ),
        ))
        .json(ObjectBody::from(object)))
}

/// The object's name as sent: the rest of the path after `/objects/`, %-decoded strictly.
/// The router's own decoding replaces bytes that are not UTF-8 with U+FFFD, so `coll%ff` and
/// `coll%fe` would name one object and the second write would silently replace the first.
fn object_name(request: &actix_web::HttpRequest) -> Result<String, ApiError> {
    let raw = request
        .uri()
        .path()
        .split_once("/objects/")
        .map_or("", |(_, name)| name);
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|name| name.into_owned())
        .map_err(|_| {
            ApiError::Domain(crate::domain::DomainError::invalid(
                "name",
                "must be UTF-8 once its %-escapes are decoded",
            ))
        })
}

/// An object's name in a URL path: each segment percent-encoded, the slashes kept.
pub fn object_path(name: &str) -> String {
    name.split('/')
        .map(query_value)
        .collect::<Vec<_>>()
        .join("/")
}

#[utoipa::path(
    get, path = "/api/v1/clusters/{cluster_id}/objects/{name}", operation_id = "getObject", tag = "cluster data",
    params(("cluster_id" = Uuid, Path), ("name" = String, Path)),
    responses(
        (status = 200, content_type = "application/octet-stream", description = "The object's bytes, opened as they stream"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The cluster is not available"),
        (status = 502, body = Problem, content_type = "application/problem+json", description = "The stored copy failed its integrity check (problems/object-integrity)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, String)>,
    request: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (cluster_id, _) = path.into_inner();
    let name = object_name(&request)?;
    let read = state
        .console
        .clusters()?
        .get_object(&caller.0, cluster_id, &name)
        .await?;
    Ok(download(read).await?)
}

#[utoipa::path(
    delete, path = "/api/v1/clusters/{cluster_id}/objects/{name}", operation_id = "deleteObject", tag = "cluster data",
    params(("cluster_id" = Uuid, Path), ("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted in every region"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<(Uuid, String)>,
    request: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (cluster_id, _) = path.into_inner();
    let name = object_name(&request)?;
    state
        .console
        .clusters()?
        .delete_object(&caller.0, cluster_id, &name)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
