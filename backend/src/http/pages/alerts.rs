//! Alerts: the organization's webhooks (owners create, test and delete them; auditors read),
//! the secret shown once, and each webhook's delivery log.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::alerts::{Delivery, EVENT_TYPES, Webhook};
use crate::domain::page::{MAX_PAGE_SIZE, PageRequest};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{
    Chrome, FormErrors, actor_name, html, html_status, see_other, when,
};

pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            // The origin only, as the API and the audit log show it (see `WebhookBody`).
            url: w.url.origin(),
            description: w.description,
            created_by: actor_name(&w.created_by),
            created_at: when(w.created_at),
        }
    }
}

pub struct AttemptView {
    pub attempt: u32,
    pub at: String,
    pub status: String,
    pub error: String,
    pub duration_ms: u64,
}

pub struct DeliveryView {
    pub message_id: String,
    pub event_type: String,
    pub state: &'static str,
    pub attempts: u32,
    pub created_at: String,
    pub next_attempt_at: String,
    pub payload: String,
    pub log: Vec<AttemptView>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            message_id: d.message_id(),
            event_type: d.event_type,
            state: d.state.as_str(),
            attempts: d.attempts,
            created_at: when(d.created_at),
            next_attempt_at: d.next_attempt_at.map(when).unwrap_or_default(),
            payload: serde_json::from_str::<serde_json::Value>(&d.payload)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(d.payload),
            log: d
                .log
                .into_iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    at: when(a.at),
                    status: a
                        .status_code
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "—".into()),
                    error: a.error.unwrap_or_default(),
                    duration_ms: a.duration_ms,
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "alerts/list.html")]
struct AlertsPage {
    chrome: Chrome,
    webhooks: Vec<WebhookView>,
    /// The webhook just created and its secret: shown on this response only.
    created: Option<(WebhookView, String)>,
    form_url: String,
    form_description: String,
    errors: FormErrors,
    event_types: &'static [&'static str],
}

async fn render(
    state: &AppState,
    caller: &PageCaller,
    status: StatusCode,
    created: Option<(WebhookView, String)>,
    form: Option<&CreateForm>,
    errors: FormErrors,
) -> Result<HttpResponse, PageError> {
    let chrome = Chrome::load(&state.console, &caller.0, "alerts").await?;
    let webhooks = state
        .console
        .alerts()?
        .webhooks(
            &caller.0,
            PageRequest {
                size: MAX_PAGE_SIZE,
                after: None,
            },
        )
        .await?;
    html_status(
        status,
        &AlertsPage {
            chrome,
            webhooks: webhooks.items.into_iter().map(WebhookView::from).collect(),
            created,
            form_url: form.map(|f| f.url.clone()).unwrap_or_default(),
            form_description: form.map(|f| f.description.clone()).unwrap_or_default(),
            errors,
            event_types: &EVENT_TYPES,
        },
    )
}

pub async fn list(
    state: web::Data<AppState>,
    caller: PageCaller,
) -> Result<HttpResponse, PageError> {
    render(
        &state,
        &caller,
        StatusCode::OK,
        None,
        None,
        FormErrors::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
}

pub async fn create(
    state: web::Data<AppState>,
    caller: PageCaller,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    match state
        .console
        .alerts()?
        .create_webhook(&caller.0, &form.url, &form.description)
        .await
    {
        Ok(created) => {
            let secret = created.secret.to_string();
            render(
                &state,
                &caller,
                StatusCode::CREATED,
                Some((created.webhook.into(), secret)),
                None,
                FormErrors::default(),
            )
            .await
        }
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            render(
                &state,
                &caller,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(&form),
                errors,
            )
            .await
        }
    }
}

pub async fn delete(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    state
        .console
        .alerts()?
        .delete_webhook(&caller.0, path.into_inner())
        .await?;
    Ok(see_other("/alerts"))
}

pub async fn test(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    state
        .console
        .alerts()?
        .send_test_webhook(&caller.0, id)
        .await?;
    Ok(see_other(&format!("/alerts/{id}?sent=test")))
}

#[derive(Template)]
#[template(path = "alerts/show.html")]
struct WebhookPage {
    chrome: Chrome,
    webhook: WebhookView,
    deliveries: Vec<DeliveryView>,
    next_page_token: Option<String>,
    test_sent: bool,
}

#[derive(Deserialize)]
pub struct ShowQuery {
    page_token: Option<String>,
    sent: Option<String>,
}

pub async fn show(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    query: web::Query<ShowQuery>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let chrome = Chrome::load(&state.console, &caller.0, "alerts").await?;
    let webhook = state.console.alerts()?.webhook(&caller.0, id).await?;
    let request = PageRequest::parse(Some("25"), query.page_token.as_deref())?;
    let deliveries = state
        .console
        .alerts()?
        .webhook_deliveries(&caller.0, id, request)
        .await?;
    html(&WebhookPage {
        chrome,
        webhook: webhook.into(),
        deliveries: deliveries
            .items
            .into_iter()
            .map(DeliveryView::from)
            .collect(),
        next_page_token: deliveries.next,
        test_sent: query.sent.as_deref() == Some("test"),
    })
}
