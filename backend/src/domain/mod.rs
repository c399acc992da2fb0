//! The domain: the rules of PRODUCT.md and the ports they need. Nothing here knows about
//! HTTP, SQL or a cloud SDK; `Console` is the one entry point the HTTP layer and the CLI call.

pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod audit_log;
pub mod blobs;
pub mod clock;
pub mod clusters;
pub mod error;
pub mod identity;
pub mod identity_service;
pub mod jobs;
pub mod keys;
pub mod kms;
pub mod local_kms;
pub mod members;
pub mod notice;
pub mod organizations;
pub mod page;
pub mod ports;
pub mod projects;
pub mod projects_service;
mod rate;
#[cfg(test)]
mod rule_tests;
pub mod secrets;
pub mod sign_in;
pub mod sso;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use clock::Clock;
use identity::SessionPolicy;
use ports::Store;

pub use error::{DomainError, FieldError, Rule};

/// The console's use cases, each taking the caller it acts for.
#[derive(Clone)]
pub struct Console {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    kms: keys::KmsProviders,
    audit: audit_log::Audit,
    clusters: Option<clusters::Clusters>,
    alerts: Option<alerts::Alerts>,
    keys: keys::Keys,
    identity: identity_service::Identity,
    projects: projects_service::Projects,
    /// Wakes this process's reconciliation worker when a status change queued one.
    reactions: Arc<tokio::sync::Notify>,
}

/// A display name (API key, local key, organization): trimmed, 1 to `max` characters, no
/// control characters; the same rule and the same words everywhere.
pub fn parse_display_name(field: &str, raw: &str, max: usize) -> Result<String, DomainError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    if name.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// What the console refuses to do in production (R3: the built-in `local` KMS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Settings that change what the rules decide.
#[derive(Clone, Debug)]
pub struct Policy {
    pub environment: Environment,
    pub sessions: SessionPolicy,
    pub organization_name: String,
}

impl Console {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: Policy,
        kms: keys::KmsProviders,
        local_admin: Option<Arc<dyn local_kms::LocalKeyAdmin>>,
        audit_keys: audit::ChainKeys,
    ) -> Self {
        let audit = audit_log::Audit::new(store.clone(), audit_keys, clock.clone());
        let reactions: Arc<tokio::sync::Notify> = Arc::default();
        let keys = keys::Keys {
            keys: store.clone(),
            jobs: store.clone(),
            projects: store.clone(),
            audit: store.clone(),
            windows: rate::Windows {
                counters: store.clone(),
                clock: clock.clone(),
            },
            clusters: Arc::default(),
            kms: kms.clone(),
            local_admin,
            clock: clock.clone(),
            environment: policy.environment,
            confirm_delay: std::time::Duration::from_secs(2),
            propagation: std::time::Duration::ZERO,
            monitor_checks: Arc::default(),
            reactions: reactions.clone(),
        };
        let identity = identity_service::Identity {
            members: store.clone(),
            credentials: store.clone(),
            windows: rate::Windows {
                counters: store.clone(),
                clock: clock.clone(),
            },
            audit: store.clone(),
            clock: clock.clone(),
            policy: policy.clone(),
            sso: None,
        };
        let projects = projects_service::Projects {
            projects: store.clone(),
            audit: store.clone(),
            keys: store.clone(),
            jobs: store.clone(),
            clock: clock.clone(),
            reactions: reactions.clone(),
        };
        Self {
            identity,
            projects,
            store,
            clock,
            policy,
            kms,
            audit,
            clusters: None,
            alerts: None,
            keys,
            reactions,
        }
    }

    /// How long Check now waits before its confirming probe (`CMEK_KEY_CONFIRM_DELAY`).
    /// How long Test Encryption Key waits out a refusal a fresh grant typically causes.
    pub fn with_key_test_propagation(mut self, wait: std::time::Duration) -> Self {
        self.keys.propagation = wait;
        self
    }

    pub fn with_confirm_delay(mut self, delay: std::time::Duration) -> Self {
        self.keys.confirm_delay = delay;
        self
    }

    /// Resolves when a reaction was queued by this process (or at once if one was queued
    /// since the last wait).
    pub async fn reactions_queued(&self) {
        self.reactions.notified().await;
    }

    /// Turns clusters on, with where their bytes go: the clusters service, over this
    /// console's store (as the narrow ports it needs), KMS adapters and clock.
    pub fn with_clusters(mut self, parts: clusters::parts::ClusterParts) -> Self {
        // The keys feature reads what keys protect through the cluster store's port.
        let _ = self.keys.clusters.set(parts.store.clone());
        self.clusters = Some(clusters::Clusters::new(clusters::ClusterPorts {
            parts,
            keys: self.store.clone(),
            jobs: self.store.clone(),
            projects: self.store.clone(),
            audit: self.store.clone(),
            kms: self.kms.clone(),
            key_service: self.keys.clone(),
            clock: self.clock.clone(),
            environment: self.policy.environment,
        }));
        self
    }

    /// The keys service (wizards, key tests, keys, Check now, the monitor, Key Status, the
    /// development KMS).
    pub fn keys(&self) -> &keys::Keys {
        &self.keys
    }

    /// The audit log's signing keys (format 2), as the key file holds them.
    pub fn with_audit_signing_keys(
        mut self,
        keys: crate::crypto::audit_chain::SigningKeyRing,
    ) -> Self {
        self.audit = self.audit.with_signing_keys(keys);
        self
    }

    /// The audit service (the log, its chain's verification, checkpoints).
    pub fn audit(&self) -> &audit_log::Audit {
        &self.audit
    }

    /// The clusters service (lifecycle, objects, backups, restores, their jobs).
    pub fn clusters(&self) -> Result<&clusters::Clusters, DomainError> {
        self.clusters
            .as_ref()
            .ok_or_else(|| DomainError::Storage("clusters are not configured".into()))
    }

    /// Turns alerts (webhooks) on.
    pub fn with_alerts(mut self, parts: alerts::AlertParts) -> Self {
        self.alerts = Some(alerts::Alerts::new(
            parts,
            self.store.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.policy.environment,
        ));
        self
    }

    /// The alerts service (webhooks and their deliveries).
    pub fn alerts(&self) -> Result<&alerts::Alerts, DomainError> {
        self.alerts
            .as_ref()
            .ok_or(DomainError::NotFound("alerts (not configured)"))
    }

    /// Turns single sign-on on with this provider.
    pub fn with_sso(mut self, provider: Arc<dyn sso::IdentityProvider>) -> Self {
        self.identity.sso = Some(provider);
        self
    }

    pub fn sso_enabled(&self) -> bool {
        self.identity.sso_enabled()
    }

    /// The identity service (organizations, members, invitations, API keys, signing in).
    pub fn identity(&self) -> &identity_service::Identity {
        &self.identity
    }

    /// The projects service.
    pub fn projects(&self) -> &projects_service::Projects {
        &self.projects
    }

    /// R3: the local KMS is offered everywhere but in production.
    pub fn local_kms_available(&self) -> bool {
        self.policy.environment != Environment::Production
    }

    /// The console's clock, for pages that show how old or how near something is.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Readiness: the database answers.
    pub async fn ready(&self) -> Result<(), DomainError> {
        Ok(self.store.ping().await?)
    }
}

impl Console {
    pub fn session_policy(&self) -> identity::SessionPolicy {
        self.policy.sessions
    }
}
