//! The audit log as a service: reading it, verifying its chain (and what the Audit Log page
//! shows of it), signed checkpoints. The events, the chain and its keys are in `audit.rs`.

use crate::crypto::audit_chain::{Broken, ChainEvent, Checkpoint as SignedCheckpoint, Extent};
use crate::domain::DomainError;
use crate::domain::audit::{
    AuditEvent, AuditFilter, ChainBreak, ChainKeys, ChainRead, ChainRow, ChainStatus,
    ChainVerifier, Checkpoint, GENESIS, Verification,
};
use crate::domain::error::StoreError;
use crate::domain::identity::Caller;
use crate::domain::page::{Page, PageRequest};

/// Events an export reads at a time.
pub const EXPORT_PAGE: u64 = 500;

/// An export of one organization's chain, fixed when it starts: events signed after it are
/// not in it.
#[derive(Clone, Debug)]
pub struct ChainExport {
    pub chain: String,
    /// The last place in the chain it may hold.
    pub through: u64,
    /// The chain's newest signed checkpoint at or before `through`.
    pub checkpoint: Option<SignedCheckpoint>,
    pub extent: Extent,
    pub filter: AuditFilter,
}

/// The audit feature as a service: reading the log, verifying its chain (and what the Audit
/// Log page shows of it), signed checkpoints. Over the audit port, the chain's keys and the
/// clock. (Every feature records its events through the audit port itself, in the
/// transaction of the change.)
#[derive(Clone)]
pub struct Audit {
    store: std::sync::Arc<dyn crate::domain::ports::AuditStore>,
    audit_keys: ChainKeys,
    clock: std::sync::Arc<dyn crate::domain::clock::Clock>,
    /// The audit page's last verification of each organization's chain.
    chain_status:
        std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<String, ChainStatus>>>,
    /// The Ed25519 keys of the log's format 2, published with when each was valid.
    signing: crate::crypto::audit_chain::SigningKeyRing,
}

impl Audit {
    pub fn new(
        store: std::sync::Arc<dyn crate::domain::ports::AuditStore>,
        audit_keys: ChainKeys,
        clock: std::sync::Arc<dyn crate::domain::clock::Clock>,
    ) -> Self {
        Self {
            store,
            audit_keys,
            clock,
            chain_status: std::sync::Arc::default(),
            signing: crate::crypto::audit_chain::SigningKeyRing::default(),
        }
    }

    pub fn with_signing_keys(mut self, keys: crate::crypto::audit_chain::SigningKeyRing) -> Self {
        self.signing = keys;
        self
    }

    /// The signing keys this console holds (the `audit-signing-keys` worker replaces them
    /// when the key file grows).
    pub fn signing_ring(&self) -> &crate::crypto::audit_chain::SigningKeyRing {
        &self.signing
    }

