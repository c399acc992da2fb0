//! Google Cloud KMS keys: the wizard's setup over the API, Test Encryption Key and Create
//! against the stand-in (the real adapter on google-cloud-kms-v1, over HTTP on loopback),
//! every check's failure with Cloud KMS's status and a fix, the confused deputy refused, R4,
//! and the settings that turn the provider on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::azure::Console;
use crate::gcp::{ENCRYPTER_DECRYPTER, Gcp, REGION, VIEWER};
use crate::helpers::{check, fields, problem, rule, spawn_app_with};

async fn test_key(c: &Console, body: &Value) -> Value {
    let response = c
        .app
        .post_json(&format!("{}/test", c.keys_path()), &c.owner, body)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Test Encryption Key and Create, expected refused: the checklist, and nothing created.
async fn refused(c: &Console, body: &Value) -> Value {
    let response = c.app.post_json(&c.keys_path(), &c.owner, body).await;
    assert_eq!(response.status(), 422);
    let problem = problem(response).await;
    assert_eq!(c.keys().await.len(), 0, "nothing created");
    problem["checks"].clone()
}

fn failed(checks: &Value) -> Vec<String> {
    checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn check_in<'a>(checks: &'a Value, id: &str) -> &'a Value {
    checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {checks}"))
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_good_key_passes_every_check_and_is_created() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let key = gcp
        .key(&c, REGION, REGION, json!({ "protectionLevel": "HSM" }))
        .await;

    let checklist = test_key(&c, &Gcp::body(&key)).await;
    assert_eq!(checklist["passed"], true, "{checklist}");
    for id in [
        "reachable",
        "purpose",
        "enabled",
        "region",
        "permissions",
        "encrypt",
        "decrypt_round_trip",
    ] {
        assert_eq!(
            check(&checklist, id)["outcome"],
            "pass",
            "{id}: {checklist}"
        );
    }
    assert!(
        check(&checklist, "protection_level")["detail"]
            .as_str()
            .unwrap()
            .starts_with("HSM")
    );
    assert!(
        check(&checklist, "destroy_scheduled_duration")["detail"]
            .as_str()
            .unwrap()
            .contains("30 days")
    );
    assert!(
        check(&checklist, "rotation")["detail"]
            .as_str()
            .unwrap()
            .contains("every 90 days"),
        "{checklist}"
    );
    assert!(c.keys().await.is_empty(), "testing creates nothing");

    let response = c
        .app
        .post_json(&c.keys_path(), &c.owner, &Gcp::body(&key))
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["provider"], "gcp_kms", "{created}");
    assert_eq!(created["region"], REGION);
    assert_eq!(created["key_name"], key.as_str());
    assert_eq!(created["status"], "active");
    assert!(created["vault_name"].is_null() && created["key_arn"].is_null());
    let id = created["id"].as_str().unwrap();
    let read: Value = c
        .app
        .get(&format!("{}/{id}", c.keys_path()), &c.owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["key_name"], key.as_str());

    // R4: one key per provider and region.
    let second = gcp.key(&c, REGION, REGION, json!({})).await;
    let response = c
        .app
        .post_json(&c.keys_path(), &c.owner, &Gcp::body(&second))
        .await;
    assert_eq!(response.status(), 409);
    assert_eq!(problem(response).await["type"], rule("one-key-per-region"));
}
