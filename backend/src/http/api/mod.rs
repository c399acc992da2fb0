//! JSON endpoints under `/api/v1` (and the TiDB-compatible `/api/v1beta` later).

pub mod audit;
pub mod backups;
pub mod clusters;
pub mod key_status;
pub mod keys;
pub mod me;
pub mod objects;
pub mod openapi;
pub mod projects;
pub mod webhooks;
pub mod wire;

use serde::{Deserialize, Serialize};

use crate::domain::page::PageRequest;
use crate::http::errors::ApiError;

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
    pub page_size: Option<String>,
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
