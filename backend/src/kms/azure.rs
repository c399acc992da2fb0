//! Azure Key Vault through the official SDK (`azure_identity`'s ClientSecretCredential of the
//! platform's multi-tenant application, `azure_security_keyvault_keys`' KeyClient).
//!
//! - Each vault's tenant is found here, since the Key Vault client does not pass the tenant
//!   named in the vault's 401 challenge to the credential: an unauthenticated request to the
//!   vault, of whose challenge only the tenant id is kept, never the host (tokens are always
//!   requested from the configured authority). One credential per tenant, one client per vault.
//! - The SDK's retries are off (its default holds a failing call for about 80 s): each attempt
//!   is bounded by `CMEK_KMS_TIMEOUT`, and only throttling and 503 are retried, with backoff.
//! - Data keys are 32 random bytes wrapped with RSA-OAEP-256 by the vault, together with a
//!   digest of their encryption context (RSA-OAEP takes no associated data); the wrapped form
//!   records the key version that wrapped it, and unwrapping uses that version, so a key
//!   rotated in Key Vault still unwraps what its older versions wrapped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, Key, KeyClientGetKeyOptions, KeyClientWrapKeyOptions,
    KeyOperationParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::KmsTimeouts;
use crate::domain::keys::KeyRef;
use crate::domain::keys::azure::{KeyName, VaultName};
use crate::domain::kms::{
    AzureKeyFacts, EncryptionContext, KeyDescription, KeyProvider, KeyState, KmsError,
    PlaintextKey, VersionState,
};
use crate::settings::AzureSettings;

const REGION_HEADER: &str = "x-ms-keyvault-region";
/// The wrapped form: this tag, the version's length (one byte), the version, the ciphertext
/// (of the data key and its context's digest).
const WRAPPED_TAG: &[u8; 4] = b"akv2";
/// At most this many vault clients and tenant credentials are kept.
const MAX_CACHED: usize = 4096;
const DATA_KEY_LEN: usize = 32;

/// A vault's client and the tenant it answers for.
type Bound = (String, Arc<KeyClient>);

