//! The key monitor against moto: revoking the console's IAM permission is seen as
//! `access_denied` within one interval (confirmed by a second probe) and the project's
//! policy applies; restoring it shows `active` and the cluster can be resumed; a KMS that
//! cannot be reached is `unreachable` at once and clusters are left alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::clusters::{get, id, post, put, read_cluster};
use crate::clusters_aws::{aws_cluster, console_user, grant, revoke};
use crate::helpers::TestApp;
use crate::key_monitor::eventually;
use crate::moto::Moto;

const REGION: &str = "us-east-1";
const EVERY_MINUTE: [(&str, &str); 1] = [("CMEK_KEY_CHECK_INTERVAL", "60s")];

async fn only_key(app: &TestApp, owner: &str) -> Value {
    let status: Value = app
        .get("/api/v1/key-status", owner)
        .await
        .json()
        .await
        .unwrap();
    status["items"][0].clone()
}

async fn stop_policy(app: &TestApp, owner: &str, project: &str) {
    let changed = app
        .patch_json(
            &format!("/api/v1/projects/{project}"),
            owner,
            &json!({ "revocation_policy": "stop" }),
        )
        .await;
    assert_eq!(changed.status(), 200);
}

#[tokio::test]
#[ignore = "needs moto with IAM enforced (scripts/test starts it)"]
async fn a_revoked_iam_grant_is_access_denied_within_an_interval_and_a_restored_one_active() {
    let moto = Moto::iam_admin();
    let (user, key, secret) = console_user(&moto).await;
    let arn = moto.create_key(REGION).await;
    let app = moto.app_with(&key, &secret, &moto.url, &EVERY_MINUTE).await;
    let owner = app.api_key(Role::Owner).await;
    let cluster = aws_cluster(&app, &owner, &[(REGION, &arn)], "orders").await;
    let project = cluster["project_id"].as_str().unwrap().to_owned();
    let cluster = id(&cluster);
    stop_policy(&app, &owner, &project).await;

    revoke(&moto, &user).await;
    app.clock.advance(chrono::Duration::seconds(61));
    eventually("the first probe", async || {
        app.console.keys().monitor_checks() >= 1
    })
    .await;
    assert_eq!(
        only_key(&app, &owner).await["status"],
        "active",
        "suspected only"
    );
    app.clock.advance(chrono::Duration::seconds(16));
    eventually("access_denied", async || {
        only_key(&app, &owner).await["status"] == "access_denied"
    })
    .await;
    let denied = only_key(&app, &owner).await;
    assert!(
        denied["last_error"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{denied}"
    );
    eventually("the cluster is inaccessible", async || {
        read_cluster(&app, &owner, &cluster).await["state"] == "inaccessible"
    })
    .await;

    grant(&moto, &user).await;
    app.clock.advance(chrono::Duration::seconds(70));
    eventually("active again", async || {
        only_key(&app, &owner).await["status"] == "active"
    })
    .await;
    assert_eq!(
        only_key(&app, &owner).await["clusters"][0]["effect"],
        "can_be_resumed"
    );
    let resumed = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200);
    let history: Value = app
        .get(
            &format!(
                "/api/v1/projects/{project}/encryption-keys/{}/history",
                only_key(&app, &owner).await["id"].as_str().unwrap()
            ),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    let steps: Vec<(&str, &str)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["from"].as_str().unwrap(), c["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [("access_denied", "active"), ("active", "access_denied")]
    );
}

/// Forwards to `upstream`; while `down` is set it closes every connection, new and kept
/// alive, as a KMS endpoint that cannot be reached does.
async fn switch_proxy(upstream: &str, down: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if down.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let upstream = upstream.clone();
            let down = down.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    // Connections kept alive from before are cut too.
                    let cut = async {
                        while !down.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut => {}
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn an_unreachable_kms_is_unreachable_at_once_and_clusters_are_left_alone() {
    let moto = Moto::open();
    let arn = moto.create_key(REGION).await;
    let down = Arc::new(AtomicBool::new(false));
    let endpoint = switch_proxy(&moto.url, down.clone()).await;
    let (key, secret) = moto.credentials();
    let app = moto.app_with(key, secret, &endpoint, &EVERY_MINUTE).await;
    let owner = app.api_key(Role::Owner).await;
    let cluster = aws_cluster(&app, &owner, &[(REGION, &arn)], "orders").await;
    let project = cluster["project_id"].as_str().unwrap().to_owned();
    let cluster = id(&cluster);
    stop_policy(&app, &owner, &project).await;
    assert_eq!(
        put(&app, &owner, &cluster, "kept", b"still here".to_vec())
            .await
            .status(),
        201
    );

    down.store(true, Ordering::SeqCst);
    app.clock.advance(chrono::Duration::seconds(61));
    eventually("unreachable", async || {
        only_key(&app, &owner).await["status"] == "unreachable"
    })
    .await;
    // Not a revocation: even under the stop policy the cluster serves on.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        read_cluster(&app, &owner, &cluster).await["state"],
        "available"
    );
    let read = get(&app, &owner, &cluster, "kept").await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.bytes().await.unwrap().as_ref(), b"still here");
    assert_eq!(
        only_key(&app, &owner).await["clusters"][0]["effect"],
        "kms_unreachable"
    );

    down.store(false, Ordering::SeqCst);
    app.clock.advance(chrono::Duration::seconds(70));
    eventually("active again", async || {
        only_key(&app, &owner).await["status"] == "active"
    })
    .await;
    let metrics = app
        .api
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cmek_key_checks_total{provider=\"aws_kms\",result=\"unreachable\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cmek_keys{status=\"active\"} 1"));
    assert!(metrics.contains("cmek_key_check_duration_seconds_count"));
}
