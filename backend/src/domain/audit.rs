//! The audit log: append-only and tamper-evident. Each event carries an HMAC-SHA256 of its
//! own canonical form, keyed with the chain key (which lives outside the database), and the
//! hash of the event before it. Altering, inserting or removing a stored event breaks the
//! chain where it happened, and someone who can write to the database but does not hold the
//! key cannot recompute the hashes after an edit. Removing the newest events leaves a shorter
//! but well-formed chain: signed checkpoints (head sequence and hash, logged on an interval)
//! catch that. Events never carry secrets or key material: `detail` holds ids, names and
//! outcomes only.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::domain::identity::Caller;
use crate::domain::secrets::constant_time_eq;

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One key of the chain: 32 secret bytes and a short public id (the first 16 hex digits of
/// its SHA-256) that each event names, so keys can be rotated and old events still verify.
#[derive(Clone)]
pub struct ChainKey {
    id: String,
    secret: Zeroizing<[u8; 32]>,
}

impl ChainKey {
    pub fn new(secret: [u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(secret)[..8]);
        Self {
            id,
            secret: Zeroizing::new(secret),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, message: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Every chain key still needed to verify the log; the last one seals new events.
#[derive(Clone, Debug)]
pub struct ChainKeys {
    keys: Vec<ChainKey>,
}

impl ChainKeys {
    /// `None` when there is no key at all.
    pub fn new(keys: Vec<ChainKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    pub fn current(&self) -> &ChainKey {
        // `new` refuses an empty list.
        &self.keys[self.keys.len() - 1]
    }

    pub fn get(&self, id: &str) -> Option<&ChainKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// A checkpoint of the chain's head, signed with the current key.
    pub fn checkpoint(&self, seq: i64, hash: &str, at: DateTime<Utc>) -> Checkpoint {
        let key = self.current();
        let at = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let signature = key.mac(Checkpoint::message(seq, hash, &at).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at,
            key_id: key.id.clone(),
            signature,
        }
    }
}

/// "The chain had `seq` events and the last one hashed to `hash` at `at`", signed. Saved
/// outside the database (the logs), it shows whether the newest events were removed since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at: String,
    pub key_id: String,
    pub signature: String,
}

impl Checkpoint {
    const PREFIX: &str = "cp1";

    fn message(seq: i64, hash: &str, at: &str) -> String {
        format!("cmek-console audit checkpoint\n{seq}\n{hash}\n{at}")
    }

    /// One word to copy: `cp1.<seq>.<hash>.<time>.<key id>.<signature>`.
    pub fn token(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}.{}",
            Self::PREFIX,
            self.seq,
            self.hash,
            self.at,
            self.key_id,
            self.signature
        )
    }

    pub fn parse(token: &str) -> Option<Self> {
        let mut parts = token.trim().splitn(6, '.');
        if parts.next()? != Self::PREFIX {
            return None;
        }
        let seq = parts.next()?.parse().ok()?;
        let hash = parts.next()?.to_owned();
        let at = parts.next()?.to_owned();
        let key_id = parts.next()?.to_owned();
        let signature = parts.next()?.to_owned();
        Some(Self {
            seq,
            hash,
            at,
            key_id,
            signature,
        })
    }

    /// Whether one of `keys` signed it.
    pub fn is_signed_by(&self, keys: &ChainKeys) -> bool {
        keys.get(&self.key_id).is_some_and(|key| {
            let expected = key.mac(Self::message(self.seq, &self.hash, &self.at).as_bytes());
            constant_time_eq(expected.as_bytes(), self.signature.as_bytes())
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    /// What the event tells the organization's webhooks, if anything: queued with it.
    pub notice: Option<crate::domain::notice::Notice>,
    /// The project the event is about, when it is about something in one (`in_project`):
    /// what the audit log's project filter reads.
    pub project: Option<Uuid>,
}

impl AuditDraft {
    /// Alerts the organization's webhooks with `notice` (none for `None`).
    pub fn notifies(mut self, notice: Option<crate::domain::notice::Notice>) -> Self {
        self.notice = notice;
        self
    }

    /// The event of a member's successful sign-in.
    pub(crate) fn signed_in(
        user: &crate::domain::identity::User,
        now: DateTime<Utc>,
        source_ip: Option<String>,
    ) -> Self {
        Self::new(
            user.actor().label(),
            Some(user.organization_id),
            now,
            "session.sign_in",
            format!("user/{}", user.id),
        )
        .from_address(source_ip)
    }

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
            notice: None,
            project: None,
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
            notice: None,
            project: None,
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

    /// Names the project the event concerns (`detail.project_id`, which the audit log's
    /// project filter reads; it is sealed with the rest of the event).
    pub fn in_project(mut self, project_id: Uuid) -> Self {
        self.project = Some(project_id);
        if !self.detail.is_object() {
            self.detail = serde_json::Value::Object(Default::default());
        }
        if let Some(fields) = self.detail.as_object_mut() {
            fields.insert("project_id".into(), serde_json::json!(project_id));
        }
        self
    }

    /// The project the event is about: the one `in_project` named, or the project itself
    /// when it is the target.
    pub fn project_id(&self) -> Option<Uuid> {
        self.project.or_else(|| {
            self.target
                .strip_prefix("project/")
                .and_then(|id| Uuid::parse_str(id).ok())
        })
    }

    /// Gives the draft its place after `prev` (sequence number and hash), sealed with `key`.
    /// The event at `seq` with no place in format 1's chain (closed): its hashes are its
    /// organization's chain's, filled in when it is signed there.
    pub fn unsealed(self, seq: i64) -> AuditEvent {
        AuditEvent {
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
            prev_hash: String::new(),
            hash: String::new(),
            key_id: None,
            chain_seq: None,
            signing_key_id: None,
        }
    }

    pub fn seal(self, seq: i64, prev_hash: &str, key: &ChainKey) -> AuditEvent {
        let mut event = self.unsealed(seq);
        event.prev_hash = prev_hash.to_owned();
        event.key_id = Some(key.id.clone());
        event.hash = event.compute_hash(key);
        event
    }
}

#[derive(Clone, Debug, Serialize)]
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
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    /// The chain key that sealed the event; `None` for events from before the chain was
    /// keyed (plain SHA-256), which the console re-seals once at start.
    pub key_id: Option<String>,
    /// The event's place in its organization's chain (format 2), as exports and verifiers
    /// number it; `None` for the events of format 1's legacy segment. Outside that chain's
    /// hash (`seq` is the install-wide order).
    pub chain_seq: Option<i64>,
    /// The signing key that signed the event in its chain (format 2).
    pub signing_key_id: Option<String>,
}

impl AuditEvent {
    /// HMAC-SHA256 with `key` over the canonical form.
    pub fn compute_hash(&self, key: &ChainKey) -> String {
        key.mac(self.canonical().as_bytes())
    }

    /// The unkeyed SHA-256 that events carried before the chain was keyed.
    pub fn legacy_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }

    /// A JSON array of every field but the hash and the key id.
    fn canonical(&self) -> String {
        serde_json::json!([
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
        ])
        .to_string()
    }
}

/// Where format 1's single chain ended when the organizations' own chains took over: its
/// last event's place and hash, sealed with the chain key (so someone who can write the
/// database but not read the key file cannot move it). `last_seq` 0 with `GENESIS`: closed
/// empty (a new installation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyEnd {
    pub last_seq: i64,
    pub last_hash: String,
    pub key_id: String,
    pub seal: String,
}

impl LegacyEnd {
    fn message(last_seq: i64, last_hash: &str) -> String {
        format!("cmek-console audit legacy end\n{last_seq}\n{last_hash}")
    }

    pub fn sealed(last_seq: i64, last_hash: &str, key: &ChainKey) -> Self {
        Self {
            last_seq,
            last_hash: last_hash.to_owned(),
            key_id: key.id.clone(),
            seal: key.mac(Self::message(last_seq, last_hash).as_bytes()),
        }
    }

    /// Whether one of `keys` sealed it as it reads now.
    pub fn is_sealed_by(&self, keys: &ChainKeys) -> bool {
        keys.get(&self.key_id).is_some_and(|key| {
            let expected = key.mac(Self::message(self.last_seq, &self.last_hash).as_bytes());
            constant_time_eq(expected.as_bytes(), self.seal.as_bytes())
        })
    }
}

/// A stored event of an organization's chain (format 2) as read back: the event, or a row
/// whose fields no longer read (which only tampering produces).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // read in batches; nearly every row is an event
pub enum ChainRead {
    Event(crate::crypto::audit_chain::ChainEvent),
    Unreadable {
        chain: String,
        seq: Option<u64>,
        reason: String,
    },
}

impl ChainRead {
    /// Its chain and place.
    pub fn place(&self) -> (&str, Option<u64>) {
        match self {
            ChainRead::Event(e) => (&e.chain, Some(e.seq)),
            ChainRead::Unreadable { chain, seq, .. } => (chain, *seq),
        }
    }
}

/// Where the chain breaks first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// A stored row of the chain as the store read it back: an event, or a row whose fields no
/// longer parse (which only tampering produces).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // read in batches of 500; nearly every row is an event
pub enum ChainRow {
    Event(AuditEvent),
    Unreadable { seq: i64, reason: String },
}

/// Walks rows in `seq` order and reports the first that does not follow from the one before.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    keys: &'k ChainKeys,
    expected_seq: i64,
    prev_hash: String,
    pub checked: u64,
}

impl<'k> ChainVerifier<'k> {
    pub fn new(keys: &'k ChainKeys) -> Self {
        Self {
            keys,
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
            checked: 0,
        }
    }

    pub fn next_seq(&self) -> i64 {
        self.expected_seq
    }

    /// The hash of the last event checked (the genesis value before any).
    pub fn head_hash(&self) -> &str {
        &self.prev_hash
    }

    pub fn check(&mut self, row: &ChainRow) -> Result<(), ChainBreak> {
        let event = match row {
            ChainRow::Event(event) => event,
            ChainRow::Unreadable { seq, reason } => {
                return Err(ChainBreak {
                    seq: *seq,
                    reason: format!("the row cannot be read back ({reason}): altered"),
                });
            }
        };
        let broken = |reason: String| ChainBreak {
            seq: event.seq,
            reason,
        };
        if event.seq < 1 {
            return Err(broken(
                "sequence numbers start at 1: this row was inserted outside the chain".into(),
            ));
        }
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
        let key = match &event.key_id {
            None => {
                return Err(broken(
                    "it is not sealed with a chain key (an unkeyed hash)".into(),
                ));
            }
            Some(id) => self.keys.get(id).ok_or_else(|| {
                broken(format!(
                    "it is sealed with chain key {id}, which is not in the key file"
                ))
            })?,
        };
        if event.compute_hash(key) != event.hash {
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
    /// Part of the actor's label (`user:<id> (<name>)`, `api_key:<id> (<name>)`, `system`).
    pub actor: Option<String>,
    /// Events about the project or anything in it.
    pub project_id: Option<Uuid>,
    pub outcome: Option<Outcome>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// What the audit page says about the chain: verified whole, or where it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainStatus {
    pub head_seq: i64,
    pub broken: Option<ChainBreak>,
    pub checked_at: DateTime<Utc>,
}

/// Result of `Audit::verify_audit_chain`.
pub enum Verification {
    /// Every row verified; the checkpoint of the head, to keep for the next verification.
    Intact {
        events: u64,
        checkpoint: Checkpoint,
    },
    Broken(ChainBreak),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ChainKeys {
        ChainKeys::new(vec![ChainKey::new([7; 32])]).unwrap()
    }

    fn chain(n: i64) -> Vec<ChainRow> {
        let keys = keys();
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
                    notice: None,
                    project: None,
                }
                .seal(seq, &prev, keys.current());
                prev = event.hash.clone();
                ChainRow::Event(event)
            })
            .collect()
    }

    fn event(row: &mut ChainRow) -> &mut AuditEvent {
        match row {
            ChainRow::Event(e) => e,
            ChainRow::Unreadable { .. } => unreachable!(),
        }
    }

    fn verify(rows: &[ChainRow]) -> Result<(), ChainBreak> {
        let keys = keys();
        let mut v = ChainVerifier::new(&keys);
        rows.iter().try_for_each(|e| v.check(e))
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(()));
    }

    #[test]
    fn an_altered_event_is_named() {
        let mut rows = chain(5);
        event(&mut rows[2]).target = "thing/other".into();
        assert_eq!(verify(&rows).map_err(|b| b.seq), Err(3));
    }

    #[test]
    fn a_removed_event_is_named() {
        let mut rows = chain(5);
        rows.remove(1);
        assert_eq!(verify(&rows).map_err(|b| b.seq), Err(3));
    }

    #[test]
    fn an_event_rehashed_without_the_key_is_refused() {
        let mut rows = chain(5);
        let e = event(&mut rows[2]);
        e.target = "thing/other".into();
        e.hash = e.legacy_hash();
        assert_eq!(verify(&rows).map_err(|b| b.seq), Err(3));
    }

    #[test]
    fn an_event_resealed_with_another_key_is_refused() {
        let mut rows = chain(3);
        let forger = ChainKey::new([9; 32]);
        let e = event(&mut rows[2]);
        e.hash = e.compute_hash(&forger);
        assert!(verify(&rows).is_err());
        let e = event(&mut rows[2]);
        e.key_id = Some(forger.id().to_owned());
        assert!(
            verify(&rows).is_err(),
            "naming an unknown key does not help"
        );
    }

    #[test]
    fn a_row_planted_before_the_chain_is_refused() {
        let mut rows = chain(2);
        let mut planted = match &rows[0] {
            ChainRow::Event(e) => e.clone(),
            ChainRow::Unreadable { .. } => unreachable!(),
        };
        planted.seq = 0;
        rows.insert(0, ChainRow::Event(planted));
        assert_eq!(verify(&rows).map_err(|b| b.seq), Err(0));
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_forged_one_does_not_verify() {
        let keys = keys();
        let cp = keys.checkpoint(12, "abc", Utc::now());
        let parsed = Checkpoint::parse(&cp.token()).unwrap();
        assert_eq!(parsed, cp);
        assert!(parsed.is_signed_by(&keys));
        let forged = Checkpoint { seq: 3, ..parsed };
        assert!(!forged.is_signed_by(&keys));
    }
}