pub struct AzureKeyVault {
    settings: AzureSettings,
    timeouts: KmsTimeouts,
    http: reqwest_azure::Client,
    /// Each vault's tenant and its client (bound to that tenant's credential).
    vaults: Mutex<HashMap<String, (String, Arc<KeyClient>)>>,
    credentials: Mutex<HashMap<String, Arc<ClientSecretCredential>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AzureSetupError {
    #[error("CMEK_AZURE_CA_FILE: {0}")]
    Ca(String),
    #[error("the Azure HTTP client: {0}")]
    Client(String),
}

impl AzureKeyVault {
    pub fn new(settings: AzureSettings, timeouts: KmsTimeouts) -> Result<Self, AzureSetupError> {
        let mut builder = reqwest_azure::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.call)
            .redirect(reqwest_azure::redirect::Policy::none());
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| AzureSetupError::Ca(e.to_string()))?;
            let certs = reqwest_azure::Certificate::from_pem_bundle(&pem)
                .map_err(|e| AzureSetupError::Ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(AzureSetupError::Ca("no certificate in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| AzureSetupError::Client(e.to_string()))?;
        Ok(Self {
            settings,
            timeouts,
            http,
            vaults: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
        })
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            retry: RetryOptions::none(),
            ..Default::default()
        }
    }

    /// The vault's client and the tenant it answers for, made on first use after finding the
    /// vault's tenant. A saved key names the tenant its vault was found in: a vault now in
    /// another tenant is refused.
    async fn client(
        &self,
        vault: &VaultName,
        key: &KeyName,
        expected: Option<&str>,
    ) -> Result<Bound, KmsError> {
        if let Some((tenant, client)) = self.vaults.lock().await.get(vault.as_str())
            && expected.is_none_or(|t| t == tenant)
        {
            return Ok((tenant.clone(), client.clone()));
        }
        let url = self.settings.vault_url(vault.as_str());
        let tenant = self.discover_tenant(&url, key).await?;
        if let Some(expected) = expected
            && expected != tenant
        {
            tracing::warn!(vault = vault.as_str(), expected, found = %tenant, "a Key Vault answers for another tenant than when its key was created");
            return Err(KmsError::AccessDenied {
                code: "VaultTenantChanged".into(),
                message: "the vault now belongs to another Microsoft Entra tenant than when the key was created".into(),
            });
        }
        let credential = self.credential(&tenant).await?;
        let options = KeyClientOptions {
            client_options: self.client_options(),
            verify_challenge_resource: Some(self.settings.verify_challenge_resource),
            ..Default::default()
        };
        let client = Arc::new(
            KeyClient::new(&url, credential, Some(options)).map_err(|e| {
                tracing::error!(error = %e, "the Key Vault client could not be made");
                KmsError::Misconfigured("the Key Vault client could not be made".into())
            })?,
        );
        let mut vaults = self.vaults.lock().await;
        // Bounded: names that were only ever tested do not pile up (one makes room).
        if vaults.len() >= MAX_CACHED
            && !vaults.contains_key(vault.as_str())
            && let Some(any) = vaults.keys().next().cloned()
        {
            vaults.remove(&any);
        }
        vaults.insert(vault.as_str().to_owned(), (tenant.clone(), client.clone()));
        Ok((tenant, client))
    }

    /// Forgets a vault's client after it got a 401, so the next call finds its tenant again;
    /// only that client (another request may have replaced it meanwhile).
    async fn forget(&self, vault: &VaultName, client: &Arc<KeyClient>) {
        let mut vaults = self.vaults.lock().await;
        if vaults
            .get(vault.as_str())
            .is_some_and(|(_, cached)| Arc::ptr_eq(cached, client))
        {
            vaults.remove(vault.as_str());
        }
    }

    async fn credential(&self, tenant: &str) -> Result<Arc<dyn TokenCredential>, KmsError> {
        let mut credentials = self.credentials.lock().await;
        if let Some(c) = credentials.get(tenant) {
            return Ok(c.clone());
        }
        let mut client_options = self.client_options();
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self
            .settings
            .authority_host
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
        let credential = ClientSecretCredential::new(
            tenant,
            self.settings.app_id.clone(),
            Secret::new(self.settings.client_secret.expose_secret().to_owned()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "the Entra credential could not be made");
            KmsError::Misconfigured("the Entra credential could not be made".into())
        })?;
        if credentials.len() >= MAX_CACHED
            && let Some(any) = credentials.keys().next().cloned()
        {
            credentials.remove(&any);
        }
        credentials.insert(tenant.to_owned(), credential.clone());
        Ok(credential)
    }

    /// Asks the vault, without a token, which tenant it belongs to: the tenant id is the path
    /// of the challenge's `authorization` URL. Its host is never used. The request is the
    /// SDK's own first one (get the key, latest version), so anything that speaks Key Vault's
    /// key API answers it.
    async fn discover_tenant(&self, vault_url: &str, key: &KeyName) -> Result<String, KmsError> {
        let url = format!(
            "{}/keys/{}/?api-version=2025-07-01",
            vault_url.trim_end_matches('/'),
            key.as_str()
        );
        let response = bounded(self.timeouts.call, self.http.get(&url).send())
            .await?
            .map_err(|e| connect_failure(vault_url, &e))?;
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let (401, Some(challenge)) = (status, &challenge) {
            return tenant_from_challenge(challenge).ok_or_else(|| {
                tracing::warn!(
                    url = vault_url,
                    challenge,
                    "a vault's challenge names no tenant"
                );
                KmsError::Unreachable("the vault's authentication challenge names no tenant".into())
            });
        }
        let body = bounded(self.timeouts.call, response.bytes())
            .await?
            .unwrap_or_default();
        Err(match status {
            // A 401 without a challenge is no answer from Key Vault.
            401 => KmsError::Unreachable("the vault answered 401 without a challenge".into()),
            _ => classify_answer(status, &body, None),
        })
    }

