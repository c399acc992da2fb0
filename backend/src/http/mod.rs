//! The HTTP layer: JSON API under `/api`, HTML pages elsewhere, and operations endpoints.
//! Handlers parse input into domain types, call `Console`, and render; nothing here touches
//! the database or a KMS directly.

pub mod api;
pub mod auth;
pub mod errors;
pub mod json;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod pages;
pub mod routes;

use crate::domain::Console;
use metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub console: Console,
    pub metrics: Metrics,
    /// Origin of `CMEK_PUBLIC_URL`, e.g. `https://cmek.example.com`.
    pub public_origin: String,
    /// Session cookies get `Secure` when the public URL is https.
    pub secure_cookies: bool,
}
