//! JSON endpoints under `/api/v1` (and the TiDB-compatible `/api/v1beta` later).

pub mod audit;
pub mod backups;
pub mod clusters;
pub mod key_changes;
pub mod key_status;
pub mod keys;
pub mod local_kms;
pub mod me;
pub mod objects;
pub mod openapi;
pub mod policy_check;
pub mod projects;
pub mod webhooks;

use serde::Serialize;

/// `{items, next_page_token}`: every list of the API.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListBody<T: Serialize> {
    pub items: Vec<T>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    pub next_page_token: Option<String>,
}