    /// Runs one call on the vault's client: bounded, throttling retried with backoff, and a
    /// 401 (the token refused, e.g. as another tenant's) retried once from discovery, which
    /// also refuses a vault that moved away from the key's tenant. Returns the tenant that
    /// answered with the result.
    async fn call<T, F, Fut>(
        &self,
        vault: &VaultName,
        key: &KeyName,
        tenant: Option<&str>,
        op: F,
    ) -> Result<(String, T), KmsError>
    where
        F: Fn(Arc<KeyClient>) -> Fut,
        Fut: std::future::Future<Output = azure_core::Result<T>>,
    {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        let mut rediscovered = false;
        loop {
            let (answered_for, client) = self.client(vault, key, tenant).await?;
            let result = match bounded(self.timeouts.call, op(client.clone())).await? {
                Ok(value) => return Ok((answered_for, value)),
                Err(err) => classify(&err),
            };
            match result {
                KmsError::Throttled { .. } if attempt < self.timeouts.throttle_attempts => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                KmsError::AccessDenied { ref code, .. } if code == "Unauthorized" => {
                    self.forget(vault, &client).await;
                    if rediscovered {
                        return Err(result);
                    }
                    rediscovered = true;
                }
                other => return Err(other),
            }
        }
    }

    /// The key as `get key` returns it: its current version, the vault's region header, the
    /// key itself and the tenant that answered.
    async fn current_version(
        &self,
        vault: &VaultName,
        key: &KeyName,
        tenant: Option<&str>,
    ) -> Result<(String, Option<String>, Key, String), KmsError> {
        let (answered_for, response) = self
            .call(vault, key, tenant, |client| async move {
                client
                    .get_key(key.as_str(), None::<KeyClientGetKeyOptions<'_>>)
                    .await
            })
            .await?;
        let region = response
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                REGION_HEADER,
            ))
            .map(str::to_owned);
        let model = response.into_model().map_err(|e| {
            tracing::warn!(error = %e, "Key Vault's key could not be read");
            invalid_response("get key")
        })?;
        let version = model
            .key
            .as_ref()
            .and_then(|k| k.kid.as_deref())
            .and_then(|kid| kid.trim_end_matches('/').rsplit('/').next())
            .filter(|v| valid_version(v))
            .map(str::to_owned)
            .ok_or_else(|| invalid_response("get key"))?;
        Ok((version, region, model, answered_for))
    }
}

fn azure_ref(key: &KeyRef) -> Result<(&VaultName, &KeyName, Option<&str>), KmsError> {
    match key {
        KeyRef::Azure {
            vault,
            key_name,
            tenant,
        } => Ok((vault, key_name, tenant.as_deref())),
        _ => Err(KmsError::Misconfigured("not an Azure Key Vault key".into())),
    }
}

async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> Result<F::Output, KmsError> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        KmsError::Unreachable(format!(
            "Key Vault did not answer within {} ms",
            limit.as_millis()
        ))
    })
}

/// A request that got no answer: whatever the cause (a name that does not resolve included,
/// since the console's own DNS may be what is wrong), it says nothing about the key.
fn connect_failure(url: &str, err: &reqwest_azure::Error) -> KmsError {
    let text = chain_text(err);
    tracing::warn!(url, error = %text, "Key Vault could not be reached");
    KmsError::Unreachable(if err.is_timeout() {
        "Key Vault did not answer in time".into()
    } else {
        "Key Vault could not be reached (connection failed)".into()
    })
}

/// The tenant id in `Bearer authorization="https://login.microsoftonline.com/<tenant>", ...`
/// (or `authorization_uri=`): a GUID or a domain name, nothing else.
pub fn tenant_from_challenge(challenge: &str) -> Option<String> {
    let value = ["authorization=\"", "authorization_uri=\""]
        .iter()
        .find_map(|p| {
            let start = challenge.find(p)? + p.len();
            let end = challenge[start..].find('"')?;
            Some(&challenge[start..start + end])
        })?;
    let url = url::Url::parse(value).ok()?;
    let tenant = url.path_segments()?.find(|s| !s.is_empty())?;
    let valid = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| tenant.to_ascii_lowercase())
}

/// Key Vault's error body: `{"error":{"code","message","innererror":{"code"}}}`.
fn error_body(body: &[u8]) -> (Option<String>, Option<String>, String) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error = &json["error"];
    let code = error["code"].as_str().map(str::to_owned);
    let inner = error["innererror"]["code"].as_str().map(str::to_owned);
    let message = error["message"]
        .as_str()
        .map(|m| m.lines().next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    (code, inner, message)
}