    /// Verifies every organization's chain (format 2), or only chain `only`, with the
    /// published keys, a batch at a time: how many chains and events, or the first broken
    /// one. Each chain must also reach its newest stored checkpoint and end where its head
    /// row says: removing the newest events is caught unless those were rewritten too.
    /// Checkpoints the customer `kept` (from their webhooks or an export) catch that: each
    /// must be signed, and its chain must hold its event with its hash.
    pub async fn verify_org_chains(
        &self,
        only: Option<&str>,
        kept: &[SignedCheckpoint],
    ) -> Result<Result<(u64, u64), (String, Broken)>, DomainError> {
        const BATCH: u64 = 500;
        let keys = self.signing.get().published();
        // A kept checkpoint of a chain with no event left is checked here: the chain's own
        // verification never starts.
        for cp in kept {
            if !cp.is_signed(&keys) {
                return Ok(Err((
                    cp.chain.clone(),
                    Broken {
                        seq: Some(cp.seq),
                        reason: format!(
                            "the kept checkpoint of seq {} is not signed by a key valid at {}",
                            cp.seq, cp.at
                        ),
                    },
                )));
            }
        }
        if only.is_none()
            && let Some(end) = self.store.audit_legacy_end().await?
        {
            let planted = self.store.audit_unchained_after(end.last_seq).await?;
            if planted > 0 {
                return Ok(Err((
                    "-".into(),
                    Broken {
                        seq: None,
                        reason: format!(
                            "{planted} events after the legacy segment are in no organization's chain: they were planted"
                        ),
                    },
                )));
            }
        }
        let (mut chains, mut events) = (0u64, 0u64);
        let mut visited = std::collections::HashSet::new();
        let mut current: Option<(String, crate::crypto::audit_chain::ChainVerifier<'_>)> = None;
        let mut after = None;
        loop {
            let batch = self
                .store
                .audit_org_chains(only, after.clone(), BATCH)
                .await?;
            for read in &batch {
                let (chain, seq) = read.place();
                if current.as_ref().is_none_or(|(c, _)| c != chain) {
                    if let Some((done_chain, done)) = current.take()
                        && let Err(b) = self.finish_chain(&done_chain, done).await?
                    {
                        return Ok(Err((done_chain, b)));
                    }
                    chains += 1;
                    visited.insert(chain.to_owned());
                    let mut checkpoints: Vec<SignedCheckpoint> = self
                        .store
                        .audit_latest_checkpoint(chain, u64::MAX)
                        .await?
                        .into_iter()
                        .collect();
                    checkpoints.extend(kept.iter().filter(|cp| cp.chain == chain).cloned());
                    let started = match crate::crypto::audit_chain::ChainVerifier::new(
                        chain,
                        &keys,
                        &checkpoints,
                        Extent::Whole,
                    ) {
                        Ok(v) => v,
                        Err(b) => return Ok(Err((chain.to_owned(), b))),
                    };
                    current = Some((chain.to_owned(), started));
                }
                let pushed = match (read, current.as_mut()) {
                    (ChainRead::Event(event), Some((_, verifier))) => verifier.push(event),
                    (ChainRead::Unreadable { reason, .. }, _) => Err(Broken {
                        seq,
                        reason: format!("it does not read back: {reason}"),
                    }),
                    (ChainRead::Event(_), None) => Ok(()),
                };
                if let Err(b) = pushed {
                    return Ok(Err((chain.to_owned(), b)));
                }
                events += 1;
            }
            match batch.last() {
                Some(last) if batch.len() as u64 == BATCH => {
                    let (chain, seq) = last.place();
                    after = Some((chain.to_owned(), seq.unwrap_or_default() as i64));
                }
                _ => break,
            }
        }
        if let Some((chain, done)) = current.take()
            && let Err(b) = self.finish_chain(&chain, done).await?
        {
            return Ok(Err((chain, b)));
        }
        if let Some(cp) = kept
            .iter()
            .find(|cp| !visited.contains(&cp.chain) && only.is_none_or(|c| c == cp.chain))
        {
            return Ok(Err((
                cp.chain.clone(),
                Broken {
                    seq: None,
                    reason: format!(
                        "a kept checkpoint covers event {} of this chain, but it holds no event: they were removed",
                        cp.seq
                    ),
                },
            )));
        }
        // A chain whose every event was removed still has its head row.
        let mut heads = match only {
            Some(chain) => vec![chain.to_owned()],
            None => Vec::new(),
        };
        let mut after = None;
        loop {
            if only.is_none() {
                heads = self.store.audit_chain_names(after.clone(), BATCH).await?;
            }
            for chain in &heads {
                if visited.contains(chain) {
                    continue;
                }
                if let Some((seq, _)) = self.store.audit_chain_head(chain, None).await? {
                    return Ok(Err((
                        chain.to_owned(),
                        Broken {
                            seq: None,
                            reason: format!(
                                "the chain's head is event {seq}, but it holds no event: they were removed"
                            ),
                        },
                    )));
                }
            }
            if only.is_some() || (heads.len() as u64) < BATCH {
                break;
            }
            after = heads.last().cloned();
        }
        Ok(Ok((chains, events)))
    }

    /// A chain's verification ends where its head row says it does.
    async fn finish_chain(
        &self,
        chain: &str,
        verifier: crate::crypto::audit_chain::ChainVerifier<'_>,
    ) -> Result<Result<(), Broken>, DomainError> {
        let verified = match verifier.finish() {
            Ok(v) => v,
            Err(b) => return Ok(Err(b)),
        };
        let head = self.store.audit_chain_head(chain, None).await?;
        let end = verified.last_seq.zip(verified.head_hash);
        if head.is_none() {
            return Ok(Err(Broken {
                seq: None,
                reason: "the chain has events but no head row: it was removed".into(),
            }));
        }
        if head != end {
            let (seq, _) = head.unwrap_or_default();
            return Ok(Err(Broken {
                seq: end.map(|(s, _)| s),
                reason: format!(
                    "the chain's head is event {seq}, but its events end here: events were removed or replaced"
                ),
            }));
        }
        Ok(Ok(()))
    }

    /// Starts an export of the caller's organization's chain (format 2): the events signed
    /// up to now, or in the filter's time range, or those it chooses; and the newest signed
    /// checkpoint among them, which the export carries first. Owners and auditors.
    pub async fn start_export(
        &self,
        caller: &Caller,
        filter: AuditFilter,
    ) -> Result<ChainExport, DomainError> {
        caller.require_auditor_view("read the audit log")?;
        let chain = caller.organization_id.to_string();
        let through = self
            .store
            .audit_chain_head(&chain, filter.until)
            .await?
            .map_or(0, |(seq, _)| seq);
        let checkpoint = if through > 0 {
            self.store.audit_latest_checkpoint(&chain, through).await?
        } else {
            None
        };
        let chooses = filter.action.is_some()
            || filter.actor.is_some()
            || filter.outcome.is_some()
            || filter.project_id.is_some();
        let extent = if chooses {
            Extent::Selection
        } else if filter.since.is_some() || filter.until.is_some() {
            Extent::Part
        } else {
            Extent::Whole
        };
        Ok(ChainExport {
            chain,
            through,
            checkpoint,
            extent,
            filter,
        })
    }

    /// The export's next events in chain order, after the place `after`.
    pub async fn export_page(
        &self,
        caller: &Caller,
        export: &ChainExport,
        after: u64,
    ) -> Result<Vec<ChainEvent>, DomainError> {
        caller.require_auditor_view("read the audit log")?;
        Ok(self
            .store
            .audit_chain_events(
                &export.chain,
                after,
                export.through,
                &export.filter,
                EXPORT_PAGE,
            )
            .await?)
    }

    /// Checkpoints every chain whose head moved since its last checkpoint (each is kept and
    /// queued to its organization's webhooks); the checkpoints made.
    pub async fn checkpoint_chains(&self) -> Result<Vec<SignedCheckpoint>, DomainError> {
        let now = self.clock.now();
        let mut made = Vec::new();
        // A batch at a time until none has moved: every organization's chain gets its
        // checkpoint each round, however many there are (bounded, should chains move as fast
        // as they are checkpointed).
        for _ in 0..1_000 {
            let batch = self.store.checkpoint_audit_chains(now).await?;
            if batch.is_empty() {
                break;
            }
            made.extend(batch);
        }
        Ok(made)
    }

    /// The public keys that sign the audit log, with the time each was valid for. Public by
    /// nature: any signed-in caller may read them, and keep them to verify exports offline.
    /// For owners and auditors (who read the log), each key also says which places of their
    /// organization's chain it signed: with them a verifier refuses what a retired key signed
    /// outside them.
    pub async fn signing_keys(
        &self,
        caller: &Caller,
    ) -> Result<Vec<crate::crypto::audit_chain::PublishedKey>, DomainError> {
        let mut keys = self.signing.get().published();
        if caller.require_auditor_view("read the audit log").is_err() {
            return Ok(keys);
        }
        let chain = caller.organization_id.to_string();
        let ranges = self.store.audit_key_ranges(&chain).await?;
        let now = crate::crypto::audit_chain::time_text(self.clock.now());
        for key in &mut keys {
            // A key whose retirement is scheduled still signs until then: the places it
            // signed are not final, and a verifier holds a retired key to them.
            if key
                .retired_at
                .as_deref()
                .is_some_and(|at| at > now.as_str())
            {
                continue;
            }
            let (first_seq, last_seq) = ranges
                .iter()
                .find(|(id, ..)| *id == key.key_id)
                .map_or((0, 0), |(_, first, last)| (*first, *last));
            key.signed = Some(crate::crypto::audit_chain::SignedRange {
                chain: chain.clone(),
                first_seq,
                last_seq,
            });
        }
        Ok(keys)
    }

    /// Owners and auditors read the audit log; members get 403 (it says who did what and
    /// from where).
    pub async fn audit_events(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, DomainError> {
        caller.require_auditor_view("read the audit log")?;
        let events = self
            .store
            .audit_events(caller.organization_id, filter, page)
            .await?;
        Ok(page.finish(events, |e| e.id))
    }

    /// Checks every row of the log, a batch at a time so memory stays flat, and, given a
    /// checkpoint saved earlier, that no event it covered was removed or replaced since.
    pub async fn verify_audit_chain(
        &self,
        since: Option<&Checkpoint>,
    ) -> Result<Verification, StoreError> {
        const BATCH: u64 = 500;
        let keys = &self.audit_keys;
        if let Some(checkpoint) = since
            && !checkpoint.is_signed_by(keys)
        {
            return Ok(Verification::Broken(ChainBreak {
                seq: checkpoint.seq,
                reason: "the checkpoint's signature does not verify with the chain keys".into(),
            }));
        }
        let mut verifier = ChainVerifier::new(keys);
        // The first batch starts below 1, so rows planted outside the chain are read too.
        let mut from = i64::MIN;
        let mut at_checkpoint = None;
        loop {
            let batch = self.store.audit_chain(from, BATCH).await?;
            let done = (batch.len() as u64) < BATCH;
            for row in &batch {
                if let Err(found) = verifier.check(row) {
                    return Ok(Verification::Broken(found));
                }
                if let (Some(cp), ChainRow::Event(e)) = (since, row)
                    && e.seq == cp.seq
                {
                    at_checkpoint = Some(e.hash.clone());
                }
            }
            from = verifier.next_seq();
            if done {
                break;
            }
        }
        let head = verifier.next_seq() - 1;
        // A closed chain must still end where it ended, as sealed then.
        if let Some(end) = self.store.audit_legacy_end().await? {
            if !end.is_sealed_by(keys) {
                return Ok(Verification::Broken(ChainBreak {
                    seq: end.last_seq,
                    reason: "the record of where the chain closed is not sealed by the chain keys: it was changed".into(),
                }));
            }
            if head != end.last_seq || verifier.head_hash() != end.last_hash {
                return Ok(Verification::Broken(ChainBreak {
                    seq: head + 1,
                    reason: format!(
                        "the chain closed at event {} (its legacy segment), but it ends at {head} now: events were removed, added or replaced",
                        end.last_seq
                    ),
                }));
            }
        }
        // A checkpoint of an empty log covers nothing.
        let since = since.filter(|cp| !(cp.seq == 0 && cp.hash == GENESIS));
        if let Some(cp) = since {
            match at_checkpoint {
                None => {
                    return Ok(Verification::Broken(ChainBreak {
                        seq: head + 1,
                        reason: format!(
                            "the checkpoint of {} covered events up to {}, but the chain ends \
                             at {head}: the newest events were removed",
                            cp.at, cp.seq
                        ),
                    }));
                }
                Some(hash) if hash != cp.hash => {
                    return Ok(Verification::Broken(ChainBreak {
                        seq: cp.seq,
                        reason: format!(
                            "it is not the event the checkpoint of {} saw: the chain was \
                             rewritten from here",
                            cp.at
                        ),
                    }));
                }
                Some(_) => {}
            }
        }
        Ok(Verification::Intact {
            events: verifier.checked,
            checkpoint: keys.checkpoint(head, verifier.head_hash(), self.clock.now()),
        })
    }

    /// Whether the whole chain verifies, for the audit page (owners and auditors). The result
    /// is kept while the head stays the same, for a minute at most, and one verification runs
    /// at a time.
    pub async fn audit_chain_status(&self, caller: &Caller) -> Result<ChainStatus, DomainError> {
        caller.require_auditor_view("read the audit log")?;
        let chain = caller.organization_id.to_string();
        let mut known = self.chain_status.lock().await;
        let head = self
            .store
            .audit_chain_head(&chain, None)
            .await?
            .map_or(0, |(seq, _)| seq as i64);
        let now = self.clock.now();
        if let Some(status) = known.get(&chain)
            && status.head_seq == head
            && now - status.checked_at < chrono::Duration::seconds(60)
        {
            return Ok(status.clone());
        }
        let broken = match self.verify_org_chains(Some(&chain), &[]).await? {
            Ok(_) => None,
            Err((_, b)) => Some(ChainBreak {
                seq: b.seq.map_or(head, |s| s as i64),
                reason: b.reason,
            }),
        };
        let status = ChainStatus {
            head_seq: head,
            broken,
            checked_at: now,
        };
        // One entry per organization that looked; a page view verifies its own chain only.
        known.insert(chain, status.clone());
        Ok(status)
    }

    /// A signed checkpoint of the chain's head as it is now.
    pub async fn audit_checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let (seq, hash) = self
            .store
            .audit_head()
            .await?
            .unwrap_or((0, GENESIS.to_owned()));
        Ok(self.audit_keys.checkpoint(seq, &hash, self.clock.now()))
    }
}
