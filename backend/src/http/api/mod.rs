//! JSON endpoints under `/api/v1` (and the TiDB-compatible `/api/v1beta` later).

pub mod audit;
pub mod backups;
pub mod clusters;
pub mod key_status;
pub mod keys;
pub mod local_kms;
pub mod me;
pub mod objects;
pub mod openapi;
pub mod projects;
pub mod webhooks;
pub mod wire;

use serde::{Deserialize, Serialize};

use crate::domain::page::PageRequest;
use crate::domain::{DomainError, FieldError};
use crate::http::errors::ApiError;

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

/// `{items, next_page_token}`: every list of the API.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListBody<T: Serialize> {
    pub items: Vec<T>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    pub next_page_token: Option<String>,
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
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::parse(
            self.page_size.as_deref(),
            self.page_token.as_deref(),
        )?)
    }
}