/// The first `AADSTSnnnn` code in a credential error, if Entra answered with one.
fn aadsts_code(text: &str) -> Option<String> {
    let start = text.find("AADSTS")?;
    let digits: String = text[start + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

/// An error with its sources, for the log.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn connection_failed(err: &azure_core::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(az) = e.downcast_ref::<azure_core::Error>()
            && matches!(az.kind(), ErrorKind::Connection | ErrorKind::Io)
        {
            return true;
        }
        if e.downcast_ref::<reqwest_azure::Error>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// What an HTTP answer from a vault says. Only an answer carrying Key Vault's own error
/// codes is a refusal; a bare status (a proxy, a firewall appliance, a gateway) is no answer
/// about the key and counts as unreachable.
fn classify_answer(status: u16, body: &[u8], sdk_code: Option<&str>) -> KmsError {
    let (outer, inner, message) = error_body(body);
    let outer = outer.or_else(|| sdk_code.map(str::to_owned));
    let code = inner
        .clone()
        .or_else(|| outer.clone())
        .unwrap_or_else(|| format!("HTTP{status}"));
    match (status, outer.as_deref(), inner.as_deref()) {
        (404, Some("KeyNotFound" | "VaultNotFound" | "NotFound"), _) => KmsError::NotFound { code },
        (403, Some("Forbidden"), Some("KeyDisabled" | "KeyExpired" | "KeyNotYetValid")) => {
            KmsError::Disabled { code }
        }
        (403, Some("Forbidden"), Some("KeyOperationForbidden")) => KmsError::WrongKeyUsage { code },
        // RBAC (ForbiddenByRbac), an access policy (AccessDenied), the vault's firewall
        // (ForbiddenByFirewall): the customer's decision.
        (403, Some("Forbidden"), _) => KmsError::AccessDenied { code, message },
        (401, Some(_), _) => KmsError::AccessDenied {
            code: "Unauthorized".into(),
            message,
        },
        (429 | 503, _, _) => KmsError::Throttled { code },
        _ => {
            tracing::warn!(
                status,
                code,
                message,
                "Key Vault answered without a definite refusal"
            );
            KmsError::Unreachable(format!("Key Vault answered {status} {code}"))
        }
    }
}

/// What a failed SDK call says, in the kinds the console acts on. Only definite answers about
/// the key or its access are refusals; anything else (time-outs, 5xx, throttling, answers we
/// cannot read, the console's own credential) is `Unreachable` or `Misconfigured`, which never
/// stop a cluster. Decided on codes, not on message text.
fn classify(err: &azure_core::Error) -> KmsError {
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let body = raw_response
                .as_ref()
                .map(|r| r.body().as_ref().to_vec())
                .unwrap_or_default();
            classify_answer(u16::from(*status), &body, error_code.as_deref())
        }
        ErrorKind::Credential => {
            let text = chain_text(err);
            match aadsts_code(&text) {
                // The customer's tenant has no service principal for the platform (never
                // created, or deleted) or has disabled it: their decision, so a refusal.
                Some(code) if matches!(code.as_str(), "AADSTS7000229" | "AADSTS7000112") => {
                    KmsError::AccessDenied {
                        message: first_line_after(&text, "AADSTS"),
                        code,
                    }
                }
                // The platform's own application, secret or cloud (AADSTS700016: no such
                // application, AADSTS90002: no such tenant at this authority,
                // AADSTS7000215: a wrong secret...): the console's configuration.
                Some(code) => {
                    tracing::error!(code, error = %text, "Entra refused the console's application");
                    KmsError::Misconfigured(format!(
                        "Entra refused the console's application ({code})"
                    ))
                }
                None => {
                    tracing::warn!(error = %text, "no token from the Entra authority");
                    KmsError::Unreachable("no token from the Entra authority".into())
                }
            }
        }
        _ => {
            let text = chain_text(err);
            tracing::warn!(error = %text, "a Key Vault call failed");
            KmsError::Unreachable(if connection_failed(err) {
                "Key Vault could not be reached (connection failed)".into()
            } else {
                "the Key Vault call failed (see the console's log)".into()
            })
        }
    }
}

fn first_line_after(text: &str, marker: &str) -> String {
    let start = text.find(marker).unwrap_or(0);
    let rest = &text[start..];
    let end = rest
        .find(['\r', '\n'])
        .or_else(|| rest.find(" Trace ID"))
        .unwrap_or(rest.len());
    rest[..end].trim().to_owned()
}

