//! The API's contract as tools read it: the OpenAPI document is precise (unique operation ids,
//! typed parameters, every status an operation of its shape answers), a breaking change to it
//! cannot land without a note in `API_CHANGES.md`, and every problem type is documented where
//! its `type` points.

use std::collections::{BTreeMap, BTreeSet};

use cmek_console::http::api::openapi;
use cmek_console::http::problems;
use serde_json::Value;

use crate::helpers::{problem, spawn_app};

const BASELINE: &str = include_str!("contract/openapi-baseline.json");
const CHANGES: &str = include_str!("../../API_CHANGES.md");

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    out
}

#[test]
fn operation_ids_are_unique_and_named_for_what_they_do() {
    let doc = openapi::document();
    let mut seen = BTreeSet::new();
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap();
        assert!(seen.insert(id.to_owned()), "{id} is used twice");
        let verb = [
            "get", "list", "create", "update", "delete", "test", "check", "pause", "resume", "put",
            "restore", "send", "enable", "disable", "rotate", "replace", "rewrap", "repin",
        ];
        assert!(
            verb.iter().any(|v| id.starts_with(v)) && id.chars().any(char::is_uppercase),
            "{method} {path}: {id} is not a verb followed by what it acts on"
        );
    }
}

#[test]
fn every_operation_lists_the_statuses_its_shape_can_answer() {
    let doc = openapi::document();
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        let secured = operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        let name = format!("{method} {path}");
        if path != "/api/v1/openapi.json" {
            assert!(secured, "{name} names no security scheme");
            assert!(has("401") && has("503"), "{name}");
        }
        if method != "GET" && secured {
            assert!(
                has("403"),
                "{name}: a write can be refused by role or as cross-site"
            );
        }
        if path.contains('{') {
            assert!(has("404"), "{name}");
        }
        let params = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if params.iter().any(|p| p["in"] == "query") {
            assert!(has("400") && has("422"), "{name}");
        }
        if operation["requestBody"]["content"]
            .get("application/json")
            .is_some()
        {
            for status in ["400", "413", "415", "422"] {
                assert!(has(status), "{name} answers {status}");
            }
        }
        for (status, response) in responses {
            assert!(
                !response["description"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{name} {status} has no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]
                        .get("application/problem+json")
                        .is_some(),
                    "{name} {status} is not a problem document"
                );
            }
        }
        for param in &params {
            let schema = &param["schema"];
            let typed = schema.get("$ref").is_some()
                || schema["type"] != "string"
                || schema.get("format").is_some()
                || schema.get("enum").is_some()
                || schema.get("pattern").is_some()
                || ["action", "actor", "page_token", "name"]
                    .contains(&param["name"].as_str().unwrap());
            assert!(
                typed,
                "{name}: parameter {} is a bare string",
                param["name"]
            );
        }
    }
}

#[test]
fn every_reference_resolves_and_nothing_is_null() {
    fn walk(value: &Value, doc: &Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let name = reference.strip_prefix("#/components/schemas/").unwrap();
                    assert!(
                        doc["components"]["schemas"].get(name).is_some(),
                        "{reference} dangles"
                    );
                }
                for (key, v) in map {
                    assert!(!v.is_null(), "{key} is null: leave it out instead");
                    walk(v, doc);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, doc)),
            _ => {}
        }
    }
    let doc = openapi::document();
    walk(&doc, &doc);
}

#[test]
fn each_create_body_has_an_example() {
    let doc = openapi::document();
    for (_, _, operation) in operations(&doc) {
        let Some(schema) =
            operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        else {
            continue;
        };
        let name = schema.rsplit('/').next().unwrap();
        let examples = &doc["components"]["schemas"][name]["examples"];
        assert!(
            examples.as_array().is_some_and(|e| !e.is_empty()),
            "{name} has no example"
        );
    }
}

