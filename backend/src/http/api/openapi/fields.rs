//! The values parameters and request fields take, each the server's own rule: regions from
//! the domain's lists, names and identifiers as the parsers read them (trimmed first), provider-
//! dependent fields as JSON Schema `if`/`then`.

use serde_json::{Value, json};

use crate::domain::keys::region::{AWS_REGIONS, AZURE_REGIONS, GCP_REGIONS};
use crate::domain::page::PAGE_TOKEN_PATTERN;

/// What the annotations cannot say: the values of parameters whose lists the domain keeps
/// (regions, the page token's form), that an optional query parameter sent empty is the same
/// as one left out (the server reads it so, for HTML forms' sake), and that streamed bodies
/// are bytes.
pub(super) fn refine_parameters(operation: &mut Value) {
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
    // `get_mut` and `pointer_mut`, not indexing: indexing a missing key would add it as null.
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
            Some("page_token") => {
                parameter["schema"]["pattern"] = json!(PAGE_TOKEN_PATTERN);
                parameter["schema"]["minLength"] = json!(32);
                parameter["schema"]["maxLength"] = json!(32);
            }
            Some("key_arn") => parameter["schema"]["pattern"] = json!(kms_key_arn()),
            Some("account_id") => {
                parameter["schema"]["pattern"] = json!("^[0-9]{12}$");
                parameter["schema"]["maxLength"] = json!(12);
            }
            // Google Cloud's parts, each as the server checks it once trimmed (blank means
            // not given: the default, or a placeholder): a key name prefix of at most 54
            // characters (63 with the suffix), a key ring id, a project id.
            Some("key_name_prefix") if operation_id == "getGcpSetup" => {
                parameter["schema"]["pattern"] =
                    json!(trimmed(r"(?:[A-Za-z0-9_-]{0,53}[A-Za-z0-9_]-*)?"))
            }
            Some("key_ring") => {
                parameter["schema"]["pattern"] = json!(trimmed(r"(?:[A-Za-z0-9_-]{1,63})?"))
            }
            Some("gcp_project_id") => {
                parameter["schema"]["pattern"] =
                    json!(trimmed(r"(?:[a-z][a-z0-9-]{4,28}[a-z0-9])?"))
            }
            Some("key_name_prefix") => {
                // At most 118 characters once trailing hyphens are dropped (127 with the
                // console's nine-character suffix).
                parameter["schema"]["pattern"] = json!(trimmed(r"[A-Za-z0-9-]{0,117}[A-Za-z0-9]-*"))
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
            "getGcpSetup" => GCP_REGIONS.iter().map(|(code, _)| *code).collect(),
            _ => continue,
        };
        parameter["schema"] = json!({ "type": "string", "enum": regions });
    }
}

