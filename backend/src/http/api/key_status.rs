//! `GET /api/v1/key-status?status=&provider=&project_id=`: every key of the organization with
//! what it protects, and counts per status (owners and auditors; members get 403).

use actix_web::{HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::keys::status_report::{KeyStatusReport, ProtectedCluster};
use crate::http::AppState;
use crate::http::api::keys::{KeyBody, VersionsStatus};
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::shared::query::KeyStatusQuery;
use crate::http::wire;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProtectedClusterBody {
    pub id: Uuid,
    pub name: String,
    pub state: wire::ClusterState,
    /// The cluster's region this key protects.
    pub region: String,
    /// `ok`, `will_not_resume`, `waiting_for_key`, `can_be_resumed` or `kms_unreachable`.
    pub effect: &'static str,
}

impl From<ProtectedCluster> for ProtectedClusterBody {
    fn from(c: ProtectedCluster) -> Self {
        Self {
            id: c.id,
            name: c.name,
            state: c.state.into(),
            region: c.region,
            effect: c.effect.as_str(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyStatusItem {
    #[serde(flatten)]
    pub key: KeyBody,
    pub project_name: String,
    /// The clusters this key protects, with their state and what the key's status (and its
    /// versions' statuses) mean.
    pub clusters: Vec<ProtectedClusterBody>,
    /// The versions recorded revoked, with their status.
    pub revoked_versions: Vec<RevokedVersionBody>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedVersionBody {
    pub version: String,
    pub status: wire::KeyStatus,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyStatusBody {
    /// Keys per status, over every key the provider and project filters keep.
    #[schema(value_type = Object)]
    pub counts: serde_json::Map<String, serde_json::Value>,
    pub items: Vec<KeyStatusItem>,
    pub next_page_token: Option<String>,
}

impl From<KeyStatusReport> for KeyStatusBody {
    fn from(report: KeyStatusReport) -> Self {
        Self {
            counts: report
                .counts
                .iter()
                .map(|(status, n)| (status.as_str().to_owned(), serde_json::json!(n)))
                .collect(),
            items: report
                .page
                .items
                .into_iter()
                .map(|entry| KeyStatusItem {
                    key: KeyBody {
                        // On Key Status, always given.
                        versions_status: Some(VersionsStatus::of(
                            !entry.revoked_versions.is_empty(),
                        )),
                        change: entry.change.map(Into::into),
                        ..KeyBody::from(entry.key)
                    },
                    project_name: entry.project_name,
                    clusters: entry.clusters.into_iter().map(Into::into).collect(),
                    revoked_versions: entry
                        .revoked_versions
                        .into_iter()
                        .map(|(version, status)| RevokedVersionBody {
                            version,
                            status: status.into(),
                        })
                        .collect(),
                })
                .collect(),
            next_page_token: report.page.next,
        }
    }
}

#[utoipa::path(
    get, path = "/api/v1/key-status", operation_id = "getKeyStatus", tag = "encryption keys",
    params(KeyStatusQuery),
    responses(
        (status = 200, body = KeyStatusBody),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Members: the Key Status page is for owners and auditors"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<KeyStatusQuery>,
) -> Result<HttpResponse, ApiError> {
    // Who may look comes before what they asked for: a member's bad filter is still a 403.
    caller.0.require_auditor_view("see the Key Status page")?;
    let filter = query.filter()?;
    let page = query.page()?;
    let report = state
        .console
        .keys()
        .key_status_report(&caller.0, &filter, page)
        .await?;
    Ok(HttpResponse::Ok().json(KeyStatusBody::from(report)))
}
