//! Alerts: `POST/GET /api/v1/webhooks`, `GET/DELETE /api/v1/webhooks/{id}`,
//! `GET /api/v1/webhooks/{id}/deliveries` and `POST /api/v1/webhooks/{id}/test`.
//! Owners configure; auditors read; members get 403.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::alerts::{Attempt, Delivery, EVENT_TYPES, Webhook};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::decode;
use crate::http::shared::query::PageQuery;

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookBody {
    pub id: Uuid,
    /// The endpoint's origin (`scheme://host[:port]`): a path or query often carries a
    /// token, and some URLs are themselves the credential, so the full URL is shown once, in
    /// the answer that creates the webhook, and never again (to owners or auditors).
    pub url: String,
    pub description: String,
    /// The event types it receives (every alert of the organization).
    pub event_types: Vec<&'static str>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookBody {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url.origin(),
            description: w.description,
            event_types: EVENT_TYPES.to_vec(),
            created_by: w.created_by,
            created_at: w.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedWebhookBody {
    #[serde(flatten)]
    pub webhook: WebhookBody,
    /// The signing secret (`whsec_...`), shown this once.
    pub secret: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://...`; plain `http` only to localhost in development. No user name, password
    /// or fragment; in production no address that is not public.
    pub url: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptBody {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl From<Attempt> for AttemptBody {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            at: a.at,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryBody {
    pub id: Uuid,
    /// The `webhook-id` header of every attempt of this delivery.
    pub message_id: String,
    pub event_type: String,
    /// `pending` (its next attempt is due at `next_attempt_at`), `delivered` or `failed`.
    pub state: &'static str,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub log: Vec<AttemptBody>,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        Self {
            message_id: d.message_id(),
            id: d.id,
            event_type: d.event_type,
            state: d.state.as_str(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
            log: d.log.into_iter().map(AttemptBody::from).collect(),
        }
    }
}

#[utoipa::path(
    post, path = "/api/v1/webhooks", operation_id = "createWebhook", tag = "alerts",
    request_body = CreateWebhook,
    responses(
        (status = 201, body = CreatedWebhookBody, description = "Created; the secret is in this answer only"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The organization has ten webhooks already (rules/webhook-limit)"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "The URL is refused (field `url`)"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: CreateWebhook = decode(&body)?;
    let created = state
        .console
        .alerts()?
        .create_webhook(&caller.0, &request.url, &request.description)
        .await?;
    let id = created.webhook.id;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/webhooks/{id}")))
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedWebhookBody {
            webhook: WebhookBody {
                url: created.webhook.url.as_str().to_owned(),
                ..created.webhook.into()
            },
            secret: created.secret.to_string(),
        }))
}

#[utoipa::path(
    get, path = "/api/v1/webhooks", operation_id = "listWebhooks", tag = "alerts",
    params(PageQuery),
    responses((status = 200, body = ListBody<WebhookBody>), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    // Who may look comes before what they asked for: a member's bad page token is a 403.
    caller.0.require_auditor_view("see alerts")?;
    let page = state
        .console
        .alerts()?
        .webhooks(&caller.0, query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(WebhookBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/webhooks/{webhook_id}", operation_id = "getWebhook", tag = "alerts",
    params(("webhook_id" = Uuid, Path)),
    responses((status = 200, body = WebhookBody), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn read(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let webhook = state
        .console
        .alerts()?
        .webhook(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(webhook)))
}

#[utoipa::path(
    delete, path = "/api/v1/webhooks/{webhook_id}", operation_id = "deleteWebhook", tag = "alerts",
    params(("webhook_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted with its delivery log"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    state
        .console
        .alerts()?
        .delete_webhook(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/api/v1/webhooks/{webhook_id}/deliveries", operation_id = "listWebhookDeliveries", tag = "alerts",
    params(("webhook_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ListBody<DeliveryBody>, description = "Newest first, each with its attempts"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.0.require_auditor_view("see alerts")?;
    let page = state
        .console
        .alerts()?
        .webhook_deliveries(&caller.0, path.into_inner(), query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(DeliveryBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    post, path = "/api/v1/webhooks/{webhook_id}/test", operation_id = "sendWebhookTestEvent", tag = "alerts",
    params(("webhook_id" = Uuid, Path)),
    responses((status = 202, description = "A `webhook.test` event is queued for this webhook; see its deliveries"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("session" = []))
)]
pub async fn test(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    state
        .console
        .alerts()?
        .send_test_webhook(&caller.0, id)
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/webhooks/{id}/deliveries")))
        .finish())
}
