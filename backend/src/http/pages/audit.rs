//! Audit Log: the organization's events, newest first, with filters and exports.

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::domain::audit::{AuditEvent, ChainStatus};
use crate::domain::page::PageRequest;
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, html, when};
use crate::http::shared::query::AuditQuery;

pub struct EventView {
    /// The event's place in the organization's chain (what the export, the verifiers and
    /// the chain's status number), or `legacy <seq>` for format 1's segment.
    pub place: String,
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
            place: e
                .chain_seq
                .map_or_else(|| format!("legacy {}", e.seq), |s| s.to_string()),
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

/// The actions the filter offers as suggestions.
const KNOWN_ACTIONS: &[&str] = &[
    "api_key.created",
    "api_key.revoked",
    "backup.created",
    "backup.deleted",
    "backup.failed",
    "backup.refused",
    "backup.restore_failed",
    "backup.restore_refused",
    "backup.started",
    "cluster.create_failed",
    "cluster.create_refused",
    "cluster.created",
    "cluster.delete_started",
    "cluster.deleted",
    "cluster.inaccessible",
    "cluster.paused",
    "cluster.restore_started",
    "cluster.restored",
    "cluster.resume_failed",
    "cluster.resume_started",
    "cluster.resumed",
    "cluster.will_not_resume",
    "encryption_key.checked",
    "encryption_key.created",
    "encryption_key.deleted",
    "encryption_key.status_changed",
    "encryption_key.tested",
    "invitation.accepted",
    "invitation.created",
    "invitation.revoked",
    "local_key.created",
    "local_key.disabled",
    "local_key.enabled",
    "local_key.rotated",
    "member.removed",
    "member.role_changed",
    "organization.created",
    "project.created",
    "project.updated",
    "session.sign_in",
    "session.sign_out",
    "session.switched_organization",
    "sign_in_link.issued",
    "webhook.created",
    "webhook.deleted",
    "webhook.test_sent",
];

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    events: Vec<EventView>,
    action: String,
    actor: String,
    project_id: String,
    outcome: String,
    since: String,
    until: String,
    projects: Vec<(String, String)>,
    known_actions: &'static [&'static str],
    chain: Option<ChainStatus>,
    checked_at: String,
    errors: FormErrors,
    next_page_token: Option<String>,
    /// The current filters as a query string, for export and paging links.
    filter_query: String,
    /// The public keys that sign the log (format 2), newest last.
    signing_keys: Vec<crate::crypto::audit_chain::PublishedKey>,
}

pub async fn list(
    state: web::Data<AppState>,
    caller: PageCaller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, PageError> {
    caller.0.require_auditor_view("read the audit log")?;
    let chrome = Chrome::load(&state.console, &caller.0, "audit").await?;
    let chain = state.console.audit().audit_chain_status(&caller.0).await?;
    let (events, next, errors) = match query.filter() {
        Ok(filter) => {
            let request = PageRequest::parse(Some("50"), query.page_token.as_deref())?;
            let page = state
                .console
                .audit()
                .audit_events(&caller.0, &filter, request)
                .await?;
            (page.items, page.next, FormErrors::default())
        }
        Err(err) => (Vec::new(), None, FormErrors::from_domain(err)?),
    };
    let projects = state
        .console
        .projects()
        .project_names(&caller.0)
        .await?
        .into_iter()
        .map(|(id, name)| (id.to_string(), name))
        .collect();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    html(&AuditPage {
        chrome,
        events: events.into_iter().map(EventView::from).collect(),
        action: text(&query.action),
        actor: text(&query.actor),
        project_id: text(&query.project_id),
        outcome: text(&query.outcome),
        since: text(&query.since),
        until: text(&query.until),
        projects,
        known_actions: KNOWN_ACTIONS,
        checked_at: when(chain.checked_at),
        chain: Some(chain),
        errors,
        next_page_token: next,
        filter_query: query.filter_query(),
        signing_keys: state.console.audit().signing_keys(&caller.0).await?,
    })
}
