//! The Key Status page costs in proportion to the page it shows, not to the organization:
//! its filters and keyset pages run on indexes, the clusters of a page's keys are found by
//! key, and the counts per status are kept as keys are added, removed or change status (by
//! triggers, so every writer keeps them right, whichever code path changed the key).
//! A later migration that rebuilds `encryption_keys` on SQLite (copy, drop, rename) drops its
//! triggers with it and must create them again.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum EncryptionKeys {
    Table,
    Id,
    OrganizationId,
    ProjectId,
    Provider,
    Status,
}

#[derive(DeriveIden)]
enum ClusterRegions {
    Table,
    KeyId,
}

#[derive(DeriveIden)]
enum KeyStatusCounts {
    Table,
    OrganizationId,
    Provider,
    Status,
    N,
}

#[derive(DeriveIden)]
enum KeyStatusCountsByProject {
    Table,
    OrganizationId,
    ProjectId,
    Provider,
    Status,
    N,
}

/// (name, columns after `organization_id`): the unfiltered page, each filter's page (keyset
/// on `id` after the filter's equality), and the project filter (a project has a handful of
/// keys, so the other filters are applied on its few rows).
const KEY_INDEXES: [(&str, &[EncryptionKeys]); 3] = [
    ("ix_encryption_keys_organization_id", &[]),
    (
        "ix_encryption_keys_organization_status_id",
        &[EncryptionKeys::Status],
    ),
    (
        "ix_encryption_keys_organization_provider_id",
        &[EncryptionKeys::Provider],
    ),
];

/// The counts as they stand when the migration runs; the triggers keep them from then on.
const BACKFILL: [&str; 2] = [
    "INSERT INTO key_status_counts (organization_id, provider, status, n) \
     SELECT organization_id, provider, status, COUNT(*) FROM encryption_keys \
     GROUP BY organization_id, provider, status",
    "INSERT INTO key_status_counts_by_project (organization_id, project_id, provider, status, n) \
     SELECT organization_id, project_id, provider, status, COUNT(*) FROM encryption_keys \
     GROUP BY organization_id, project_id, provider, status",
];

/// A key leaves the counts of its old row (`OLD`) or joins those of its new one (`NEW`). A
/// count may fall to 0 and stay: readers skip zeros.
fn leave(row: &str) -> [String; 2] {
    [
        format!(
            "UPDATE key_status_counts SET n = n - 1 WHERE organization_id = {row}.organization_id \
             AND provider = {row}.provider AND status = {row}.status;"
        ),
        format!(
            "UPDATE key_status_counts_by_project SET n = n - 1 \
             WHERE organization_id = {row}.organization_id AND project_id = {row}.project_id \
             AND provider = {row}.provider AND status = {row}.status;"
        ),
    ]
}

fn join(row: &str) -> [String; 2] {
    [
        format!(
            "INSERT INTO key_status_counts (organization_id, provider, status, n) \
             VALUES ({row}.organization_id, {row}.provider, {row}.status, 1) \
             ON CONFLICT (organization_id, provider, status) \
             DO UPDATE SET n = key_status_counts.n + 1;"
        ),
        format!(
            "INSERT INTO key_status_counts_by_project \
             (organization_id, project_id, provider, status, n) \
             VALUES ({row}.organization_id, {row}.project_id, {row}.provider, {row}.status, 1) \
             ON CONFLICT (organization_id, project_id, provider, status) \
             DO UPDATE SET n = key_status_counts_by_project.n + 1;"
        ),
    ]
}

/// The columns a count is keyed by: an update that changes none of them leaves the counts.
const COUNTED: &str = "organization_id, project_id, provider, status";

