//! The audit chain in storage: append in the caller's transaction (which holds the chain
//! lock), read by organization or in chain order, and the one-time re-sealing of events
//! from before the chain was keyed.

use super::SeaStore;
use crate::domain::ports::AuditStore;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
};
use uuid::Uuid;

use super::entities::{
    audit_chain_keys, audit_chains, audit_checkpoints, audit_events, audit_legacy,
};
use crate::crypto::audit_chain::{
    ChainEvent, Checkpoint, EventBody, PLATFORM_CHAIN, SigningKey, SigningKeys, time_text,
};
use crate::domain::audit::{
    AuditDraft, AuditEvent, AuditFilter, ChainKey, ChainRead, ChainRow, GENESIS, LegacyEnd, Outcome,
};
use crate::domain::page::PageRequest;
use crate::domain::ports::StoreError;
use chrono::Timelike;

pub async fn append(
    db: &impl ConnectionTrait,
    mut draft: AuditDraft,
    key: &ChainKey,
    signing: &SigningKeys,
    checkpoint_every: u64,
    legacy: Option<&LegacyEnd>,
) -> Result<(), StoreError> {
    // Microseconds, as both databases keep them and format 2 writes them.
    draft.occurred_at = draft
        .occurred_at
        .with_nanosecond(draft.occurred_at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(draft.occurred_at);
    let notice = draft.notice.clone();
    let project = draft.project_id().map(|id| id.to_string());
    let (event, signed) = match legacy {
        // Format 1's chain is closed: the event goes to its organization's chain only, which
        // starts (if new) from format 1's last hash; its `seq` is only an ordinal.
        Some(end) => {
            if signing.is_empty() {
                return Err(StoreError::Database(
                    "this console has no audit signing key file (CMEK_AUDIT_SIGNING_KEY_FILE): \
                     events are signed into their organization's chain since format 1's closed"
                        .into(),
                ));
            }
            let mut event = draft.unsealed(next_seq(db).await?);
            let signed =
                seal_in_chain(db, &event, signing, checkpoint_every, &end.last_hash).await?;
            event.prev_hash = signed.prev_hash.clone();
            event.hash = signed.hash.clone();
            (event, Some(signed))
        }
        None => {
            let (seq, prev_hash) = head(db).await?.unwrap_or((0, GENESIS.to_owned()));
            let event = draft.seal(seq + 1, &prev_hash, key);
            let signed = if signing.is_empty() {
                None
            } else {
                Some(seal_in_chain(db, &event, signing, checkpoint_every, &event.prev_hash).await?)
            };
            (event, signed)
        }
    };
    // An event whose use case gave it a notice queues its webhook deliveries in the same
    // transaction.
    super::webhooks::queue_alert(db, &event, notice.as_ref()).await?;
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
        key_id: Set(event.key_id),
        project: Set(project),
        chain: Set(signed.as_ref().map(|e| e.chain.clone())),
        chain_seq: Set(signed.as_ref().map(|e| e.seq as i64)),
        chain_prev_hash: Set(signed.as_ref().map(|e| e.prev_hash.clone())),
        chain_hash: Set(signed.as_ref().map(|e| e.hash.clone())),
        signed_at: Set(signed.as_ref().map(|e| e.signed_at.clone())),
        signing_key_id: Set(signed.as_ref().map(|e| e.key_id.clone())),
        signature: Set(signed.map(|e| e.signature)),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The chain an event belongs to in format 2: its organization's, or the platform's.
pub(crate) fn chain_of(organization_id: Option<Uuid>) -> String {
    organization_id.map_or_else(|| PLATFORM_CHAIN.to_owned(), |id| id.to_string())
}

/// Seals the event into its organization's chain (format 2), after that chain's head (its
/// row in `audit_chains`, moved here); a chain's first event starts from `first_prev`, format
/// 1's hash before it (or where format 1 ended), which binds the two logs. Its signing time never goes back along the chain.
/// Every `checkpoint_every` events of a chain, the new head is also checkpointed, in the same
/// transaction.
async fn seal_in_chain(
    db: &impl ConnectionTrait,
    event: &AuditEvent,
    keys: &SigningKeys,
    checkpoint_every: u64,
    first_prev: &str,
) -> Result<ChainEvent, StoreError> {
    let chain = chain_of(event.organization_id);
    let head = audit_chains::Entity::find_by_id(chain.clone())
        .one(db)
        .await?;
    let (seq, prev, after) = match &head {
        Some(h) => (
            u64::try_from(h.seq).map_err(|_| corrupt_head(&chain))?,
            h.hash.clone(),
            Some(parse_time(&h.signed_at).ok_or_else(|| corrupt_head(&chain))?),
        ),
        None => (0, first_prev.to_owned(), None),
    };
    // Never before the event before it, nor before the first key became valid (an instance
    // whose clock lags would otherwise sign what no verifier accepts); signed by the key
    // valid then, so once another instance signed with a new key, this one does too.
    let signed_at = after.map_or(event.occurred_at, |a| Ord::max(a, event.occurred_at));
    let (key, signed_at) = keys
        .signer_at(signed_at)
        .ok_or_else(|| StoreError::Database("no audit signing key".into()))?;
    let sealed = ChainEvent::seal(&chain, seq + 1, &prev, chain_body(event), signed_at, key);
    let new_seq = i64::try_from(sealed.seq).map_err(|_| corrupt_head(&chain))?;
    if head.is_some() {
        // Moved only from the place it was read at: anything else lost a race for the head.
        let moved = audit_chains::Entity::update_many()
            .col_expr(audit_chains::Column::Seq, Expr::value(new_seq))
            .col_expr(audit_chains::Column::Hash, Expr::value(sealed.hash.clone()))
            .col_expr(
                audit_chains::Column::SignedAt,
                Expr::value(sealed.signed_at.clone()),
            )
            .filter(audit_chains::Column::Chain.eq(chain.as_str()))
            .filter(audit_chains::Column::Seq.eq(new_seq - 1))
            .exec(db)
            .await?;
        if moved.rows_affected != 1 {
            return Err(StoreError::Contention(format!(
                "the head of audit chain {chain} moved"
            )));
        }
    } else {
        audit_chains::Entity::insert(audit_chains::ActiveModel {
            chain: Set(chain.clone()),
            seq: Set(new_seq),
            hash: Set(sealed.hash.clone()),
            signed_at: Set(sealed.signed_at.clone()),
            checkpoint_seq: Set(0),
        })
        .exec_without_returning(db)
        .await?;
    }
    // What this key signed of this chain: its first place once, its last every time.
    audit_chain_keys::Entity::insert(audit_chain_keys::ActiveModel {
        chain: Set(chain.clone()),
        key_id: Set(sealed.key_id.clone()),
        first_seq: Set(new_seq),
        last_seq: Set(new_seq),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::columns([
            audit_chain_keys::Column::Chain,
            audit_chain_keys::Column::KeyId,
        ])
        .update_column(audit_chain_keys::Column::LastSeq)
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    if checkpoint_every > 0 && sealed.seq.is_multiple_of(checkpoint_every) {
        checkpoint(db, &chain, sealed.seq, &sealed.hash, signed_at, key).await?;
    }
    Ok(sealed)
}

fn corrupt_head(chain: &str) -> StoreError {
    StoreError::Corrupt(format!("the head of audit chain {chain}"))
}

fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Signs a checkpoint of `chain` at `seq` (whose event hashes to `hash`), keeps it, and
/// queues it to the organization's webhooks, unless the chain already has one at or past
/// `seq` (another instance made it): then `None`.
pub async fn checkpoint(
    db: &impl ConnectionTrait,
    chain: &str,
    seq: u64,
    hash: &str,
    at: chrono::DateTime<chrono::Utc>,
    key: &SigningKey,
) -> Result<Option<Checkpoint>, StoreError> {
    let place = i64::try_from(seq).map_err(|_| corrupt_head(chain))?;
    let claimed = audit_chains::Entity::update_many()
        .col_expr(audit_chains::Column::CheckpointSeq, Expr::value(place))
        .filter(audit_chains::Column::Chain.eq(chain))
        .filter(audit_chains::Column::CheckpointSeq.lt(place))
        .exec(db)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(None);
    }
    let signed = Checkpoint::sign(chain, seq, hash, at, key);
    audit_checkpoints::Entity::insert(audit_checkpoints::ActiveModel {
        chain: Set(signed.chain.clone()),
        seq: Set(place),
        hash: Set(signed.hash.clone()),
        at: Set(signed.at.clone()),
        key_id: Set(signed.key_id.clone()),
        signature: Set(signed.signature.clone()),
    })
    .exec_without_returning(db)
    .await?;
    if let Ok(organization_id) = Uuid::parse_str(chain) {
        super::webhooks::queue_checkpoint(db, organization_id, &signed, at).await?;
    }
    Ok(Some(signed))
}

/// Checkpoints the heads of up to `limit` chains that moved since their last checkpoint;
/// each is signed at `now`, or at its head's signing time if that is later, by the key
/// valid then.
pub async fn checkpoint_moved_chains(
    db: &impl ConnectionTrait,
    keys: &SigningKeys,
    now: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<Vec<Checkpoint>, StoreError> {
    let moved = audit_chains::Entity::find()
        .filter(
            Expr::col(audit_chains::Column::Seq).gt(Expr::col(audit_chains::Column::CheckpointSeq)),
        )
        .order_by_asc(audit_chains::Column::Chain)
        .limit(limit)
        .all(db)
        .await?;
    let mut made = Vec::new();
    for head in moved {
        let signed_at = parse_time(&head.signed_at).ok_or_else(|| corrupt_head(&head.chain))?;
        let seq = u64::try_from(head.seq).map_err(|_| corrupt_head(&head.chain))?;
        let Some((key, at)) = keys.signer_at(Ord::max(now, signed_at)) else {
            break;
        };
        if let Some(cp) = checkpoint(db, &head.chain, seq, &head.hash, at, key).await? {
            made.push(cp);
        }
    }
    Ok(made)
}

/// The places of `chain` each signing key signed: its id, first and last.
pub async fn key_ranges(
    db: &impl ConnectionTrait,
    chain: &str,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    Ok(audit_chain_keys::Entity::find()
        .filter(audit_chain_keys::Column::Chain.eq(chain))
        .all(db)
        .await?
        .into_iter()
        .map(|m| {
            (
                m.key_id,
                u64::try_from(m.first_seq).unwrap_or_default(),
                u64::try_from(m.last_seq).unwrap_or_default(),
            )
        })
        .collect())
}

/// The chain's newest checkpoint at or before `at_most` (a place in the chain).
pub async fn latest_checkpoint(
    db: &impl ConnectionTrait,
    chain: &str,
    at_most: u64,
) -> Result<Option<Checkpoint>, StoreError> {
    let place = i64::try_from(at_most).unwrap_or(i64::MAX);
    audit_checkpoints::Entity::find()
        .filter(audit_checkpoints::Column::Chain.eq(chain))
        .filter(audit_checkpoints::Column::Seq.lte(place))
        .order_by_desc(audit_checkpoints::Column::Seq)
        .one(db)
        .await?
        .map(|m| {
            Ok(Checkpoint {
                seq: u64::try_from(m.seq).map_err(|_| corrupt_head(chain))?,
                chain: m.chain,
                hash: m.hash,
                at: m.at,
                key_id: m.key_id,
                signature: m.signature,
            })
        })
        .transpose()
}

/// The chain's head: its newest event's place and hash; or its newest event signed before
/// `before`.
pub async fn chain_head(
    db: &impl ConnectionTrait,
    chain: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<(u64, String)>, StoreError> {
    let place = |seq: i64| u64::try_from(seq).map_err(|_| corrupt_head(chain));
    let Some(before) = before else {
        return audit_chains::Entity::find_by_id(chain.to_owned())
            .one(db)
            .await?
            .map(|h| Ok((place(h.seq)?, h.hash)))
            .transpose();
    };
    audit_events::Entity::find()
        .filter(audit_events::Column::Chain.eq(chain))
        .filter(audit_events::Column::SignedAt.lt(time_text(before)))
        .order_by_desc(audit_events::Column::ChainSeq)
        .one(db)
        .await?
        .map(|m| {
            let seq = m.chain_seq.ok_or_else(|| corrupt_head(chain))?;
            Ok((place(seq)?, m.chain_hash.unwrap_or_default()))
        })
        .transpose()
}

/// A page of one chain's events in chain order: after `after`, up to `through` (both places
/// in the chain), signed in `filter`'s time range and matching its other filters.
pub async fn chain_events(
    db: &impl ConnectionTrait,
    chain: &str,
    after: u64,
    through: u64,
    filter: &AuditFilter,
    limit: u64,
) -> Result<Vec<ChainEvent>, StoreError> {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut query = filtered(audit_events::Entity::find(), filter)
        .filter(audit_events::Column::Chain.eq(chain))
        .filter(audit_events::Column::ChainSeq.gt(clamp(after)))
        .filter(audit_events::Column::ChainSeq.lte(clamp(through)));
    // Signing times never go back along a chain, so a time range is one run of it.
    if let Some(since) = filter.since {
        query = query.filter(audit_events::Column::SignedAt.gte(time_text(since)));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_events::Column::SignedAt.lt(time_text(until)));
    }
    query
        .order_by_asc(audit_events::Column::ChainSeq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(chain_event_from)
        .collect()
}
/// What format 2 signs of an event.
pub(crate) fn chain_body(event: &AuditEvent) -> EventBody {
    EventBody {
        id: event.id.to_string(),
        occurred_at: time_text(event.occurred_at),
        actor: event.actor.clone(),
        action: event.action.clone(),
        target: event.target.clone(),
        outcome: event.outcome.as_str().to_owned(),
        source_ip: event.source_ip.clone(),
        detail: crate::crypto::audit_chain::integers_only(event.detail.clone()),
    }
}

/// The events of the format-2 chains (of `only` if given), in chain then sequence order,
/// `limit` of them after `after` (a chain and a sequence number); a row that does not read
/// back is returned as such, for verification to report.
pub async fn org_chains(
    db: &impl ConnectionTrait,
    only: Option<&str>,
    after: Option<(String, i64)>,
    limit: u64,
) -> Result<Vec<ChainRead>, StoreError> {
    let mut query = audit_events::Entity::find().filter(audit_events::Column::Chain.is_not_null());
    if let Some(chain) = only {
        query = query.filter(audit_events::Column::Chain.eq(chain));
    }
    if let Some((chain, seq)) = after {
        query = query.filter(
            audit_events::Column::Chain
                .gt(chain.clone())
                .or(audit_events::Column::Chain
                    .eq(chain)
                    .and(audit_events::Column::ChainSeq.gt(seq))),
        );
    }
    Ok(query
        .order_by_asc(audit_events::Column::Chain)
        .order_by_asc(audit_events::Column::ChainSeq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|m| {
            let chain = m.chain.clone().unwrap_or_default();
            let seq = m.chain_seq.and_then(|s| u64::try_from(s).ok());
            chain_event_from(m)
                .map(ChainRead::Event)
                .unwrap_or_else(|e| ChainRead::Unreadable {
                    chain,
                    seq,
                    reason: e.to_string(),
                })
        })
        .collect())
}

fn chain_event_from(m: audit_events::Model) -> Result<ChainEvent, StoreError> {
    let seq = m.seq;
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit event {seq}: {what}"));
    let chain = m.chain.clone().ok_or_else(|| corrupt("chain"))?;
    let chain_seq = m.chain_seq.ok_or_else(|| corrupt("chain_seq"))?;
    // The organization the log shows it under is the chain's: anything else moved it.
    if chain_of(m.organization_id) != chain {
        return Err(corrupt("its organization is not its chain's"));
    }
    let signed = (
        m.chain_prev_hash.clone(),
        m.chain_hash.clone(),
        m.signed_at.clone(),
        m.signing_key_id.clone(),
        m.signature.clone(),
    );
    let event = from_model(m)?;
    let (Some(prev_hash), Some(hash), Some(signed_at), Some(key_id), Some(signature)) = signed
    else {
        return Err(corrupt("its format-2 fields"));
    };
    Ok(ChainEvent {
        chain,
        seq: u64::try_from(chain_seq).map_err(|_| corrupt("chain_seq"))?,
        body: chain_body(&event),
        signed_at,
        prev_hash,
        hash,
        key_id,
        signature,
    })
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
        key_id: m.key_id,
        chain_seq: m.chain_seq,
        signing_key_id: m.signing_key_id,
    })
}

/// The next event's ordinal: PostgreSQL's sequence (no lock shared by organizations), or on
/// SQLite (one writer at a time) the one after the newest.
async fn next_seq(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => "SELECT nextval('audit_events_seq') AS seq",
        _ => "SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM audit_events",
    };
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| StoreError::Database("no next audit event ordinal".into()))?;
    Ok(row.try_get::<i64>("", "seq")?)
}

/// A number that grows with every event recorded, in commit order: the events of every
/// organization's chain (each append moves its chain's head by one in its transaction). What
/// the read cache tags its entries with.
pub async fn version(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) AS version FROM audit_chains",
        ))
        .await?;
    Ok(row.map_or(Ok(0), |r| r.try_get::<i64>("", "version"))?)
}

