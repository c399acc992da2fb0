//! Project Settings > Encryption Access > Create Encryption Key: the wizard as pages. Every
//! step is a plain form (GET to move between steps, POST to test or create), so it works
//! without JavaScript; with it, `/stream` sends each check as it completes.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use askama::Template;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::domain::clusters::effective_policy;
use crate::domain::identity::Caller;
use crate::domain::keys::azure::{ARM_TEMPLATE_FILE, AzureSetup, VaultName};
use crate::domain::keys::checks::{Check, Checklist, Progress};
use crate::domain::keys::gcp::{GcpSetup, KeyParts, TERRAFORM_FILE};
use crate::domain::keys::policy::{AwsAccessPolicies, Statement};
use crate::domain::keys::region::{AWS_REGIONS, AZURE_REGIONS, GCP_REGIONS};
use crate::domain::keys::rewrap::{Rewrap, RewrapState};
use crate::domain::keys::{ConfirmProgress, Confirmation, KeyRequestInput, KeyStatus};
use crate::domain::local_kms::LocalKey;
use crate::domain::page::{MAX_PAGE_SIZE, PageRequest};
use crate::domain::projects::RevocationPolicy;
use crate::domain::{Console, DomainError};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::key_status::{ClusterLine, rotation_text};
use crate::http::pages::projects::KeyRow;
use crate::http::pages::render::ProjectView;
use crate::http::pages::render::{Chrome, FormErrors, Refusal, html_status, see_other, when};
use crate::http::pages::timeline;
use crate::http::shared::query::query_string;

/// Check my key policy, for an AWS key of this project, region and access mode: what a
/// check refused for access offers (None for other KMSs).
fn doctor_url(
    project_id: Uuid,
    provider: &str,
    region: &str,
    mode: Option<&str>,
) -> Option<String> {
    (provider == "aws_kms").then(|| {
        format!(
            "/projects/{project_id}/encryption-keys/aws-policy-check?{}",
            query_string(&[
                ("region", &Some(region.to_owned())),
                ("mode", &mode.map(str::to_owned)),
            ])
        )
    })
}

/// Everything the wizard's forms carry, step to step.
#[derive(Deserialize, Default, Clone)]
pub struct WizardForm {
    pub provider: Option<String>,
    pub region: Option<String>,
    /// `key_policy` or `role`.
    pub mode: Option<String>,
    /// `all` for one policy that serves every region.
    pub scope: Option<String>,
    pub account_id: Option<String>,
    pub key_arn: Option<String>,
    pub role_arn: Option<String>,
    pub key_id: Option<String>,
    /// Azure: the Key Vault's name, the key name prefix (step 3) and the full key name.
    pub vault_name: Option<String>,
    pub key_name_prefix: Option<String>,
    pub key_name: Option<String>,
    /// Google Cloud: the customer's project id and key ring (the prefix is `key_name_prefix`,
    /// the full resource name `key_name`).
    pub gcp_project_id: Option<String>,
    pub key_ring: Option<String>,
    /// `test` to test only; anything else tests and creates.
    pub action: Option<String>,
}

impl WizardForm {
    /// The region the policy is for: the chosen one, or `*` when one policy is to serve
    /// every region (the API's spelling of that scope).
    fn policy_region(&self) -> &str {
        if Self::text(&self.scope) == "all" {
            "*"
        } else {
            Self::text(&self.region)
        }
    }

    fn input(&self) -> KeyRequestInput {
        KeyRequestInput {
            provider: self.provider.clone().unwrap_or_default(),
            region: self.region.clone().unwrap_or_default(),
            key_arn: self.key_arn.clone(),
            access_mode: self.mode.clone(),
            role_arn: self.role_arn.clone(),
            key_id: self.key_id.clone(),
            vault_name: self.vault_name.clone(),
            key_name: self.key_name.clone(),
        }
    }

    fn text(value: &Option<String>) -> &str {
        value.as_deref().unwrap_or("")
    }
}

pub struct PolicyView {
    pub index: usize,
    pub title: String,
    pub file_name: String,
    pub instructions: String,
    pub json: String,
    pub statements: Vec<Statement>,
}

fn policy_views(policies: &AwsAccessPolicies) -> Vec<PolicyView> {
    policies
        .documents
        .iter()
        .enumerate()
        .map(|(index, d)| PolicyView {
            index,
            title: d.title.clone(),
            file_name: d.file_name.clone(),
            instructions: d.instructions.clone(),
            json: serde_json::to_string_pretty(&d.policy).unwrap_or_default(),
            statements: d.statements.clone(),
        })
        .collect()
}

