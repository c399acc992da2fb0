//! `GET /api/v1/audit-events`: the organization's audit log, newest first, as a paginated JSON
//! list or, with `format=csv`, the whole filtered log as a CSV download.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::domain::identity::Caller;
use crate::domain::page::{MAX_PAGE_SIZE, PageRequest};
use crate::domain::{Console, DomainError, FieldError};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::api::wire;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};

/// The CSV export stops after this many events; narrow the time range for more.
pub const CSV_EXPORT_LIMIT: usize = 100_000;

#[derive(Deserialize, utoipa::IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exact action, e.g. `project.created`.
    pub action: Option<String>,
    /// RFC 3339 time; events at or after it.
    pub since: Option<String>,
    /// RFC 3339 time; events before it.
    pub until: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    pub page_size: Option<String>,
    pub page_token: Option<String>,
}

fn time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, FieldError> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                FieldError::new(field, "must be an RFC 3339 time, e.g. 2026-11-22T09:00:00Z")
            }),
    }
}

impl AuditQuery {
    pub fn filter(&self) -> Result<AuditFilter, DomainError> {
        let since = time("since", self.since.as_deref());
        let until = time("until", self.until.as_deref());
        match (since, until) {
            (Ok(since), Ok(until)) => Ok(AuditFilter {
                action: self.action.clone().filter(|a| !a.is_empty()),
                since,
                until,
            }),
            (since, until) => Err(DomainError::Invalid(
                [since.err(), until.err()].into_iter().flatten().collect(),
            )),
        }
    }

    pub fn wants_csv(&self) -> Result<bool, DomainError> {
        match self.format.as_deref() {
            None | Some("") | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(_) => Err(DomainError::invalid(
                "format",
                "must be \"json\" or \"csv\"",
            )),
        }
    }
}

#[utoipa::path(
    get, path = "/api/v1/audit-events", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = ListBody<wire::AuditEvent>, description = "JSON page, or text/csv with format=csv"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter()?;
    if query.wants_csv()? {
        let events = export(&state.console, &caller.0, &filter).await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit-events.csv\"",
            ))
            .body(to_csv(&events)));
    }
    let page = PageRequest::parse(query.page_size.as_deref(), query.page_token.as_deref())?;
    let page = state.console.audit_events(&caller.0, &filter, page).await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(wire::AuditEvent::from).collect(),
        next_page_token: page.next,
    }))
}

pub async fn export(
    console: &Console,
    caller: &Caller,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, DomainError> {
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let request = PageRequest {
            size: MAX_PAGE_SIZE,
            after,
        };
        let page = console.audit_events(caller, filter, request).await?;
        events.extend(page.items);
        match (page.next, events.last()) {
            (Some(_), Some(last)) if events.len() < CSV_EXPORT_LIMIT => after = Some(last.id),
            _ => return Ok(events),
        }
    }
}

/// Quotes a CSV field, and defuses values a spreadsheet would run as a formula.
fn csv_field(value: &str) -> String {
    let defused = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_owned(),
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

pub fn to_csv(events: &[AuditEvent]) -> String {
    let mut out = String::from(
        "seq,id,occurred_at,actor,action,target,outcome,source_ip,detail,prev_hash,hash\n",
    );
    for e in events {
        let row = [
            e.seq.to_string(),
            e.id.to_string(),
            e.occurred_at.to_rfc3339(),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.outcome.as_str().to_owned(),
            e.source_ip.clone().unwrap_or_default(),
            e.detail.to_string(),
            e.prev_hash.clone(),
            e.hash.clone(),
        ];
        let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\","), "\"say \"\"hi\"\",\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
