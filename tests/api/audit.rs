use cmek_console::domain::audit::Verification;
use cmek_console::domain::identity::Role;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{fields, spawn_app};

async fn events(app: &crate::helpers::TestApp, key: &str, query: &str) -> Vec<Value> {
    let body: Value = app
        .get(&format!("/api/v1/audit-events?{query}"), key)
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn changes_are_audited_with_actor_target_outcome_and_source() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "audited", true).await;
    let id = project["id"].as_str().unwrap();
    app.patch_json(
        &format!("/api/v1/projects/{id}"),
        &owner,
        &json!({ "name": "renamed" }),
    )
    .await;
    app.patch_json(
        &format!("/api/v1/projects/{id}"),
        &owner,
        &json!({ "cmek_enabled": false }),
    )
    .await;
    let auditor = app.api_key(Role::Auditor).await;

    let log = events(&app, &auditor, "").await;

    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("api_key.created", "success"),
            ("project.updated", "denied"),
            ("project.updated", "success"),
            ("project.created", "success"),
            ("api_key.created", "success"),
            ("sign_in_link.issued", "success"),
            ("organization.created", "success"),
        ]
    );
    let created = &log[3];
    assert_eq!(created["target"], format!("project/{id}"));
    assert!(created["actor"].as_str().unwrap().starts_with("api_key:"));
    assert_eq!(created["source_ip"], "127.0.0.1");
    assert_eq!(created["detail"]["name"], "audited");
}

#[tokio::test]
async fn sign_ins_and_refused_links_are_audited_without_the_token() {
    let app = spawn_app().await;
    app.signed_in_owner().await;
    app.redeem_link(&app.browser(), &app.sign_in_url).await;
    let auditor = app.api_key(Role::Auditor).await;

    let log = events(&app, &auditor, "action=session.sign_in").await;

    let outcomes: Vec<&str> = log.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["denied", "success"]);
    let token = app.sign_in_url.split("token=").nth(1).unwrap();
    let everything = app
        .get("/api/v1/audit-events?format=csv", &auditor)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !everything.contains(token),
        "the audit log never holds a credential"
    );
}

#[tokio::test]
async fn the_log_filters_by_time_and_refuses_bad_times() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.clock.advance(chrono::Duration::hours(1));
    let cut = app.clock_now_rfc3339();
    app.create_project(&owner, "later", false).await;

    let since = events(&app, &owner, &format!("since={}", urlencode(&cut))).await;
    assert_eq!(since.len(), 1);
    assert_eq!(since[0]["action"], "project.created");

    let bad = app
        .get("/api/v1/audit-events?since=yesterday", &owner)
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(fields(&bad.json().await.unwrap()), ["since"]);
}

#[tokio::test]
async fn the_log_exports_as_csv() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "exported", false).await;

    let response = app.get("/api/v1/audit-events?format=csv", &owner).await;

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("audit-events.csv")
    );
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seq,id,occurred_at,actor,action,target,outcome,source_ip,detail,prev_hash,hash"
    );
    assert_eq!(text.lines().count(), 1 + 4);
}

#[tokio::test]
async fn verification_names_the_first_altered_event() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", true).await;
    app.create_project(&owner, "two", true).await;
    assert!(matches!(
        app.console.verify_audit_chain().await.unwrap(),
        Verification::Intact { events: 5 }
    ));

    app.db()
        .await
        .execute_unprepared("UPDATE audit_events SET target = 'project/forged' WHERE seq = 3")
        .await
        .unwrap();

    match app.console.verify_audit_chain().await.unwrap() {
        Verification::Broken(found) => assert_eq!(found.seq, 3),
        Verification::Intact { .. } => panic!("tampering went unnoticed"),
    }
}

#[tokio::test]
async fn verification_notices_a_removed_event() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", true).await;
    app.create_project(&owner, "two", true).await;

    app.db()
        .await
        .execute_unprepared("DELETE FROM audit_events WHERE seq = 2")
        .await
        .unwrap();

    match app.console.verify_audit_chain().await.unwrap() {
        Verification::Broken(found) => assert_eq!(found.seq, 3),
        Verification::Intact { .. } => panic!("a deletion went unnoticed"),
    }
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

impl crate::helpers::TestApp {
    fn clock_now_rfc3339(&self) -> String {
        use cmek_console::domain::clock::Clock;
        self.clock.now().to_rfc3339()
    }
}