/// Steps 2-3 of the Google Cloud wizard, as the page shows them.
pub struct GcpView {
    pub service_account: String,
    pub key_ring: String,
    pub key_id: String,
    pub suffix: String,
    pub key_name: Option<String>,
    /// Each command with its index (for its copy button).
    pub commands: Vec<(usize, String)>,
    pub terraform_json: String,
    pub terraform_file: &'static str,
}

impl From<GcpSetup> for GcpView {
    fn from(s: GcpSetup) -> Self {
        Self {
            terraform_json: serde_json::to_string_pretty(&s.terraform).unwrap_or_default(),
            service_account: s.service_account,
            key_ring: s.key_ring,
            key_id: s.key_id,
            suffix: s.suffix,
            key_name: s.key_name,
            commands: s.commands.into_iter().enumerate().collect(),
            terraform_file: TERRAFORM_FILE,
        }
    }
}

impl WizardForm {
    fn gcp_parts(&self) -> KeyParts<'_> {
        KeyParts {
            gcp_project_id: self.gcp_project_id.as_deref(),
            key_ring: self.key_ring.as_deref(),
            key_name_prefix: self.key_name_prefix.as_deref(),
        }
    }
}

/// Steps 2-3 of the Azure wizard, as the page shows them.
pub struct AzureView {
    pub app_name: String,
    pub app_id: String,
    pub create_command: String,
    pub show_command: String,
    pub key_name: Option<String>,
    pub checklist: Vec<&'static str>,
    pub template_json: String,
    pub template_file: &'static str,
}

impl From<AzureSetup> for AzureView {
    fn from(s: AzureSetup) -> Self {
        Self {
            template_json: serde_json::to_string_pretty(&s.arm_template).unwrap_or_default(),
            app_name: s.app_name,
            app_id: s.app_id,
            create_command: s.create_service_principal_command,
            show_command: s.show_service_principal_command,
            key_name: s.key_name,
            checklist: s.checklist,
            template_file: ARM_TEMPLATE_FILE,
        }
    }
}

#[derive(Template)]
#[template(path = "keys/new.html")]
struct WizardPage {
    chrome: Chrome,
    project: ProjectView,
    form: WizardForm,
    regions: &'static [(&'static str, &'static str)],
    azure_regions: &'static [(&'static str, &'static str)],
    azure: Option<AzureView>,
    azure_available: bool,
    gcp_regions: &'static [(&'static str, &'static str)],
    gcp: Option<GcpView>,
    gcp_available: bool,
    policies: Vec<PolicyView>,
    external_id: Option<String>,
    platform_account: Option<String>,
    local_keys: Vec<LocalKey>,
    local_available: bool,
    errors: FormErrors,
    checklist: Option<Checklist>,
    /// A refusal that is not about one field (conflict, checks failed).
    problem: Option<String>,
    /// The query string that reproduces steps 1-2 (for downloads and the stream).
    step_query: String,
    /// Check my key policy, offered beside a check the KMS refused for access (AWS).
    doctor: Option<String>,
}

impl WizardPage {
    fn provider_is(&self, value: &str) -> bool {
        WizardForm::text(&self.form.provider) == value
    }

    fn region_is(&self, value: &str) -> bool {
        WizardForm::text(&self.form.region) == value
    }

    fn mode_is(&self, value: &str) -> bool {
        WizardForm::text(&self.form.mode).is_empty() && value == "key_policy"
            || WizardForm::text(&self.form.mode) == value
    }

    fn all_regions(&self) -> bool {
        WizardForm::text(&self.form.scope) == "all"
    }

    fn chosen(&self) -> bool {
        !WizardForm::text(&self.form.provider).is_empty()
            && !WizardForm::text(&self.form.region).is_empty()
    }

    fn value(&self, field: &str) -> &str {
        match field {
            "key_arn" => WizardForm::text(&self.form.key_arn),
            "role_arn" => WizardForm::text(&self.form.role_arn),
            "key_id" => WizardForm::text(&self.form.key_id),
            "account_id" => WizardForm::text(&self.form.account_id),
            "vault_name" => WizardForm::text(&self.form.vault_name),
            "key_name_prefix" => WizardForm::text(&self.form.key_name_prefix),
            "key_name" => WizardForm::text(&self.form.key_name),
            "gcp_project_id" => WizardForm::text(&self.form.gcp_project_id),
            "key_ring" => WizardForm::text(&self.form.key_ring),
            _ => "",
        }
    }
}

fn step_query(form: &WizardForm) -> String {
    query_string(&[
        ("provider", &form.provider),
        ("region", &form.region),
        ("mode", &form.mode),
        ("scope", &form.scope),
        ("account_id", &form.account_id),
        ("key_arn", &form.key_arn),
        ("vault_name", &form.vault_name),
        ("key_name_prefix", &form.key_name_prefix),
        ("gcp_project_id", &form.gcp_project_id),
        ("key_ring", &form.key_ring),
    ])
}

