//! Changing a key in place (issue 20). A region's key can be replaced by a new one, or its
//! data keys re-wrapped under the key's current version; a `rewrap` job does the work.
//!
//! - `encryption_keys.replaced_by`: set on the key a replacement took over from. R4 (one key
//!   per project, provider and region) now holds among the keys not replaced: the old key
//!   stays, watched and deletable only once nothing it wrapped remains.
//! - `key_rewraps`: one row per replacement or re-wrap, with its progress.
//! - `key_rewrap_failures`: the data keys a re-wrap could not move, with the KMS's answer;
//!   they stay wrapped as they were, readable as before. `rewrap_failed` on the data key's
//!   own row (a cluster region, a backup) names the re-wrap that gave up on it, so the job's
//!   next page skips it with an indexable test instead of a join.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    ReplacedBy,
}

#[derive(DeriveIden)]
enum ClusterRegions {
    Table,
    RewrapFailed,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    RewrapFailed,
}

#[derive(DeriveIden)]
enum KeyRewraps {
    Table,
    Id,
    OrganizationId,
    ProjectId,
    FromKeyId,
    ToKeyId,
    State,
    TargetVersion,
    Total,
    Done,
    Failed,
    StartedBy,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum KeyRewrapFailures {
    Table,
    RewrapId,
    DataKey,
    Code,
    Message,
    At,
}

/// Partial unique indexes are spelled the same way on SQLite and PostgreSQL.
const ONE_KEY_PER_REGION: &str = "CREATE UNIQUE INDEX ux_encryption_keys_region_key \
     ON encryption_keys (project_id, provider, region) WHERE replaced_by IS NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EncryptionKeys::Table)
                    .add_column(ColumnDef::new(EncryptionKeys::ReplacedBy).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ClusterRegions::Table)
                    .add_column(ColumnDef::new(ClusterRegions::RewrapFailed).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Backups::Table)
                    .add_column(ColumnDef::new(Backups::RewrapFailed).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ux_encryption_keys_project_provider_region")
            .await?;
        manager
            .get_connection()
            .execute_unprepared(ONE_KEY_PER_REGION)
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KeyRewraps::Table)
                    .col(
                        ColumnDef::new(KeyRewraps::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(KeyRewraps::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(KeyRewraps::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(KeyRewraps::FromKeyId).uuid().not_null())
                    .col(ColumnDef::new(KeyRewraps::ToKeyId).uuid().not_null())
                    .col(ColumnDef::new(KeyRewraps::State).text().not_null())
                    .col(ColumnDef::new(KeyRewraps::TargetVersion).text().null())
                    .col(ColumnDef::new(KeyRewraps::Total).integer().not_null())
                    .col(ColumnDef::new(KeyRewraps::Done).integer().not_null())
                    .col(ColumnDef::new(KeyRewraps::Failed).integer().not_null())
                    .col(ColumnDef::new(KeyRewraps::StartedBy).text().not_null())
                    .col(
                        ColumnDef::new(KeyRewraps::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyRewraps::FinishedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // A key's latest re-wrap, from either side.
        for (name, column) in [
            ("ix_key_rewraps_from", KeyRewraps::FromKeyId),
            ("ix_key_rewraps_to", KeyRewraps::ToKeyId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(KeyRewraps::Table)
                        .col(column)
                        .col(KeyRewraps::StartedAt)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(KeyRewrapFailures::Table)
                    .col(
                        ColumnDef::new(KeyRewrapFailures::RewrapId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(KeyRewrapFailures::DataKey).text().not_null())
                    .col(ColumnDef::new(KeyRewrapFailures::Code).text().not_null())
                    .col(ColumnDef::new(KeyRewrapFailures::Message).text().not_null())
                    .col(
                        ColumnDef::new(KeyRewrapFailures::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(KeyRewrapFailures::RewrapId)
                            .col(KeyRewrapFailures::DataKey),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KeyRewrapFailures::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(KeyRewraps::Table).to_owned())
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ux_encryption_keys_region_key")
            .await?;
        // Fails, as it should, while a replaced key and its successor share a slot.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_encryption_keys_project_provider_region \
             ON encryption_keys (project_id, provider, region)",
        )
        .await?;
        for (table, column) in [
            ("encryption_keys", "replaced_by"),
            ("cluster_regions", "rewrap_failed"),
            ("backups", "rewrap_failed"),
        ] {
            db.execute_unprepared(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}
