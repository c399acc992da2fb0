//! Every route of the console, grouped by who may call it. The API's routes are a table so
//! tests can walk it (the OpenAPI check, and cross-organization checks later).

use actix_web::error::UrlencodedError;
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, ResponseError, Route, web};

use crate::domain::DomainError;
use crate::http::api::{
    audit, backups, clusters, key_changes, key_status, keys, local_kms, me, objects, openapi,
    policy_check, projects, webhooks,
};
use crate::http::errors::{ApiError, PageError};
use crate::http::json::MAX_BODY_BYTES;
use crate::http::{ops, pages};

/// Who may call a route. Finer rules (R2: owners only) are the domain's, per use case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any member of the organization, by API key or session.
    SignedIn,
}

pub struct ApiRoute {
    pub method: Method,
    /// As in the OpenAPI document: `{name}` for path parameters.
    pub path: &'static str,
    pub access: Access,
    pub route: Route,
}

fn api(method: Method, path: &'static str, access: Access, route: Route) -> ApiRoute {
    ApiRoute {
        method,
        path,
        access,
        route,
    }
}

/// One line per route, kept as a table on purpose.
#[rustfmt::skip]
pub fn api_routes() -> Vec<ApiRoute> {
    use Access::*;
    use Method as M;
    vec![
        api(M::GET, "/api/v1/openapi.json", Public, web::get().to(openapi::openapi_json)),
        api(M::GET, "/api/v1/me", SignedIn, web::get().to(me::me)),
        api(M::POST, "/api/v1/projects", SignedIn, web::post().to(projects::create)),
        api(M::GET, "/api/v1/projects", SignedIn, web::get().to(projects::list)),
        api(M::GET, "/api/v1/projects/{project_id}", SignedIn, web::get().to(projects::read)),
        api(M::PATCH, "/api/v1/projects/{project_id}", SignedIn, web::patch().to(projects::update)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys/aws-trust-policy", SignedIn, web::get().to(keys::aws_trust_policy)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys/azure-setup", SignedIn, web::get().to(keys::azure_setup)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys/gcp-setup", SignedIn, web::get().to(keys::gcp_setup)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys/aws-policy-check", SignedIn, web::post().to(policy_check::check)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys/test", SignedIn, web::post().to(keys::test)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys", SignedIn, web::post().to(keys::create)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys", SignedIn, web::get().to(keys::list)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys/{key_id}", SignedIn, web::get().to(keys::read)),
        api(M::DELETE, "/api/v1/projects/{project_id}/encryption-keys/{key_id}", SignedIn, web::delete().to(keys::delete)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys/{key_id}/check", SignedIn, web::post().to(keys::check)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys/{key_id}/history", SignedIn, web::get().to(keys::history)),
        api(M::GET, "/api/v1/projects/{project_id}/encryption-keys/{key_id}/impact", SignedIn, web::get().to(keys::impact)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys/{key_id}/replace", SignedIn, web::post().to(key_changes::replace)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys/{key_id}/rewrap", SignedIn, web::post().to(key_changes::rewrap)),
        api(M::POST, "/api/v1/projects/{project_id}/encryption-keys/{key_id}/repin", SignedIn, web::post().to(key_changes::repin)),
        api(M::GET, "/api/v1beta/projects/{project_id}/aws-cmek", SignedIn, web::get().to(keys::v1beta_list)),
        api(M::POST, "/api/v1beta/projects/{project_id}/aws-cmek", SignedIn, web::post().to(keys::v1beta_create)),
        api(M::POST, "/api/v1/projects/{project_id}/clusters", SignedIn, web::post().to(clusters::create)),
        api(M::GET, "/api/v1/projects/{project_id}/clusters", SignedIn, web::get().to(clusters::list)),
        api(M::GET, "/api/v1/clusters/{cluster_id}", SignedIn, web::get().to(clusters::read)),
        api(M::DELETE, "/api/v1/clusters/{cluster_id}", SignedIn, web::delete().to(clusters::delete)),
        api(M::POST, "/api/v1/clusters/{cluster_id}/pause", SignedIn, web::post().to(clusters::pause)),
        api(M::POST, "/api/v1/clusters/{cluster_id}/resume", SignedIn, web::post().to(clusters::resume)),
        api(M::GET, "/api/v1/clusters/{cluster_id}/objects", SignedIn, web::get().to(objects::list)),
        api(M::PUT, "/api/v1/clusters/{cluster_id}/objects/{name}", SignedIn, web::put().to(objects::put)),
        api(M::GET, "/api/v1/clusters/{cluster_id}/objects/{name}", SignedIn, web::get().to(objects::get)),
        api(M::DELETE, "/api/v1/clusters/{cluster_id}/objects/{name}", SignedIn, web::delete().to(objects::delete)),
        api(M::POST, "/api/v1/clusters/{cluster_id}/backups", SignedIn, web::post().to(backups::create)),
        api(M::GET, "/api/v1/clusters/{cluster_id}/backups", SignedIn, web::get().to(backups::list)),
        api(M::GET, "/api/v1/projects/{project_id}/backups", SignedIn, web::get().to(backups::project_list)),
        api(M::GET, "/api/v1/backups/{backup_id}", SignedIn, web::get().to(backups::read)),
        api(M::DELETE, "/api/v1/backups/{backup_id}", SignedIn, web::delete().to(backups::delete)),
        api(M::POST, "/api/v1/backups/{backup_id}/restore", SignedIn, web::post().to(backups::restore)),
        api(M::GET, "/api/v1/key-status", SignedIn, web::get().to(key_status::list)),
        api(M::GET, "/api/v1/audit-events", SignedIn, web::get().to(audit::list)),
        api(M::GET, "/api/v1/audit/signing-keys", SignedIn, web::get().to(audit::signing_keys)),
        api(M::POST, "/api/v1/webhooks", SignedIn, web::post().to(webhooks::create)),
        api(M::GET, "/api/v1/webhooks", SignedIn, web::get().to(webhooks::list)),
        api(M::GET, "/api/v1/webhooks/{webhook_id}", SignedIn, web::get().to(webhooks::read)),
        api(M::DELETE, "/api/v1/webhooks/{webhook_id}", SignedIn, web::delete().to(webhooks::delete)),
        api(M::GET, "/api/v1/webhooks/{webhook_id}/deliveries", SignedIn, web::get().to(webhooks::deliveries)),
        api(M::POST, "/api/v1/webhooks/{webhook_id}/test", SignedIn, web::post().to(webhooks::test)),
        api(M::GET, "/api/v1/local-kms/keys", SignedIn, web::get().to(local_kms::list)),
        api(M::POST, "/api/v1/local-kms/keys", SignedIn, web::post().to(local_kms::create)),
        api(M::GET, "/api/v1/local-kms/keys/{local_key_id}", SignedIn, web::get().to(local_kms::read)),
        api(M::POST, "/api/v1/local-kms/keys/{local_key_id}/disable", SignedIn, web::post().to(local_kms::disable)),
        api(M::POST, "/api/v1/local-kms/keys/{local_key_id}/enable", SignedIn, web::post().to(local_kms::enable)),
        api(M::POST, "/api/v1/local-kms/keys/{local_key_id}/rotate", SignedIn, web::post().to(local_kms::rotate)),
    ]
}

