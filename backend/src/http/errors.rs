//! How failures reach clients.
//!
//! Policy: the API answers with `application/problem+json` (RFC 9457) whose `type` is stable
//! per rule (`https://cmek-console.dev/rules/<slug>`) or per kind of problem
//! (`https://cmek-console.dev/problems/<slug>`), and names the offending fields. Pages answer
//! with HTML: a redirect to sign-in when signed out, a 404 page with status 404, and so on.
//! Unexpected errors are opaque to clients (a request id in `x-request-id` to quote) and
//! logged with their full cause; internal error text never reaches a response.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::ports::StoreError;
use crate::domain::{DomainError, FieldError};
use crate::http::problems::{ProblemKind, rule_doc};
use crate::http::shared::error_page::error_page;
use crate::http::wire;

/// What a 503 tells clients to wait before trying again.
const RETRY_AFTER_SECONDS: u64 = 5;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem or the rule that refused the request.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The fields at fault, when the request body or query was refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<wire::FieldError>,
    /// The checklist of Test Encryption Key, when the key failed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<wire::Checklist>,
    /// The regions whose data key the KMS refused, each with its key and KMS error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<wire::RegionFailure>,
    /// Seconds to wait before asking again (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, kind: ProblemKind, detail: impl Into<String>) -> Self {
        let doc = kind.doc();
        Self {
            kind: doc.type_uri(),
            title: doc.title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            checks: None,
            failures: Vec::new(),
            retry_after: None,
        }
    }

    fn rule(status: StatusCode, rule: crate::domain::Rule, detail: String) -> Self {
        let doc = rule_doc(rule);
        Self {
            kind: doc.type_uri(),
            title: doc.title.into(),
            ..Self::new(status, ProblemKind::Validation, detail)
        }
    }

    fn with_fields(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors.into_iter().map(wire::FieldError::from).collect();
        self
    }
}

/// Errors of JSON endpoints.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The body or query could not be read as the endpoint expects.
    #[error("malformed request: {detail}")]
    Malformed {
        detail: String,
        field: Option<String>,
    },
    #[error("request body too large")]
    TooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("cross-site request refused")]
    CrossSite,
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("request headers too large")]
    HeadersTooLarge { limit: usize },
    #[error("request body not received in time")]
    BodyTimeout,
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::Domain(err) => domain_problem(err),
            ApiError::Malformed { detail, field } => {
                let problem = Problem::new(S::BAD_REQUEST, ProblemKind::MalformedRequest, detail);
                match field {
                    Some(field) => problem.with_fields(vec![FieldError::new(field, detail)]),
                    None => problem,
                }
            }
            ApiError::TooLarge { limit } => Problem::new(
                S::PAYLOAD_TOO_LARGE,
                ProblemKind::PayloadTooLarge,
                format!("The request body must be at most {limit} bytes."),
            ),
            ApiError::UnsupportedMediaType => Problem::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                ProblemKind::UnsupportedMediaType,
                "Send the request body as application/json.",
            ),
            ApiError::CrossSite => cross_site_problem(),
            ApiError::HeadersTooLarge { limit } => Problem::new(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ProblemKind::HeadersTooLarge,
                format!("The request's headers must be at most {limit} bytes in all."),
            ),
            ApiError::BodyTimeout => Problem::new(
                S::REQUEST_TIMEOUT,
                ProblemKind::RequestTimeout,
                "The request body did not arrive in time; send it again.",
            ),
            ApiError::MethodNotAllowed { allow } => Problem::new(
                S::METHOD_NOT_ALLOWED,
                ProblemKind::MethodNotAllowed,
                format!("This resource answers {allow}."),
            ),
        }
    }
}

pub fn cross_site_problem() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        ProblemKind::CrossSiteRequest,
        "A request authenticated by a browser session must come from the console's own pages \
         (its Origin header must match); scripts should use an API key.",
    )
}

