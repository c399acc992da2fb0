//! Integration tests: each test spawns the whole application on port 0 with a fresh
//! database (SQLite by default; PostgreSQL when `CMEK_TEST_POSTGRES_URL` names a server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod azure;
mod backup_jobs;
mod gcp;
mod helpers;
mod moto;

mod alerts;
mod audit;
mod audit_export;
mod auth;
mod cli;
mod cluster_pages;
mod clusters;
mod clusters_aws;
mod clusters_azure;
mod clusters_gcp;
mod contract;
mod hardening;
mod key_changes;
mod key_history;
mod key_monitor;
mod key_status;
mod keys;
mod keys_azure;
mod keys_gcp;
mod local_kms;
mod monitor_aws;
mod ops;
mod pages;
mod policy_doctor;
mod projects;
mod scale_out;
mod snapshots;
mod sso;
mod wizard;
mod workers;
