//! Each key's automatic rotation as its last check saw it (the Key Status page shows it
//! whichever instance checked the key).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    RotationEnabled,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EncryptionKeys::Table)
                    .add_column(
                        ColumnDef::new(EncryptionKeys::RotationEnabled)
                            .boolean()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }
}