/// Where format 1's chain ended, if it is closed.
pub async fn legacy_end(db: &impl ConnectionTrait) -> Result<Option<LegacyEnd>, StoreError> {
    Ok(audit_legacy::Entity::find_by_id(1)
        .one(db)
        .await?
        .map(|m| LegacyEnd {
            last_seq: m.last_seq,
            last_hash: m.last_hash,
            key_id: m.key_id,
            seal: m.seal,
        }))
}

/// Closes format 1's chain where it ends now (its head, sealed with `key`), unless it is
/// closed already; on PostgreSQL, the ordinal sequence starts after the newest event. The
/// caller holds format 1's lock, so no append of an older console is in flight.
pub async fn close_legacy(
    db: &impl ConnectionTrait,
    key: &ChainKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<LegacyEnd, StoreError> {
    if let Some(end) = legacy_end(db).await? {
        return Ok(end);
    }
    let (seq, hash) = head(db).await?.unwrap_or((0, GENESIS.to_owned()));
    let end = LegacyEnd::sealed(seq, &hash, key);
    audit_legacy::Entity::insert(audit_legacy::ActiveModel {
        id: Set(1),
        last_seq: Set(end.last_seq),
        last_hash: Set(end.last_hash.clone()),
        closed_at: Set(now),
        key_id: Set(end.key_id.clone()),
        seal: Set(end.seal.clone()),
    })
    .exec_without_returning(db)
    .await?;
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        db.execute_unprepared(
            "SELECT setval('audit_events_seq', \
             COALESCE((SELECT MAX(seq) FROM audit_events), 0) + 1, false)",
        )
        .await?;
    }
    Ok(end)
}

