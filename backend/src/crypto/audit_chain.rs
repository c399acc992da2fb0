//! The audit log's format 2, which a customer can verify on their own: one hash chain per
//! organization (and one, `platform`, for events of none), each event's SHA-256 hash signed
//! with the console's Ed25519 key, and signed checkpoints of a chain's head. Everything a
//! verifier needs is public: the hashes are plain SHA-256, the public keys are published
//! with the time each was valid for. `docs/audit-export.md` gives every byte, and
//! `tools/verify_audit_export.py` verifies an export with nothing but Python's
//! `cryptography` package.
//!
//! What it catches, for someone who can write the database but does not hold the signing
//! key: a modified event (its hash or signature no longer matches), an inserted, removed or
//! reordered one (the sequence numbers or the `prev_hash` links break), a rewritten chain (the
//! signatures), and a truncated one up to the latest checkpoint the verifier holds. A retired
//! key signs nothing after its retirement: events carry `signed_at`, which never goes back
//! along a chain, and a key is accepted only inside its validity.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The export's `format`.
pub const FORMAT: &str = "cmek-console-audit/2";
/// The chain of events that belong to no organization.
pub const PLATFORM_CHAIN: &str = "platform";
/// The `prev_hash` of a chain's first event when nothing came before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const EVENT_DOMAIN: &str = "cmek-console audit event v2\n";
const SIGNATURE_DOMAIN: &str = "cmek-console audit signature v2\n";
const CHECKPOINT_DOMAIN: &str = "cmek-console audit checkpoint v2\n";

/// A time as the format writes it: RFC 3339, UTC, six fractional digits, `Z`.
pub fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A key's id: the first 16 hex digits of the SHA-256 of its 32-byte public key.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// The console's signing key (Ed25519). Its seed lives outside the database.
pub struct SigningKey {
    id: String,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    pub fn from_seed(seed: &[u8; 32]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
        Some(Self {
            id: key_id(pair.public_key().as_ref()),
            pair,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key, base64 (standard, padded) of its 32 bytes.
    pub fn public_key(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.pair.sign(message).as_ref())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Every signing key with when it became valid, oldest first; each signs from its own time
/// until the next one's, when it retires. A key may be valid from a time still to come (a
/// rotation scheduled ahead, so every instance holds the key before it signs).
#[derive(Debug, Default)]
pub struct SigningKeys {
    keys: Vec<(DateTime<Utc>, SigningKey)>,
}

impl SigningKeys {
    pub fn new(keys: Vec<(DateTime<Utc>, SigningKey)>) -> Self {
        Self { keys }
    }

    /// No key (a console that has not made its key file yet publishes none).
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The newest key of the file (valid now, or from a time to come).
    pub fn current(&self) -> Option<&SigningKey> {
        self.keys.last().map(|(_, key)| key)
    }

    /// When the newest key becomes valid.
    pub fn newest_from(&self) -> Option<DateTime<Utc>> {
        self.keys.last().map(|(from, _)| *from)
    }

    /// The key that signs at `at` (the newest valid by then) and the time to sign at: `at`,
    /// or, before the first key was valid, when it became valid (nothing is signed before).
    pub fn signer_at(&self, at: DateTime<Utc>) -> Option<(&SigningKey, DateTime<Utc>)> {
        match self.keys.iter().rev().find(|(from, _)| *from <= at) {
            Some((_, key)) => Some((key, at)),
            None => self.keys.first().map(|(from, key)| (key, *from)),
        }
    }

    /// Whether these keys are `older`'s and then maybe more: each of `older`'s keys in its
    /// place, with the same time. A running console takes only such a file: a key it signed
    /// with must stay published.
    pub fn extends(&self, older: &SigningKeys) -> bool {
        self.keys.len() >= older.keys.len()
            && self
                .keys
                .iter()
                .zip(&older.keys)
                .all(|((from, key), (old_from, old_key))| from == old_from && key.id == old_key.id)
    }

    /// The public keys, each valid from its own time until the next key's.
    pub fn published(&self) -> Vec<PublishedKey> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, (from, key))| {
                PublishedKey::of(key, *from, self.keys.get(i + 1).map(|(next, _)| *next))
            })
            .collect()
    }
}

/// The signing keys a running console holds, shared by its writers and its published list;
/// replaced as a whole when the key file grows (a rotation), so each write signs with one
/// consistent set.
#[derive(Clone, Debug, Default)]
pub struct SigningKeyRing(std::sync::Arc<std::sync::RwLock<std::sync::Arc<SigningKeys>>>);

impl SigningKeyRing {
    pub fn new(keys: SigningKeys) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(keys),
        )))
    }

    /// The keys as they are now.
    pub fn get(&self) -> std::sync::Arc<SigningKeys> {
        match self.0.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Takes `keys` in place of the ones held, if they extend them; false (and nothing
    /// changed) if not.
    pub fn replace(&self, keys: SigningKeys) -> bool {
        let mut held = match self.0.write() {
            Ok(held) => held,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !keys.extends(&held) {
            return false;
        }
        *held = std::sync::Arc::new(keys);
        true
    }
}

/// A field that must be present, `null` or a value (serde takes a missing `Option` as
/// `None` unless it goes through a function of its own).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// A public key as published (`GET /api/v1/audit/signing-keys`): valid from `valid_from`,
/// and until `retired_at` once a newer key took over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    pub key_id: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    pub public_key: String,
    pub valid_from: String,
    /// Written as `null` while the key is current, never left out: a key without it is
    /// refused (as the Python verifier does).
    #[serde(deserialize_with = "present")]
    pub retired_at: Option<String>,
    /// The places of one chain (the organization's that fetched the keys) the key signed;
    /// absent when not known. A verifier refuses an event of that chain signed by the key,
    /// once retired, outside them: a retired key that leaked cannot extend the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedRange>,
}

/// The first and last places of `chain` a key signed; both 0 when it signed none of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRange {
    pub chain: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl PublishedKey {
    /// What makes this key unusable, if anything: it is not Ed25519, its public key is not
    /// 32 bytes of base64, its id is not its public key's (the first 16 hex digits of the
    /// key's SHA-256), or its times are not in the format's form.
    pub fn problem(&self) -> Option<String> {
        let id = &self.key_id;
        if self.algorithm != "Ed25519" {
            return Some(format!("key {id}: not an Ed25519 key"));
        }
        match B64.decode(&self.public_key) {
            Ok(raw) if raw.len() == 32 => {
                if key_id(&raw) != *id {
                    return Some(format!("key {id}: its id is not its public key's"));
                }
            }
            _ => {
                return Some(format!(
                    "key {id}: its public key is not 32 bytes of base64"
                ));
            }
        }
        if !is_time_text(&self.valid_from)
            || self.retired_at.as_deref().is_some_and(|r| !is_time_text(r))
        {
            return Some(format!("key {id}: its times are not in the format's form"));
        }
        None
    }

    /// Whether the key may have signed place `seq` of `chain`: always, unless it is retired
    /// and its published range of that chain leaves `seq` out.
    fn may_sign(&self, chain: &str, seq: u64) -> bool {
        match (&self.retired_at, &self.signed) {
            (Some(_), Some(range)) if range.chain == chain => {
                range.first_seq >= 1 && range.first_seq <= seq && seq <= range.last_seq
            }
            _ => true,
        }
    }

    pub fn of(
        key: &SigningKey,
        valid_from: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            key_id: key.id.clone(),
            algorithm: "Ed25519".into(),
            public_key: key.public_key(),
            valid_from: time_text(valid_from),
            retired_at: retired_at.map(time_text),
            signed: None,
        }
    }

    /// Whether the key could sign at `at` (a time in the format's form).
    fn valid_at(&self, at: &str) -> bool {
        // The format's times compare as text: same width, same zone.
        self.valid_from.as_str() <= at && self.retired_at.as_deref().is_none_or(|r| at < r)
    }

    fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let (Ok(public), Ok(signature)) = (B64.decode(&self.public_key), B64.decode(signature))
        else {
            return false;
        };
        if self.algorithm != "Ed25519" {
            return false;
        }
        key_id(&public) == self.key_id
            && UnparsedPublicKey::new(&ED25519, &public)
                .verify(message, &signature)
                .is_ok()
    }
}

