//! The OpenAPI document, generated from the handlers' annotations. A test checks that every
//! route of `routes::api_routes` appears in it, so the two cannot drift apart.

use actix_web::HttpResponse;
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::domain::keys::region::{AWS_REGIONS, AZURE_REGIONS};
use crate::domain::page::PAGE_TOKEN_PATTERN;

use crate::http::api::wire::{AuditEvent, FieldError, Outcome, RevocationPolicy, Role};
use crate::http::api::{
    audit, backups, clusters, key_status, keys, local_kms, me, objects, projects, webhooks,
};
use crate::http::errors::Problem;

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
        local_kms::list,
        local_kms::create,
        local_kms::disable,
        local_kms::enable,
        local_kms::rotate,
    ),
    components(schemas(
        Problem, FieldError, Role, RevocationPolicy, AuditEvent, Outcome, audit::ExportFormat
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
                complete_responses(method, operation);
                refine_parameters(operation);
            }
        }
    }
    add_links(&mut doc);
    refine_request_fields(&mut doc);
    doc["components"]["schemas"]["Problem"]["description"] = json!(
        "An error, as RFC 9457 describes (`application/problem+json`). `type` names the kind of \
         problem or the rule that refused the request; every type is documented at `/problems` \
         on the console (and its URI's path, `/problems/<slug>` or `/rules/<slug>`, opens \
         that type's page there)."
    );
    doc
}

/// Statuses an operation of a given shape can answer, whatever its handler says.
fn complete_responses(method: &str, operation: &mut Value) {
    let secured = operation["security"]
        .as_array()
        .is_some_and(|s| !s.is_empty());
    let in_of = |p: &Value| p["in"].as_str().map(str::to_owned);
    let parameters: Vec<String> = operation["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(in_of).collect())
        .unwrap_or_default();
    let json_body = operation["requestBody"]["content"]
        .get("application/json")
        .is_some();
    let stream_body = operation["requestBody"]["content"]
        .get("application/octet-stream")
        .is_some();
    let operation_id = operation["operationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut answers: Vec<(&str, &str)> = Vec::new();
    if secured {
        answers.push(("401", "Not signed in: no API key, an unknown or revoked one, or no session (problems/unauthenticated)"));
        if method != "get" {
            answers.push(("403", "Not allowed: the caller's role may not do this (rules/owner-only, rules/owners-and-auditors), or a request authenticated by a session cookie came from another site (problems/cross-site-request)"));
        }
    }
    let named_in_path = operation["parameters"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["in"] == "path" && p["schema"]["format"] != "uuid")
    });
    if named_in_path {
        answers.push(("422", "A path parameter that is not an id was refused, e.g. an object name (problems/validation)"));
    }
    if parameters.iter().any(|p| p == "path") {
        answers.push(("404", "No such resource in the caller's organization, or a path parameter that is not one (problems/not-found)"));
    }
    if parameters.iter().any(|p| p == "query") {
        answers.push((
            "400",
            "The query string cannot be read (problems/malformed-request)",
        ));
        answers.push((
            "422",
            "A query parameter was refused; `errors` names each one and why (problems/validation)",
        ));
    }
    if json_body {
        answers.push(("400", "The body is not JSON (problems/malformed-request)"));
        answers.push((
            "415",
            "The body is not sent as application/json (problems/unsupported-media-type)",
        ));
        answers.push(("422", "The body is not an object, a field is missing, unknown or of the wrong type, or a value was refused; `errors` names each field and why (problems/validation)"));
    }
    if json_body || stream_body {
        answers.push((
            "400",
            "The body could not be read to its end (problems/malformed-request)",
        ));
        answers.push((
            "408",
            "The body did not arrive in time (problems/request-timeout)",
        ));
        answers.push(("413", "The body is too large (problems/payload-too-large)"));
    }
    if RATE_LIMITED.contains(&operation_id.as_str()) {
        answers.push((
            "429",
            "Asked too often; wait the `Retry-After` seconds (problems/too-many-requests)",
        ));
    }
    if secured {
        answers.push(("503", "The console's database or storage is unavailable for a moment, or the console is busy; wait the `Retry-After` seconds (problems/unavailable, problems/storage-unavailable, problems/overloaded)"));
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, description) in answers {
        responses
            .entry(status)
            .or_insert_with(|| problem_response(description));
    }
    for (status, response) in responses.iter_mut() {
        if response["description"].as_str().is_some_and(str::is_empty) {
            response["description"] = json!(match status.as_str() {
                "201" => "Created",
                "202" => "Accepted",
                "204" => "Done; no content",
                _ => "OK",
            });
        }
    }
}

