//! Format 1's single chain closes: `audit_legacy` keeps where it ended (its last event's
//! place and hash, sealed with the chain key), written once by the first start with a
//! signing key. From then on events are written to their organization's chain only, and the
//! legacy segment is verified as before, up to that end. An event's `seq` stays as a global
//! ordinal (the paginated list's order); on PostgreSQL it comes from the sequence
//! `audit_events_seq`, so writes in different organizations take no lock in common.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditLegacy {
    Table,
    Id,
    LastSeq,
    LastHash,
    ClosedAt,
    KeyId,
    Seal,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLegacy::Table)
                    .col(
                        ColumnDef::new(AuditLegacy::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditLegacy::LastSeq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditLegacy::LastHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditLegacy::ClosedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditLegacy::KeyId).string_len(16).not_null())
                    .col(ColumnDef::new(AuditLegacy::Seal).string_len(64).not_null())
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("CREATE SEQUENCE IF NOT EXISTS audit_events_seq")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP SEQUENCE IF EXISTS audit_events_seq")
                .await?;
        }
        manager
            .drop_table(Table::drop().table(AuditLegacy::Table).to_owned())
            .await
    }
}
