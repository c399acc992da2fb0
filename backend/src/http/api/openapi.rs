//! The OpenAPI document, generated from the handlers' annotations. A test checks that every
//! route of `routes::api_routes` appears in it, so the two cannot drift apart.

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::api::wire::{AuditEvent, FieldError, Outcome, RevocationPolicy, Role};
use crate::http::api::{
    audit, backups, clusters, key_status, keys, me, objects, projects, webhooks,
};
use crate::http::errors::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cmek-console API",
        version = "1",
        description = "Customer-managed encryption keys for your projects. Errors are \
            application/problem+json (RFC 9457) with a stable `type` per rule."
    ),
    paths(
        openapi_json,
        me::me,
        projects::create,
        projects::list,
        projects::read,
        projects::update,
        keys::aws_trust_policy,
        keys::azure_setup,
        keys::test,
        keys::create,
        keys::list,
        keys::read,
        keys::delete,
        keys::check,
        keys::history,
        keys::v1beta_list,
        keys::v1beta_create,
        clusters::create,
        clusters::list,
        clusters::read,
        clusters::delete,
        clusters::pause,
        clusters::resume,
        objects::list,
        objects::put,
        objects::get,
        objects::delete,
        backups::create,
        backups::list,
        backups::project_list,
        backups::read,
        backups::delete,
        backups::restore,
        key_status::list,
        audit::list,
        webhooks::create,
        webhooks::list,
        webhooks::read,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::test,
    ),
    components(schemas(Problem, FieldError, Role, RevocationPolicy, AuditEvent, Outcome)),
    modifiers(&Security),
    tags(
        (name = "identity", description = "Who is calling"),
        (name = "projects", description = "Projects; CMEK is chosen at creation (R1)"),
        (name = "encryption keys", description = "Encryption Access: customer-managed keys (R3, R4, R12)"),
        (name = "clusters", description = "Clusters whose data is sealed under a data key per region, wrapped by the region's key (R5-R8, R10, R11)"),
        (name = "cluster data", description = "A cluster's objects, stored sealed and streamed"),
        (name = "backups", description = "Backups under their own data key, and restore into a new cluster"),
        (name = "TiDB Cloud compatible", description = "The v1beta shapes existing scripts use"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "alerts", description = "Webhooks signed as Standard Webhooks specifies: key status changes, clusters made inaccessible or that will not resume, failed resumes"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `cmek-console api-key create` or the API Keys page",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::http::auth::SESSION_COOKIE,
            ))),
        );
    }
}

#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
