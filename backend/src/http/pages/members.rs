//! Members (owners manage, everyone reads): roles, last sign-in, invitations; and switching
//! between the organizations a person belongs to.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::identity::{Role, User};
use crate::domain::members::Invitation;
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, Refusal, html_status, see_other, when};

pub struct MemberView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub sign_in: &'static str,
    pub last_sign_in: String,
    pub is_you: bool,
}

pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: &'static str,
    pub status: &'static str,
    pub expires_at: String,
    pub invited_by: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    chrome: Chrome,
    members: Vec<MemberView>,
    invitations: Vec<InvitationView>,
    roles: [Role; 3],
    invite_email: String,
    errors: FormErrors,
    problem: Option<String>,
    /// Single sign-on is configured, so invitations can be accepted.
    sso: bool,
}

fn member_view(user: User, you: Option<Uuid>) -> MemberView {
    MemberView {
        is_you: Some(user.id) == you,
        id: user.id,
        name: user.display_name,
        email: user.email.unwrap_or_default(),
        role: user.role,
        sign_in: if user.identity.is_some() {
            "SSO"
        } else {
            "Sign-in link"
        },
        last_sign_in: user
            .last_sign_in_at
            .map(when)
            .unwrap_or_else(|| "never".into()),
    }
}

fn invitation_view(i: Invitation, now: chrono::DateTime<chrono::Utc>) -> InvitationView {
    InvitationView {
        status: if i.accepted_at.is_some() {
            "accepted"
        } else if i.revoked_at.is_some() {
            "revoked"
        } else if i.expires_at <= now {
            "expired"
        } else {
            "pending"
        },
        id: i.id,
        email: i.email,
        role: i.role.as_str(),
        expires_at: when(i.expires_at),
        invited_by: crate::http::pages::render::actor_name(&i.created_by),
    }
}

async fn render(
    state: &AppState,
    caller: &PageCaller,
    status: StatusCode,
    invite_email: String,
    errors: FormErrors,
    problem: Option<String>,
) -> Result<HttpResponse, PageError> {
    let you = match &caller.0.actor {
        crate::domain::identity::Actor::User { id, .. } => Some(*id),
        _ => None,
    };
    let members = state.console.identity().members(&caller.0).await?;
    let invitations = if caller.0.is_owner() {
        state.console.identity().invitations(&caller.0).await?
    } else {
        Vec::new()
    };
    let now = state.console.now();
    let chrome = Chrome::load(&state.console, &caller.0, "members").await?;
    html_status(
        status,
        &MembersPage {
            chrome,
            members: members.into_iter().map(|m| member_view(m, you)).collect(),
            invitations: invitations
                .into_iter()
                .map(|i| invitation_view(i, now))
                .collect(),
            roles: Role::ALL,
            invite_email,
            errors,
            problem,
            sso: state.console.sso_enabled(),
        },
    )
}

pub async fn list(
    state: web::Data<AppState>,
    caller: PageCaller,
) -> Result<HttpResponse, PageError> {
    render(
        &state,
        &caller,
        StatusCode::OK,
        String::new(),
        FormErrors::default(),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

pub async fn invite(
    state: web::Data<AppState>,
    caller: PageCaller,
    form: web::Form<InviteForm>,
) -> Result<HttpResponse, PageError> {
    let outcome = match Role::parse_field(&form.role) {
        Ok(role) => state
            .console
            .identity()
            .invite(&caller.0, &form.email, role)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Ok(see_other("/members")),
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            render(
                &state,
                &caller,
                StatusCode::UNPROCESSABLE_ENTITY,
                form.email.clone(),
                errors,
                None,
            )
            .await
        }
    }
}

pub async fn revoke_invitation(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    state
        .console
        .identity()
        .revoke_invitation(&caller.0, path.into_inner())
        .await?;
    Ok(see_other("/members"))
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

/// Role changes and removals refused by the last-owner rule come back as a message.
async fn guarded(
    state: &AppState,
    caller: &PageCaller,
    result: Result<(), DomainError>,
) -> Result<HttpResponse, PageError> {
    let Err(err) = result else {
        return Ok(see_other("/members"));
    };
    let (status, errors, problem) = match Refusal::of(err)? {
        // The member actions are buttons on a row, with no field to show an error beside.
        Refusal::Fields { status, errors } => (
            status,
            FormErrors::default(),
            Some(
                errors
                    .0
                    .into_iter()
                    .map(|e| e.reason)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ),
        Refusal::Message { status, text } => (status, FormErrors::default(), Some(text)),
        Refusal::Checks(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            FormErrors::default(),
            None,
        ),
    };
    render(state, caller, status, String::new(), errors, problem).await
}

pub async fn change_role(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<RoleForm>,
) -> Result<HttpResponse, PageError> {
    let result = match Role::parse_field(&form.role) {
        Ok(role) => {
            state
                .console
                .identity()
                .change_role(&caller.0, path.into_inner(), role)
                .await
        }
        Err(e) => Err(e),
    };
    guarded(&state, &caller, result).await
}

pub async fn remove(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let result = state
        .console
        .identity()
        .remove_member(&caller.0, path.into_inner())
        .await;
    guarded(&state, &caller, result).await
}

#[derive(Deserialize)]
pub struct SwitchForm {
    organization_id: Uuid,
}

pub async fn switch(
    state: web::Data<AppState>,
    caller: PageCaller,
    form: web::Form<SwitchForm>,
) -> Result<HttpResponse, PageError> {
    state
        .console
        .identity()
        .switch_organization(&caller.0, form.organization_id)
        .await?;
    Ok(see_other("/projects"))
}
