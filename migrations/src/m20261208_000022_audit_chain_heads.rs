//! Each format-2 chain's head in a row of its own (`audit_chains`): its newest event's place,
//! hash and signing time, and the place of its newest checkpoint. An append reads and moves
//! its chain's row, so appends to one chain queue on that row and nothing else; the
//! checkpoint worker finds the chains that moved without scanning the log. The signed
//! checkpoints themselves are kept in `audit_checkpoints` (one per chain and place): an
//! export carries the newest, and each was queued to the organization's webhooks in the
//! transaction that made it. Existing chains get their row from their newest event.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditChains {
    Table,
    Chain,
    Seq,
    Hash,
    SignedAt,
    CheckpointSeq,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Chain,
    Seq,
    Hash,
    At,
    KeyId,
    Signature,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditChains::Table)
                    .col(
                        ColumnDef::new(AuditChains::Chain)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditChains::Seq).big_integer().not_null())
                    .col(ColumnDef::new(AuditChains::Hash).string_len(64).not_null())
                    .col(
                        ColumnDef::new(AuditChains::SignedAt)
                            .string_len(27)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditChains::CheckpointSeq)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditCheckpoints::Table)
                    .col(
                        ColumnDef::new(AuditCheckpoints::Chain)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::Seq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::Hash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::At)
                            .string_len(27)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::KeyId)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::Signature)
                            .string_len(88)
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(AuditCheckpoints::Chain)
                            .col(AuditCheckpoints::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        // The heads of the chains written so far: each chain's newest event.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO audit_chains (chain, seq, hash, signed_at, checkpoint_seq) \
                 SELECT e.chain, e.chain_seq, e.chain_hash, e.signed_at, 0 FROM audit_events e \
                 WHERE e.chain IS NOT NULL AND e.chain_seq = \
                 (SELECT MAX(n.chain_seq) FROM audit_events n WHERE n.chain = e.chain)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditCheckpoints::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditChains::Table).to_owned())
            .await
    }
}
