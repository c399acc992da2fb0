//! What every page shares: the chrome around it (organization, user, navigation), rendering,
//! redirects, and the one way to show field errors.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use askama::Template;

use crate::domain::identity::{Actor, Caller, Role};
use crate::domain::keys::checks::Checklist;
use crate::domain::projects::{Project, RevocationPolicy};
use crate::domain::{Console, DomainError, FieldError};
use crate::http::errors::PageError;

/// The header and navigation of signed-in pages.
pub struct Chrome {
    pub organization: String,
    pub user: String,
    pub role: Role,
    /// Which navigation item is current: `projects`, `api-keys`, `local-kms`, `audit`.
    pub section: &'static str,
    /// The built-in local KMS is offered (not in production).
    pub local_kms: bool,
    /// Every organization the person belongs to, when more than one: (id, name, current).
    pub organizations: Vec<(uuid::Uuid, String, bool)>,
}

impl Chrome {
    pub async fn load(
        console: &Console,
        caller: &Caller,
        section: &'static str,
    ) -> Result<Self, PageError> {
        let all = console.identity().organizations_of(caller).await?;
        // People see their organizations in one query; API-key and link callers have one.
        let organization = match all.iter().find(|(org, _)| org.id == caller.organization_id) {
            Some((org, _)) => org.clone(),
            None => console.identity().organization_of(caller).await?,
        };
        let organizations = if all.len() > 1 {
            all.into_iter()
                .map(|(org, _)| (org.id, org.name, org.id == caller.organization_id))
                .collect()
        } else {
            Vec::new()
        };
        let user = match &caller.actor {
            Actor::User { name, .. } | Actor::ApiKey { name, .. } => name.clone(),
            Actor::System => "system".into(),
        };
        Ok(Self {
            organization: organization.name,
            user,
            role: caller.role,
            section,
            local_kms: console.local_kms_available(),
            organizations,
        })
    }

    pub fn is_owner(&self) -> bool {
        self.role == Role::Owner
    }

    /// Owners and auditors see the audit log, the Key Status page and alerts.
    pub fn sees_audit(&self) -> bool {
        self.role.sees_audit()
    }

    /// The role, unless the user's name already says it.
    pub fn role_note(&self) -> Option<&'static str> {
        (self.user != self.role.title()).then(|| self.role.title())
    }
}

/// How a page shows what the domain refused: the one place that sorts domain errors for
/// HTML (the API's is `errors::domain_problem`). Field errors go beside their fields; a
/// rule that is not about one field becomes a message above the form; a key that failed
/// its test shows its checklist; anything else (not found, not allowed, signed out, the
/// database) is not the form's business and becomes an error page.
pub enum Refusal {
    /// 422 for input that is wrong, 409 for input that clashes with what exists.
    Fields {
        status: StatusCode,
        errors: FormErrors,
    },
    Message {
        status: StatusCode,
        text: String,
    },
    Checks(Checklist),
}

impl Refusal {
    pub fn of(err: DomainError) -> Result<Self, PageError> {
        match err {
            DomainError::ChecksFailed(checklist) => Ok(Self::Checks(checklist)),
            DomainError::Conflict {
                field: None,
                detail,
                ..
            } => Ok(Self::Message {
                status: StatusCode::CONFLICT,
                text: detail,
            }),
            other => {
                let status = match other {
                    DomainError::Conflict { .. } => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                FormErrors::from_domain(other).map(|errors| Self::Fields { status, errors })
            }
        }
    }
}

/// Field errors of a form, looked up by field name in templates.
#[derive(Default)]
pub struct FormErrors(pub Vec<FieldError>);

impl FormErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.reason.as_str())
    }

    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Field errors from a refusal about fields; any other error passes on (see `Refusal`).
    pub fn from_domain(err: DomainError) -> Result<Self, PageError> {
        match err {
            DomainError::Invalid(fields) => Ok(Self(fields)),
            DomainError::Conflict {
                field: Some(field),
                detail,
                ..
            }
            | DomainError::Refused { field, detail, .. } => {
                Ok(Self(vec![FieldError::new(field, detail)]))
            }
            other => Err(other.into()),
        }
    }
}

pub fn html(template: &impl Template) -> Result<HttpResponse, PageError> {
    html_status(StatusCode::OK, template)
}

pub fn html_status(
    status: StatusCode,
    template: &impl Template,
) -> Result<HttpResponse, PageError> {
    Ok(HttpResponse::build(status)
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(template.render()?))
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The name part of an actor label (`user:<id> (Ada)` -> `Ada`), for tables; the full label
/// stays in the API and the audit log.
pub fn actor_name(label: &str) -> String {
    label
        .split_once(" (")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(label)
        .to_owned()
}

/// Times as people read them in tables: UTC, to the minute.
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A project as pages show it.
pub struct ProjectView {
    pub id: uuid::Uuid,
    pub name: String,
    pub cmek_enabled: bool,
    pub revocation_policy: &'static str,
    pub created_by: String,
    pub created_at: String,
}

impl From<Project> for ProjectView {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name.as_str().to_owned(),
            cmek_enabled: p.cmek_enabled,
            revocation_policy: match p.revocation_policy {
                None => "Provider default",
                Some(RevocationPolicy::KeepRunning) => "Keep clusters running",
                Some(RevocationPolicy::Stop) => "Stop clusters",
            },
            created_by: actor_name(&p.created_by),
            created_at: when(p.created_at),
        }
    }
}
