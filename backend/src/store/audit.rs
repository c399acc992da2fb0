//! The audit chain in storage: append in the caller's transaction, read by organization or
//! in chain order.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::audit_events;
use crate::domain::audit::{AuditDraft, AuditEvent, AuditFilter, GENESIS, Outcome};
use crate::domain::page::PageRequest;
use crate::domain::ports::StoreError;

pub async fn append(db: &impl ConnectionTrait, draft: AuditDraft) -> Result<(), StoreError> {
    let last = audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Seq)
        .one(db)
        .await?;
    let (seq, prev_hash) = match last {
        Some(last) => (last.seq + 1, last.hash),
        None => (1, GENESIS.to_owned()),
    };
    let event = draft.seal(seq, &prev_hash);
    audit_events::Entity::insert(audit_events::ActiveModel {
        seq: Set(event.seq),
        id: Set(event.id),
        organization_id: Set(event.organization_id),
        occurred_at: Set(event.occurred_at),
        actor: Set(event.actor),
        action: Set(event.action),
        target: Set(event.target),
        outcome: Set(event.outcome.as_str().into()),
        source_ip: Set(event.source_ip),
        detail: Set(event.detail.to_string()),
        prev_hash: Set(event.prev_hash),
        hash: Set(event.hash),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

fn from_model(m: audit_events::Model) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: m.seq,
        id: m.id,
        organization_id: m.organization_id,
        occurred_at: m.occurred_at,
        actor: m.actor,
        action: m.action,
        target: m.target,
        outcome: Outcome::parse(&m.outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("audit event {}: outcome", m.seq)))?,
        source_ip: m.source_ip,
        detail: serde_json::from_str(&m.detail)
            .map_err(|_| StoreError::Corrupt(format!("audit event {}: detail", m.seq)))?,
        prev_hash: m.prev_hash,
        hash: m.hash,
    })
}

pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    filter: &AuditFilter,
    page: PageRequest,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut query = audit_events::Entity::find()
        .filter(audit_events::Column::OrganizationId.eq(organization_id))
        .order_by_desc(audit_events::Column::Seq)
        .limit(page.fetch_limit());
    if let Some(action) = &filter.action {
        query = query.filter(audit_events::Column::Action.eq(action.as_str()));
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_events::Column::OccurredAt.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_events::Column::OccurredAt.lt(until));
    }
    if let Some(after) = page.after {
        let cursor = audit_events::Entity::find()
            .filter(audit_events::Column::Id.eq(after))
            .one(db)
            .await?;
        if let Some(cursor) = cursor {
            query = query.filter(audit_events::Column::Seq.lt(cursor.seq));
        }
    }
    query.all(db).await?.into_iter().map(from_model).collect()
}

pub async fn chain(
    db: &impl ConnectionTrait,
    from_seq: i64,
    limit: u64,
) -> Result<Vec<AuditEvent>, StoreError> {
    audit_events::Entity::find()
        .filter(audit_events::Column::Seq.gte(from_seq))
        .order_by_asc(audit_events::Column::Seq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}
