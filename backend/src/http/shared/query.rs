//! Query strings, read and written: the filters of the audit log and Key Status (one parser
//! for the API and the pages, so both refuse the same values with the same words), paging,
//! and links that keep filters. The parameter structs carry their OpenAPI description too.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::audit::{AuditFilter, Outcome};
use crate::domain::keys::status_report::KeyStatusFilter;
use crate::domain::keys::{KeyStatus, Provider};
use crate::domain::page::PageRequest;
use crate::domain::{DomainError, FieldError};
use crate::http::wire;

/// Optional query parameters (filters), read one at a time: an absent or blank one is
/// `None`; every refused one is kept, so a 422 names them all at once.
#[derive(Default)]
pub struct QueryFields {
    errors: Vec<FieldError>,
}

impl QueryFields {
    pub fn read<T>(
        &mut self,
        field: &str,
        raw: &Option<String>,
        reason: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = raw.as_deref().map(str::trim).filter(|r| !r.is_empty())?;
        let parsed = parse(raw);
        if parsed.is_none() {
            self.refuse(field, reason);
        }
        parsed
    }

    /// A parameter that may be given as is (an exact action, part of an actor).
    pub fn text(raw: &Option<String>) -> Option<String> {
        raw.as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
    }

    /// Text matched as given (an action, part of an actor), held to what the API's document
    /// says of it before any trimming: at most 256 characters, no control character (a NUL
    /// is an error to PostgreSQL and matched everything on SQLite).
    pub fn name(&mut self, field: &str, raw: &Option<String>) -> Option<String> {
        let given = raw.as_deref()?;
        if given.chars().count() > 256 || given.chars().any(char::is_control) {
            self.refuse(
                field,
                "must be at most 256 characters, none of them control characters",
            );
            return None;
        }
        Self::text(raw)
    }

    pub fn refuse(&mut self, field: &str, reason: &str) {
        self.errors.push(FieldError::new(field, reason));
    }

    /// A parameter whose parser names the field and the reason itself.
    pub fn parse<T>(
        &mut self,
        raw: &Option<String>,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<T> {
        let raw = Self::text(raw)?;
        parse(&raw).map_err(|e| self.errors.push(e)).ok()
    }

    /// The filter, or every refusal.
    pub fn finish<T>(self, value: T) -> Result<T, DomainError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(DomainError::Invalid(self.errors))
        }
    }
}

/// The `project_id` filter of the audit log and the Key Status page.
pub fn project_filter(fields: &mut QueryFields, raw: &Option<String>) -> Option<uuid::Uuid> {
    fields.read("project_id", raw, "must be a project id (a UUID)", |raw| {
        uuid::Uuid::parse_str(raw).ok()
    })
}

/// `page_size` (1-100, default 20) and `page_token` (from the previous page).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    pub page_size: Option<String>,
    /// The `next_page_token` of the previous page, as it was handed out.
    pub page_token: Option<String>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, DomainError> {
        PageRequest::parse(self.page_size.as_deref(), self.page_token.as_deref())
    }
}

#[derive(Deserialize, utoipa::IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exact action, e.g. `project.created`.
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub action: Option<String>,
    /// Part of the actor: a user's or API key's id or name, or `system`.
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub actor: Option<String>,
    /// Events about this project or anything in it (keys, clusters, backups).
    #[param(value_type = Option<uuid::Uuid>)]
    pub project_id: Option<String>,
    /// `success`, `denied` or `failure`.
    #[param(value_type = Option<wire::Outcome>)]
    pub outcome: Option<String>,
    /// RFC 3339 time; events at or after it.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339 time; events before it (after `since` when both are given).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Absent: a page of JSON. `csv` or `json`: the whole filtered log as a download.
    #[param(value_type = Option<ExportFormat>)]
    pub format: Option<String>,
    /// How many items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    pub page_size: Option<String>,
    /// The `next_page_token` of the previous page, as it was handed out.
    pub page_token: Option<String>,
}

/// `format`: the whole filtered log as one download (absent: a page of JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Json,
    Csv,
}

impl AuditQuery {
    pub fn filter(&self) -> Result<AuditFilter, DomainError> {
        let mut fields = QueryFields::default();
        let time = |raw: &str| {
            DateTime::parse_from_rfc3339(raw)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        const TIME: &str = "must be an RFC 3339 time, e.g. 2026-11-22T09:00:00Z";
        let since = fields.read("since", &self.since, TIME, time);
        let until = fields.read("until", &self.until, TIME, time);
        let project_id = project_filter(&mut fields, &self.project_id);
        let outcome = fields.read(
            "outcome",
            &self.outcome,
            "must be success, denied or failure",
            Outcome::parse,
        );
        // `until` at or before `since` is an empty range, answered as one (no events): a rule
        // between two parameters is one the API's document cannot state to clients.
        let action = fields.name("action", &self.action);
        let actor = fields.name("actor", &self.actor);
        fields.finish(AuditFilter {
            action,
            actor,
            project_id,
            outcome,
            since,
            until,
        })
    }

    /// The download asked for, or `None` for a page.
    pub fn export(&self) -> Result<Option<ExportFormat>, DomainError> {
        match self.format.as_deref() {
            None | Some("") => Ok(None),
            Some("json") => Ok(Some(ExportFormat::Json)),
            Some("csv") => Ok(Some(ExportFormat::Csv)),
            Some(_) => Err(DomainError::invalid(
                "format",
                "must be \"json\" or \"csv\"",
            )),
        }
    }

    /// The filters as a query string, for export and paging links.
    pub fn filter_query(&self) -> String {
        query_string(&[
            ("action", &self.action),
            ("actor", &self.actor),
            ("project_id", &self.project_id),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ])
    }
}

#[derive(Deserialize, utoipa::IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct KeyStatusQuery {
    /// `active`, `access_denied`, `disabled`, `pending_deletion`, `not_found` or `unreachable`.
    #[param(value_type = Option<wire::KeyStatus>)]
    pub status: Option<String>,
    /// `aws_kms`, `azure_key_vault`, `gcp_kms` or `local`.
    #[param(value_type = Option<wire::Provider>)]
    pub provider: Option<String>,
    /// Keys of this project only.
    #[param(value_type = Option<uuid::Uuid>)]
    pub project_id: Option<String>,
    /// How many items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    pub page_size: Option<String>,
    /// The `next_page_token` of the previous page, as it was handed out.
    pub page_token: Option<String>,
}

impl KeyStatusQuery {
    pub fn filter(&self) -> Result<KeyStatusFilter, DomainError> {
        let mut fields = QueryFields::default();
        let status = fields.read(
            "status",
            &self.status,
            "must be active, access_denied, disabled, pending_deletion, not_found or unreachable",
            KeyStatus::parse,
        );
        let provider = fields.parse(&self.provider, Provider::parse);
        let project_id = project_filter(&mut fields, &self.project_id);
        fields.finish(KeyStatusFilter {
            status,
            provider,
            project_id,
        })
    }

    pub fn page(&self) -> Result<PageRequest, DomainError> {
        PageRequest::parse(self.page_size.as_deref(), self.page_token.as_deref())
    }
}

/// What a query-string value keeps as it is: RFC 3986's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass).
pub fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// `k=v&k=v` of the pairs whose value is present and not empty, for links that keep filters.
pub fn query_string(pairs: &[(&str, &Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", query_value(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_only_unreserved_characters() {
        assert_eq!(query_value("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            query_value("reports/q1 é&x=1"),
            "reports%2Fq1%20%C3%A9%26x%3D1"
        );
    }
}