/// What an event says, before it has a place in a chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    pub id: String,
    pub occurred_at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_ip: Option<String>,
    /// Ids, names and outcomes; numbers in it are integers (see `integers_only`).
    pub detail: Value,
}

/// An event in its chain, as stored and as exported. Read strictly: exactly its fields, each
/// in its one form (see `WireEvent`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireEvent")]
pub struct ChainEvent {
    pub chain: String,
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
    /// When the console signed it; never earlier than the event before it in the chain.
    pub signed_at: String,
    pub prev_hash: String,
    pub hash: String,
    pub key_id: String,
    pub signature: String,
}

/// An event as read: every field named, none unknown (an extra field would be unsigned).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    chain: String,
    seq: u64,
    id: String,
    occurred_at: String,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    source_ip: Option<String>,
    detail: StrictValue,
    signed_at: String,
    prev_hash: String,
    hash: String,
    key_id: String,
    signature: String,
}

impl TryFrom<WireEvent> for ChainEvent {
    type Error = String;

    fn try_from(w: WireEvent) -> Result<Self, String> {
        let at = |what: &str| format!("event {}: {what}", w.seq);
        if !is_hex(&w.prev_hash, 64) || !is_hex(&w.hash, 64) {
            return Err(at("hashes are 64 lowercase hex digits"));
        }
        if !is_hex(&w.key_id, 16) {
            return Err(at("key_id is 16 lowercase hex digits"));
        }
        if !is_time_text(&w.occurred_at) || !is_time_text(&w.signed_at) {
            return Err(at(
                "times are RFC 3339 UTC with six fractional digits and Z",
            ));
        }
        let detail = w.detail.0;
        if !only_exact_integers(&detail) {
            return Err(at(
                "detail holds a number that is not an integer within ±(2^53 - 1)",
            ));
        }
        Ok(Self {
            chain: w.chain,
            seq: w.seq,
            body: EventBody {
                id: w.id,
                occurred_at: w.occurred_at,
                actor: w.actor,
                action: w.action,
                target: w.target,
                outcome: w.outcome,
                source_ip: w.source_ip,
                detail,
            },
            signed_at: w.signed_at,
            prev_hash: w.prev_hash,
            hash: w.hash,
            key_id: w.key_id,
            signature: w.signature,
        })
    }
}

