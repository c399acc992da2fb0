//! Single sign-on with OpenID Connect: the `IdentityProvider` port, which hides the protocol
//! (discovery, PKCE, the code exchange, ID token verification), and the sign-in flow through
//! it, where the domain decides who may sign in: a known (issuer, subject), or a verified
//! email that has a pending invitation.

use async_trait::async_trait;

use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::identity_service::Identity;

/// What a sign-in attempt must remember between the redirect and the callback.
pub struct SsoStart {
    pub authorize_url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// A verified identity from the provider's ID token.
#[derive(Clone, Debug)]
pub struct SsoIdentity {
    pub issuer: String,
    pub subject: String,
    /// Only when the provider marks it verified.
    pub verified_email: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider could not be reached or answered with an error.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider's answer failed verification (token, nonce, issuer, audience, expiry).
    #[error("the sign-in was rejected: {0}")]
    Rejected(String),
}

#[async_trait]
pub trait IdentityProvider: Send + Sync {
    async fn start(&self, redirect_uri: &str) -> Result<SsoStart, SsoError>;
    /// Where to send the browser to end its session at the provider, if the provider
    /// supports RP-Initiated Logout.
    async fn end_session_url(
        &self,
        post_logout_redirect_uri: &str,
    ) -> Result<Option<String>, SsoError>;
    async fn finish(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<SsoIdentity, SsoError>;
}

/// Why a single sign-on found no way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsoRefusal {
    /// No membership and no pending invitation for a verified email.
    NotInvited,
}

impl SsoRefusal {
    pub fn message(self) -> &'static str {
        match self {
            SsoRefusal::NotInvited => {
                "Your identity provider signed you in, but you are not a member of any organization here. Ask an Organization Owner to invite your email address."
            }
        }
    }
}

impl Identity {
    fn identity_provider(&self) -> Result<&dyn crate::domain::sso::IdentityProvider, DomainError> {
        self.sso
            .as_deref()
            .ok_or(DomainError::NotFound("single sign-on"))
    }
    /// The first leg of single sign-on: where to send the browser, and what to remember.
    pub async fn sso_start(
        &self,
        redirect_uri: &str,
    ) -> Result<Result<crate::domain::sso::SsoStart, crate::domain::sso::SsoError>, DomainError>
    {
        Ok(self.identity_provider()?.start(redirect_uri).await)
    }

    /// Records a single sign-on refused before the provider was asked (a forged state).
    pub async fn sso_refused(
        &self,
        reason: &str,
        source_ip: Option<String>,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let target = "identity/unverified".to_owned();
        self.record(
            AuditDraft::new("sso:unknown".into(), None, now, "session.sign_in", target)
                .from_address(source_ip)
                .outcome(Outcome::Denied)
                .detail(serde_json::json!({ "method": "sso", "reason": reason })),
        )
        .await
    }

    /// The callback: exchanges the code, verifies the ID token, and signs the person in.
    pub async fn sso_finish(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        source_ip: Option<String>,
    ) -> Result<Result<String, String>, DomainError> {
        let identity = match self
            .identity_provider()?
            .finish(redirect_uri, code, pkce_verifier, nonce)
            .await
        {
            Ok(identity) => identity,
            Err(err) => {
                self.sso_refused(&err.to_string(), source_ip).await?;
                return Ok(Err(match err {
                    crate::domain::sso::SsoError::Unavailable(_) => "The identity provider could not be reached. Try again in a moment.".into(),
                    crate::domain::sso::SsoError::Rejected(_) => "The identity provider's answer could not be verified, so you were not signed in.".into(),
                }));
            }
        };
        Ok(self
            .sign_in_with_sso(&identity, source_ip)
            .await?
            .map_err(|r| r.message().to_owned()))
    }

    /// Signs in a verified identity and returns the session token: pending invitations for its verified email are accepted
    /// first, then the session opens in the organization used most recently.
    pub async fn sign_in_with_sso(
        &self,
        identity: &SsoIdentity,
        source_ip: Option<String>,
    ) -> Result<Result<String, SsoRefusal>, DomainError> {
        let now = self.clock.now();
        let mut memberships = self
            .members
            .users_by_identity(&identity.issuer, &identity.subject)
            .await?;
        let member_of: Vec<Uuid> = memberships.iter().map(|u| u.organization_id).collect();
        let joined = self
            .join_by_invitation(identity, &member_of, now, source_ip.clone())
            .await?;
        memberships.extend(joined);
        memberships.sort_by_key(|u| std::cmp::Reverse(u.last_sign_in_at));
        let Some(user) = memberships.into_iter().next() else {
            let email = identity
                .verified_email
                .as_deref()
                .unwrap_or("no verified email");
            let actor = format!("sso:{} ({email})", identity.subject);
            let target = format!("identity/{}", identity.issuer);
            self.record(
                AuditDraft::new(actor, None, now, "session.sign_in", target)
                    .from_address(source_ip)
                    .outcome(Outcome::Denied)
                    .detail(serde_json::json!({ "method": "sso", "reason": "not_invited" })),
            )
            .await?;
            return Ok(Err(SsoRefusal::NotInvited));
        };
        let (session, token) = self.new_session(user.id, now);
        let audit = AuditDraft::signed_in(&user, now, source_ip).detail(
            serde_json::json!({ "method": "sso", "issuer": identity.issuer, "session": session.id }),
        );
        self.credentials.open_session(&session, audit).await?;
        Ok(Ok(token))
    }
}
