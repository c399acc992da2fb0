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
        // The detail is JSON text, written by the console as `"project_id":"<uuid>"`: read
        // with a pattern on PostgreSQL (no cast that a stray \u0000 in an old KMS message
        // could stop), with SQLite's JSON function where the text is valid JSON. Only a
        // 36-character id is taken, from either place.
        let (from_target, from_detail) = match manager.get_database_backend() {
            DatabaseBackend::Postgres => (
                "substring(target from 9 for 36)",
                "substring(detail from '\"project_id\":\"([0-9a-f-]{36})\"')",
            ),
            _ => (
                "substr(target, 9, 36)",
                "CASE WHEN json_valid(detail) AND length(json_extract(detail, '$.project_id')) = 36 \
                 THEN json_extract(detail, '$.project_id') END",
            ),
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "UPDATE audit_events SET project = CASE \
                     WHEN target LIKE 'project/%' THEN {from_target} \
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
