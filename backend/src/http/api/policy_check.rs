//! `POST /api/v1/projects/{project_id}/encryption-keys/aws-policy-check`: the policy doctor.
//! A customer pastes their key policy (or their role's trust and permission policies) and
//! reads what is missing or wrong for this project's region and access mode.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::keys::policy_doctor::{self, Diagnosis, Document, Finding, Severity};
use crate::http::AppState;
use crate::http::auth::ApiCaller;
use crate::http::errors::{ApiError, Problem};
use crate::http::json::ApiJson;
use crate::http::wire::AccessMode;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyCheckBody {
    /// The AWS region of the key, or `*` for a policy that serves every region.
    pub region: String,
    /// `key_policy` (default) or `role`.
    #[schema(value_type = Option<AccessMode>)]
    pub mode: Option<String>,
    /// The key policy (key policy mode) or the role's trust policy (role mode), as JSON text.
    pub policy: String,
    /// Role mode: the role's permission policy, as JSON text.
    pub permission_policy: Option<String>,
}

/// Which pasted document a finding is about.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyDocumentKind {
    KeyPolicy,
    TrustPolicy,
    PermissionPolicy,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingSeverity {
    /// The console cannot use the key (or role) as pasted.
    Error,
    /// It works, but is riskier than it should be, or could not be judged.
    Warning,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyFindingBody {
    pub document: PolicyDocumentKind,
    pub severity: FindingSeverity,
    /// `invalid_json`, `no_statements`, `missing_statement`, `missing_action`,
    /// `wrong_principal`, `wrong_region`, `wrong_account`, `missing_condition`,
    /// `missing_external_id`, `wrong_external_id`, `deny_statement`, `wrong_resource`,
    /// `unchecked`.
    pub problem: String,
    /// The statement's `Sid` (or position), when the finding is about one.
    pub statement: Option<String>,
    pub detail: String,
    /// The JSON statement to add, or to put in place of the wrong one.
    #[schema(value_type = Option<Object>)]
    pub add: Option<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyCheckResult {
    /// No error: as far as the policy can tell, the console can use the key.
    pub ok: bool,
    pub findings: Vec<PolicyFindingBody>,
}

impl From<Finding> for PolicyFindingBody {
    fn from(f: Finding) -> Self {
        Self {
            document: match f.document {
                Document::KeyPolicy => PolicyDocumentKind::KeyPolicy,
                Document::TrustPolicy => PolicyDocumentKind::TrustPolicy,
                Document::PermissionPolicy => PolicyDocumentKind::PermissionPolicy,
            },
            severity: match f.severity {
                Severity::Error => FindingSeverity::Error,
                Severity::Warning => FindingSeverity::Warning,
            },
            problem: f.problem.to_owned(),
            statement: f.statement,
            detail: f.detail,
            add: f.add,
        }
    }
}

impl From<Diagnosis> for PolicyCheckResult {
    fn from(d: Diagnosis) -> Self {
        Self {
            ok: d.ok,
            findings: d.findings.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<PolicyCheckBody> for policy_doctor::PolicyCheckInput {
    fn from(b: PolicyCheckBody) -> Self {
        Self {
            region: b.region,
            mode: b.mode,
            policy: b.policy,
            permission_policy: b.permission_policy,
        }
    }
}

#[utoipa::path(
    post, path = "/api/v1/projects/{project_id}/encryption-keys/aws-policy-check", operation_id = "checkAwsKeyPolicy", tag = "encryption keys",
    params(("project_id" = Uuid, Path)),
    request_body = PolicyCheckBody,
    responses(
        (status = 200, body = PolicyCheckResult, description = "What is missing or wrong in the pasted policy for this region and mode, each with the JSON to add. Nothing is sent to AWS."),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not a CMEK project"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("session" = []))
)]
pub async fn check(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<Uuid>,
    body: ApiJson<PolicyCheckBody>,
) -> Result<HttpResponse, ApiError> {
    let input = body.0.into();
    let diagnosis = state
        .console
        .keys()
        .aws_policy_check(&caller.0, path.into_inner(), &input)
        .await?;
    Ok(HttpResponse::Ok().json(PolicyCheckResult::from(diagnosis)))
}