/// A JSON value read with no object holding a key twice: most readers keep the last of two,
/// some the first, so such a file could be shown one way and verified another.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        struct Strict;
        impl<'de> Visitor<'de> for Strict {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(StrictValue(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let StrictValue(value) = map.next_value()?;
                    if object.insert(key.clone(), value).is_some() {
                        return Err(A::Error::custom(format!(
                            "the key {key:?} appears twice in one object"
                        )));
                    }
                }
                Ok(Value::Object(object))
            }
        }
        d.deserialize_any(Strict).map(StrictValue)
    }
}

/// `value` as canonical JSON (see `canonical_json`).
pub fn canonical_text(value: &Value) -> String {
    let mut out = String::new();
    canonical_json(value, &mut out);
    out
}

/// Writes `value` as canonical JSON: object keys sorted (by code point), no whitespace,
/// strings escaped as JSON requires and nothing more, non-ASCII as UTF-8.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The integers every JSON library reads exactly: within ±(2^53 - 1).
const MAX_EXACT: i64 = (1 << 53) - 1;

fn exact_integer(n: &serde_json::Number) -> bool {
    n.as_i64()
        .is_some_and(|i| (-MAX_EXACT..=MAX_EXACT).contains(&i))
}

/// Whether a value holds only what `integers_only` leaves (what a verifier accepts).
fn only_exact_integers(value: &Value) -> bool {
    match value {
        Value::Number(n) => exact_integer(n),
        Value::Array(items) => items.iter().all(only_exact_integers),
        Value::Object(map) => map.values().all(only_exact_integers),
        _ => true,
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A time in the format's one form (which is what lets times compare as text).
pub fn is_time_text(text: &str) -> bool {
    DateTime::parse_from_rfc3339(text).is_ok_and(|t| time_text(t.with_timezone(&Utc)) == text)
}

/// A detail with every non-integer number, and every integer beyond ±(2^53 - 1), made a
/// string, so that any JSON library writes it
/// the same way (integers are written alike everywhere; fractions are not).
pub fn integers_only(value: Value) -> Value {
    match value {
        Value::Number(n) if !exact_integer(&n) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(integers_only).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integers_only(v)))
                .collect(),
        ),
        other => other,
    }
}

impl ChainEvent {
    /// The bytes whose SHA-256 is the event's hash.
    pub fn canonical(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "action": self.body.action,
            "actor": self.body.actor,
            "detail": self.body.detail,
            "id": self.body.id,
            "occurred_at": self.body.occurred_at,
            "outcome": self.body.outcome,
            "signed_at": self.signed_at,
            "source_ip": self.body.source_ip,
            "target": self.body.target,
        });
        let mut text = format!(
            "{EVENT_DOMAIN}{}\n{}\n{}\n",
            self.chain, self.seq, self.prev_hash
        );
        canonical_json(&body, &mut text);
        text.into_bytes()
    }

    pub fn compute_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }

    fn signed_message(hash: &str) -> Vec<u8> {
        format!("{SIGNATURE_DOMAIN}{hash}").into_bytes()
    }

    /// Gives `body` its place in `chain` after `prev_hash`, at `signed_at`, signed by `key`.
    pub fn seal(
        chain: &str,
        seq: u64,
        prev_hash: &str,
        mut body: EventBody,
        signed_at: DateTime<Utc>,
        key: &SigningKey,
    ) -> Self {
        body.detail = integers_only(body.detail);
        let mut event = Self {
            chain: chain.to_owned(),
            seq,
            body,
            signed_at: time_text(signed_at),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
            key_id: key.id.clone(),
            signature: String::new(),
        };
        event.hash = event.compute_hash();
        event.signature = key.sign(&Self::signed_message(&event.hash));
        event
    }
}

/// "Chain `chain` had `seq` events, the last hashing to `hash`, at `at`", signed: kept by the
/// customer (delivered to their webhooks), it shows any later rewrite or truncation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    pub at: String,
    pub key_id: String,
    pub signature: String,
}

impl Checkpoint {
    fn message(chain: &str, seq: u64, hash: &str, at: &str) -> Vec<u8> {
        format!("{CHECKPOINT_DOMAIN}{chain}\n{seq}\n{hash}\n{at}").into_bytes()
    }

