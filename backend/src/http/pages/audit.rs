//! Audit Log: the organization's events, newest first, with filters and exports.

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::domain::audit::AuditEvent;
use crate::domain::page::PageRequest;
use crate::http::AppState;
use crate::http::api::audit::AuditQuery;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, html, query_string, when};

pub struct EventView {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: &'static str,
    pub source_ip: String,
    pub detail: String,
}

impl From<AuditEvent> for EventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            time: when(e.occurred_at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome.as_str(),
            source_ip: e.source_ip.unwrap_or_default(),
            detail: e.detail.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    events: Vec<EventView>,
    action: String,
    since: String,
    until: String,
    errors: FormErrors,
    next_page_token: Option<String>,
    /// The current filters as a query string, for export and paging links.
    filter_query: String,
}

pub async fn list(
    state: web::Data<AppState>,
    caller: PageCaller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, PageError> {
    let chrome = Chrome::load(&state.console, &caller.0, "audit").await?;
    let (events, next, errors) = match query.filter() {
        Ok(filter) => {
            let request = PageRequest::parse(Some("50"), query.page_token.as_deref())?;
            let page = state
                .console
                .audit_events(&caller.0, &filter, request)
                .await?;
            (page.items, page.next, FormErrors::default())
        }
        Err(err) => (Vec::new(), None, FormErrors::from_domain(err)?),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let filter_query = query_string(&[
        ("action", &query.action),
        ("since", &query.since),
        ("until", &query.until),
    ]);
    html(&AuditPage {
        chrome,
        events: events.into_iter().map(EventView::from).collect(),
        action: text(&query.action),
        since: text(&query.since),
        until: text(&query.until),
        errors,
        next_page_token: next,
        filter_query,
    })
}