#[test]
fn page_sizes_are_bounded_integers_and_filters_are_enums() {
    let doc = openapi::document();
    let audit = &doc["paths"]["/api/v1/audit-events"]["get"]["parameters"];
    let param = |name: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    let size = param("page_size");
    assert_eq!(size["schema"]["type"], "integer");
    assert_eq!(size["schema"]["minimum"], 1);
    assert_eq!(size["schema"]["maximum"], 100);
    assert_eq!(param("since")["schema"]["format"], "date-time");
    assert_eq!(param("project_id")["schema"]["format"], "uuid");
    let format = param("format")["schema"]["$ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let format = &doc["components"]["schemas"][format.rsplit('/').next().unwrap()];
    assert_eq!(format["enum"], serde_json::json!(["json", "csv"]));
}

#[test]
fn each_create_links_to_the_operations_that_use_its_id() {
    let doc = openapi::document();
    let ids: BTreeSet<String> = operations(&doc)
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    let mut linked = 0;
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap();
        let created = operation["responses"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(status, _)| status.starts_with('2'))
            .map(|(_, r)| r.clone())
            .unwrap();
        if id.starts_with("create") && id != "createAwsCmekV1beta" {
            assert!(
                created.get("links").is_some(),
                "{method} {path} has no links"
            );
        }
        for link in created["links"]
            .as_object()
            .into_iter()
            .flat_map(|l| l.values())
        {
            let target = link["operationId"].as_str().unwrap();
            assert!(ids.contains(target), "{id} links to unknown {target}");
            let target_op = operations(&doc)
                .into_iter()
                .find(|(_, _, op)| op["operationId"] == target)
                .unwrap()
                .2
                .clone();
            for name in link["parameters"].as_object().unwrap().keys() {
                assert!(
                    target_op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name.as_str()),
                    "{id} -> {target}: {target} has no parameter {name}"
                );
            }
            linked += 1;
        }
    }
    assert!(linked >= 30, "only {linked} links");
}

/// What a client written against `old` would trip over in `new`.
fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let new_ops: BTreeMap<(String, String), &Value> = operations(new)
        .into_iter()
        .map(|(m, p, o)| ((m, p), o))
        .collect();
    for (method, path, old_op) in operations(old) {
        let Some(new_op) = new_ops.get(&(method.clone(), path.clone())) else {
            found.push(format!("removed operation {method} {path}"));
            continue;
        };
        let params = |op: &Value| -> BTreeMap<String, Value> {
            op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
                .collect()
        };
        let (old_params, new_params) = (params(old_op), params(new_op));
        for (name, old_param) in &old_params {
            match new_params.get(name) {
                None => found.push(format!("removed parameter {name} of {method} {path}")),
                Some(new_param) => {
                    if new_param["required"] == true && old_param["required"] != true {
                        found.push(format!(
                            "parameter {name} of {method} {path} is now required"
                        ));
                    }
                    compare_schemas(
                        &format!("parameter {name} of {method} {path}"),
                        &old_param["schema"],
                        &new_param["schema"],
                        (old, new),
                        &mut found,
                    );
                }
            }
        }
        for (name, new_param) in &new_params {
            if !old_params.contains_key(name) && new_param["required"] == true {
                found.push(format!("new required parameter {name} of {method} {path}"));
            }
        }
        // A client generated from the old document reads the success it was told of.
        for status in old_op["responses"]
            .as_object()
            .into_iter()
            .flat_map(|r| r.keys())
        {
            if status.starts_with('2') && new_op["responses"].get(status).is_none() {
                found.push(format!("{method} {path} no longer answers {status}"));
            }
        }
    }
    let schemas = |doc: &Value| {
        doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let (old_schemas, new_schemas) = (schemas(old), schemas(new));
    for (name, old_schema) in &old_schemas {
        match new_schemas.get(name) {
            None => found.push(format!("removed schema {name}")),
            Some(new_schema) => compare_schemas(
                &format!("schema {name}"),
                old_schema,
                new_schema,
                (old, new),
                &mut found,
            ),
        }
    }
    found
}

/// A schema as a client sees it: a `$ref` replaced by what it names, a nullable reference
/// (`oneOf: [{type: null}, {$ref}]`) by the referenced schema with `null` among its types.
fn resolved(schema: &Value, doc: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return resolved(&doc["components"]["schemas"][name], doc);
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let (nulls, others): (Vec<&Value>, Vec<&Value>) =
            alternatives.iter().partition(|a| a["type"] == "null");
        if let ([_], [one]) = (nulls.as_slice(), others.as_slice()) {
            let mut one = resolved(one, doc);
            let types: Vec<String> = types_of(&one).into_iter().chain(["null".into()]).collect();
            one["type"] = serde_json::json!(types);
            return one;
        }
    }
    schema.clone()
}

