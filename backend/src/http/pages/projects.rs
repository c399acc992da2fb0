//! Projects: the list, Create New Project, and a project's page with Project Settings.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::FieldError;
use crate::domain::keys::policy::AccessMode;
use crate::domain::keys::{EncryptionKey, KeyRef};
use crate::domain::page::PageRequest;
use crate::domain::projects::{NewProject, ProjectChanges};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::clusters::{BackupRow, ClusterView};
use crate::http::pages::render::{
    Chrome, FormErrors, ProjectView, actor_name, html, html_status, see_other, when,
};

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
    let page = state
        .console
        .projects()
        .projects(&caller.0, request)
        .await?;
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
        Ok(new) => {
            state
                .console
                .projects()
                .create_project(&caller.0, new)
                .await
        }
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

/// A key as the Encryption Access table shows it.
pub struct KeyRow {
    pub id: Uuid,
    pub provider: &'static str,
    pub region: String,
    pub reference: String,
    pub access: &'static str,
    pub status: &'static str,
    pub last_checked: String,
    pub last_error: Option<String>,
    pub created: String,
    /// The key that replaced this one (it stays until nothing it wrapped remains).
    pub replaced_by: Option<Uuid>,
}

impl From<EncryptionKey> for KeyRow {
    fn from(k: EncryptionKey) -> Self {
        Self {
            id: k.id,
            provider: k.key_ref.provider().title(),
            region: k.region.as_str().to_owned(),
            reference: k.key_ref.display(),
            access: match (&k.key_ref, k.key_ref.access_mode()) {
                (_, Some(AccessMode::KeyPolicy)) => "Key policy grant",
                (_, Some(AccessMode::Role)) => "Cross-account role",
                (KeyRef::Azure { .. }, None) => "Service principal of the platform's application",
                (KeyRef::Gcp { .. }, None) => {
                    "The platform's service account (IAM roles on the key)"
                }
                (_, None) => "Built-in",
            },
            status: k.status.as_str(),
            last_checked: k
                .last_checked_at
                .map(when)
                .unwrap_or_else(|| "never".into()),
            last_error: k.last_error,
            replaced_by: k.replaced_by,
            created: format!("{} by {}", when(k.created_at), actor_name(&k.created_by)),
        }
    }
}

#[derive(Template)]
#[template(path = "projects/show.html")]
struct ShowPage {
    chrome: Chrome,
    project: ProjectView,
    keys: Vec<KeyRow>,
    clusters: Vec<ClusterView>,
    /// Backups whose cluster was deleted: restore or delete them here.
    orphan_backups: Vec<BackupRow>,
    rename: String,
    errors: FormErrors,
    notice: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct ShowParams {
    created: Option<String>,
    renamed: Option<String>,
    key_created: Option<String>,
    key_checked: Option<String>,
    key_deleted: Option<String>,
    cluster_deleted: Option<String>,
    backup_deleted: Option<String>,
}

/// What Check now says once it is done (`?key_checked=` / `?checked=`).
pub fn check_notice(confirmation: &str) -> &'static str {
    match confirmation {
        "confirmed" => {
            "A second probe confirmed that the KMS refuses the key: its status is recorded and \
             the project's revocation policy applies to its clusters."
        }
        "not_confirmed" => {
            "A first probe saw the key refused, but a second probe did not confirm it: nothing \
             was recorded (the key monitor keeps watching it)."
        }
        "reused" => {
            "The key was checked moments ago: that result is shown (Check now calls the KMS at \
             most once every 10 seconds per key)."
        }
        _ => "Key checked; its status is up to date.",
    }
}

impl ShowParams {
    fn notice(&self) -> Option<&'static str> {
        [
            (&self.created, "Project created."),
            (&self.renamed, "Project renamed."),
            (
                &self.key_created,
                "Encryption key created: every required check passed.",
            ),
            (
                &self.key_checked,
                check_notice(self.key_checked.as_deref().unwrap_or_default()),
            ),
            (&self.key_deleted, "Encryption key deleted."),
            (&self.backup_deleted, "Backup deleted."),
            (
                &self.cluster_deleted,
                "Cluster deleted; its backups are kept until you delete them.",
            ),
        ]
        .into_iter()
        .find_map(|(flag, text)| flag.as_ref().map(|_| text))
    }
}

pub async fn show(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    params: web::Query<ShowParams>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let project = state.console.projects().project(&caller.0, id).await?;
    let keys = state.console.keys().encryption_keys(&caller.0, id).await?;
    let (clusters, orphan_backups) = clusters_of(&state, &caller.0, id).await?;
    let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
    html(&ShowPage {
        chrome,
        clusters,
        orphan_backups,
        rename: project.name.as_str().to_owned(),
        project: project.into(),
        keys: keys.into_iter().map(KeyRow::from).collect(),
        errors: FormErrors::default(),
        notice: params.notice(),
    })
}

/// The project's clusters (the first hundred), and the backups of its deleted clusters, for
/// its page.
async fn clusters_of(
    state: &AppState,
    caller: &crate::domain::identity::Caller,
    project_id: Uuid,
) -> Result<(Vec<ClusterView>, Vec<BackupRow>), PageError> {
    let page = PageRequest {
        size: crate::domain::page::MAX_PAGE_SIZE,
        after: None,
    };
    let clusters = state
        .console
        .clusters()?
        .clusters(caller, project_id, page)
        .await?
        .items;
    let backups = state
        .console
        .clusters()?
        .project_backups(caller, project_id, page)
        .await?;
    let orphans = backups
        .items
        .into_iter()
        .filter(|b| !clusters.iter().any(|c| c.id == b.cluster_id))
        .map(BackupRow::from)
        .collect();
    Ok((
        clusters.into_iter().map(ClusterView::from).collect(),
        orphans,
    ))
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
    match state
        .console
        .projects()
        .update_project(&caller.0, id, changes)
        .await
    {
        Ok(project) => Ok(see_other(&format!("/projects/{}?renamed=1", project.id))),
        Err(err) => {
            let errors = FormErrors::from_domain(err)?;
            let project = state.console.projects().project(&caller.0, id).await?;
            let keys = state.console.keys().encryption_keys(&caller.0, id).await?;
            let (clusters, orphan_backups) = clusters_of(&state, &caller.0, id).await?;
            let chrome = Chrome::load(&state.console, &caller.0, "projects").await?;
            html_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ShowPage {
                    chrome,
                    clusters,
                    orphan_backups,
                    project: project.into(),
                    keys: keys.into_iter().map(KeyRow::from).collect(),
                    rename: form.name.clone(),
                    errors,
                    notice: None,
                },
            )
        }
    }
}
