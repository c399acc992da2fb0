//! `GET /api/v1/audit-events`: the organization's audit log, newest first, as a paginated JSON
//! list or, with `format=csv` or `format=json`, the whole filtered log as a download, streamed
//! a page at a time (no row cap: memory stays flat however long the log is).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use bytes::Bytes;

use crate::crypto::audit_chain::{ChainEvent, Checkpoint as SignedCheckpoint, Extent, FORMAT};
use crate::domain::audit::AuditFilter;
use crate::domain::audit_log::{ChainExport, EXPORT_PAGE};
use crate::domain::identity::Caller;
use crate::domain::page::PageRequest;
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
        (status = 200, description = "Without format: a page of JSON, newest first. format=json or csv: the organization's chain in format 2 (docs/audit-export.md), oldest first, streamed: its newest signed checkpoint, then every event signed until the export started, or in the since/until range (a part), or those the other filters choose (a selection); the x-audit-export-extent header says which (whole, part, selection). Verify it offline with cmek-console audit verify-export or tools/verify_audit_export.py",
            headers(("x-audit-export-extent" = String, description = "Exports only: whole, part or selection")),
            content((wire::AuditEventsAnswer = "application/json"), (String = "text/csv"))),
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

/// The organization's chain in format 2 (docs/audit-export.md) as a JSON or CSV attachment,
/// oldest first, streamed a page at a time: its newest signed checkpoint, then the events
/// signed up to when the export started (or in the filter's time range, or those it
/// chooses). The start is read before the answer begins, so a refusal (a member: 403) is a
/// proper problem; a failure later cuts the transfer short rather than ending it as if it
/// were complete.
pub async fn download(
    console: &Console,
    caller: &Caller,
    filter: AuditFilter,
    export: ExportFormat,
) -> Result<HttpResponse, DomainError> {
    let plan = console.audit().start_export(caller, filter).await?;
    let head = match export {
        ExportFormat::Csv => {
            let mut head = CSV_HEADER.to_owned();
            if let Some(cp) = &plan.checkpoint {
                head.push_str(&csv_checkpoint(cp));
            }
            head
        }
        ExportFormat::Json => format!(
            "{{\"format\":{},\"chain\":{},\"checkpoint\":{},\"items\":[",
            json_text(&FORMAT),
            json_text(&plan.chain),
            json_text(&plan.checkpoint)
        ),
    };
    let extent = plan.extent.as_str();
    let file = format!(
        "audit-events-{}{}.{}",
        plan.chain,
        match plan.extent {
            Extent::Whole => String::new(),
            other => format!("-{}", other.as_str()),
        },
        match export {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    );
    struct Cursor {
        console: Console,
        caller: Caller,
        plan: ChainExport,
        export: ExportFormat,
        head: Option<String>,
        after: u64,
        wrote: bool,
        finished: bool,
    }
    let cursor = Cursor {
        console: console.clone(),
        caller: caller.clone(),
        plan,
        export,
        head: Some(head),
        after: 0,
        wrote: false,
        finished: false,
    };
    let body = futures_util::stream::unfold(cursor, |mut c| async move {
        if c.finished {
            return None;
        }
        let mut chunk = c.head.take().unwrap_or_default();
        let events = if c.after >= c.plan.through {
            Vec::new()
        } else {
            match c
                .console
                .audit()
                .export_page(&c.caller, &c.plan, c.after)
                .await
            {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(error = %err, "audit export cut short");
                    c.finished = true;
                    return Some((Err(std::io::Error::other("audit export failed")), c));
                }
            }
        };
        let more = events.len() as u64 == EXPORT_PAGE;
        for event in &events {
            match c.export {
                ExportFormat::Csv => chunk.push_str(&csv_event(event)),
                ExportFormat::Json => {
                    if c.wrote {
                        chunk.push(',');
                    }
                    chunk.push_str(&json_text(event));
                }
            }
            c.wrote = true;
        }
        c.after = events.last().map_or(c.plan.through, |e| e.seq);
        if !more {
            if c.export == ExportFormat::Json {
                chunk.push_str("]}");
            }
            c.finished = true;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), c))
    });
    let content_type = match export {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Json => "application/json",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header(("x-audit-export-extent", extent))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

/// A value as JSON text (what the export writes cannot fail to serialize).
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Quotes a CSV field, and defuses what a spreadsheet would run as a formula: a field that
/// starts with `=`, `+`, `-`, `@`, a tab, a carriage return or `'` gets a `'` in front. A
/// verifier takes one leading `'` off any field that has one (docs/audit-export.md).
fn csv_field(value: &str) -> String {
    let defused = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{value}"),
        _ => value.to_owned(),
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

/// The CSV form of the export: one row per record, `checkpoint` first (if any), then each
/// `event`; a checkpoint's `at` is in the `signed_at` column.
const CSV_HEADER: &str = "record,chain,seq,id,occurred_at,actor,action,target,outcome,source_ip,detail,signed_at,prev_hash,hash,key_id,signature\n";

fn csv_line(row: &[&str]) -> String {
    let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
    let mut line = fields.join(",");
    line.push('\n');
    line
}

fn csv_checkpoint(cp: &SignedCheckpoint) -> String {
    let seq = cp.seq.to_string();
    csv_line(&[
        "checkpoint",
        &cp.chain,
        &seq,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        &cp.at,
        "",
        &cp.hash,
        &cp.key_id,
        &cp.signature,
    ])
}

/// An event's row: `detail` in its canonical JSON, `source_ip` empty for none.
fn csv_event(e: &ChainEvent) -> String {
    let seq = e.seq.to_string();
    let detail = crate::crypto::audit_chain::canonical_text(&e.body.detail);
    csv_line(&[
        "event",
        &e.chain,
        &seq,
        &e.body.id,
        &e.body.occurred_at,
        &e.body.actor,
        &e.body.action,
        &e.body.target,
        &e.body.outcome,
        e.body.source_ip.as_deref().unwrap_or(""),
        &detail,
        &e.signed_at,
        &e.prev_hash,
        &e.hash,
        &e.key_id,
        &e.signature,
    ])
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
        assert_eq!(csv_field("'quoted"), "''quoted");
        assert_eq!(csv_field("-1"), "'-1");
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
    /// Owners and auditors: the places of their organization's chain the key signed (both 0
    /// if none). A verifier refuses an event of that chain signed by the key, once retired,
    /// outside them. Absent for members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedRangeBody>,
}

/// The first and last places of a chain a key signed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SignedRangeBody {
    /// The organization's id.
    pub chain: String,
    pub first_seq: u64,
    pub last_seq: u64,
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
        .await?
        .into_iter()
        .map(|k| SigningKeyBody {
            key_id: k.key_id,
            algorithm: k.algorithm,
            public_key: k.public_key,
            valid_from: k.valid_from,
            retired_at: k.retired_at,
            signed: k.signed.map(|r| SignedRangeBody {
                chain: r.chain,
                first_seq: r.first_seq,
                last_seq: r.last_seq,
            }),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SigningKeysBody { keys }))
}
