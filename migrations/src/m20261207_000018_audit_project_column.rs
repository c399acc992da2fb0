//! The audit log's project filter reads a column of its own, on an index, instead of matching
//! text inside each event's JSON detail: `project` holds the id of the project an event is
//! about (the project itself, or anything in it: keys, clusters, backups), as the event was
//! written. Events written before are given theirs here, from their target or their detail.
//! Not part of the chain's hash: it is derived from what the hash covers.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    OrganizationId,
    Project,
    Seq,
}

const INDEX: &str = "ix_audit_events_organization_project_seq";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(ColumnDef::new(AuditEvents::Project).string_len(36).null())
                    .to_owned(),
            )
            .await?;
        // The detail is JSON text; each database reads it with its own JSON function.
        let from_detail = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "(detail::jsonb ->> 'project_id')",
            _ => "json_extract(detail, '$.project_id')",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "UPDATE audit_events SET project = CASE \
                     WHEN target LIKE 'project/%' THEN substr(target, 9) \
                     ELSE {from_detail} END"
            ))
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::Project)
                    .col(AuditEvents::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::Project)
                    .to_owned(),
            )
            .await
    }
}
