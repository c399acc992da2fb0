//! Check my key policy: the policy doctor as a page. Paste the key policy (or the role's two
//! policies), read what is missing or wrong, copy the JSON to add. A plain form; nothing is
//! sent to AWS.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::keys::policy_doctor::{Diagnosis, PolicyCheckInput, Severity};
use crate::domain::keys::region::AWS_REGIONS;
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, ProjectView, Refusal, html_status};

#[derive(Deserialize, Default)]
pub struct PolicyForm {
    pub region: Option<String>,
    pub mode: Option<String>,
    pub policy: Option<String>,
    pub permission_policy: Option<String>,
}

/// A finding as the page shows it.
pub struct FindingView {
    pub error: bool,
    pub document: &'static str,
    pub problem: &'static str,
    pub statement: String,
    pub detail: String,
    /// The JSON to add, pretty-printed.
    pub add: String,
}

#[derive(Template)]
#[template(path = "keys/policy_check.html")]
struct PolicyCheckPage {
    chrome: Chrome,
    project: ProjectView,
    regions: &'static [(&'static str, &'static str)],
    form: PolicyForm,
    errors: FormErrors,
    problem: Option<String>,
    /// After a check: whether it found no error, and what it found.
    result: Option<(bool, Vec<FindingView>)>,
}

impl PolicyCheckPage {
    fn value<'a>(&'a self, field: &str) -> &'a str {
        let value = match field {
            "region" => &self.form.region,
            "mode" => &self.form.mode,
            "policy" => &self.form.policy,
            _ => &self.form.permission_policy,
        };
        value.as_deref().unwrap_or("")
    }
}

fn views(d: Diagnosis) -> (bool, Vec<FindingView>) {
    let findings = d
        .findings
        .into_iter()
        .map(|f| FindingView {
            error: f.severity == Severity::Error,
            document: match f.document {
                crate::domain::keys::policy_doctor::Document::KeyPolicy => "Key policy",
                crate::domain::keys::policy_doctor::Document::TrustPolicy => "Role trust policy",
                crate::domain::keys::policy_doctor::Document::PermissionPolicy => {
                    "Role permission policy"
                }
            },
            problem: f.problem,
            statement: f.statement.unwrap_or_default(),
            detail: f.detail,
            add: f
                .add
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or_default(),
        })
        .collect();
    (d.ok, findings)
}

async fn render(
    state: &AppState,
    caller: &crate::domain::identity::Caller,
    project_id: Uuid,
    form: PolicyForm,
    checked: bool,
) -> Result<HttpResponse, PageError> {
    let project = state.console.projects().project(caller, project_id).await?;
    let chrome = Chrome::load(&state.console, caller, "projects").await?;
    let mut page = PolicyCheckPage {
        chrome,
        project: project.into(),
        regions: AWS_REGIONS,
        form,
        errors: FormErrors::default(),
        problem: None,
        result: None,
    };
    let mut status = StatusCode::OK;
    if checked {
        let input = PolicyCheckInput {
            region: page.form.region.clone().unwrap_or_default(),
            mode: page.form.mode.clone(),
            policy: page.form.policy.clone().unwrap_or_default(),
            permission_policy: page.form.permission_policy.clone(),
        };
        match state
            .console
            .keys()
            .aws_policy_check(caller, project_id, &input)
            .await
        {
            Ok(diagnosis) => page.result = Some(views(diagnosis)),
            Err(err) => match Refusal::of(err)? {
                Refusal::Fields { status: s, errors } => {
                    page.errors = errors;
                    status = s;
                }
                Refusal::Message { status: s, text } => {
                    page.problem = Some(text);
                    status = s;
                }
                Refusal::Checks(_) => {}
            },
        }
    }
    html_status(status, &page)
}

pub async fn form(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    query: web::Query<PolicyForm>,
) -> Result<HttpResponse, PageError> {
    render(
        &state,
        &caller.0,
        path.into_inner(),
        query.into_inner(),
        false,
    )
    .await
}

pub async fn check(
    state: web::Data<AppState>,
    caller: PageCaller,
    path: web::Path<Uuid>,
    form: web::Form<PolicyForm>,
) -> Result<HttpResponse, PageError> {
    render(
        &state,
        &caller.0,
        path.into_inner(),
        form.into_inner(),
        true,
    )
    .await
}
