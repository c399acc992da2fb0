//! Google Cloud KMS through the official client (`google-cloud-kms-v1`, which speaks Cloud
//! KMS's HTTP/JSON protocol) and the platform's service-account key file
//! (`google-cloud-auth`, which signs its own JWTs and never calls a token endpoint).
//!
//! - The client's default retry holds a call to a dead endpoint for about a minute: here each
//!   attempt is bounded by `CMEK_KMS_TIMEOUT`, and only throttling (`RESOURCE_EXHAUSTED`, 429)
//!   and `UNAVAILABLE` (503) are retried, with backoff, `throttle_attempts` times at most.
//! - Data keys are 32 random bytes made here and encrypted by Cloud KMS with the encryption
//!   context as additional authenticated data. Cloud KMS encrypts with the key's primary
//!   version and decrypts with the version the ciphertext names; the wrapped form records that
//!   version too (from the encrypt answer's `name`), so the census of versions in use and the
//!   version probes cover Google keys.
//! - Every encrypt and decrypt carries CRC32C checksums, and the answer's are checked (as
//!   Google recommends): damage on the way shows as `unreachable`, never as a revocation.
//! - A data key's plaintext is handed to the client in a buffer that wipes itself when the
//!   client drops it, and the decrypt answer's copy is wiped once read. The client's own
//!   base64 JSON body of a request or answer is beyond reach (as with the Azure SDK's).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicy;
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState;
use zeroize::Zeroizing;

use super::KmsTimeouts;
use crate::domain::keys::KeyRef;
use crate::domain::keys::gcp::GcpKeyName;
use crate::domain::kms::{
    EncryptionContext, GcpKeyFacts, KeyDescription, KeyProvider, KeyState, KmsError, PlaintextKey,
    VersionState,
};

/// The wrapped form: this tag, the version number (4 bytes, big-endian), Cloud KMS's
/// ciphertext.
const WRAPPED_TAG: &[u8; 4] = b"gkm1";
const DATA_KEY_LEN: usize = 32;

/// What the Google Cloud provider is made from (`CMEK_GCP_*`, see `settings`).
#[derive(Clone, Debug)]
pub struct GcpConfig {
    pub credentials_file: PathBuf,
    /// `https://cloudkms.googleapis.com` unless overridden (tests, private endpoints).
    pub endpoint: Option<String>,
}

pub struct GcpKms {
    client: KeyManagementService,
    timeouts: KmsTimeouts,
}

#[derive(Debug, thiserror::Error)]
pub enum GcpSetupError {
    #[error("the Google Cloud credentials file {0}: {1}")]
    Credentials(String, String),
    #[error("the Cloud KMS client: {0}")]
    Client(String),
}

/// Retries what says to wait (throttling, a service briefly unavailable), nothing else.
#[derive(Debug)]
struct RetryWhenAskedToWait {
    attempts: u32,
}

impl RetryPolicy for RetryWhenAskedToWait {
    fn on_error(&self, state: &RetryState, error: GaxError) -> RetryResult {
        let waits = error
            .status()
            .is_some_and(|s| matches!(s.code, Code::ResourceExhausted | Code::Unavailable))
            || error
                .http_status_code()
                .is_some_and(|c| c == 429 || c == 503);
        if waits && state.attempt_count < self.attempts {
            RetryResult::Continue(error)
        } else {
            RetryResult::Permanent(error)
        }
    }
}

impl GcpKms {
    pub async fn new(config: &GcpConfig, timeouts: KmsTimeouts) -> Result<Self, GcpSetupError> {
        let path = config.credentials_file.display().to_string();
        let bad = |why: String| GcpSetupError::Credentials(path.clone(), why);
        let raw = Zeroizing::new(
            std::fs::read(&config.credentials_file).map_err(|e| bad(e.to_string()))?,
        );
        let key_file: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|_| bad("is not JSON".into()))?;
        let credentials = google_cloud_auth::credentials::service_account::Builder::new(key_file)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(200))
            .with_maximum_delay(Duration::from_secs(2))
            .build()
            .map_err(|e| GcpSetupError::Client(e.to_string()))?;
        let mut builder = KeyManagementService::builder()
            .with_credentials(credentials)
            .with_retry_policy(RetryWhenAskedToWait {
                attempts: timeouts.throttle_attempts.max(1),
            })
            .with_backoff_policy(backoff)
            .with_attempt_timeout(timeouts.call);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let client = builder
            .build()
            .await
            .map_err(|e| GcpSetupError::Client(e.to_string()))?;
        Ok(Self { client, timeouts })
    }

    /// Bounds one call, retries included (the client's own attempt time-out bounds each
    /// attempt; this bounds them all, with their backoff).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = google_cloud_kms_v1::Result<T>>,
    ) -> Result<T, KmsError> {
        let limit =
            self.timeouts.call * self.timeouts.throttle_attempts.max(1) + Duration::from_secs(3);
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(KmsError::Unreachable(format!(
                "Cloud KMS did not answer within {} s",
                limit.as_secs()
            ))),
            Ok(result) => result.map_err(|e| classify(&e)),
        }
    }

    async fn crypto_key(
        &self,
        name: &GcpKeyName,
    ) -> Result<google_cloud_kms_v1::model::CryptoKey, KmsError> {
        self.bounded(
            self.client
                .get_crypto_key()
                .set_name(name.as_string())
                .send(),
        )
        .await
    }
}

