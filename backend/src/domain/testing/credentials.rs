//! The in-memory CredentialStore: sign-in links, sessions, API keys and the rate limit.

use super::*;

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn open_session(&self, session: &Session, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.sessions.push(session.clone());
            if let Some(user) = s.users.iter_mut().find(|u| u.id == session.user_id) {
                user.last_sign_in_at = Some(session.created_at);
            }
            Ok(((), true))
        })
    }

    async fn switch_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            if let Some(session) = s.sessions.iter_mut().find(|x| x.id == session_id) {
                session.user_id = user_id;
            }
            Ok(((), true))
        })
    }

    async fn insert_sign_in_link(
        &self,
        link: &SignInLink,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.links.retain(|l| {
                !(l.user_id == link.user_id
                    && l.used_at.is_none()
                    && l.expires_at <= link.created_at)
            });
            s.links.push(link.clone());
            Ok(((), true))
        })
    }

    async fn sign_in_link(&self, token_hash: &str) -> Result<Option<SignInLink>, StoreError> {
        Ok(self
            .state()
            .links
            .iter()
            .find(|l| l.token_hash == token_hash)
            .cloned())
    }

    async fn redeem_sign_in_link(
        &self,
        link_id: Uuid,
        now: DateTime<Utc>,
        session: &Session,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            let Some(link) = s
                .links
                .iter_mut()
                .find(|l| l.id == link_id && l.used_at.is_none())
            else {
                return Ok((false, false));
            };
            link.used_at = Some(now);
            let user_id = link.user_id;
            s.links
                .retain(|l| !(l.user_id == user_id && l.used_at.is_none()));
            s.sessions.push(session.clone());
            if let Some(user) = s.users.iter_mut().find(|u| u.id == user_id) {
                user.last_sign_in_at = Some(now);
            }
            Ok((true, true))
        })
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .state()
            .sessions
            .iter()
            .find(|x| x.token_hash == token_hash)
            .cloned())
    }

    async fn touch_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(session) = self.state().sessions.iter_mut().find(|x| x.id == id) {
            session.last_seen_at = now;
        }
        Ok(())
    }

    async fn delete_session(&self, id: Uuid, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.sessions.retain(|x| x.id != id);
            Ok(((), true))
        })
    }

    async fn insert_api_key(&self, key: &ApiKey, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.api_keys.push(key.clone());
            Ok(((), true))
        })
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .state()
            .api_keys
            .iter()
            .find(|k| k.key_hash == key_hash)
            .cloned())
    }

    async fn api_keys(&self, organization_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        Ok(self
            .state()
            .api_keys
            .iter()
            .filter(|k| k.organization_id == organization_id)
            .cloned()
            .collect())
    }

    async fn revoke_api_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            match s.api_keys.iter_mut().find(|k| {
                k.id == id && k.organization_id == organization_id && k.revoked_at.is_none()
            }) {
                Some(key) => {
                    key.revoked_at = Some(now);
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }

    async fn touch_api_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(key) = self.state().api_keys.iter_mut().find(|k| k.id == id) {
            key.last_used_at = Some(now);
        }
        Ok(())
    }
}

#[async_trait]
impl crate::domain::ports::Counters for MemoryStore {
    async fn count_attempt(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let mut state = self.state();
        let hits = state
            .hits
            .entry((bucket.to_owned(), window_start))
            .or_default();
        *hits += 1;
        Ok(*hits)
    }
}
