//! Backups and restores become durable jobs: the request takes the snapshot (the index rows, copied in one
//! statement inside the database) and queues a `backup` job; the job copies the objects page by
//! page, marking each row `copied` with the copy's version, so a crash resumes where it
//! stopped. The backup row shows the progress (`objects_copied`), why it failed
//! (`last_error`) and when it ended (`finished_at`).
//!
//! A cluster's `backup_lease` now lasts as long as its backup job (no more expiry by time): a
//! version replaced while a backup reads the cluster is kept until the job ends, however long
//! a crashed instance stays away. Leases left by backups that ran inside a request before this
//! version are cleared here (such a backup died with its process); what they kept is garbage
//! for the storage sweeper.
//!
//! A restore makes its cluster at once, `creating`, with `restored_from` (the backup) and its
//! progress (`restore_done` of `restore_total` objects); a `restore` job copies the objects.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Backups {
    Table,
    ObjectsCopied,
    LastError,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Clusters {
    Table,
    RestoredFrom,
    RestoreTotal,
    RestoreDone,
}

#[derive(DeriveIden)]
enum BackupObjects {
    Table,
    BackupId,
    Copied,
    Name,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Holder,
}

/// A backup job reads the rows still to copy, in name order, page after page.
const TO_COPY: &str = "ix_backup_objects_backup_copied_name";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        let columns = [
            ColumnDef::new(Backups::ObjectsCopied)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Backups::LastError).text().null().to_owned(),
            ColumnDef::new(Backups::FinishedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Backups::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // Every backup so far was finished when its row was written.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE backups SET objects_copied = object_count, finished_at = created_at",
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(BackupObjects::Table)
                    .add_column(
                        ColumnDef::new(BackupObjects::Copied)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .to_owned(),
            )
            .await?;
        let columns = [
            ColumnDef::new(Clusters::RestoredFrom)
                .uuid()
                .null()
                .to_owned(),
            ColumnDef::new(Clusters::RestoreTotal)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Clusters::RestoreDone)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clusters::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(TO_COPY)
                    .table(BackupObjects::Table)
                    .col(BackupObjects::BackupId)
                    .col(BackupObjects::Copied)
                    .col(BackupObjects::Name)
                    .to_owned(),
            )
            .await?;
        // Who holds a job's lease: renewing, releasing or finishing it is refused to anyone
        // else (a long job whose lease lapsed while it ran must not go on beside its
        // successor).
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(ColumnDef::new(Jobs::Holder).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE clusters SET backup_lease = NULL, backup_started_at = NULL \
                 WHERE backup_lease IS NOT NULL",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DELETE FROM cluster_garbage")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::Holder)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(TO_COPY)
                    .table(BackupObjects::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Clusters::RestoreDone,
            Clusters::RestoreTotal,
            Clusters::RestoredFrom,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clusters::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(BackupObjects::Table)
                    .drop_column(BackupObjects::Copied)
                    .to_owned(),
            )
            .await?;
        for column in [
            Backups::FinishedAt,
            Backups::LastError,
            Backups::ObjectsCopied,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Backups::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
