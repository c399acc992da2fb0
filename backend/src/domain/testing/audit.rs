//! The in-memory AuditStore: the sealed chain of audit events.

use super::*;

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |_| Ok(((), true)))
    }

    async fn audit_events(
        &self,
        organization_id: Uuid,
        _filter: &AuditFilter,
        request: PageRequest,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let state = self.state();
        let mine: Vec<AuditEvent> = state
            .audit
            .iter()
            .rev()
            .filter(|e| e.organization_id == Some(organization_id))
            .cloned()
            .collect();
        Ok(mine
            .into_iter()
            .take(usize::try_from(request.fetch_limit()).unwrap_or(usize::MAX))
            .collect())
    }

    async fn audit_chain(&self, from_seq: i64, limit: u64) -> Result<Vec<ChainRow>, StoreError> {
        Ok(self
            .state()
            .audit
            .iter()
            .filter(|e| e.seq >= from_seq)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .map(ChainRow::Event)
            .collect())
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self.state().audit.last().map(|e| (e.seq, e.hash.clone())))
    }

    async fn reseal_legacy_audit_chain(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
