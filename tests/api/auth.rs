use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::helpers::{problem, problem_type, spawn_app};

#[tokio::test]
async fn requests_without_credentials_get_401_with_a_challenge() {
    let app = spawn_app().await;

    let response = app
        .api
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        problem(response).await["type"],
        problem_type("unauthenticated")
    );
}

#[tokio::test]
async fn a_wrong_api_key_gets_401() {
    let app = spawn_app().await;
    app.api_key(Role::Owner).await;

    for header in [
        "Bearer cmek_not-a-real-key",
        "Basic b3duZXI6b3duZXI=",
        "Bearer",
    ] {
        let response = app
            .api
            .get(app.url("/api/v1/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
    }
}

#[tokio::test]
async fn me_names_the_caller_its_organization_and_role() {
    let app = spawn_app().await;
    for role in Role::ALL {
        let key = app.api_key(role).await;
        let me: Value = app.get("/api/v1/me", &key).await.json().await.unwrap();
        assert_eq!(me["role"], role.as_str());
        assert_eq!(me["actor"]["type"], "api_key");
        assert_eq!(me["organization"]["name"], "My Organization");
    }
}

#[tokio::test]
async fn a_revoked_api_key_stops_working_at_once() {
    let app = spawn_app().await;
    let key = app.api_key(Role::Member).await;
    assert_eq!(app.get("/api/v1/me", &key).await.status(), 200);
    let operator = app.console.identity().operator(None).await.unwrap();
    let listed = app.console.identity().api_keys(&operator).await.unwrap();

    app.console
        .identity()
        .revoke_api_key(&operator, listed[0].id)
        .await
        .unwrap();

    assert_eq!(app.get("/api/v1/me", &key).await.status(), 401);
}

#[tokio::test]
async fn api_keys_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let key = app.api_key(Role::Owner).await;

    let operator = app.console.identity().operator(None).await.unwrap();
    let stored = app.console.identity().api_keys(&operator).await.unwrap();

    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].key_hash, key);
    assert!(!stored[0].key_hash.contains(&key[5..]));
    assert!(key.starts_with(&stored[0].prefix));
}

#[tokio::test]
async fn only_owners_create_api_keys() {
    let app = spawn_app().await;
    let member_key = app.api_key(Role::Member).await;
    let member = app
        .console
        .identity()
        .authenticate_api_key(&member_key, None)
        .await
        .unwrap()
        .unwrap();

    let refused = app
        .console
        .identity()
        .create_api_key(&member, "escalate", Role::Owner)
        .await;

    assert!(refused.is_err());
}

#[tokio::test]
async fn the_bootstrap_link_signs_in_once() {
    let app = spawn_app().await;
    let browser = app.browser();

    let first = app.redeem_link(&browser, &app.sign_in_url).await;
    assert_eq!(first.status(), 303);
    assert_eq!(first.headers()["location"], "/projects");

    let again = app.redeem_link(&app.browser(), &app.sign_in_url).await;
    assert_eq!(again.status(), 401);
    assert!(again.text().await.unwrap().contains("already been used"));
}

#[tokio::test]
async fn an_expired_sign_in_link_is_refused() {
    let app = spawn_app().await;

    app.clock.advance(chrono::Duration::minutes(16));
    let response = app.redeem_link(&app.browser(), &app.sign_in_url).await;

    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn an_unknown_sign_in_token_is_refused() {
    let app = spawn_app().await;

    let response = app.redeem_link(&app.browser(), "x?token=made-up").await;

    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("not valid"));
}

#[tokio::test]
async fn a_printed_link_keeps_working_when_another_is_issued_and_signing_in_spends_both() {
    let app = spawn_app().await;

    let fresh = app
        .console
        .identity()
        .bootstrap()
        .await
        .unwrap()
        .expect("owner has not signed in yet");

    assert_eq!(
        app.redeem_link(&app.browser(), &app.sign_in_url)
            .await
            .status(),
        303,
        "the link printed first still works"
    );
    let fresh_link = format!("{}/sign-in/link?token={fresh}", app.address);
    assert_eq!(
        app.redeem_link(&app.browser(), &fresh_link).await.status(),
        401,
        "once the owner signed in, the other links are spent"
    );
    assert!(
        app.console.identity().bootstrap().await.unwrap().is_none(),
        "no link once the owner signed in"
    );
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site() {
    let app = spawn_app().await;

    let response = app.redeem_link(&app.browser(), &app.sign_in_url).await;

    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("cmek_session="));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(cookie.contains("Path=/"));
    assert!(
        !cookie.contains("Secure"),
        "plain-http installs cannot use Secure cookies"
    );
}