    pub fn sign(chain: &str, seq: u64, hash: &str, at: DateTime<Utc>, key: &SigningKey) -> Self {
        let at = time_text(at);
        Self {
            signature: key.sign(&Self::message(chain, seq, hash, &at)),
            chain: chain.to_owned(),
            seq,
            hash: hash.to_owned(),
            at,
            key_id: key.id.clone(),
        }
    }

    /// Whether a published key, valid at the checkpoint's time, signed it.
    pub fn is_signed(&self, keys: &[PublishedKey]) -> bool {
        keys.iter().any(|k| {
            k.key_id == self.key_id
                && k.valid_at(&self.at)
                && k.verifies(
                    &Self::message(&self.chain, self.seq, &self.hash, &self.at),
                    &self.signature,
                )
        })
    }
}

/// One organization's export: the latest checkpoint, then its chain's events in order (the
/// fields in this order, so a verifier reading the file as it goes knows the checkpoint
/// before the events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    pub chain: String,
    pub checkpoint: Option<Checkpoint>,
    pub items: Vec<ChainEvent>,
}

/// What a verification found intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub head_hash: Option<String>,
    /// The checkpoints that matched the events (their `seq`).
    pub checkpoints: Vec<u64>,
    /// Checkpoints of events before a partial export's first one, which it cannot check.
    pub unchecked: Vec<u64>,
}

/// Where and why a verification failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", seq.map(|s| format!("event {s}: ")).unwrap_or_default())]
pub struct Broken {
    pub seq: Option<u64>,
    pub reason: String,
}

fn broken(seq: Option<u64>, reason: impl Into<String>) -> Broken {
    Broken {
        seq,
        reason: reason.into(),
    }
}

/// What part of a chain an export holds, which decides what its verification may expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Extent {
    /// The whole chain, from its first event.
    #[default]
    Whole,
    /// A run of it (a time range): it may start after the chain's first event.
    Part,
    /// The events a filter chose (an action, an actor...): each event is checked on its own
    /// and in order, but events may be missing between them, so a checkpoint can only be
    /// matched where the export holds its event (or the one after it).
    Selection,
}

impl Extent {
    /// Its name in the `x-audit-export-extent` header and in export file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Extent::Whole => "whole",
            Extent::Part => "part",
            Extent::Selection => "selection",
        }
    }
}

/// A signed checkpoint not yet matched: the hash it names and when it was signed.
type Pending = std::collections::HashMap<u64, Vec<(String, String)>>;

/// Checks a chain's events one at a time (so an export of any length takes constant memory),
/// then the checkpoints against them.
pub struct ChainVerifier<'k> {
    chain: String,
    keys: &'k [PublishedKey],
    /// What part of the chain the export holds.
    extent: Extent,
    last: Option<(u64, String, String)>,
    first_seq: Option<u64>,
    events: u64,
    pending: Pending,
    matched: Vec<u64>,
    unchecked: Vec<u64>,
}