fn domain_problem(err: &DomainError) -> Problem {
    use StatusCode as S;
    match err {
        DomainError::Invalid(fields) => {
            let detail = fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.reason))
                .collect::<Vec<_>>()
                .join("; ");
            Problem::new(S::UNPROCESSABLE_ENTITY, ProblemKind::Validation, detail)
                .with_fields(fields.clone())
        }
        DomainError::Unauthenticated => Problem::new(
            S::UNAUTHORIZED,
            ProblemKind::Unauthenticated,
            "Send a valid API key as `Authorization: Bearer <key>`, or sign in.",
        ),
        DomainError::Forbidden { rule, detail } => {
            Problem::rule(S::FORBIDDEN, *rule, detail.clone())
        }
        DomainError::NotFound(what) => Problem::new(
            S::NOT_FOUND,
            ProblemKind::NotFound,
            format!("No such {what} in your organization."),
        ),
        DomainError::Conflict {
            rule,
            field,
            detail,
        } => {
            let problem = Problem::rule(S::CONFLICT, *rule, detail.clone());
            match field {
                Some(field) => problem.with_fields(vec![FieldError::new(*field, detail.clone())]),
                None => problem,
            }
        }
        DomainError::ChecksFailed(checklist) => {
            let failed = checklist.first_failure();
            let detail = match failed {
                Some(c) => format!(
                    "The key failed \"{}\": {}",
                    c.title,
                    c.fix.as_deref().unwrap_or(&c.detail)
                ),
                None => "The key failed a required check.".into(),
            };
            Problem {
                checks: Some(checklist.clone().into()),
                ..Problem::new(S::UNPROCESSABLE_ENTITY, ProblemKind::KeyTestFailed, detail)
            }
        }
        DomainError::Refused {
            rule,
            field,
            detail,
        } => Problem::rule(S::UNPROCESSABLE_ENTITY, *rule, detail.clone())
            .with_fields(vec![FieldError::new(*field, detail.clone())]),
        DomainError::KeyUnusable { action, failures } => {
            let availability = failures
                .iter()
                .all(|f| crate::domain::keys::KeyStatus::Unreachable == f.error.key_status());
            let status = if availability {
                S::SERVICE_UNAVAILABLE
            } else {
                S::CONFLICT
            };
            let detail = format!(
                "Could not {action}: {}.",
                crate::domain::clusters::describe_failures(failures)
            );
            Problem {
                failures: failures
                    .iter()
                    .cloned()
                    .map(wire::RegionFailure::from)
                    .collect(),
                ..Problem::new(status, ProblemKind::KmsKeyUnusable, detail)
            }
        }
        DomainError::Integrity(_) => Problem::new(
            S::BAD_GATEWAY,
            ProblemKind::ObjectIntegrity,
            "The stored copy was altered, truncated or moved, so it does not authenticate under \
             its data key; nothing of it was returned. Restore it from a backup.",
        ),
        DomainError::Storage(_) => Problem::new(
            S::SERVICE_UNAVAILABLE,
            ProblemKind::StorageUnavailable,
            format!(
                "The console cannot reach its object storage right now. Try again in \
                 {RETRY_AFTER_SECONDS} seconds."
            ),
        ),
        DomainError::Body(body) => {
            use crate::domain::clusters::BodyError as B;
            match body {
                B::TooLarge => Problem::new(
                    S::PAYLOAD_TOO_LARGE,
                    ProblemKind::PayloadTooLarge,
                    format!(
                        "An object may be at most {} bytes.",
                        crate::domain::clusters::MAX_OBJECT_BYTES
                    ),
                ),
                B::TimedOut => Problem::new(
                    S::REQUEST_TIMEOUT,
                    ProblemKind::RequestTimeout,
                    "The request body arrived too slowly; send it again.",
                ),
                B::Broken => Problem::new(
                    S::BAD_REQUEST,
                    ProblemKind::MalformedRequest,
                    "The request body could not be read to its end.",
                ),
            }
        }
        DomainError::TooManyRequests {
            detail,
            retry_after,
        } => Problem {
            retry_after: Some(retry_after.as_secs().max(1)),
            ..Problem::new(
                S::TOO_MANY_REQUESTS,
                ProblemKind::TooManyRequests,
                detail.clone(),
            )
        },
        DomainError::Overloaded {
            detail,
            retry_after,
        } => Problem {
            retry_after: Some(retry_after.as_secs().max(1)),
            ..Problem::new(
                S::SERVICE_UNAVAILABLE,
                ProblemKind::Overloaded,
                detail.clone(),
            )
        },
        DomainError::Store(StoreError::Damaged(_)) => Problem::new(
            S::SERVICE_UNAVAILABLE,
            ProblemKind::DatabaseDamaged,
            "The console found its database file damaged and stopped changing it; its operator \
             has to restore it. Nothing was changed by this request.",
        ),
        DomainError::Store(StoreError::Unavailable(_) | StoreError::Contention(_)) => Problem::new(
            S::SERVICE_UNAVAILABLE,
            ProblemKind::Unavailable,
            format!(
                "The console cannot reach its database right now. Try again in \
                     {RETRY_AFTER_SECONDS} seconds."
            ),
        ),
        DomainError::Store(_) => Problem::new(
            S::INTERNAL_SERVER_ERROR,
            ProblemKind::Internal,
            "Something went wrong on our side; quote the x-request-id response header when \
             reporting it.",
        ),
    }
}

