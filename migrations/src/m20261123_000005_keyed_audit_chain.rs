//! The audit chain is keyed: each event names the chain key that sealed it (`NULL` for events
//! from before, which the console re-seals once at start). Sequence numbers start at 1: the
//! database refuses a row planted outside the chain.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    KeyId,
}

/// SQLite cannot add a CHECK constraint to an existing table; triggers do the same.
const SQLITE_SEQ_GUARDS: [&str; 2] = [
    "CREATE TRIGGER audit_events_seq_insert BEFORE INSERT ON audit_events \
     WHEN NEW.seq < 1 BEGIN SELECT RAISE(ABORT, 'audit_events.seq must be at least 1'); END",
    "CREATE TRIGGER audit_events_seq_update BEFORE UPDATE OF seq ON audit_events \
     WHEN NEW.seq < 1 BEGIN SELECT RAISE(ABORT, 'audit_events.seq must be at least 1'); END",
];

/// `NOT VALID`: rows already planted do not stop the migration; `audit verify` reports them.
const POSTGRES_SEQ_CHECK: &str = "ALTER TABLE audit_events ADD CONSTRAINT ck_audit_events_seq \
     CHECK (seq >= 1) NOT VALID";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(ColumnDef::new(AuditEvents::KeyId).text().null())
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        match db.get_database_backend() {
            DatabaseBackend::Sqlite => {
                for guard in SQLITE_SEQ_GUARDS {
                    db.execute_unprepared(guard).await?;
                }
            }
            _ => {
                db.execute_unprepared(POSTGRES_SEQ_CHECK).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match db.get_database_backend() {
            DatabaseBackend::Sqlite => {
                db.execute_unprepared("DROP TRIGGER audit_events_seq_insert")
                    .await?;
                db.execute_unprepared("DROP TRIGGER audit_events_seq_update")
                    .await?;
            }
            _ => {
                db.execute_unprepared(
                    "ALTER TABLE audit_events DROP CONSTRAINT ck_audit_events_seq",
                )
                .await?;
            }
        }
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::KeyId)
                    .to_owned(),
            )
            .await
    }
}
