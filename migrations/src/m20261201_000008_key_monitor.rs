//! The key monitor's schedule on each key: when it is next due, the lease of the instance
//! checking it now, and a status seen once that a second probe must confirm before anything
//! acts on it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    NextCheckAt,
    LeaseUntil,
    SuspectedStatus,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        for column in [
            ColumnDef::new(EncryptionKeys::NextCheckAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(EncryptionKeys::LeaseUntil)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(EncryptionKeys::SuspectedStatus)
                .text()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EncryptionKeys::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
