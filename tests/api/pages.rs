use cmek_console::domain::identity::Role;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn signed_out_visitors_are_sent_to_sign_in() {
    let app = spawn_app().await;

    for path in ["/projects", "/projects/new", "/api-keys", "/audit"] {
        let response = app.api.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/sign-in");
    }
}

#[tokio::test]
async fn the_sign_in_link_page_asks_before_using_the_link() {
    let app = spawn_app().await;

    let page = app.api.get(&app.sign_in_url).send().await.unwrap();

    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<button class=\"primary\" type=\"submit\">Sign in</button>")
    );
    assert_eq!(
        app.redeem_link(&app.browser(), &app.sign_in_url)
            .await
            .status(),
        303,
        "a GET did not use it up"
    );
}

#[tokio::test]
async fn an_owner_creates_a_project_with_the_form() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;
    let form = browser
        .get(app.url("/projects/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(form.contains("cannot be enabled or disabled after the project is created"));

    let created = browser
        .post(app.url("/projects"))
        .form(&[
            ("name", "Web shop"),
            ("cmek_enabled", "true"),
            ("revocation_policy", ""),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(created.status(), 303);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let page = browser
        .get(app.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Web shop"));
    assert!(page.contains("CMEK enabled"));
    assert!(page.contains("Project Settings"));
    assert!(page.contains("Encryption Access"));
    let list = browser
        .get(app.url("/projects"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("Web shop"));
}

#[tokio::test]
async fn a_refused_form_comes_back_filled_in_with_inline_errors() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;

    let response = browser
        .post(app.url("/projects"))
        .form(&[("name", "bad<name>")])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("value=\"bad&#60;name&#62;\"") || page.contains("value=\"bad&lt;name&gt;\""),
        "{page}"
    );
    assert!(page.contains("may contain letters, digits"));
    assert!(page.contains("choose whether this project uses customer-managed encryption keys"));
    let key = app.api_key(Role::Auditor).await;
    let list: Value = app
        .get("/api/v1/projects", &key)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn renaming_from_project_settings_works_and_errors_inline() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;
    let key = app.api_key(Role::Owner).await;
    let project = app.create_project(&key, "old name", false).await;
    app.create_project(&key, "taken", false).await;
    let path = format!("/projects/{}", project["id"].as_str().unwrap());

    let clash = browser
        .post(app.url(&path))
        .form(&[("name", "taken")])
        .send()
        .await
        .unwrap();
    assert_eq!(clash.status(), 422);
    assert!(clash.text().await.unwrap().contains("already exists"));

    let renamed = browser
        .post(app.url(&path))
        .form(&[("name", "new name")])
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 303);
    let page = browser
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("new name"));
    assert!(page.contains("CMEK cannot be enabled on an existing project"));
}

#[tokio::test]
async fn an_unknown_project_page_is_a_404_page() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;

    for path in [
        format!("/projects/{}", uuid::Uuid::now_v7()),
        "/projects/zzz".into(),
        "/nowhere".into(),
    ] {
        let response = browser.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(response.text().await.unwrap().contains("Not found"));
    }
}

#[tokio::test]
async fn an_owner_creates_and_revokes_an_api_key_in_the_console() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;

    let created = browser
        .post(app.url("/api-keys"))
        .form(&[("name", "terraform"), ("role", "member")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let page = created.text().await.unwrap();
    let secret = page
        .split("<code id=\"new-key\">")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .expect("the new key is shown once")
        .to_owned();
    let me: Value = app.get("/api/v1/me", &secret).await.json().await.unwrap();
    assert_eq!(me["role"], "member");

    let listing = browser
        .get(app.url("/api-keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("terraform"));
    assert!(
        !listing.contains(&secret),
        "the secret is never shown again"
    );
    let id = listing
        .split("/api-keys/")
        .nth(1)
        .and_then(|rest| rest.split("/revoke").next())
        .unwrap()
        .to_owned();

    let revoked = browser
        .post(app.url(&format!("/api-keys/{id}/revoke")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);
    assert_eq!(app.get("/api/v1/me", &secret).await.status(), 401);
}

#[tokio::test]
async fn pages_take_a_session_not_an_api_key() {
    let app = spawn_app().await;
    let key = app.api_key(Role::Owner).await;

    let response = app
        .api
        .get(app.url("/projects"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/sign-in");
}

#[tokio::test]
async fn the_audit_page_lists_events_and_links_the_csv_export() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;
    let key = app.api_key(Role::Owner).await;
    app.create_project(&key, "logged", true).await;

    let page = browser
        .get(app.url("/audit?action=project.created"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(page.contains("<code>project.created</code>"));
    assert!(!page.contains("<code>organization.created</code>"));
    assert!(
        page.contains("/api/v1/audit-events?format=csv&action=project.created"),
        "{page}"
    );
}