struct Outcome {
    errors: FormErrors,
    checklist: Option<Checklist>,
    problem: Option<String>,
}

async fn render(
    console: &Console,
    caller: &Caller,
    project_id: Uuid,
    form: WizardForm,
    outcome: Outcome,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let project = console.projects().project(caller, project_id).await?;
    let chrome = Chrome::load(console, caller, "projects").await?;
    let mut errors = outcome.errors;
    let mut policies = Vec::new();
    let mut external_id = None;
    if WizardForm::text(&form.provider) == "aws_kms" && !WizardForm::text(&form.region).is_empty() {
        let region = form.policy_region();
        match console
            .keys()
            .aws_access_policies(
                caller,
                project_id,
                region,
                form.mode.as_deref(),
                form.key_arn
                    .as_deref()
                    .filter(|_| form.mode.as_deref() == Some("role")),
                form.account_id.as_deref(),
            )
            .await
        {
            Ok(p) => {
                external_id = p.external_id.clone();
                policies = policy_views(&p);
            }
            Err(DomainError::Invalid(fields)) => errors
                .0
                .extend(fields.into_iter().filter(|f| f.field != "key_arn")),
            Err(other) => return Err(other.into()),
        }
    }
    let mut azure = None;
    if WizardForm::text(&form.provider) == "azure_key_vault"
        && !WizardForm::text(&form.region).is_empty()
    {
        match console
            .keys()
            .azure_setup(
                caller,
                project_id,
                WizardForm::text(&form.region),
                form.key_name_prefix.as_deref(),
            )
            .await
        {
            Ok(setup) => azure = Some(AzureView::from(setup)),
            Err(DomainError::Invalid(fields)) => errors.0.extend(fields),
            Err(other) => return Err(other.into()),
        }
        if let Some(vault) = form.vault_name.as_deref().filter(|v| !v.trim().is_empty())
            && let Err(e) = VaultName::parse("vault_name", vault)
            && errors.get("vault_name").is_none()
        {
            errors.0.push(e);
        }
    }
    let mut gcp = None;
    if WizardForm::text(&form.provider) == "gcp_kms" && !WizardForm::text(&form.region).is_empty() {
        match console
            .keys()
            .gcp_setup(
                caller,
                project_id,
                WizardForm::text(&form.region),
                form.gcp_parts(),
            )
            .await
        {
            Ok(setup) => gcp = Some(GcpView::from(setup)),
            Err(DomainError::Invalid(fields)) => errors.0.extend(fields),
            Err(other) => return Err(other.into()),
        }
    }
    let local_available = console.local_kms_available();
    let local_keys = if local_available {
        console.keys().local_keys(caller).await?
    } else {
        Vec::new()
    };
    let page = WizardPage {
        chrome,
        project: project.into(),
        step_query: step_query(&form),
        doctor: doctor_url(
            project_id,
            WizardForm::text(&form.provider),
            WizardForm::text(&form.region),
            form.mode.as_deref(),
        ),
        form,
        regions: AWS_REGIONS,
        azure_regions: AZURE_REGIONS,
        azure,
        azure_available: console.keys().azure_app().is_some(),
        gcp_regions: GCP_REGIONS,
        gcp,
        gcp_available: console.keys().gcp_service_account().is_some(),
        policies,
        external_id,
        platform_account: console.keys().aws_account_id().map(str::to_owned),
        local_available,
        local_keys,
        errors,
        checklist: outcome.checklist,
        problem: outcome.problem,
    };
    html_status(status, &page)
}

/// Steps 1-3: choose the KMS and region, read the JSON to paste, enter the key.
pub async fn new(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Query<WizardForm>,
) -> Result<HttpResponse, PageError> {
    caller.0.require_owner("manage encryption keys")?;
    let outcome = Outcome {
        errors: FormErrors::default(),
        checklist: None,
        problem: None,
    };
    render(
        &state.console,
        &caller.0,
        path.into_inner(),
        form.into_inner(),
        outcome,
        StatusCode::OK,
    )
    .await
}

/// Step 4 without JavaScript: test (and create), then show the checklist or the project.
pub async fn submit(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let project_id = path.into_inner();
    let form = form.into_inner();
    let test_only = form.action.as_deref() == Some("test");
    let result = if test_only {
        state
            .console
            .keys()
            .test_key(&caller.0, project_id, &form.input(), None)
            .await
            .map(|c| (None, c))
    } else {
        state
            .console
            .keys()
            .create_key(&caller.0, project_id, &form.input(), None)
            .await
            .map(|(k, c)| (Some(k), c))
    };
    let (outcome, status) = match result {
        Ok((Some(_), _)) => {
            return Ok(see_other(&format!(
                "/projects/{project_id}?key_created=1#encryption-access"
            )));
        }
        Ok((None, checklist)) => (
            Outcome {
                errors: FormErrors::default(),
                checklist: Some(checklist),
                problem: None,
            },
            StatusCode::OK,
        ),
        Err(err) => refusal(err)?,
    };
    render(&state.console, &caller.0, project_id, form, outcome, status).await
}

