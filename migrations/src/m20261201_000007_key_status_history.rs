//! Every change of an encryption key's status, kept with its time and the KMS's message (the
//! key monitor's history; Check now records into it too).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KeyStatusHistory {
    Table,
    Id,
    KeyId,
    OrganizationId,
    At,
    FromStatus,
    ToStatus,
    Message,
}

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyStatusHistory::Table)
                    .col(
                        ColumnDef::new(KeyStatusHistory::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(KeyStatusHistory::KeyId).uuid().not_null())
                    .col(
                        ColumnDef::new(KeyStatusHistory::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyStatusHistory::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyStatusHistory::FromStatus)
                            .text()
                            .not_null(),
                    )
                    .col(ColumnDef::new(KeyStatusHistory::ToStatus).text().not_null())
                    .col(ColumnDef::new(KeyStatusHistory::Message).text().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_key_status_history_key")
                            .from(KeyStatusHistory::Table, KeyStatusHistory::KeyId)
                            .to(EncryptionKeys::Table, EncryptionKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_key_status_history_key")
                    .table(KeyStatusHistory::Table)
                    .col(KeyStatusHistory::KeyId)
                    .col(KeyStatusHistory::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KeyStatusHistory::Table).to_owned())
            .await
    }
}
