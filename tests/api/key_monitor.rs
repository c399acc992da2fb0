//! The key monitor inside `serve`, driven by moving the console's clock: a revocation is
//! acted on only once a second probe confirms it, then the project's policy applies to its
//! clusters; a single denial followed by success changes nothing; two instances on one
//! database check each key once per interval.

use std::time::Duration;

use cmek_console::domain::local_kms::LocalKeyAction;
use serde_json::{Value, json};

use crate::clusters::{Fixture, id, local_cmek_with, post, read_cluster};
use crate::helpers::TestApp;

const EVERY_MINUTE: [(&str, &str); 1] = [("CMEK_KEY_CHECK_INTERVAL", "60s")];

/// Waits (the monitor ticks every second) until `done` holds, for at most 10 s.
pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn key(f: &Fixture) -> Value {
    let keys: Value = f
        .app
        .get(
            &format!("/api/v1/projects/{}/encryption-keys", f.project),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    let key = keys["items"][0]["id"].as_str().unwrap().to_owned();
    f.app
        .get(
            &format!("/api/v1/projects/{}/encryption-keys/{key}", f.project),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap()
}

pub async fn cluster_state(app: &TestApp, owner: &str, cluster: &str) -> String {
    read_cluster(app, owner, cluster).await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn local_key(f: &Fixture, action: LocalKeyAction) {
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[0].1, action)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_confirmed_revocation_stops_the_clusters_of_a_stop_project_and_recovery_shows() {
    let f = local_cmek_with(&["us-east-1"], &EVERY_MINUTE).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let changed = f
        .app
        .patch_json(
            &format!("/api/v1/projects/{}", f.project),
            &f.owner,
            &json!({ "revocation_policy": "stop" }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    local_key(&f, LocalKeyAction::Disable).await;

    // The first probe after an interval only suspects.
    f.app.clock.advance(chrono::Duration::seconds(61));
    eventually("the monitor checked the key", async || {
        f.app.console.keys().monitor_checks() >= 1
    })
    .await;
    assert_eq!(
        key(&f).await["status"],
        "active",
        "one denial is not a revocation"
    );
    assert_eq!(cluster_state(&f.app, &f.owner, &cluster).await, "available");

    // The second, a quarter interval later, confirms; the policy stops the cluster.
    f.app.clock.advance(chrono::Duration::seconds(16));
    eventually("the key shows disabled", async || {
        key(&f).await["status"] == "disabled"
    })
    .await;
    // The status is recorded first, then the clusters are stopped.
    eventually("the cluster is inaccessible", async || {
        cluster_state(&f.app, &f.owner, &cluster).await == "inaccessible"
    })
    .await;
    assert!(!f.app.clusters().holds_data_keys(cluster.parse().unwrap()));
    let read = key(&f).await;
    assert_eq!(read["history"][0]["from"], "active");
    assert_eq!(read["history"][0]["to"], "disabled");
    let audit: Value = f
        .app
        .get(
            "/api/v1/audit-events?action=encryption_key.status_changed",
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);

    // Enabled again: the next check shows it active, and the owner resumes the cluster.
    local_key(&f, LocalKeyAction::Enable).await;
    f.app.clock.advance(chrono::Duration::seconds(70));
    eventually("the key shows active", async || {
        key(&f).await["status"] == "active"
    })
    .await;
    assert_eq!(key(&f).await["history"][0]["to"], "active");
    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
}

#[tokio::test]
async fn a_single_denial_followed_by_success_is_not_acted_on() {
    let f = local_cmek_with(&["us-east-1"], &EVERY_MINUTE).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    f.app
        .patch_json(
            &format!("/api/v1/projects/{}", f.project),
            &f.owner,
            &json!({ "revocation_policy": "stop" }),
        )
        .await;
    local_key(&f, LocalKeyAction::Disable).await;
    f.app.clock.advance(chrono::Duration::seconds(61));
    eventually("the first probe", async || {
        f.app.console.keys().monitor_checks() >= 1
    })
    .await;

    local_key(&f, LocalKeyAction::Enable).await;
    f.app.clock.advance(chrono::Duration::seconds(16));
    eventually("the second probe", async || {
        f.app.console.keys().monitor_checks() >= 2
    })
    .await;

    let read = key(&f).await;
    assert_eq!(read["status"], "active");
    assert!(read["history"].as_array().unwrap().is_empty(), "{read}");
    assert_eq!(cluster_state(&f.app, &f.owner, &cluster).await, "available");
}

#[tokio::test]
async fn two_instances_on_one_database_check_each_key_once_per_interval() {
    let regions = [
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "eu-central-1",
    ];
    let f = local_cmek_with(&regions, &EVERY_MINUTE).await;
    let second = f.app.another_instance_with(&EVERY_MINUTE).await;

    f.app.clock.advance(chrono::Duration::seconds(61));
    second.clock.advance(chrono::Duration::seconds(61));
    let total = || f.app.console.keys().monitor_checks() + second.console.keys().monitor_checks();
    eventually("every key was checked", async || {
        total() >= regions.len() as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    assert_eq!(
        total(),
        regions.len() as u64,
        "each key once, between the two instances"
    );
}

#[tokio::test]
async fn a_sweep_of_many_batches_checks_every_key() {
    // Concurrency 2 leases 16 keys at a time: 60 keys take four leases, each while probes
    // of the batch before are writing. (A sweep whose probes were not polled during a lease
    // waited for their write lock for ever, and stopped the monitor.)
    let regions: Vec<&str> = cmek_console::domain::keys::region::AWS_REGIONS
        .iter()
        .take(20)
        .map(|(r, _)| *r)
        .collect();
    let settings = [
        ("CMEK_KEY_CHECK_INTERVAL", "60s"),
        ("CMEK_KEY_CHECK_CONCURRENCY", "2"),
    ];
    let f = local_cmek_with(&regions, &settings).await;
    for name in ["second", "third"] {
        let project = f.app.create_project(&f.owner, name, true).await;
        for (region, local) in &f.local_keys {
            let created = f
                .app
                .post_json(
                    &format!(
                        "/api/v1/projects/{}/encryption-keys",
                        project["id"].as_str().unwrap()
                    ),
                    &f.owner,
                    &json!({ "provider": "local", "region": region, "key_id": local }),
                )
                .await;
            assert_eq!(created.status(), 201);
        }
    }

    f.app.clock.advance(chrono::Duration::seconds(61));
    for _ in 0..300 {
        if f.app.console.keys().monitor_checks() >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.app.console.keys().monitor_checks(), 60, "every key, once");
}
