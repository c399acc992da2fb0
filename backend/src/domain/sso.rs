//! Single sign-on with OpenID Connect. The port hides the protocol (discovery, PKCE, the
//! code exchange, ID token verification); the domain decides who may sign in: a known
//! (issuer, subject), or a verified email that has a pending invitation.

use async_trait::async_trait;

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