/// What utoipa's attributes cannot say about request fields: region fields take the known
/// regions (AWS codes, Azure names, Google Cloud regions; which list applies follows the body's `provider`, as the
/// field's description says), a cluster's regions are distinct, a webhook's URL is a URI.
pub(super) fn refine_request_fields(doc: &mut Value) {
    let aws: Vec<&str> = AWS_REGIONS.iter().map(|(code, _)| *code).collect();
    let any: Vec<&str> = aws
        .iter()
        .copied()
        .chain(AZURE_REGIONS.iter().map(|(code, _)| *code))
        .chain(GCP_REGIONS.iter().map(|(code, _)| *code))
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["KeyRequestInput"]["properties"]["region"]["enum"] = json!(any);
    schemas["CreateClusterBody"]["properties"]["regions"]["items"]["enum"] = json!(any);
    schemas["AwsCmekSpec"]["properties"]["region"]["enum"] = json!(aws);
    schemas["CreateClusterBody"]["properties"]["regions"]["uniqueItems"] = json!(true);
    // Rules between fields, as JSON Schema 2020-12 states them (OpenAPI 3.1): the regions
    // follow the provider, each provider needs its own fields, a revocation policy needs CMEK.
    let azure: Vec<&str> = AZURE_REGIONS.iter().map(|(code, _)| *code).collect();
    let gcp: Vec<&str> = GCP_REGIONS.iter().map(|(code, _)| *code).collect();
    let is_azure = json!({ "properties": { "provider": { "enum": ["azure_key_vault", "azure"] } }, "required": ["provider"] });
    let is_gcp = json!({ "properties": { "provider": { "enum": ["gcp_kms", "gcp"] } }, "required": ["provider"] });
    schemas["CreateClusterBody"]["allOf"] = json!([{
        "if": is_azure,
        "then": { "properties": { "regions": { "items": { "enum": azure } } } },
        "else": {
            "if": is_gcp,
            "then": { "properties": { "regions": { "items": { "enum": gcp } } } },
            "else": { "properties": { "regions": { "items": { "enum": aws } } } }
        }
    }]);
    let provider_is =
        |p: &str| json!({ "properties": { "provider": { "const": p } }, "required": ["provider"] });
    schemas["KeyRequestInput"]["allOf"] = json!([
        {
            "if": provider_is("azure_key_vault"),
            "then": { "properties": { "region": { "enum": azure } }, "required": ["vault_name", "key_name"] },
            "else": {
                "if": provider_is("gcp_kms"),
                "then": {
                    "properties": {
                        "region": { "enum": gcp },
                        "key_name": {
                            "type": "string",
                            "description": "The key's full resource name, projects/P/locations/L/keyRings/R/cryptoKeys/K.",
                            "pattern": gcp_key_name(),
                        }
                    },
                    "required": ["key_name"]
                },
                "else": { "properties": { "region": { "enum": aws } } }
            }
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
    let vault_name = &mut schemas["KeyRequestInput"]["properties"]["vault_name"];
    vault_name["minLength"] = json!(3);
    vault_name["maxLength"] = json!(24);
    // A key request's fields are each read only for their provider (an AWS request's
    // `vault_name` is ignored, not refused): each field's rule applies in its provider's branch.
    let request = &mut schemas["KeyRequestInput"];
    for (field, branch) in [
        ("vault_name", 0),
        ("key_name", 0),
        ("key_arn", 1),
        ("role_arn", 1),
        ("access_mode", 1),
        ("key_id", 2),
    ] {
        let rule = request["properties"][field].take();
        let mut any = json!({ "type": ["string", "null"] });
        if let Some(description) = rule
            .get("description")
            .or_else(|| rule.pointer("/oneOf/1/description"))
        {
            any["description"] = description.clone();
        }
        request["allOf"][branch]["then"]["properties"][field] = rule;
        request["properties"][field] = any;
    }
    schemas["CreateWebhook"]["properties"]["url"]["maxLength"] = json!(2000);
    // The policy doctor: an AWS region code or `*`; documents of at most 16,384 characters
    // (two fit the 64 KiB body), the policy with something in it (a blank permission policy
    // is the same as none).
    schemas["PolicyCheckBody"]["properties"]["region"]["enum"] = json!(
        std::iter::once("*")
            .chain(aws.iter().copied())
            .collect::<Vec<_>>()
    );
    for field in ["policy", "permission_policy"] {
        schemas["PolicyCheckBody"]["properties"][field]["maxLength"] =
            json!(crate::domain::keys::policy_doctor::MAX_POLICY_CHARS);
    }
    schemas["PolicyCheckBody"]["properties"]["policy"]["pattern"] =
        json!(r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]");
    // A valid body of each create, shown by the reference page and sent by tools that start
    // from examples.
    let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    for (schema, example) in [
        (
            "CreateProjectBody",
            json!({ "name": "payments", "cmek_enabled": true, "revocation_policy": "stop" }),
        ),
        ("UpdateProjectBody", json!({ "name": "payments-eu" })),
        (
            "KeyRequestInput",
            json!({ "provider": "aws_kms", "region": "us-east-1", "key_arn": arn }),
        ),
        (
            "CreateClusterBody",
            json!({ "name": "orders", "provider": "aws_kms", "regions": ["us-east-1"], "tier": "dedicated" }),
        ),
        ("RestoreBody", json!({ "name": "orders-restored" })),
        (
            "CreateWebhook",
            json!({ "url": "https://alerts.example.com/cmek", "description": "on-call" }),
        ),
        ("CreateLocalKeyBody", json!({ "name": "dev key" })),
        (
            "AwsCmekBody",
            json!({ "specs": [{ "region": "us-east-1", "kms_arn": arn }] }),
        ),
        (
            "PolicyCheckBody",
            json!({
                "region": "us-east-1",
                "mode": "key_policy",
                "policy": "{\"Version\": \"2012-10-17\", \"Statement\": []}"
            }),
        ),
    ] {
        schemas[schema]["examples"] = json!([example]);
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
        "(?:{}):key/(?:[0-9a-fA-F]{{8}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{12}}|mrk-[0-9a-fA-F]{{32}})",
        arns.join("|")
    ))
}

/// An `https` URL as the server takes it for a webhook: RFC 3986 characters only, a host
/// name, an optional port, path and query; no user name, password or fragment. The server
/// also takes an address literal (in development, or a public one in production) and any case
/// of the scheme; the document names host names only, whose last label starts with a letter
/// (a host ending in a number is read as an IPv4 address, which has its own rules).
fn webhook_url() -> String {
    const PCHAR: &str = r"[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}";
    let port = r"(?::(?:[0-9]{0,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?";
    // Plain http only to this machine, in development (the server refuses it in production).
    let loopback = r"localhost|(?:[A-Za-z0-9-]+\.)+localhost|127(?:\.(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}|\[::1\]";
    trimmed(&format!(
        r"(?:https://(?:[A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z_-]*\.?|http://(?:{loopback})){port}(?:/(?:{PCHAR}|/)*)?(?:\?(?:{PCHAR}|[/?])*)?"
    ))
}

/// An object's name: segments separated by `/`, none empty, `.` or `..`, no `\\` and no
/// control character (the 1024-byte bound is `maxLength` in characters, see the parameter).
fn object_name() -> String {
    let c = format!(r"[^/\\{CONTROL}]");
    let d = format!(r"[^/\\.{CONTROL}]");
    let segment = format!(r"(?:{d}{c}*|\.{d}{c}*|\.\.{c}+)");
    format!("^{segment}(?:/{segment})*$")
}

/// A Cloud KMS key's full resource name as the server parses it (each part by its rules).
fn gcp_key_name() -> String {
    let locations: Vec<&str> = GCP_REGIONS.iter().map(|(code, _)| *code).collect();
    trimmed(&format!(
        r"projects/[a-z][a-z0-9-]{{4,28}}[a-z0-9]/locations/(?:{})/keyRings/[A-Za-z0-9_-]{{1,63}}/cryptoKeys/[A-Za-z0-9_-]{{1,63}}",
        locations.join("|")
    ))
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
            // 3-24 characters (`minLength`/`maxLength` below; the server trims first).
            r"^[A-Za-z](?:-?[A-Za-z0-9])+$".to_owned(),
        ),
        (
            "KeyRequestInput",
            "key_name",
            trimmed(r"[A-Za-z0-9-]{1,127}"),
        ),
    ]
}