const NOT_CREATED: &str = "The key did not pass every required check, so it was not created.";
const NOT_REPLACED: &str = "The new key did not pass every required check, so nothing changed.";

/// What a refused test or create shows on the form (see `Refusal`).
fn refusal(err: DomainError) -> Result<(Outcome, StatusCode), PageError> {
    let none = || Outcome {
        errors: FormErrors::default(),
        checklist: None,
        problem: None,
    };
    Ok(match Refusal::of(err)? {
        Refusal::Checks(checklist) => (
            Outcome {
                checklist: Some(checklist),
                problem: Some(NOT_CREATED.into()),
                ..none()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Refusal::Message { status, text } => (
            Outcome {
                problem: Some(text),
                ..none()
            },
            status,
        ),
        Refusal::Fields { status, errors } => (Outcome { errors, ..none() }, status),
    })
}

/// One check as the page shows it: the same partial for the full page and the stream.
#[derive(Template)]
#[template(path = "keys/_check.html")]
struct CheckItem<'a> {
    c: &'a Check,
    doctor: &'a Option<String>,
}

/// What the wizard's stream hears from the checks.
enum Heard {
    Check(Check),
    /// The checks failed as a fresh grant fails, and run again after a pause.
    Waiting {
        attempt: u32,
        waited: std::time::Duration,
        code: String,
    },
}

/// The wizard's stream hears about each check through a channel.
struct ToStream(tokio::sync::mpsc::UnboundedSender<Heard>);

impl Progress for ToStream {
    fn completed(&self, check: &Check) {
        // The browser may have gone; the checks go on and the result is still saved.
        let _ = self.0.send(Heard::Check(check.clone()));
    }

    fn waiting(&self, attempt: u32, waited: std::time::Duration, failed: &Check) {
        let _ = self.0.send(Heard::Waiting {
            attempt,
            waited,
            code: failed.code.clone().unwrap_or_default(),
        });
    }
}

/// Step 4 with JavaScript: newline-delimited JSON, one `check` event as each check completes,
/// then `done` (with where to go) or `refused` (field errors or a problem).
pub async fn stream(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let project_id = path.into_inner();
    let form = form.into_inner();
    let console = state.console.clone();
    let caller = caller.0;
    console.keys().may_request_keys(&caller, project_id).await?;
    let doctor = doctor_url(
        project_id,
        WizardForm::text(&form.provider),
        WizardForm::text(&form.region),
        form.mode.as_deref(),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Heard>();
    let tx = ToStream(tx);
    let task = actix_web::rt::spawn(async move {
        let input = form.input();
        let result = if form.action.as_deref() == Some("test") {
            console
                .keys()
                .test_key(&caller, project_id, &input, Some(&tx))
                .await
                .map(|c| (false, c.passed, c.waited.as_secs()))
        } else {
            console
                .keys()
                .create_key(&caller, project_id, &input, Some(&tx))
                .await
                .map(|(_, c)| (true, c.passed, c.waited.as_secs()))
        };
        drop(tx);
        match result {
            Ok((true, _, _)) => {
                json!({ "type": "done", "created": true, "location": format!("/projects/{project_id}?key_created=1#encryption-access") })
            }
            Ok((false, passed, waited)) => {
                json!({ "type": "done", "created": false, "passed": passed, "waited_seconds": waited })
            }
            Err(err) => refusal_event(err, NOT_CREATED),
        }
    });
    Ok(ndjson_stream(
        rx,
        task,
        "The test stopped unexpectedly.",
        move |heard: Heard| heard_line(heard, &doctor),
    ))
}

/// One line of a checks stream: a check, rendered with the page's own partial, or a wait for
/// a grant to propagate.
fn heard_line(heard: Heard, doctor: &Option<String>) -> serde_json::Value {
    match heard {
        Heard::Check(check) => {
            let html = CheckItem { c: &check, doctor }
                .render()
                .unwrap_or_else(|err| {
                    tracing::error!(error = %err, "a check could not be rendered");
                    String::new()
                });
            json!({ "type": "check", "id": check.id, "html": html })
        }
        Heard::Waiting {
            attempt,
            waited,
            code,
        } => json!({
            "type": "waiting",
            "attempt": attempt,
            "waited_seconds": waited.as_secs(),
            "message": format!(
                "Waiting for the grant to propagate: attempt {attempt} was refused ({code}), {} s so far. Trying again…",
                waited.as_secs()
            ),
        }),
    }
}

/// Replace key with JavaScript: the same stream as the wizard's, the new key's checks one by
/// one, then `done` (where the change shows) or `refused`.
pub async fn replace_stream(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
    form: web::Form<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    let form = form.into_inner();
    let console = state.console.clone();
    let caller = caller.0;
    console.keys().may_request_keys(&caller, project_id).await?;
    console
        .keys()
        .encryption_key(&caller, project_id, key_id)
        .await?;
    let doctor = doctor_url(
        project_id,
        WizardForm::text(&form.provider),
        WizardForm::text(&form.region),
        form.mode.as_deref(),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Heard>();
    let tx = ToStream(tx);
    let task = actix_web::rt::spawn(async move {
        let result = console
            .keys()
            .replace_key(&caller, project_id, key_id, &form.input(), Some(&tx))
            .await;
        drop(tx);
        match result {
            Ok(_) => json!({
                "type": "done",
                "created": true,
                "location": format!("/projects/{project_id}/encryption-keys/{key_id}?changed=replace#change"),
            }),
            Err(err) => refusal_event(err, NOT_REPLACED),
        }
    });
    Ok(ndjson_stream(
        rx,
        task,
        "The test stopped unexpectedly.",
        move |heard: Heard| heard_line(heard, &doctor),
    ))
}

/// A newline-delimited JSON answer: one line per message from `rx` as it arrives, then the
/// task's own last line (or `stopped` if the task died).
fn ndjson_stream<T: 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    task: actix_web::rt::task::JoinHandle<serde_json::Value>,
    stopped: &'static str,
    line: impl Fn(T) -> serde_json::Value + 'static,
) -> HttpResponse {
    let line = std::rc::Rc::new(line);
    let events = stream::unfold((Some(rx), Some(task)), move |(rx, task)| {
        let line = line.clone();
        async move {
            if let Some(mut rx) = rx
                && let Some(message) = rx.recv().await
            {
                return Some((
                    Ok::<Bytes, actix_web::Error>(ndjson(&line(message))),
                    (Some(rx), task),
                ));
            }
            let task = task?;
            let last = task
                .await
                .unwrap_or_else(|_| json!({ "type": "refused", "problem": stopped }));
            Some((Ok(ndjson(&last)), (None, None)))
        }
    });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events)
}

fn ndjson(value: &serde_json::Value) -> Bytes {
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The stream's last line for a refusal: the same sorting as the form (see `Refusal`).
fn refusal_event(err: DomainError, not_passed: &str) -> serde_json::Value {
    match Refusal::of(err) {
        Ok(Refusal::Checks(_)) => json!({ "type": "refused", "problem": not_passed }),
        Ok(Refusal::Fields { errors, .. }) => json!({ "type": "refused", "errors": errors.0 }),
        Ok(Refusal::Message { text, .. }) => json!({ "type": "refused", "problem": text }),
        Err(page) => {
            if actix_web::ResponseError::status_code(&page).is_server_error() {
                tracing::error!(error = %page, "key test failed unexpectedly");
            }
            json!({ "type": "refused", "problem": page.explained().1 })
        }
    }
}

/// The policy as a file: `ROLE-TRUST-POLICY.JSON` (or the role's permission policy).
pub async fn download(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, usize)>,
    form: web::Query<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let (project_id, index) = path.into_inner();
    let region = form.policy_region();
    let policies = state
        .console
        .keys()
        .aws_access_policies(
            &caller.0,
            project_id,
            region,
            form.mode.as_deref(),
            form.key_arn.as_deref(),
            form.account_id.as_deref(),
        )
        .await?;
    let document = policies
        .documents
        .get(index)
        .ok_or(DomainError::NotFound("policy document"))?;
    let body = serde_json::to_string_pretty(&document.policy).unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", document.file_name),
        ))
        .body(body))
}

