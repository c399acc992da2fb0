//! The HTTP layer: JSON API under `/api`, HTML pages elsewhere, and operations endpoints.
//! Handlers parse input into domain types, call `Console`, and render; nothing here touches
//! the database or a KMS directly.

pub mod api;
pub mod auth;
pub mod errors;
pub mod forwarded;
pub mod json;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod pages;
pub mod problems;
pub mod routes;
pub mod shared;
pub mod wire;

use crate::domain::Console;
use metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub console: Console,
    pub metrics: Metrics,
    /// `CMEK_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
    /// Origin of `CMEK_PUBLIC_URL`, e.g. `https://cmek.example.com`.
    pub public_origin: String,
    /// Whether `CMEK_PUBLIC_URL` was set: then it is the only origin writes may come from.
    pub public_url_configured: bool,
    /// `CMEK_BODY_TIMEOUT`: how long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// `CMEK_TRUSTED_PROXIES`: whose forwarding headers are believed.
    pub proxies: forwarded::TrustedProxies,
    /// Session cookies get `Secure` when the public URL is https.
    pub secure_cookies: bool,
    /// The background workers of this instance (`/metrics`, `/readyz`).
    pub workers: std::sync::Arc<crate::supervisor::Workers>,
}
