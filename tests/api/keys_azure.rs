//! Azure Key Vault keys: the wizard's setup over the API, Test Encryption Key and Create
//! against the stand-in over HTTPS (the real adapter on the Azure SDK), every check's
//! failure with its code and fix, R4, and the settings that turn the provider on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::azure::{Azure, Console, REGION};
use cmek_console::domain::identity::Role;

use crate::helpers::{check, fields, problem, rule, spawn_app_with};

/// Test Encryption Key (nothing created) for `body`; the checklist.
async fn test_key(c: &Console, body: &Value) -> Value {
    let response = c
        .app
        .post_json(&format!("{}/test", c.keys_path()), &c.owner, body)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Test Encryption Key against a vault or authority that does not answer: the first check
/// fails `Unreachable` well within the test's 20 s delay. The time-out is the behaviour under
/// test: the SDK's own retries would hold a failing call about 80 s.
async fn unreachable_within_the_time_out(c: &Console, body: &Value) {
    let started = Instant::now();
    let checklist = test_key(c, body).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        check(&checklist, "reachable")["code"],
        "Unreachable",
        "{checklist}"
    );
}

/// Test Encryption Key and Create, expected refused: the checklist, and nothing created.
async fn refused(c: &Console, body: &Value) -> Value {
    let response = c.app.post_json(&c.keys_path(), &c.owner, body).await;
    assert_eq!(response.status(), 422);
    let problem = problem(response).await;
    assert_eq!(c.keys().await.len(), 0, "nothing created");
    problem["checks"].clone()
}

