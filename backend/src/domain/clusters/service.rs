//! The clusters feature as a service: lifecycle, objects, backups and restores (and the jobs
//! that copy them), the reaction to its keys' statuses and the storage sweeper. It works over
//! the ports it needs (its own store and object storage, the keys, jobs, projects and audit
//! ports, the KMS adapters, the clock) and nothing of the rest of the console: the other
//! features reach it through its public methods, or through the cluster store's port.

use std::sync::Arc;

use tokio::sync::Notify;
use uuid::Uuid;

use super::parts::ClusterParts;
use crate::domain::audit::AuditDraft;
use crate::domain::clock::Clock;
use crate::domain::identity::Caller;
use crate::domain::keys::{KeyRef, KmsProviders};
use crate::domain::kms::KeyProvider;
use crate::domain::ports::{AuditStore, JobStore, KeyStore, ProjectStore};
use crate::domain::projects::Project;
use crate::domain::{DomainError, Environment};

#[derive(Clone)]
pub struct Clusters {
    pub(super) parts: ClusterParts,
    pub(super) keys: Arc<dyn KeyStore>,
    pub(super) jobs: Arc<dyn JobStore>,
    pub(super) projects: Arc<dyn ProjectStore>,
    pub(super) audit: Arc<dyn AuditStore>,
    pub(super) kms: KmsProviders,
    /// The keys feature: a resume that unwrapped a key still recorded revoked tells it.
    pub(super) key_service: crate::domain::keys::Keys,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) environment: Environment,
    /// Wakes this process's backup worker when a backup or restore was started here.
    pub(super) backups_queued: Arc<Notify>,
}

/// What the clusters service is built from.
pub struct ClusterPorts {
    pub parts: ClusterParts,
    pub keys: Arc<dyn KeyStore>,
    pub jobs: Arc<dyn JobStore>,
    pub projects: Arc<dyn ProjectStore>,
    pub audit: Arc<dyn AuditStore>,
    pub kms: KmsProviders,
    pub key_service: crate::domain::keys::Keys,
    pub clock: Arc<dyn Clock>,
    pub environment: Environment,
}

impl Clusters {
    pub fn new(ports: ClusterPorts) -> Self {
        Self {
            parts: ports.parts,
            keys: ports.keys,
            jobs: ports.jobs,
            projects: ports.projects,
            audit: ports.audit,
            kms: ports.kms,
            key_service: ports.key_service,
            clock: ports.clock,
            environment: ports.environment,
            backups_queued: Arc::default(),
        }
    }

    /// Another organization's project is "not found", as everywhere.
    pub(super) async fn project(&self, caller: &Caller, id: Uuid) -> Result<Project, DomainError> {
        crate::domain::projects_service::find(self.projects.as_ref(), caller, id).await
    }

    pub(super) async fn record(&self, draft: AuditDraft) -> Result<(), DomainError> {
        Ok(self.audit.append_audit(draft).await?)
    }

    pub(super) fn provider_for(&self, key: &KeyRef) -> Result<Arc<dyn KeyProvider>, DomainError> {
        self.kms.provider_for(key, self.environment)
    }

    pub(super) fn refuse_local_kms_in_production(&self) -> Result<(), DomainError> {
        crate::domain::local_kms::refuse_in_production(self.environment)
    }
}
