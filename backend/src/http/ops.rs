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
        Ok(()) => {
            let failing = state.workers.failing();
            if failing.is_empty() {
                return HttpResponse::Ok().json(json!({ "status": "ready" }));
            }
            // Say which worker keeps failing (never its error text: it may name internals).
            let names: Vec<&str> = failing.iter().map(|w| w.name).collect();
            tracing::warn!(workers = ?names, "not ready: background workers keep failing");
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(json!({
                "status": "unavailable",
                "reason": "background workers keep failing",
                "failing_workers": names,
            }))
        }
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

/// The key monitor's and the alerts' metrics.
async fn monitor_metrics(console: &crate::domain::Console, body: &mut String) {
    use std::fmt::Write;
    let stats = console.keys().monitor_stats();
    body.push_str(
        "# HELP cmek_key_checks_total Keys the key monitor of this instance checked, by provider and result (the status the probe saw).\n\
         # TYPE cmek_key_checks_total counter\n",
    );
    for (provider, result, n) in stats.by_result() {
        let _ = writeln!(
            body,
            "cmek_key_checks_total{{provider=\"{provider}\",result=\"{result}\"}} {n}"
        );
    }
    body.push_str(
        "# HELP cmek_key_check_duration_seconds How long one key check (the whole probe) took.\n\
         # TYPE cmek_key_check_duration_seconds histogram\n",
    );
    let (buckets, sum) = stats.latency();
    for (i, count) in buckets.iter().enumerate() {
        let bound = crate::domain::keys::LATENCY_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            body,
            "cmek_key_check_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(body, "cmek_key_check_duration_seconds_sum {sum}");
    let _ = writeln!(
        body,
        "cmek_key_check_duration_seconds_count {}",
        stats.total()
    );
    body.push_str(
        "# HELP cmek_keys Encryption keys by status (every organization).\n\
         # TYPE cmek_keys gauge\n",
    );
    match console.keys().key_status_counts().await {
        Ok(counts) => {
            for status in crate::domain::keys::status_report::STATUSES {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                let _ = writeln!(body, "cmek_keys{{status=\"{}\"}} {n}", status.as_str());
            }
        }
        Err(err) => tracing::warn!(error = %err, "key counts for /metrics"),
    }
    if let Some(results) = console.alerts().ok().and_then(|a| a.webhook_results()) {
        use std::sync::atomic::Ordering::Relaxed;
        body.push_str(
            "# HELP cmek_webhook_deliveries_total Webhook delivery attempts of this instance by result: delivered, retry (a failed attempt with another scheduled), failed (the last attempt failed).\n\
             # TYPE cmek_webhook_deliveries_total counter\n",
        );
        for (result, n) in [
            ("delivered", results.delivered.load(Relaxed)),
            ("retry", results.retried.load(Relaxed)),
            ("failed", results.failed.load(Relaxed)),
        ] {
            let _ = writeln!(
                body,
                "cmek_webhook_deliveries_total{{result=\"{result}\"}} {n}"
            );
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
        state
            .console
            .clusters()
            .map_or(0, |c| c.cluster_kms_calls())
    ));
    monitor_metrics(&state.console, &mut body).await;
    worker_metrics(&state, &mut body).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

/// The supervised background workers, and the reconciliations waiting.
async fn worker_metrics(state: &AppState, body: &mut String) {
    use std::fmt::Write;
    let workers = state.workers.report();
    for (metric, help, kind, value) in [
        (
            "cmek_worker_restarts_total",
            "Background workers of this instance restarted after a panic, by worker.",
            "counter",
            (|w: &crate::supervisor::WorkerReport| w.restarts) as fn(&_) -> u64,
        ),
        (
            "cmek_worker_errors_total",
            "Rounds of a background worker of this instance that failed, by worker.",
            "counter",
            |w| w.errors,
        ),
        (
            "cmek_worker_failing",
            "1 while a background worker of this instance keeps failing (3 failures in a row).",
            "gauge",
            |w| u64::from(w.failing),
        ),
    ] {
        let _ = writeln!(body, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for worker in &workers {
            let _ = writeln!(
                body,
                "{metric}{{worker=\"{}\"}} {}",
                worker.name,
                value(worker)
            );
        }
    }
    let pending = match state.console.clusters() {
        Ok(clusters) => clusters.pending_reactions().await,
        Err(err) => Err(err),
    };
    match pending {
        Ok(n) => {
            let _ = writeln!(
                body,
                "# HELP cmek_reactions_pending Reconciliations of clusters with their keys waiting to run (every instance).\n# TYPE cmek_reactions_pending gauge\ncmek_reactions_pending {n}"
            );
        }
        Err(err) => tracing::warn!(error = %err, "pending reactions for /metrics"),
    }
}
