//! `GET /api/v1/me`: who the caller is.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::identity::Actor;
use crate::http::AppState;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::wire::Role;

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeBody {
    pub actor: ActorBody,
    pub organization: OrganizationBody,
    pub role: Role,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorBody {
    /// `user` or `api_key`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: Option<Uuid>,
    pub name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrganizationBody {
    pub id: Uuid,
    pub name: String,
}

impl From<&Actor> for ActorBody {
    fn from(actor: &Actor) -> Self {
        match actor {
            Actor::User { id, name } => Self {
                kind: "user",
                id: Some(*id),
                name: name.clone(),
            },
            Actor::ApiKey { id, name } => Self {
                kind: "api_key",
                id: Some(*id),
                name: name.clone(),
            },
            Actor::System => Self {
                kind: "system",
                id: None,
                name: "system".into(),
            },
        }
    }
}

#[utoipa::path(
    get, path = "/api/v1/me", operation_id = "getMe", tag = "identity",
    responses(
        (status = 200, body = MeBody, description = "The caller, its organization and role"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn me(state: web::Data<AppState>, caller: ApiCaller) -> Result<HttpResponse, ApiError> {
    let caller = caller.0;
    let organization = state.console.identity().organization_of(&caller).await?;
    Ok(HttpResponse::Ok().json(MeBody {
        actor: ActorBody::from(&caller.actor),
        organization: OrganizationBody {
            id: organization.id,
            name: organization.name,
        },
        role: caller.role.into(),
    }))
}
