//! Alerts: webhooks per organization, signed as Standard Webhooks specifies. What is alerted
//! is decided by the use case that records an event (a typed `Notice` on its audit draft);
//! the store queues a delivery for every webhook of the organization in the same transaction
//! that appends the event, so an alert is never lost nor sent for something that did not
//! happen. Deliveries are leased (sent once
//! across instances), retried with exponential backoff for more than a day, and each attempt
//! is logged. The signing secret (`whsec_...`) is shown once; it is stored only wrapped under
//! the platform key.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::domain::audit::{AuditDraft, AuditEvent};
use crate::domain::clusters::PlatformKey;
use crate::domain::error::StoreError;
use crate::domain::identity::Caller;
use crate::domain::kms::EncryptionContext;
use crate::domain::notice::Notice;
use crate::domain::page::{Page, PageRequest};
use crate::domain::{DomainError, Environment};

/// The type of a delivered audit checkpoint: its `data` is the signed checkpoint itself.
pub const CHECKPOINT_TYPE: &str = "audit.checkpoint";

/// The event types a webhook receives (every webhook receives all of them).
pub const EVENT_TYPES: [&str; 8] = [
    "key.status_changed",
    "key.version_status_changed",
    "key.rewrap_failed",
    "cluster.inaccessible",
    "cluster.will_not_resume",
    "cluster.resume_failed",
    CHECKPOINT_TYPE,
    "webhook.test",
];

/// The audit action of **Send test event**.
pub const TEST_ACTION: &str = "webhook.test_sent";

/// How long after each failed attempt the next one is made (the schedule Standard Webhooks
/// suggests): 8 attempts over about 27 hours, then the delivery is marked failed.
pub const RETRY_SCHEDULE: [i64; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

/// Bound on one attempt, connection included.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Webhooks one organization may have.
pub const MAX_WEBHOOKS: usize = 10;

/// Test events one organization may send a minute (each waits in its webhook's queue).
pub const TEST_EVENTS_PER_MINUTE: u32 = 10;

/// Attempts one instance has in flight at most (every organization together); each is
/// bounded by `ATTEMPT_TIMEOUT`.
const SENDS_IN_FLIGHT: usize = 64;

/// An alert: what type, for which webhooks, with what data.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub event_type: &'static str,
    /// Only this webhook (a test event); `None` for every webhook of the organization.
    pub only_webhook: Option<Uuid>,
    pub data: Value,
}

impl Alert {
    /// The alert a recorded event raises, from the notice its use case gave it: the notice's
    /// type and data, with what every alert names (the organization, the audit event, who).
    pub fn of(notice: &Notice, event: &AuditEvent) -> Self {
        let mut data = serde_json::Map::new();
        data.insert("organization_id".into(), json!(event.organization_id));
        data.insert("audit_event_id".into(), json!(event.id));
        data.insert("actor".into(), json!(event.actor));
        data.extend(notice.data());
        Self {
            event_type: notice.event_type(),
            only_webhook: notice.only_webhook(),
            data: Value::Object(data),
        }
    }
}

/// The body sent: `{type, timestamp, data}` as Standard Webhooks recommends.
pub fn payload(alert: &Alert, at: DateTime<Utc>) -> String {
    json!({
        "type": alert.event_type,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": alert.data,
    })
    .to_string()
}

/// Whether an address is anything but globally routable unicast: production refuses
/// webhooks to them, at the edge for address literals and when a name resolves (the
/// sender's resolver). The ranges are IANA's special-purpose address registries (RFC 6890
/// and its updates), every entry whose "globally reachable" is false, plus multicast and
/// the reserved blocks. IPv6 must be global unicast (2000::/3) outside the special blocks
/// inside it; so every form that embeds an IPv4 address (compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`) is refused whatever the address
/// inside, except IPv4-mapped `::ffff:a.b.c.d`, which is that IPv4 address and is judged as
/// one. Erring on the safe side, the few globally reachable blocks inside 2001::/23 (and
/// 192.0.0.9-10) are refused too: no webhook receiver lives there.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 0 && c == 2)
                || (a == 192 && b == 88 && c == 99)
                || (a == 198 && (18..20).contains(&b))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = ip.segments();
            let global_unicast = (s[0] & 0xe000) == 0x2000;
            !global_unicast
                // IETF protocol assignments (Teredo, benchmarking, ORCHID, ...).
                || (s[0] == 0x2001 && s[1] < 0x0200)
                // Documentation.
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x3fff && s[1] < 0x1000)
                // 6to4.
                || s[0] == 0x2002
        }
    }
}