fn gcp_name(key: &KeyRef) -> Result<&GcpKeyName, KmsError> {
    match key {
        KeyRef::Gcp { name } => Ok(name),
        _ => Err(KmsError::Misconfigured("not a Google Cloud KMS key".into())),
    }
}

/// CRC32C (Castagnoli), the checksum Cloud KMS verifies on what it receives and returns with
/// what it sends, as Google recommends for every encrypt and decrypt.
fn crc32c(data: &[u8]) -> i64 {
    let mut crc: u32 = !0;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    i64::from(!crc)
}

/// A checksum that did not match: the bytes were damaged on the way, which says nothing
/// about the key (retried as an outage is, never a revocation).
fn corrupted(call: &str) -> KmsError {
    KmsError::Unreachable(format!(
        "Cloud KMS's {call} did not arrive intact (CRC32C mismatch)"
    ))
}

/// The additional authenticated data: the encryption context as JSON, its names in order.
fn aad(context: &EncryptionContext) -> Vec<u8> {
    serde_json::to_vec(&context.0).unwrap_or_default()
}

fn timestamp(ts: Option<&google_cloud_wkt::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds(), t.nanos().max(0) as u32))
}

fn state_name(state: &CryptoKeyVersionState) -> String {
    state
        .name()
        .unwrap_or("CRYPTO_KEY_VERSION_STATE_UNSPECIFIED")
        .to_owned()
}