/// The Azure Resource Manager template as a file, with the wizard's region and key name.
pub async fn azure_template(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Query<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let setup = state
        .console
        .keys()
        .azure_setup(
            &caller.0,
            path.into_inner(),
            WizardForm::text(&form.region),
            form.key_name_prefix.as_deref(),
        )
        .await?;
    let body = serde_json::to_string_pretty(&setup.arm_template).unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{ARM_TEMPLATE_FILE}\""),
        ))
        .body(body))
}

/// The Terraform configuration (Terraform's JSON syntax) as a file, filled in with the
/// wizard's region, project id, key ring and key name.
pub async fn gcp_terraform(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Query<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let setup = state
        .console
        .keys()
        .gcp_setup(
            &caller.0,
            path.into_inner(),
            WizardForm::text(&form.region),
            form.gcp_parts(),
        )
        .await?;
    let body = serde_json::to_string_pretty(&setup.terraform).unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{TERRAFORM_FILE}\""),
        ))
        .body(body))
}

/// Where Check now leads: back to the page it was pressed on, saying what it did.
fn after_check(project_id: Uuid, key_id: Uuid, back_to_key: bool, done: Confirmation) -> String {
    let said = done.as_str();
    if back_to_key {
        format!("/projects/{project_id}/encryption-keys/{key_id}?checked={said}")
    } else {
        format!("/projects/{project_id}?key_checked={said}#encryption-access")
    }
}

