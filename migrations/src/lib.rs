//! Schema migrations, shared by SQLite and PostgreSQL: one file per migration, applied in order.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_skeleton;
mod m20261122_000002_encryption_keys;
mod m20261122_000003_sso_and_invitations;
mod m20261123_000004_shared_invariants;
mod m20261123_000005_keyed_audit_chain;
mod m20261201_000006_clusters;
mod m20261201_000007_key_status_history;
mod m20261201_000008_key_monitor;
mod m20261201_000009_webhooks;
mod m20261201_000010_key_rotation;
mod m20261201_000011_azure_tenant;
mod m20261205_000012_reactions_and_versions;
mod m20261205_000013_key_status_indexes;
mod m20261205_000014_backup_key_index;
mod m20261205_000015_audit_keyset_index;
mod m20261205_000016_key_file_checks;
mod m20261205_000017_delivery_fairness_index;
mod m20261207_000018_audit_project_column;
mod m20261207_000019_backup_jobs;
mod m20261207_000020_key_rewraps;
mod m20261207_000021_audit_org_chains;
mod m20261208_000022_audit_chain_heads;
mod m20261208_000023_audit_legacy_end;
mod m20261208_000024_audit_chain_keys;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_skeleton::Migration),
            Box::new(m20261122_000002_encryption_keys::Migration),
            Box::new(m20261122_000003_sso_and_invitations::Migration),
            Box::new(m20261123_000004_shared_invariants::Migration),
            Box::new(m20261123_000005_keyed_audit_chain::Migration),
            Box::new(m20261201_000006_clusters::Migration),
            Box::new(m20261201_000007_key_status_history::Migration),
            Box::new(m20261201_000008_key_monitor::Migration),
            Box::new(m20261201_000009_webhooks::Migration),
            Box::new(m20261201_000010_key_rotation::Migration),
            Box::new(m20261201_000011_azure_tenant::Migration),
            Box::new(m20261205_000012_reactions_and_versions::Migration),
            Box::new(m20261205_000013_key_status_indexes::Migration),
            Box::new(m20261205_000014_backup_key_index::Migration),
            Box::new(m20261205_000015_audit_keyset_index::Migration),
            Box::new(m20261205_000016_key_file_checks::Migration),
            Box::new(m20261205_000017_delivery_fairness_index::Migration),
            Box::new(m20261207_000018_audit_project_column::Migration),
            Box::new(m20261207_000019_backup_jobs::Migration),
            Box::new(m20261207_000020_key_rewraps::Migration),
            Box::new(m20261207_000021_audit_org_chains::Migration),
            Box::new(m20261208_000022_audit_chain_heads::Migration),
            Box::new(m20261208_000023_audit_legacy_end::Migration),
            Box::new(m20261208_000024_audit_chain_keys::Migration),
        ]
    }
}
