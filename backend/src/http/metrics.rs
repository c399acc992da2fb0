//! Prometheus metrics of HTTP requests: counts and latency histograms by method, route pattern
//! and status, kept by the Prometheus project's Rust client (`prometheus-client`): each series
//! is found under a read lock and counted with atomics, so requests do not queue behind one
//! lock. Route patterns (`/api/v1/projects/{project_id}`), never raw paths, keep the number of
//! series bounded. The metric names are the ones dashboards already use.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    method: String,
    route: String,
    status: u16,
}

type Durations = Family<Request, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    durations: Durations,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<Request, Counter>::default();
        let durations: Durations = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let mut registry = Registry::default();
        // The client adds `_total` to a counter's name and a period to its help.
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            durations.clone(),
        );
        Self {
            registry,
            requests,
            durations,
        }
    }
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = Request {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::warn!(error = %err, "HTTP metrics could not be written");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_its_buckets_and_the_count() {
        let m = Metrics::default();
        m.observe("GET", "/x", 200, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("# TYPE http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="/x",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"route="/x",status="200",le="0.0025"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"route="/x",status="200",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{method="GET",route="/x",status="200"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_route_with_a_quote_is_escaped() {
        let m = Metrics::default();
        m.observe("GET", "/a\"b", 404, Duration::from_millis(1));
        assert!(m.render().contains(r#"route="/a\"b""#));
    }
}