#[derive(Deserialize)]
pub struct CheckForm {
    /// `key` when pressed on the key's own page.
    from: Option<String>,
}

/// Check now, without JavaScript: both probes run (a few seconds when a revocation needs
/// confirming), then the page it was pressed on says what happened.
pub async fn check(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
    form: web::Form<CheckForm>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    let checked = state
        .console
        .keys()
        .check_key(&caller.0, project_id, key_id, None)
        .await?;
    let back_to_key = form.from.as_deref() == Some("key");
    Ok(see_other(&after_check(
        project_id,
        key_id,
        back_to_key,
        checked.confirmation,
    )))
}

/// Check now's stream hears when a revocation is being confirmed.
struct ConfirmingToStream(tokio::sync::mpsc::UnboundedSender<KeyStatus>);

impl ConfirmProgress for ConfirmingToStream {
    fn confirming(&self, seen: KeyStatus) {
        let _ = self.0.send(seen);
    }
}

/// Check now with JavaScript: `confirming` (with what the first probe saw) while the second
/// probe waits, then `done` with where to go.
pub async fn check_stream(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
    form: web::Form<CheckForm>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    let console = state.console.clone();
    let caller = caller.0;
    // Refused before the stream starts (another organization's key is a 404 page).
    console
        .keys()
        .encryption_key(&caller, project_id, key_id)
        .await?;
    let back_to_key = form.from.as_deref() == Some("key");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<KeyStatus>();
    let task = actix_web::rt::spawn(async move {
        let tx = ConfirmingToStream(tx);
        let result = console
            .keys()
            .check_key(&caller, project_id, key_id, Some(&tx))
            .await;
        drop(tx);
        match result {
            Ok(checked) => json!({
                "type": "done",
                "status": checked.key.status.as_str(),
                "confirmation": checked.confirmation.as_str(),
                "location": after_check(project_id, key_id, back_to_key, checked.confirmation),
            }),
            Err(err) => refusal_event(err, NOT_CREATED),
        }
    });
    Ok(ndjson_stream(
        rx,
        task,
        "The check stopped unexpectedly.",
        |seen: KeyStatus| json!({ "type": "confirming", "seen": seen.as_str() }),
    ))
}

pub async fn delete(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    state
        .console
        .keys()
        .delete_key(&caller.0, project_id, key_id)
        .await?;
    Ok(see_other(&format!(
        "/projects/{project_id}?key_deleted=1#encryption-access"
    )))
}

pub struct HistoryLine {
    pub at: String,
    pub from: &'static str,
    pub to: &'static str,
    pub message: String,
}

