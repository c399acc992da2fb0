use std::os::unix::fs::PermissionsExt;

use cmek_console::domain::identity::Role;
use cmek_console::domain::keys::KeyRef;
use cmek_console::domain::kms::{EncryptionContext, KeyProvider};
use cmek_console::domain::local_kms::LocalKeyAction;
use cmek_console::kms::local::LocalKms;
use serde_json::{Value, json};

use crate::helpers::{problem, rule, spawn_app, spawn_app_with};

async fn local_key(app: &crate::helpers::TestApp, name: &str) -> uuid::Uuid {
    let operator = app.console.identity().operator(None).await.unwrap();
    app.console
        .keys()
        .create_local_key(&operator, name)
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_local_key_passes_the_checklist_and_is_created() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "dev", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_id = local_key(&app, "dev key").await;

    let response = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys"),
            &owner,
            &json!({ "provider": "local", "region": "eu-central-1", "key_id": key_id }),
        )
        .await;

    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "local");
    assert_eq!(body["key_id"], key_id.to_string());
    assert_eq!(body["checks"]["passed"], true);
}

#[tokio::test]
async fn a_disabled_local_key_is_refused_for_real() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "dev", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_id = local_key(&app, "dev key").await;
    let operator = app.console.identity().operator(None).await.unwrap();
    app.console
        .keys()
        .change_local_key(&operator, key_id, LocalKeyAction::Disable)
        .await
        .unwrap();

    let response = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys/test"),
            &owner,
            &json!({ "provider": "local", "region": "eu-central-1", "key_id": key_id }),
        )
        .await;

    let checklist: Value = response.json().await.unwrap();
    assert_eq!(checklist["passed"], false);
    let generate = checklist["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "generate_data_key")
        .unwrap();
    assert_eq!(generate["code"], "DisabledException");
}

#[tokio::test]
async fn rotation_keeps_older_data_keys_readable_and_disabling_stops_both() {
    let app = spawn_app().await;
    let key_id = local_key(&app, "rotating").await;
    let operator = app.console.identity().operator(None).await.unwrap();
    let dir = tempdir_of(&app);
    let kms = LocalKms::open(&dir, app.db().await).unwrap();
    let key = KeyRef::Local {
        key_id,
        organization_id: operator.organization_id,
    };
    let context = EncryptionContext::default().with("cluster", "c1");
    let before = kms.generate_data_key(&key, &context).await.unwrap();

    app.console
        .keys()
        .change_local_key(&operator, key_id, LocalKeyAction::Rotate)
        .await
        .unwrap();
    let after = kms.generate_data_key(&key, &context).await.unwrap();

    let old = kms
        .decrypt_data_key(&key, &before.wrapped, &context)
        .await
        .unwrap();
    assert!(old.same_as(&before.plaintext));
    assert!(
        kms.decrypt_data_key(&key, &after.wrapped, &context)
            .await
            .unwrap()
            .same_as(&after.plaintext)
    );
    let other_context = EncryptionContext::default().with("cluster", "c2");
    assert!(
        kms.decrypt_data_key(&key, &before.wrapped, &other_context)
            .await
            .is_err(),
        "bound to its context"
    );

    app.console
        .keys()
        .change_local_key(&operator, key_id, LocalKeyAction::Disable)
        .await
        .unwrap();
    assert!(
        kms.decrypt_data_key(&key, &before.wrapped, &context)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_master_key_file_is_private_and_key_material_is_stored_wrapped() {
    let app = spawn_app().await;
    local_key(&app, "secret").await;

    let master = tempdir_of(&app).join("local-kms-master.key");
    let mode = std::fs::metadata(&master).unwrap().permissions().mode() & 0o777;

    assert_eq!(mode, 0o600);
    let master_bytes = std::fs::read(&master).unwrap();
    assert_eq!(master_bytes.len(), 32);
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.db().await;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT material FROM local_key_versions",
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: Vec<u8> = row.try_get("", "material").unwrap();
    assert_eq!(stored.len(), 12 + 32 + 16, "nonce, sealed material, tag");
}

#[tokio::test]
async fn production_refuses_the_local_kms() {
    let app = spawn_app_with(&[("CMEK_ENV", "production")]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "prod", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys"),
            &owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": uuid::Uuid::now_v7() }),
        )
        .await;

    assert_eq!(response.status(), 403);
    assert_eq!(
        problem(response).await["type"],
        rule("local-kms-not-in-production")
    );
    let operator = app.console.identity().operator(None).await.unwrap();
    assert!(
        app.console
            .keys()
            .create_local_key(&operator, "x")
            .await
            .is_err()
    );
}

fn tempdir_of(app: &crate::helpers::TestApp) -> std::path::PathBuf {
    app.data_dir()
}

#[tokio::test]
async fn scripts_manage_local_keys_through_the_api_and_a_disabled_key_fails_its_test() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let member = app.api_key(Role::Member).await;

    let created = app
        .post_json("/api/v1/local-kms/keys", &owner, &json!({ "name": "demo" }))
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let key: Value = created.json().await.unwrap();
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/local-kms/keys/{id}"));
    let read: Value = app.get(&location, &member).await.json().await.unwrap();
    assert_eq!(read["name"], "demo");
    assert_eq!(
        (key["enabled"].clone(), key["version"].clone()),
        (json!(true), json!(1))
    );

    let listed: Value = app
        .get("/api/v1/local-kms/keys", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());

    // Members read; only owners change (R2).
    let refused = app
        .post_json("/api/v1/local-kms/keys", &member, &json!({ "name": "x" }))
        .await;
    assert_eq!(refused.status(), 403);
    let refused = app
        .post_json(
            &format!("/api/v1/local-kms/keys/{id}/disable"),
            &member,
            &json!({}),
        )
        .await;
    assert_eq!(refused.status(), 403);

    let press = async |action: &str| -> Value {
        let response = app
            .post_json(
                &format!("/api/v1/local-kms/keys/{id}/{action}"),
                &owner,
                &json!({}),
            )
            .await;
        assert_eq!(response.status(), 200, "{action}");
        response.json().await.unwrap()
    };
    assert_eq!(press("rotate").await["version"], 2);
    assert_eq!(press("disable").await["enabled"], false);
    let project = app.create_project(&owner, "dev", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tested: Value = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys/test"),
            &owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": id }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        tested["passed"], false,
        "a disabled local key plays a revoked one"
    );

    assert_eq!(press("enable").await["enabled"], true);
    let unknown = app
        .post_json(
            &format!("/api/v1/local-kms/keys/{}/enable", uuid::Uuid::now_v7()),
            &owner,
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn production_refuses_the_local_kms_api() {
    let app = spawn_app_with(&[("CMEK_ENV", "production")]).await;
    let owner = app.api_key(Role::Owner).await;
    for response in [
        app.get("/api/v1/local-kms/keys", &owner).await,
        app.post_json("/api/v1/local-kms/keys", &owner, &json!({ "name": "x" }))
            .await,
    ] {
        assert_eq!(response.status(), 403);
        assert_eq!(
            problem(response).await["type"],
            rule("local-kms-not-in-production")
        );
    }
}
