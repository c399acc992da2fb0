//! Clusters as pages: Create Cluster in a project, and a cluster's page with Pause, Resume,
//! its objects (list, upload, download, delete), its backups (take, restore, delete), the
//! key in use per region with its rotation status (R9), and the last KMS error. Plain forms;
//! every action redirects with a notice, or re-renders the page with what went wrong.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::clusters::{
    Backup, BackupState, BodyError, Cluster, ClusterRequestInput, ClusterState, PLATFORM_KEY,
    RegionKeyFacts, StoredObject,
};
use crate::domain::identity::Caller;
use crate::domain::keys::region::{AWS_REGIONS, AZURE_REGIONS, GCP_REGIONS};
use crate::domain::keys::{EncryptionKey, KeyStatus};
use crate::domain::page::{MAX_PAGE_SIZE, PageRequest};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::ProjectView;
use crate::http::pages::render::{
    Chrome, FormErrors, actor_name, html, html_status, see_other, when,
};
use crate::http::shared::query::query_value;
use crate::http::shared::stream::download as stream_object;

/// A cluster as pages show it.
pub struct ClusterView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub provider: &'static str,
    pub tier: &'static str,
    pub state: &'static str,
    pub available: bool,
    pub can_resume: bool,
    pub can_pause: bool,
    pub last_error: Option<String>,
    /// `us-east-1: arn:...` per region, for lists.
    pub regions: Vec<(String, String)>,
    pub dual_region_backup: bool,
    pub created: String,
    /// A restore in progress: (backup, objects restored, objects in all).
    pub restoring: Option<(Uuid, u32, u32)>,
    /// A restore that could not finish.
    pub failed: bool,
}

impl From<Cluster> for ClusterView {
    fn from(c: Cluster) -> Self {
        use ClusterState as S;
        Self {
            id: c.id,
            project_id: c.project_id,
            name: c.name.as_str().to_owned(),
            provider: c.provider.title(),
            tier: match c.tier {
                crate::domain::clusters::Tier::Dedicated => "Dedicated",
                crate::domain::clusters::Tier::Serverless => "Serverless",
            },
            state: c.state.as_str(),
            available: c.state == S::Available,
            can_resume: matches!(c.state, S::Paused | S::Inaccessible | S::Resuming),
            can_pause: matches!(
                c.state,
                S::Available | S::Pausing | S::Resuming | S::Inaccessible
            ),
            restoring: c
                .restore
                .filter(|_| c.state == S::Creating)
                .map(|r| (r.backup_id, r.objects_restored, r.objects_total)),
            failed: c.state == S::Failed,
            last_error: c.last_error,
            regions: c
                .regions
                .into_iter()
                .map(|r| {
                    (
                        r.region.to_string(),
                        r.key_ref.unwrap_or_else(|| PLATFORM_KEY.to_owned()),
                    )
                })
                .collect(),
            dual_region_backup: c.dual_region_backup,
            created: format!("{} by {}", when(c.created_at), actor_name(&c.created_by)),
        }
    }
}

/// The form as typed, so a refused submission comes back filled in.
#[derive(Deserialize, Default)]
pub struct NewClusterForm {
    #[serde(default)]
    name: String,
    provider: Option<String>,
    region_1: Option<String>,
    region_2: Option<String>,
    region_3: Option<String>,
    tier: Option<String>,
    dual_region_backup: Option<String>,
}

impl NewClusterForm {
    fn regions(&self) -> Vec<String> {
        [&self.region_1, &self.region_2, &self.region_3]
            .into_iter()
            .filter_map(|r| r.as_deref().map(str::trim).filter(|r| !r.is_empty()))
            .map(str::to_owned)
            .collect()
    }

    fn input(&self) -> ClusterRequestInput {
        ClusterRequestInput {
            name: self.name.clone(),
            provider: self.provider.clone().unwrap_or_default(),
            regions: self.regions(),
            tier: self.tier.clone().filter(|t| !t.is_empty()),
            dual_region_backup: self.dual_region_backup.is_some(),
        }
    }
}

