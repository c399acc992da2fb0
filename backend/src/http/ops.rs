//! Operations endpoints: liveness, readiness (the database answers) and Prometheus metrics.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::domain::DomainError;
use crate::domain::ports::StoreError;
use crate::http::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.console.ready().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            let reason = match err {
                DomainError::Store(StoreError::Damaged(_)) => "database damaged",
                _ => "database unreachable",
            };
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
                .json(json!({ "status": "unavailable", "reason": reason }))
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut body = state.metrics.render();
    body.push_str(
        "# HELP cmek_cluster_kms_calls_total Data-key calls to a KMS (generate, unwrap) for clusters and backups.\n\
         # TYPE cmek_cluster_kms_calls_total counter\n",
    );
    body.push_str(&format!(
        "cmek_cluster_kms_calls_total {}\n",
        state.console.cluster_kms_calls()
    ));
    body.push_str(
        "# HELP cmek_key_checks_total Keys the key monitor of this instance checked.\n\
         # TYPE cmek_key_checks_total counter\n",
    );
    body.push_str(&format!(
        "cmek_key_checks_total {}\n",
        state.console.monitor_checks()
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
