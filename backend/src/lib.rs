//! cmek-console: a console and REST API for customer-managed encryption keys.
//!
//! `domain` holds the rules and the ports; `store` implements storage with sea-orm; `http`
//! serves the API and the pages; `startup` wires them together from `settings`.

pub mod alerts;
pub mod cli;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod kms;
pub mod settings;
pub mod sso;
pub mod startup;
pub mod storage;
pub mod store;
pub mod supervisor;
pub mod telemetry;
