//! What an audit event tells the organization's webhooks, typed. The use case that records an
//! event decides whether it alerts and with which fields (`AuditDraft::notifies`); the store
//! only queues the deliveries in the event's transaction. Renaming a field here is a compile
//! error at every producer, never an alert that silently stops.

use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A change of a key's status, or of one of its versions'.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyChange {
    pub key_id: Uuid,
    pub project_id: Uuid,
    pub provider: &'static str,
    pub region: String,
    /// The key as users know it (ARN, vault and name, local key id).
    pub key: String,
    pub from: &'static str,
    pub to: &'static str,
    pub message: Option<String>,
    /// The version, and how many data keys it wraps (when counted), for a version's change.
    pub version: Option<(String, Option<u64>)>,
}

/// What happened to a cluster because of its keys.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterCause {
    /// The revocation policy stopped it (R10).
    Inaccessible { key_id: Uuid, reason: String },
    /// Paused with a revoked key: it would not resume.
    WillNotResume {
        state: &'static str,
        key_id: Uuid,
        reason: String,
    },
    /// A resume could not unwrap a data key (`failures`, per region) or attach (`error`).
    ResumeFailed {
        failures: Option<Value>,
        error: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterAlert {
    pub cluster_id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub cause: ClusterCause,
}

/// A key change (replacement or re-wrap) that ended with data keys it could not move: they
/// stay wrapped by the old key (or version), readable as before, until it is retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RewrapAlert {
    pub rewrap_id: Uuid,
    pub project_id: Uuid,
    pub key_id: Uuid,
    pub to_key_id: Uuid,
    pub total: u32,
    pub done: u32,
    pub failed: u32,
    /// A few of the data keys not moved, with the KMS's answer.
    pub failures: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    Key(KeyChange),
    Cluster(ClusterAlert),
    RewrapFailed(RewrapAlert),
    /// **Send test event**: to this webhook alone.
    WebhookTest {
        webhook_id: Uuid,
    },
}

impl Notice {
    /// The Standard Webhooks event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            Notice::Key(change) if change.version.is_some() => "key.version_status_changed",
            Notice::Key(_) => "key.status_changed",
            Notice::Cluster(alert) => match alert.cause {
                ClusterCause::Inaccessible { .. } => "cluster.inaccessible",
                ClusterCause::WillNotResume { .. } => "cluster.will_not_resume",
                ClusterCause::ResumeFailed { .. } => "cluster.resume_failed",
            },
            Notice::RewrapFailed(_) => "key.rewrap_failed",
            Notice::WebhookTest { .. } => "webhook.test",
        }
    }

    /// Only this webhook; `None` for every webhook of the organization.
    pub fn only_webhook(&self) -> Option<Uuid> {
        match self {
            Notice::WebhookTest { webhook_id } => Some(*webhook_id),
            _ => None,
        }
    }

    /// The event's `data`, without what every alert carries (see `alerts::Alert`).
    pub fn data(&self) -> Map<String, Value> {
        let mut data = Map::new();
        let mut put = |name: &str, value: Value| {
            data.insert(name.to_owned(), value);
        };
        match self {
            Notice::Key(c) => {
                put("key_id", json!(c.key_id));
                put("project_id", json!(c.project_id));
                put("provider", json!(c.provider));
                put("region", json!(c.region));
                put("key", json!(c.key));
                if let Some((version, data_keys)) = &c.version {
                    put("version", json!(version));
                    put("data_keys", json!(data_keys));
                }
                put("from", json!(c.from));
                put("to", json!(c.to));
                put("message", json!(c.message));
            }
            Notice::Cluster(a) => {
                put("cluster_id", json!(a.cluster_id));
                put("project_id", json!(a.project_id));
                put("name", json!(a.name));
                match &a.cause {
                    ClusterCause::Inaccessible { key_id, reason } => {
                        put("key_id", json!(key_id));
                        put("reason", json!(reason));
                    }
                    ClusterCause::WillNotResume {
                        state,
                        key_id,
                        reason,
                    } => {
                        put("state", json!(state));
                        put("key_id", json!(key_id));
                        put("reason", json!(reason));
                    }
                    ClusterCause::ResumeFailed { failures, error } => {
                        if let Some(failures) = failures {
                            put("failures", failures.clone());
                        }
                        if let Some(error) = error {
                            put("error", json!(error));
                        }
                    }
                }
            }
            Notice::RewrapFailed(r) => {
                put("rewrap_id", json!(r.rewrap_id));
                put("project_id", json!(r.project_id));
                put("key_id", json!(r.key_id));
                put("to_key_id", json!(r.to_key_id));
                put("total", json!(r.total));
                put("done", json!(r.done));
                put("failed", json!(r.failed));
                put("failures", r.failures.clone());
            }
            Notice::WebhookTest { webhook_id } => {
                put("webhook_id", json!(webhook_id));
                put(
                    "message",
                    json!("A test event from cmek-console: this endpoint receives its alerts."),
                );
            }
        }
        data
    }
}
