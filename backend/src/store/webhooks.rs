//! Webhooks, their queued deliveries and the log of attempts. Deliveries are queued by
//! `queue_alert`, which the audit append calls inside its transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::SeaStore;
use super::entities::{webhook_attempts, webhook_deliveries, webhooks};
use crate::domain::alerts::{
    Alert, Attempt, AttemptOutcome, Delivery, DeliveryState, LeasedDelivery, Webhook, WebhookStore,
    WebhookUrl, payload,
};
use crate::domain::audit::{AuditDraft, AuditEvent};
use crate::domain::notice::Notice;
use crate::domain::page::PageRequest;
use crate::domain::ports::StoreError;

/// Queues one delivery per webhook of the event's organization for the notice its use case
/// gave it (none without one).
pub async fn queue_alert(
    db: &impl ConnectionTrait,
    event: &AuditEvent,
    notice: Option<&Notice>,
) -> Result<(), StoreError> {
    let (Some(organization_id), Some(notice)) = (event.organization_id, notice) else {
        return Ok(());
    };
    queue(
        db,
        organization_id,
        &Alert::of(notice, event),
        event.occurred_at,
    )
    .await
}

/// Queues a signed checkpoint of the organization's audit chain to every one of its webhooks
/// (`audit.checkpoint`; its `data` is the checkpoint as `audit verify-export --checkpoint`
/// reads it).
pub async fn queue_checkpoint(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    checkpoint: &crate::crypto::audit_chain::Checkpoint,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let alert = Alert {
        event_type: crate::domain::alerts::CHECKPOINT_TYPE,
        only_webhook: None,
        data: serde_json::to_value(checkpoint)
            .map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))?,
    };
    queue(db, organization_id, &alert, at).await
}

/// Queues one delivery of `alert` per webhook of the organization (or to its one webhook).
async fn queue(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    alert: &Alert,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut query =
        webhooks::Entity::find().filter(webhooks::Column::OrganizationId.eq(organization_id));
    if let Some(only) = alert.only_webhook {
        query = query.filter(webhooks::Column::Id.eq(only));
    }
    let targets = query.all(db).await?;
    if targets.is_empty() {
        return Ok(());
    }
    let body = payload(alert, at);
    let rows = targets
        .into_iter()
        .map(|webhook| webhook_deliveries::ActiveModel {
            id: Set(Uuid::now_v7()),
            webhook_id: Set(webhook.id),
            organization_id: Set(organization_id),
            event_type: Set(alert.event_type.to_owned()),
            payload: Set(body.clone()),
            state: Set(DeliveryState::Pending.as_str().to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(Some(at)),
            lease_until: Set(None),
            last_status_code: Set(None),
            last_error: Set(None),
            created_at: Set(at),
            delivered_at: Set(None),
        });
    webhook_deliveries::Entity::insert_many(rows)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

fn webhook_from(m: webhooks::Model) -> Webhook {
    Webhook {
        id: m.id,
        organization_id: m.organization_id,
        url: WebhookUrl::stored(m.url),
        description: m.description,
        created_by: m.created_by,
        created_at: m.created_at,
    }
}

fn status_code(raw: Option<i32>) -> Option<u16> {
    raw.and_then(|s| u16::try_from(s).ok())
}

fn delivery_from(m: webhook_deliveries::Model, log: Vec<Attempt>) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: m.id,
        webhook_id: m.webhook_id,
        organization_id: m.organization_id,
        event_type: m.event_type,
        payload: m.payload,
        state: DeliveryState::parse(&m.state)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {}: state", m.id)))?,
        attempts: u32::try_from(m.attempts).unwrap_or(0),
        next_attempt_at: m.next_attempt_at,
        last_status_code: status_code(m.last_status_code),
        last_error: m.last_error,
        created_at: m.created_at,
        delivered_at: m.delivered_at,
        log,
    })
}

fn attempt_from(m: webhook_attempts::Model) -> Attempt {
    Attempt {
        attempt: u32::try_from(m.attempt).unwrap_or(0),
        at: m.at,
        status_code: status_code(m.status_code),
        error: m.error,
        duration_ms: u64::try_from(m.duration_ms).unwrap_or(0),
    }
}

