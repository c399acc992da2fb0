//! API keys for automation: created by owners (R2) with a role, shown once, stored only as
//! a hash, usable as `Authorization: Bearer`, revocable at once.

use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::audit::AuditDraft;
use crate::domain::identity::{Actor, ApiKey, Caller, NewSecret, Role, hash_secret};
use crate::domain::identity_service::Identity;

/// An API key created for a caller; `secret` is shown once and never stored.
pub struct IssuedApiKey {
    pub key: ApiKey,
    pub secret: String,
}

impl Identity {
    /// The caller behind a bearer API key, if the key exists and is not revoked.
    pub async fn authenticate_api_key(
        &self,
        secret: &str,
        source_ip: Option<String>,
    ) -> Result<Option<Caller>, DomainError> {
        let Some(key) = self
            .credentials
            .api_key_by_hash(&hash_secret(secret))
            .await?
        else {
            return Ok(None);
        };
        if key.revoked_at.is_some() {
            return Ok(None);
        }
        let now = self.clock.now();
        if key
            .last_used_at
            .is_none_or(|t| now - t > chrono::Duration::minutes(1))
        {
            self.credentials.touch_api_key(key.id, now).await?;
        }
        Ok(Some(Caller {
            organization_id: key.organization_id,
            actor: Actor::ApiKey {
                id: key.id,
                name: key.name,
            },
            role: key.role,
            source_ip,
            session_id: None,
        }))
    }

    /// R2: owners create API keys. The secret is returned once; only its hash is kept.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
    ) -> Result<IssuedApiKey, DomainError> {
        caller.require_owner("create API keys")?;
        let name = crate::domain::parse_display_name("name", name, 64)?;
        let now = self.clock.now();
        let secret = NewSecret::generate("cmek_");
        let key = ApiKey {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            name,
            role,
            prefix: secret.plaintext.chars().take(12).collect(),
            key_hash: secret.hash,
            created_by: caller.actor.label(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        let audit = AuditDraft::by(
            caller,
            now,
            "api_key.created",
            format!("api_key/{}", key.id),
        )
        .detail(serde_json::json!({ "name": key.name, "role": role.as_str() }));
        self.credentials.insert_api_key(&key, audit).await?;
        Ok(IssuedApiKey {
            key,
            secret: secret.plaintext,
        })
    }

    pub async fn api_keys(&self, caller: &Caller) -> Result<Vec<ApiKey>, DomainError> {
        caller.require_owner("manage API keys")?;
        Ok(self.credentials.api_keys(caller.organization_id).await?)
    }

    pub async fn revoke_api_key(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        caller.require_owner("revoke API keys")?;
        let now = self.clock.now();
        let audit = AuditDraft::by(caller, now, "api_key.revoked", format!("api_key/{id}"));
        if self
            .credentials
            .revoke_api_key(caller.organization_id, id, now, audit)
            .await?
        {
            Ok(())
        } else {
            Err(DomainError::NotFound("API key"))
        }
    }
}
