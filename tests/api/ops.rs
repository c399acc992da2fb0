use std::collections::BTreeSet;

use cmek_console::domain::identity::Role;
use cmek_console::http::routes::{Access, api_routes};
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
    let app = spawn_app().await;

    let health = app.api.get(app.url("/healthz")).send().await.unwrap();
    let ready = app.api.get(app.url("/readyz")).send().await.unwrap();

    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let app = spawn_app().await;
    let key = app.api_key(Role::Auditor).await;
    let id = uuid::Uuid::now_v7();
    app.get(&format!("/api/v1/projects/{id}"), &key).await;
    app.get(&format!("/api/v1/projects/{id}"), &key).await;

    let text = app
        .api
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/api/v1/projects/{project_id}",status="404"} 2"#),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket{"));
    assert!(
        !text.contains(&id.to_string()),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn the_consoles_own_metrics_keep_their_names_and_types() {
    let app = spawn_app().await;

    let text = app
        .api
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Dashboards read these names: the registry must write them as before.
    for line in [
        "# TYPE cmek_cluster_kms_calls_total counter",
        "cmek_cluster_kms_calls_total 0",
        "# TYPE cmek_key_check_duration_seconds histogram",
        r#"cmek_key_check_duration_seconds_bucket{le="+Inf"} 0"#,
        "cmek_key_check_duration_seconds_count 0",
        r#"cmek_keys{status="active"} 0"#,
        r#"cmek_worker_restarts_total{worker="key-monitor"} 0"#,
        r#"cmek_worker_errors_total{worker="backups"} 0"#,
        r#"cmek_worker_failing{worker="storage-sweeper"} 0"#,
        "cmek_reactions_pending 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        !text.contains("# EOF"),
        "the Prometheus text format, as before"
    );
    assert!(!text.contains(".."), "help texts end with one full stop");
}

#[tokio::test]
async fn every_api_route_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc: Value = app
        .api
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = api_routes()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();

    assert_eq!(routed, documented);
}

#[tokio::test]
async fn every_signed_in_route_refuses_anonymous_callers() {
    let app = spawn_app().await;
    for route in api_routes()
        .into_iter()
        .filter(|r| r.access == Access::SignedIn)
    {
        let path = route
            .path
            .replace("{project_id}", &uuid::Uuid::now_v7().to_string());
        let response = app
            .api
            .request(route.method.as_str().parse().unwrap(), app.url(&path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{} {}", route.method, route.path);
    }
}

#[tokio::test]
async fn html_responses_carry_security_headers() {
    let app = spawn_app().await;

    let response = app.api.get(app.url("/sign-in")).send().await.unwrap();

    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert!(headers.contains_key("x-request-id"));
}
