//! Durable reactions and key versions in use.
//!
//! - `jobs`: work that must follow a change (reconciling the clusters of a key whose status
//!   changed), written in the same transaction as the change and leased by one instance at a
//!   time, so a crash between the change and its reaction loses nothing. One pending row per
//!   (kind, subject); `generation` grows each time the subject changes again, so a worker that
//!   finishes an older generation leaves the newer one to run.
//! - `clusters.will_not_resume`: set (with its audit event) when a `keep_running` cluster's key
//!   is revoked, cleared when its keys work again, so the mark is made once per revocation.
//! - `key_version` on cluster regions and backups: the key version that wrapped each data key.
//! - `key_versions`: what the monitor last saw of each version still in use, with a status seen
//!   once that a second probe must confirm.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Kind,
    OrganizationId,
    Subject,
    DueAt,
    LeaseUntil,
    Attempts,
    Generation,
    LastError,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Clusters {
    Table,
    WillNotResume,
}

#[derive(DeriveIden)]
enum ClusterRegions {
    Table,
    KeyVersion,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    KeyVersion,
}

#[derive(DeriveIden)]
enum KeyVersions {
    Table,
    KeyId,
    Version,
    Status,
    SuspectedStatus,
    LastCheckedAt,
    LastError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(ColumnDef::new(Jobs::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Jobs::Kind).string().not_null())
                    .col(ColumnDef::new(Jobs::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(Jobs::Subject).uuid().not_null())
                    .col(
                        ColumnDef::new(Jobs::DueAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Jobs::LeaseUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Jobs::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Jobs::Generation)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(Jobs::LastError).text().null())
                    .col(
                        ColumnDef::new(Jobs::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_one_per_subject")
                    .table(Jobs::Table)
                    .col(Jobs::Kind)
                    .col(Jobs::Subject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_due")
                    .table(Jobs::Table)
                    .col(Jobs::Kind)
                    .col(Jobs::DueAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .add_column(ColumnDef::new(Clusters::WillNotResume).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ClusterRegions::Table)
                    .add_column(ColumnDef::new(ClusterRegions::KeyVersion).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Backups::Table)
                    .add_column(ColumnDef::new(Backups::KeyVersion).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KeyVersions::Table)
                    .col(ColumnDef::new(KeyVersions::KeyId).uuid().not_null())
                    .col(ColumnDef::new(KeyVersions::Version).string().not_null())
                    .col(ColumnDef::new(KeyVersions::Status).string().not_null())
                    .col(ColumnDef::new(KeyVersions::SuspectedStatus).string().null())
                    .col(
                        ColumnDef::new(KeyVersions::LastCheckedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(KeyVersions::LastError).text().null())
                    .primary_key(
                        Index::create()
                            .col(KeyVersions::KeyId)
                            .col(KeyVersions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