/// The `locations/<L>` segment of a resource name, whatever the rest looks like.
fn location_of(name: &str) -> Option<String> {
    let mut parts = name.split('/');
    parts
        .by_ref()
        .find(|p| *p == "locations")
        .and_then(|_| parts.next())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// The number at the end of a version's name (`.../cryptoKeyVersions/3`).
fn version_number(version_name: &str) -> Option<u32> {
    version_name
        .rsplit_once("/cryptoKeyVersions/")
        .and_then(|(_, n)| n.parse().ok())
}

fn split_wrapped(wrapped: &[u8]) -> Option<(u32, &[u8])> {
    let rest = wrapped.strip_prefix(WRAPPED_TAG)?;
    let (number, ciphertext) = rest.split_at_checked(4)?;
    let number = u32::from_be_bytes(number.try_into().ok()?);
    (!ciphertext.is_empty()).then_some((number, ciphertext))
}

/// A Cloud KMS answer in the kinds the console acts on (see the issue's classification):
/// a refusal is the key's; an outage, a time-out or the platform's own credentials never are.
fn classify(err: &GaxError) -> KmsError {
    if let Some(status) = err.status() {
        let message = status.message.clone();
        let code = status.code.name().to_owned();
        return match status.code {
            Code::PermissionDenied => KmsError::AccessDenied { code, message },
            Code::NotFound => KmsError::NotFound { code },
            Code::FailedPrecondition => {
                let disabled_detail = status.details.iter().any(|d| {
                    matches!(d, StatusDetails::PreconditionFailure(f)
                        if f.violations.iter().any(|v| v.r#type == "KEY_DISABLED"))
                });
                // Cloud KMS names the version's state at the end of its message ("... is not
                // enabled, current state is: DISABLED."); the names before it are the
                // customer's (a key ring may be called DESTROYED), so only that part is read.
                let state = message
                    .rsplit_once("current state is: ")
                    .map(|(_, rest)| rest.trim_end_matches('.').trim());
                match state {
                    _ if disabled_detail => KmsError::Disabled {
                        code: "DISABLED".into(),
                    },
                    Some("DISABLED") => KmsError::Disabled {
                        code: "DISABLED".into(),
                    },
                    Some("DESTROY_SCHEDULED") => KmsError::PendingDeletion {
                        code: "DESTROY_SCHEDULED".into(),
                    },
                    Some("DESTROYED") => KmsError::NotFound {
                        code: "DESTROYED".into(),
                    },
                    // A version still being made (imported, generated) says nothing yet.
                    Some(other) if other.starts_with("PENDING") => {
                        KmsError::Unreachable(format!("{code}: {message}"))
                    }
                    _ if message.to_ascii_lowercase().contains("purpose") => {
                        KmsError::WrongKeyUsage { code }
                    }
                    _ => KmsError::Other { code, message },
                }
            }
            Code::ResourceExhausted => KmsError::Throttled { code },
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::Aborted
            | Code::Cancelled => KmsError::Unreachable(format!("{code}: {message}")),
            // The platform's own credentials were refused: nothing about the customer's key.
            Code::Unauthenticated => {
                tracing::error!(message, "Cloud KMS refused the platform's credentials");
                KmsError::Misconfigured(format!(
                    "Cloud KMS refused the platform's credentials ({code})"
                ))
            }
            _ => KmsError::Other { code, message },
        };
    }
    if err.is_authentication() {
        tracing::error!(error = %err, "the Google Cloud credentials could not sign a request");
        return KmsError::Misconfigured(
            "the Google Cloud credentials could not sign a request".into(),
        );
    }
    if err.is_timeout() {
        return KmsError::Unreachable("Cloud KMS did not answer in time".into());
    }
    match err.http_status_code() {
        Some(429) => KmsError::Throttled {
            code: "RESOURCE_EXHAUSTED".into(),
        },
        // A bare status without Google's error body comes from something in front of Cloud
        // KMS (a proxy, a gateway), not from it: never a refusal of the key.
        Some(code) => KmsError::Unreachable(format!(
            "HTTP {code} without a Cloud KMS error (from something in front of it?)"
        )),
        // Connection refused or reset, DNS, a body cut short: the KMS was not reached.
        None => {
            // The transport's own words (addresses, the endpoint) go to the log, not to clients.
            tracing::warn!(error = %err, "Cloud KMS could not be reached");
            KmsError::Unreachable("Cloud KMS could not be reached".into())
        }
    }
}

#[async_trait]
impl KeyProvider for GcpKms {
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, KmsError> {
        let name = gcp_name(key)?;
        let crypto_key = self.crypto_key(name).await?;
        let primary = crypto_key.primary.as_ref();
        let primary_state = primary.map(|v| state_name(&v.state));
        let state = match primary_state.as_deref() {
            Some("ENABLED") => KeyState::Enabled,
            Some("DISABLED") => KeyState::Disabled,
            Some("DESTROY_SCHEDULED") => KeyState::PendingDeletion,
            Some(other) => KeyState::Other(other.to_owned()),
            None => KeyState::Other("NO_PRIMARY_VERSION".into()),
        };
        let location = location_of(&crypto_key.name);
        let facts = GcpKeyFacts {
            primary_version: primary
                .and_then(|v| version_number(&v.name))
                .map(|n| n.to_string()),
            primary_state: primary_state.unwrap_or_default(),
            protection_level: primary
                .map(|v| v.protection_level.name().unwrap_or_default().to_owned())
                .or_else(|| {
                    crypto_key
                        .version_template
                        .as_ref()
                        .map(|t| t.protection_level.name().unwrap_or_default().to_owned())
                })
                .unwrap_or_default(),
            rotation_period: crypto_key
                .rotation_period()
                .map(|d| Duration::from_secs(d.seconds().max(0) as u64)),
            next_rotation: timestamp(crypto_key.next_rotation_time.as_ref()),
            destroy_scheduled_duration: crypto_key
                .destroy_scheduled_duration
                .as_ref()
                .map(|d| Duration::from_secs(d.seconds().max(0) as u64)),
            primary_destroy_time: primary.and_then(|v| timestamp(v.destroy_time.as_ref())),
        };
        Ok(KeyDescription {
            key_id: crypto_key.name.clone(),
            state,
            spec: primary
                .map(|v| v.algorithm.name().unwrap_or_default().to_owned())
                .unwrap_or_default(),
            usage: crypto_key.purpose.name().unwrap_or_default().to_owned(),
            region: location,
            azure: None,
            gcp: Some(facts),
        })
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        let name = gcp_name(key)?;
        let (_, ciphertext) = split_wrapped(wrapped).ok_or_else(|| KmsError::Other {
            code: "InvalidCiphertext".into(),
            message: "the wrapped data key is not in the Cloud KMS form".into(),
        })?;
        let aad = aad(context);
        let answer = self
            .bounded(
                self.client
                    .decrypt()
                    .set_name(name.as_string())
                    .set_ciphertext(bytes::Bytes::copy_from_slice(ciphertext))
                    .set_ciphertext_crc32c(crc32c(ciphertext))
                    .set_additional_authenticated_data_crc32c(crc32c(&aad))
                    .set_additional_authenticated_data(aad)
                    .send(),
            )
            .await?;
        let intact = answer.plaintext_crc32c == Some(crc32c(&answer.plaintext));
        let plaintext = PlaintextKey::new(answer.plaintext.to_vec());
        // The answer's copy is ours alone once read: wiped before it is freed.
        if let Ok(mut buffer) = answer.plaintext.try_into_mut() {
            zeroize::Zeroize::zeroize(buffer.as_mut());
        }
        if !intact {
            return Err(corrupted("decrypt"));
        }
        if plaintext.expose().len() != DATA_KEY_LEN {
            return Err(KmsError::Other {
                code: "InvalidPlaintext".into(),
                message: "Cloud KMS returned a data key of the wrong length".into(),
            });
        }
        Ok(plaintext)
    }

    async fn wrap_data_key(
        &self,
        key: &KeyRef,
        plaintext: &PlaintextKey,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let name = gcp_name(key)?;
        let aad = aad(context);
        let answer = self
            .bounded(
                self.client
                    .encrypt()
                    .set_name(name.as_string())
                    // Owned by a buffer that wipes itself when the client lets go of it.
                    .set_plaintext(bytes::Bytes::from_owner(Zeroizing::new(
                        plaintext.expose().to_vec(),
                    )))
                    .set_plaintext_crc32c(crc32c(plaintext.expose()))
                    .set_additional_authenticated_data_crc32c(crc32c(&aad))
                    .set_additional_authenticated_data(aad)
                    .send(),
            )
            .await?;
        // Cloud KMS confirms it received both intact, and says what it sent back.
        if !answer.verified_plaintext_crc32c
            || !answer.verified_additional_authenticated_data_crc32c
            || answer.ciphertext_crc32c != Some(crc32c(&answer.ciphertext))
        {
            return Err(corrupted("encrypt"));
        }
        let number = version_number(&answer.name).ok_or_else(|| KmsError::Other {
            code: "InvalidResponse".into(),
            message: "Cloud KMS's encrypt answer names no key version".into(),
        })?;
        let mut wrapped = Vec::with_capacity(8 + answer.ciphertext.len());
        wrapped.extend_from_slice(WRAPPED_TAG);
        wrapped.extend_from_slice(&number.to_be_bytes());
        wrapped.extend_from_slice(&answer.ciphertext);
        Ok(wrapped)
    }

    async fn rotation_enabled(&self, key: &KeyRef) -> Result<Option<bool>, KmsError> {
        let crypto_key = self.crypto_key(gcp_name(key)?).await?;
        Ok(Some(crypto_key.rotation_period().is_some()))
    }

    fn has_versions(&self) -> bool {
        true
    }

    fn wrapped_version(&self, _key: &KeyRef, wrapped: &[u8]) -> Option<String> {
        split_wrapped(wrapped).map(|(number, _)| number.to_string())
    }

    async fn version_state(&self, key: &KeyRef, version: &str) -> Result<VersionState, KmsError> {
        let name = gcp_name(key)?;
        let number: u32 = version.parse().map_err(|_| KmsError::NotFound {
            code: "NOT_FOUND".into(),
        })?;
        let answer = self
            .bounded(
                self.client
                    .get_crypto_key_version()
                    .set_name(format!("{}/cryptoKeyVersions/{number}", name.as_string()))
                    .send(),
            )
            .await?;
        match state_name(&answer.state).as_str() {
            "ENABLED" => Ok(VersionState {
                enabled: true,
                not_before: None,
                expires: None,
            }),
            "DESTROY_SCHEDULED" => Err(KmsError::PendingDeletion {
                code: "DESTROY_SCHEDULED".into(),
            }),
            "DESTROYED" => Err(KmsError::NotFound {
                code: "DESTROYED".into(),
            }),
            _ => Ok(VersionState {
                enabled: false,
                not_before: None,
                expires: None,
            }),
        }
    }

    async fn held_permissions(
        &self,
        key: &KeyRef,
        wanted: &[&str],
    ) -> Result<Option<Vec<String>>, KmsError> {
        let name = gcp_name(key)?;
        let answer = self
            .bounded(
                self.client
                    .test_iam_permissions()
                    .set_resource(name.as_string())
                    .set_permissions(wanted.iter().copied())
                    .send(),
            )
            .await?;
        Ok(Some(answer.permissions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapped_form_names_its_version() {
        let mut wrapped = WRAPPED_TAG.to_vec();
        wrapped.extend_from_slice(&7u32.to_be_bytes());
        wrapped.extend_from_slice(b"ciphertext");
        assert_eq!(split_wrapped(&wrapped), Some((7, &b"ciphertext"[..])));
        assert_eq!(split_wrapped(b"gkm1\0\0\0\x07"), None, "no ciphertext");
        assert_eq!(
            split_wrapped(b"akv2xxxxxxxx"),
            None,
            "another provider's form"
        );
        assert_eq!(
            version_number("projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/12"),
            Some(12)
        );
        assert_eq!(
            location_of("projects/123456789/locations/us-east1/keyRings/r/cryptoKeys/k").as_deref(),
            Some("us-east1")
        );
        assert_eq!(location_of("projects/p/keyRings/r"), None);
    }

    #[test]
    fn crc32c_is_castagnolis() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn the_additional_data_is_the_context_in_order() {
        let a = EncryptionContext::default().with("b", "2").with("a", "1");
        assert_eq!(aad(&a), br#"{"a":"1","b":"2"}"#.to_vec());
    }

    fn status(code: Code, message: &str) -> GaxError {
        GaxError::service(
            google_cloud_gax::error::rpc::Status::default()
                .set_code(code)
                .set_message(message),
        )
    }

    #[test]
    fn cloud_kms_answers_are_classified_as_the_issue_lists() {
        use crate::domain::keys::KeyStatus;
        let v = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
        for (err, status) in [
            (
                status(Code::PermissionDenied, "Permission denied"),
                KeyStatus::AccessDenied,
            ),
            (
                status(
                    Code::FailedPrecondition,
                    &format!("{v} is not enabled, current state is: DISABLED."),
                ),
                KeyStatus::Disabled,
            ),
            (
                status(
                    Code::FailedPrecondition,
                    &format!("{v} is not enabled, current state is: DESTROY_SCHEDULED."),
                ),
                KeyStatus::PendingDeletion,
            ),
            (
                status(
                    Code::FailedPrecondition,
                    &format!("{v} is not enabled, current state is: DESTROYED."),
                ),
                KeyStatus::NotFound,
            ),
            (
                status(Code::NotFound, "CryptoKey x not found."),
                KeyStatus::NotFound,
            ),
            (status(Code::Aborted, "try again"), KeyStatus::Unreachable),
            (
                status(
                    Code::FailedPrecondition,
                    "projects/p/locations/l/keyRings/DESTROYED/cryptoKeys/k/cryptoKeyVersions/1 is not enabled, current state is: DISABLED.",
                ),
                KeyStatus::Disabled,
            ),
            (
                status(
                    Code::FailedPrecondition,
                    &format!("{v} is not enabled, current state is: PENDING_GENERATION."),
                ),
                KeyStatus::Unreachable,
            ),
            (
                GaxError::http(
                    407,
                    http::HeaderMap::new(),
                    bytes::Bytes::from_static(b"Proxy Authentication Required"),
                ),
                KeyStatus::Unreachable,
            ),
            (
                status(Code::Unavailable, "The service is currently unavailable."),
                KeyStatus::Unreachable,
            ),
            (
                status(Code::DeadlineExceeded, "Deadline exceeded"),
                KeyStatus::Unreachable,
            ),
            (
                status(Code::Unauthenticated, "invalid credentials"),
                KeyStatus::Unreachable,
            ),
            (
                status(Code::ResourceExhausted, "quota"),
                KeyStatus::Unreachable,
            ),
            (
                GaxError::http(
                    502,
                    http::HeaderMap::new(),
                    bytes::Bytes::from_static(b"Bad Gateway"),
                ),
                KeyStatus::Unreachable,
            ),
            (GaxError::timeout("slow"), KeyStatus::Unreachable),
            (GaxError::io("connection reset"), KeyStatus::Unreachable),
        ] {
            assert_eq!(classify(&err).key_status(), status, "{err:?}");
        }
    }
}