/// A project key the form lists, so the owner sees which key each region will use.
pub struct KeyChoice {
    pub provider: &'static str,
    pub provider_id: &'static str,
    pub region: String,
    pub reference: String,
    pub status: &'static str,
    pub active: bool,
}

impl From<&EncryptionKey> for KeyChoice {
    fn from(k: &EncryptionKey) -> Self {
        Self {
            provider: k.key_ref.provider().title(),
            provider_id: k.key_ref.provider().as_str(),
            region: k.region.to_string(),
            reference: k.key_ref.display(),
            status: k.status.as_str(),
            active: k.status == KeyStatus::Active,
        }
    }
}

#[derive(Template)]
#[template(path = "clusters/new.html")]
struct NewPage {
    chrome: Chrome,
    project: ProjectView,
    form: NewClusterForm,
    errors: FormErrors,
    message: Option<String>,
    keys: Vec<KeyChoice>,
    /// (provider, region) of chosen regions without an active key: links to the wizard.
    missing: Vec<(String, String)>,
    regions: &'static [(&'static str, &'static str)],
    azure_regions: &'static [(&'static str, &'static str)],
    gcp_regions: &'static [(&'static str, &'static str)],
    providers: Vec<(&'static str, &'static str)>,
}

/// One of the form's three region selects: the first is required, the others optional, and
/// each is marked invalid only for its own error.
pub struct RegionSlot {
    pub n: usize,
    pub label: &'static str,
    pub placeholder: &'static str,
    pub error: Option<String>,
}

impl NewPage {
    fn provider_is(&self, value: &str) -> bool {
        self.form.provider.as_deref().unwrap_or("aws_kms") == value
    }

    fn region_slots(&self) -> Vec<RegionSlot> {
        let own = |field: &str| self.errors.get(field).map(str::to_owned);
        // "regions" as a whole (none chosen, too many) is the first select's error, unless the
        // missing keys are listed below instead.
        let whole = own("regions").filter(|_| self.missing.is_empty());
        vec![
            RegionSlot {
                n: 1,
                label: "Region",
                placeholder: "Choose a region",
                error: own("regions[0]").or(whole),
            },
            RegionSlot {
                n: 2,
                label: "Second region (optional)",
                placeholder: "None",
                error: own("regions[1]"),
            },
            RegionSlot {
                n: 3,
                label: "Third region (optional)",
                placeholder: "None",
                error: own("regions[2]"),
            },
        ]
    }

    fn region_is(&self, slot: &usize, value: &str) -> bool {
        let chosen = match *slot {
            1 => &self.form.region_1,
            2 => &self.form.region_2,
            _ => &self.form.region_3,
        };
        chosen.as_deref() == Some(value)
    }

    fn tier_is(&self, value: &str) -> bool {
        self.form.tier.as_deref().unwrap_or("dedicated") == value
    }
}

/// The clouds the form offers: in a CMEK project that has active keys, only the providers of
/// those keys (a cluster elsewhere would be refused); otherwise every provider there is.
fn providers(
    state: &AppState,
    cmek: bool,
    keys: &[EncryptionKey],
) -> Vec<(&'static str, &'static str)> {
    let mut providers = vec![
        ("aws_kms", "AWS"),
        ("azure_key_vault", "Azure"),
        ("gcp_kms", "Google Cloud"),
    ];
    if state.console.local_kms_available() {
        providers.push(("local", "Local (development)"));
    }
    let keyed = |id: &str| {
        keys.iter()
            .any(|k| k.status == KeyStatus::Active && k.key_ref.provider().as_str() == id)
    };
    if cmek && providers.iter().any(|(id, _)| keyed(id)) {
        providers.retain(|(id, _)| keyed(id));
    }
    providers
}

