//! Clusters on Google Cloud KMS (the stand-in): data keys made here and encrypted by Cloud KMS
//! with their encryption context as additional authenticated data, each recording the key
//! version that encrypted it, and R10's Google Cloud default: a disabled key version stops the
//! clusters whose data keys it protects; enabled again, the owner resumes them.

use serde_json::{Value, json};

use crate::azure::Console;
use crate::clusters::{get, id, marked, pause_resume_and_read, post, put};
use crate::gcp::{Gcp, REGION};
use crate::key_monitor::{cluster_state, eventually};

/// A saved key in `region` of the console's project; its full name.
async fn saved_key(gcp: &Gcp, c: &Console, region: &str) -> String {
    let key = gcp.key(c, region, region, json!({})).await;
    let mut body = Gcp::body(&key);
    body["region"] = json!(region);
    let created = c.app.post_json(&c.keys_path(), &c.owner, &body).await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    key
}

async fn cluster_in(c: &Console, regions: &[&str]) -> String {
    let cluster = c
        .app
        .post_json(
            &format!("/api/v1/projects/{}/clusters", c.project),
            &c.owner,
            &json!({ "name": "orders", "provider": "gcp", "regions": regions }),
        )
        .await;
    assert_eq!(cluster.status(), 201, "{}", cluster.text().await.unwrap());
    let cluster: Value = cluster.json().await.unwrap();
    assert_eq!(cluster["provider"], "gcp_kms");
    id(&cluster)
}

/// A saved key in the region, a cluster there, and `size` bytes written to its `rows`: the
/// key's name, the cluster's id and the bytes.
async fn written(gcp: &Gcp, c: &Console, label: &str, size: usize) -> (String, String, Vec<u8>) {
    let key = saved_key(gcp, c, REGION).await;
    let cluster = cluster_in(c, &[REGION]).await;
    let bytes = marked(label, size);
    let put = put(&c.app, &c.owner, &cluster, "rows", bytes.clone()).await;
    assert_eq!(put.status(), 201);
    (key, cluster, bytes)
}

