//! A fingerprint of each key file the console holds beside the database (the local KMS's
//! master key, the platform key): a file replaced by another one is refused at start, rather
//! than found out later as keys that "stopped working" (read as a customer's revocation) or
//! data and webhook secrets that no longer unwrap.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KeyFileChecks {
    Table,
    Name,
    Fingerprint,
    RecordedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyFileChecks::Table)
                    .col(
                        ColumnDef::new(KeyFileChecks::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(KeyFileChecks::Fingerprint)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyFileChecks::RecordedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }
}