/// A fresh form starts where the project's keys point: the provider with the most active keys
/// and, when that provider has one active key, its region.
fn with_key_defaults(mut form: NewClusterForm, keys: &[EncryptionKey]) -> NewClusterForm {
    let active: Vec<&EncryptionKey> = keys
        .iter()
        .filter(|k| k.status == KeyStatus::Active)
        .collect();
    let count = |provider: &str| {
        active
            .iter()
            .filter(|k| k.key_ref.provider().as_str() == provider)
            .count()
    };
    let Some(provider) = active
        .iter()
        .map(|k| k.key_ref.provider().as_str())
        .max_by_key(|p| count(p))
    else {
        return form;
    };
    if form.provider.is_none() {
        form.provider = Some(provider.to_owned());
        if count(provider) == 1 && form.region_1.is_none() {
            form.region_1 = active
                .iter()
                .find(|k| k.key_ref.provider().as_str() == provider)
                .map(|k| k.region.to_string());
        }
    }
    form
}

async fn new_page(
    state: &AppState,
    caller: &Caller,
    project_id: Uuid,
    form: NewClusterForm,
    errors: FormErrors,
    message: Option<String>,
) -> Result<NewPage, PageError> {
    let project = state.console.projects().project(caller, project_id).await?;
    // The keys clusters can take: a replaced key is no region's key any more.
    let keys: Vec<EncryptionKey> = state
        .console
        .keys()
        .encryption_keys(caller, project_id)
        .await?
        .into_iter()
        .filter(|k| k.replaced_by.is_none())
        .collect();
    let form = if project.cmek_enabled {
        with_key_defaults(form, &keys)
    } else {
        form
    };
    let providers = providers(state, project.cmek_enabled, &keys);
    let provider = form.provider.clone().unwrap_or_else(|| "aws_kms".into());
    let missing = if errors.any() && project.cmek_enabled {
        form.regions()
            .into_iter()
            .filter(|region| {
                !keys.iter().any(|k| {
                    k.key_ref.provider().as_str() == provider
                        && k.region.as_str() == region
                        && k.status == KeyStatus::Active
                })
            })
            .map(|region| (provider.clone(), region))
            .collect()
    } else {
        Vec::new()
    };
    Ok(NewPage {
        chrome: Chrome::load(&state.console, caller, "projects").await?,
        providers,
        project: project.into(),
        keys: keys.iter().map(KeyChoice::from).collect(),
        form,
        errors,
        message,
        missing,
        regions: AWS_REGIONS,
        azure_regions: AZURE_REGIONS,
        gcp_regions: GCP_REGIONS,
    })
}

pub async fn new(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    caller.0.require_owner("create clusters")?;
    let page = new_page(
        &state,
        &caller.0,
        path.into_inner(),
        NewClusterForm::default(),
        FormErrors::default(),
        None,
    )
    .await?;
    html(&page)
}

/// What a refused action shows on its page: the status and a sentence. Errors that are not
/// the form's business (not found, not allowed, signed out, the database) become error pages.
fn refusal(err: DomainError) -> Result<(StatusCode, String), PageError> {
    match err {
        DomainError::Unauthenticated
        | DomainError::NotFound(_)
        | DomainError::Forbidden { .. }
        | DomainError::Store(_) => Err(err.into()),
        other => {
            let page = PageError::Domain(other);
            let status = actix_web::ResponseError::status_code(&page);
            Ok((status, page.explained().1))
        }
    }
}

pub async fn create(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<NewClusterForm>,
) -> Result<HttpResponse, PageError> {
    let project_id = path.into_inner();
    let form = form.into_inner();
    match state
        .console
        .clusters()?
        .create_cluster(&caller.0, project_id, &form.input())
        .await
    {
        Ok(cluster) => Ok(see_other(&format!("/clusters/{}?created=1", cluster.id))),
        Err(err) => {
            let (status, errors, message) = match err {
                DomainError::Invalid(_) | DomainError::Refused { .. } => {
                    let status = StatusCode::UNPROCESSABLE_ENTITY;
                    (status, FormErrors::from_domain(err)?, None)
                }
                DomainError::Conflict { field: Some(_), .. } => {
                    (StatusCode::CONFLICT, FormErrors::from_domain(err)?, None)
                }
                other => {
                    let (status, text) = refusal(other)?;
                    (status, FormErrors::default(), Some(text))
                }
            };
            let page = new_page(&state, &caller.0, project_id, form, errors, message).await?;
            html_status(status, &page)
        }
    }
}

