//! Encryption keys of CMEK projects (one per project, provider and region), and the key
//! material of the built-in local KMS, wrapped under its master key.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    Id,
    OrganizationId,
    ProjectId,
    Provider,
    Region,
    KeyRef,
    AccessMode,
    RoleArn,
    Status,
    LastCheckedAt,
    LastError,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LocalKeys {
    Table,
    Id,
    OrganizationId,
    Name,
    Enabled,
    Version,
    CreatedAt,
    RotatedAt,
}

#[derive(DeriveIden)]
enum LocalKeyVersions {
    Table,
    KeyId,
    Version,
    Material,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EncryptionKeys::Table)
                    .col(
                        ColumnDef::new(EncryptionKeys::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(EncryptionKeys::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(EncryptionKeys::ProjectId).uuid().not_null())
                    .col(text(EncryptionKeys::Provider))
                    .col(text(EncryptionKeys::Region))
                    .col(text(EncryptionKeys::KeyRef))
                    .col(text_null(EncryptionKeys::AccessMode))
                    .col(text_null(EncryptionKeys::RoleArn))
                    .col(text(EncryptionKeys::Status))
                    .col(
                        ColumnDef::new(EncryptionKeys::LastCheckedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(text_null(EncryptionKeys::LastError))
                    .col(text(EncryptionKeys::CreatedBy))
                    .col(
                        ColumnDef::new(EncryptionKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_encryption_keys_project")
                            .from(EncryptionKeys::Table, EncryptionKeys::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // R4, in storage: two simultaneous requests cannot both create a key for one slot.
        manager
            .create_index(
                Index::create()
                    .name("ux_encryption_keys_project_provider_region")
                    .table(EncryptionKeys::Table)
                    .col(EncryptionKeys::ProjectId)
                    .col(EncryptionKeys::Provider)
                    .col(EncryptionKeys::Region)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LocalKeys::Table)
                    .col(
                        ColumnDef::new(LocalKeys::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LocalKeys::OrganizationId).uuid().not_null())
                    .col(text(LocalKeys::Name))
                    .col(ColumnDef::new(LocalKeys::Enabled).boolean().not_null())
                    .col(ColumnDef::new(LocalKeys::Version).integer().not_null())
                    .col(
                        ColumnDef::new(LocalKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LocalKeys::RotatedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_local_keys_organization")
                            .from(LocalKeys::Table, LocalKeys::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LocalKeyVersions::Table)
                    .col(ColumnDef::new(LocalKeyVersions::KeyId).uuid().not_null())
                    .col(
                        ColumnDef::new(LocalKeyVersions::Version)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LocalKeyVersions::Material)
                            .binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LocalKeyVersions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(LocalKeyVersions::KeyId)
                            .col(LocalKeyVersions::Version),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_local_key_versions_key")
                            .from(LocalKeyVersions::Table, LocalKeyVersions::KeyId)
                            .to(LocalKeys::Table, LocalKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