#[async_trait]
impl WebhookStore for SeaStore {
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        secret_wrapped: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            webhooks::Entity::insert(webhooks::ActiveModel {
                id: Set(webhook.id),
                organization_id: Set(webhook.organization_id),
                url: Set(webhook.url.as_str().to_owned()),
                description: Set(webhook.description.clone()),
                secret_wrapped: Set(secret_wrapped.clone()),
                created_by: Set(webhook.created_by.clone()),
                created_at: Set(webhook.created_at),
            })
            .exec_without_returning(txn)
            .await?;
            ((), true)
        })
    }

    async fn webhooks(
        &self,
        organization_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Webhook>, StoreError> {
        let mut query = webhooks::Entity::find()
            .filter(webhooks::Column::OrganizationId.eq(organization_id))
            .order_by_asc(webhooks::Column::Id)
            .limit(page.fetch_limit());
        if let Some(after) = page.after {
            query = query.filter(webhooks::Column::Id.gt(after));
        }
        Ok(query
            .all(&self.db)
            .await?
            .into_iter()
            .map(webhook_from)
            .collect())
    }

    async fn webhook(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Webhook>, StoreError> {
        Ok(webhooks::Entity::find_by_id(id)
            .filter(webhooks::Column::OrganizationId.eq(organization_id))
            .one(&self.db)
            .await?
            .map(webhook_from))
    }

    async fn delete_webhook(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        audited!(self, audit, |txn| {
            // Children first: SQLite enforces the foreign keys but the order keeps both
            // databases alike.
            let deliveries: Vec<Uuid> = webhook_deliveries::Entity::find()
                .filter(webhook_deliveries::Column::WebhookId.eq(id))
                .filter(webhook_deliveries::Column::OrganizationId.eq(organization_id))
                .select_only()
                .column(webhook_deliveries::Column::Id)
                .into_tuple()
                .all(txn)
                .await?;
            webhook_attempts::Entity::delete_many()
                .filter(webhook_attempts::Column::WebhookId.eq(id))
                .exec(txn)
                .await?;
            if !deliveries.is_empty() {
                webhook_deliveries::Entity::delete_many()
                    .filter(webhook_deliveries::Column::WebhookId.eq(id))
                    .exec(txn)
                    .await?;
            }
            let gone = webhooks::Entity::delete_many()
                .filter(webhooks::Column::Id.eq(id))
                .filter(webhooks::Column::OrganizationId.eq(organization_id))
                .exec(txn)
                .await?
                .rows_affected
                > 0;
            (gone, gone)
        })
    }

    async fn deliveries(
        &self,
        webhook_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut query = webhook_deliveries::Entity::find()
            .filter(webhook_deliveries::Column::WebhookId.eq(webhook_id))
            .order_by_desc(webhook_deliveries::Column::Id)
            .limit(page.fetch_limit());
        if let Some(after) = page.after {
            query = query.filter(webhook_deliveries::Column::Id.lt(after));
        }
        let rows = query.all(&self.db).await?;
        let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
        let mut attempts = if ids.is_empty() {
            Vec::new()
        } else {
            webhook_attempts::Entity::find()
                .filter(webhook_attempts::Column::DeliveryId.is_in(ids))
                .order_by_asc(webhook_attempts::Column::Attempt)
                .all(&self.db)
                .await?
        };
        rows.into_iter()
            .map(|d| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut attempts)
                    .into_iter()
                    .partition(|a| a.delivery_id == d.id);
                attempts = rest;
                delivery_from(d, mine.into_iter().map(attempt_from).collect())
            })
            .collect()
    }

    async fn lease_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        // Most seconds nothing is due: find that out without taking the write lock.
        let due_filter = || {
            Condition::all()
                .add(webhook_deliveries::Column::State.eq(DeliveryState::Pending.as_str()))
                .add(webhook_deliveries::Column::NextAttemptAt.lte(now))
                .add(
                    Condition::any()
                        .add(webhook_deliveries::Column::LeaseUntil.is_null())
                        .add(webhook_deliveries::Column::LeaseUntil.lte(now)),
                )
        };
        if webhook_deliveries::Entity::find()
            .filter(due_filter())
            .one(&self.db)
            .await?
            .is_none()
        {
            return Ok(Vec::new());
        }
        // Under a lock of its own, like the key monitor's leases: two instances never take the
        // same delivery, so each is sent once (unless an instance dies mid-send; then the
        // lease lapses and the same message id is sent again, which receivers deduplicate).
        audited!(self, quietly, |txn| {
            super::lock_named(txn, "lease:webhook-deliveries").await?;
            // Fair between webhooks and organizations: a webhook has one delivery in flight
            // at a time (a slow receiver holds back only its own queue), an organization at
            // most `PER_ORGANIZATION`, and the oldest due delivery of each other webhook goes
            // first.
            const PER_ORGANIZATION: usize = 4;
            let in_flight: Vec<(Uuid, Uuid)> = webhook_deliveries::Entity::find()
                .select_only()
                .column(webhook_deliveries::Column::WebhookId)
                .column(webhook_deliveries::Column::OrganizationId)
                .filter(webhook_deliveries::Column::State.eq(DeliveryState::Pending.as_str()))
                .filter(webhook_deliveries::Column::LeaseUntil.gt(now))
                .into_tuple::<(Uuid, Uuid)>()
                .all(txn)
                .await?;
            let mut busy: std::collections::HashSet<Uuid> =
                in_flight.iter().map(|(w, _)| *w).collect();
            let mut per_organization: std::collections::HashMap<Uuid, usize> =
                std::collections::HashMap::new();
            for (_, organization) in &in_flight {
                *per_organization.entry(*organization).or_default() += 1;
            }
            // Which webhooks have something due (a few hundred at most per round, whatever
            // the backlog of any one of them), then each free one's oldest due delivery: a
            // webhook with thousands of overdue deliveries takes one slot like any other.
            let waiting: Vec<(Uuid, Uuid)> = webhook_deliveries::Entity::find()
                .select_only()
                .column(webhook_deliveries::Column::WebhookId)
                .column(webhook_deliveries::Column::OrganizationId)
                .filter(due_filter())
                .distinct()
                .limit(256)
                .into_tuple::<(Uuid, Uuid)>()
                .all(txn)
                .await?;
            let mut candidates = Vec::new();
            for (webhook, organization) in waiting {
                if busy.contains(&webhook)
                    || per_organization.get(&organization).copied().unwrap_or(0) >= PER_ORGANIZATION
                {
                    continue;
                }
                if let Some(oldest) = webhook_deliveries::Entity::find()
                    .filter(due_filter())
                    .filter(webhook_deliveries::Column::WebhookId.eq(webhook))
                    .order_by_asc(webhook_deliveries::Column::NextAttemptAt)
                    .one(txn)
                    .await?
                {
                    candidates.push(oldest);
                }
            }
            candidates.sort_by_key(|d| d.next_attempt_at);
            let mut due = Vec::new();
            for delivery in candidates {
                if due.len() as u64 >= limit {
                    break;
                }
                let taken = per_organization
                    .entry(delivery.organization_id)
                    .or_default();
                if *taken >= PER_ORGANIZATION || !busy.insert(delivery.webhook_id) {
                    continue;
                }
                *taken += 1;
                due.push(delivery);
            }
            let mut leased = Vec::with_capacity(due.len());
            if !due.is_empty() {
                webhook_deliveries::Entity::update_many()
                    .col_expr(
                        webhook_deliveries::Column::LeaseUntil,
                        Expr::value(Some(lease_until)),
                    )
                    .filter(webhook_deliveries::Column::Id.is_in(due.iter().map(|d| d.id)))
                    .exec(txn)
                    .await?;
                let hooks = webhooks::Entity::find()
                    .filter(webhooks::Column::Id.is_in(due.iter().map(|d| d.webhook_id)))
                    .all(txn)
                    .await?;
                for delivery in due {
                    let Some(hook) = hooks.iter().find(|h| h.id == delivery.webhook_id) else {
                        continue;
                    };
                    leased.push(LeasedDelivery {
                        url: WebhookUrl::stored(hook.url.clone()),
                        secret_wrapped: hook.secret_wrapped.clone(),
                        delivery: delivery_from(delivery, Vec::new())?,
                    });
                }
            }
            let any = !leased.is_empty();
            (leased, any)
        })
    }

    async fn record_attempt(
        &self,
        delivery_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        audited!(self, quietly, |txn| {
            // Its row locked, so a webhook deleted meanwhile is seen as gone.
            let Some(delivery) = webhook_deliveries::Entity::find_by_id(delivery_id)
                .lock_exclusive()
                .one(txn)
                .await?
            else {
                // Its webhook was deleted meanwhile.
                return Ok(());
            };
            let attempt = &outcome.attempt;
            webhook_attempts::Entity::insert(webhook_attempts::ActiveModel {
                id: Set(Uuid::now_v7()),
                delivery_id: Set(delivery_id),
                webhook_id: Set(delivery.webhook_id),
                attempt: Set(i32::try_from(attempt.attempt).unwrap_or(i32::MAX)),
                at: Set(attempt.at),
                status_code: Set(attempt.status_code.map(i32::from)),
                error: Set(attempt.error.clone()),
                duration_ms: Set(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX)),
            })
            .exec_without_returning(txn)
            .await?;
            let delivered_at = (outcome.state == DeliveryState::Delivered).then_some(attempt.at);
            webhook_deliveries::Entity::update_many()
                .col_expr(
                    webhook_deliveries::Column::State,
                    Expr::value(outcome.state.as_str()),
                )
                .col_expr(
                    webhook_deliveries::Column::Attempts,
                    Expr::value(i32::try_from(attempt.attempt).unwrap_or(i32::MAX)),
                )
                .col_expr(
                    webhook_deliveries::Column::NextAttemptAt,
                    Expr::value(outcome.next_attempt_at),
                )
                .col_expr(
                    webhook_deliveries::Column::LeaseUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .col_expr(
                    webhook_deliveries::Column::LastStatusCode,
                    Expr::value(attempt.status_code.map(i32::from)),
                )
                .col_expr(
                    webhook_deliveries::Column::LastError,
                    Expr::value(attempt.error.clone()),
                )
                .col_expr(
                    webhook_deliveries::Column::DeliveredAt,
                    Expr::value(delivered_at),
                )
                .filter(webhook_deliveries::Column::Id.eq(delivery_id))
                .exec(txn)
                .await?;
            ((), true)
        })
    }
}
