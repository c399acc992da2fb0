//! The OpenAPI document, generated from the handlers' annotations. A test checks that every
//! route of `routes::api_routes` appears in it, so the two cannot drift apart.

use actix_web::HttpResponse;
use serde_json::{Value, json};

mod complete;
mod fields;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::api::{
    audit, backups, clusters, key_changes, key_status, keys, local_kms, me, objects, policy_check,
    projects, webhooks,
};
use crate::http::errors::Problem;
use crate::http::wire::{AuditEvent, FieldError, Outcome, RevocationPolicy, Role};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cmek-console API",
        version = "1.1.0",
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
        keys::gcp_setup,
        policy_check::check,
        keys::test,
        keys::create,
        keys::list,
        keys::read,
        keys::delete,
        keys::check,
        keys::history,
        keys::impact,
        key_changes::replace,
        key_changes::rewrap,
        key_changes::repin,
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
        audit::signing_keys,
        webhooks::create,
        webhooks::list,
        webhooks::read,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::test,
        local_kms::list,
        local_kms::create,
        local_kms::read,
        local_kms::disable,
        local_kms::enable,
        local_kms::rotate,
    ),
    components(schemas(
        Problem, FieldError, Role, RevocationPolicy, AuditEvent, Outcome, crate::http::shared::query::ExportFormat
    )),
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
        (name = "local KMS", description = "The built-in KMS for development and demos (refused in production, R3): keys to try CMEK with, disable to play a revocation"),
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
    get, path = "/api/v1/openapi.json", operation_id = "getOpenApiDocument", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(served().clone())
}

/// The document as served, built once.
fn served() -> &'static bytes::Bytes {
    static SERVED: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    SERVED.get_or_init(|| {
        // A `Value` always serializes; the contract tests read this very document.
        serde_json::to_vec(&document()).unwrap_or_default().into()
    })
}

/// The OpenAPI document: the handlers' annotations, completed with what every operation of a
/// shape can answer (so no handler can forget a status), the values the server accepts for
/// parameters whose lists live in the domain, and the links that let tools chain a create to
/// the operations that use the id it returns.
pub fn document() -> Value {
    // utoipa's document is plain data: it always converts (the contract tests read the result).
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                complete::complete_responses(method, operation);
                fields::refine_parameters(operation);
            }
        }
    }
    complete::add_links(&mut doc);
    fields::refine_request_fields(&mut doc);
    doc["components"]["schemas"]["Problem"]["description"] = json!(
        "An error, as RFC 9457 describes (`application/problem+json`). `type` names the kind of \
         problem or the rule that refused the request; every type is documented at `/problems` \
         on the console (and its URI's path, `/problems/<slug>` or `/rules/<slug>`, opens \
         that type's page there)."
    );
    doc
}