/// The size in bits of an RSA modulus given big-endian (leading zero bytes and bits ignored).
fn modulus_bits(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        None => 0,
        Some(first) => (n.len() - first) * 8 - n[first].leading_zeros() as usize,
    }
}

fn wrapped_form(version: &str, ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + version.len() + ciphertext.len());
    out.extend_from_slice(WRAPPED_TAG);
    out.push(version.len() as u8);
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(ciphertext);
    out
}

fn parse_wrapped(wrapped: &[u8]) -> Option<(&str, &[u8])> {
    let rest = wrapped.strip_prefix(WRAPPED_TAG.as_slice())?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if rest.len() <= len || len == 0 {
        return None;
    }
    let version = std::str::from_utf8(&rest[..len]).ok()?;
    version
        .bytes()
        .all(|b| b.is_ascii_alphanumeric())
        .then_some((version, &rest[len..]))
}

fn oaep256(value: Vec<u8>) -> KeyOperationParameters {
    KeyOperationParameters {
        algorithm: Some(EncryptionAlgorithm::RsaOaep256),
        value: Some(value),
        ..Default::default()
    }
}

/// An answer we cannot read: like an outage, it says nothing about the key.
fn invalid_response(what: &str) -> KmsError {
    KmsError::Unreachable(format!("Key Vault's {what} answer could not be read"))
}

/// A key version as Key Vault names them (32 hex digits); checked before it is recorded in a
/// wrapped data key and put in a request path.
fn valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn time(t: Option<azure_core::time::OffsetDateTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.unix_timestamp(), 0))
}

#[async_trait]
impl KeyProvider for AzureKeyVault {
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, KmsError> {
        let (vault, name, tenant) = azure_ref(key)?;
        let (version, region, model, found_in) = self.current_version(vault, name, tenant).await?;
        let attributes = model.attributes.unwrap_or_default();
        let jwk = model.key.unwrap_or_default();
        let kty = jwk
            .kty
            .as_ref()
            .map(|k| k.as_ref().to_owned())
            .unwrap_or_default();
        let modulus_bits = jwk.n.as_ref().map(|n| modulus_bits(n));
        Ok(KeyDescription {
            key_id: jwk.kid.clone().unwrap_or_default(),
            state: if attributes.enabled == Some(false) {
                KeyState::Disabled
            } else {
                KeyState::Enabled
            },
            spec: kty.clone(),
            usage: jwk.key_ops.clone().unwrap_or_default().join(","),
            region,
            gcp: None,
            azure: Some(AzureKeyFacts {
                version,
                kty,
                modulus_bits,
                key_ops: jwk.key_ops.unwrap_or_default(),
                not_before: time(attributes.not_before),
                expires: time(attributes.expires),
                recovery_level: attributes.recovery_level.map(|l| l.as_ref().to_owned()),
                tenant: found_in,
                created: time(attributes.created),
            }),
        })
    }

    /// Wraps the data key followed by the context's digest: RSA-OAEP takes no associated
    /// data, so this binds the wrapped key to its organization, project and purpose (a
    /// wrapped key moved elsewhere does not unwrap).
    /// Wraps under the key's current version (a re-wrap after a rotation moves data keys
    /// to it).
    async fn wrap_data_key(
        &self,
        key: &KeyRef,
        plaintext: &PlaintextKey,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let (vault, name, tenant) = azure_ref(key)?;
        let (version, _, _, _) = self.current_version(vault, name, tenant).await?;
        let mut bound = Zeroizing::new(plaintext.expose().to_vec());
        bound.extend_from_slice(&context.digest());
        let version_ref = version.as_str();
        let bound_ref = &bound;
        let result = self
            .call(vault, name, tenant, |client| async move {
                let params = oaep256(bound_ref.to_vec()).try_into()?;
                client
                    .wrap_key(
                        name.as_str(),
                        params,
                        Some(KeyClientWrapKeyOptions {
                            key_version: Some(version_ref.to_owned()),
                            ..Default::default()
                        }),
                    )
                    .await
            })
            .await?
            .1
            .into_model()
            .map_err(|_| invalid_response("wrapKey"))?;
        let ciphertext = result.result.ok_or_else(|| invalid_response("wrapKey"))?;
        Ok(wrapped_form(&version, &ciphertext))
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        let (vault, name, tenant) = azure_ref(key)?;
        let (version, ciphertext) = parse_wrapped(wrapped).ok_or_else(|| KmsError::Other {
            code: "InvalidCiphertext".into(),
            message: "the wrapped data key is not one Key Vault wrapped for this console".into(),
        })?;
        let result = self
            .call(vault, name, tenant, |client| async move {
                let params = oaep256(ciphertext.to_vec()).try_into()?;
                client
                    .unwrap_key(name.as_str(), version, params, None)
                    .await
            })
            .await?
            .1
            .into_model()
            .map_err(|_| invalid_response("unwrapKey"))?;
        let bound = Zeroizing::new(result.result.ok_or_else(|| invalid_response("unwrapKey"))?);
        if bound.len() != DATA_KEY_LEN + 32 {
            return Err(invalid_response("unwrapKey"));
        }
        let (data_key, digest) = bound.split_at(DATA_KEY_LEN);
        if !crate::domain::secrets::constant_time_eq(digest, &context.digest()) {
            return Err(KmsError::Other {
                code: "InvalidCiphertext".into(),
                message: "the wrapped data key belongs to another organization, project or purpose"
                    .into(),
            });
        }
        Ok(PlaintextKey::new(data_key.to_vec()))
    }

