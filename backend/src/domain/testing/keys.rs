//! The in-memory KeyStore: encryption keys (one per project, provider and region), their status history and the local KMS keys.

use super::*;

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, key: &EncryptionKey, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            if s.keys.iter().any(|k| same_slot(k, key)) {
                return Err(StoreError::Conflict(Constraint::KeyPerRegion));
            }
            s.keys.push(key.clone());
            Ok(((), true))
        })
    }

    async fn insert_keys(
        &self,
        keys: &[EncryptionKey],
        events: Vec<AuditDraft>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for (i, key) in keys.iter().enumerate() {
            let clash = state
                .keys
                .iter()
                .chain(&keys[..i])
                .any(|k| same_slot(k, key));
            if clash {
                return Err(StoreError::Conflict(Constraint::KeyPerRegion));
            }
        }
        state.keys.extend(keys.iter().cloned());
        for event in events {
            state.append(&self.key, event);
        }
        Ok(())
    }

    async fn repin_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        from: &str,
        to: &str,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            let key = s
                .keys
                .iter_mut()
                .find(|k| k.id == id && k.organization_id == organization_id);
            match key.map(|k| &mut k.key_ref) {
                Some(KeyRef::Azure { tenant, .. }) if tenant.as_deref() == Some(from) => {
                    *tenant = Some(to.to_owned());
                    Ok((true, true))
                }
                _ => Ok((false, false)),
            }
        })
    }

    async fn record_rotation(&self, id: Uuid, enabled: Option<bool>) -> Result<(), StoreError> {
        if let Some(key) = self.state().keys.iter_mut().find(|k| k.id == id) {
            key.rotation_enabled = enabled;
        }
        Ok(())
    }

    async fn key_status_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for key in &self.state().keys {
            *counts.entry(key.status.as_str().to_owned()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    async fn key_status_page(
        &self,
        organization_id: Uuid,
        filter: &KeyStatusFilter,
        request: PageRequest,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        let mut keys: Vec<EncryptionKey> = self
            .state()
            .keys
            .iter()
            .filter(|k| k.organization_id == organization_id)
            .filter(|k| filter.status.is_none_or(|s| k.status == s))
            .filter(|k| filter.provider.is_none_or(|p| k.key_ref.provider() == p))
            .filter(|k| filter.project_id.is_none_or(|p| k.project_id == p))
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.id);
        Ok(page(&keys, request, |k| k.id))
    }

    async fn key_status_tally(
        &self,
        organization_id: Uuid,
        provider: Option<Provider>,
        project_id: Option<Uuid>,
    ) -> Result<Vec<(KeyStatus, u64)>, StoreError> {
        let mut counts: Vec<(KeyStatus, u64)> = Vec::new();
        for key in self.state().keys.iter().filter(|k| {
            k.organization_id == organization_id
                && provider.is_none_or(|p| k.key_ref.provider() == p)
                && project_id.is_none_or(|p| k.project_id == p)
        }) {
            match counts.iter_mut().find(|(s, _)| *s == key.status) {
                Some((_, n)) => *n += 1,
                None => counts.push((key.status, 1)),
            }
        }
        Ok(counts)
    }

    async fn key_statuses(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, KeyStatus)>, StoreError> {
        Ok(self
            .state()
            .keys
            .iter()
            .filter(|k| k.organization_id == organization_id && ids.contains(&k.id))
            .map(|k| (k.id, k.status))
            .collect())
    }

    async fn keys(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        Ok(self
            .state()
            .keys
            .iter()
            .filter(|k| k.organization_id == organization_id && k.project_id == project_id)
            .cloned()
            .collect())
    }

    async fn key(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<EncryptionKey>, StoreError> {
        Ok(self
            .state()
            .keys
            .iter()
            .find(|k| k.id == id && k.organization_id == organization_id)
            .cloned())
    }

    async fn delete_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.keys
                .retain(|k| !(k.id == id && k.organization_id == organization_id));
            Ok(((), true))
        })
    }

    async fn update_key_status(
        &self,
        id: Uuid,
        status: KeyStatus,
        checked_at: DateTime<Utc>,
        error: Option<String>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let mut queue = None;
            if let Some(key) = s.keys.iter_mut().find(|k| k.id == id) {
                if key.status != status {
                    let change = StatusChange {
                        id: Uuid::now_v7(),
                        at: checked_at,
                        from: key.status,
                        to: status,
                        message: error.clone(),
                    };
                    s.history.push((key.organization_id, id, change));
                    queue = Some(key.organization_id);
                }
                key.status = status;
                key.last_checked_at = Some(checked_at);
                key.last_error = error;
            }
            if let Some(organization_id) = queue {
                s.enqueue(JobKind::ReconcileKey, organization_id, id, checked_at);
            }
            Ok(((), true))
        })
    }

    /// The rule tests do not run the monitor: nothing is ever due here.
    async fn lease_due_keys(
        &self,
        _now: DateTime<Utc>,
        _checked_before: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
        _limit: u64,
    ) -> Result<Vec<(EncryptionKey, Option<KeyStatus>)>, StoreError> {
        Ok(Vec::new())
    }

    async fn schedule_key_check(
        &self,
        _id: Uuid,
        _checked_at: DateTime<Utc>,
        _next_check_at: DateTime<Utc>,
        _suspected: Option<KeyStatus>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn key_history(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StatusChange>, StoreError> {
        Ok(self
            .state()
            .history
            .iter()
            .rev()
            .filter(|(org, key, c)| {
                *org == organization_id && *key == key_id && page.after.is_none_or(|a| c.id < a)
            })
            .map(|(_, _, c)| c.clone())
            .take(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX))
            .collect())
    }

    async fn insert_local_key(
        &self,
        key: &LocalKey,
        _material: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.local_keys.push(key.clone());
            Ok(((), true))
        })
    }

    async fn set_local_key_enabled(
        &self,
        organization_id: Uuid,
        id: Uuid,
        enabled: bool,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            match s
                .local_keys
                .iter_mut()
                .find(|k| k.id == id && k.organization_id == organization_id)
            {
                Some(key) => {
                    key.enabled = enabled;
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }

    async fn rotate_local_key(
        &self,
        key: &LocalKey,
        _material: Vec<u8>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            match s
                .local_keys
                .iter_mut()
                .find(|k| k.id == key.id && k.version == key.version)
            {
                Some(stored) => {
                    stored.version += 1;
                    stored.rotated_at = Some(now);
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }
}

/// The same (project, provider, region): R4's slot.
/// R4 among the keys not replaced (the unique index is partial the same way).
pub(super) fn same_slot(a: &EncryptionKey, b: &EncryptionKey) -> bool {
    a.replaced_by.is_none()
        && b.replaced_by.is_none()
        && a.project_id == b.project_id
        && a.key_ref.provider() == b.key_ref.provider()
        && a.region == b.region
}
