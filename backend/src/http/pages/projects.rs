//! Projects: the list, Create New Project, and a project's page with Project Settings.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::FieldError;
use crate::domain::page::PageRequest;
use crate::domain::projects::{NewProject, Project, ProjectChanges, RevocationPolicy};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{
    Chrome, FormErrors, actor_name, html, html_status, see_other, when,
};

/// A project as pages show it.
pub struct ProjectView {
    pub id: Uuid,
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

#[derive(Template)]
#[template(path = "projects/list.html")]
struct ListPage {
    chrome: Chrome,
    projects: Vec<ProjectView>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
pub struct ListParams {
    page_token: Option<String>,
}

pub async fn list(
    state: web::Data<AppState>,
    caller: PageCaller,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, PageError> {
    let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
    let request = PageRequest::parse(None, params.page_token.as_deref())?;
    let page = state.console.projects(&caller.0, request).await?;
    html(&ListPage {
        chrome,
        projects: page.items.into_iter().map(ProjectView::from).collect(),
        next_page_token: page.next,
    })
}

/// The form as typed, so a refused submission comes back filled in.
#[derive(Deserialize, Default)]
pub struct NewProjectForm {
    #[serde(default)]
    name: String,
    /// `true` or `false`; absent until the owner chooses.
    cmek_enabled: Option<String>,
    revocation_policy: Option<String>,
}

#[derive(Template)]
#[template(path = "projects/new.html")]
struct NewPage {
    chrome: Chrome,
    form: NewProjectForm,
    errors: FormErrors,
}

impl NewPage {
    fn cmek_is(&self, value: &str) -> bool {
        self.form.cmek_enabled.as_deref() == Some(value)
    }

    fn policy_is(&self, value: &str) -> bool {
        self.form.revocation_policy.as_deref().unwrap_or("") == value
    }
}

pub async fn new(
    state: web::Data<AppState>,
    caller: PageCaller,
) -> Result<HttpResponse, PageError> {
    caller.0.require_owner("create projects")?;
    let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
    html(&NewPage {
        chrome,
        form: NewProjectForm::default(),
        errors: FormErrors::default(),
    })
}

fn parse_new(form: &NewProjectForm) -> Result<NewProject, crate::domain::DomainError> {
    let cmek = match form.cmek_enabled.as_deref() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(FieldError::new(
            "cmek_enabled",
            "choose whether this project uses customer-managed encryption keys",
        )),
    };
    let parsed = NewProject::parse(
        &form.name,
        *cmek.as_ref().unwrap_or(&false),
        form.revocation_policy
            .as_deref()
            .filter(|_| cmek == Ok(true)),
    );
    match (cmek, parsed) {
        (Ok(_), parsed) => parsed,
        (Err(cmek_error), Ok(_)) => Err(crate::domain::DomainError::Invalid(vec![cmek_error])),
        (Err(cmek_error), Err(crate::domain::DomainError::Invalid(mut fields))) => {
            fields.insert(0, cmek_error);
            Err(crate::domain::DomainError::Invalid(fields))
        }
        (Err(_), Err(other)) => Err(other),
    }
}

pub async fn create(
    state: web::Data<AppState>,
    caller: PageCaller,
    form: web::Form<NewProjectForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let outcome = match parse_new(&form) {
        Ok(new) => state.console.create_project(&caller.0, new).await,
        Err(err) => Err(err),
    };
    match outcome {
        Ok(project) => Ok(see_other(&format!("/projects/{}?created=1", project.id))),
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
            html_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewPage {
                    chrome,
                    form,
                    errors,
                },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "projects/show.html")]
struct ShowPage {
    chrome: Chrome,
    project: ProjectView,
    rename: String,
    errors: FormErrors,
    notice: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct ShowParams {
    created: Option<String>,
    renamed: Option<String>,
}

pub async fn show(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    params: web::Query<ShowParams>,
) -> Result<HttpResponse, PageError> {
    let project = state.console.project(&caller.0, path.into_inner()).await?;
    let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
    let notice = if params.created.is_some() {
        Some("Project created.")
    } else if params.renamed.is_some() {
        Some("Project renamed.")
    } else {
        None
    };
    html(&ShowPage {
        chrome,
        rename: project.name.as_str().to_owned(),
        project: project.into(),
        errors: FormErrors::default(),
        notice,
    })
}

#[derive(Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    name: String,
}

pub async fn rename(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<RenameForm>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let changes = ProjectChanges {
        name: Some(form.name.clone()),
        ..Default::default()
    };
    match state.console.update_project(&caller.0, id, changes).await {
        Ok(project) => Ok(see_other(&format!("/projects/{}?renamed=1", project.id))),
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            let project = state.console.project(&caller.0, id).await?;
            let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
            html_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ShowPage {
                    chrome,
                    project: project.into(),
                    rename: form.name.clone(),
                    errors,
                    notice: None,
                },
            )
        }
    }
}
