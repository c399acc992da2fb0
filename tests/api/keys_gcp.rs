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

/// The ids of the checks that failed, in order.
fn failed(checklist: &Value) -> Vec<String> {
    checklist["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
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

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_primary_version_not_enabled_fails_with_its_state_and_what_it_shows() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    for (verbs, code) in [
        (&["disable"][..], "DISABLED"),
        (&["disable", "scheduleDestroy"][..], "DESTROY_SCHEDULED"),
        (&["disable", "destroy"][..], "DESTROYED"),
    ] {
        let key = gcp.key(&c, REGION, REGION, json!({})).await;
        for verb in verbs {
            gcp.act(&Gcp::version(&key, 1), verb, json!({})).await;
        }
        let checks = refused(&c, &Gcp::body(&key)).await;
        assert_eq!(failed(&checks)[0], "enabled", "{checks}");
        let enabled = check(&checks, "enabled");
        assert_eq!(enabled["code"], code, "{checks}");
        assert!(enabled["fix"].as_str().unwrap().len() > 10);
        // Encrypting under the primary fails with Cloud KMS's FAILED_PRECONDITION, classified.
        assert_eq!(check(&checks, "encrypt")["outcome"], "fail", "{checks}");
        assert_eq!(check(&checks, "encrypt")["code"], code, "{checks}");
    }
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_key_of_another_purpose_or_location_fails_its_own_check() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let signing = gcp
        .key(
            &c,
            REGION,
            REGION,
            json!({ "purpose": "ASYMMETRIC_SIGN", "rotationPeriod": null }),
        )
        .await;
    let checks = refused(&c, &Gcp::body(&signing)).await;
    assert_eq!(check(&checks, "purpose")["outcome"], "fail", "{checks}");
    assert!(
        check(&checks, "purpose")["detail"]
            .as_str()
            .unwrap()
            .contains("ASYMMETRIC_SIGN")
    );

    // Named for us-east1 (the suffix), made in europe-west1.
    let elsewhere = gcp.key(&c, REGION, "europe-west1", json!({})).await;
    assert!(elsewhere.contains("/locations/europe-west1/"));
    let checks = refused(&c, &Gcp::body(&elsewhere)).await;
    assert_eq!(failed(&checks), ["region"], "{checks}");
    let region = check(&checks, "region");
    assert_eq!(region["code"], "LocationMismatch");
    assert!(region["detail"].as_str().unwrap().contains("europe-west1"));
    assert!(region["fix"].as_str().unwrap().contains(REGION));
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn missing_grants_fail_with_permission_denied_and_say_which_role() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let member = format!("serviceAccount:{}", gcp.account);
    // No grant at all: Cloud KMS refuses even to describe the key.
    let none = gcp.key(&c, REGION, REGION, json!({ "bindings": [] })).await;
    let checks = refused(&c, &Gcp::body(&none)).await;
    assert_eq!(failed(&checks), ["reachable"], "{checks}");
    assert_eq!(check(&checks, "reachable")["code"], "PERMISSION_DENIED");
    assert!(
        check(&checks, "reachable")["fix"]
            .as_str()
            .unwrap()
            .contains(VIEWER)
    );

    // Encrypter/decrypter without viewer: the key cannot be read (nor its versions watched).
    let no_viewer = gcp
        .key(
            &c,
            REGION,
            REGION,
            json!({ "bindings": [{ "role": ENCRYPTER_DECRYPTER, "members": [member] }] }),
        )
        .await;
    let checks = refused(&c, &Gcp::body(&no_viewer)).await;
    assert_eq!(failed(&checks), ["reachable"], "{checks}");
    assert!(
        check(&checks, "reachable")["detail"]
            .as_str()
            .unwrap()
            .contains("cloudkms.cryptoKeys.get")
    );
    assert!(
        check(&checks, "reachable")["fix"]
            .as_str()
            .unwrap()
            .contains(VIEWER)
    );

    // Viewer without encrypter/decrypter: testIamPermissions names what is missing.
    let viewer_only = gcp
        .key(
            &c,
            REGION,
            REGION,
            json!({ "bindings": [{ "role": VIEWER, "members": [member] }] }),
        )
        .await;
    let checks = refused(&c, &Gcp::body(&viewer_only)).await;
    assert_eq!(failed(&checks), ["permissions", "encrypt"], "{checks}");
    let permissions = check(&checks, "permissions");
    assert_eq!(permissions["code"], "PERMISSION_DENIED");
    assert!(
        permissions["detail"]
            .as_str()
            .unwrap()
            .contains("useToEncrypt and cloudkms.cryptoKeyVersions.useToDecrypt")
    );
    assert!(
        permissions["fix"]
            .as_str()
            .unwrap()
            .contains(ENCRYPTER_DECRYPTER)
    );

    // An IAM deny on decrypt alone: the round trip fails, the key is not created.
    let denied = gcp.key(&c, REGION, REGION, json!({})).await;
    gcp.act(
        &denied,
        "deny",
        json!({ "member": member, "operations": ["decrypt"] }),
    )
    .await;
    let checks = refused(&c, &Gcp::body(&denied)).await;
    assert!(
        failed(&checks).contains(&"decrypt_round_trip".to_owned()),
        "{checks}"
    );
    assert_eq!(
        check(&checks, "decrypt_round_trip")["code"],
        "PERMISSION_DENIED"
    );
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_missing_key_is_not_found() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    // The platform may read the whole key ring, so a missing key is a 404, not a 403.
    let key = gcp.key(&c, REGION, REGION, json!({})).await;
    let ring = key.rsplit_once("/cryptoKeys/").unwrap().0.to_owned();
    gcp.standin
        .post(
            &format!("{ring}:addIamMember"),
            json!({ "role": VIEWER, "member": format!("serviceAccount:{}", gcp.account) }),
        )
        .await;
    let setup = c.gcp_setup(REGION, &gcp.project, "absent").await;
    let missing = format!("{ring}/cryptoKeys/{}", setup["key_id"].as_str().unwrap());
    let checks = refused(&c, &Gcp::body(&missing)).await;
    assert_eq!(failed(&checks), ["reachable"], "{checks}");
    assert_eq!(check(&checks, "reachable")["code"], "NOT_FOUND");
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn an_unreachable_or_slow_cloud_kms_answers_unreachable_within_the_time_out() {
    let gcp = Gcp::new().await;
    // Nothing listens there.
    let c = gcp
        .console_with(&[("CMEK_GCP_KMS_ENDPOINT", "http://127.0.0.1:9")])
        .await;
    let key = gcp.key(&c, REGION, REGION, json!({})).await;
    let started = Instant::now();
    let checklist = test_key(&c, &Gcp::body(&key)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        check(&checklist, "reachable")["code"],
        "Unreachable",
        "{checklist}"
    );

    // Slower than CMEK_KMS_TIMEOUT (3 s): the client's own retries would hold it a minute.
    let c = gcp.console().await;
    let key = gcp
        .key(&c, REGION, REGION, json!({ "delay_seconds": 20 }))
        .await;
    let started = Instant::now();
    let checklist = test_key(&c, &Gcp::body(&key)).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        check(&checklist, "reachable")["code"],
        "Unreachable",
        "{checklist}"
    );

    // A 503 from the service is retried, then unreachable: never a revocation.
    let key = gcp.key(&c, REGION, REGION, json!({})).await;
    gcp.standin
        .patch(&key, json!({ "fault": { "status": 503 } }))
        .await;
    let checklist = test_key(&c, &Gcp::body(&key)).await;
    assert_eq!(
        check(&checklist, "reachable")["code"],
        "Unreachable",
        "{checklist}"
    );
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn another_organization_cannot_register_a_customers_key() {
    let gcp = Gcp::new().await;
    let customer = gcp.console().await;
    let key = gcp.key(&customer, REGION, REGION, json!({})).await;
    // The same platform service account can reach the key, but the name carries the
    // customer's project suffix: another organization's project is refused before any call.
    let attacker = gcp.console().await;
    // The stand-in's request log is shared by every test: only this test's Google Cloud
    // project (made for it) is looked for in it.
    for name in [
        key.clone(),
        key.rsplit_once('-').unwrap().0.to_owned(),
        format!("{}-00000000", key.rsplit_once('-').unwrap().0),
    ] {
        let response = attacker
            .app
            .post_json(&attacker.keys_path(), &attacker.owner, &Gcp::body(&name))
            .await;
        assert_eq!(response.status(), 422, "{name}");
        let problem = problem(response).await;
        assert_eq!(fields(&problem), ["key_name"], "{problem}");
        assert!(problem.to_string().contains("suffix"), "{problem}");
        let tested = attacker
            .app
            .post_json(
                &format!("{}/test", attacker.keys_path()),
                &attacker.owner,
                &Gcp::body(&name),
            )
            .await;
        assert_eq!(tested.status(), 422, "Test Encryption Key refuses it too");
    }
    let requests = gcp
        .standin
        .control(reqwest::Method::GET, "requests", Value::Null)
        .await;
    assert!(
        !requests.to_string().contains(&gcp.project),
        "Cloud KMS was never asked: {requests}"
    );
    // The customer registers it, and the log does show that call (so it would have shown
    // the attacker's).
    let response = customer
        .app
        .post_json(&customer.keys_path(), &customer.owner, &Gcp::body(&key))
        .await;
    assert_eq!(response.status(), 201);
    let requests = gcp
        .standin
        .control(reqwest::Method::GET, "requests", Value::Null)
        .await;
    assert!(requests.to_string().contains(&gcp.project), "{requests}");
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn the_wizard_setup_names_the_account_the_commands_and_the_terraform() {
    let gcp = Gcp::new().await;
    let c = gcp.console().await;
    let setup = c.gcp_setup(REGION, &gcp.project, "orders").await;
    assert_eq!(setup["service_account"], gcp.account.as_str());
    let key_id = setup["key_id"].as_str().unwrap();
    assert!(key_id.starts_with("orders-") && key_id.ends_with(setup["suffix"].as_str().unwrap()));
    assert_eq!(
        setup["key_name"],
        format!(
            "projects/{}/locations/{REGION}/keyRings/cmek/cryptoKeys/{key_id}",
            gcp.project
        )
    );
    let commands: Vec<&str> = setup["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(commands[0].starts_with("gcloud kms keyrings create cmek"));
    assert!(
        commands[1].contains("--purpose=encryption") && commands[1].contains("--rotation-period=")
    );
    for role in [ENCRYPTER_DECRYPTER, VIEWER] {
        assert!(commands.iter().any(|c| c.contains("add-iam-policy-binding")
            && c.contains(&format!("--member=serviceAccount:{}", gcp.account))
            && c.contains(&format!("--role={role}"))));
    }
    assert_eq!(setup["terraform_file_name"], "cmek-gcp.tf.json");
    assert_eq!(
        setup["terraform"]["resource"]["google_kms_crypto_key"]["cmek"]["name"],
        key_id
    );

    // Each wrong part is named.
    let response = c.app.get(
        &format!("/api/v1/projects/{}/encryption-keys/gcp-setup?region=us-east-1&gcp_project_id=X&key_ring=a/b", c.project),
        &c.owner,
    ).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        fields(&problem(response).await),
        ["region", "key_ring", "gcp_project_id"],
        "every problem at once"
    );
    let response = c.app.get(
        &format!("/api/v1/projects/{}/encryption-keys/gcp-setup?region={REGION}&gcp_project_id=X&key_ring=a.b", c.project),
        &c.owner,
    ).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        fields(&problem(response).await),
        ["key_ring", "gcp_project_id"]
    );
}

#[tokio::test]
async fn without_the_settings_google_cloud_is_off_and_says_so() {
    let c = Console::new(spawn_app_with(&[]).await).await;
    let body = json!({ "provider": "gcp_kms", "region": REGION,
        "key_name": "projects/acme-prod/locations/us-east1/keyRings/cmek/cryptoKeys/cmek-1" });
    for response in [
        c.app.post_json(&c.keys_path(), &c.owner, &body).await,
        c.app
            .get(
                &format!("{}/gcp-setup?region={REGION}", c.keys_path()),
                &c.owner,
            )
            .await,
    ] {
        assert_eq!(response.status(), 422);
        let problem = problem(response).await;
        assert!(
            problem.to_string().contains("CMEK_GCP_SERVICE_ACCOUNT"),
            "{problem}"
        );
    }
    // A malformed name is named part by part, whatever the settings.
    let bad = json!({ "provider": "gcp_kms", "region": REGION,
        "key_name": "projects/acme-prod/locations/us-east1/keyRings/cmek/cryptoKeys/a.b" });
    let response = c.app.post_json(&c.keys_path(), &c.owner, &bad).await;
    assert_eq!(response.status(), 422);
    let problem = problem(response).await;
    assert_eq!(fields(&problem), ["key_name"]);
    assert!(problem.to_string().contains("key name"), "{problem}");
}

#[tokio::test]
#[ignore = "needs the Google Cloud KMS stand-in (scripts/test starts it)"]
async fn a_key_file_of_another_account_is_refused_at_start() {
    let gcp = Gcp::new().await;
    let mut settings = gcp.settings();
    settings.retain(|(k, _)| k != "CMEK_GCP_SERVICE_ACCOUNT");
    settings.push((
        "CMEK_GCP_SERVICE_ACCOUNT".into(),
        "someone@else.iam.gserviceaccount.com".into(),
    ));
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let err = cmek_console::settings::Settings::from_vars(&pairs)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CMEK_GCP_SERVICE_ACCOUNT") && err.contains(&gcp.account),
        "{err}"
    );
    let err = cmek_console::settings::Settings::from_vars(&[(
        "CMEK_GCP_SERVICE_ACCOUNT",
        gcp.account.as_str(),
    )])
    .unwrap_err()
    .to_string();
    assert!(err.contains("CMEK_GCP_CREDENTIALS_FILE"), "{err}");
    let err = cmek_console::settings::Settings::from_vars(&[
        ("CMEK_GCP_SERVICE_ACCOUNT", gcp.account.as_str()),
        ("CMEK_GCP_CREDENTIALS_FILE", gcp.key_file.as_str()),
        ("CMEK_GCP_KMS_ENDPOINT", "http://kms.example.com"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("CMEK_GCP_KMS_ENDPOINT"), "{err}");
}