impl<'k> ChainVerifier<'k> {
    /// `checkpoints`: the export's own and any the customer kept; each must be signed.
    /// A whole export must start at the chain's first event.
    pub fn new(
        chain: &str,
        keys: &'k [PublishedKey],
        checkpoints: &[Checkpoint],
        extent: Extent,
    ) -> Result<Self, Broken> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.key_id == key.key_id) {
                return Err(broken(None, format!("the keys list {} twice", key.key_id)));
            }
            if let Some(problem) = key.problem() {
                return Err(broken(None, problem));
            }
        }
        let mut pending = Pending::new();
        for cp in checkpoints {
            if cp.chain != chain {
                return Err(broken(
                    None,
                    format!("a checkpoint is of chain {}, not {chain}", cp.chain),
                ));
            }
            if !is_hex(&cp.hash, 64) || !is_time_text(&cp.at) || !cp.is_signed(keys) {
                return Err(broken(
                    None,
                    format!(
                        "the checkpoint of seq {} is not signed by a key valid at {}",
                        cp.seq, cp.at
                    ),
                ));
            }
            pending
                .entry(cp.seq)
                .or_default()
                .push((cp.hash.clone(), cp.at.clone()));
        }
        Ok(Self {
            chain: chain.to_owned(),
            keys,
            extent,
            last: None,
            first_seq: None,
            events: 0,
            pending,
            matched: Vec::new(),
            unchecked: Vec::new(),
        })
    }

    pub fn push(&mut self, event: &ChainEvent) -> Result<(), Broken> {
        let at = Some(event.seq);
        if event.chain != self.chain {
            return Err(broken(
                at,
                format!("belongs to chain {}, not {}", event.chain, self.chain),
            ));
        }
        if let Some((seq, hash, signed_at)) = &self.last {
            let gap = self.extent == Extent::Selection && event.seq > seq + 1;
            if event.seq != seq + 1 && !gap {
                return Err(broken(
                    at,
                    format!(
                        "follows event {seq}: an event was removed, inserted or moved{}",
                        if self.extent == Extent::Selection {
                            ""
                        } else {
                            " (an export of some events only verifies with --selection)"
                        }
                    ),
                ));
            }
            if event.signed_at.as_str() < signed_at.as_str() {
                return Err(broken(at, "it was signed before the event before it"));
            }
            if gap {
                let skipped = seq + 1..event.seq;
                self.before(event, skipped)?;
            } else if &event.prev_hash != hash {
                return Err(broken(
                    at,
                    "its prev_hash is not the hash of the event before it",
                ));
            }
        } else {
            self.first(event)?;
        }
        if event.compute_hash() != event.hash {
            return Err(broken(at, "its content does not match its hash"));
        }
        let Some(key) = self.keys.iter().find(|k| k.key_id == event.key_id) else {
            return Err(broken(
                at,
                format!("signed by {}, which is not a published key", event.key_id),
            ));
        };
        if !key.valid_at(&event.signed_at) {
            return Err(broken(
                at,
                format!(
                    "signed at {} by {}, which was not valid then",
                    event.signed_at, key.key_id
                ),
            ));
        }
        if !key.verifies(&ChainEvent::signed_message(&event.hash), &event.signature) {
            return Err(broken(at, "its signature does not verify"));
        }
        if !key.may_sign(&self.chain, event.seq) {
            let range = key
                .signed
                .as_ref()
                .map_or((0, 0), |r| (r.first_seq, r.last_seq));
            return Err(broken(
                at,
                format!(
                    "signed by {}, which retired having signed events {} to {} of this chain only: someone holding the retired key made it",
                    key.key_id, range.0, range.1
                ),
            ));
        }
        if let Some(named) = self.pending.remove(&event.seq) {
            for (hash, cp_at) in named {
                if hash != event.hash {
                    return Err(broken(
                        at,
                        "a signed checkpoint names another hash here: history was rewritten",
                    ));
                }
                if cp_at < event.signed_at {
                    return Err(broken(at, "a checkpoint of it was signed before it was"));
                }
            }
            self.matched.push(event.seq);
        }
        self.first_seq.get_or_insert(event.seq);
        self.events += 1;
        self.last = Some((event.seq, event.hash.clone(), event.signed_at.clone()));
        Ok(())
    }

    /// The first event: the chain's own first unless the export is a part or a selection.
    fn first(&mut self, event: &ChainEvent) -> Result<(), Broken> {
        let at = Some(event.seq);
        if event.seq == 0 || (self.extent == Extent::Whole && event.seq != 1) {
            return Err(broken(
                at,
                "the export starts here, not at the chain's first event (1): events were removed from its start, or it is a part of the chain (verify a part with --partial)",
            ));
        }
        self.before(event, 0..event.seq)
    }

    /// Events missing before `event` (a part's start, a selection's gap): a checkpoint of the
    /// event just before it names its `prev_hash`; those of the others cannot be checked.
    fn before(&mut self, event: &ChainEvent, missing: std::ops::Range<u64>) -> Result<(), Broken> {
        if let Some(named) = self.pending.remove(&(event.seq - 1)) {
            if named.iter().any(|(hash, _)| *hash != event.prev_hash) {
                return Err(broken(
                    Some(event.seq),
                    "a signed checkpoint of the event before it names another hash: history was rewritten",
                ));
            }
            self.matched.push(event.seq - 1);
        }
        let mut skipped: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|s| missing.contains(s))
            .collect();
        skipped.sort_unstable();
        for seq in &skipped {
            self.pending.remove(seq);
        }
        self.unchecked.extend(skipped);
        Ok(())
    }

    /// Ends the check: a checkpoint beyond the last event means events were removed from the
    /// end.
    /// A part or a selection cannot tell a removed event from one outside it: its
    /// checkpoints beyond the last event are reported as unchecked.
    pub fn finish(mut self) -> Result<Verified, Broken> {
        let last_seq = self.last.as_ref().map(|(seq, _, _)| *seq);
        if self.extent != Extent::Whole {
            let mut beyond: Vec<u64> = self.pending.drain().map(|(seq, _)| seq).collect();
            beyond.sort_unstable();
            self.unchecked.extend(beyond);
        }
        if let Some(seq) = self.pending.keys().copied().max() {
            return Err(broken(
                None,
                format!(
                    "a signed checkpoint covers event {seq}, but the chain ends at {}: events were removed from its end",
                    last_seq.map_or("nothing".into(), |s| s.to_string())
                ),
            ));
        }
        Ok(Verified {
            events: self.events,
            first_seq: self.first_seq,
            last_seq,
            head_hash: self.last.map(|(_, hash, _)| hash),
            checkpoints: self.matched,
            unchecked: self.unchecked,
        })
    }
}

