//! The audit log: append-only and tamper-evident. Each event carries the SHA-256 of its own
//! canonical form and the hash of the event before it, so altering, inserting or removing a
//! stored event breaks the chain where it happened; `verify` finds the first break.
//! Events never carry secrets or key material: `detail` holds ids, names and outcomes only.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::identity::Caller;
use crate::domain::page::{Page, PageRequest};
use crate::domain::ports::StoreError;
use crate::domain::{Console, DomainError};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// An event before the store gives it its place in the chain.
#[derive(Clone, Debug)]
pub struct AuditDraft {
    pub id: Uuid,
    pub organization_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    pub detail: serde_json::Value,
}

impl AuditDraft {
    pub fn by(caller: &Caller, at: DateTime<Utc>, action: &'static str, target: String) -> Self {
        Self {
            id: Uuid::now_v7(),
            organization_id: Some(caller.organization_id),
            occurred_at: at,
            actor: caller.actor.label(),
            action,
            target,
            outcome: Outcome::Success,
            source_ip: caller.source_ip.clone(),
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// An event with no authenticated caller behind it: a sign-in, the system, an operator.
    pub fn new(
        actor: String,
        organization_id: Option<Uuid>,
        at: DateTime<Utc>,
        action: &'static str,
        target: String,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            organization_id,
            occurred_at: at,
            actor,
            action,
            target,
            outcome: Outcome::Success,
            source_ip: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn from_address(mut self, source_ip: Option<String>) -> Self {
        self.source_ip = source_ip;
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    /// Gives the draft its place after `prev` (sequence number and hash).
    pub fn seal(self, seq: i64, prev_hash: &str) -> AuditEvent {
        let mut event = AuditEvent {
            seq,
            id: self.id,
            organization_id: self.organization_id,
            occurred_at: self.occurred_at,
            actor: self.actor,
            action: self.action.to_owned(),
            target: self.target,
            outcome: self.outcome,
            source_ip: self.source_ip,
            detail: self.detail,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: Uuid,
    pub organization_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEvent {
    /// SHA-256 over a canonical JSON array of every field but the hash itself.
    pub fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.seq,
            self.id,
            self.organization_id,
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            self.actor,
            self.action,
            self.target,
            self.outcome.as_str(),
            self.source_ip,
            self.detail,
            self.prev_hash,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Where the chain breaks first.
#[derive(Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Walks events in `seq` order and reports the first that does not follow from the one before.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    pub checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    pub fn next_seq(&self) -> i64 {
        self.expected_seq
    }

    pub fn check(&mut self, event: &AuditEvent) -> Result<(), ChainBreak> {
        let broken = |reason: String| ChainBreak {
            seq: event.seq,
            reason,
        };
        if event.seq != self.expected_seq {
            return Err(broken(format!(
                "expected event {} next: events {}..{} are missing",
                self.expected_seq,
                self.expected_seq,
                event.seq - 1
            )));
        }
        if event.prev_hash != self.prev_hash {
            return Err(broken(
                "its prev_hash does not match the hash of the event before it".into(),
            ));
        }
        if event.compute_hash() != event.hash {
            return Err(broken(
                "its content does not match its hash (altered)".into(),
            ));
        }
        self.expected_seq += 1;
        self.prev_hash = event.hash.clone();
        self.checked += 1;
        Ok(())
    }
}

/// Filters of the audit log API and page.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Result of `Console::verify_audit_chain`.
pub enum Verification {
    Intact { events: u64 },
    Broken(ChainBreak),
}

impl Console {
    /// Any member of the organization may read its audit log (auditors most of all).
    pub async fn audit_events(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, DomainError> {
        let events = self
            .store
            .audit_events(caller.organization_id, filter, page)
            .await?;
        Ok(page.finish(events, |e| e.id))
    }

    /// Checks the whole chain, a batch at a time so memory stays flat.
    pub async fn verify_audit_chain(&self) -> Result<Verification, StoreError> {
        const BATCH: u64 = 500;
        let mut verifier = ChainVerifier::default();
        loop {
            let batch = self.store.audit_chain(verifier.next_seq(), BATCH).await?;
            let done = (batch.len() as u64) < BATCH;
            for event in &batch {
                if let Err(found) = verifier.check(event) {
                    return Ok(Verification::Broken(found));
                }
            }
            if done {
                return Ok(Verification::Intact {
                    events: verifier.checked,
                });
            }
        }
    }

    pub(crate) async fn record(&self, draft: AuditDraft) -> Result<(), DomainError> {
        Ok(self.store.append_audit(draft).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let event = AuditDraft {
                    id: Uuid::now_v7(),
                    organization_id: None,
                    occurred_at: Utc::now(),
                    actor: "system".into(),
                    action: "test.event",
                    target: format!("thing/{seq}"),
                    outcome: Outcome::Success,
                    source_ip: None,
                    detail: serde_json::json!({}),
                }
                .seal(seq, &prev);
                prev = event.hash.clone();
                event
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> Result<(), ChainBreak> {
        let mut v = ChainVerifier::default();
        events.iter().try_for_each(|e| v.check(e))
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(()));
    }

    #[test]
    fn an_altered_event_is_named() {
        let mut events = chain(5);
        events[2].target = "thing/other".into();
        assert_eq!(verify(&events).map_err(|b| b.seq), Err(3));
    }

    #[test]
    fn a_removed_event_is_named() {
        let mut events = chain(5);
        events.remove(1);
        assert_eq!(verify(&events).map_err(|b| b.seq), Err(3));
    }

    #[test]
    fn a_rehashed_event_still_breaks_the_link_to_its_successor() {
        let mut events = chain(5);
        events[2].target = "thing/other".into();
        events[2].hash = events[2].compute_hash();
        assert_eq!(verify(&events).map_err(|b| b.seq), Err(4));
    }
}
