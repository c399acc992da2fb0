//! Identity and members as a service: organizations, members and invitations, API keys,
//! signing in (links, sessions, single sign-on) and its rate limit. Over the member,
//! credential and audit ports, the clock and the session policy; nothing of the rest of the
//! console.

use std::sync::Arc;

use crate::domain::audit::AuditDraft;
use crate::domain::clock::Clock;
use crate::domain::ports::{AuditStore, CredentialStore, MemberStore};
use crate::domain::sso::IdentityProvider;
use crate::domain::{DomainError, Policy};

#[derive(Clone)]
pub struct Identity {
    pub(crate) members: Arc<dyn MemberStore>,
    pub(crate) credentials: Arc<dyn CredentialStore>,
    /// The shared rate counters (sign-in attempts).
    pub(crate) windows: crate::domain::rate::Windows,
    pub(crate) audit: Arc<dyn AuditStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: Policy,
    pub(crate) sso: Option<Arc<dyn IdentityProvider>>,
}

impl Identity {
    pub(crate) async fn record(&self, draft: AuditDraft) -> Result<(), DomainError> {
        Ok(self.audit.append_audit(draft).await?)
    }

    pub fn sso_enabled(&self) -> bool {
        self.sso.is_some()
    }

    pub fn session_policy(&self) -> crate::domain::identity::SessionPolicy {
        self.policy.sessions
    }
}
