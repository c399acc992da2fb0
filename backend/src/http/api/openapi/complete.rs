//! What every operation of a shape can answer, and the links from each create to the
//! operations that take the id it returns.

use serde_json::{Value, json};

/// Statuses an operation of a given shape can answer, whatever its handler says.
pub(super) fn complete_responses(method: &str, operation: &mut Value) {
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

/// OpenAPI links: from each create to the operations that take the id it returns.
pub(super) fn add_links(doc: &mut Value) {
    const PROJECT: &[&str] = &[
        "getProject",
        "updateProject",
        "listEncryptionKeys",
        "createEncryptionKey",
        "testEncryptionKey",
        "getAwsTrustPolicy",
        "getAzureSetup",
        "getGcpSetup",
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
        "getLocalKmsKey",
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
