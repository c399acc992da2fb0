//! Single sign-on against a real OpenID provider (npm oidc-provider, started by scripts/test),
//! invitations, members and organizations.

use cmek_console::domain::identity::Role;
use cmek_console::http::routes::{Access, api_routes};
use reqwest::{Client, Response};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::moto::service;

async fn sso_app() -> TestApp {
    let issuer = service("CMEK_TEST_OIDC_ISSUER");
    spawn_app_with(&[
        ("CMEK_OIDC_ISSUER", &issuer),
        ("CMEK_OIDC_CLIENT_ID", "cmek-console"),
        ("CMEK_OIDC_CLIENT_SECRET", "cmek-console-test-secret"),
    ])
    .await
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        format!("{origin}{location}")
    }
}

fn form_action(html: &str) -> String {
    html.split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form")
        .to_owned()
}

/// Starts Sign in with SSO at the console: the provider URL it redirects to, and its cookie.
async fn start_sso(app: &TestApp, browser: &Client) -> (String, String) {
    let start = browser.get(app.url("/sign-in/sso")).send().await.unwrap();
    assert_eq!(
        start.status(),
        303,
        "Sign in with SSO redirects to the provider"
    );
    let sso_cookie = start.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (
        start.headers()["location"].to_str().unwrap().to_owned(),
        sso_cookie,
    )
}

/// Follows the provider from `url` through its login (as `login`) and consent pages, and
/// returns the callback URL it sends the browser to, not yet requested.
async fn through_provider(browser: &Client, mut url: String, login: &str) -> String {
    for _ in 0..12 {
        if url.contains("/sign-in/sso/callback") {
            return url;
        }
        let response = browser.get(&url).send().await.unwrap();
        if response.status().is_redirection() {
            url = absolute(&url, response.headers()["location"].to_str().unwrap());
            continue;
        }
        let html = response.text().await.unwrap();
        let action = form_action(&html);
        let fields: Vec<(&str, &str)> = if html.contains("value=\"login\"") {
            vec![
                ("prompt", "login"),
                ("login", login),
                ("password", "anything"),
            ]
        } else {
            vec![("prompt", "consent")]
        };
        let next = browser.post(&action).form(&fields).send().await.unwrap();
        url = absolute(&action, next.headers()["location"].to_str().unwrap());
    }
    panic!("the provider never redirected back");
}

/// The whole authorization for `login`: the callback URL and the console's SSO cookie.
async fn authorize(app: &TestApp, browser: &Client, login: &str) -> (String, String) {
    let (provider_url, sso_cookie) = start_sso(app, browser).await;
    (
        through_provider(browser, provider_url, login).await,
        sso_cookie,
    )
}

async fn sso_sign_in(app: &TestApp, login: &str) -> (Client, Response) {
    let browser = app.browser();
    let (callback, _) = authorize(app, &browser, login).await;
    let response = browser.get(&callback).send().await.unwrap();
    (browser, response)
}

async fn assert_signed_out(app: &TestApp, browser: &Client) {
    let me = browser.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(me.status(), 401, "the browser holds no working session");
}

