//! API Keys (owners only): list, create (the secret is shown once), revoke.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::identity::{ApiKey, Role};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, actor_name, html_status, see_other, when};

pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub role: &'static str,
    pub prefix: String,
    pub created_by: String,
    pub created_at: String,
    pub last_used_at: String,
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role.as_str(),
            prefix: k.prefix,
            created_by: actor_name(&k.created_by),
            created_at: when(k.created_at),
            last_used_at: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            revoked_at: k.revoked_at.map(when),
        }
    }
}

#[derive(Template)]
#[template(path = "api_keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyView>,
    /// The secret of the key just created: shown on this response only.
    new_secret: Option<String>,
    form_name: String,
    errors: FormErrors,
    roles: [Role; 3],
}

async fn render(
    state: &AppState,
    caller: &PageCaller,
    status: StatusCode,
    new_secret: Option<String>,
    form_name: String,
    errors: FormErrors,
) -> Result<HttpResponse, PageError> {
    let keys = state.console.identity().api_keys(&caller.0).await?;
    let chrome = Chrome::load(&state.console, &caller.0, "api-keys").await?;
    html_status(
        status,
        &KeysPage {
            chrome,
            keys: keys.into_iter().map(KeyView::from).collect(),
            new_secret,
            form_name,
            errors,
            roles: Role::ALL,
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
        None,
        String::new(),
        FormErrors::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

pub async fn create(
    state: web::Data<AppState>,
    caller: PageCaller,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    let outcome = match Role::parse_field(&form.role) {
        Ok(role) => {
            state
                .console
                .identity()
                .create_api_key(&caller.0, &form.name, role)
                .await
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(issued) => {
            render(
                &state,
                &caller,
                StatusCode::CREATED,
                Some(issued.secret),
                String::new(),
                FormErrors::default(),
            )
            .await
        }
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            render(
                &state,
                &caller,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                form.name.clone(),
                errors,
            )
            .await
        }
    }
}

pub async fn revoke(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    state
        .console
        .identity()
        .revoke_api_key(&caller.0, path.into_inner())
        .await?;
    Ok(see_other("/api-keys"))
}
