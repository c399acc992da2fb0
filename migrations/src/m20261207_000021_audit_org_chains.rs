//! The audit log's format 2 beside format 1: each new event is also sealed into its
//! organization's own chain (`chain` = the organization id, or `platform`), with its place
//! there (`chain_seq`, `chain_prev_hash`), its SHA-256 (`chain_hash`), when and with which
//! Ed25519 key it was signed (`signed_at`, `signing_key_id`) and the signature. Events from
//! before, and events written by a console without the signing key file, have none: they
//! are in format 1's chain only. A chain's place is unique.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Chain,
    ChainSeq,
    ChainPrevHash,
    ChainHash,
    SignedAt,
    SigningKeyId,
    Signature,
}

const INDEX: &str = "ux_audit_events_chain_seq";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            ColumnDef::new(AuditEvents::Chain)
                .string_len(36)
                .null()
                .to_owned(),
            ColumnDef::new(AuditEvents::ChainSeq)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(AuditEvents::ChainPrevHash)
                .string_len(64)
                .null()
                .to_owned(),
            ColumnDef::new(AuditEvents::ChainHash)
                .string_len(64)
                .null()
                .to_owned(),
            ColumnDef::new(AuditEvents::SignedAt)
                .string_len(27)
                .null()
                .to_owned(),
            ColumnDef::new(AuditEvents::SigningKeyId)
                .string_len(16)
                .null()
                .to_owned(),
            ColumnDef::new(AuditEvents::Signature)
                .string_len(88)
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditEvents::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(AuditEvents::Table)
                    .col(AuditEvents::Chain)
                    .col(AuditEvents::ChainSeq)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            AuditEvents::Signature,
            AuditEvents::SigningKeyId,
            AuditEvents::SignedAt,
            AuditEvents::ChainHash,
            AuditEvents::ChainPrevHash,
            AuditEvents::ChainSeq,
            AuditEvents::Chain,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditEvents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