/// Unknown ids and malformed path parameters are both "not found".
fn api_path_error(_: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::Domain(DomainError::NotFound("resource")).into()
}

fn page_path_error(_: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    PageError::Domain(DomainError::NotFound("page")).into()
}

fn api_query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::Malformed {
        detail: format!("The query string could not be read: {err}"),
        field: None,
    }
    .into()
}

/// A known API path asked with a method it does not answer: 405 with `Allow`, as a problem.
fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed {
        allow: allow.to_owned(),
    }
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// Forms that cannot be read (wrong content type, too large, a field of the wrong shape) get
/// an HTML page saying so, like every other page error.
fn page_form_error(err: UrlencodedError, _: &HttpRequest) -> actix_web::Error {
    match err {
        UrlencodedError::Overflow { .. } | UrlencodedError::UnknownLength => PageError::TooLarge,
        UrlencodedError::ContentType => PageError::UnsupportedMediaType,
        UrlencodedError::Payload(actix_web::error::PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            PageError::BodyTimeout
        }
        _ => PageError::BadRequest(
            "The form could not be read. Reload the page and try again.".into(),
        ),
    }
    .into()
}

fn page_query_error(_: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    PageError::BadRequest("The address has a query string this page cannot read.".into()).into()
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let err = DomainError::NotFound("resource");
    if req.path().starts_with("/api/") {
        ApiError::Domain(err).error_response()
    } else {
        PageError::Domain(DomainError::NotFound("page")).error_response()
    }
}

/// The router's pattern for a documented path: an object's `{name}` takes the rest of the
/// path, slashes included.
fn actix_pattern(path: &str) -> String {
    match path.strip_suffix("/objects/{name}") {
        Some(stem) => format!("{stem}/objects/{{name:.+}}"),
        None => path.to_owned(),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Operations: public, for load balancers and Prometheus.
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));

    // The JSON API: API key or session; role checks happen in the domain.
    let mut scope = web::scope("/api")
        .app_data(web::PathConfig::default().error_handler(api_path_error))
        .app_data(web::QueryConfig::default().error_handler(api_query_error))
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .default_service(web::to(not_found))
        // The reference page is HTML, not an operation: outside the API's route table (and so
        // outside the OpenAPI document that table must match).
        .route("/docs", web::get().to(pages::assets::api_docs));
    let mut routes = api_routes();
    while !routes.is_empty() {
        let path = routes[0].path;
        let mut resource = web::resource(actix_pattern(&path["/api".len()..]));
        let (same, rest): (Vec<_>, Vec<_>) = routes.into_iter().partition(|r| r.path == path);
        let allow = same
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for r in same {
            resource = resource.route(r.route);
        }
        resource = resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        }));
        scope = scope.service(resource);
        routes = rest;
    }
    cfg.service(scope);

    // Pages: sign-in is public; everything else needs a session (PageCaller).
    cfg.service(
        web::scope("")
            .app_data(web::PathConfig::default().error_handler(page_path_error))
            .app_data(
                web::FormConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(page_form_error),
            )
            .app_data(web::QueryConfig::default().error_handler(page_query_error))
            .configure(pages::configure)
            .default_service(web::to(not_found)),
    );
}