/// An endpoint URL, checked at the edge: `https`, or `http` to a loopback address in
/// development; no user name or password in it; at most 2,000 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl(String);

/// Whether `raw` is written as RFC 3986 says: only its characters, each `%` followed by two
/// hex digits, and brackets only in the authority (around an IPv6 address). What else the
/// URL parser would take (spaces, non-ASCII, a stray `%`) is refused instead of re-encoded;
/// the parser still normalizes what RFC 3986 allows (`'` to `%27`, `/a/../b` to `/b`), and
/// the URL stored is that normal form.
fn is_uri_text(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let authority_end = raw
        .find("://")
        .map(|start| {
            let rest = &raw[start + 3..];
            start + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())
        })
        .unwrap_or(0);
    bytes.iter().enumerate().all(|(i, b)| match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => true,
        b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b'?' | b'#' | b'@' => true,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => true,
        b'[' | b']' => i < authority_end,
        b'%' => {
            bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        }
        _ => false,
    })
}

impl WebhookUrl {
    pub fn parse(raw: &str, environment: Environment) -> Result<Self, DomainError> {
        let bad = |reason: &str| DomainError::invalid("url", reason);
        // Counted as sent, spaces included (as the API's document counts it).
        if raw.chars().count() > 2000 {
            return Err(bad("must be at most 2000 characters"));
        }
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(bad("is required"));
        }
        if !is_uri_text(raw) {
            return Err(bad(
                "may hold only the characters of a URL (RFC 3986): percent-encode any other \
                 (%XX), and use brackets only around an IPv6 address",
            ));
        }
        let url = url::Url::parse(raw)
            .map_err(|_| bad("must be an absolute URL, e.g. https://alerts.example.com/cmek"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "must not contain a user name or password (the signature authenticates the console)",
            ));
        }
        if url.fragment().is_some() {
            return Err(bad("must not contain a #fragment"));
        }
        let host = url.host().ok_or_else(|| bad("must name a host"))?;
        let (loopback, private) = match &host {
            url::Host::Domain(name) => {
                let name = name.to_ascii_lowercase();
                (name == "localhost" || name.ends_with(".localhost"), false)
            }
            url::Host::Ipv4(ip) => (ip.is_loopback(), is_internal(IpAddr::V4(*ip))),
            url::Host::Ipv6(ip) => (
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
                is_internal(IpAddr::V6(*ip)),
            ),
        };
        match (url.scheme(), environment) {
            ("https", Environment::Development) => {}
            ("https", Environment::Production) if loopback || private => {
                return Err(bad(
                    "must not point at a loopback, private or link-local address in production",
                ));
            }
            ("https", Environment::Production) => {}
            ("http", Environment::Development) if loopback => {}
            ("http", Environment::Development) => {
                return Err(bad(
                    "must use https (plain http is allowed only to localhost in development)",
                ));
            }
            _ => return Err(bad("must use https")),
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `scheme://host[:port]` alone: what the audit log keeps (a path or query often carries
    /// a token).
    pub fn origin(&self) -> String {
        url::Url::parse(&self.0)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    /// A stored URL, checked when it was written.
    pub fn stored(url: String) -> Self {
        Self(url)
    }
}

#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub url: WebhookUrl,
    pub description: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A webhook just created, with its secret: the only time the secret is shown.
pub struct CreatedWebhook {
    pub webhook: Webhook,
    pub secret: Zeroizing<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Every attempt of the schedule failed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One attempt to send a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why no 2xx came back (connection refused, time-out, the status).
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Delivery {
    /// Also the message id: `webhook-id` is `msg_<id>`, the same on every retry.
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub organization_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub log: Vec<Attempt>,
}

impl Delivery {
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.id.simple())
    }
}

/// A delivery leased for sending, with the wrapped secret of its webhook and its URL.
pub struct LeasedDelivery {
    pub delivery: Delivery,
    pub url: WebhookUrl,
    pub secret_wrapped: Vec<u8>,
}

/// What an attempt changes on its delivery.
pub struct AttemptOutcome {
    pub attempt: Attempt,
    pub state: DeliveryState,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What the sender needs: where, the message id, the body, the secret's bytes.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub message_id: &'a str,
    pub payload: &'a str,
    pub secret: &'a [u8],
}

/// What the receiver did with one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Sent {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Signs (Standard Webhooks) and posts one message, bounded by `ATTEMPT_TIMEOUT`.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    async fn send(&self, message: &Outgoing<'_>) -> Sent;
}

