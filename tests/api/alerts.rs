//! Alerts: webhooks signed as Standard Webhooks specifies. Deliveries are checked by another
//! implementation, the Python `standardwebhooks` package, in tests/webhooks/receiver.py (a
//! process per test). Deliveries are queued in the database with the audit event that raises
//! them, retried with backoff (the console's clock is moved), logged, sent once across
//! instances and picked up by another instance.

use std::io::{BufRead, BufReader};

use base64::Engine;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cmek_console::domain::identity::Role;
use cmek_console::domain::local_kms::LocalKeyAction;
use serde_json::{Value, json};

use crate::clusters::{id, local_cmek_with, read_cluster};
use crate::helpers::{TestApp, fields, problem, rule, spawn_app, spawn_app_with};
use crate::moto::service;

/// The receiver process; killed when dropped.
pub struct Receiver {
    pub url: String,
    child: Child,
    client: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Receiver {
    pub fn start() -> Self {
        Self::on(0)
    }

    pub fn on(port: u16) -> Self {
        let mut child = Command::new(service("CMEK_TEST_PYTHON"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/webhooks/receiver.py"
            ))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the webhook receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("receiver said {line:?}"))
            .to_owned();
        Self {
            url,
            child,
            client: reqwest::Client::new(),
        }
    }

    pub async fn configure(&self, config: Value) {
        let answer = self
            .client
            .post(format!("{}/_control/config", self.url))
            .json(&config)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204);
    }

    /// The alerts received, in arrival order: every delivery but the audit log's checkpoints,
    /// which a console sends on its own schedule (tests/api/audit_export.rs reads those).
    pub async fn received(&self) -> Vec<Value> {
        self.received_all()
            .await
            .into_iter()
            .filter(|d| d["body"]["type"] != "audit.checkpoint")
            .collect()
    }

    /// Every delivery received, checkpoints included.
    pub async fn received_all(&self) -> Vec<Value> {
        let body: Value = self
            .client
            .get(format!("{}/_control/received", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    }

    /// Waits (deliveries go out every second, one at a time per webhook) until `n`
    /// deliveries arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..300 {
            let got = self.received().await;
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {n} deliveries, got {:?}", self.received().await);
    }
}