/// Verifies an export with the published keys and any checkpoints kept elsewhere (the
/// export's own checkpoint proves nothing against whoever made the export: keep yours).
pub fn verify_export(
    export: &Export,
    keys: &[PublishedKey],
    kept: &[Checkpoint],
    extent: Extent,
) -> Result<Verified, Broken> {
    if export.format != FORMAT {
        return Err(broken(
            None,
            format!("format {:?} is not {FORMAT}", export.format),
        ));
    }
    let checkpoints: Vec<Checkpoint> = export.checkpoint.iter().chain(kept).cloned().collect();
    let mut verifier = ChainVerifier::new(&export.chain, keys, &checkpoints, extent)?;
    for event in &export.items {
        verifier.push(event)?;
    }
    verifier.finish()
}

/// Why an export read from a file did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Broken(Broken),
    #[error("the export could not be read: {0}")]
    Unreadable(String),
}

/// Verifies an export read from `reader` one event at a time: memory stays the same for any
/// number of events. The export has exactly `format`, `chain`, `checkpoint` and `items`, in
/// that order, and nothing after it: a file two readers could read differently is refused.
pub fn verify_export_reader(
    reader: impl std::io::Read,
    keys: &[PublishedKey],
    kept: &[Checkpoint],
    extent: Extent,
) -> Result<Verified, ExportError> {
    use serde::de::DeserializeSeed;
    let found = std::cell::RefCell::new(None);
    let left = std::cell::Cell::new(MAX_EVENT_CHARS);
    let seed = streaming::ExportSeed {
        keys,
        kept,
        extent,
        broken: &found,
        left: &left,
    };
    let mut de = serde_json::Deserializer::from_reader(streaming::Budgeted {
        reader: std::io::BufReader::new(reader),
        left: &left,
    });
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (result, found.into_inner()) {
        (Ok(verified), _) => Ok(verified),
        (Err(_), Some(broken)) => Err(ExportError::Broken(broken)),
        (Err(e), None) => Err(ExportError::Unreadable(e.to_string())),
    }
}

/// The longest event either verifier reads, in characters: its JSON text (an item, or a
/// field before the items) or its CSV row. The console writes none near it; a longer one is
/// refused as unreadable, so memory stays bounded whatever the file holds. The Python
/// verifier has the same limit.
pub const MAX_EVENT_CHARS: usize = 1 << 20;

/// The CSV form's columns, in their one order (docs/audit-export.md).
pub const CSV_COLUMNS: [&str; 16] = [
    "record",
    "chain",
    "seq",
    "id",
    "occurred_at",
    "actor",
    "action",
    "target",
    "outcome",
    "source_ip",
    "detail",
    "signed_at",
    "prev_hash",
    "hash",
    "key_id",
    "signature",
];

/// Verifies an export in its CSV form, read a row at a time: the header, an optional
/// `checkpoint` row, then one `event` row per event. A field that starts with `'` had one put
/// in front of it (so no spreadsheet runs it as a formula): it is taken off.
pub fn verify_csv_reader(
    reader: impl std::io::BufRead,
    keys: &[PublishedKey],
    kept: &[Checkpoint],
    extent: Extent,
) -> Result<Verified, ExportError> {
    let unreadable = |why: String| ExportError::Unreadable(why);
    let mut rows = csv::Rows::new(reader);
    let header = rows.next_row().map_err(unreadable)?;
    if header.as_deref() != Some(&CSV_COLUMNS.map(str::to_owned)[..]) {
        return Err(unreadable(format!(
            "the CSV's columns are {}",
            CSV_COLUMNS.join(",")
        )));
    }
    let mut verifier: Option<ChainVerifier<'_>> = None;
    let start = |chain: &str, own: Option<Checkpoint>| {
        let checkpoints: Vec<Checkpoint> = own.into_iter().chain(kept.iter().cloned()).collect();
        ChainVerifier::new(chain, keys, &checkpoints, extent).map_err(ExportError::Broken)
    };
    while let Some(row) = rows.next_row().map_err(unreadable)? {
        if row.len() != CSV_COLUMNS.len() {
            return Err(unreadable(format!(
                "a row has {} fields, not {}",
                row.len(),
                CSV_COLUMNS.len()
            )));
        }
        let row: Vec<&str> = row
            .iter()
            .map(|f| f.strip_prefix('\'').unwrap_or(f))
            .collect();
        let field = |name: &str| row[CSV_COLUMNS.iter().position(|c| *c == name).unwrap_or(0)];
        let seq = field("seq");
        if seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
            || (seq.len() > 1 && seq.starts_with('0'))
        {
            return Err(unreadable(format!(
                "a row's seq {seq:?} is not a whole number"
            )));
        }
        let seq: u64 = seq
            .parse()
            .map_err(|_| unreadable(format!("a row's seq {seq} is too large")))?;
        match field("record") {
            "checkpoint" => {
                let empty = ["id", "occurred_at", "actor", "action", "target", "outcome"]
                    .into_iter()
                    .chain(["source_ip", "detail", "prev_hash"])
                    .all(|c| field(c).is_empty());
                if verifier.is_some() || !empty {
                    return Err(unreadable(
                        "the checkpoint row comes first, once, with only chain, seq, signed_at (its time), hash, key_id and signature".into(),
                    ));
                }
                let cp = Checkpoint {
                    chain: field("chain").to_owned(),
                    seq,
                    hash: field("hash").to_owned(),
                    at: field("signed_at").to_owned(),
                    key_id: field("key_id").to_owned(),
                    signature: field("signature").to_owned(),
                };
                verifier = Some(start(&cp.chain.clone(), Some(cp))?);
            }
            "event" => {
                let detail: StrictValue = serde_json::from_str(field("detail"))
                    .map_err(|e| unreadable(format!("event {seq}: detail: {e}")))?;
                let source_ip = match field("source_ip") {
                    "" => Value::Null,
                    ip => Value::String(ip.to_owned()),
                };
                let mut object = serde_json::Map::new();
                for name in CSV_COLUMNS.iter().skip(1) {
                    object.insert((*name).to_owned(), Value::String(field(name).to_owned()));
                }
                object.insert("seq".into(), Value::from(seq));
                object.insert("source_ip".into(), source_ip);
                object.insert("detail".into(), detail.0);
                let event: ChainEvent = serde_json::from_value(Value::Object(object))
                    .map_err(|e| unreadable(e.to_string()))?;
                if verifier.is_none() {
                    verifier = Some(start(&event.chain, None)?);
                }
                if let Some(v) = verifier.as_mut() {
                    v.push(&event).map_err(ExportError::Broken)?;
                }
            }
            other => {
                return Err(unreadable(format!(
                    "a row's record is checkpoint or event, not {other:?}"
                )));
            }
        }
    }
    match verifier {
        Some(v) => v.finish().map_err(ExportError::Broken),
        None => Err(unreadable(
            "the CSV holds no record: nothing says which chain it is".into(),
        )),
    }
}

