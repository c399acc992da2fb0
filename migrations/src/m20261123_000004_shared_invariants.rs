//! Invariants that several console processes on one database must share: one pending
//! invitation per email and organization (a unique index, not a read before the write), and
//! sign-in rate-limit counters that every process sees.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RateLimitHits {
    Table,
    Bucket,
    WindowStart,
    Hits,
}

/// Earlier versions could leave two open invitations for one email; keep the newest.
const CLOSE_DUPLICATE_INVITATIONS: &str = "UPDATE invitations SET revoked_at = created_at \
     WHERE accepted_at IS NULL AND revoked_at IS NULL AND EXISTS (\
     SELECT 1 FROM invitations newer WHERE newer.organization_id = invitations.organization_id \
     AND newer.email = invitations.email AND newer.accepted_at IS NULL \
     AND newer.revoked_at IS NULL AND newer.id > invitations.id)";

/// Partial unique indexes are spelled the same way on SQLite and PostgreSQL.
const PENDING_INVITATION_INDEX: &str = "CREATE UNIQUE INDEX ux_invitations_pending \
     ON invitations (organization_id, email) WHERE accepted_at IS NULL AND revoked_at IS NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(CLOSE_DUPLICATE_INVITATIONS).await?;
        db.execute_unprepared(PENDING_INVITATION_INDEX).await?;
        manager
            .create_table(
                Table::create()
                    .table(RateLimitHits::Table)
                    .col(ColumnDef::new(RateLimitHits::Bucket).text().not_null())
                    .col(
                        ColumnDef::new(RateLimitHits::WindowStart)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RateLimitHits::Hits).integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(RateLimitHits::Bucket)
                            .col(RateLimitHits::WindowStart),
                    )
                    .to_owned(),
            )
            .await?;
        // Old windows are deleted by time.
        manager
            .create_index(
                Index::create()
                    .name("ix_rate_limit_hits_window_start")
                    .table(RateLimitHits::Table)
                    .col(RateLimitHits::WindowStart)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RateLimitHits::Table).to_owned())
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ux_invitations_pending")
            .await?;
        Ok(())
    }
}
