//! The audit log is read newest first in chain order (`seq`), a keyset page at a time, and
//! exported whole that way. The index on `(organization_id, occurred_at)` matched no read:
//! the planner took it for every page and then sorted all of the organization's events by
//! `seq` to return 100 of them, so an export cost the square of its length. On
//! `(organization_id, seq)` a page starts at its cursor and reads in order, with no sort;
//! the action, actor, outcome, project and time filters are checked on the rows it passes,
//! so an export reads each event once. (Indexes with the action or the outcome before `seq`
//! were tried: without statistics SQLite does not pick them over this one.)

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    OrganizationId,
    OccurredAt,
    Seq,
}

const KEYSET_INDEX: &str = "ix_audit_events_organization_seq";
const TIME_INDEX: &str = "ix_audit_events_org_time";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(KEYSET_INDEX)
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(TIME_INDEX)
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(TIME_INDEX)
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::OccurredAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(KEYSET_INDEX)
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await
    }
}
