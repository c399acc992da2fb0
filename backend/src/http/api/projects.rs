//! `/api/v1/projects`: create, list, read, rename. R1 and R2 are the domain's to enforce.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::domain::projects::{NewProject, Project, ProjectChanges};
use crate::http::AppState;
use crate::http::api::ListBody;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::ApiJson;
use crate::http::shared::query::PageQuery;
use crate::http::wire::RevocationPolicy;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectBody {
    pub id: Uuid,
    pub name: String,
    /// Chosen at creation; never changes (R1).
    pub cmek_enabled: bool,
    /// `null`: the provider's default (AWS keeps clusters running, Azure and Google Cloud stop them).
    pub revocation_policy: Option<RevocationPolicy>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Project> for ProjectBody {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name.as_str().to_owned(),
            cmek_enabled: p.cmek_enabled,
            revocation_policy: p.revocation_policy.map(RevocationPolicy::from),
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectBody {
    /// 1-64 characters, no control characters; spaces around it are dropped.
    pub name: String,
    /// Whether the project's data is encrypted with customer-managed keys. Final.
    pub cmek_enabled: bool,
    /// `keep_running` or `stop`; CMEK projects only. Absent or null: the provider's default.
    #[schema(value_type = Option<RevocationPolicy>)]
    pub revocation_policy: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectBody {
    pub name: Option<String>,
    /// May be sent only with the project's current value (409 otherwise).
    pub cmek_enabled: Option<bool>,
    /// `null` resets to the provider default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RevocationPolicy>)]
    pub revocation_policy: Option<Option<String>>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[utoipa::path(
    post, path = "/api/v1/projects", operation_id = "createProject", tag = "projects",
    request_body = CreateProjectBody,
    responses(
        (status = 201, body = ProjectBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Not an Organization Owner (rules/owner-only)"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Name taken (rules/project-name-taken)"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: ApiCaller,
    body: ApiJson<CreateProjectBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    // Who may create comes before what they sent: a member's bad body is still a 403.
    caller.0.require_owner("create projects")?;
    let new = NewProject::parse(
        &body.name,
        body.cmek_enabled,
        body.revocation_policy.as_deref(),
    )?;
    let project = state
        .console
        .projects()
        .create_project(&caller.0, new)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/projects/{}", project.id)))
        .json(ProjectBody::from(project)))
}

#[utoipa::path(
    get, path = "/api/v1/projects", operation_id = "listProjects", tag = "projects",
    params(PageQuery),
    responses(
        (status = 200, body = ListBody<ProjectBody>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: ApiCaller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .console
        .projects()
        .projects(&caller.0, query.parse()?)
        .await?;
    Ok(HttpResponse::Ok().json(ListBody {
        items: page.items.into_iter().map(ProjectBody::from).collect(),
        next_page_token: page.next,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/projects/{project_id}", operation_id = "getProject", tag = "projects",
    params(("project_id" = Uuid, Path)),
    responses(
        (status = 200, body = ProjectBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn read(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let project = state
        .console
        .projects()
        .project(&caller.0, path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(ProjectBody::from(project)))
}

#[utoipa::path(
    patch, path = "/api/v1/projects/{project_id}", operation_id = "updateProject", tag = "projects",
    params(("project_id" = Uuid, Path)),
    request_body = UpdateProjectBody,
    responses(
        (status = 200, body = ProjectBody),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`cmek_enabled` cannot change (rules/cmek-immutable), or the name is taken"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body: ApiJson<UpdateProjectBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let changes = ProjectChanges {
        name: body.name,
        cmek_enabled: body.cmek_enabled,
        revocation_policy: body.revocation_policy,
    };
    let project = state
        .console
        .projects()
        .update_project(&caller.0, path.into_inner(), changes)
        .await?;
    Ok(HttpResponse::Ok().json(ProjectBody::from(project)))
}
