//! The built-in local KMS (R3): development keys that behave like a cloud KMS (enable,
//! disable, rotate), so the whole flow can be tried with no cloud account. Refused in
//! production. Its admin port is implemented next to its `KeyProvider` in `kms::local`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::Environment;
use crate::domain::audit::AuditDraft;
use crate::domain::error::Rule;
use crate::domain::error::StoreError;
use crate::domain::identity::Caller;
use crate::domain::keys::Keys;

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

    fn audit_action(self) -> &'static str {
        match self {
            Self::Enable => "local_key.enabled",
            Self::Disable => "local_key.disabled",
            Self::Rotate => "local_key.rotated",
        }
    }
}

impl Keys {
    fn local_admin(&self) -> Result<&dyn LocalKeyAdmin, DomainError> {
        self.refuse_local_kms_in_production()?;
        self.local_admin
            .as_deref()
            .ok_or(DomainError::NotFound("local KMS"))
    }

    pub async fn local_keys(&self, caller: &Caller) -> Result<Vec<LocalKey>, DomainError> {
        Ok(self.local_admin()?.list(caller.organization_id).await?)
    }

    pub async fn create_local_key(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<LocalKey, DomainError> {
        caller.require_owner("manage encryption keys")?;
        let admin = self.local_admin()?;
        let name = crate::domain::parse_display_name("name", name, 64)?;
        let now = self.clock.now();
        let key = LocalKey {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            name,
            enabled: true,
            version: 1,
            created_at: now,
            rotated_at: None,
        };
        let material = admin.seal_new_material(key.id, key.version)?;
        let audit = AuditDraft::by(
            caller,
            now,
            "local_key.created",
            format!("local_key/{}", key.id),
        )
        .detail(serde_json::json!({ "name": key.name }));
        self.keys.insert_local_key(&key, material, audit).await?;
        Ok(key)
    }

    pub async fn change_local_key(
        &self,
        caller: &Caller,
        id: Uuid,
        action: LocalKeyAction,
    ) -> Result<(), DomainError> {
        caller.require_owner("manage encryption keys")?;
        let admin = self.local_admin()?;
        let now = self.clock.now();
        let org = caller.organization_id;
        let audit = AuditDraft::by(
            caller,
            now,
            action.audit_action(),
            format!("local_key/{id}"),
        );
        let found = match action {
            LocalKeyAction::Enable => {
                self.keys
                    .set_local_key_enabled(org, id, true, audit)
                    .await?
            }
            LocalKeyAction::Disable => {
                self.keys
                    .set_local_key_enabled(org, id, false, audit)
                    .await?
            }
            LocalKeyAction::Rotate => self.rotate_local(admin, org, id, audit).await?,
        };
        if found {
            Ok(())
        } else {
            Err(DomainError::NotFound("local key"))
        }
    }

    /// A rotation racing this one moves the version first: read it again and retry; false
    /// when the organization has no such key.
    async fn rotate_local(
        &self,
        admin: &dyn LocalKeyAdmin,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<bool, DomainError> {
        let now = self.clock.now();
        for _ in 0..3 {
            let Some(key) = admin.get(organization_id, id).await? else {
                return Ok(false);
            };
            let material = admin.seal_new_material(id, key.version + 1)?;
            if self
                .keys
                .rotate_local_key(&key, material, now, audit.clone())
                .await?
            {
                return Ok(true);
            }
        }
        Err(StoreError::Contention("local key rotation kept racing other rotations".into()).into())
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