/// Operations that answer 429 beyond a per-caller or per-organization rate.
const RATE_LIMITED: &[&str] = &["checkEncryptionKey", "sendWebhookTestEvent"];

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": { "$ref": "#/components/schemas/Problem" }
            }
        }
    })
}

/// What the annotations cannot say: the values of parameters whose lists the domain keeps
/// (regions, the page token's form), that an optional query parameter sent empty is the same
/// as one left out (the server reads it so, for HTML forms' sake), and that streamed bodies
/// are bytes.
fn refine_parameters(operation: &mut Value) {
    let operation_id = operation["operationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(object) = operation.as_object_mut()
        && object.get("parameters").is_some_and(Value::is_null)
    {
        object.remove("parameters");
    }
    let binary = json!({ "type": "string", "format": "binary" });
    if let Some(content) = operation.pointer_mut("/requestBody/content/application~1octet-stream") {
        content["schema"] = binary.clone();
    }
    if let Some(responses) = operation["responses"].as_object_mut() {
        for response in responses.values_mut() {
            if let Some(content) = response.pointer_mut("/content/application~1octet-stream") {
                content["schema"] = binary.clone();
            }
        }
    }
    // `pointer_mut`, not indexing: indexing a missing key would add it as null.
    let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for parameter in parameters {
        if parameter["in"] == "query" && parameter["required"] != true {
            parameter["allowEmptyValue"] = json!(true);
        }
        match parameter["name"].as_str() {
            Some("page_token") => parameter["schema"]["pattern"] = json!(PAGE_TOKEN_PATTERN),
            Some("key_arn") => parameter["schema"]["pattern"] = json!(kms_key_arn()),
            Some("account_id") => parameter["schema"]["pattern"] = json!("^[0-9]{12}$"),
            Some("key_name_prefix") => {
                parameter["schema"]["pattern"] =
                    json!(trimmed(r"[A-Za-z0-9-]*[A-Za-z0-9][A-Za-z0-9-]*"))
            }
            Some("name") if parameter["in"] == "path" => {
                parameter["schema"]["pattern"] = json!(object_name());
                parameter["schema"]["maxLength"] = json!(1024);
            }
            _ => {}
        }
        if parameter["name"] != "region" {
            continue;
        }
        let regions: Vec<&str> = match operation_id.as_str() {
            "getAwsTrustPolicy" => std::iter::once("*")
                .chain(AWS_REGIONS.iter().map(|(code, _)| *code))
                .collect(),
            "getAzureSetup" => AZURE_REGIONS.iter().map(|(code, _)| *code).collect(),
            _ => continue,
        };
        parameter["schema"] = json!({ "type": "string", "enum": regions });
    }
}

/// What utoipa's attributes cannot say about request fields: region fields take the known
/// regions (AWS codes, Azure names; which list applies follows the body's `provider`, as the
/// field's description says), a cluster's regions are distinct, a webhook's URL is a URI.
fn refine_request_fields(doc: &mut Value) {
    let aws: Vec<&str> = AWS_REGIONS.iter().map(|(code, _)| *code).collect();
    let any: Vec<&str> = aws
        .iter()
        .copied()
        .chain(AZURE_REGIONS.iter().map(|(code, _)| *code))
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["KeyRequestInput"]["properties"]["region"]["enum"] = json!(any);
    schemas["CreateClusterBody"]["properties"]["regions"]["items"]["enum"] = json!(any);
    schemas["AwsCmekSpec"]["properties"]["region"]["enum"] = json!(aws);
    schemas["CreateClusterBody"]["properties"]["regions"]["uniqueItems"] = json!(true);
    // Rules between fields, as JSON Schema 2020-12 states them (OpenAPI 3.1): the regions
    // follow the provider, each provider needs its own fields, a revocation policy needs CMEK.
    let azure: Vec<&str> = AZURE_REGIONS.iter().map(|(code, _)| *code).collect();
    let is_azure = json!({ "properties": { "provider": { "enum": ["azure_key_vault", "azure"] } }, "required": ["provider"] });
    schemas["CreateClusterBody"]["allOf"] = json!([{
        "if": is_azure,
        "then": { "properties": { "regions": { "items": { "enum": azure } } } },
        "else": { "properties": { "regions": { "items": { "enum": aws } } } }
    }]);
    let provider_is =
        |p: &str| json!({ "properties": { "provider": { "const": p } }, "required": ["provider"] });
    schemas["KeyRequestInput"]["allOf"] = json!([
        {
            "if": provider_is("azure_key_vault"),
            "then": { "properties": { "region": { "enum": azure } }, "required": ["vault_name", "key_name"] },
            "else": { "properties": { "region": { "enum": aws } } }
        },
        { "if": provider_is("aws_kms"), "then": { "required": ["key_arn"] } },
        { "if": provider_is("local"), "then": { "required": ["key_id"] } },
        {
            "if": { "properties": { "access_mode": { "const": "role" } }, "required": ["access_mode"] },
            "then": { "required": ["role_arn"] }
        }
    ]);
    schemas["CreateProjectBody"]["allOf"] = json!([{
        "if": { "properties": { "cmek_enabled": { "const": false } }, "required": ["cmek_enabled"] },
        "then": { "properties": { "revocation_policy": { "type": "null" } } }
    }]);
    for (schema, field, pattern) in text_fields() {
        schemas[schema]["properties"][field]["pattern"] = json!(pattern);
    }
}

/// White space as the server's `str::trim` drops it around a field (Unicode White_Space).
const WS: &str = r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*";
/// Control characters (Unicode Cc), refused inside names.
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

/// `inner`, with the white space the server trims around it.
fn trimmed(inner: &str) -> String {
    format!("^{WS}(?:{inner}){WS}$")
}

/// A display name: at most `max` characters once trimmed, none of them a control character.
fn display_name(max: usize) -> String {
    trimmed(&format!(
        r"[^{CONTROL}\s](?:[^{CONTROL}]{{0,{}}}[^{CONTROL}\s])?",
        max - 2
    ))
}

/// A KMS key ARN the server parses: a known region in its own partition, a 12-digit account,
/// `key/` and a key id or multi-Region key id.
fn kms_key_arn() -> String {
    let in_partition = |partition: &str| -> String {
        let regions: Vec<&str> = AWS_REGIONS
            .iter()
            .map(|(code, _)| *code)
            .filter(|code| crate::domain::keys::region::aws_partition(code) == partition)
            .collect();
        format!("arn:{partition}:kms:(?:{}):[0-9]{{12}}", regions.join("|"))
    };
    let arns: Vec<String> = ["aws", "aws-us-gov", "aws-cn"]
        .iter()
        .map(|p| in_partition(p))
        .collect();
    trimmed(&format!(
        "(?:{}):key/(?:[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}|mrk-[0-9a-f]{{32}})",
        arns.join("|")
    ))
}

/// An `https` URL as the server takes it for a webhook: RFC 3986 characters only, a host,
/// an optional port, path and query; no user name, password or fragment.
fn webhook_url() -> String {
    const PCHAR: &str = r"[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}";
    let port = r"(?::(?:[0-9]{0,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?";
    // Plain http only to this machine, in development (the server refuses it in production).
    let loopback = r"localhost|(?:[A-Za-z0-9-]+\.)+localhost|127(?:\.(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}|\[::1\]";
    trimmed(&format!(
        r"(?:https://(?:[A-Za-z0-9._~!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])|http://(?:{loopback})){port}(?:/(?:{PCHAR}|/)*)?(?:\?(?:{PCHAR}|[/?])*)?"
    ))
}

/// An object's name: segments separated by `/`, none empty, `.` or `..`, no `\\` and no
/// control character (the 1024-byte bound is `maxLength` in characters, see the parameter).
pub fn object_name() -> String {
    let c = format!(r"[^/\\{CONTROL}]");
    let d = format!(r"[^/\\.{CONTROL}]");
    let segment = format!(r"(?:{d}{c}*|\.{d}{c}*|\.\.{c}+)");
    format!("^{segment}(?:/{segment})*$")
}

/// The patterns of request fields, each the server's own rule (names are trimmed first).
fn text_fields() -> Vec<(&'static str, &'static str, String)> {
    let project_name = trimmed(r"[^\W_][\w .-]{0,63}");
    let cluster_name = trimmed(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?");
    vec![
        ("CreateProjectBody", "name", project_name.clone()),
        ("UpdateProjectBody", "name", project_name),
        ("CreateClusterBody", "name", cluster_name.clone()),
        ("RestoreBody", "name", cluster_name),
        ("CreateLocalKeyBody", "name", display_name(64)),
        ("CreateWebhook", "url", webhook_url()),
        (
            "CreateWebhook",
            "description",
            format!("^{WS}(?:[^{CONTROL}\\s](?:[^{CONTROL}]{{0,198}}[^{CONTROL}\\s])?)?{WS}$"),
        ),
        ("KeyRequestInput", "key_arn", kms_key_arn()),
        ("AwsCmekSpec", "kms_arn", kms_key_arn()),
        (
            "KeyRequestInput",
            "role_arn",
            trimmed(
                r"arn:aws(?:-us-gov|-cn)?:iam::[0-9]{12}:role/(?:[A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,64}",
            ),
        ),
        (
            "KeyRequestInput",
            "vault_name",
            trimmed(r"[A-Za-z](?:-?[A-Za-z0-9]){2,23}"),
        ),
        (
            "KeyRequestInput",
            "key_name",
            trimmed(r"[A-Za-z0-9-]{1,127}"),
        ),
    ]
}

/// OpenAPI links: from each create to the operations that take the id it returns.
fn add_links(doc: &mut Value) {
    const PROJECT: &[&str] = &[
        "getProject",
        "updateProject",
        "listEncryptionKeys",
        "createEncryptionKey",
        "testEncryptionKey",
        "getAwsTrustPolicy",
        "getAzureSetup",
        "listClusters",
        "createCluster",
        "listProjectBackups",
        "listAwsCmekV1beta",
    ];
    const KEY: &[&str] = &[
        "getEncryptionKey",
        "deleteEncryptionKey",
        "checkEncryptionKey",
        "listEncryptionKeyHistory",
    ];
    const CLUSTER: &[&str] = &[
        "getCluster",
        "deleteCluster",
        "pauseCluster",
        "resumeCluster",
        "listObjects",
        "createBackup",
        "listClusterBackups",
    ];
    const OBJECT: &[&str] = &["getObject", "deleteObject"];
    const BACKUP: &[&str] = &["getBackup", "deleteBackup", "restoreBackup"];
    const WEBHOOK: &[&str] = &[
        "getWebhook",
        "deleteWebhook",
        "listWebhookDeliveries",
        "sendWebhookTestEvent",
    ];
    const LOCAL_KEY: &[&str] = &[
        "disableLocalKmsKey",
        "enableLocalKmsKey",
        "rotateLocalKmsKey",
    ];
    let id = json!("$response.body#/id");
    let links: &[(&str, &[&str], Value)] = &[
        ("createProject", PROJECT, json!({ "project_id": id })),
        (
            "createEncryptionKey",
            KEY,
            json!({ "project_id": "$request.path.project_id", "key_id": id }),
        ),
        ("createCluster", CLUSTER, json!({ "cluster_id": id })),
        ("restoreBackup", CLUSTER, json!({ "cluster_id": id })),
        (
            "putObject",
            OBJECT,
            json!({ "cluster_id": "$request.path.cluster_id", "name": "$request.path.name" }),
        ),
        ("createBackup", BACKUP, json!({ "backup_id": id })),
        ("createWebhook", WEBHOOK, json!({ "webhook_id": id })),
        (
            "createLocalKmsKey",
            LOCAL_KEY,
            json!({ "local_key_id": id }),
        ),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for operation in item.values_mut() {
            let Some((_, targets, parameters)) = links
                .iter()
                .find(|(from, _, _)| operation["operationId"] == *from)
            else {
                continue;
            };
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            let Some(created) = responses
                .iter_mut()
                .find(|(status, _)| status.starts_with('2'))
                .map(|(_, response)| response)
            else {
                continue;
            };
            let links: serde_json::Map<String, Value> = targets
                .iter()
                .map(|target| {
                    let mut name = target.to_string();
                    name[..1].make_ascii_uppercase();
                    (
                        name,
                        json!({ "operationId": target, "parameters": parameters }),
                    )
                })
                .collect();
            created["links"] = Value::Object(links);
        }
    }
}
