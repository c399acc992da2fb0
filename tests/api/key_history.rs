//! A key's status history: every change kept with its time and the KMS's message, newest
//! first, readable by whoever can see the key.

use cmek_console::domain::identity::Role;
use cmek_console::domain::local_kms::LocalKeyAction;
use serde_json::Value;

use crate::clusters::{local_cmek, post};

#[tokio::test]
async fn every_status_change_is_kept_with_the_kms_message_newest_first() {
    let f = local_cmek(&["us-east-1"]).await;
    let key = f.key_id("us-east-1").await;
    let base = format!("/api/v1/projects/{}/encryption-keys/{key}", f.project);
    let operator = f.app.console.identity().operator(None).await.unwrap();
    let local = f.local_keys[0].1;

    // A check that changes nothing is not a change.
    assert_eq!(
        post(&f.app, &f.owner, &format!("{base}/check"))
            .await
            .status(),
        200
    );
    f.app
        .console
        .keys()
        .change_local_key(&operator, local, LocalKeyAction::Disable)
        .await
        .unwrap();
    f.app.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(
        post(&f.app, &f.owner, &format!("{base}/check"))
            .await
            .status(),
        200
    );
    f.app.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(
        post(&f.app, &f.owner, &format!("{base}/check"))
            .await
            .status(),
        200
    );
    f.app
        .console
        .keys()
        .change_local_key(&operator, local, LocalKeyAction::Enable)
        .await
        .unwrap();
    f.app.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(
        post(&f.app, &f.owner, &format!("{base}/check"))
            .await
            .status(),
        200
    );

    let history: Value = f
        .app
        .get(&format!("{base}/history"), &f.owner)
        .await
        .json()
        .await
        .unwrap();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!(
        (items[0]["from"].as_str(), items[0]["to"].as_str()),
        (Some("disabled"), Some("active"))
    );
    assert_eq!(
        (items[1]["from"].as_str(), items[1]["to"].as_str()),
        (Some("active"), Some("disabled"))
    );
    assert!(
        items[1]["message"].as_str().unwrap().contains("disabled"),
        "{history}"
    );
    assert!(items[0]["at"].as_str().unwrap() >= items[1]["at"].as_str().unwrap());

    let first: Value = f
        .app
        .get(&format!("{base}/history?page_size=1"), &f.owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let token = first["next_page_token"].as_str().unwrap();
    let second: Value = f
        .app
        .get(
            &format!("{base}/history?page_size=1&page_token={token}"),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"][0]["to"], "disabled");

    let read: Value = f.app.get(&base, &f.owner).await.json().await.unwrap();
    assert_eq!(read["history"].as_array().unwrap().len(), 2);
    let listed: Value = f
        .app
        .get(
            &format!("/api/v1/projects/{}/encryption-keys", f.project),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"][0].get("history").is_none(),
        "lists stay short"
    );

    let auditor = f.app.api_key(Role::Auditor).await;
    assert_eq!(
        f.app
            .get(&format!("{base}/history"), &auditor)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn another_organizations_key_history_is_not_found() {
    let f = local_cmek(&["us-east-1"]).await;
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
    let stranger = f.app.stranger_key().await;

    let response = f
        .app
        .get(
            &format!(
                "/api/v1/projects/{}/encryption-keys/{key}/history",
                f.project
            ),
            &stranger,
        )
        .await;

    assert_eq!(response.status(), 404);
}