/// Webhooks and their deliveries in storage; deliveries are queued by the audit append.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        secret_wrapped: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    async fn webhooks(
        &self,
        organization_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Webhook>, StoreError>;
    async fn webhook(&self, organization_id: Uuid, id: Uuid)
    -> Result<Option<Webhook>, StoreError>;
    /// Deletes it with its deliveries; false when it was already gone.
    async fn delete_webhook(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Newest first, each with its attempts.
    async fn deliveries(
        &self,
        webhook_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Pending deliveries due at `now` whose lease is free, leased until `lease_until`.
    async fn lease_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<LeasedDelivery>, StoreError>;
    async fn record_attempt(
        &self,
        delivery_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError>;
}

/// What alerts need: where webhooks live, who sends, what wraps their secrets.
#[derive(Clone)]
pub struct AlertParts {
    pub store: Arc<dyn WebhookStore>,
    pub sender: Arc<dyn WebhookSender>,
    pub sealer: Arc<dyn PlatformKey>,
    /// Attempts by result, for metrics: delivered, failed (retry scheduled), gave up.
    pub results: Arc<DeliveryCounters>,
    /// Attempts in flight on this instance (`SENDS_IN_FLIGHT` at most).
    pub sending: Arc<tokio::sync::Semaphore>,
}

impl AlertParts {
    /// The room for attempts in flight that every instance starts with.
    pub fn sending_room() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(SENDS_IN_FLIGHT))
    }
}

#[derive(Debug, Default)]
pub struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
}

/// What one round of deliveries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Attempts started (their results are counted in `DeliveryCounters` as they end).
    pub started: usize,
}

fn secret_context(organization_id: Uuid, webhook_id: Uuid) -> EncryptionContext {
    EncryptionContext::default()
        .with("organization_id", organization_id.to_string())
        .with("webhook_id", webhook_id.to_string())
        .with("purpose", "webhook-secret")
}

/// What follows attempt number `attempt` (1-based) that failed: the next time, or none.
pub fn after_failure(attempt: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    RETRY_SCHEDULE
        .get(attempt.saturating_sub(1) as usize)
        .map(|seconds| now + Duration::seconds(*seconds))
}

/// The alerts feature as a service: webhooks, their deliveries (Standard Webhooks), the test
/// event. Over its own store and sender, the audit port (a test event is recorded there, and
/// deliveries are queued with audit events), the clock and the environment.
#[derive(Clone)]
pub struct Alerts {
    parts: AlertParts,
    audit: Arc<dyn crate::domain::ports::AuditStore>,
    /// The shared rate counters (test events per organization and minute).
    windows: crate::domain::rate::Windows,
    clock: Arc<dyn crate::domain::clock::Clock>,
    environment: Environment,
}

impl Alerts {
    pub fn new(
        parts: AlertParts,
        audit: Arc<dyn crate::domain::ports::AuditStore>,
        counters: Arc<dyn crate::domain::ports::Counters>,
        clock: Arc<dyn crate::domain::clock::Clock>,
        environment: Environment,
    ) -> Self {
        Self {
            parts,
            audit,
            windows: crate::domain::rate::Windows {
                counters,
                clock: clock.clone(),
            },
            clock,
            environment,
        }
    }