#[derive(Template)]
#[template(path = "keys/show.html")]
struct KeyPage {
    chrome: Chrome,
    project: ProjectView,
    key: KeyRow,
    rotation: &'static str,
    timeline: String,
    history: Vec<HistoryLine>,
    clusters: Vec<ClusterLine>,
    policy: &'static str,
    notice: Option<&'static str>,
    versions: Vec<crate::domain::keys::VersionInUse>,
    /// Each action and whether it is safe now: (safe, what, why).
    verdicts: Vec<(bool, String, String)>,
    /// Backups wrapped under this key: (id, cluster name, state, version).
    backups: Vec<(Uuid, String, &'static str, String)>,
    /// The latest replacement or re-wrap from or to the key.
    change: Option<ChangeView>,
    /// The key can be changed now (owner, not replaced, no change running).
    can_change: bool,
    /// A replaced key still wraps data keys its replacement could not move (owner, no change
    /// running): they can be moved again.
    can_retry: bool,
    /// The key's provider, as the API spells it (which replacement fields to show).
    provider_code: &'static str,
    local_keys: Vec<LocalKey>,
    /// The replacement form as sent, with what was wrong with it.
    form: WizardForm,
    errors: FormErrors,
    checklist: Option<Checklist>,
    problem: Option<String>,
    /// Check my key policy, offered beside a replacement's check refused for access (AWS).
    doctor: Option<String>,
}

impl KeyPage {
    fn value(&self, field: &str) -> &str {
        let value = match field {
            "key_arn" => &self.form.key_arn,
            "role_arn" => &self.form.role_arn,
            "mode" => &self.form.mode,
            "vault_name" => &self.form.vault_name,
            "key_name" => &self.form.key_name,
            "key_id" => &self.form.key_id,
            _ => &None,
        };
        WizardForm::text(value)
    }
}

/// A change of key as its page shows it.
pub struct ChangeView {
    pub replaces: bool,
    pub state: &'static str,
    pub from_key_id: Uuid,
    pub to_key_id: Uuid,
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    /// Of the data keys to move, moved or given up on (0-100).
    pub percent: u32,
    pub target_version: String,
    /// (data key, code, what the KMS said)
    pub failures: Vec<(String, String, String)>,
    pub started: String,
    pub started_by: String,
    pub finished: String,
}

impl From<Rewrap> for ChangeView {
    fn from(r: Rewrap) -> Self {
        let settled = r.done.saturating_add(r.failed);
        Self {
            replaces: r.replaces(),
            state: r.state.as_str(),
            from_key_id: r.from_key_id,
            to_key_id: r.to_key_id,
            total: r.total,
            done: r.done,
            failed: r.failed,
            percent: if r.total == 0 {
                100
            } else {
                (u64::from(settled.min(r.total)) * 100 / u64::from(r.total)) as u32
            },
            target_version: r.target_version.unwrap_or_default(),
            failures: r
                .failures
                .into_iter()
                .map(|f| (f.data_key, f.code, f.message))
                .collect(),
            started: when(r.started_at),
            started_by: r.started_by,
            finished: r.finished_at.map(when).unwrap_or_default(),
        }
    }
}

/// The key's page: its status, the clusters it protects, and its history as a timeline.
#[derive(Deserialize)]
pub struct KeyShowParams {
    /// Set by Check now: what it did (`not_needed`, `confirmed`, `not_confirmed`).
    checked: Option<String>,
    /// Set after a change of key started.
    changed: Option<String>,
}

/// What the replacement form brings to the key's page when it was refused.
#[derive(Default)]
struct ChangeForm {
    form: WizardForm,
    errors: FormErrors,
    checklist: Option<Checklist>,
    problem: Option<String>,
}

pub async fn show(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
    params: web::Query<KeyShowParams>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    let notice = match (params.checked.as_deref(), params.changed.as_deref()) {
        (Some(checked), _) => Some(crate::http::pages::projects::check_notice(checked)),
        (None, Some("replace")) => Some(
            "The new key passed every check and is now the region's key; the data keys move to it below.",
        ),
        (None, Some("repin")) => Some(
            "The vault in its new tenant unwrapped a data key this key wrapped: the key now follows it there.",
        ),
        (None, Some(_)) => Some("The data keys are moving to the key's current version below."),
        (None, None) => None,
    };
    key_page(
        &state.console,
        &caller.0,
        project_id,
        key_id,
        notice,
        ChangeForm::default(),
        StatusCode::OK,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn key_page(
    console: &Console,
    caller: &Caller,
    project_id: Uuid,
    key_id: Uuid,
    notice: Option<&'static str>,
    change_form: ChangeForm,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let project = console.projects().project(caller, project_id).await?;
    let key = console
        .keys()
        .encryption_key(caller, project_id, key_id)
        .await?;
    let history = console
        .keys()
        .key_history(
            caller,
            project_id,
            key_id,
            PageRequest {
                size: MAX_PAGE_SIZE,
                after: None,
            },
        )
        .await?;
    let complete = history.next.is_none();
    let history = history.items;
    let clusters = console.keys().key_clusters(caller, &key).await?;
    let impact = console
        .keys()
        .key_impact(caller, project_id, key_id)
        .await?;
    let verdicts = impact
        .verdicts
        .iter()
        .map(|v| {
            let what = match (v.action, &v.version) {
                ("delete", _) => "Delete the key here".to_owned(),
                ("disable_key", _) => "Disable the key in your KMS".to_owned(),
                (_, Some(version)) => format!("Disable version {version} in your KMS"),
                (_, None) => "Disable a version in your KMS".to_owned(),
            };
            (v.safe, what, v.reason.clone())
        })
        .collect();
    let backups = impact
        .backups
        .iter()
        .map(|b| {
            (
                b.id,
                b.cluster_name.clone(),
                b.state.as_str(),
                b.key_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    let versions = impact.versions;
    let change = console
        .keys()
        .key_change(caller, project_id, key_id)
        .await?;
    let running = change
        .as_ref()
        .is_some_and(|c| c.state == RewrapState::Rewrapping);
    let chrome = Chrome::load(console, caller, "projects").await?;
    let policy = match effective_policy(&project, key.key_ref.provider()) {
        RevocationPolicy::Stop => {
            "stop: once a revocation is confirmed, the clusters using this key become inaccessible"
        }
        RevocationPolicy::KeepRunning => {
            "keep running: the clusters using this key keep running after a revocation, but will not resume until the key works again"
        }
    };
    let timeline = timeline::svg(
        key.created_at,
        console.now(),
        key.status,
        &history,
        complete,
    );
    let provider_code = key.key_ref.provider().as_str();
    let key_region = key.region.as_str().to_owned();
    let key_mode = key.key_ref.access_mode().map(|m| m.as_str().to_owned());
    // The replacement's own access mode when one was sent, else this key's.
    let doctor = doctor_url(
        project_id,
        provider_code,
        &key_region,
        change_form.form.mode.as_deref().or(key_mode.as_deref()),
    );
    let can_change = caller.is_owner() && key.replaced_by.is_none() && !running;
    let can_retry =
        caller.is_owner() && key.replaced_by.is_some() && !running && !versions.is_empty();
    let local_keys = if can_change && provider_code == "local" {
        console.keys().local_keys(caller).await?
    } else {
        Vec::new()
    };
    html_status(
        status,
        &KeyPage {
            chrome,
            rotation: rotation_text(&key),
            project: project.into(),
            timeline,
            history: history
                .into_iter()
                .map(|c| HistoryLine {
                    at: when(c.at),
                    from: c.from.as_str(),
                    to: c.to.as_str(),
                    message: c.message.unwrap_or_default(),
                })
                .collect(),
            clusters: clusters.into_iter().map(ClusterLine::from).collect(),
            key: key.into(),
            policy,
            notice,
            versions,
            verdicts,
            backups,
            change: change.map(ChangeView::from),
            can_change,
            can_retry,
            provider_code,
            local_keys,
            form: change_form.form,
            errors: change_form.errors,
            checklist: change_form.checklist,
            problem: change_form.problem,
            doctor,
        },
    )
}

/// Replace key, without JavaScript: test the new key and start the change, or show what was
/// wrong on the key's page.
pub async fn replace(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
    form: web::Form<WizardForm>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    let form = form.into_inner();
    let result = state
        .console
        .keys()
        .replace_key(&caller.0, project_id, key_id, &form.input(), None)
        .await;
    let err = match result {
        Ok(_) => {
            return Ok(see_other(&format!(
                "/projects/{project_id}/encryption-keys/{key_id}?changed=replace#change"
            )));
        }
        Err(err) => err,
    };
    let (change_form, status) = change_refused(err, form)?;
    key_page(
        &state.console,
        &caller.0,
        project_id,
        key_id,
        None,
        change_form,
        status,
    )
    .await
}

/// Re-pin an Azure key to the tenant its vault answers for now (the console proves the
/// vault there holds the same key material first).
pub async fn repin(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    let result = state
        .console
        .keys()
        .repin_key(&caller.0, project_id, key_id)
        .await;
    match result {
        Ok(_) => Ok(see_other(&format!(
            "/projects/{project_id}/encryption-keys/{key_id}?changed=repin#change"
        ))),
        Err(err) => {
            let (mut change_form, status) = change_refused(err, WizardForm::default())?;
            // Re-pin has no fields of its own: what was wrong is said above the forms.
            if change_form.problem.is_none() && change_form.errors.any() {
                let reasons: Vec<String> =
                    change_form.errors.0.drain(..).map(|e| e.reason).collect();
                change_form.problem = Some(reasons.join("; "));
            }
            key_page(
                &state.console,
                &caller.0,
                project_id,
                key_id,
                None,
                change_form,
                status,
            )
            .await
        }
    }
}

/// What a refused change of key shows on the key's page: the failed checklist, a problem, or
/// each field's error beside it; the form comes back as it was sent.
fn change_refused(
    err: DomainError,
    form: WizardForm,
) -> Result<(ChangeForm, StatusCode), PageError> {
    Ok(match Refusal::of(err)? {
        Refusal::Checks(checklist) => (
            ChangeForm {
                checklist: Some(checklist),
                problem: Some(NOT_REPLACED.into()),
                form,
                ..ChangeForm::default()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Refusal::Message { status, text } => (
            ChangeForm {
                problem: Some(text),
                form,
                ..ChangeForm::default()
            },
            status,
        ),
        Refusal::Fields { status, errors } => (
            ChangeForm {
                errors,
                form,
                ..ChangeForm::default()
            },
            status,
        ),
    })
}

/// Re-wrap under the current version.
pub async fn rewrap(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, PageError> {
    let (project_id, key_id) = path.into_inner();
    match state
        .console
        .keys()
        .rewrap_key(&caller.0, project_id, key_id)
        .await
    {
        Ok(_) => Ok(see_other(&format!(
            "/projects/{project_id}/encryption-keys/{key_id}?changed=rewrap#change"
        ))),
        Err(err) => {
            let (change_form, status) = change_refused(err, WizardForm::default())?;
            key_page(
                &state.console,
                &caller.0,
                project_id,
                key_id,
                None,
                change_form,
                status,
            )
            .await
        }
    }
}
