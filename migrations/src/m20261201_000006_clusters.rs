//! Clusters (R5-R8, R10, R11): a cluster, its regions with the wrapped data key of each, the
//! index of the objects it stores (the bytes live in object storage, sealed), and backups
//! with their own wrapped data key. A key that a cluster region or a backup uses cannot be
//! deleted: the foreign keys say so in storage too.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clusters {
    Table,
    Id,
    OrganizationId,
    ProjectId,
    Name,
    Provider,
    Tier,
    DualRegionBackup,
    State,
    LastError,
    BackupStartedAt,
    BackupLease,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ClusterRegions {
    Table,
    ClusterId,
    Position,
    Region,
    KeyId,
    KeyRef,
    WrappedKey,
}

#[derive(DeriveIden)]
enum ClusterObjects {
    Table,
    Id,
    ClusterId,
    Name,
    Version,
    SizeBytes,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ClusterGarbage {
    Table,
    Blob,
    ClusterId,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    Id,
    OrganizationId,
    ProjectId,
    ClusterId,
    ClusterName,
    Provider,
    Regions,
    Region,
    KeyId,
    KeyRef,
    WrappedKey,
    State,
    SizeBytes,
    ObjectCount,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BackupObjects {
    Table,
    BackupId,
    Name,
    Version,
    SizeBytes,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum EncryptionKeys {
    Table,
    Id,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn uuid(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().to_owned()
}

fn time(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Clusters::Table)
                    .col(uuid(Clusters::Id).primary_key())
                    .col(uuid(Clusters::OrganizationId))
                    .col(uuid(Clusters::ProjectId))
                    .col(text(Clusters::Name))
                    .col(text(Clusters::Provider))
                    .col(text(Clusters::Tier))
                    .col(
                        ColumnDef::new(Clusters::DualRegionBackup)
                            .boolean()
                            .not_null(),
                    )
                    .col(text(Clusters::State))
                    .col(ColumnDef::new(Clusters::LastError).text().null())
                    .col(
                        ColumnDef::new(Clusters::BackupStartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Clusters::BackupLease).uuid().null())
                    .col(text(Clusters::CreatedBy))
                    .col(time(Clusters::CreatedAt))
                    .col(time(Clusters::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_clusters_project")
                            .from(Clusters::Table, Clusters::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_clusters_project_name")
                    .table(Clusters::Table)
                    .col(Clusters::ProjectId)
                    .col(Clusters::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterRegions::Table)
                    .col(uuid(ClusterRegions::ClusterId))
                    .col(
                        ColumnDef::new(ClusterRegions::Position)
                            .integer()
                            .not_null(),
                    )
                    .col(text(ClusterRegions::Region))
                    .col(ColumnDef::new(ClusterRegions::KeyId).uuid().null())
                    .col(ColumnDef::new(ClusterRegions::KeyRef).text().null())
                    .col(
                        ColumnDef::new(ClusterRegions::WrappedKey)
                            .binary()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(ClusterRegions::ClusterId)
                            .col(ClusterRegions::Region),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cluster_regions_cluster")
                            .from(ClusterRegions::Table, ClusterRegions::ClusterId)
                            .to(Clusters::Table, Clusters::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cluster_regions_key")
                            .from(ClusterRegions::Table, ClusterRegions::KeyId)
                            .to(EncryptionKeys::Table, EncryptionKeys::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterObjects::Table)
                    .col(uuid(ClusterObjects::Id).primary_key())
                    .col(uuid(ClusterObjects::ClusterId))
                    .col(text(ClusterObjects::Name))
                    .col(uuid(ClusterObjects::Version))
                    .col(
                        ColumnDef::new(ClusterObjects::SizeBytes)
                            .big_integer()
                            .not_null(),
                    )
                    .col(time(ClusterObjects::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cluster_objects_cluster")
                            .from(ClusterObjects::Table, ClusterObjects::ClusterId)
                            .to(Clusters::Table, Clusters::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_cluster_objects_cluster_name")
                    .table(ClusterObjects::Table)
                    .col(ClusterObjects::ClusterId)
                    .col(ClusterObjects::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterGarbage::Table)
                    .col(text(ClusterGarbage::Blob).primary_key())
                    .col(uuid(ClusterGarbage::ClusterId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Backups::Table)
                    .col(uuid(Backups::Id).primary_key())
                    .col(uuid(Backups::OrganizationId))
                    .col(uuid(Backups::ProjectId))
                    .col(uuid(Backups::ClusterId))
                    .col(text(Backups::ClusterName))
                    .col(text(Backups::Provider))
                    .col(text(Backups::Regions))
                    .col(text(Backups::Region))
                    .col(ColumnDef::new(Backups::KeyId).uuid().null())
                    .col(ColumnDef::new(Backups::KeyRef).text().null())
                    .col(ColumnDef::new(Backups::WrappedKey).binary().not_null())
                    .col(text(Backups::State))
                    .col(ColumnDef::new(Backups::SizeBytes).big_integer().not_null())
                    .col(ColumnDef::new(Backups::ObjectCount).integer().not_null())
                    .col(text(Backups::CreatedBy))
                    .col(time(Backups::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_backups_project")
                            .from(Backups::Table, Backups::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_backups_key")
                            .from(Backups::Table, Backups::KeyId)
                            .to(EncryptionKeys::Table, EncryptionKeys::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BackupObjects::Table)
                    .col(uuid(BackupObjects::BackupId))
                    .col(text(BackupObjects::Name))
                    .col(uuid(BackupObjects::Version))
                    .col(
                        ColumnDef::new(BackupObjects::SizeBytes)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BackupObjects::BackupId)
                            .col(BackupObjects::Name),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_backup_objects_backup")
                            .from(BackupObjects::Table, BackupObjects::BackupId)
                            .to(Backups::Table, Backups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BackupObjects::Table.into_iden(),
            Backups::Table.into_iden(),
            ClusterGarbage::Table.into_iden(),
            ClusterObjects::Table.into_iden(),
            ClusterRegions::Table.into_iden(),
            Clusters::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
