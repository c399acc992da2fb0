//! Check my key policy (the policy doctor) over the API and as a page: the policy the
//! console renders passes; a broken one is named with the JSON to add; bad input is a 422
//! naming the field; another organization's project is not found.

use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::helpers::{fields, spawn_app_with};
use crate::moto::ACCOUNT;

fn path(project: &str) -> String {
    format!("/api/v1/projects/{project}/encryption-keys/aws-policy-check")
}

#[tokio::test]
async fn the_rendered_policy_passes_and_a_broken_one_is_named_with_the_fix() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "shop", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rendered: Value = app
        .get(
            &format!(
                "/api/v1/projects/{project}/encryption-keys/aws-trust-policy?region=us-east-1"
            ),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    let policy = rendered["documents"][0]["policy"].clone();

    let checked = app
        .post_json(
            &path(&project),
            &owner,
            &json!({ "region": "us-east-1", "policy": policy.to_string() }),
        )
        .await;
    assert_eq!(checked.status(), 200);
    let checked: Value = checked.json().await.unwrap();
    assert_eq!(checked, json!({ "ok": true, "findings": [] }));

    // The same policy checked for another region: the ViaService condition is named.
    let member = app.api_key(Role::Member).await;
    let wrong: Value = app
        .post_json(
            &path(&project),
            &member,
            &json!({ "region": "eu-west-1", "policy": policy.to_string() }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(wrong["ok"], false, "{wrong}");
    assert_eq!(wrong["findings"][0]["problem"], "wrong_region", "{wrong}");
    assert_eq!(
        wrong["findings"][0]["add"]["Condition"]["StringEquals"]["kms:ViaService"],
        "ec2.eu-west-1.amazonaws.com"
    );

    // Role mode: a trust policy without the external id.
    let role: Value = app
        .get(
            &format!("/api/v1/projects/{project}/encryption-keys/aws-trust-policy?region=us-east-1&mode=role"),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    let mut trust = role["documents"][0]["policy"].clone();
    trust["Statement"][0]
        .as_object_mut()
        .unwrap()
        .remove("Condition");
    let permission = role["documents"][1]["policy"].to_string();
    let found: Value = app
        .post_json(
            &path(&project),
            &owner,
            &json!({ "region": "us-east-1", "mode": "role", "policy": trust.to_string(), "permission_policy": permission }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["findings"][0]["problem"], "missing_external_id",
        "{found}"
    );
    assert_eq!(found["findings"][0]["document"], "trust_policy");
}

#[tokio::test]
async fn bad_input_names_the_field_and_other_organizations_see_nothing() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "shop", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let missing = app
        .post_json(
            &path(&project),
            &owner,
            &json!({ "region": "mars-1", "policy": " " }),
        )
        .await;
    assert_eq!(missing.status(), 422);
    let named = fields(&crate::helpers::problem(missing).await);
    assert!(
        named.contains(&"region".to_owned()) && named.contains(&"policy".to_owned()),
        "{named:?}"
    );
    let huge = app
        .post_json(
            &path(&project),
            &owner,
            &json!({ "region": "us-east-1", "policy": "x".repeat(16_385) }),
        )
        .await;
    assert_eq!(huge.status(), 422);
    let stranger = app.stranger_key().await;
    let hidden = app
        .post_json(
            &path(&project),
            &stranger,
            &json!({ "region": "us-east-1", "policy": "{}" }),
        )
        .await;
    assert_eq!(hidden.status(), 404);
}

#[tokio::test]
async fn the_page_checks_a_pasted_policy_without_javascript() {
    let app = spawn_app_with(&[("CMEK_AWS_ACCOUNT_ID", ACCOUNT)]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "shop", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = app.signed_in_owner().await;
    let page_path = format!("/projects/{project}/encryption-keys/aws-policy-check");
    let form = browser
        .get(app.url(&format!("{page_path}?region=us-east-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("Check my key policy"));

    let result = browser
        .post(app.url(&page_path))
        .form(&[
            ("region", "us-east-1"),
            ("mode", "key_policy"),
            ("policy", "{\"Statement\": ["),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    let page = result.text().await.unwrap();
    assert!(page.contains("data-problem=\"invalid_json\""), "{page}");
    assert!(
        page.contains("Statement&quot;: [") || page.contains("Statement&#34;: ["),
        "the form comes back filled in: {page}"
    );
    // The wizard offers it for AWS keys.
    let wizard = browser
        .get(app.url(&format!(
            "/projects/{project}/encryption-keys/new?provider=aws_kms&region=us-east-1"
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(wizard.contains("class=\"policy-doctor\""), "{wizard}");
}
