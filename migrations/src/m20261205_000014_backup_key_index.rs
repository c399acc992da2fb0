//! Backups by the key that wraps their data key: the key monitor counts the versions in use
//! and the reconciliation reads what a key protects, per key, on every pass.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Backups {
    Table,
    KeyId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("ix_backups_key_id")
                    .table(Backups::Table)
                    .col(Backups::KeyId)
                    .to_owned(),
            )
            .await
    }
}
