//! OpenID Connect with the `openidconnect` crate: discovery from the issuer, authorization
//! code flow with PKCE (S256), `state` and `nonce`, and the ID token verified against the
//! provider's JWKS (signature, issuer, audience, expiry, nonce). Discovery runs for each
//! sign-in, so a provider that rotates its signing keys is followed without a restart.

use std::sync::Arc;

use async_trait::async_trait;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope,
    TokenResponse, reqwest, url::Url,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::clock::Clock;
use crate::domain::sso::{IdentityProvider, SsoError, SsoIdentity, SsoStart};

/// The part of RP-Initiated Logout the console uses: where to end the provider's session.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct LogoutMetadata {
    end_session_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for LogoutMetadata {}

type Metadata = ProviderMetadata<
    LogoutMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

pub struct OidcProvider {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: SecretString,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl OidcProvider {
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: SecretString,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let issuer =
            IssuerUrl::new(issuer.to_owned()).map_err(|e| format!("CMEK_OIDC_ISSUER: {e}"))?;
        let http = reqwest::ClientBuilder::new()
            // Following redirects would let a provider point the console at other hosts.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            issuer,
            client_id: ClientId::new(client_id.to_owned()),
            client_secret,
            http,
            clock,
        })
    }

    async fn metadata(&self) -> Result<Metadata, SsoError> {
        Metadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| SsoError::Unavailable(format!("discovery failed: {e}")))
    }

    fn redirect(redirect_uri: &str) -> Result<RedirectUrl, SsoError> {
        RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| SsoError::Unavailable(format!("redirect URI: {e}")))
    }
}

#[async_trait]
impl IdentityProvider for OidcProvider {
    async fn start(&self, redirect_uri: &str) -> Result<SsoStart, SsoError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            self.client_id.clone(),
            Some(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(Self::redirect(redirect_uri)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(SsoStart {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    async fn end_session_url(
        &self,
        post_logout_redirect_uri: &str,
    ) -> Result<Option<String>, SsoError> {
        let metadata = self.metadata().await?;
        let Some(endpoint) = metadata.additional_metadata().end_session_endpoint.clone() else {
            return Ok(None);
        };
        let mut url = Url::parse(&endpoint)
            .map_err(|e| SsoError::Unavailable(format!("end_session_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", self.client_id.as_str())
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Ok(Some(url.to_string()))
    }

    async fn finish(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<SsoIdentity, SsoError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            self.client_id.clone(),
            Some(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(Self::redirect(redirect_uri)?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Unavailable(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| SsoError::Rejected(format!("the code exchange failed: {e}")))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| SsoError::Rejected("the provider returned no ID token".into()))?;
        let clock = self.clock.clone();
        let verifier = client.id_token_verifier().set_time_fn(move || clock.now());
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| SsoError::Rejected(format!("the ID token is not valid: {e}")))?;
        let verified_email = match (claims.email(), claims.email_verified()) {
            (Some(email), Some(true)) => Some(email.as_str().to_lowercase()),
            _ => None,
        };
        Ok(SsoIdentity {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            verified_email,
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
        })
    }
}
