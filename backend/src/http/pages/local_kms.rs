//! Local KMS: the built-in development KMS, managed the way a cloud KMS console is (create,
//! disable, enable, rotate). Labelled as not for production, and refused there.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::local_kms::{LocalKey, LocalKeyAction};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, html_status, see_other, when};

pub struct LocalKeyView {
    pub id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub version: i32,
    pub created_at: String,
    pub rotated_at: String,
}

impl From<LocalKey> for LocalKeyView {
    fn from(k: LocalKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            enabled: k.enabled,
            version: k.version,
            created_at: when(k.created_at),
            rotated_at: k.rotated_at.map(when).unwrap_or_else(|| "never".into()),
        }
    }
}

#[derive(Template)]
#[template(path = "local_kms.html")]
struct LocalKmsPage {
    chrome: Chrome,
    keys: Vec<LocalKeyView>,
    form_name: String,
    errors: FormErrors,
}

async fn render(
    state: &AppState,
    caller: &PageCaller,
    status: StatusCode,
    form_name: String,
    errors: FormErrors,
) -> Result<HttpResponse, PageError> {
    let keys = state.console.keys().local_keys(&caller.0).await?;
    let chrome = Chrome::load(&state.console, &caller.0, "local-kms").await?;
    html_status(
        status,
        &LocalKmsPage {
            chrome,
            keys: keys.into_iter().map(LocalKeyView::from).collect(),
            form_name,
            errors,
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
    )
    .await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

pub async fn create(
    state: web::Data<AppState>,
    caller: PageCaller,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    match state
        .console
        .keys()
        .create_local_key(&caller.0, &form.name)
        .await
    {
        Ok(_) => Ok(see_other("/local-kms")),
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            render(
                &state,
                &caller,
                StatusCode::UNPROCESSABLE_ENTITY,
                form.name.clone(),
                errors,
            )
            .await
        }
    }
}

pub async fn change(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, PageError> {
    let (id, action) = path.into_inner();
    let action = LocalKeyAction::parse(&action).ok_or(DomainError::NotFound("action"))?;
    state
        .console
        .keys()
        .change_local_key(&caller.0, id, action)
        .await?;
    Ok(see_other("/local-kms"))
}