fn failed_only(checklist: &Value, id: &str, code: &str) {
    let failed: Vec<&str> = checklist["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [id], "{checklist}");
    assert_eq!(check(checklist, id)["code"], code, "{checklist}");
    assert!(
        !check(checklist, id)["fix"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_good_key_passes_every_check_and_is_created() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;

    let response = c
        .app
        .post_json(&c.keys_path(), &c.owner, &azure.body(&key))
        .await;

    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body = c.keys().await[0].clone();
    assert_eq!(body["provider"], "azure_key_vault");
    assert_eq!(body["region"], REGION);
    assert_eq!(body["vault_name"], azure.vault);
    assert_eq!(body["key_name"], key);
    assert_eq!(body["status"], "active");
    assert!(body.get("key_arn").is_none());
    assert!(
        !body.to_string().contains(&azure.tenant),
        "the tenant is kept, not shown"
    );
    use sea_orm::ConnectionTrait;
    let db = c.app.db().await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT azure_tenant_id FROM encryption_keys",
        ))
        .await
        .unwrap()
        .unwrap();
    let kept: Option<String> = row.try_get_by_index(0).unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(azure.tenant.as_str()),
        "the vault's tenant is kept"
    );
    let checklist = test_key(&c, &azure.body(&key)).await;
    for id in [
        "reachable",
        "enabled",
        "validity",
        "key_type",
        "key_ops",
        "purge_protection",
        "region",
        "wrap_key",
        "unwrap_round_trip",
    ] {
        assert_eq!(
            check(&checklist, id)["outcome"],
            "pass",
            "{id}: {checklist}"
        );
    }
    assert_eq!(checklist["passed"], true);
    let rotation = check(&checklist, "rotation");
    assert_eq!(rotation["outcome"], "info");
    assert!(
        rotation["detail"]
            .as_str()
            .unwrap()
            .starts_with("Current version "),
        "{rotation}"
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn each_unusable_key_fails_its_own_check_with_the_key_vault_code() {
    let azure = Azure::new().await;
    let now = chrono::Utc::now().timestamp();
    let cases = [
        (json!({ "enabled": false }), "enabled", "KeyDisabled"),
        (json!({ "exp": now - 3600 }), "validity", "KeyExpired"),
        (json!({ "nbf": now + 86_400 }), "validity", "KeyNotYetValid"),
        (json!({ "size": 1024 }), "key_type", "KeySizeTooSmall"),
        (
            json!({ "key_ops": ["encrypt", "decrypt", "unwrapKey"] }),
            "key_ops",
            "OperationNotPermitted",
        ),
    ];
    let c = azure.console().await;
    for (spec, id, code) in cases {
        let key = azure.key(&c, spec.clone()).await;
        let checklist = refused(&c, &azure.body(&key)).await;
        assert_eq!(
            check(&checklist, id)["outcome"],
            "fail",
            "{spec}: {checklist}"
        );
        assert_eq!(check(&checklist, id)["code"], code, "{spec}: {checklist}");
        assert_eq!(checklist["passed"], false);
    }
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_key_without_wrap_key_is_refused_by_key_vault_too() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure
        .key(
            &c,
            json!({ "key_ops": ["encrypt", "decrypt", "unwrapKey"] }),
        )
        .await;

    let checklist = refused(&c, &azure.body(&key)).await;

    assert_eq!(check(&checklist, "key_ops")["outcome"], "fail");
    let wrap = check(&checklist, "wrap_key");
    assert_eq!(wrap["code"], "KeyOperationForbidden", "{checklist}");
    assert!(wrap["fix"].as_str().unwrap().contains("Wrap Key"), "{wrap}");
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn an_ec_key_is_refused_as_the_wrong_type_and_cannot_wrap() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure
        .key(
            &c,
            json!({ "kty": "EC", "key_ops": ["sign", "verify", "wrapKey", "unwrapKey"] }),
        )
        .await;

    let checklist = refused(&c, &azure.body(&key)).await;

    assert_eq!(check(&checklist, "key_type")["code"], "UnsupportedKeyType");
    assert_eq!(check(&checklist, "wrap_key")["outcome"], "fail");
    assert_eq!(check(&checklist, "unwrap_round_trip")["outcome"], "skipped");
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_vault_without_purge_protection_fails_only_that_check() {
    let azure = Azure::in_region(REGION, false).await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;

    let checklist = refused(&c, &azure.body(&key)).await;

    failed_only(&checklist, "purge_protection", "PurgeProtectionDisabled");
    assert!(
        check(&checklist, "purge_protection")["detail"]
            .as_str()
            .unwrap()
            .contains("Purgeable")
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_vault_in_another_region_fails_the_region_check() {
    let azure = Azure::in_region("westeurope", true).await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;

    let checklist = refused(&c, &azure.body(&key)).await;

    failed_only(&checklist, "region", "RegionMismatch");
    assert!(
        check(&checklist, "region")["detail"]
            .as_str()
            .unwrap()
            .contains("westeurope")
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_role_that_forbids_wrapping_fails_the_wrap_with_forbidden() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;
    azure
        .patch_key(&key, json!({ "deny_ops": ["wrapKey"] }))
        .await;

    let checklist = refused(&c, &azure.body(&key)).await;

    failed_only(&checklist, "wrap_key", "ForbiddenByRbac");
    assert!(
        check(&checklist, "wrap_key")["fix"]
            .as_str()
            .unwrap()
            .contains("Crypto Service Encryption User")
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_missing_key_fails_reachable_with_key_not_found() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let missing = c.key_name("never-created").await;

    let checklist = test_key(&c, &azure.body(&missing)).await;

    assert_eq!(check(&checklist, "reachable")["code"], "KeyNotFound");
    assert_eq!(check(&checklist, "wrap_key")["outcome"], "skipped");
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_key_name_without_this_projects_suffix_is_refused_before_any_call() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let other = azure.console().await;
    // Another organization's key, named with its own project's suffix.
    let theirs = azure.key(&other, json!({})).await;
    azure
        .standin
        .control(reqwest::Method::DELETE, "/requests", Value::Null)
        .await;

    for name in [theirs.as_str(), "cmek", "cmek-00000000"] {
        let response = c
            .app
            .post_json(&c.keys_path(), &c.owner, &azure.body(name))
            .await;
        assert_eq!(response.status(), 422, "{name}");
        let problem = problem(response).await;
        assert_eq!(fields(&problem), ["key_name"], "{problem}");
        assert!(problem.to_string().contains("suffix"), "{problem}");
    }
    let requests = azure
        .standin
        .control(reqwest::Method::GET, "/requests", Value::Null)
        .await;
    assert!(
        !requests.to_string().contains(&azure.vault),
        "the vault was never asked: {requests}"
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_wrong_client_secret_is_the_consoles_configuration_not_the_key() {
    let azure = Azure::new().await;
    let c = azure
        .console_with(&[("CMEK_AZURE_CLIENT_SECRET", "not-the-secret")])
        .await;
    let key = azure.key(&c, json!({})).await;

    let checklist = test_key(&c, &azure.body(&key)).await;

    let reachable = check(&checklist, "reachable");
    assert_eq!(reachable["code"], "ConfigurationError", "{checklist}");
    assert!(
        reachable["detail"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000215")
    );
    assert!(!checklist.to_string().contains("not-the-secret"));
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_tenant_without_the_service_principal_is_told_to_create_it() {
    let azure = Azure::new().await;
    let other_tenant = uuid::Uuid::new_v4().to_string();
    azure
        .standin
        .post(
            "/tenants",
            json!({ "tenant_id": other_tenant, "service_principals": [] }),
        )
        .await;
    let vault = azure.vault_in(&other_tenant, REGION, true).await;
    let c = azure.console().await;
    let key = azure.key_in(&vault, &c, json!({})).await;
    let mut body = azure.body(&key);
    body["vault_name"] = json!(vault);

    let checklist = test_key(&c, &body).await;

    let reachable = check(&checklist, "reachable");
    assert_eq!(reachable["code"], "AADSTS7000229", "{checklist}");
    assert!(
        reachable["fix"]
            .as_str()
            .unwrap()
            .contains("az ad sp create")
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_saved_key_whose_vault_moved_to_another_tenant_is_refused() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;
    let created = c
        .app
        .post_json(&c.keys_path(), &c.owner, &azure.body(&key))
        .await;
    assert_eq!(created.status(), 201);
    let key_id = c.keys().await[0]["id"].as_str().unwrap().to_owned();

    // The vault name now answers for another tenant (re-created there after a purge, say),
    // where the platform also has a service principal and a grant.
    let elsewhere = uuid::Uuid::new_v4().to_string();
    azure
        .standin
        .post(
            "/tenants",
            json!({ "tenant_id": elsewhere, "service_principals": [azure.app_id] }),
        )
        .await;
    azure.patch_vault(json!({ "tenant_id": elsewhere })).await;

    let checked = c.check_now(&key_id).await;
    let text = checked.text().await.unwrap();
    assert!(text.contains("VaultTenantChanged"), "{text}");
    assert_eq!(c.keys().await[0]["status"], "access_denied");
    // A key not saved yet is simply looked for where the vault is now.
    let fresh = test_key(&c, &azure.body(&key)).await;
    assert_eq!(fresh["passed"], true, "{fresh}");
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn tokens_come_from_the_configured_authority_whatever_the_challenge_names() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;
    // The challenge names another host; only its tenant id may be used.
    azure
        .standin
        .post(
            "/config",
            json!({ "challenge_authority": "https://login.attacker.invalid" }),
        )
        .await;

    let checklist = test_key(&c, &azure.body(&key)).await;

    assert_eq!(checklist["passed"], true, "{checklist}");
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_slow_vault_answers_unreachable_within_the_time_out() {
    let azure = Azure::new().await;
    let c = azure.console_with(&[("CMEK_KMS_TIMEOUT", "1s")]).await;
    let key = azure.key(&c, json!({})).await;
    // First a working check: the vault's tenant, token and client are all cached.
    assert_eq!(test_key(&c, &azure.body(&key)).await["passed"], true);
    azure.patch_vault(json!({ "delay_seconds": 20 })).await;

    unreachable_within_the_time_out(&c, &azure.body(&key)).await;
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_slow_vault_and_a_slow_authority_are_unreachable_from_the_first_call() {
    let azure = Azure::new().await;
    let c = azure.console_with(&[("CMEK_KMS_TIMEOUT", "1s")]).await;
    let key = azure.key(&c, json!({})).await;
    azure.patch_vault(json!({ "delay_seconds": 20 })).await;
    unreachable_within_the_time_out(&c, &azure.body(&key)).await;

    // The vault answers again, but the tenant's token endpoint is slow.
    azure.patch_vault(json!({ "delay_seconds": 0 })).await;
    azure
        .standin
        .post(
            "/tenants",
            json!({ "tenant_id": azure.tenant, "service_principals": [azure.app_id],
                    "token_delay_seconds": 20 }),
        )
        .await;
    unreachable_within_the_time_out(&c, &azure.body(&key)).await;
}

#[tokio::test]
async fn a_vault_nobody_listens_on_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let template = format!("https://127.0.0.1:{closed}/{{vault}}");
    let app = spawn_app_with(&[
        ("CMEK_AZURE_APP_ID", "00000000-0000-4000-8000-000000000001"),
        ("CMEK_AZURE_CLIENT_SECRET", "s"),
        ("CMEK_AZURE_VAULT_URL_TEMPLATE", &template),
        (
            "AZURE_AUTHORITY_HOST",
            &format!("https://127.0.0.1:{closed}"),
        ),
        ("CMEK_KMS_TIMEOUT", "2s"),
    ])
    .await;
    let c = Console::new(app).await;
    let body = azure_body_for(&c, "contoso").await;

    let checklist = test_key(&c, &body).await;

    let reachable = check(&checklist, "reachable");
    assert_eq!(reachable["code"], "Unreachable");
    assert!(
        reachable["fix"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_second_key_in_the_same_region_is_a_conflict() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let (first, second) = (
        azure.key(&c, json!({})).await,
        azure.key(&c, json!({})).await,
    );
    let created = c
        .app
        .post_json(&c.keys_path(), &c.owner, &azure.body(&first))
        .await;
    assert_eq!(created.status(), 201);

    let again = c
        .app
        .post_json(&c.keys_path(), &c.owner, &azure.body(&second))
        .await;

    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["type"], rule("one-key-per-region"));
}

#[tokio::test]
async fn bad_azure_fields_are_refused_at_the_edge_with_each_field_named() {
    let app = spawn_app_with(&[
        ("CMEK_AZURE_APP_ID", "00000000-0000-4000-8000-000000000001"),
        ("CMEK_AZURE_CLIENT_SECRET", "s"),
    ])
    .await;
    let c = Console::new(app).await;
    let (app, owner) = (&c.app, &c.owner);
    let body = json!({ "provider": "azure_key_vault", "region": "us-east-1",
                       "vault_name": "1-bad--vault", "key_name": "has space" });

    let response = app.post_json(&c.keys_path(), owner, &body).await;

    assert_eq!(response.status(), 422);
    let problem = problem(response).await;
    let mut named = fields(&problem);
    named.sort();
    assert_eq!(named, ["key_name", "region", "vault_name"], "{problem}");
}

#[tokio::test]
async fn only_owners_test_and_create_azure_keys() {
    let app = spawn_app_with(&[
        ("CMEK_AZURE_APP_ID", "00000000-0000-4000-8000-000000000001"),
        ("CMEK_AZURE_CLIENT_SECRET", "s"),
    ])
    .await;
    let c = Console::new(app).await;
    let body = azure_body_for(&c, "contoso").await;
    for role in [Role::Member, Role::Auditor] {
        let key = c.app.api_key(role).await;
        for path in [format!("{}/test", c.keys_path()), c.keys_path()] {
            let refused = c.app.post_json(&path, &key, &body).await;
            assert_eq!(refused.status(), 403, "{role:?} {path}");
            assert_eq!(problem(refused).await["type"], rule("owner-only"));
        }
    }
    assert!(c.keys().await.is_empty());
}

/// A well-formed Azure key request for this project (its suffix included); no vault behind it.
async fn azure_body_for(c: &Console, vault: &str) -> Value {
    let key_name = c.key_name("cmek").await;
    json!({ "provider": "azure_key_vault", "region": REGION, "vault_name": vault, "key_name": key_name })
}

#[tokio::test]
async fn without_the_app_settings_azure_is_off_and_says_so() {
    let app = spawn_app_with(&[]).await;
    let c = Console::new(app).await;
    let (app, owner) = (&c.app, &c.owner);
    let body = json!({ "provider": "azure_key_vault", "region": REGION,
                       "vault_name": "contoso", "key_name": "cmek-1" });

    let response = app
        .post_json(&format!("{}/test", c.keys_path()), owner, &body)
        .await;
    assert_eq!(response.status(), 422);
    let refused = problem(response).await;
    assert!(
        refused.to_string().contains("CMEK_AZURE_APP_ID"),
        "{refused}"
    );

    let setup = app
        .get(
            &format!("{}/azure-setup?region={REGION}", c.keys_path()),
            owner,
        )
        .await;
    assert_eq!(setup.status(), 422);
}

#[tokio::test]
async fn the_setup_names_the_app_commands_full_key_name_and_template() {
    let app_id = "2f5d3c1e-0000-4000-8000-00000000abcd";
    let app = spawn_app_with(&[
        ("CMEK_AZURE_APP_ID", app_id),
        ("CMEK_AZURE_APP_NAME", "Platform CMEK"),
        ("CMEK_AZURE_CLIENT_SECRET", "s"),
    ])
    .await;
    let c = Console::new(app).await;
    let (app, owner, project) = (&c.app, &c.owner, &c.project);
    let other = app.create_project(owner, "other", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let setup = |project: String| async move {
        let response = app
                .get(
                    &format!(
                        "/api/v1/projects/{project}/encryption-keys/azure-setup?region=eastus2&key_name_prefix=orders"
                    ),
                    owner,
                )
                .await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };

    let body = setup(project.clone()).await;

    assert_eq!(body["app_id"], app_id);
    assert_eq!(body["app_name"], "Platform CMEK");
    assert_eq!(
        body["create_service_principal_command"],
        format!("az ad sp create --id {app_id}")
    );
    assert_eq!(
        body["show_service_principal_command"],
        format!("az ad sp show --id {app_id} --query id -o tsv")
    );
    let name = body["key_name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with("orders-") && name.len() == "orders-".len() + 8,
        "{name}"
    );
    assert_eq!(
        setup(project.clone()).await["key_name"],
        name,
        "the suffix is kept"
    );
    assert_ne!(
        setup(other).await["key_name"],
        name,
        "each project has its own"
    );
    let template = &body["arm_template"];
    assert_eq!(
        template["parameters"]["location"]["defaultValue"],
        "eastus2"
    );
    assert_eq!(template["parameters"]["keyName"]["defaultValue"], name);
    let resources = template["resources"].as_array().unwrap();
    let vault = &resources[0];
    assert_eq!(vault["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(vault["properties"]["enablePurgeProtection"], true);
    assert_eq!(vault["properties"]["enableRbacAuthorization"], true);
    assert_eq!(resources[1]["type"], "Microsoft.KeyVault/vaults/keys");
    assert_eq!(resources[1]["properties"]["kty"], "RSA");
    assert_eq!(
        resources[2]["type"],
        "Microsoft.Authorization/roleAssignments"
    );
    assert!(
        resources[2]["properties"]["roleDefinitionId"]
            .as_str()
            .unwrap()
            .contains("e147488a-f6f5-4113-8e2d-b22465e65bf6")
    );

    let bad = app
        .get(
            &format!(
                "{}/azure-setup?region=mars&key_name_prefix=no%20spaces",
                c.keys_path()
            ),
            owner,
        )
        .await;
    assert_eq!(bad.status(), 422);
    let mut named = fields(&problem(bad).await);
    named.sort();
    assert_eq!(named, ["region"]);
    let bad_prefix = app
        .get(
            &format!(
                "{}/azure-setup?region=eastus2&key_name_prefix=no%20spaces",
                c.keys_path()
            ),
            owner,
        )
        .await;
    assert_eq!(fields(&problem(bad_prefix).await), ["key_name_prefix"]);
}

#[tokio::test]
async fn bad_azure_settings_stop_the_console_with_the_variable_named() {
    use cmek_console::settings::Settings;
    let id = ("CMEK_AZURE_APP_ID", "00000000-0000-4000-8000-000000000001");
    for (pairs, name) in [
        (
            vec![
                ("CMEK_AZURE_APP_ID", "not-a-guid"),
                ("CMEK_AZURE_CLIENT_SECRET", "s"),
            ],
            "CMEK_AZURE_APP_ID",
        ),
        (vec![id], "CMEK_AZURE_CLIENT_SECRET"),
        (
            vec![
                id,
                ("CMEK_AZURE_CLIENT_SECRET", "s"),
                ("AZURE_AUTHORITY_HOST", "http://login.example"),
            ],
            "AZURE_AUTHORITY_HOST",
        ),
        (
            vec![
                id,
                ("CMEK_AZURE_CLIENT_SECRET", "s"),
                ("CMEK_AZURE_VAULT_URL_TEMPLATE", "https://vault.example"),
            ],
            "CMEK_AZURE_VAULT_URL_TEMPLATE",
        ),
        (
            vec![
                id,
                ("CMEK_AZURE_CLIENT_SECRET", "s"),
                ("CMEK_AZURE_VAULT_URL_TEMPLATE", "http://{vault}.example"),
            ],
            "CMEK_AZURE_VAULT_URL_TEMPLATE",
        ),
        (
            vec![
                id,
                ("CMEK_AZURE_CLIENT_SECRET", "s"),
                (
                    "CMEK_AZURE_VAULT_URL_TEMPLATE",
                    "https://{vault}.example?x=1",
                ),
            ],
            "CMEK_AZURE_VAULT_URL_TEMPLATE",
        ),
        (
            vec![
                id,
                ("CMEK_AZURE_CLIENT_SECRET", "s"),
                ("AZURE_AUTHORITY_HOST", "https://login.example/tenant"),
            ],
            "AZURE_AUTHORITY_HOST",
        ),
    ] {
        let err = Settings::from_vars(&pairs)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with(name), "{pairs:?}: {err}");
    }
    let ok = Settings::from_vars(&[
        id,
        ("CMEK_AZURE_CLIENT_SECRET", "s"),
        (
            "CMEK_AZURE_VAULT_URL_TEMPLATE",
            "https://localhost:8443/{vault}",
        ),
    ])
    .unwrap();
    let azure = ok.azure.unwrap();
    assert_eq!(azure.vault_url("contoso"), "https://localhost:8443/contoso");
    assert!(
        !azure.verify_challenge_resource,
        "a test host is not a vault domain"
    );
    let production = Settings::from_vars(&[
        id,
        ("CMEK_AZURE_CLIENT_SECRET", "s"),
        ("CMEK_ENV", "production"),
    ])
    .unwrap();
    assert!(production.azure.unwrap().verify_challenge_resource);
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_wrapped_data_key_unwraps_only_under_its_own_context() {
    use cmek_console::domain::keys::KeyRef;
    use cmek_console::domain::keys::azure::{KeyName, VaultName};
    use cmek_console::domain::kms::{EncryptionContext, KeyProvider};
    use cmek_console::kms::KmsTimeouts;
    use cmek_console::kms::azure::AzureKeyVault;

    let azure = Azure::new().await;
    let c = azure.console().await;
    let name = azure.key(&c, json!({})).await;
    let settings = azure.settings();
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let settings = cmek_console::settings::Settings::from_vars(&pairs).unwrap();
    let kms = AzureKeyVault::new(settings.azure.unwrap(), KmsTimeouts::default()).unwrap();
    let key = KeyRef::Azure {
        vault: VaultName::parse("vault_name", &azure.vault).unwrap(),
        key_name: KeyName::parse("key_name", &name).unwrap(),
        tenant: Some(azure.tenant.clone()),
    };
    let ours = EncryptionContext::default().with("project_id", "p-1");
    let theirs = EncryptionContext::default().with("project_id", "p-2");

    let data_key = kms.generate_data_key(&key, &ours).await.unwrap();

    assert_eq!(data_key.plaintext.expose().len(), 32);
    let again = kms
        .decrypt_data_key(&key, &data_key.wrapped, &ours)
        .await
        .unwrap();
    assert!(again.same_as(&data_key.plaintext));
    let moved = kms.decrypt_data_key(&key, &data_key.wrapped, &theirs).await;
    assert_eq!(
        moved.err().map(|e| e.code().to_owned()).as_deref(),
        Some("InvalidCiphertext")
    );
    // Nothing of the plaintext shows in the wrapped form.
    assert!(
        !data_key
            .wrapped
            .windows(32)
            .any(|w| w == data_key.plaintext.expose())
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn bare_answers_from_in_front_of_the_vault_are_never_a_revocation() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let key = azure.key(&c, json!({})).await;
    let created = c
        .app
        .post_json(&c.keys_path(), &c.owner, &azure.body(&key))
        .await;
    assert_eq!(created.status(), 201);
    let key_id = c.keys().await[0]["id"].as_str().unwrap().to_owned();

    // A proxy, gateway or firewall appliance answering instead of Key Vault: a status with
    // none of Key Vault's error codes says nothing about the key.
    for (status, body) in [
        (403, ""),
        (404, "<html>Not Found</html>"),
        (400, "Bad Request"),
        (401, ""),
        (500, ""),
        (502, "Bad Gateway"),
        (503, ""),
    ] {
        azure
            .patch_vault(json!({ "fault": { "status": status, "body": body } }))
            .await;
        // A press within 10 s of the last check would answer that check's result.
        c.app.clock.advance(chrono::Duration::seconds(11));
        let checked = c.check_now(&key_id).await;
        assert!(
            checked.status().is_success(),
            "{status}: {}",
            checked.status()
        );
        assert_eq!(
            c.keys().await[0]["status"],
            "unreachable",
            "a bare {status}"
        );
    }
    azure.patch_vault(json!({ "fault": null })).await;
    c.app.clock.advance(chrono::Duration::seconds(11));
    let checked = c.check_now(&key_id).await;
    assert!(checked.status().is_success());
    assert_eq!(c.keys().await[0]["status"], "active");
}