fn types_of(schema: &Value) -> BTreeSet<String> {
    match &schema["type"] {
        Value::String(t) => [t.clone()].into(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Compares `old` (in the document `docs.0`) with `new` (in `docs.1`).
fn compare_schemas(
    at: &str,
    old: &Value,
    new: &Value,
    docs: (&Value, &Value),
    found: &mut Vec<String>,
) {
    let (old, new) = (&resolved(old, docs.0), &resolved(new, docs.1));
    if !types_of(old).is_empty() && types_of(old) != types_of(new) {
        found.push(format!(
            "{at} changed type from {} to {}",
            old["type"], new["type"]
        ));
    }
    if let Some(values) = old["enum"].as_array() {
        let now = new["enum"].as_array().cloned().unwrap_or_default();
        for value in values {
            if new.get("enum").is_some() && !now.contains(value) {
                found.push(format!("removed value {value} from {at}"));
            }
        }
    }
    let required = |s: &Value| -> BTreeSet<String> {
        s["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    for field in required(new).difference(&required(old)) {
        found.push(format!("{at}: field {field} is now required"));
    }
    if let Some(properties) = old["properties"].as_object() {
        for (field, old_field) in properties {
            match new["properties"].get(field) {
                None => found.push(format!("{at}: removed field {field}")),
                Some(new_field) => {
                    compare_schemas(&format!("{at}.{field}"), old_field, new_field, docs, found)
                }
            }
        }
    }
}

/// The document is compared with the last published contract
/// (`tests/api/contract/openapi-baseline.json`). A breaking change fails this test unless
/// `API_CHANGES.md` names it, word for word as printed here, under a new version: users of
/// the API read that file before they upgrade.
#[test]
fn no_breaking_change_without_a_version_note() {
    let baseline: Value = serde_json::from_str(BASELINE).unwrap();
    let unannounced: Vec<String> = breaking_changes(&baseline, &openapi::document())
        .into_iter()
        .filter(|change| !CHANGES.contains(change.as_str()))
        .collect();
    assert!(
        unannounced.is_empty(),
        "breaking changes to the API that API_CHANGES.md does not announce (add each line under \
         a new version heading, or undo the change):\n{}",
        unannounced.join("\n")
    );
}

#[test]
fn the_breaking_change_check_sees_what_breaks_clients() {
    let old: Value = serde_json::from_str(BASELINE).unwrap();
    assert!(breaking_changes(&old, &old).is_empty());

    let mut removed_path = old.clone();
    removed_path["paths"]
        .as_object_mut()
        .unwrap()
        .remove("/api/v1/me");
    assert_eq!(
        breaking_changes(&old, &removed_path),
        ["removed operation GET /api/v1/me"]
    );

    let mut other_success = old.clone();
    let responses = other_success["paths"]["/api/v1/projects"]["post"]["responses"]
        .as_object_mut()
        .unwrap();
    let created = responses.remove("201").unwrap();
    responses.insert("202".into(), created);
    assert_eq!(
        breaking_changes(&old, &other_success),
        ["POST /api/v1/projects no longer answers 201"]
    );

    let mut removed_value = old.clone();
    removed_value["components"]["schemas"]["Role"]["enum"] = serde_json::json!(["owner", "member"]);
    let found = breaking_changes(&old, &removed_value);
    assert!(
        found.contains(&"removed value \"auditor\" from schema Role".to_owned()),
        "{found:?}"
    );
    // ... and where it is used, through references.
    assert!(
        found.contains(&"removed value \"auditor\" from schema MeBody.role".to_owned()),
        "{found:?}"
    );

    let mut newly_required = old.clone();
    let body = &mut newly_required["components"]["schemas"]["CreateProjectBody"];
    body["required"]
        .as_array_mut()
        .unwrap()
        .push("revocation_policy".into());
    assert_eq!(
        breaking_changes(&old, &newly_required),
        ["schema CreateProjectBody: field revocation_policy is now required"]
    );

    let mut removed_field = old.clone();
    removed_field["components"]["schemas"]["ProjectBody"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    assert_eq!(
        breaking_changes(&old, &removed_field),
        ["schema ProjectBody: removed field name"]
    );
}

#[test]
fn problem_types_are_unique_and_each_has_a_status_and_an_explanation() {
    let docs = problems::all();
    let mut seen = BTreeSet::new();
    for doc in &docs {
        assert!(seen.insert(doc.type_uri()), "{} twice", doc.type_uri());
        assert!(
            !doc.statuses.is_empty() && doc.about.len() > 40,
            "{}",
            doc.slug
        );
        assert!(doc.statuses.iter().all(|s| (400..600).contains(s)));
    }
}

#[tokio::test]
async fn every_problem_type_is_documented_where_its_type_points() {
    let app = spawn_app().await;
    let index = app.api.get(app.url("/problems")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let index = index.text().await.unwrap();
    for doc in problems::all() {
        assert!(
            index.contains(&doc.type_uri()),
            "{} missing from /problems",
            doc.slug
        );
        let page = app.api.get(app.url(&doc.path())).send().await.unwrap();
        assert_eq!(page.status(), 200, "{}", doc.path());
        let page = page.text().await.unwrap();
        assert!(page.contains(&doc.type_uri()), "{}", doc.path());
        assert!(page.contains(&doc.status_line()), "{}", doc.path());
    }
    // The type a real answer carries is one of the documented ones, and its page opens.
    let key = app
        .api_key(cmek_console::domain::identity::Role::Member)
        .await;
    let refused = problem(
        app.post_json(
            "/api/v1/projects",
            &key,
            &serde_json::json!({"name": "x", "cmek_enabled": true}),
        )
        .await,
    )
    .await;
    let kind = refused["type"].as_str().unwrap();
    let doc = problems::all()
        .into_iter()
        .find(|d| d.type_uri() == kind)
        .unwrap();
    assert_eq!(doc.path(), "/rules/owner-only");
    let unknown = app
        .api
        .get(app.url("/rules/no-such-rule"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_api_reference_page_is_served_without_the_internet() {
    let app = spawn_app().await;
    let page = app.api.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("style-src 'self' 'unsafe-inline'"), "{csp}");
    assert!(csp.contains("worker-src 'self' blob:"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("spec-url=\"/api/v1/openapi.json\""));
    assert!(html.contains("src=\"/static/vendor/redoc.standalone.js\""));
    assert!(
        !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let script = app
        .api
        .get(app.url("/static/vendor/redoc.standalone.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.bytes().await.unwrap().len() > 500_000);
    // Other pages keep the strict policy.
    for other in ["/sign-in", "/problems"] {
        let page = app.api.get(app.url(other)).send().await.unwrap();
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("style-src 'self';"), "{other}: {csp}");
        assert!(!csp.contains("blob:"), "{other}: {csp}");
    }
}

#[tokio::test]
async fn the_server_answers_as_the_document_says() {
    use cmek_console::domain::identity::Role;
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let member = app.api_key(Role::Member).await;

    // A body that is JSON but not an object is refused, not read as the fields in order.
    let plain = app.create_project(&owner, "plain", false).await;
    let id = plain["id"].as_str().unwrap();
    let refused = app
        .patch_json(
            &format!("/api/v1/projects/{id}"),
            &owner,
            &serde_json::json!([null, null]),
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert_eq!(crate::helpers::fields(&problem(refused).await), ["body"]);

    // A revocation policy for a project without CMEK conflicts with the project (as a key for
    // it does): 409 cmek-not-enabled.
    let conflict = app
        .patch_json(
            &format!("/api/v1/projects/{id}"),
            &owner,
            &serde_json::json!({ "revocation_policy": "stop" }),
        )
        .await;
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        problem(conflict).await["type"],
        crate::helpers::rule("cmek-not-enabled")
    );

    // Who may ask comes before what was asked: a member's bad input is a 403.
    let bad_token = app.get("/api/v1/webhooks?page_token=zzz", &member).await;
    assert_eq!(bad_token.status(), 403);
    let bad_body = app
        .post_json(
            "/api/v1/projects",
            &member,
            &serde_json::json!({ "name": "", "cmek_enabled": true }),
        )
        .await;
    assert_eq!(bad_body.status(), 403);

    // Any token of the documented form is a cursor; others are refused.
    let page = app
        .get(
            &format!("/api/v1/projects?page_token={}", "0".repeat(32)),
            &owner,
        )
        .await;
    assert_eq!(page.status(), 200);
    app.create_project(&owner, "second", false).await;
    let first: Value = app
        .get("/api/v1/projects?page_size=1", &owner)
        .await
        .json()
        .await
        .unwrap();
    let token = first["next_page_token"].as_str().unwrap().to_owned();
    assert!(regex_like_page_token(&token), "{token}");
    let next = app
        .get(
            &format!("/api/v1/projects?page_size=1&page_token={token}"),
            &owner,
        )
        .await;
    assert_eq!(next.status(), 200);
    let refused = app.get("/api/v1/projects?page_token=zzz", &owner).await;
    assert_eq!(refused.status(), 422);

    // An optional query parameter sent empty is the same as one left out (allowEmptyValue).
    let empty = app
        .get("/api/v1/audit-events?since=&until=&outcome=", &owner)
        .await;
    assert_eq!(empty.status(), 200);
}

fn regex_like_page_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