pub struct ObjectRow {
    pub name: String,
    pub link: String,
    pub size: String,
    pub updated: String,
}

impl From<StoredObject> for ObjectRow {
    fn from(o: StoredObject) -> Self {
        Self {
            link: query_value(o.name.as_str()),
            name: o.name.as_str().to_owned(),
            size: human_size(o.size_bytes),
            updated: when(o.updated_at),
        }
    }
}

pub struct BackupRow {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub created: String,
    pub size: String,
    pub objects: u32,
    pub copied: u32,
    pub creating: bool,
    pub available: bool,
    pub error: Option<String>,
    pub region: String,
    pub key: String,
}

impl From<Backup> for BackupRow {
    fn from(b: Backup) -> Self {
        Self {
            copied: b.objects_copied,
            creating: b.state == BackupState::Creating,
            available: b.state == BackupState::Available,
            error: b.last_error,
            id: b.id,
            cluster_id: b.cluster_id,
            cluster_name: b.cluster_name,
            created: format!("{} by {}", when(b.created_at), actor_name(&b.created_by)),
            size: human_size(b.size_bytes),
            objects: b.object_count,
            region: b.region.region.to_string(),
            key: b.region.key_ref.unwrap_or_else(|| PLATFORM_KEY.to_owned()),
        }
    }
}

pub struct RegionRow {
    pub region: String,
    pub key: String,
    pub status: &'static str,
    pub rotation: &'static str,
}

