//! Which places of each chain each signing key signed (`audit_chain_keys`: the first and the
//! last), moved by every append. Published with the keys for the caller's chain, they let a
//! verifier refuse an event that a retired key signed outside what it really signed: a
//! retired key that leaked cannot extend a chain. Existing chains get theirs from their
//! events.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditChainKeys {
    Table,
    Chain,
    KeyId,
    FirstSeq,
    LastSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditChainKeys::Table)
                    .col(
                        ColumnDef::new(AuditChainKeys::Chain)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditChainKeys::KeyId)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditChainKeys::FirstSeq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditChainKeys::LastSeq)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(AuditChainKeys::Chain)
                            .col(AuditChainKeys::KeyId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO audit_chain_keys (chain, key_id, first_seq, last_seq) \
                 SELECT chain, signing_key_id, MIN(chain_seq), MAX(chain_seq) FROM audit_events \
                 WHERE chain IS NOT NULL AND signing_key_id IS NOT NULL \
                 GROUP BY chain, signing_key_id",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditChainKeys::Table).to_owned())
            .await
    }
}