async fn sweep(c: &Console, seconds: i64) {
    let app = &c.app;
    let before = app.console.keys().monitor_checks();
    app.clock.advance(chrono::Duration::seconds(seconds));
    eventually("the monitor checked the key", async || {
        app.console.keys().monitor_checks() > before
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_cluster_writes_pauses_and_resumes_with_the_version_that_encrypted_its_data_key() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster, bytes) = written(&gcp, &c, "gcp", 70_000).await;

    // The key page knows which version encrypted the cluster's data key.
    let key_id = c.keys().await[0]["id"].as_str().unwrap().to_owned();
    let read: Value = app
        .get(&format!("{}/{key_id}", c.keys_path()), owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["versions"][0]["version"], "1", "{read}");
    assert_eq!(read["versions"][0]["clusters"], json!(["orders"]));

    // Rotated: version 2 is the primary; the data key still decrypts with version 1.
    gcp.act(&key, "rotate", json!({})).await;
    pause_resume_and_read(app, owner, &cluster, "rows", &bytes).await;

    // Every encrypt and decrypt carried the context as additional authenticated data: the
    // stand-in refuses a decrypt under any other (checked on the adapter itself below).
    let requests = gcp
        .standin
        .control(reqwest::Method::GET, "requests", Value::Null)
        .await;
    let ops: Vec<&str> = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(&key)))
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert!(
        ops.contains(&"encrypt") && ops.contains(&"decrypt"),
        "{ops:?}"
    );
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_disabled_primary_stops_the_cluster_within_an_interval_and_the_owner_resumes_it() {
    let gcp = Gcp::new().await;
    let c = gcp
        .console_with(&[("CMEK_KEY_CHECK_INTERVAL", "60s")])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster, bytes) = written(&gcp, &c, "stop", 10_000).await;

    gcp.act(&Gcp::version(&key, 1), "disable", json!({})).await;
    // Google Cloud's default policy is stop: suspected on one probe, confirmed by the next,
    // well within the interval.
    sweep(&c, 67).await;
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
    let events: Value = app
        .get(
            "/api/v1/audit-events?action=encryption_key.status_changed",
            owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(events.to_string().contains("disabled"), "{events}");

    gcp.act(&Gcp::version(&key, 1), "enable", json!({})).await;
    sweep(&c, 70).await;
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
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn an_older_version_in_use_is_watched_and_its_destruction_scheduled_stops_the_cluster() {
    let gcp = Gcp::new().await;
    let c = gcp
        .console_with(&[("CMEK_KEY_CHECK_INTERVAL", "60s")])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let key = saved_key(&gcp, &c, REGION).await;
    let cluster = cluster_in(&c, &[REGION]).await;
    let key_id = c.keys().await[0]["id"].as_str().unwrap().to_owned();
    let key_path = format!("{}/{key_id}", c.keys_path());

    // Rotated, then version 1 (which encrypted the cluster's data key) is scheduled for
    // destruction: the key itself is fine, the cluster's version is not.
    gcp.act(&key, "rotate", json!({})).await;
    gcp.act(&Gcp::version(&key, 1), "disable", json!({})).await;
    gcp.act(&Gcp::version(&key, 1), "scheduleDestroy", json!({}))
        .await;
    let key_read = async || -> Value { app.get(&key_path, owner).await.json().await.unwrap() };
    sweep(&c, 67).await;
    sweep(&c, 16).await;
    eventually("the old version is recorded", async || {
        key_read().await["versions_status"] == "version_revoked"
    })
    .await;
    let read = key_read().await;
    assert_eq!(read["status"], "active", "{read}");
    assert_eq!(read["versions"][0]["version"], "1");
    assert_eq!(read["versions"][0]["status"], "pending_deletion", "{read}");
    eventually("the cluster is inaccessible", async || {
        cluster_state(app, owner, &cluster).await == "inaccessible"
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_cloud_kms_outage_never_stops_the_clusters() {
    let gcp = Gcp::new().await;
    let c = gcp
        .console_with(&[
            ("CMEK_KEY_CHECK_INTERVAL", "60s"),
            ("CMEK_KMS_TIMEOUT", "1s"),
        ])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let key = saved_key(&gcp, &c, REGION).await;
    let cluster = cluster_in(&c, &[REGION]).await;
    gcp.standin
        .patch(&key, json!({ "fault": { "status": 503 } }))
        .await;
    sweep(&c, 67).await;
    sweep(&c, 67).await;
    assert_eq!(c.keys().await[0]["status"], "unreachable");
    assert_eq!(cluster_state(app, owner, &cluster).await, "available");
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_backup_restores_into_a_new_cluster_and_not_while_the_version_is_disabled() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster, bytes) = written(&gcp, &c, "backup", 40_000).await;
    let backup = app.take_backup(owner, &cluster).await;
    assert_eq!(backup["state"], "available");
    let restore = format!("/api/v1/backups/{}/restore", id(&backup));

    gcp.act(&Gcp::version(&key, 1), "disable", json!({})).await;
    let refused = post(app, owner, &restore).await;
    assert_eq!(refused.status(), 409, "a restore needs the key");
    assert!(refused.text().await.unwrap().contains("DISABLED"));

    gcp.act(&Gcp::version(&key, 1), "enable", json!({})).await;
    let restored = app.restore_backup(owner, &id(&backup), None).await;
    assert_eq!(restored["state"], "available", "{restored}");
    let read = get(app, owner, &id(&restored), "rows").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_multi_region_cluster_uses_the_key_of_each_location() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let east = saved_key(&gcp, &c, REGION).await;
    let west = saved_key(&gcp, &c, "europe-west1").await;
    let cluster = cluster_in(&c, &[REGION, "europe-west1"]).await;
    let read: Value = app
        .get(&format!("/api/v1/clusters/{cluster}"), owner)
        .await
        .json()
        .await
        .unwrap();
    let refs: Vec<&str> = read["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, [east.as_str(), west.as_str()], "{read}");
    let bytes = marked("multi", 5_000);
    assert_eq!(
        put(app, owner, &cluster, "rows", bytes.clone())
            .await
            .status(),
        201
    );
    // Each location's key encrypted that region's data key.
    let requests = gcp
        .standin
        .control(reqwest::Method::GET, "requests", Value::Null)
        .await;
    for key in [&east, &west] {
        assert!(
            requests
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["operation"] == "encrypt"
                    && r["path"].as_str().is_some_and(|p| p.contains(key.as_str()))),
            "{key} encrypted a data key"
        );
    }
}

/// The adapter on its own: a data key is bound to its context (additional authenticated
/// data), and the wrapped form names the version that encrypted it.
#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_data_key_decrypts_only_under_its_own_context() {
    use cmek_console::domain::keys::KeyRef;
    use cmek_console::domain::keys::gcp::GcpKeyName;
    use cmek_console::domain::kms::{EncryptionContext, KeyProvider, KmsError};
    use cmek_console::kms::KmsTimeouts;
    use cmek_console::kms::gcp::{GcpConfig, GcpKms};

    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let key = gcp.key(&c, REGION, REGION, json!({})).await;
    let kms = GcpKms::new(
        &GcpConfig {
            credentials_file: gcp.key_file.clone().into(),
            endpoint: Some(gcp.standin.url.clone()),
        },
        KmsTimeouts::default(),
    )
    .await
    .unwrap();
    let key = KeyRef::Gcp {
        name: GcpKeyName::parse("key_name", &key).unwrap(),
    };
    let mine = EncryptionContext::default().with("cluster", "a");
    let data_key = kms.generate_data_key(&key, &mine).await.unwrap();
    assert_eq!(
        kms.wrapped_version(&key, &data_key.wrapped).as_deref(),
        Some("1")
    );
    let back = kms
        .decrypt_data_key(&key, &data_key.wrapped, &mine)
        .await
        .unwrap();
    assert!(back.same_as(&data_key.plaintext));
    let theirs = EncryptionContext::default().with("cluster", "b");
    let err = kms
        .decrypt_data_key(&key, &data_key.wrapped, &theirs)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KmsError::Other { code, .. } if code == "INVALID_ARGUMENT"),
        "{err:?}"
    );
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_project_that_chose_keep_running_keeps_its_cluster_running_when_the_key_is_disabled() {
    let gcp = Gcp::new().await;
    let c = gcp
        .console_with(&[("CMEK_KEY_CHECK_INTERVAL", "60s")])
        .await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let changed = app
        .patch_json(
            &format!("/api/v1/projects/{}", c.project),
            owner,
            &json!({ "revocation_policy": "keep_running" }),
        )
        .await;
    assert_eq!(changed.status(), 200, "{}", changed.text().await.unwrap());
    let key = saved_key(&gcp, &c, REGION).await;
    let cluster = cluster_in(&c, &[REGION]).await;
    gcp.act(&Gcp::version(&key, 1), "disable", json!({})).await;
    sweep(&c, 67).await;
    app.clock.advance(chrono::Duration::seconds(16));
    eventually("the key shows disabled", async || {
        c.keys().await[0]["status"] == "disabled"
    })
    .await;
    eventually("the cluster is marked: it would not resume", async || {
        let read: Value = app
            .get(&format!("/api/v1/clusters/{cluster}"), owner)
            .await
            .json()
            .await
            .unwrap();
        read["will_not_resume"].is_string()
    })
    .await;
    assert_eq!(
        cluster_state(app, owner, &cluster).await,
        "available",
        "keep_running overrides stop"
    );
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn after_a_rotation_a_rewrap_moves_everything_to_the_new_primary_and_the_old_version_can_go()
{
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (key, cluster, bytes) = written(&gcp, &c, "gcp rewrap", 30_000).await;
    let backup = id(&app.take_backup(owner, &cluster).await);
    app.backup_when_done(owner, &backup).await;
    let key_path = format!("{}/{}", c.keys_path(), id(&c.keys().await[0]));
    let read = async || -> Value { app.get(&key_path, owner).await.json().await.unwrap() };
    gcp.act(&key, "rotate", json!({})).await;
    let impact: Value = app
        .get(&format!("{key_path}/impact"), owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(impact.to_string().contains("disable_version"), "{impact}");

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
    assert_eq!(change["target_version"], "2");
    let versions = read().await["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    assert_eq!(versions[0]["version"], "2");

    // Version 1 disabled, then destroyed: nothing breaks.
    gcp.act(&Gcp::version(&key, 1), "disable", json!({})).await;
    gcp.act(&Gcp::version(&key, 1), "destroy", json!({})).await;
    pause_resume_and_read(app, owner, &cluster, "rows", &bytes).await;
    let restored = app.restore_backup(owner, &backup, None).await;
    assert_eq!(restored["state"], "available", "{restored}");
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn replacing_a_google_key_moves_the_cluster_and_the_old_key_can_go() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let (app, owner) = (&c.app, c.owner.as_str());
    let (old_key, cluster, bytes) = written(&gcp, &c, "gcp replace", 20_000).await;
    let old_path = format!("{}/{}", c.keys_path(), id(&c.keys().await[0]));
    let new_key = gcp.key(&c, REGION, REGION, json!({})).await;
    let started = app
        .post_json(&format!("{old_path}/replace"), owner, &Gcp::body(&new_key))
        .await;
    assert_eq!(started.status(), 202, "{}", started.text().await.unwrap());
    let read = async || -> Value { app.get(&old_path, owner).await.json().await.unwrap() };
    eventually("the replacement ends", async || {
        read().await["change"]["state"] != "rewrapping"
    })
    .await;
    assert_eq!(read().await["change"]["state"], "done");
    assert_eq!(app.delete(&old_path, owner).await.status(), 204);
    gcp.act(&Gcp::version(&old_key, 1), "disable", json!({}))
        .await;
    pause_resume_and_read(app, owner, &cluster, "rows", &bytes).await;
}