    /// Owners create webhooks; the secret is returned once and stored only wrapped.
    pub async fn create_webhook(
        &self,
        caller: &Caller,
        url: &str,
        description: &str,
    ) -> Result<CreatedWebhook, DomainError> {
        caller.require_owner("configure alerts")?;
        let url = WebhookUrl::parse(url, self.environment);
        let description = description.trim();
        let description = if description.chars().count() > 200 {
            Err(DomainError::invalid(
                "description",
                "must be at most 200 characters",
            ))
        } else if description.chars().any(char::is_control) {
            Err(DomainError::invalid(
                "description",
                "must not contain control characters",
            ))
        } else {
            Ok(description.to_owned())
        };
        let (url, description) = match (url, description) {
            (Ok(u), Ok(d)) => (u, d),
            (u, d) => {
                let mut fields = Vec::new();
                for err in [u.err(), d.err()].into_iter().flatten() {
                    if let DomainError::Invalid(f) = err {
                        fields.extend(f);
                    }
                }
                return Err(DomainError::Invalid(fields));
            }
        };
        let parts = &self.parts;
        let existing = parts
            .store
            .webhooks(
                caller.organization_id,
                PageRequest {
                    size: MAX_WEBHOOKS as u64 + 1,
                    after: None,
                },
            )
            .await?;
        if existing.len() >= MAX_WEBHOOKS {
            return Err(DomainError::Conflict {
                rule: crate::domain::error::Rule::WebhookLimit,
                field: None,
                detail: format!(
                    "An organization may have at most {MAX_WEBHOOKS} webhooks: delete one first."
                ),
            });
        }
        let now = self.clock.now();
        let webhook = Webhook {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            url,
            description,
            created_by: caller.actor.label(),
            created_at: now,
        };
        let key = parts
            .sealer
            .generate_data_key(&secret_context(webhook.organization_id, webhook.id))
            .map_err(|err| DomainError::Storage(format!("webhook secret: {err}")))?;
        let secret = Zeroizing::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key.plaintext.expose())
        ));
        let audit = AuditDraft::by(
            caller,
            now,
            "webhook.created",
            format!("webhook/{}", webhook.id),
        )
        .detail(json!({ "endpoint": webhook.url.origin() }));
        parts
            .store
            .create_webhook(&webhook, key.wrapped, audit)
            .await?;
        Ok(CreatedWebhook { webhook, secret })
    }

    /// Owners and auditors see the webhooks (members get 403).
    pub async fn webhooks(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<Webhook>, DomainError> {
        caller.require_auditor_view("see alerts")?;
        let items = self
            .parts
            .store
            .webhooks(caller.organization_id, page)
            .await?;
        Ok(page.finish(items, |w| w.id))
    }

    pub async fn webhook(&self, caller: &Caller, id: Uuid) -> Result<Webhook, DomainError> {
        caller.require_auditor_view("see alerts")?;
        self.parts
            .store
            .webhook(caller.organization_id, id)
            .await?
            .ok_or(DomainError::NotFound("webhook"))
    }

    pub async fn delete_webhook(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        let webhook = self.webhook(caller, id).await?;
        caller.require_owner("configure alerts")?;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "webhook.deleted",
            format!("webhook/{id}"),
        )
        .detail(json!({ "endpoint": webhook.url.origin() }));
        if self
            .parts
            .store
            .delete_webhook(caller.organization_id, id, audit)
            .await?
        {
            Ok(())
        } else {
            Err(DomainError::NotFound("webhook"))
        }
    }

    /// The delivery log of one webhook, newest first.
    pub async fn webhook_deliveries(
        &self,
        caller: &Caller,
        id: Uuid,
        page: PageRequest,
    ) -> Result<Page<Delivery>, DomainError> {
        let webhook = self.webhook(caller, id).await?;
        let items = self.parts.store.deliveries(webhook.id, page).await?;
        Ok(page.finish(items, |d| d.id))
    }

    /// **Send test event**: queues a `webhook.test` for this webhook alone (through the
    /// audit log, like every alert). Owners only.
    pub async fn send_test_webhook(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        let webhook = self.webhook(caller, id).await?;
        caller.require_owner("send test events")?;
        let sent = self
            .windows
            .count(&format!("webhook-test:{}", caller.organization_id), 60)
            .await?;
        if sent.count > TEST_EVENTS_PER_MINUTE {
            return Err(DomainError::TooManyRequests {
                detail: format!(
                    "An organization may send {TEST_EVENTS_PER_MINUTE} test events a minute; try \
                     again in {} seconds.",
                    sent.retry_after.as_secs()
                ),
                retry_after: sent.retry_after,
            });
        }
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            TEST_ACTION,
            format!("webhook/{}", webhook.id),
        )
        .detail(json!({ "webhook_id": webhook.id }))
        .notifies(Some(Notice::WebhookTest {
            webhook_id: webhook.id,
        }));
        Ok(self.audit.append_audit(audit).await?)
    }

    /// One round: leases the deliveries that are due (fairly: one per webhook in flight, a
    /// few per organization) and starts sending them without waiting, so a slow receiver
    /// never holds the next round (another organization's alerts) back; each attempt is
    /// bounded by `ATTEMPT_TIMEOUT` and its lease outlives it. Returns how many were started.
    pub async fn deliver_due_webhooks(&self) -> Result<DeliveryReport, DomainError> {
        let parts = &self.parts;
        let room = parts.sending.available_permits();
        if room == 0 {
            return Ok(DeliveryReport::default());
        }
        let now = self.clock.now();
        // Longer than an attempt's time-out, so a lease never lapses while its send runs.
        let lease_until = now + Duration::seconds(60);
        let due = parts
            .store
            .lease_due_deliveries(now, lease_until, room.min(32) as u64)
            .await?;
        let mut report = DeliveryReport::default();
        for leased in due {
            let Ok(permit) = parts.sending.clone().try_acquire_owned() else {
                // Its lease lapses and another round (or instance) sends it.
                break;
            };
            report.started += 1;
            let alerts = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(err) = alerts.deliver(&alerts.parts, leased).await {
                    tracing::warn!(error = %err, "a webhook attempt could not be recorded");
                }
            });
        }
        Ok(report)
    }

    async fn deliver(
        &self,
        parts: &AlertParts,
        leased: LeasedDelivery,
    ) -> Result<DeliveryState, DomainError> {
        let delivery = &leased.delivery;
        let attempt_number = delivery.attempts + 1;
        let started = self.clock.now();
        let sent = match parts.sealer.unwrap_data_key(
            &leased.secret_wrapped,
            &secret_context(delivery.organization_id, delivery.webhook_id),
        ) {
            Ok(secret) => {
                parts
                    .sender
                    .send(&Outgoing {
                        url: leased.url.as_str(),
                        message_id: &delivery.message_id(),
                        payload: &delivery.payload,
                        secret: secret.expose(),
                    })
                    .await
            }
            Err(_) => Sent {
                status_code: None,
                error: Some("the webhook's secret does not unwrap under the platform key".into()),
                duration_ms: 0,
            },
        };
        let now = self.clock.now();
        let (state, next_attempt_at) = if sent.succeeded() {
            parts.results.delivered.fetch_add(1, Ordering::Relaxed);
            (DeliveryState::Delivered, None)
        } else {
            match after_failure(attempt_number, now) {
                Some(next) => {
                    parts.results.retried.fetch_add(1, Ordering::Relaxed);
                    (DeliveryState::Pending, Some(next))
                }
                None => {
                    parts.results.failed.fetch_add(1, Ordering::Relaxed);
                    (DeliveryState::Failed, None)
                }
            }
        };
        let outcome = AttemptOutcome {
            attempt: Attempt {
                attempt: attempt_number,
                at: started,
                status_code: sent.status_code,
                error: sent.error,
                duration_ms: sent.duration_ms,
            },
            state,
            next_attempt_at,
        };
        parts.store.record_attempt(delivery.id, &outcome).await?;
        Ok(state)
    }

    /// Attempts by result since start, for `/metrics`.
    pub fn webhook_results(&self) -> Option<&DeliveryCounters> {
        Some(self.parts.results.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::Outcome;

    fn event(action: &str, target: &str, detail: Value) -> AuditEvent {
        AuditEvent {
            seq: 1,
            id: Uuid::now_v7(),
            organization_id: Some(Uuid::now_v7()),
            occurred_at: Utc::now(),
            actor: "system".into(),
            action: action.into(),
            target: target.into(),
            outcome: Outcome::Failure,
            source_ip: None,
            detail,
            prev_hash: String::new(),
            hash: String::new(),
            key_id: None,
            chain_seq: None,
            signing_key_id: None,
        }
    }

    #[test]
    fn an_alert_carries_its_notice_and_names_the_event() {
        use crate::domain::notice::{ClusterAlert, ClusterCause, KeyChange};
        let key = Uuid::now_v7();
        let project = Uuid::now_v7();
        let recorded = event("encryption_key.checked", "encryption_key/x", json!({}));
        let change = Notice::Key(KeyChange {
            key_id: key,
            project_id: project,
            provider: "local",
            region: "us-east-1".into(),
            key: "k".into(),
            from: "active",
            to: "disabled",
            message: None,
            version: None,
        });
        let alert = Alert::of(&change, &recorded);
        assert_eq!(alert.event_type, "key.status_changed");
        assert_eq!(alert.only_webhook, None);
        assert_eq!(alert.data["key_id"], json!(key));
        assert_eq!(alert.data["to"], json!("disabled"));
        assert_eq!(alert.data["audit_event_id"], json!(recorded.id));
        let cluster = Notice::Cluster(ClusterAlert {
            cluster_id: Uuid::now_v7(),
            project_id: project,
            name: "orders".into(),
            cause: ClusterCause::WillNotResume {
                state: "paused",
                key_id: key,
                reason: "disabled".into(),
            },
        });
        let alert = Alert::of(&cluster, &recorded);
        assert_eq!(alert.event_type, "cluster.will_not_resume");
        assert_eq!(alert.data["state"], json!("paused"));
    }

    #[test]
    fn a_test_event_goes_to_its_webhook_alone() {
        let webhook = Uuid::now_v7();
        let alert = Alert::of(
            &Notice::WebhookTest {
                webhook_id: webhook,
            },
            &event(TEST_ACTION, &format!("webhook/{webhook}"), json!({})),
        );
        assert_eq!(alert.only_webhook, Some(webhook));
        assert_eq!(alert.event_type, "webhook.test");
    }

    #[test]
    fn retries_back_off_for_more_than_a_day_then_stop() {
        let now = Utc::now();
        assert_eq!(after_failure(1, now), Some(now + Duration::seconds(5)));
        let total: i64 = RETRY_SCHEDULE.iter().sum();
        assert!(total >= 3600, "at least an hour of retries");
        assert_eq!(
            total, 99_305,
            "about 27 hours, as Standard Webhooks suggests"
        );
        assert_eq!(after_failure(RETRY_SCHEDULE.len() as u32 + 1, now), None);
        assert!(after_failure(RETRY_SCHEDULE.len() as u32, now).is_some());
    }

    #[test]
    fn urls_are_https_or_loopback_http_in_development() {
        use Environment::*;
        let ok = |raw, env| WebhookUrl::parse(raw, env).is_ok();
        assert!(ok("https://alerts.example.com/cmek", Production));
        assert!(ok("http://127.0.0.1:9000/hook", Development));
        assert!(ok("http://localhost:9000/hook", Development));
        assert!(!ok("http://127.0.0.1:9000/hook", Production));
        assert!(!ok("http://alerts.example.com/hook", Development));
        // Written as RFC 3986 says, or refused (not re-encoded into another URL).
        assert!(ok("https://alerts.example.com/a%20b?x=1&y=%2F", Production));
        assert!(!ok("https://alerts.example.com/a b", Production));
        assert!(!ok("https://alerts.example.com/caf\u{e9}", Production));
        assert!(!ok("https://alerts.example.com/100%", Production));
        assert!(!ok("https://alerts.example.com/[x]", Production));
        assert!(!ok("https://alerts.example.com/a|b", Production));
        assert!(!ok("https://10.0.0.5/hook", Production));
        assert!(!ok("https://169.254.169.254/latest", Production));
        assert!(!ok("https://[::ffff:10.0.0.5]/hook", Production));
        assert!(!ok("https://[::ffff:127.0.0.1]/hook", Production));
        assert!(!ok("https://100.64.0.1/hook", Production));
        // Forms that embed IPv4, multicast and the other blocks no one may reach from the
        // internet (the second probe's list).
        for refused in [
            "https://[::a9fe:a9fe]/hook",
            "https://[64:ff9b::a9fe:a9fe]/hook",
            "https://[2002:a9fe:a9fe::1]/hook",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
            "https://[2001:db8::1]/hook",
            "https://[ff02::1]/hook",
            "https://[fe80::1]/hook",
            "https://[fd00::1]/hook",
            "https://224.0.0.1/hook",
            "https://239.255.255.250/hook",
            "https://198.18.0.1/hook",
            "https://198.19.255.255/hook",
            "https://192.0.0.8/hook",
            "https://192.0.2.1/hook",
            "https://240.0.0.1/hook",
        ] {
            assert!(!ok(refused, Production), "{refused}");
        }
        for accepted in [
            "https://[2606:4700:4700::1111]/hook",
            "https://1.1.1.1/hook",
            "https://198.20.0.1/hook",
        ] {
            assert!(ok(accepted, Production), "{accepted}");
        }
        assert!(ok("https://93.184.215.14/hook", Production));
        assert!(!ok("https://user:pw@example.com/hook", Development));
        assert!(!ok("ftp://example.com/hook", Development));
        assert!(!ok("not a url", Development));
        assert!(!ok("", Development));
    }
}