#[tokio::test]
async fn a_session_works_for_the_api_and_ends_at_sign_out() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;
    let me: Value = browser
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "owner");
    assert_eq!(me["actor"]["type"], "user");

    let out = browser.post(app.url("/sign-out")).send().await.unwrap();
    assert_eq!(out.status(), 303);

    let after = browser.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;

    app.clock.advance(chrono::Duration::hours(9));

    let page = browser.get(app.url("/projects")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/sign-in");
}

#[tokio::test]
async fn a_short_idle_timeout_keeps_an_active_session_alive_and_ends_an_idle_one() {
    let app = crate::helpers::spawn_app_with(&[("CMEK_SESSION_IDLE_TIMEOUT", "10s")]).await;
    let browser = app.signed_in_owner().await;

    for _ in 0..4 {
        app.clock.advance(chrono::Duration::seconds(4));
        let me = browser.get(app.url("/api/v1/me")).send().await.unwrap();
        assert_eq!(
            me.status(),
            200,
            "used every 4 s, a 10 s idle time-out never ends it"
        );
    }
    app.clock.advance(chrono::Duration::seconds(11));
    let idle = browser.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(idle.status(), 401, "11 s idle ends it");
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_do_not_make_a_foreign_origin_ours() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;

    let forged = browser
        .post(app.url("/api/v1/projects"))
        .header("origin", "http://evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "host=evil.example;proto=http")
        .json(&json!({ "name": "csrf", "cmek_enabled": true }))
        .send()
        .await
        .unwrap();

    assert_eq!(forged.status(), 403);
}

#[tokio::test]
async fn a_percent_encoded_sign_in_path_gets_the_same_origin_check() {
    let app = spawn_app().await;
    let token = app.sign_in_url.split("token=").nth(1).unwrap();

    // Login CSRF: a foreign page posting someone's link to a visitor's browser.
    let forged = app
        .api
        .post(app.url("/%73ign-in/link"))
        .header("origin", "https://evil.example")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();

    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn cookie_authenticated_writes_need_the_consoles_origin() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;
    let body = json!({ "name": "csrf", "cmek_enabled": true });

    let foreign = browser
        .post(app.url("/api/v1/projects"))
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        problem(foreign).await["type"],
        problem_type("cross-site-request")
    );

    let form = browser
        .post(app.url("/projects"))
        .header("origin", "https://evil.example")
        .form(&[("name", "csrf"), ("cmek_enabled", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 403);

    let own = browser
        .post(app.url("/api/v1/projects"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 201);
}

#[tokio::test]
async fn a_cookie_write_without_any_origin_is_refused() {
    let app = spawn_app().await;
    let signed_in = app.redeem_link(&app.browser(), &app.sign_in_url).await;
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // A client that sends the session cookie but neither Origin nor Referer.
    let response = app
        .api
        .post(app.url("/api/v1/projects"))
        .header("cookie", &cookie)
        .json(&json!({ "name": "no-origin", "cmek_enabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let read = app
        .api
        .get(app.url("/api/v1/projects"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads need no Origin");
    let body: Value = read.json().await.unwrap();
    assert!(
        body["items"].as_array().unwrap().is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn behind_https_cookies_are_secure_and_hsts_is_sent() {
    let app =
        crate::helpers::spawn_app_with(&[("CMEK_PUBLIC_URL", "https://console.example")]).await;

    let page = app.api.get(app.url("/sign-in")).send().await.unwrap();
    let token = app.sign_in_url.split("token=").nth(1).unwrap();
    let from_elsewhere = app
        .browser()
        .post(app.url("/sign-in/link"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let signed_in = app
        .browser()
        .post(app.url("/sign-in/link"))
        .header("origin", "https://console.example")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();

    assert_eq!(
        from_elsewhere.status(),
        403,
        "with CMEK_PUBLIC_URL set, only its origin may post"
    );

    assert_eq!(
        page.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(
        app.sign_in_url
            .starts_with("https://console.example/sign-in/link?token=")
    );
}
