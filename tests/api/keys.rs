use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, check, fields, problem, problem_type, rule, spawn_app_with};
use crate::moto::{ACCOUNT, Moto};

const REGION: &str = "us-east-1";

async fn cmek_project(app: &TestApp, owner: &str) -> String {
    app.create_project(owner, "payments", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An app with AWS configured (no KMS needed), an owner's API key and a CMEK project.
async fn configured_project() -> (TestApp, String, String) {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = cmek_project(&app, &owner).await;
    (app, owner, project)
}

/// An app on moto with an owner's API key and a CMEK project.
async fn aws_project(moto: &Moto) -> (TestApp, String, String) {
    let app = moto.app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = cmek_project(&app, &owner).await;
    (app, owner, project)
}

fn aws_key(arn: &str) -> Value {
    json!({ "provider": "aws_kms", "region": REGION, "key_arn": arn })
}

fn keys_path(project: &str) -> String {
    format!("/api/v1/projects/{project}/encryption-keys")
}

async fn list(app: &TestApp, key: &str, project: &str) -> Vec<Value> {
    let body: Value = app
        .get(&keys_path(project), key)
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_aws_policy_is_the_seeds_filled_in_for_region_and_account() {
    let (app, owner, project) = configured_project().await;

    let body: Value = app
        .get(
            &format!("{}/aws-trust-policy?region=us-west-2", keys_path(&project)),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();

    let doc = &body["documents"][0];
    assert_eq!(doc["file_name"], "ROLE-TRUST-POLICY.JSON");
    assert_eq!(doc["policy"]["Id"], "cmek-policy");
    let ebs = &doc["policy"]["Statement"][0];
    assert_eq!(
        ebs["Condition"]["StringEquals"]["kms:CallerAccount"],
        ACCOUNT
    );
    assert_eq!(
        ebs["Condition"]["StringEquals"]["kms:ViaService"],
        "ec2.us-west-2.amazonaws.com"
    );
    assert_eq!(
        doc["policy"]["Statement"][1]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    assert_eq!(
        doc["statements"].as_array().unwrap().len(),
        2,
        "every statement is explained"
    );
}

#[tokio::test]
async fn role_mode_policies_require_the_organization_as_external_id() {
    let (app, owner, project) = configured_project().await;
    let me: Value = app.get("/api/v1/me", &owner).await.json().await.unwrap();

    let body: Value = app
        .get(
            &format!(
                "{}/aws-trust-policy?region=eu-west-1&mode=role",
                keys_path(&project)
            ),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();

    let org = me["organization"]["id"].as_str().unwrap();
    assert_eq!(body["external_id"], org);
    let trust = &body["documents"][0]["policy"]["Statement"][0];
    assert_eq!(trust["Condition"]["StringEquals"]["sts:ExternalId"], org);
    assert_eq!(
        body["documents"][1]["file_name"],
        "ROLE-PERMISSION-POLICY.JSON"
    );
}

#[tokio::test]
async fn one_policy_can_serve_every_region_and_bad_parameters_are_named() {
    let (app, owner, project) = configured_project().await;
    let path = format!("{}/aws-trust-policy", keys_path(&project));

    let all: Value = app
        .get(&format!("{path}?region=*"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["documents"][0]["policy"]["Statement"][0]["Condition"]["StringLike"]["kms:ViaService"],
        "ec2.*.amazonaws.com"
    );

    let bad = app
        .get(&format!("{path}?region=mars-1&mode=sideways"), &owner)
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(fields(&problem(bad).await), ["region", "mode"]);
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_good_key_passes_every_check_and_is_created() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto.create_key(REGION).await;
    moto.enable_rotation(REGION, &arn).await;

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await;

    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["key_arn"], arn);
    assert_eq!(body["status"], "active");
    assert_eq!(body["access_mode"], "key_policy");
    assert_eq!(body["checks"]["passed"], true);
    for id in [
        "reachable",
        "enabled",
        "key_spec",
        "region",
        "generate_data_key",
        "decrypt_round_trip",
    ] {
        assert_eq!(check(&body["checks"], id)["outcome"], "pass", "{id}");
    }
    assert_eq!(check(&body["checks"], "rotation")["outcome"], "info");
    assert!(
        check(&body["checks"], "rotation")["detail"]
            .as_str()
            .unwrap()
            .contains("enabled")
    );
    let keys = list(&app, &owner, &project).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_arn"], arn);
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn testing_a_key_creates_nothing() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto.create_key(REGION).await;

    let response = app
        .post_json(
            &format!("{}/test", keys_path(&project)),
            &owner,
            &aws_key(&arn),
        )
        .await;

    assert_eq!(response.status(), 200);
    let checklist: Value = response.json().await.unwrap();
    assert_eq!(checklist["passed"], true);
    assert!(list(&app, &owner, &project).await.is_empty());
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_second_key_in_the_same_region_is_a_conflict() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let first = moto.create_key(REGION).await;
    let second = moto.create_key(REGION).await;
    assert_eq!(
        app.post_json(&keys_path(&project), &owner, &aws_key(&first))
            .await
            .status(),
        201
    );

    let again = app
        .post_json(&keys_path(&project), &owner, &aws_key(&second))
        .await;

    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["type"], rule("one-key-per-region"));
    assert_eq!(list(&app, &owner, &project).await.len(), 1);
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn two_simultaneous_creates_for_one_region_make_one_key() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let (a, b) = (moto.create_key(REGION).await, moto.create_key(REGION).await);
    let path = keys_path(&project);
    let (body_a, body_b) = (aws_key(&a), aws_key(&b));

    let (first, second) = tokio::join!(
        app.post_json(&path, &owner, &body_a),
        app.post_json(&path, &owner, &body_b)
    );

    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert_eq!(list(&app, &owner, &project).await.len(), 1);
}

#[tokio::test]
async fn a_key_in_another_region_is_refused_at_the_edge() {
    let (app, owner, project) = configured_project().await;
    let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(arn))
        .await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    assert_eq!(fields(&body), ["key_arn"]);
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("eu-west-1, but you chose us-east-1")
    );
}

#[tokio::test]
async fn malformed_and_alias_arns_are_refused_with_the_reason() {
    let (app, owner, project) = configured_project().await;
    let cases = [
        (
            "arn:aws:kms:us-east-1:111122223333:alias/payments",
            "alias ARN",
        ),
        (
            "arn:aws:kms:us-east-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "12 digits",
        ),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", "key ID, not an ARN"),
        ("not an arn", "not an ARN"),
    ];
    for (arn, reason) in cases {
        let response = app
            .post_json(&keys_path(&project), &owner, &aws_key(arn))
            .await;
        assert_eq!(response.status(), 422, "{arn}");
        let body = problem(response).await;
        assert_eq!(fields(&body), ["key_arn"], "{arn}");
        assert!(
            body["errors"][0]["reason"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{arn}: {body}"
        );
    }
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_key_that_does_not_exist_fails_reachable_and_nothing_else_runs() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000");

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    assert_eq!(body["type"], problem_type("key-test-failed"));
    let reachable = check(&body["checks"], "reachable");
    assert_eq!(reachable["outcome"], "fail");
    assert_eq!(reachable["code"], "NotFoundException");
    assert!(
        reachable["fix"]
            .as_str()
            .unwrap()
            .contains("check the key ARN")
    );
    assert_eq!(
        check(&body["checks"], "decrypt_round_trip")["outcome"],
        "skipped"
    );
    assert!(list(&app, &owner, &project).await.is_empty());
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_disabled_key_fails_and_says_how_to_fix_it() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto.create_key(REGION).await;
    moto.disable_key(REGION, &arn).await;

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    let enabled = check(&body["checks"], "enabled");
    assert_eq!(enabled["outcome"], "fail");
    assert!(enabled["fix"].as_str().unwrap().contains("Enable the key"));
    assert_eq!(
        check(&body["checks"], "generate_data_key")["code"],
        "DisabledException"
    );
    assert!(list(&app, &owner, &project).await.is_empty());
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn an_asymmetric_signing_key_fails_the_key_spec_check() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto
        .create_key_with(REGION, KeySpec::Rsa2048, KeyUsageType::SignVerify)
        .await;

    let response = app
        .post_json(
            &format!("{}/test", keys_path(&project)),
            &owner,
            &aws_key(&arn),
        )
        .await;

    let checklist: Value = response.json().await.unwrap();
    assert_eq!(checklist["passed"], false);
    let spec = check(&checklist, "key_spec");
    assert_eq!(spec["outcome"], "fail");
    assert!(spec["detail"].as_str().unwrap().contains("RSA_2048"));
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn access_denied_is_reported_with_the_fix_for_the_key_policy() {
    let moto = Moto::iam_admin();
    let arn = moto.create_key(REGION).await;
    let (key, secret) = moto.iam_identity("denied");
    let app = moto.app_as(&key, &secret).await;
    let owner = app.api_key(Role::Owner).await;
    let project = cmek_project(&app, &owner).await;

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    let reachable = check(&body["checks"], "reachable");
    assert_eq!(reachable["outcome"], "fail");
    assert_eq!(reachable["code"], "AccessDenied");
    assert!(
        reachable["fix"]
            .as_str()
            .unwrap()
            .contains("step 2 to the key policy")
    );
}

/// Tests a key through an app whose AWS endpoint is `endpoint`; the checklist.
async fn test_key_through(endpoint: &str, timeout: &str) -> Value {
    let app = spawn_app_with(&[
        ("CMEK_AWS_ACCOUNT_ID", ACCOUNT),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("CMEK_KMS_TIMEOUT", timeout),
    ])
    .await;
    let owner = app.api_key(Role::Owner).await;
    let project = cmek_project(&app, &owner).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000");
    let response = app
        .post_json(
            &format!("{}/test", keys_path(&project)),
            &owner,
            &aws_key(&arn),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_unreachable_kms_is_reported_as_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let checklist = test_key_through(&format!("http://127.0.0.1:{closed}"), "2s").await;

    let reachable = check(&checklist, "reachable");
    assert_eq!(reachable["code"], "Unreachable");
    assert!(
        reachable["fix"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
}

async fn role_mode(external_id_matches: bool) -> Value {
    let moto = Moto::iam_admin();
    let (key, secret) = moto.iam_identity("console");
    let app = moto.app_as(&key, &secret).await;
    let owner = app.api_key(Role::Owner).await;
    let project = cmek_project(&app, &owner).await;
    let me: Value = app.get("/api/v1/me", &owner).await.json().await.unwrap();
    let org = me["organization"]["id"].as_str().unwrap().to_owned();
    let external_id = if external_id_matches {
        org
    } else {
        "another-organization".into()
    };
    let name = format!("cmek-{}", uuid::Uuid::new_v4().simple());
    let role = moto
        .create_role(
            &name,
            &format!("arn:aws:iam::{ACCOUNT}:user/console"),
            &external_id,
        )
        .await;
    let arn = moto.create_key(REGION).await;

    let body = json!({ "provider": "aws_kms", "region": REGION, "key_arn": arn, "access_mode": "role", "role_arn": role });
    let response = app.post_json(&keys_path(&project), &owner, &body).await;
    let status = response.status().as_u16();
    let mut value: Value = response.json().await.unwrap();
    value["status_code"] = json!(status);
    value
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn role_mode_with_the_organization_as_external_id_works() {
    let body = role_mode(true).await;
    assert_eq!(body["status_code"], 201, "{body}");
    assert_eq!(body["access_mode"], "role");
    assert!(body["role_arn"].as_str().unwrap().contains(":role/cmek-"));
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn role_mode_with_another_external_id_is_denied() {
    let body = role_mode(false).await;
    assert_eq!(body["status_code"], 422, "{body}");
    let reachable = check(&body["checks"], "reachable");
    assert_eq!(reachable["code"], "AccessDenied");
    assert!(reachable["fix"].as_str().unwrap().contains("ExternalId"));
}

#[tokio::test]
async fn role_mode_needs_a_role_arn() {
    let (app, owner, project) = configured_project().await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000");

    let body = json!({ "provider": "aws_kms", "region": REGION, "key_arn": arn, "access_mode": "role", "role_arn": "arn:aws:iam::111122223333:user/bob" });
    let response = app.post_json(&keys_path(&project), &owner, &body).await;

    assert_eq!(response.status(), 422);
    assert_eq!(fields(&problem(response).await), ["role_arn"]);
}

#[tokio::test]
async fn members_and_auditors_cannot_test_or_create_keys() {
    let (app, _owner, project) = configured_project().await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000");
    for role in [Role::Member, Role::Auditor] {
        let key = app.api_key(role).await;
        for path in [keys_path(&project), format!("{}/test", keys_path(&project))] {
            let response = app.post_json(&path, &key, &aws_key(&arn)).await;
            assert_eq!(response.status(), 403, "{role:?} {path}");
            assert_eq!(problem(response).await["type"], rule("owner-only"));
        }
        assert_eq!(
            app.get(&keys_path(&project), &key).await.status(),
            200,
            "{role:?} reads keys"
        );
    }
}

#[tokio::test]
async fn a_project_without_cmek_takes_no_keys() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "plain", false).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000");

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await;

    assert_eq!(response.status(), 409);
    assert_eq!(problem(response).await["type"], rule("cmek-not-enabled"));
}

#[tokio::test]
async fn without_a_platform_account_aws_is_refused_clearly() {
    let app = crate::helpers::spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = cmek_project(&app, &owner).await;
    let arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000");

    let response = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    assert_eq!(fields(&body), ["provider"]);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("CMEK_AWS_ACCOUNT_ID")
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn the_v1beta_shape_creates_and_lists_keys() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let east = moto.create_key("us-east-1").await;
    let west = moto.create_key("us-west-2").await;
    let path = format!("/api/v1beta/projects/{project}/aws-cmek");

    let created = app
        .post_json(&path, &owner, &json!({ "specs": [{ "region": "us-east-1", "kms_arn": east }, { "region": "us-west-2", "kms_arn": west }] }))
        .await;
    assert_eq!(created.status(), 200);

    let listed: Value = app.get(&path, &owner).await.json().await.unwrap();
    assert_eq!(
        listed,
        json!({ "items": [{ "region": "us-east-1", "kms_arn": east }, { "region": "us-west-2", "kms_arn": west }] })
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_v1beta_request_with_one_bad_spec_creates_nothing() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let good = moto.create_key("us-east-1").await;
    let disabled = moto.create_key("us-west-2").await;
    moto.disable_key("us-west-2", &disabled).await;
    let path = format!("/api/v1beta/projects/{project}/aws-cmek");

    let response = app
        .post_json(&path, &owner, &json!({ "specs": [{ "region": "us-east-1", "kms_arn": good }, { "region": "us-west-2", "kms_arn": disabled }] }))
        .await;

    assert_eq!(response.status(), 422);
    let listed: Value = app.get(&path, &owner).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    let bad = app.post_json(&path, &owner, &json!({ "specs": [{ "region": "us-east-1", "kms_arn": "arn:aws:kms:us-east-1:1:key/x" }] })).await;
    assert_eq!(fields(&problem(bad).await), ["specs[0].kms_arn"]);
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn check_now_records_a_key_disabled_after_creation() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto.create_key(REGION).await;
    let created: Value = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await
        .json()
        .await
        .unwrap();
    let key_path = format!(
        "{}/{}",
        keys_path(&project),
        created["id"].as_str().unwrap()
    );
    moto.disable_key(REGION, &arn).await;

    let checked: Value = app
        .post_json(&format!("{key_path}/check"), &owner, &json!({}))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(checked["status"], "disabled");
    let read: Value = app.get(&key_path, &owner).await.json().await.unwrap();
    assert_eq!(read["status"], "disabled");
    assert!(read["last_error"].as_str().unwrap().contains("disabled"));
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn deleting_a_key_frees_its_region_and_is_audited() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto.create_key(REGION).await;
    let created: Value = app
        .post_json(&keys_path(&project), &owner, &aws_key(&arn))
        .await
        .json()
        .await
        .unwrap();
    let key_path = format!(
        "{}/{}",
        keys_path(&project),
        created["id"].as_str().unwrap()
    );
    let member = app.api_key(Role::Member).await;
    assert_eq!(app.delete(&key_path, &member).await.status(), 403);

    assert_eq!(app.delete(&key_path, &owner).await.status(), 204);

    assert_eq!(app.get(&key_path, &owner).await.status(), 404);
    assert_eq!(
        app.post_json(&keys_path(&project), &owner, &aws_key(&arn))
            .await
            .status(),
        201
    );
    let log: Value = app
        .get("/api/v1/audit-events?action=encryption_key.deleted", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn key_tests_are_audited_with_the_failed_check_and_no_key_material() {
    let moto = Moto::open();
    let (app, owner, project) = aws_project(&moto).await;
    let arn = moto.create_key(REGION).await;
    moto.disable_key(REGION, &arn).await;
    app.post_json(
        &format!("{}/test", keys_path(&project)),
        &owner,
        &aws_key(&arn),
    )
    .await;

    let log: Value = app
        .get("/api/v1/audit-events?action=encryption_key.tested", &owner)
        .await
        .json()
        .await
        .unwrap();

    let event = &log["items"][0];
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["detail"]["failed_check"], "enabled");
    assert_eq!(event["detail"]["key"], arn);
    let text = event.to_string();
    assert!(!text.contains("plaintext") && !text.contains("ciphertext"));
}

#[tokio::test]
async fn a_kms_that_never_answers_is_reported_unreachable_after_the_time_out() {
    // A server that accepts connections and then says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });

    let checklist = test_key_through(&format!("http://{address}"), "1s").await;

    let reachable = check(&checklist, "reachable");
    assert_eq!(reachable["code"], "Unreachable");
    assert!(
        reachable["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{reachable}"
    );
}