fn log_if_unexpected(err: &dyn std::error::Error, status: StatusCode) {
    if status.is_server_error() {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "request failed");
    }
}

pub fn problem_response(problem: &Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"cmek-console\""));
    }
    if let Some(seconds) = problem.retry_after {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
    }
    response.json(problem)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        log_if_unexpected(self, self.status_code());
        problem_response(&self.problem())
    }
}

/// Errors of HTML pages. Forms handle their own validation errors (re-rendered inline);
/// what reaches here is rendered as a page, or a redirect to sign-in.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("template: {0}")]
    Template(#[from] askama::Error),
    #[error("cross-site request refused")]
    CrossSite,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body too large")]
    TooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("request body not received in time")]
    BodyTimeout,
    /// Something of ours failed (a header that would not encode, say): logged, opaque.
    #[error("internal: {0}")]
    Internal(String),
}

impl PageError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    /// The title and sentence a person sees for this error (never internal text).
    pub fn explained(&self) -> (String, String) {
        match self {
            PageError::Domain(err) => {
                let problem = domain_problem(err);
                (problem.title, problem.detail)
            }
            PageError::CrossSite => (
                "Cross-site request refused".to_owned(),
                cross_site_problem().detail,
            ),
            PageError::BadRequest(detail) => ("Bad request".to_owned(), detail.clone()),
            PageError::TooLarge => (
                "Too large".to_owned(),
                "The form is larger than the console accepts.".to_owned(),
            ),
            PageError::BodyTimeout => (
                "Too slow".to_owned(),
                "The form did not arrive in time; send it again.".to_owned(),
            ),
            PageError::HeadersTooLarge => (
                "Request headers too large".to_owned(),
                "The request carried more headers than the console accepts; clear this site's \
             cookies and try again."
                    .to_owned(),
            ),
            PageError::UnsupportedMediaType => (
                "Unsupported form".to_owned(),
                "Send the form as the console's pages do (application/x-www-form-urlencoded)."
                    .to_owned(),
            ),
            PageError::Template(_) | PageError::Internal(_) => (
                "Internal error".to_owned(),
                "Something went wrong on our side.".to_owned(),
            ),
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::Domain(DomainError::Unauthenticated) => StatusCode::SEE_OTHER,
            PageError::Domain(err) => StatusCode::from_u16(domain_problem(err).status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            PageError::Template(_) | PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PageError::CrossSite => StatusCode::FORBIDDEN,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PageError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            PageError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        log_if_unexpected(self, status);
        if status == StatusCode::SEE_OTHER {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/sign-in"))
                .finish();
        }
        let (title, detail) = self.explained();
        let body = error_page(status.as_u16(), &title, &detail);
        let mut response = HttpResponse::build(status);
        if let PageError::Domain(err) = self
            && let Some(seconds) = domain_problem(err).retry_after
        {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.content_type(ContentType::html()).body(body)
    }
}