pub async fn add_webhook(app: &TestApp, owner: &str, url: &str) -> (String, String) {
    let created = app
        .post_json(
            "/api/v1/webhooks",
            owner,
            &json!({ "url": format!("{url}/hook"), "description": "on-call" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn send_test(app: &TestApp, owner: &str, webhook: &str) {
    let sent = app
        .api
        .post(app.url(&format!("/api/v1/webhooks/{webhook}/test")))
        .bearer_auth(owner)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
}

async fn deliveries(app: &TestApp, key: &str, webhook: &str) -> Vec<Value> {
    let body: Value = app
        .get(&format!("/api/v1/webhooks/{webhook}/deliveries"), key)
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn only_owners_configure_alerts_auditors_read_them_and_members_are_refused() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let auditor = app.api_key(Role::Auditor).await;
    let member = app.api_key(Role::Member).await;
    let (webhook, secret) = add_webhook(&app, &owner, "http://127.0.0.1:9").await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let listed: Value = app
        .get("/api/v1/webhooks", &auditor)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], webhook.as_str());
    // Its origin only: a path or query may carry a token (issue 18).
    assert_eq!(listed["items"][0]["url"], "http://127.0.0.1:9");
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );
    let read: Value = app
        .get(&format!("/api/v1/webhooks/{webhook}"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(read.get("secret").is_none());

    for key in [&auditor, &member] {
        let refused = app
            .post_json(
                "/api/v1/webhooks",
                key,
                &json!({ "url": "https://example.com/h" }),
            )
            .await;
        assert_eq!(refused.status(), 403);
        let test = app
            .api
            .post(app.url(&format!("/api/v1/webhooks/{webhook}/test")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(test.status(), 403);
        assert_eq!(
            app.delete(&format!("/api/v1/webhooks/{webhook}"), key)
                .await
                .status(),
            403
        );
    }
    let member_list = app.get("/api/v1/webhooks", &member).await;
    assert_eq!(member_list.status(), 403);
    assert_eq!(
        problem(member_list).await["type"],
        rule("owners-and-auditors")
    );
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{webhook}/deliveries"), &member)
            .await
            .status(),
        403
    );

    // Another organization does not see it.
    let stranger = app.stranger_key().await;
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{webhook}"), &stranger)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.delete(&format!("/api/v1/webhooks/{webhook}"), &stranger)
            .await
            .status(),
        404
    );

    // Deleted with its log; audited without the secret.
    assert_eq!(
        app.delete(&format!("/api/v1/webhooks/{webhook}"), &owner)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{webhook}"), &owner)
            .await
            .status(),
        404
    );
    let audit: Value = app
        .get("/api/v1/audit-events?action=webhook.created", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    assert!(!audit.to_string().contains(&secret));
    assert_eq!(
        audit["items"][0]["detail"]["endpoint"], "http://127.0.0.1:9",
        "the log keeps the endpoint's origin, not a path that may carry a token"
    );
    assert!(!audit.to_string().contains("/hook"));
}

#[tokio::test]
async fn webhook_urls_are_checked_at_the_edge() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    for url in [
        "http://alerts.example.com/hook",
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "not a url",
        "",
    ] {
        let refused = app
            .post_json("/api/v1/webhooks", &owner, &json!({ "url": url }))
            .await;
        assert_eq!(refused.status(), 422, "{url}");
        assert_eq!(fields(&problem(refused).await), ["url"], "{url}");
    }
    let unknown = app
        .post_json(
            "/api/v1/webhooks",
            &owner,
            &json!({ "url": "https://example.com/h", "events": ["x"] }),
        )
        .await;
    assert_eq!(unknown.status(), 422);
    let listed: Value = app
        .get("/api/v1/webhooks", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"].as_array().unwrap().is_empty(),
        "nothing half-made"
    );

    // In production: https only, and not to private addresses.
    let production = spawn_app_with(&[("CMEK_ENV", "production")]).await;
    let owner = production.api_key(Role::Owner).await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest",
    ] {
        let refused = production
            .post_json("/api/v1/webhooks", &owner, &json!({ "url": url }))
            .await;
        assert_eq!(refused.status(), 422, "{url}");
    }
    let fine = production
        .post_json(
            "/api/v1/webhooks",
            &owner,
            &json!({ "url": "https://alerts.example.com/cmek" }),
        )
        .await;
    assert_eq!(fine.status(), 201);
}

#[tokio::test]
async fn the_secret_is_kept_only_wrapped() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let (_, secret) = add_webhook(&app, &owner, "http://127.0.0.1:9").await;
    let raw = secret.strip_prefix("whsec_").unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap();
    assert_eq!(key.len(), 32);
    for file in crate::clusters::files_under(&app.data_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for needle in [raw.as_bytes(), key.as_slice()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the secret is in {}",
                file.display()
            );
        }
    }
    // What the database holds (on PostgreSQL too): the wrapped form, not the key.
    use sea_orm::ConnectionTrait;
    let rows = app
        .db()
        .await
        .query_all_raw(sea_orm::Statement::from_string(
            app.db().await.get_database_backend(),
            "SELECT secret_wrapped FROM webhooks",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let wrapped: Vec<u8> = rows[0].try_get_by_index(0).unwrap();
    assert!(wrapped.len() > key.len());
    assert!(!wrapped.windows(key.len()).any(|w| w == key.as_slice()));
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn a_test_event_is_signed_as_standard_webhooks_specifies_and_logged() {
    let receiver = Receiver::start();
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let auditor = app.api_key(Role::Auditor).await;
    let (webhook, secret) = add_webhook(&app, &owner, &receiver.url).await;
    receiver.configure(json!({ "secret": secret })).await;

    send_test(&app, &owner, &webhook).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0]["verified"], true, "{:?}", got[0]);
    assert_eq!(got[0]["path"], "/hook");
    assert_eq!(got[0]["body"]["type"], "webhook.test");
    assert_eq!(got[0]["body"]["data"]["webhook_id"], webhook.as_str());
    assert!(got[0]["id"].as_str().unwrap().starts_with("msg_"));

    // The log, as auditors read it.
    let mut log = Vec::new();
    for _ in 0..50 {
        log = deliveries(&app, &auditor, &webhook).await;
        if log.first().is_some_and(|d| d["state"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["state"], "delivered");
    assert_eq!(log[0]["message_id"], got[0]["id"]);
    assert_eq!(log[0]["log"][0]["attempt"], 1);
    assert_eq!(log[0]["log"][0]["status_code"], 204);

    // A receiver holding another secret refuses the same kind of message.
    receiver
        .configure(json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }))
        .await;
    send_test(&app, &owner, &webhook).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1]["verified"], false);
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn a_failing_receiver_is_retried_with_backoff_under_the_same_message_id() {
    let receiver = Receiver::start();
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let (webhook, secret) = add_webhook(&app, &owner, &receiver.url).await;
    receiver
        .configure(json!({ "secret": secret, "fail": 2, "status": 503 }))
        .await;

    send_test(&app, &owner, &webhook).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0]["answered"], 503);
    // Not again before its time: the first retry is 5 s later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().await.len(), 1);
    app.clock.advance(chrono::Duration::seconds(6));
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1]["answered"], 503);
    // The second retry waits 5 minutes.
    app.clock.advance(chrono::Duration::seconds(60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().await.len(), 2);
    app.clock.advance(chrono::Duration::minutes(5));
    let got = receiver.wait_for(3).await;
    assert_eq!(got[2]["answered"], 204);
    assert_eq!(got[2]["verified"], true);
    assert!(
        got.iter().all(|d| d["id"] == got[0]["id"]),
        "one message id: {got:?}"
    );

    let mut log = Vec::new();
    for _ in 0..50 {
        log = deliveries(&app, &owner, &webhook).await;
        if log[0]["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log[0]["attempts"], 3);
    let codes: Vec<&Value> = log[0]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(503), &json!(503), &json!(204)]);
    assert_eq!(log[0]["log"][0]["error"], "HTTP 503");
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn a_queued_delivery_is_sent_by_another_instance_once_the_receiver_is_back() {
    // The receiver is down when the alert is raised.
    let port = free_port();
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let (webhook, secret) = add_webhook(&app, &owner, &format!("http://127.0.0.1:{port}")).await;
    send_test(&app, &owner, &webhook).await;
    let mut log = Vec::new();
    for _ in 0..50 {
        log = deliveries(&app, &owner, &webhook).await;
        if log.first().is_some_and(|d| d["attempts"] == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log[0]["state"], "pending");
    assert_eq!(
        log[0]["log"][0]["error"],
        "could not connect to the endpoint"
    );
    assert!(log[0]["log"][0]["status_code"].is_null());

    // This instance's clock stands still (it is as good as stopped); another instance on the
    // same database, started after, finds the delivery in the queue and sends it.
    let receiver = Receiver::on(port);
    receiver.configure(json!({ "secret": secret })).await;
    let second = app.another_instance().await;
    second.clock.advance(chrono::Duration::seconds(10));
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0]["verified"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().await.len(), 1, "sent once");
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn two_instances_send_each_delivery_once() {
    let receiver = Receiver::start();
    let app = spawn_app().await;
    let second = app.another_instance().await;
    let owner = app.api_key(Role::Owner).await;
    let (webhook, secret) = add_webhook(&app, &owner, &receiver.url).await;
    // Slow answers: the sends of one instance are still running when the other looks for
    // due deliveries, so only the lease keeps it from sending them too.
    receiver
        .configure(json!({ "secret": secret, "delay": 1.5 }))
        .await;
    // Ten: an organization may send ten test events a minute.
    for _ in 0..10 {
        send_test(&app, &owner, &webhook).await;
    }
    let got = receiver.wait_for(10).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let got_after = receiver.received().await;
    assert_eq!(got_after.len(), 10, "{got:?}");
    let mut ids: Vec<&str> = got_after
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "ten distinct messages, each once");
    assert!(got_after.iter().all(|d| d["verified"] == true));
    drop(second);
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn key_status_changes_and_what_they_do_to_clusters_are_alerted() {
    let receiver = Receiver::start();
    let f = local_cmek_with(&["us-east-1"], &[("CMEK_KEY_CHECK_INTERVAL", "60s")]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let (_, secret) = add_webhook(&f.app, &f.owner, &receiver.url).await;
    receiver.configure(json!({ "secret": secret })).await;
    f.app
        .patch_json(
            &format!("/api/v1/projects/{}", f.project),
            &f.owner,
            &json!({ "revocation_policy": "stop" }),
        )
        .await;
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[0].1, LocalKeyAction::Disable)
        .await
        .unwrap();

    // Suspected, then confirmed a quarter interval later.
    f.app.clock.advance(chrono::Duration::seconds(61));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.received().await.is_empty(),
        "one denial raises nothing"
    );
    f.app.clock.advance(chrono::Duration::seconds(16));
    let got = receiver.wait_for(2).await;
    let types: Vec<&str> = got
        .iter()
        .map(|d| d["body"]["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"key.status_changed"), "{types:?}");
    assert!(types.contains(&"cluster.inaccessible"), "{types:?}");
    let changed = got
        .iter()
        .find(|d| d["body"]["type"] == "key.status_changed")
        .unwrap();
    assert_eq!(changed["body"]["data"]["from"], "active");
    assert_eq!(changed["body"]["data"]["to"], "disabled");
    assert_eq!(changed["body"]["data"]["region"], "us-east-1");
    assert_eq!(changed["body"]["data"]["project_id"], f.project.as_str());
    let stopped = got
        .iter()
        .find(|d| d["body"]["type"] == "cluster.inaccessible")
        .unwrap();
    assert_eq!(stopped["body"]["data"]["cluster_id"], cluster.as_str());
    assert!(got.iter().all(|d| d["verified"] == true));
    assert_eq!(
        read_cluster(&f.app, &f.owner, &cluster).await["state"],
        "inaccessible"
    );

    // A resume while the key is still disabled fails, and says so.
    let resumed = crate::clusters::post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 409);
    let got = receiver.wait_for(3).await;
    assert_eq!(got[2]["body"]["type"], "cluster.resume_failed");
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn keep_running_clusters_are_marked_will_not_resume_and_the_owner_is_told() {
    let receiver = Receiver::start();
    let f = local_cmek_with(&["us-east-1"], &[("CMEK_KEY_CHECK_INTERVAL", "60s")]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let (_, secret) = add_webhook(&f.app, &f.owner, &receiver.url).await;
    receiver.configure(json!({ "secret": secret })).await;
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[0].1, LocalKeyAction::Disable)
        .await
        .unwrap();
    f.app.clock.advance(chrono::Duration::seconds(61));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    f.app.clock.advance(chrono::Duration::seconds(16));
    let got = receiver.wait_for(2).await;
    let marked = got
        .iter()
        .find(|d| d["body"]["type"] == "cluster.will_not_resume")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(marked["body"]["data"]["cluster_id"], cluster.as_str());
    assert_eq!(
        read_cluster(&f.app, &f.owner, &cluster).await["state"],
        "available",
        "keeps running"
    );

    // The Key Status API says what it means for the cluster.
    let status: Value = f
        .app
        .get("/api/v1/key-status", &f.owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["items"][0]["clusters"][0]["effect"],
        "will_not_resume"
    );
}

#[tokio::test]
#[ignore = "needs Python with standardwebhooks (scripts/test)"]
async fn a_slow_receiver_of_one_organization_never_holds_back_another_organizations_alert() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let other_owner = app.stranger_key().await;
    let slow = Receiver::start();
    slow.configure(json!({ "delay": 9.5 })).await;
    let fast = Receiver::start();
    let (theirs, _) = add_webhook(&app, &other_owner, &slow.url).await;
    let (ours, _) = add_webhook(&app, &owner, &fast.url).await;
    // The other organization fills its queue with test events to a receiver that answers
    // in 9.5 s; the 11th in a minute is refused.
    for _ in 0..10 {
        send_test(&app, &other_owner, &theirs).await;
    }
    let refused = app
        .api
        .post(app.url(&format!("/api/v1/webhooks/{theirs}/test")))
        .bearer_auth(&other_owner)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let started = std::time::Instant::now();
    send_test(&app, &owner, &ours).await;
    fast.wait_for(1).await;

    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "our alert waited {waited:?} behind another organization's slow receiver"
    );
}

#[tokio::test]
async fn an_organization_has_at_most_ten_webhooks() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    for n in 0..10 {
        add_webhook(&app, &owner, &format!("http://127.0.0.1:{}", 9000 + n)).await;
    }
    let refused = app
        .post_json(
            "/api/v1/webhooks",
            &owner,
            &json!({ "url": "http://127.0.0.1:9100/hook" }),
        )
        .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(problem(refused).await["type"], rule("webhook-limit"));
}
