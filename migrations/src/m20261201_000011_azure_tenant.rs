//! The Microsoft Entra tenant an Azure Key Vault key's vault belonged to when the key was
//! created: the console keeps using the vault only while it stays in that tenant (a vault
//! name re-created elsewhere after a purge is not the customer's vault).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    AzureTenantId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EncryptionKeys::Table)
                    .add_column(
                        ColumnDef::new(EncryptionKeys::AzureTenantId)
                            .string()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }
}
