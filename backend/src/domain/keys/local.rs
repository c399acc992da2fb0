//! The development KMS's keys, as the keys service manages them (list, create, disable,
//! enable, rotate; never in production, R3).

use uuid::Uuid;

use super::Keys;
use crate::domain::DomainError;
use crate::domain::audit::AuditDraft;
use crate::domain::error::StoreError;
use crate::domain::identity::Caller;
use crate::domain::local_kms::{LocalKey, LocalKeyAction, LocalKeyAdmin};

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