async fn me(app: &TestApp, browser: &Client) -> Value {
    browser
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn invite(app: &TestApp, email: &str, role: Role) {
    let operator = app.console.identity().operator(None).await.unwrap();
    app.console
        .identity()
        .invite(&operator, email, role)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn an_invited_person_joins_with_sso_in_the_invited_role() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Auditor).await;

    let (browser, response) = sso_sign_in(&app, "ada").await;

    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/projects");
    let me = me(&app, &browser).await;
    assert_eq!(me["role"], "auditor");
    assert_eq!(me["actor"]["type"], "user");
    assert_eq!(me["actor"]["name"], "Test ada");
    let key = app.api_key(Role::Auditor).await;
    let log: Value = app
        .get("/api/v1/audit-events?action=invitation.accepted", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn the_next_sign_in_finds_the_same_member_by_issuer_and_subject() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let (first, _) = sso_sign_in(&app, "ada").await;
    let first_id = me(&app, &first).await["actor"]["id"].clone();

    let (second, response) = sso_sign_in(&app, "ada").await;

    assert_eq!(response.status(), 303);
    assert_eq!(me(&app, &second).await["actor"]["id"], first_id);
    let operator = app.console.identity().operator(None).await.unwrap();
    assert_eq!(
        app.console
            .identity()
            .members(&operator)
            .await
            .unwrap()
            .len(),
        2,
        "the owner and ada, once"
    );
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn without_an_invitation_nobody_gets_in() {
    let app = sso_app().await;

    let (browser, response) = sso_sign_in(&app, "eve").await;

    assert_eq!(response.status(), 401);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("not a member of any organization")
    );
    assert_signed_out(&app, &browser).await;
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn an_unverified_email_does_not_accept_an_invitation() {
    let app = sso_app().await;
    invite(&app, "unverified-bob@example.com", Role::Owner).await;

    let (_, response) = sso_sign_in(&app, "unverified-bob").await;

    assert_eq!(response.status(), 401);
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn expired_and_revoked_invitations_are_refused() {
    let app = sso_app().await;
    invite(&app, "old@example.com", Role::Member).await;
    invite(&app, "gone@example.com", Role::Member).await;
    app.db()
        .await
        .execute_unprepared(
            "UPDATE invitations SET expires_at = created_at WHERE email = 'old@example.com'",
        )
        .await
        .unwrap();
    let operator = app.console.identity().operator(None).await.unwrap();
    let gone = app
        .console
        .identity()
        .invitations(&operator)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.email == "gone@example.com")
        .unwrap();
    app.console
        .identity()
        .revoke_invitation(&operator, gone.id)
        .await
        .unwrap();

    assert_eq!(sso_sign_in(&app, "old").await.1.status(), 401);
    assert_eq!(sso_sign_in(&app, "gone").await.1.status(), 401);
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_tampered_state_is_refused() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let browser = app.browser();
    let (callback, _) = authorize(&app, &browser, "ada").await;

    let forged = callback.replace("state=", "state=forged");
    let response = browser.get(&forged).send().await.unwrap();

    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("state does not match")
    );
    assert_signed_out(&app, &browser).await;
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_replayed_code_is_refused() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let browser = app.browser();
    let (callback, sso_cookie) = authorize(&app, &browser, "ada").await;
    assert_eq!(browser.get(&callback).send().await.unwrap().status(), 303);

    let replay = app
        .api
        .get(&callback)
        .header("cookie", &sso_cookie)
        .send()
        .await
        .unwrap();

    assert_eq!(replay.status(), 401);
    assert!(
        replay
            .text()
            .await
            .unwrap()
            .contains("could not be verified")
    );
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_wrong_nonce_is_refused() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let browser = app.browser();
    let (callback, sso_cookie) = authorize(&app, &browser, "ada").await;
    let mut parts: Vec<&str> = sso_cookie
        .trim_start_matches("cmek_sso=")
        .split('.')
        .collect();
    parts[1] = "another-nonce";
    let forged = format!("cmek_sso={}", parts.join("."));

    let response = app
        .api
        .get(&callback)
        .header("cookie", &forged)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn an_expired_id_token_is_refused() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let browser = app.browser();
    let (callback, _) = authorize(&app, &browser, "ada").await;

    app.clock.advance(chrono::Duration::hours(2));
    let response = browser.get(&callback).send().await.unwrap();

    assert_eq!(response.status(), 401);
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_role_change_takes_effect_on_the_next_request() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let (browser, _) = sso_sign_in(&app, "ada").await;
    let ada = me(&app, &browser).await["actor"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let operator = app.console.identity().operator(None).await.unwrap();

    app.console
        .identity()
        .change_role(&operator, ada, Role::Owner)
        .await
        .unwrap();

    assert_eq!(me(&app, &browser).await["role"], "owner");
    app.console
        .identity()
        .remove_member(&operator, ada)
        .await
        .unwrap();
    assert_signed_out(&app, &browser).await;
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let app = sso_app().await;
    let owner = app.signed_in_owner().await;
    let operator = app.console.identity().operator(None).await.unwrap();
    let members = app.console.identity().members(&operator).await.unwrap();
    let only_owner = members[0].id;

    let demote = owner
        .post(app.url(&format!("/members/{only_owner}/role")))
        .form(&[("role", "member")])
        .send()
        .await
        .unwrap();
    assert_eq!(demote.status(), 409);
    assert!(
        demote
            .text()
            .await
            .unwrap()
            .contains("at least one Organization Owner")
    );
    let removal = app
        .console
        .identity()
        .remove_member(&operator, only_owner)
        .await;
    assert!(matches!(
        removal,
        Err(cmek_console::domain::DomainError::Conflict { .. })
    ));

    invite(&app, "ada@example.com", Role::Owner).await;
    sso_sign_in(&app, "ada").await;
    let demoted = owner
        .post(app.url(&format!("/members/{only_owner}/role")))
        .form(&[("role", "member")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        demoted.status(),
        303,
        "with a second owner the first may step down"
    );
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn invitations_are_managed_on_the_members_page() {
    let app = sso_app().await;
    let owner = app.signed_in_owner().await;

    let invited = owner
        .post(app.url("/members/invite"))
        .form(&[("email", "New@Example.com"), ("role", "auditor")])
        .send()
        .await
        .unwrap();
    assert_eq!(invited.status(), 303);
    let again = owner
        .post(app.url("/members/invite"))
        .form(&[("email", "new@example.com"), ("role", "member")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 422);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("already has a pending invitation")
    );
    let bad = owner
        .post(app.url("/members/invite"))
        .form(&[("email", "not-an-email"), ("role", "member")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    let page = owner
        .get(app.url("/members"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("new@example.com"));
    assert!(page.contains("Sign in with") || page.contains("Signs in with"));
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_person_in_two_organizations_switches_between_them() {
    let app = sso_app().await;
    let (second, _) = app
        .console
        .identity()
        .create_organization("Second Org", "ada@example.com")
        .await
        .unwrap();
    let first_operator = app
        .console
        .identity()
        .operator(Some(
            app.console
                .identity()
                .first_owner()
                .await
                .unwrap()
                .unwrap()
                .organization_id,
        ))
        .await
        .unwrap();
    app.console
        .identity()
        .invite(&first_operator, "ada@example.com", Role::Member)
        .await
        .unwrap();
    let (browser, _) = sso_sign_in(&app, "ada").await;
    let starting = me(&app, &browser).await["organization"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = if starting == second.id.to_string() {
        first_operator.organization_id.to_string()
    } else {
        second.id.to_string()
    };

    let page = browser
        .get(app.url("/projects"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Second Org") && page.contains("My Organization"),
        "the switcher lists both"
    );
    let switched = browser
        .post(app.url("/organizations/switch"))
        .form(&[("organization_id", other.as_str())])
        .send()
        .await
        .unwrap();

    assert_eq!(switched.status(), 303);
    assert_eq!(me(&app, &browser).await["organization"]["id"], other);
    let stranger = uuid::Uuid::now_v7().to_string();
    let refused = browser
        .post(app.url("/organizations/switch"))
        .form(&[("organization_id", stranger.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn another_organizations_resources_are_not_found_on_every_route() {
    let app = sso_app().await;
    let owner_a = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner_a, "private", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let operator_a = app.console.identity().operator(None).await.unwrap();
    let local = app
        .console
        .keys()
        .create_local_key(&operator_a, "k")
        .await
        .unwrap();
    let created: Value = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys"),
            &owner_a,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": local.id }),
        )
        .await
        .json()
        .await
        .unwrap();
    let key_id = created["id"].as_str().unwrap().to_owned();
    let cluster: Value = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            &owner_a,
            &json!({ "name": "private", "provider": "local", "regions": ["us-east-1"] }),
        )
        .await
        .json()
        .await
        .unwrap();
    let cluster_id = cluster["id"].as_str().unwrap().to_owned();
    let stored = app
        .api
        .put(app.url(&format!("/api/v1/clusters/{cluster_id}/objects/secret")))
        .bearer_auth(&owner_a)
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
    let backup = app.take_backup(&owner_a, &cluster_id).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let webhook: Value = app
        .post_json(
            "/api/v1/webhooks",
            &owner_a,
            &json!({ "url": "https://alerts.example.com/hook" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    let (second, _) = app
        .console
        .identity()
        .create_organization("Intruders", "mallory@example.com")
        .await
        .unwrap();
    let operator_b = app
        .console
        .identity()
        .operator(Some(second.id))
        .await
        .unwrap();
    let owner_b = app
        .console
        .identity()
        .create_api_key(&operator_b, "b", Role::Owner)
        .await
        .unwrap()
        .secret;

    let mut checked = 0;
    for route in api_routes().into_iter().filter(|r| {
        r.access == Access::SignedIn
            && [
                "{project_id}",
                "{cluster_id}",
                "{backup_id}",
                "{webhook_id}",
                "{local_key_id}",
            ]
            .iter()
            .any(|id| r.path.contains(id))
    }) {
        let path = route
            .path
            .replace("{project_id}", &project)
            .replace("{key_id}", &key_id)
            .replace("{cluster_id}", &cluster_id)
            .replace("{backup_id}", &backup_id)
            .replace("{webhook_id}", &webhook_id)
            .replace("{local_key_id}", &local.id.to_string())
            .replace("{name}", "secret");
        // A body each route accepts, so only the ownership check can refuse.
        let body = if route.path.ends_with("aws-cmek") {
            json!({ "specs": [{ "region": "us-east-1", "kms_arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" }] })
        } else if route.method.as_str() == "PATCH" {
            json!({ "name": "taken over" })
        } else if route.path.ends_with("/clusters") {
            json!({ "name": "intruder", "provider": "local", "regions": ["us-east-1"] })
        } else if route.path.ends_with("/restore") {
            json!({ "name": "intruder" })
        } else if route.path.ends_with("/aws-policy-check") {
            json!({ "region": "us-east-1", "policy": "{}" })
        } else {
            json!({ "provider": "local", "region": "us-east-1", "key_id": local.id })
        };
        let response = app
            .api
            .request(
                route.method.as_str().parse().unwrap(),
                app.url(&format!("{path}?region=us-east-1")),
            )
            .bearer_auth(&owner_b)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{} {}", route.method, route.path);
        checked += 1;
    }
    assert!(checked >= 34);
    let read: Value = app
        .get(&format!("/api/v1/projects/{project}"), &owner_a)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["name"], "private", "nothing changed");
    let secret = app
        .get(
            &format!("/api/v1/clusters/{cluster_id}/objects/secret"),
            &owner_a,
        )
        .await;
    assert_eq!(
        secret.bytes().await.unwrap().as_ref(),
        b"secret",
        "the data is untouched"
    );
    let cluster: Value = app
        .get(&format!("/api/v1/clusters/{cluster_id}"), &owner_a)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cluster["state"], "available");
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn sign_in_attempts_are_rate_limited_per_address() {
    let app = sso_app().await;
    let browser = app.browser();

    let mut last = None;
    for _ in 0..=cmek_console::domain::sign_in::SIGN_IN_ATTEMPTS {
        last = Some(app.redeem_link(&browser, "x?token=guess").await);
    }

    let last = last.unwrap();
    assert_eq!(last.status(), 429);
    assert!(last.headers().contains_key("retry-after"));
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn the_sign_in_page_offers_sso_when_configured() {
    let app = sso_app().await;

    let page = app
        .api
        .get(app.url("/sign-in"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(page.contains("Sign in with SSO"));
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn signing_out_ends_the_session_here_and_at_the_provider() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let (browser, _) = sso_sign_in(&app, "ada").await;

    let out = browser.post(app.url("/sign-out")).send().await.unwrap();

    assert_eq!(out.status(), 303);
    let location = out.headers()["location"].to_str().unwrap().to_owned();
    let issuer = std::env::var("CMEK_TEST_OIDC_ISSUER").unwrap();
    assert!(
        location.starts_with(&format!("{issuer}/session/end?client_id=cmek-console")),
        "{location}"
    );
    assert!(location.contains("post_logout_redirect_uri=http%3A%2F%2F127.0.0.1"));
    assert_signed_out(&app, &browser).await;
    let end = browser.get(&location).send().await.unwrap();
    assert_eq!(
        end.status(),
        200,
        "the provider asks to confirm the sign-out"
    );
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_code_issued_to_another_client_is_refused() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let browser = app.browser();
    let (console_authorize, _) = start_sso(&app, &browser).await;
    // The same request, but for the other application: its code must not work for the console.
    let other_authorize =
        console_authorize.replace("client_id=cmek-console", "client_id=other-client");
    let callback = through_provider(&browser, other_authorize, "ada").await;

    let response = browser.get(&callback).send().await.unwrap();

    assert_eq!(response.status(), 401);
    assert_signed_out(&app, &browser).await;
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_provider_whose_issuer_does_not_match_is_not_trusted() {
    let issuer = service("CMEK_TEST_OIDC_ISSUER");
    // The same provider under another name: its discovery document names a different issuer.
    let renamed = issuer.replace("127.0.0.1", "localhost");
    let app = spawn_app_with(&[
        ("CMEK_OIDC_ISSUER", &renamed),
        ("CMEK_OIDC_CLIENT_ID", "cmek-console"),
        ("CMEK_OIDC_CLIENT_SECRET", "cmek-console-test-secret"),
    ])
    .await;

    let response = app
        .browser()
        .get(app.url("/sign-in/sso"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("could not be reached")
    );
}

#[tokio::test]
#[ignore = "needs the OpenID provider (scripts/test starts it)"]
async fn a_member_invited_to_another_organization_joins_it_at_the_next_sign_in() {
    let app = sso_app().await;
    invite(&app, "ada@example.com", Role::Member).await;
    let (browser, _) = sso_sign_in(&app, "ada").await;
    let first = me(&app, &browser).await["organization"]["id"].clone();
    let (second, _) = app
        .console
        .identity()
        .create_organization("Second Org", "ada@example.com")
        .await
        .unwrap();

    let (again, _) = sso_sign_in(&app, "ada").await;

    assert_eq!(
        me(&app, &again).await["organization"]["id"],
        first,
        "the most recent one opens"
    );
    let switched = again
        .post(app.url("/organizations/switch"))
        .form(&[("organization_id", second.id.to_string().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 303);
    assert_eq!(me(&app, &again).await["role"], "owner");
}