fn counted_changed() -> String {
    COUNTED
        .split(", ")
        .map(|c| format!("OLD.{c} IS DISTINCT FROM NEW.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

fn sqlite_triggers() -> Vec<String> {
    let body = |parts: Vec<String>| parts.join(" ");
    // SQLite spells "is distinct from" as IS NOT.
    let changed = counted_changed().replace("IS DISTINCT FROM", "IS NOT");
    vec![
        format!(
            "CREATE TRIGGER key_status_counts_insert AFTER INSERT ON encryption_keys BEGIN {} END",
            body(join("NEW").to_vec())
        ),
        format!(
            "CREATE TRIGGER key_status_counts_delete AFTER DELETE ON encryption_keys BEGIN {} END",
            body(leave("OLD").to_vec())
        ),
        format!(
            "CREATE TRIGGER key_status_counts_update AFTER UPDATE OF {COUNTED} ON encryption_keys \
             WHEN {changed} BEGIN {} END",
            body([leave("OLD"), join("NEW")].concat())
        ),
    ]
}

fn postgres_triggers() -> Vec<String> {
    vec![
        format!(
            "CREATE FUNCTION key_status_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF TG_OP = 'UPDATE' THEN \
                 IF NOT ({changed}) THEN RETURN NULL; END IF; \
               END IF; \
               IF TG_OP <> 'INSERT' THEN {leave} END IF; \
               IF TG_OP <> 'DELETE' THEN {join} END IF; \
               RETURN NULL; \
             END $$",
            changed = counted_changed(),
            leave = leave("OLD").join(" "),
            join = join("NEW").join(" "),
        ),
        format!(
            "CREATE TRIGGER key_status_counts_follow \
             AFTER INSERT OR DELETE OR UPDATE OF {COUNTED} ON encryption_keys \
             FOR EACH ROW EXECUTE FUNCTION key_status_counts_follow()"
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, columns) in KEY_INDEXES {
            let mut index = Index::create();
            index
                .name(name)
                .table(EncryptionKeys::Table)
                .col(EncryptionKeys::OrganizationId);
            for column in columns {
                index.col(*column);
            }
            manager
                .create_index(index.col(EncryptionKeys::Id).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_encryption_keys_project_id")
                    .table(EncryptionKeys::Table)
                    .col(EncryptionKeys::ProjectId)
                    .col(EncryptionKeys::Id)
                    .to_owned(),
            )
            .await?;
        // The clusters a page of keys protects, found from the keys.
        manager
            .create_index(
                Index::create()
                    .name("ix_cluster_regions_key_id")
                    .table(ClusterRegions::Table)
                    .col(ClusterRegions::KeyId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(KeyStatusCounts::Table)
                    .col(
                        ColumnDef::new(KeyStatusCounts::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(KeyStatusCounts::Provider).text().not_null())
                    .col(ColumnDef::new(KeyStatusCounts::Status).text().not_null())
                    .col(ColumnDef::new(KeyStatusCounts::N).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(KeyStatusCounts::OrganizationId)
                            .col(KeyStatusCounts::Provider)
                            .col(KeyStatusCounts::Status),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KeyStatusCountsByProject::Table)
                    .col(
                        ColumnDef::new(KeyStatusCountsByProject::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyStatusCountsByProject::ProjectId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyStatusCountsByProject::Provider)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyStatusCountsByProject::Status)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(KeyStatusCountsByProject::N)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(KeyStatusCountsByProject::OrganizationId)
                            .col(KeyStatusCountsByProject::ProjectId)
                            .col(KeyStatusCountsByProject::Provider)
                            .col(KeyStatusCountsByProject::Status),
                    )
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        for statement in BACKFILL {
            db.execute_unprepared(statement).await?;
        }
        let triggers = match db.get_database_backend() {
            DatabaseBackend::Sqlite => sqlite_triggers(),
            _ => postgres_triggers(),
        };
        for statement in triggers {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match db.get_database_backend() {
            DatabaseBackend::Sqlite => {
                for trigger in ["insert", "delete", "update"] {
                    db.execute_unprepared(&format!("DROP TRIGGER key_status_counts_{trigger}"))
                        .await?;
                }
            }
            _ => {
                db.execute_unprepared("DROP TRIGGER key_status_counts_follow ON encryption_keys")
                    .await?;
                db.execute_unprepared("DROP FUNCTION key_status_counts_follow()")
                    .await?;
            }
        }
        for table in ["key_status_counts_by_project", "key_status_counts"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ix_cluster_regions_key_id")
                    .table(ClusterRegions::Table)
                    .to_owned(),
            )
            .await?;
        for name in KEY_INDEXES
            .iter()
            .map(|(name, _)| *name)
            .chain(["ix_encryption_keys_project_id"])
        {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(EncryptionKeys::Table)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
