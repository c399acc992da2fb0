//! Clusters on Azure Key Vault (the stand-in): data keys made here and wrapped by the vault's
//! RSA key, unwrapped with the version that wrapped them after the key rotates, and R10's
//! Azure semantics: a disabled key stops the clusters; re-enabled, the owner resumes them.

use serde_json::{Value, json};

use crate::azure::{Azure, Console, REGION};
use crate::clusters::{get, id, marked, post, put};
use crate::helpers::check;
use crate::key_monitor::{cluster_state, eventually};

/// A saved key and a cluster in the console's project; the key's name and the cluster's id.
async fn azure_cluster(azure: &Azure, c: &Console) -> (String, String) {
    let key = azure.key(c, json!({})).await;
    let created = c
        .app
        .post_json(&c.keys_path(), &c.owner, &azure.body(&key))
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let cluster = c
        .app
        .post_json(
            &format!("/api/v1/projects/{}/clusters", c.project),
            &c.owner,
            &json!({ "name": "orders", "provider": "azure", "regions": [REGION] }),
        )
        .await;
    assert_eq!(cluster.status(), 201, "{}", cluster.text().await.unwrap());
    let cluster: Value = cluster.json().await.unwrap();
    assert_eq!(cluster["provider"], "azure_key_vault");
    assert_eq!(cluster["regions"][0]["region"], REGION);
    (key, id(&cluster))
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn data_wrapped_before_a_rotation_still_unwraps_with_its_version() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("azure", 70_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );

    let rotated = azure.rotate(&key).await;
    let version = rotated["version"].as_str().unwrap();
    let checklist: Value = app
        .post_json(&format!("{}/test", c.keys_path()), owner, &azure.body(&key))
        .await
        .json()
        .await
        .unwrap();
    let rotation = check(&checklist, "rotation");
    assert!(
        rotation["detail"].as_str().unwrap().contains(version),
        "the new version shows: {rotation}"
    );
    assert_eq!(
        post(app, owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    // The resume unwraps the data key: only the old version's RSA key can.
    let resumed = post(app, owner, &format!("/api/v1/clusters/{cluster}/resume")).await;

    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read = get(app, owner, &cluster, "rows").await;
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
    let c = azure
        .console_with(&[("CMEK_KEY_CHECK_INTERVAL", "60s")])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("stop", 10_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );

    azure.patch_key(&key, json!({ "enabled": false })).await;
    // Azure's default policy is stop; a first denial is only suspected, the next confirms.
    app.clock.advance(chrono::Duration::seconds(61));
    eventually("the monitor checked the key", async || {
        app.console.keys().monitor_checks() >= 1
    })
    .await;
    app.clock.advance(chrono::Duration::seconds(16));
    eventually("the key shows disabled", async || {
        c.keys().await[0]["status"] == "disabled"
    })
    .await;
    eventually("the cluster is inaccessible", async || {
        cluster_state(app, owner, &cluster).await == "inaccessible"
    })
    .await;
    assert!(!app.clusters().holds_data_keys(cluster.parse().unwrap()));
    assert_ne!(get(app, owner, &cluster, "rows").await.status(), 200);

    azure.patch_key(&key, json!({ "enabled": true })).await;
    app.clock.advance(chrono::Duration::seconds(70));
    eventually("the key shows active", async || {
        c.keys().await[0]["status"] == "active"
    })
    .await;
    assert_eq!(
        cluster_state(app, owner, &cluster).await,
        "inaccessible",
        "the owner resumes"
    );
    let resumed = post(app, owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read = get(app, owner, &cluster, "rows").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_vault_that_does_not_answer_never_stops_the_clusters() {
    let azure = Azure::new().await;
    let c = azure
        .console_with(&[
            ("CMEK_KEY_CHECK_INTERVAL", "60s"),
            ("CMEK_KMS_TIMEOUT", "1s"),
        ])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (_, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("outage", 5_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );

    // Azure's default policy is stop, but an outage is not a revocation.
    azure.patch_vault(json!({ "delay_seconds": 20 })).await;
    for _ in 0..2 {
        let before = app.console.keys().monitor_checks();
        // An interval and its jitter (at most a tenth of it).
        app.clock.advance(chrono::Duration::seconds(67));
        eventually("the monitor checked the key", async || {
            app.console.keys().monitor_checks() > before
        })
        .await;
    }
    assert_eq!(c.keys().await[0]["status"], "unreachable");
    assert_eq!(cluster_state(app, owner, &cluster).await, "available");
    let read = get(app, owner, &cluster, "rows").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_backup_under_the_vault_key_restores_into_a_new_cluster_and_not_while_the_key_is_disabled()
 {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("backup", 40_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );
    let backup = app.take_backup(owner, &cluster).await;
    assert_eq!(backup["state"], "available");
    let restore = format!("/api/v1/backups/{}/restore", id(&backup));

    azure.patch_key(&key, json!({ "enabled": false })).await;
    let refused = post(app, owner, &restore).await;
    assert_eq!(refused.status(), 409, "a restore needs the key");
    assert!(refused.text().await.unwrap().contains("KeyDisabled"));

    azure.patch_key(&key, json!({ "enabled": true })).await;
    let restored = app.restore_backup(owner, &id(&backup), None).await;
    assert_eq!(restored["state"], "available", "{restored}");
    let copy = id(&restored);
    let read = get(app, owner, &copy, "rows").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn an_older_key_version_still_in_use_is_watched_and_disabling_it_stops_the_cluster() {
    let azure = Azure::new().await;
    let c = azure
        .console_with(&[("CMEK_KEY_CHECK_INTERVAL", "60s")])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster) = azure_cluster(&azure, &c).await;
    let key_id = c.keys().await[0]["id"].as_str().unwrap().to_owned();
    let key_path = format!("{}/{key_id}", c.keys_path());
    let read: Value = app.get(&key_path, owner).await.json().await.unwrap();
    let versions = read["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 1, "{read}");
    let old = versions[0]["version"].as_str().unwrap().to_owned();
    assert_eq!(versions[0]["clusters"], json!(["orders"]));

    // Rotated: the key's current version works, the cluster's data key is under the old one.
    azure.rotate(&key).await;
    azure
        .patch_key(&key, json!({ "version": old, "enabled": false }))
        .await;
    let sweeps = async |seconds: i64| {
        let before = app.console.keys().monitor_checks();
        app.clock.advance(chrono::Duration::seconds(seconds));
        eventually("the monitor checked the key", async || {
            app.console.keys().monitor_checks() > before
        })
        .await;
    };
    let key_read = async || -> Value { app.get(&key_path, owner).await.json().await.unwrap() };
    sweeps(67).await;
    // A first probe only suspects the version; the confirming one records it.
    eventually("the old version is suspected", async || {
        key_read().await["versions"][0]["suspected"] == "disabled"
    })
    .await;
    let read = key_read().await;
    assert_eq!(read["status"], "active", "the key itself works: {read}");
    assert_eq!(read["versions_status"], "versions_ok", "{read}");
    assert_eq!(cluster_state(app, owner, &cluster).await, "available");
    sweeps(16).await;
    eventually("the old version is recorded disabled", async || {
        key_read().await["versions_status"] == "version_revoked"
    })
    .await;
    let read = key_read().await;
    assert_eq!(read["versions"][0]["status"], "disabled");
    assert_eq!(read["versions"][0]["clusters"], json!(["orders"]));
    // Azure's default policy is stop: the cluster whose data key that version wraps stops.
    eventually("the cluster is inaccessible", async || {
        cluster_state(app, owner, &cluster).await == "inaccessible"
    })
    .await;
    // Key Status says so too, though the key itself is active, and names what it breaks.
    let report: Value = app
        .get("/api/v1/key-status", owner)
        .await
        .json()
        .await
        .unwrap();
    let item = &report["items"][0];
    assert_eq!(item["status"], "active");
    assert_eq!(item["versions_status"], "version_revoked", "{report}");
    assert_eq!(item["revoked_versions"][0]["version"], old.as_str());
    assert_eq!(item["revoked_versions"][0]["status"], "disabled");
    assert_eq!(item["clusters"][0]["effect"], "waiting_for_key", "{report}");
    let page = c
        .app
        .signed_in_owner()
        .await
        .get(app.url(&key_path.replace("/api/v1", "")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Key versions in use") && page.contains(&old),
        "the key page shows the version"
    );
    assert!(page.contains("Would not resume"));

    // Re-enabled: recorded at once; the owner resumes the cluster.
    azure
        .patch_key(&key, json!({ "version": old, "enabled": true }))
        .await;
    sweeps(70).await;
    eventually("the old version is active again", async || {
        key_read().await["versions_status"] == "versions_ok"
    })
    .await;
    let resumed = post(app, owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn after_a_rotation_a_rewrap_moves_everything_to_the_current_version_and_the_old_one_can_go()
{
    let azure = Azure::new().await;
    let c = azure.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("azure rewrap", 50_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );
    let backup = id(&app.take_backup(owner, &cluster).await);
    app.backup_when_done(owner, &backup).await;
    let key_id = id(&c.keys().await[0]);
    let key_path = format!("{}/{key_id}", c.keys_path());
    let read = async || -> Value { app.get(&key_path, owner).await.json().await.unwrap() };
    let old = read().await["versions"][0]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = azure.rotate(&key).await;
    let current = rotated["version"].as_str().unwrap().to_owned();
    let impact: Value = app
        .get(&format!("{key_path}/impact"), owner)
        .await
        .json()
        .await
        .unwrap();
    let disable_old = |impact: &Value| {
        impact["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["action"] == "disable_version" && v["version"] == old.as_str())
            .cloned()
    };
    assert_eq!(
        disable_old(&impact).unwrap()["safe"],
        false,
        "before: {impact}"
    );

    let started = post(app, owner, &format!("{key_path}/rewrap")).await;
    assert_eq!(started.status(), 202, "{}", started.text().await.unwrap());
    eventually("the re-wrap ends", async || {
        read().await["change"]["state"] != "rewrapping"
    })
    .await;
    let change = read().await["change"].clone();
    assert_eq!(change["state"], "done", "{change}");
    assert_eq!(
        change["done"], 2,
        "the cluster's data key and the backup's: {change}"
    );
    assert_eq!(change["target_version"], current.as_str());
    let versions = read().await["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    assert_eq!(versions[0]["version"], current.as_str());
    // The preview says disabling the old version is safe now (it wraps nothing, so it is
    // not even listed), and it is right: disabled, nothing breaks.
    let impact: Value = app
        .get(&format!("{key_path}/impact"), owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        disable_old(&impact).is_none_or(|v| v["safe"] == true),
        "after: {impact}"
    );
    azure
        .patch_key(&key, json!({ "version": old, "enabled": false }))
        .await;
    assert_eq!(
        post(app, owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    let resumed = post(app, owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let rows = get(app, owner, &cluster, "rows")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(rows.as_ref(), bytes.as_slice());
    let restored = app.restore_backup(owner, &backup, None).await;
    assert_eq!(restored["state"], "available", "{restored}");
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn a_vault_that_moved_tenant_is_followed_only_once_it_unwraps_a_data_key_there() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("repin", 20_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );
    let key_id = id(&c.keys().await[0]);
    let key_path = format!("{}/{key_id}", c.keys_path());
    let repin = async |who: &str| post(app, who, &format!("{key_path}/repin")).await;

    // Nothing moved: nothing to re-pin. Members may not.
    assert_eq!(repin(owner).await.status(), 409);
    let member = app
        .api_key(cmek_console::domain::identity::Role::Member)
        .await;
    assert_eq!(repin(&member).await.status(), 403);

    // The vault now answers for another tenant, where the platform has a service principal.
    let elsewhere = uuid::Uuid::new_v4().to_string();
    azure
        .standin
        .post(
            "/tenants",
            json!({ "tenant_id": elsewhere, "service_principals": [azure.app_id] }),
        )
        .await;
    azure.patch_vault(json!({ "tenant_id": elsewhere })).await;

    // The version that wrapped the data key is disabled there: no proof, no re-pin.
    let read: Value = app.get(&key_path, owner).await.json().await.unwrap();
    let version = read["versions"][0]["version"].as_str().unwrap().to_owned();
    azure
        .patch_key(&key, json!({ "version": version, "enabled": false }))
        .await;
    let refused = repin(owner).await;
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("could not unwrap"),
        "{problem}"
    );

    // It unwraps there: the key follows the vault, audited, and works again.
    azure
        .patch_key(&key, json!({ "version": version, "enabled": true }))
        .await;
    let repinned = repin(owner).await;
    assert_eq!(repinned.status(), 200, "{}", repinned.text().await.unwrap());
    let checked: Value = c.check_now(&key_id).await.json().await.unwrap();
    assert_eq!(checked["status"], "active", "{checked}");
    let audit: Value = app
        .get("/api/v1/audit-events?action=encryption_key.repinned", owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        audit["items"][0]["detail"]["to_tenant"],
        elsewhere.as_str(),
        "{audit}"
    );
    let refusals: Value = app
        .get(
            "/api/v1/audit-events?action=encryption_key.repin_refused",
            owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refusals["items"].as_array().unwrap().len(), 1, "{refusals}");
    assert_eq!(
        post(app, owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    assert_eq!(
        post(app, owner, &format!("/api/v1/clusters/{cluster}/resume"))
            .await
            .status(),
        200
    );
    assert_eq!(
        get(app, owner, &cluster, "rows")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        bytes.as_slice()
    );
}

#[tokio::test]
#[ignore = "needs the Azure Key Vault stand-in (scripts/test starts it)"]
async fn replacing_a_vault_key_moves_the_cluster_and_its_backup_and_the_old_key_can_go() {
    let azure = Azure::new().await;
    let c = azure.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (old_key, cluster) = azure_cluster(&azure, &c).await;
    let bytes = marked("azure replace", 40_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );
    let backup = id(&app.take_backup(owner, &cluster).await);
    app.backup_when_done(owner, &backup).await;
    let old = id(&c.keys().await[0]);
    let old_path = format!("{}/{old}", c.keys_path());
    let new_key = azure.key(&c, json!({})).await;

    let started = app
        .post_json(&format!("{old_path}/replace"), owner, &azure.body(&new_key))
        .await;
    assert_eq!(started.status(), 202, "{}", started.text().await.unwrap());
    let read = async || -> Value { app.get(&old_path, owner).await.json().await.unwrap() };
    eventually("the replacement ends", async || {
        read().await["change"]["state"] != "rewrapping"
    })
    .await;
    let change = read().await["change"].clone();
    assert_eq!(change["state"], "done", "{change}");
    assert_eq!(change["done"], 2, "{change}");
    assert_eq!(read().await["versions"], json!([]));

    // The old key goes, then its vault key is disabled: nothing breaks.
    assert_eq!(app.delete(&old_path, owner).await.status(), 204);
    azure.patch_key(&old_key, json!({ "enabled": false })).await;
    assert_eq!(
        post(app, owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    let resumed = post(app, owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let rows = get(app, owner, &cluster, "rows")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(rows.as_ref(), bytes.as_slice());
    let restored = app.restore_backup(owner, &backup, None).await;
    assert_eq!(restored["state"], "available", "{restored}");
    let copy = get(app, owner, &id(&restored), "rows")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(copy.as_ref(), bytes.as_slice());
}