/// Just enough of RFC 4180 to read the export back: fields separated by commas, records by
/// CRLF or LF, a quoted field may hold commas, quotes (doubled) and line breaks.
mod csv {
    use super::{CSV_COLUMNS, MAX_EVENT_CHARS};

    pub struct Rows<R> {
        reader: R,
    }

    impl<R: std::io::BufRead> Rows<R> {
        pub fn new(reader: R) -> Self {
            Self { reader }
        }

        /// The next row's fields, or `None` at the end.
        pub fn next_row(&mut self) -> Result<Option<Vec<String>>, String> {
            let mut fields = Vec::new();
            let mut field = Vec::new();
            // The row's characters as written, its line break included (UTF-8 continuation
            // bytes are not counted).
            let (mut quoted, mut in_quotes, mut any, mut chars) = (false, false, false, 0usize);
            let mut byte = [0u8; 1];
            loop {
                let n = self.reader.read(&mut byte).map_err(|e| e.to_string())?;
                if n == 0 {
                    if in_quotes {
                        return Err("the file ends inside a quoted field".into());
                    }
                    if !any {
                        return Ok(None);
                    }
                    return Err("the last row does not end with a line break".into());
                }
                any = true;
                let b = byte[0];
                if b & 0xC0 != 0x80 {
                    chars += 1;
                    if chars > MAX_EVENT_CHARS {
                        return Err(format!("a row is longer than {MAX_EVENT_CHARS} characters"));
                    }
                }
                if in_quotes {
                    if b == b'"' {
                        in_quotes = false;
                    } else {
                        field.push(b);
                    }
                    continue;
                }
                match b {
                    b'"' if field.is_empty() && !quoted => {
                        quoted = true;
                        in_quotes = true;
                    }
                    // A doubled quote inside a quoted field.
                    b'"' if quoted => {
                        field.push(b'"');
                        in_quotes = true;
                    }
                    b',' | b'\n' => {
                        if field.last() == Some(&b'\r') && b == b'\n' && !quoted {
                            field.pop();
                        }
                        let text = String::from_utf8(std::mem::take(&mut field))
                            .map_err(|_| "a field is not UTF-8".to_owned())?;
                        fields.push(text);
                        if fields.len() > CSV_COLUMNS.len() {
                            return Err(format!(
                                "a row has more than {} fields",
                                CSV_COLUMNS.len()
                            ));
                        }
                        quoted = false;
                        if b == b'\n' {
                            return Ok(Some(fields));
                        }
                    }
                    b'\r' if quoted => {}
                    _ if quoted => return Err("text after a quoted field's closing quote".into()),
                    b'"' => return Err("a quote inside an unquoted field".into()),
                    _ => field.push(b),
                }
            }
        }
    }
}

mod streaming {
    use std::cell::{Cell, RefCell};

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

    use super::{
        Broken, ChainEvent, ChainVerifier, Checkpoint, Extent, FORMAT, MAX_EVENT_CHARS,
        PublishedKey, Verified, broken,
    };

