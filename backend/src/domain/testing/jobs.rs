//! The in-memory JobStore: durable jobs and the key versions in use.

use super::*;

#[async_trait]
impl JobStore for MemoryStore {
    async fn enqueue_job(
        &self,
        kind: JobKind,
        organization_id: Uuid,
        subject: Uuid,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().enqueue(kind, organization_id, subject, due_at);
        Ok(())
    }

    /// No leases here: one process, one worker.
    async fn lease_jobs(
        &self,
        kind: JobKind,
        now: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Job>, StoreError> {
        Ok(self
            .state()
            .jobs
            .iter()
            .filter(|(j, due)| j.kind == kind && *due <= now)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(j, _)| j.clone())
            .collect())
    }

    async fn finish_job(&self, job: &Job) -> Result<(), StoreError> {
        self.state()
            .jobs
            .retain(|(j, _)| !(j.id == job.id && j.generation == job.generation));
        Ok(())
    }

    async fn renew_job(&self, job: &Job, _lease_until: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .jobs
            .iter()
            .any(|(j, _)| j.id == job.id && j.generation == job.generation))
    }

    async fn release_job(&self, job: &Job, due_at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some((j, due)) = self.state().jobs.iter_mut().find(|(j, _)| j.id == job.id) {
            j.attempts = 0;
            *due = due_at;
        }
        Ok(())
    }

    async fn retry_job(
        &self,
        job: &Job,
        due_at: DateTime<Utc>,
        _error: &str,
    ) -> Result<(), StoreError> {
        if let Some((j, due)) = self.state().jobs.iter_mut().find(|(j, _)| j.id == job.id) {
            j.attempts += 1;
            *due = due_at;
        }
        Ok(())
    }

    async fn pending_jobs(&self, kind: JobKind) -> Result<u64, StoreError> {
        Ok(self
            .state()
            .jobs
            .iter()
            .filter(|(j, _)| j.kind == kind)
            .count() as u64)
    }

    async fn keys_to_reconcile(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let mut keys = self.state().keys.clone();
        keys.sort_by_key(|k| k.id);
        Ok(keys
            .iter()
            .filter(|k| k.status.is_revocation() && after.is_none_or(|a| k.id > a))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|k| (k.organization_id, k.id))
            .collect())
    }

    /// No clusters here: no data keys, so no versions in use.
    async fn versions_in_use(
        &self,
        _key_id: Uuid,
    ) -> Result<Vec<(String, u64, Option<KeyVersionStatus>)>, StoreError> {
        Ok(Vec::new())
    }

    /// No clusters here: every data key has its version.
    async fn data_keys_without_version(
        &self,
        _limit: u64,
    ) -> Result<Vec<crate::domain::ports::UnversionedDataKey>, StoreError> {
        Ok(Vec::new())
    }

    async fn set_data_key_version(
        &self,
        _row: &crate::domain::ports::DataKeyRow,
        _version: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn forget_versions_not_in(
        &self,
        key_id: Uuid,
        in_use: &[String],
    ) -> Result<(), StoreError> {
        self.state()
            .versions
            .retain(|v| v.key_id != key_id || in_use.contains(&v.version));
        Ok(())
    }

    async fn revoked_versions(
        &self,
        key_ids: &[Uuid],
    ) -> Result<Vec<KeyVersionStatus>, StoreError> {
        Ok(self
            .state()
            .versions
            .iter()
            .filter(|v| key_ids.contains(&v.key_id) && v.status.is_revocation())
            .cloned()
            .collect())
    }

    async fn record_version_status(
        &self,
        organization_id: Uuid,
        status: KeyVersionStatus,
        audit: Option<AuditDraft>,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        let changed = audit.is_some();
        if let Some(audit) = audit {
            let key = self.key.clone();
            s.append(&key, audit);
        }
        if changed {
            s.enqueue(
                JobKind::ReconcileKey,
                organization_id,
                status.key_id,
                status.last_checked_at.unwrap_or_default(),
            );
        }
        s.versions
            .retain(|v| !(v.key_id == status.key_id && v.version == status.version));
        s.versions.push(status);
        Ok(())
    }
}