    fn has_versions(&self) -> bool {
        true
    }

    fn wrapped_version(&self, _key: &KeyRef, wrapped: &[u8]) -> Option<String> {
        parse_wrapped(wrapped).map(|(version, _)| version.to_owned())
    }

    async fn version_state(&self, key: &KeyRef, version: &str) -> Result<VersionState, KmsError> {
        let (vault, name, tenant) = azure_ref(key)?;
        if !valid_version(version) {
            return Err(KmsError::NotFound {
                code: "KeyNotFound".into(),
            });
        }
        let (_, response) = self
            .call(vault, name, tenant, |client| async move {
                client
                    .get_key(
                        name.as_str(),
                        Some(KeyClientGetKeyOptions {
                            key_version: Some(version.to_owned()),
                            ..Default::default()
                        }),
                    )
                    .await
            })
            .await?;
        let model = response
            .into_model()
            .map_err(|_| invalid_response("get key version"))?;
        let attributes = model.attributes.unwrap_or_default();
        Ok(VersionState {
            enabled: attributes.enabled != Some(false),
            not_before: time(attributes.not_before),
            expires: time(attributes.expires),
        })
    }

    /// Key Vault rotates by the key's rotation policy, which the platform's role
    /// (Crypto Service Encryption User) may not read: not reported.
    async fn rotation_enabled(&self, _key: &KeyRef) -> Result<Option<bool>, KmsError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tenant_id_is_taken_from_a_challenge() {
        let c = r#"Bearer authorization="https://evil.example/72F988BF-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#;
        assert_eq!(
            tenant_from_challenge(c).as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        let uri = r#"Bearer authorization_uri="https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/authorize""#;
        assert_eq!(
            tenant_from_challenge(uri).as_deref(),
            Some("contoso.onmicrosoft.com")
        );
        assert_eq!(
            tenant_from_challenge(r#"Bearer authorization="https://x/a%2Fb""#),
            None
        );
        assert_eq!(tenant_from_challenge("Bearer realm=\"x\""), None);
    }

    #[test]
    fn modulus_sizes_count_bits_not_bytes() {
        assert_eq!(modulus_bits(&[0x80; 256]), 2048);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        let mut short = vec![0x7f];
        short.extend([0xff; 255]);
        assert_eq!(modulus_bits(&short), 2047, "a 2047-bit modulus is not 2048");
        assert_eq!(modulus_bits(&[0, 0, 0x80]), 8);
        assert_eq!(modulus_bits(&[]), 0);
    }

    #[test]
    fn the_wrapped_form_keeps_the_version() {
        let w = wrapped_form("0123abcd", b"cipher");
        assert_eq!(parse_wrapped(&w), Some(("0123abcd", b"cipher".as_slice())));
        assert_eq!(parse_wrapped(b"akv1"), None);
        assert_eq!(parse_wrapped(b"other-bytes"), None);
    }

    #[test]
    fn entra_codes_are_found_in_credential_errors() {
        assert_eq!(
            aadsts_code(
                "ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret"
            )
            .as_deref(),
            Some("AADSTS7000215")
        );
        assert_eq!(aadsts_code("nothing here"), None);
    }
}
