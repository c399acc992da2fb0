//! `GET /api/v1/audit-events`: the organization's audit log, newest first, as a paginated JSON
//! list or, with `format=csv` or `format=json`, the whole filtered log as a download, streamed
//! a page at a time (no row cap: memory stays flat however long the log is).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use uuid::Uuid;

use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::domain::identity::Caller;
use crate::domain::page::{MAX_PAGE_SIZE, PageRequest};
use crate::domain::{Console, DomainError};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::shared::query::{AuditQuery, ExportFormat};
use crate::http::wire;

#[utoipa::path(
    get, path = "/api/v1/audit-events", operation_id = "listAuditEvents", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Without format: a page of JSON. format=json: every matching event as one JSON document of the same shape (streamed, next_page_token null); format=csv: every matching event as CSV (streamed)",
            content((ListBody<wire::AuditEvent> = "application/json"), (String = "text/csv"))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Members: the audit log is for owners and auditors"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    // Who may look comes before what they asked for: a member's bad filter is still a 403.
    caller.0.require_auditor_view("read the audit log")?;
    let filter = query.filter()?;
    let export = query.export()?;
    // Read even for a download (which starts at the newest event): a bad one is refused alike.
    let page = PageRequest::parse(query.page_size.as_deref(), query.page_token.as_deref())?;
    if let Some(export) = export {
        return Ok(download(&state.console, &caller.0, filter, export).await?);
    }
    let page = state
        .console
        .audit()
        .audit_events(&caller.0, &filter, page)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(wire::AuditEvent::from).collect(),
        next_page_token: page.next,
    }))
}

/// The whole filtered log as a CSV or JSON attachment, streamed a page at a time. The first
/// page is read before the answer starts, so a refusal (a member: 403) is a proper problem;
/// a failure later cuts the transfer short rather than ending it as if it were complete.
pub async fn download(
    console: &Console,
    caller: &Caller,
    filter: AuditFilter,
    export: ExportFormat,
) -> Result<HttpResponse, DomainError> {
    let request = PageRequest {
        size: MAX_PAGE_SIZE,
        after: None,
    };
    let first = console
        .audit()
        .audit_events(caller, &filter, request)
        .await?;
    struct Cursor {
        console: Console,
        caller: Caller,
        filter: AuditFilter,
        pending: Option<Vec<AuditEvent>>,
        after: Option<Uuid>,
        more: bool,
        started: bool,
        export: ExportFormat,
        finished: bool,
    }
    let cursor = Cursor {
        console: console.clone(),
        caller: caller.clone(),
        filter,
        after: first.items.last().map(|e| e.id),
        more: first.next.is_some(),
        pending: Some(first.items),
        started: false,
        export,
        finished: false,
    };
    let body = futures_util::stream::unfold(cursor, |mut c| async move {
        if c.finished {
            return None;
        }
        let events = match c.pending.take() {
            Some(events) => events,
            None if c.more => {
                let request = PageRequest {
                    size: MAX_PAGE_SIZE,
                    after: c.after,
                };
                match c
                    .console
                    .audit()
                    .audit_events(&c.caller, &c.filter, request)
                    .await
                {
                    Ok(page) => {
                        c.after = page.items.last().map(|e| e.id);
                        c.more = page.next.is_some();
                        page.items
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "audit export cut short");
                        c.finished = true;
                        return Some((Err(std::io::Error::other("audit export failed")), c));
                    }
                }
            }
            None => Vec::new(),
        };
        let mut chunk = String::new();
        if !c.started {
            chunk.push_str(match c.export {
                ExportFormat::Csv => CSV_HEADER,
                _ => "{\"items\":[",
            });
        }
        for (i, event) in events.into_iter().enumerate() {
            match c.export {
                ExportFormat::Csv => chunk.push_str(&csv_row(&event)),
                _ => {
                    if c.started || i > 0 {
                        chunk.push(',');
                    }
                    chunk.push_str(
                        &serde_json::to_string(&wire::AuditEvent::from(event)).unwrap_or_default(),
                    );
                }
            }
        }
        c.started = true;
        if !c.more {
            if c.export == ExportFormat::Json {
                chunk.push_str("],\"next_page_token\":null}");
            }
            c.finished = true;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), c))
    });
    let (content_type, file) = match export {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "audit-events.csv"),
        _ => ("application/json", "audit-events.json"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
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

const CSV_HEADER: &str =
    "seq,id,occurred_at,actor,action,target,outcome,source_ip,detail,prev_hash,hash\n";

fn csv_row(e: &AuditEvent) -> String {
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
    let mut line = fields.join(",");
    line.push('\n');
    line
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

/// A public key that signs the audit log (format 2), and when it was valid.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SigningKeyBody {
    /// The first 16 hex digits of the SHA-256 of the raw public key.
    pub key_id: String,
    /// `Ed25519`.
    pub algorithm: String,
    /// The raw 32-byte public key, base64.
    pub public_key: String,
    /// RFC 3339, UTC, six fractional digits.
    pub valid_from: String,
    /// When the next key took over; it signs nothing after this. `null` for the current key.
    pub retired_at: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SigningKeysBody {
    /// Oldest first; the last one signs now. Save this document to verify exports offline
    /// (`cmek-console audit verify-export FILE --keys KEYS`, or tools/verify_audit_export.py).
    pub keys: Vec<SigningKeyBody>,
}

#[utoipa::path(
    get, path = "/api/v1/audit/signing-keys", operation_id = "listAuditSigningKeys", tag = "audit",
    responses(
        (status = 200, body = SigningKeysBody, description = "The public keys that sign the audit log, each with the time it was valid for"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn signing_keys(
    state: web::Data<AppState>,
    caller: ApiCaller,
) -> Result<HttpResponse, ApiError> {
    let keys = state
        .console
        .audit()
        .signing_keys(&caller.0)
        .into_iter()
        .map(|k| SigningKeyBody {
            key_id: k.key_id,
            algorithm: k.algorithm,
            public_key: k.public_key,
            valid_from: k.valid_from,
            retired_at: k.retired_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SigningKeysBody { keys }))
}