impl From<RegionKeyFacts> for RegionRow {
    fn from(f: RegionKeyFacts) -> Self {
        Self {
            region: f.region,
            key: f.key_ref,
            status: f.status.map_or("platform", KeyStatus::as_str),
            rotation: match (f.key_id, f.rotation_enabled) {
                (None, _) => "held by the platform",
                (Some(_), Some(true)) => "automatic rotation on",
                (Some(_), Some(false)) => "automatic rotation off",
                (Some(_), None) => "not reported by the KMS",
            },
        }
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[derive(Template)]
#[template(path = "clusters/show.html")]
struct ShowPage {
    chrome: Chrome,
    cluster: ClusterView,
    project_name: String,
    account_id: Option<String>,
    regions: Vec<RegionRow>,
    objects: Vec<ObjectRow>,
    more_objects: bool,
    backups: Vec<BackupRow>,
    /// A backup is being taken or the cluster is being restored: the page reloads itself to
    /// show the progress.
    backups_running: bool,
    notice: Option<&'static str>,
    error: Option<String>,
    keys_in_memory: bool,
    /// What the keys' statuses mean for the cluster (will not resume, can be resumed, ...).
    key_effect: crate::domain::keys::status_report::ClusterEffect,
}

#[derive(Deserialize, Default)]
pub struct ShowParams {
    created: Option<String>,
    paused: Option<String>,
    resumed: Option<String>,
    uploaded: Option<String>,
    object_deleted: Option<String>,
    backup_taken: Option<String>,
    backup_deleted: Option<String>,
    restored: Option<String>,
}

impl ShowParams {
    fn notice(&self) -> Option<&'static str> {
        [
            (&self.created, "Cluster created."),
            (&self.paused, "Cluster paused."),
            (&self.resumed, "Cluster resumed."),
            (&self.uploaded, "Object uploaded."),
            (&self.object_deleted, "Object deleted."),
            (
                &self.backup_taken,
                "Backup started: its objects are being copied (this page shows the progress).",
            ),
            (&self.backup_deleted, "Backup deleted."),
            (&self.restored, "Restoring the backup into this new cluster: its objects are being copied (this page shows the progress)."),
        ]
        .into_iter()
        .find_map(|(flag, text)| flag.as_ref().map(|_| text))
    }
}

async fn show_page(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<ShowPage, PageError> {
    let console = &state.console;
    let cluster = console.clusters()?.cluster(caller, id).await?;
    let creating = cluster.state == ClusterState::Creating;
    let project = console
        .projects()
        .project(caller, cluster.project_id)
        .await?;
    let regions = console
        .clusters()?
        .cluster_key_facts(caller, &cluster)
        .await?;
    let page = PageRequest {
        size: MAX_PAGE_SIZE,
        after: None,
    };
    let objects = console.clusters()?.objects(caller, id, page).await?;
    let backups = console.clusters()?.backups(caller, id, page).await?;
    let account_id = (cluster.provider == crate::domain::keys::Provider::AwsKms)
        .then(|| console.keys().aws_account_id().map(str::to_owned))
        .flatten();
    let statuses: Vec<_> = regions.iter().filter_map(|r| r.status).collect();
    let key_effect = crate::domain::keys::status_report::effect(cluster.state, &statuses);
    Ok(ShowPage {
        key_effect,
        chrome: Chrome::load(console, caller, "projects").await?,
        keys_in_memory: console.clusters()?.holds_data_keys(id),
        cluster: cluster.into(),
        project_name: project.name.as_str().to_owned(),
        account_id,
        regions: regions.into_iter().map(RegionRow::from).collect(),
        more_objects: objects.next.is_some(),
        objects: objects.items.into_iter().map(ObjectRow::from).collect(),
        backups_running: creating
            || backups
                .items
                .iter()
                .any(|b| b.state == BackupState::Creating),
        backups: backups.items.into_iter().map(BackupRow::from).collect(),
        notice,
        error,
    })
}

pub async fn show(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    params: web::Query<ShowParams>,
) -> Result<HttpResponse, PageError> {
    let page = show_page(&state, &caller.0, path.into_inner(), params.notice(), None).await?;
    html(&page)
}

/// After an action: back to the cluster page with its notice, or the page again with what
/// went wrong.
async fn after(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    outcome: Result<&'static str, DomainError>,
) -> Result<HttpResponse, PageError> {
    match outcome {
        Ok(flag) => Ok(see_other(&format!("/clusters/{id}?{flag}=1"))),
        Err(err) => {
            // A refusal that says when to come back (the upload memory cap) says it in
            // `Retry-After` too.
            let retry_after = match &err {
                DomainError::Overloaded { retry_after, .. }
                | DomainError::TooManyRequests { retry_after, .. } => {
                    Some(retry_after.as_secs().max(1))
                }
                _ => None,
            };
            let (status, text) = refusal(err)?;
            let page = show_page(state, caller, id, None, Some(text)).await?;
            let mut response = html_status(status, &page)?;
            if let Some(seconds) = retry_after
                && let Ok(value) =
                    actix_web::http::header::HeaderValue::from_str(&seconds.to_string())
            {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
            Ok(response)
        }
    }
}

pub async fn pause(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let outcome = state
        .console
        .clusters()?
        .pause_cluster(&caller.0, id)
        .await
        .map(|_| "paused");
    after(&state, &caller.0, id, outcome).await
}

pub async fn resume(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let outcome = state
        .console
        .clusters()?
        .resume_cluster(&caller.0, id)
        .await
        .map(|_| "resumed");
    after(&state, &caller.0, id, outcome).await
}

pub async fn delete(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let cluster = state.console.clusters()?.cluster(&caller.0, id).await?;
    match state
        .console
        .clusters()?
        .delete_cluster(&caller.0, id)
        .await
    {
        Ok(()) => Ok(see_other(&format!(
            "/projects/{}?cluster_deleted=1",
            cluster.project_id
        ))),
        Err(err) => after(&state, &caller.0, id, Err(err)).await,
    }
}

/// The upload form: an optional name first, then the file, streamed into the cluster.
pub async fn upload(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: Result<Multipart, actix_web::Error>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let mut form = form.map_err(|_| {
        PageError::BadRequest("Send the file with the cluster page's upload form.".into())
    })?;
    let mut name_bytes = Vec::new();
    let mut outcome = Err(DomainError::invalid("file", "choose a file to upload"));
    while let Some(field) = form.next().await {
        let Ok(mut field) = field else {
            outcome = Err(DomainError::Body(BodyError::Broken));
            break;
        };
        match field.name() {
            Some("name") => {
                // The whole field first: a character may arrive split over two reads.
                while let Some(chunk) = field.next().await {
                    let Ok(chunk) = chunk else { break };
                    // Far beyond any valid name (1-1024 bytes): kept whole, so the name's
                    // own rule refuses it rather than a silently shortened one being stored.
                    if name_bytes.len() < 4096 {
                        name_bytes.extend_from_slice(&chunk);
                    }
                }
            }
            Some("file") => {
                let Ok(name) = std::str::from_utf8(&name_bytes) else {
                    outcome = Err(DomainError::invalid("name", "must be UTF-8"));
                    break;
                };
                let file_name = field
                    .content_disposition()
                    .and_then(|d| d.get_filename())
                    .unwrap_or_default()
                    .to_owned();
                let object_name = match name.trim() {
                    "" => file_name,
                    given => given.to_owned(),
                };
                if object_name.is_empty() {
                    break;
                }
                let body = Box::pin(field.map(|chunk| chunk.map_err(|_| BodyError::Broken)));
                outcome = state
                    .console
                    .clusters()?
                    .put_object(&caller.0, id, &object_name, body)
                    .await
                    .map(|_| "uploaded");
                break;
            }
            _ => while field.next().await.is_some() {},
        }
    }
    after(&state, &caller.0, id, outcome).await
}

#[derive(Deserialize)]
pub struct ObjectQuery {
    #[serde(default)]
    name: String,
}

pub async fn download(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    query: web::Query<ObjectQuery>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let read = state
        .console
        .clusters()?
        .get_object(&caller.0, id, &query.name)
        .await?;
    Ok(stream_object(read).await?)
}

#[derive(Deserialize)]
pub struct ObjectForm {
    #[serde(default)]
    name: String,
}

pub async fn delete_object(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<ObjectForm>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let outcome = state
        .console
        .clusters()?
        .delete_object(&caller.0, id, &form.name)
        .await
        .map(|()| "object_deleted");
    after(&state, &caller.0, id, outcome).await
}

pub async fn backup(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let outcome = state
        .console
        .clusters()?
        .create_backup(&caller.0, id)
        .await
        .map(|_| "backup_taken");
    after(&state, &caller.0, id, outcome).await
}

#[derive(Deserialize)]
pub struct RestoreForm {
    name: Option<String>,
}

/// Where to go after acting on a backup: its cluster's page, or the project's once the
/// cluster is deleted.
async fn backup_home(state: &AppState, caller: &Caller, backup: &Backup) -> String {
    let cluster = match state.console.clusters() {
        Ok(clusters) => clusters.cluster(caller, backup.cluster_id).await,
        Err(err) => Err(err),
    };
    match cluster {
        Ok(_) => format!("/clusters/{}", backup.cluster_id),
        Err(_) => format!("/projects/{}", backup.project_id),
    }
}

pub async fn restore(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<RestoreForm>,
) -> Result<HttpResponse, PageError> {
    let backup = state
        .console
        .clusters()?
        .backup(&caller.0, path.into_inner())
        .await?;
    match state
        .console
        .clusters()?
        .restore_backup(&caller.0, backup.id, form.name.as_deref())
        .await
    {
        Ok(cluster) => Ok(see_other(&format!("/clusters/{}?restored=1", cluster.id))),
        Err(err)
            if backup_home(&state, &caller.0, &backup)
                .await
                .starts_with("/clusters/") =>
        {
            after(&state, &caller.0, backup.cluster_id, Err(err)).await
        }
        Err(err) => Err(err.into()),
    }
}

pub async fn delete_backup(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let backup = state
        .console
        .clusters()?
        .backup(&caller.0, path.into_inner())
        .await?;
    let home = backup_home(&state, &caller.0, &backup).await;
    match state
        .console
        .clusters()?
        .delete_backup(&caller.0, backup.id)
        .await
    {
        Ok(()) => Ok(see_other(&format!("{home}?backup_deleted=1"))),
        Err(err) if home.starts_with("/clusters/") => {
            after(&state, &caller.0, backup.cluster_id, Err(err)).await
        }
        Err(err) => Err(err.into()),
    }
}
