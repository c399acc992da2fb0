//! The built-in local KMS (R3): development keys that behave like a cloud KMS (enable,
//! disable, rotate), so the whole flow can be tried with no cloud account. Refused in
//! production. Its admin port is implemented next to its `KeyProvider` in `kms::local`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::Environment;
use crate::domain::error::Rule;
use crate::domain::error::StoreError;

#[derive(Clone, Debug)]
pub struct LocalKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub enabled: bool,
    /// The current key-material version; rotation adds one, older versions still decrypt.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

/// What the domain needs from the local KMS besides `KeyProvider`: its keys, and new key
/// material sealed under its master key. Changes go through the `Store`, in one transaction
/// with their audit event.
#[async_trait]
pub trait LocalKeyAdmin: Send + Sync {
    async fn list(&self, organization_id: Uuid) -> Result<Vec<LocalKey>, StoreError>;
    async fn get(&self, organization_id: Uuid, id: Uuid) -> Result<Option<LocalKey>, StoreError>;
    /// Fresh random material for `version` of the key, sealed (never plaintext at rest).
    fn seal_new_material(&self, key_id: Uuid, version: i32) -> Result<Vec<u8>, StoreError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKeyAction {
    Enable,
    Disable,
    Rotate,
}

impl LocalKeyAction {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "enable" => Some(Self::Enable),
            "disable" => Some(Self::Disable),
            "rotate" => Some(Self::Rotate),
            _ => None,
        }
    }

    pub(crate) fn audit_action(self) -> &'static str {
        match self {
            Self::Enable => "local_key.enabled",
            Self::Disable => "local_key.disabled",
            Self::Rotate => "local_key.rotated",
        }
    }
}

/// R3: the built-in local KMS is refused in production.
pub(crate) fn refuse_in_production(environment: Environment) -> Result<(), DomainError> {
    if environment != Environment::Production {
        return Ok(());
    }
    Err(DomainError::Forbidden {
        rule: Rule::LocalKmsInProduction,
        detail:
            "The built-in local KMS is for development and is refused when CMEK_ENV=production."
                .into(),
    })
}
