//! The Encryption Access wizard as pages: every step works with plain forms.

use cmek_console::domain::identity::Role;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::moto::{ACCOUNT, Moto};

async fn project_with_browser(app: &TestApp) -> (reqwest::Client, String) {
    let browser = app.signed_in_owner().await;
    let key = app.api_key(Role::Owner).await;
    let id = app.create_project(&key, "shop", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (browser, id)
}

#[tokio::test]
async fn the_first_step_offers_the_providers_and_real_region_codes() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let (browser, project) = project_with_browser(&app).await;

    let page = browser
        .get(app.url(&format!("/projects/{project}/encryption-keys/new")))
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    for expected in [
        "Key Management Service",
        "AWS KMS",
        "Azure Key Vault",
        "Local KMS",
        "value=\"eu-central-1\"",
        "Cross-account IAM role",
    ] {
        assert!(text.contains(expected), "{expected}");
    }
    assert!(!text.contains("KMS Key ARN"), "step 3 waits for the region");
}

#[tokio::test]
async fn choosing_aws_and_a_region_shows_the_policy_to_copy_and_download() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let (browser, project) = project_with_browser(&app).await;

    let page = browser
        .get(app.url(&format!("/projects/{project}/encryption-keys/new?provider=aws_kms&region=ap-northeast-1&mode=key_policy")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(page.contains("ec2.ap-northeast-1.amazonaws.com"));
    assert!(page.contains("data-copy=\"#policy-0\""));
    assert!(page.contains("Download ROLE-TRUST-POLICY.JSON"));
    assert!(page.contains("KMS Key ARN"));
    assert!(page.contains("Test Encryption Key and Create"));

    let download = browser
        .get(app.url(&format!(
            "/projects/{project}/encryption-keys/policy/0?provider=aws_kms&region=ap-northeast-1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"ROLE-TRUST-POLICY.JSON\""
    );
    let policy: Value = download.json().await.unwrap();
    assert_eq!(policy["Id"], "cmek-policy");
}

#[tokio::test]
async fn a_bad_arn_comes_back_inline_without_javascript() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let (browser, project) = project_with_browser(&app).await;

    let response = browser
        .post(app.url(&format!("/projects/{project}/encryption-keys")))
        .form(&[
            ("provider", "aws_kms"),
            ("region", "us-east-1"),
            ("mode", "key_policy"),
            ("key_arn", "arn:aws:kms:us-east-1:111122223333:alias/x"),
            ("action", "create"),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(page.contains("is an alias ARN"));
    assert!(
        page.contains("value=\"arn:aws:kms:us-east-1:111122223333:alias/x\""),
        "the form keeps what was typed"
    );
}

#[tokio::test]
async fn a_local_key_is_created_from_the_wizard_and_listed_on_the_project() {
    let app = spawn_app().await;
    let (browser, project) = project_with_browser(&app).await;
    let created = browser
        .post(app.url("/local-kms"))
        .form(&[("name", "dev key")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 303);
    let operator = app.console.identity().operator(None).await.unwrap();
    let key_id = app.console.keys().local_keys(&operator).await.unwrap()[0]
        .id
        .to_string();

    let response = browser
        .post(app.url(&format!("/projects/{project}/encryption-keys")))
        .form(&[
            ("provider", "local"),
            ("region", "eu-west-1"),
            ("key_id", key_id.as_str()),
            ("action", "create"),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("/projects/{project}?key_created=1")));
    let page = browser
        .get(app.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Encryption key created"));
    assert!(page.contains(&key_id));
    assert!(page.contains("status-active"));
}

#[tokio::test]
async fn testing_without_javascript_shows_the_checklist_and_creates_nothing() {
    let app = spawn_app().await;
    let (browser, project) = project_with_browser(&app).await;
    let operator = app.console.identity().operator(None).await.unwrap();
    let key = app
        .console
        .keys()
        .create_local_key(&operator, "k")
        .await
        .unwrap();
    app.console
        .keys()
        .change_local_key(
            &operator,
            key.id,
            cmek_console::domain::local_kms::LocalKeyAction::Disable,
        )
        .await
        .unwrap();

    let response = browser
        .post(app.url(&format!("/projects/{project}/encryption-keys")))
        .form(&[
            ("provider", "local"),
            ("region", "eu-west-1"),
            ("key_id", key.id.to_string().as_str()),
            ("action", "create"),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(page.contains("Some required checks failed."));
    assert!(page.contains("class=\"check fail\" data-check=\"enabled\""));
    assert!(page.contains("Enable the key"));
    assert!(
        app.console
            .keys()
            .encryption_keys(&operator, project.parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn the_stream_sends_each_check_then_the_outcome() {
    let moto = Moto::open();
    let app = moto.app().await;
    let (browser, project) = project_with_browser(&app).await;
    let arn = moto.create_key("us-east-1").await;

    let response = browser
        .post(app.url(&format!("/projects/{project}/encryption-keys/stream")))
        .form(&[
            ("provider", "aws_kms"),
            ("region", "us-east-1"),
            ("key_arn", arn.as_str()),
            ("action", "create"),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let checks: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "check")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let first_html = events[0]["html"].as_str().unwrap();
    assert_eq!(
        checks,
        [
            "reachable",
            "enabled",
            "key_spec",
            "region",
            "generate_data_key",
            "decrypt_round_trip",
            "rotation"
        ]
    );
    assert!(
        first_html.starts_with("<li class=\"check pass\" data-check=\"reachable\">"),
        "each check comes as the page's own partial: {first_html}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "done");
    assert_eq!(last["created"], true);
}

#[tokio::test]
async fn the_stream_names_refused_fields() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let (browser, project) = project_with_browser(&app).await;

    let text = browser
        .post(app.url(&format!("/projects/{project}/encryption-keys/stream")))
        .form(&[
            ("provider", "aws_kms"),
            ("region", "us-east-1"),
            ("key_arn", "nonsense"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "refused");
    assert_eq!(last["errors"][0]["field"], "key_arn");
}

#[tokio::test]
async fn the_local_kms_page_disables_enables_and_rotates_keys() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;
    browser
        .post(app.url("/local-kms"))
        .form(&[("name", "rotating")])
        .send()
        .await
        .unwrap();
    let operator = app.console.identity().operator(None).await.unwrap();
    let id = app.console.keys().local_keys(&operator).await.unwrap()[0].id;

    for action in ["disable", "rotate", "enable"] {
        let response = browser
            .post(app.url(&format!("/local-kms/{id}/{action}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "{action}");
    }

    let key = &app.console.keys().local_keys(&operator).await.unwrap()[0];
    assert!(key.enabled);
    assert_eq!(key.version, 2);
    let page = browser
        .get(app.url("/local-kms"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("development only"));
    assert!(page.contains("rotating"));
}
