//! Clusters on Azure Key Vault (the stand-in): data keys made here and wrapped by the vault's
//! RSA key, unwrapped with the version that wrapped them after the key rotates, and R10's
//! Azure semantics: a disabled key stops the clusters; re-enabled, the owner resumes them.

use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::azure::{Azure, REGION};
use crate::clusters::{get, id, marked, post, put};
use crate::helpers::TestApp;
use crate::key_monitor::eventually;

async fn azure_cluster(azure: &Azure, app: &TestApp, owner: &str, key: &str) -> (String, String) {
    let project = id(&app.create_project(owner, "azure", true).await);
    let created = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys"),
            owner,
            &azure.body(key),
        )
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let cluster = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            owner,
            &json!({ "name": "orders", "provider": "azure", "regions": [REGION] }),
        )
        .await;
    assert_eq!(cluster.status(), 201, "{}", cluster.text().await.unwrap());
    let cluster: Value = cluster.json().await.unwrap();
    assert_eq!(cluster["provider"], "azure_key_vault");
    assert_eq!(cluster["regions"][0]["region"], REGION);
    (project, id(&cluster))
}

async fn state(app: &TestApp, owner: &str, cluster: &str) -> String {
    let body: Value = app
        .get(&format!("/api/v1/clusters/{cluster}"), owner)
        .await
        .json()
        .await
        .unwrap();
    body["state"].as_str().unwrap().to_owned()
}

async fn key_status(app: &TestApp, owner: &str, project: &str) -> String {
    let body: Value = app
        .get(
            &format!("/api/v1/projects/{project}/encryption-keys"),
            owner,
        )
        .await
        .json()
        .await
        .unwrap();
    body["items"][0]["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn data_wrapped_before_a_rotation_still_unwraps_with_its_version() {
    let azure = Azure::new().await;
    let key = azure.key(json!({})).await;
    let app = azure.app().await;
    let owner = app.api_key(Role::Owner).await;
    let (_, cluster) = azure_cluster(&azure, &app, &owner, &key).await;
    let bytes = marked("azure", 70_000);
    assert_eq!(
        put(&app, &owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );

    azure.rotate(&key).await;
    assert_eq!(
        post(&app, &owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    // The resume unwraps the data key: only the old version's RSA key can.
    let resumed = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;

    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read = get(&app, &owner, &cluster, "rows").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let requests = azure
        .standin
        .control(reqwest::Method::GET, "/requests", Value::Null)
        .await;
    let unwraps: Vec<&str> = requests
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["path"].as_str())
        .filter(|p| {
            p.contains(&format!("/{}/keys/{key}/", azure.vault)) && p.ends_with("/unwrapkey")
        })
        .collect();
    assert!(!unwraps.is_empty());
    assert!(
        unwraps.iter().all(|p| !p.contains("//")),
        "every unwrap names its version: {unwraps:?}"
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_disabled_key_stops_the_clusters_and_the_owner_resumes_them_once_enabled() {
    let azure = Azure::new().await;
    let key = azure.key(json!({})).await;
    let app = azure.app_with(&[("CMEK_KEY_CHECK_INTERVAL", "60s")]).await;
    let owner = app.api_key(Role::Owner).await;
    let (project, cluster) = azure_cluster(&azure, &app, &owner, &key).await;
    let bytes = marked("stop", 10_000);
    assert_eq!(
        put(&app, &owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );

    azure.patch_key(&key, json!({ "enabled": false })).await;
    // Azure's default policy is stop; a first denial is only suspected, the next confirms.
    app.clock.advance(chrono::Duration::seconds(61));
    eventually("the monitor checked the key", async || {
        app.console.monitor_checks() >= 1
    })
    .await;
    app.clock.advance(chrono::Duration::seconds(16));
    eventually("the key shows disabled", async || {
        key_status(&app, &owner, &project).await == "disabled"
    })
    .await;
    eventually("the cluster is inaccessible", async || {
        state(&app, &owner, &cluster).await == "inaccessible"
    })
    .await;
    assert!(!app.console.holds_data_keys(cluster.parse().unwrap()));
    assert_ne!(get(&app, &owner, &cluster, "rows").await.status(), 200);

    azure.patch_key(&key, json!({ "enabled": true })).await;
    app.clock.advance(chrono::Duration::seconds(70));
    eventually("the key shows active", async || {
        key_status(&app, &owner, &project).await == "active"
    })
    .await;
    assert_eq!(
        state(&app, &owner, &cluster).await,
        "inaccessible",
        "the owner resumes"
    );
    let resumed = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read = get(&app, &owner, &cluster, "rows").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
}