/// How many events after format 1's end are in no organization's chain (only tampering
/// plants such rows; `audit verify` reports them).
pub async fn unchained_after(db: &impl ConnectionTrait, last_seq: i64) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(audit_events::Entity::find()
        .filter(audit_events::Column::Seq.gt(last_seq))
        .filter(audit_events::Column::Chain.is_null())
        .count(db)
        .await?)
}

/// The newest event's place: its sequence number and hash.
pub async fn head(db: &impl ConnectionTrait) -> Result<Option<(i64, String)>, StoreError> {
    Ok(audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Seq)
        .one(db)
        .await?
        .map(|last| (last.seq, last.hash)))
}

pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    filter: &AuditFilter,
    page: PageRequest,
) -> Result<Vec<AuditEvent>, StoreError> {
    page_query(organization_id, filter, page)
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

/// A page of the organization's events, newest first: a keyset read in `seq` order on
/// `(organization_id, seq)` (migration 000015), so no page sorts and none reads the rows of
/// the pages before it; filters are checked on the rows the scan passes. An export of N
/// events reads each of them once, however many pages it takes.
fn page_query(
    organization_id: Uuid,
    filter: &AuditFilter,
    page: PageRequest,
) -> sea_orm::Select<audit_events::Entity> {
    // Only rows inside the chain are shown; `audit verify` reports any other.
    let mut query = audit_events::Entity::find()
        .filter(audit_events::Column::OrganizationId.eq(organization_id))
        .filter(audit_events::Column::Seq.gte(1))
        .order_by_desc(audit_events::Column::Seq)
        .limit(page.fetch_limit());
    query = filtered(query, filter);
    if let Some(since) = filter.since {
        query = query.filter(audit_events::Column::OccurredAt.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_events::Column::OccurredAt.lt(until));
    }
    if let Some(after) = page.after {
        // The page goes on below the cursor's place in the chain, found in the same statement:
        // the scan starts there on the index instead of passing the pages before it. A cursor
        // that names no event ends the listing rather than starting it over.
        let cursor = audit_events::Entity::find()
            .select_only()
            .column(audit_events::Column::Seq)
            .filter(audit_events::Column::OrganizationId.eq(organization_id))
            .filter(audit_events::Column::Id.eq(after))
            .into_query();
        query =
            query.filter(Expr::col((audit_events::Entity, audit_events::Column::Seq)).lt(cursor));
    }
    query
}

/// The filters other than time: action, actor, outcome, project.
fn filtered(
    mut query: sea_orm::Select<audit_events::Entity>,
    filter: &AuditFilter,
) -> sea_orm::Select<audit_events::Entity> {
    if let Some(action) = &filter.action {
        query = query.filter(audit_events::Column::Action.eq(action.as_str()));
    }
    if let Some(actor) = &filter.actor {
        // Part of the actor, taken literally (no wildcard of the user's) and without regard
        // to case, the same on SQLite and PostgreSQL.
        let escaped = actor
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(
            Expr::expr(Func::lower(Expr::col(audit_events::Column::Actor)))
                .like(LikeExpr::new(format!("%{escaped}%")).escape('\\')),
        );
    }
    if let Some(outcome) = filter.outcome {
        query = query.filter(audit_events::Column::Outcome.eq(outcome.as_str()));
    }
    if let Some(project) = filter.project_id {
        // The project itself, or anything in it (migration 000018).
        query = query.filter(audit_events::Column::Project.eq(project.to_string()));
    }
    query
}

/// Format 1's rows in `seq` order, `limit` of them from `from_seq` on, up to `through` if
/// given (where it closed).
pub async fn chain(
    db: &impl ConnectionTrait,
    from_seq: i64,
    through: Option<i64>,
    limit: u64,
) -> Result<Vec<ChainRow>, StoreError> {
    Ok(audit_events::Entity::find()
        .filter(audit_events::Column::Seq.gte(from_seq))
        .apply_if(through, |q, last| {
            q.filter(audit_events::Column::Seq.lte(last))
        })
        .order_by_asc(audit_events::Column::Seq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|m| {
            let seq = m.seq;
            from_model(m)
                .map(ChainRow::Event)
                .unwrap_or_else(|e| ChainRow::Unreadable {
                    seq,
                    reason: e.to_string(),
                })
        })
        .collect())
}

/// Events from before the chain was keyed carry a plain SHA-256. When the whole stored chain
/// is such events and still links up, re-seals it with `key` (same order, same content), so
/// from then on every event is keyed. A legacy chain that is already broken is left as it is
/// for `audit verify` to report. Returns how many events were re-sealed.
pub async fn reseal_legacy(db: &impl ConnectionTrait, key: &ChainKey) -> Result<u64, StoreError> {
    const BATCH: u64 = 500;
    let legacy = audit_events::Entity::find()
        .filter(audit_events::Column::KeyId.is_null())
        .one(db)
        .await?;
    if legacy.is_none() {
        return Ok(0);
    }
    let keyed = audit_events::Entity::find()
        .filter(audit_events::Column::KeyId.is_not_null())
        .one(db)
        .await?;
    if keyed.is_some() {
        tracing::error!("the audit log mixes keyed and unkeyed events; not re-sealing");
        return Ok(0);
    }
    // First pass: the legacy chain must verify as it was written.
    let (mut expected, mut prev) = (1, GENESIS.to_owned());
    loop {
        let batch = chain(db, expected, None, BATCH).await?;
        for row in &batch {
            let ChainRow::Event(event) = row else {
                tracing::error!("unreadable audit event; not re-sealing the legacy chain");
                return Ok(0);
            };
            if event.seq != expected || event.prev_hash != prev || event.legacy_hash() != event.hash
            {
                tracing::error!(
                    seq = event.seq,
                    "the legacy audit chain is broken; not re-sealing"
                );
                return Ok(0);
            }
            prev = event.hash.clone();
            expected += 1;
        }
        if (batch.len() as u64) < BATCH {
            break;
        }
    }
    // Second pass: the same events, linked and sealed with the key.
    let (mut from, mut prev, mut count) = (1, GENESIS.to_owned(), 0);
    loop {
        let batch = chain(db, from, None, BATCH).await?;
        for row in &batch {
            let ChainRow::Event(event) = row else {
                return Err(StoreError::Corrupt(
                    "audit event changed while re-sealing".into(),
                ));
            };
            let mut sealed = event.clone();
            sealed.prev_hash = prev.clone();
            sealed.key_id = Some(key.id().to_owned());
            sealed.hash = sealed.compute_hash(key);
            audit_events::Entity::update_many()
                .col_expr(
                    audit_events::Column::PrevHash,
                    Expr::value(sealed.prev_hash),
                )
                .col_expr(audit_events::Column::Hash, Expr::value(sealed.hash.clone()))
                .col_expr(audit_events::Column::KeyId, Expr::value(sealed.key_id))
                .filter(audit_events::Column::Seq.eq(sealed.seq))
                .exec(db)
                .await?;
            prev = sealed.hash;
            from = sealed.seq + 1;
            count += 1;
        }
        if (batch.len() as u64) < BATCH {
            return Ok(count);
        }
    }
}

#[async_trait]
impl AuditStore for SeaStore {
    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |_txn| ((), true))
    }

    async fn audit_events(
        &self,
        organization_id: Uuid,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        super::audit::list(&self.db, organization_id, filter, page).await
    }

    async fn audit_chain(&self, from_seq: i64, limit: u64) -> Result<Vec<ChainRow>, StoreError> {
        // A closed format 1 is its legacy segment: the rows after its end are in the
        // organizations' chains.
        let through = self.legacy.get().map(|end| end.last_seq);
        super::audit::chain(&self.db, from_seq, through, limit).await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        if let Some(end) = self.legacy.get() {
            return Ok((end.last_seq > 0).then(|| (end.last_seq, end.last_hash.clone())));
        }
        super::audit::head(&self.db).await
    }

    async fn audit_chain_names(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(audit_chains::Entity::find()
            .apply_if(after, |q, name| {
                q.filter(audit_chains::Column::Chain.gt(name))
            })
            .order_by_asc(audit_chains::Column::Chain)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| m.chain)
            .collect())
    }

    async fn audit_key_ranges(&self, chain: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        key_ranges(&self.db, chain).await
    }

    async fn audit_legacy_end(&self) -> Result<Option<LegacyEnd>, StoreError> {
        legacy_end(&self.db).await
    }

    async fn audit_unchained_after(&self, last_seq: i64) -> Result<u64, StoreError> {
        unchained_after(&self.db, last_seq).await
    }

    async fn audit_org_chains(
        &self,
        only: Option<&str>,
        after: Option<(String, i64)>,
        limit: u64,
    ) -> Result<Vec<ChainRead>, StoreError> {
        super::audit::org_chains(&self.db, only, after, limit).await
    }

    async fn audit_chain_head(
        &self,
        chain: &str,
        before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<(u64, String)>, StoreError> {
        chain_head(&self.db, chain, before).await
    }

    async fn audit_chain_events(
        &self,
        chain: &str,
        after: u64,
        through: u64,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<ChainEvent>, StoreError> {
        chain_events(&self.db, chain, after, through, filter, limit).await
    }

    async fn audit_latest_checkpoint(
        &self,
        chain: &str,
        at_most: u64,
    ) -> Result<Option<Checkpoint>, StoreError> {
        latest_checkpoint(&self.db, chain, at_most).await
    }

    async fn checkpoint_audit_chains(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        /// Chains checkpointed in one transaction; the rest wait for the next round.
        const BATCH: u64 = 200;
        let keys = self.signing.get();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        audited!(self, quietly, |txn| {
            let made = checkpoint_moved_chains(txn, &keys, now, BATCH).await?;
            let happened = !made.is_empty();
            (made, happened)
        })
    }

    async fn reseal_legacy_audit_chain(&self) -> Result<u64, StoreError> {
        if self.legacy.get().is_some() || legacy_end(&self.db).await?.is_some() {
            return Ok(0);
        }
        let write = self.begin(super::Locks::Chains(Vec::new())).await?;
        let count = super::audit::reseal_legacy(&write.txn, write.key).await?;
        write.txn.commit().await?;
        self.cache.changed();
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{DatabaseBackend, DatabaseConnection, Statement};

    /// SQLite's plan for a page, one step per line.
    async fn plan(db: &DatabaseConnection, filter: &AuditFilter) -> String {
        let after = PageRequest {
            size: 100,
            after: Some(Uuid::now_v7()),
        };
        let page = page_query(Uuid::now_v7(), filter, after).build(DatabaseBackend::Sqlite);
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {}", page.sql),
                page.values.map(|v| v.0).unwrap_or_default(),
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|row| row.try_get::<String>("", "detail").unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn every_page_of_the_log_is_a_keyset_read_on_an_index_without_a_sort() {
        let file = std::env::temp_dir().join(format!("cmek-audit-plan-{}.db", Uuid::new_v4()));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let migrating = crate::store::connect(&url).await.unwrap();
        crate::store::migrate(&migrating).await.unwrap();
        migrating.close().await.unwrap();
        // Fresh connections: EXPLAIN starts no transaction, so a connection that was open
        // during the migrations would still plan on the schema it read before them.
        let db = crate::store::connect(&url).await.unwrap();
        let at = chrono::Utc::now();
        let filters = [
            ("no filter", AuditFilter::default()),
            (
                "action",
                AuditFilter {
                    action: Some("project.created".into()),
                    ..Default::default()
                },
            ),
            (
                "outcome",
                AuditFilter {
                    outcome: Some(Outcome::Denied),
                    ..Default::default()
                },
            ),
            (
                "time",
                AuditFilter {
                    since: Some(at - chrono::Duration::days(1)),
                    until: Some(at),
                    ..Default::default()
                },
            ),
            (
                "actor and project",
                AuditFilter {
                    actor: Some("alice".into()),
                    project_id: Some(Uuid::now_v7()),
                    ..Default::default()
                },
            ),
        ];

        for (what, filter) in filters {
            let plan = plan(&db, &filter).await;
            assert!(
                plan.contains(
                    "SEARCH audit_events USING INDEX ix_audit_events_organization_seq \
                     (organization_id=? AND seq>? AND seq<?)"
                ),
                "{what}: not a keyset read on (organization_id, seq):\n{plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE"),
                "{what}: the page sorts:\n{plan}"
            );
        }
        // The project filter reads its own column on (organization_id, project, seq): still a
        // keyset read in `seq` order, with no sort.
        let plan = plan(
            &db,
            &AuditFilter {
                project_id: Some(Uuid::now_v7()),
                ..Default::default()
            },
        )
        .await;
        assert!(
            plan.contains("USING INDEX ix_audit_events_organization"),
            "{plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "project: the page sorts:\n{plan}"
        );
        db.close().await.unwrap();
        let _ = std::fs::remove_file(&file);
    }
}
