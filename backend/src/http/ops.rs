//! Operations endpoints: liveness, readiness (the database answers) and Prometheus metrics.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

type Labels = Vec<(&'static str, String)>;

/// A histogram whose buckets were counted elsewhere (the key monitor's), encoded as one.
#[derive(Debug)]
struct CountedHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, observations in that bucket alone).
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Registers a family of counters set to the values read now (a fresh registry per scrape:
/// the label values come from fixed sets, so the series stay bounded).
fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, n) in values {
        family.get_or_create(&labels).inc_by(n);
    }
    registry.register(name, help, family);
}

fn gauges(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, i64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, n) in values {
        family.get_or_create(&labels).set(n);
    }
    registry.register(name, help, family);
}

/// The console's own metrics, read at scrape time: data-key calls, the key monitor, keys by
/// status, webhook deliveries, the background workers, the reconciliations waiting.
async fn console_metrics(state: &AppState) -> Registry {
    let mut registry = Registry::default();
    let console = &state.console;
    counters(
        &mut registry,
        "cmek_cluster_kms_calls",
        "Data-key calls to a KMS (generate, unwrap) for clusters and backups",
        [(
            Vec::new(),
            console.clusters().map_or(0, |c| c.cluster_kms_calls()),
        )],
    );
    let stats = console.keys().monitor_stats();
    counters(
        &mut registry,
        "cmek_key_checks",
        "Keys the key monitor of this instance checked, by provider and result (the status the probe saw)",
        stats.by_result().into_iter().map(|(provider, result, n)| {
            (
                vec![
                    ("provider", provider.to_owned()),
                    ("result", result.to_owned()),
                ],
                n,
            )
        }),
    );
    let (cumulative, sum) = stats.latency();
    let bounds = crate::domain::keys::LATENCY_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY]);
    let mut previous = 0;
    let buckets = bounds
        .zip(cumulative)
        .map(|(bound, total)| {
            let alone = total.saturating_sub(previous);
            previous = total;
            (bound, alone)
        })
        .collect();
    registry.register(
        "cmek_key_check_duration_seconds",
        "How long one key check (the whole probe) took",
        CountedHistogram {
            sum,
            count: stats.total(),
            buckets,
        },
    );
    match console.keys().key_status_counts().await {
        Ok(counts) => gauges(
            &mut registry,
            "cmek_keys",
            "Encryption keys by status (every organization)",
            crate::domain::keys::status_report::STATUSES
                .into_iter()
                .map(|status| {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == status.as_str())
                        .map_or(0, |(_, n)| *n);
                    (
                        vec![("status", status.as_str().to_owned())],
                        i64::try_from(n).unwrap_or(i64::MAX),
                    )
                }),
        ),
        Err(err) => tracing::warn!(error = %err, "key counts for /metrics"),
    }
    if let Some(results) = console.alerts().ok().and_then(|a| a.webhook_results()) {
        use std::sync::atomic::Ordering::Relaxed;
        counters(
            &mut registry,
            "cmek_webhook_deliveries",
            "Webhook delivery attempts of this instance by result: delivered, retry (a failed attempt with another scheduled), failed (the last attempt failed)",
            [
                ("delivered", results.delivered.load(Relaxed)),
                ("retry", results.retried.load(Relaxed)),
                ("failed", results.failed.load(Relaxed)),
            ]
            .map(|(result, n)| (vec![("result", result.to_owned())], n)),
        );
    }
    let workers = state.workers.report();
    let by_worker = |value: fn(&crate::supervisor::WorkerReport) -> u64| {
        workers
            .iter()
            .map(move |w| (vec![("worker", w.name.to_owned())], value(w)))
            .collect::<Vec<_>>()
    };
    counters(
        &mut registry,
        "cmek_worker_restarts",
        "Background workers of this instance restarted after a panic, by worker",
        by_worker(|w| w.restarts),
    );
    counters(
        &mut registry,
        "cmek_worker_errors",
        "Rounds of a background worker of this instance that failed, by worker",
        by_worker(|w| w.errors),
    );
    gauges(
        &mut registry,
        "cmek_worker_failing",
        "1 while a background worker of this instance keeps failing (3 failures in a row)",
        by_worker(|w| u64::from(w.failing))
            .into_iter()
            .map(|(labels, n)| (labels, i64::try_from(n).unwrap_or(i64::MAX))),
    );
    let pending = match console.clusters() {
        Ok(clusters) => clusters.pending_reactions().await,
        Err(err) => Err(err),
    };
    match pending {
        Ok(n) => gauges(
            &mut registry,
            "cmek_reactions_pending",
            "Reconciliations of clusters with their keys waiting to run (every instance)",
            [(Vec::new(), i64::try_from(n).unwrap_or(i64::MAX))],
        ),
        Err(err) => tracing::warn!(error = %err, "pending reactions for /metrics"),
    }
    registry
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut body = state.metrics.render();
    let registry = console_metrics(&state).await;
    if let Err(err) = prometheus_text::encode(&mut body, &registry) {
        tracing::warn!(error = %err, "the console's metrics could not be written");
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