    pub(super) struct ExportSeed<'a> {
        pub keys: &'a [PublishedKey],
        pub kept: &'a [Checkpoint],
        pub extent: Extent,
        pub broken: &'a RefCell<Option<Broken>>,
        /// The characters the value being read may still take (see [`Budgeted`]).
        pub left: &'a Cell<usize>,
    }

    /// A reader that refuses to read on once the value being read has taken
    /// [`MAX_EVENT_CHARS`] characters: the visitors give each value (a field before the items,
    /// an item) a new budget, so one long value cannot fill memory. What separates values
    /// (whitespace, a comma) counts towards the next.
    pub(super) struct Budgeted<'a, R> {
        pub reader: R,
        pub left: &'a Cell<usize>,
    }

    impl<R: std::io::Read> std::io::Read for Budgeted<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.reader.read(buf)?;
            let chars = buf[..n].iter().filter(|b| *b & 0xC0 != 0x80).count();
            match self.left.get().checked_sub(chars) {
                Some(left) => {
                    self.left.set(left);
                    Ok(n)
                }
                None => Err(std::io::Error::other(format!(
                    "a value is longer than {MAX_EVENT_CHARS} characters"
                ))),
            }
        }
    }

    fn new_budget(left: &Cell<usize>) {
        left.set(MAX_EVENT_CHARS);
    }

    /// The export's fields, in their one order.
    const FIELDS: [&str; 4] = ["format", "chain", "checkpoint", "items"];

    impl<'a> ExportSeed<'a> {
        fn fail<E: de::Error>(&self, b: Broken) -> E {
            let message = b.to_string();
            *self.broken.borrow_mut() = Some(b);
            E::custom(message)
        }

        fn start<E: de::Error>(
            &self,
            format: &Option<String>,
            chain: &Option<String>,
            checkpoint: &Option<Checkpoint>,
        ) -> Result<ChainVerifier<'a>, E> {
            if format.as_deref() != Some(FORMAT) {
                return Err(self.fail(broken(
                    None,
                    format!(
                        "format {format:?} is not {FORMAT} (or it does not come before the items)"
                    ),
                )));
            }
            let chain = chain
                .as_deref()
                .ok_or_else(|| de::Error::missing_field("chain"))?;
            let checkpoints: Vec<Checkpoint> =
                checkpoint.iter().chain(self.kept).cloned().collect();
            ChainVerifier::new(chain, self.keys, &checkpoints, self.extent)
                .map_err(|b| self.fail(b))
        }
    }

    impl<'de, 'a> DeserializeSeed<'de> for ExportSeed<'a> {
        type Value = Verified;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Verified, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de, 'a> Visitor<'de> for ExportSeed<'a> {
        type Value = Verified;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an audit export (a JSON object)")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Verified, A::Error> {
            let (mut format, mut chain, mut checkpoint) = (None, None, None);
            let mut verifier = None;
            let mut next = 0;
            while let Some(key) = {
                new_budget(self.left);
                map.next_key::<String>()?
            } {
                if FIELDS.get(next) != Some(&key.as_str()) {
                    return Err(de::Error::custom(format!(
                        "the export's fields are {} in this order, once each; found {key:?} where {} belongs",
                        FIELDS.join(", "),
                        FIELDS.get(next).unwrap_or(&"nothing more")
                    )));
                }
                next += 1;
                new_budget(self.left);
                match key.as_str() {
                    "format" => format = Some(map.next_value::<String>()?),
                    "chain" => chain = Some(map.next_value::<String>()?),
                    "checkpoint" => checkpoint = map.next_value::<Option<Checkpoint>>()?,
                    _ => {
                        let started = self.start(&format, &chain, &checkpoint)?;
                        verifier = Some(map.next_value_seed(ItemsSeed {
                            verifier: started,
                            export: &self,
                        })?);
                    }
                }
            }
            let Some(verifier) = verifier else {
                return Err(de::Error::missing_field(FIELDS[next.min(3)]));
            };
            verifier.finish().map_err(|b| self.fail(b))
        }
    }

    struct ItemsSeed<'a, 'b> {
        verifier: ChainVerifier<'a>,
        export: &'b ExportSeed<'a>,
    }

    impl<'de, 'a, 'b> DeserializeSeed<'de> for ItemsSeed<'a, 'b> {
        type Value = ChainVerifier<'a>;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de, 'a, 'b> Visitor<'de> for ItemsSeed<'a, 'b> {
        type Value = ChainVerifier<'a>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("the export's events (an array)")
        }

        fn visit_seq<S: SeqAccess<'de>>(mut self, mut seq: S) -> Result<Self::Value, S::Error> {
            while let Some(event) = {
                new_budget(self.export.left);
                seq.next_element::<ChainEvent>()?
            } {
                self.verifier
                    .push(&event)
                    .map_err(|b| self.export.fail::<S::Error>(b))?;
            }
            Ok(self.verifier)
        }
    }
}

#[cfg(test)]
mod tests;
