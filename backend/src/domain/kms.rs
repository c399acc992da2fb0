//! The key management port: what the domain needs from a KMS, whichever provider it is.
//! Plaintext data keys live only in memory, in `PlaintextKey`, which zeroizes on drop and
//! never prints.

use std::collections::BTreeMap;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::domain::keys::{KeyRef, KeyStatus};

/// A plaintext data key: in memory only, zeroized when dropped, redacted in `Debug`.
pub struct PlaintextKey(Zeroizing<Vec<u8>>);

impl PlaintextKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// 32 random bytes (an AES-256 data key), made in place so no copy is left behind.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison, for the round-trip check.
    pub fn same_as(&self, other: &PlaintextKey) -> bool {
        crate::domain::secrets::constant_time_eq(self.expose(), other.expose())
    }
}

impl std::fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlaintextKey(<{} bytes redacted>)", self.0.len())
    }
}

/// A data key as the KMS returns it: the plaintext for use now, the wrapped form to store.
#[derive(Debug)]
pub struct DataKey {
    pub plaintext: PlaintextKey,
    pub wrapped: Vec<u8>,
}

/// Binds a wrapped data key to what it is for (organization, project, purpose); the KMS
/// refuses to unwrap it under any other context. Never secret: it shows in KMS audit logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(pub BTreeMap<String, String>);

impl EncryptionContext {
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// A digest of the whole context (names and values, length-prefixed, in order), for KMSs
    /// that take no associated data: wrapped with the key, it binds the two as AWS's context does.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"cmek-console encryption context\0");
        for (k, v) in &self.0 {
            for part in [k, v] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part.as_bytes());
            }
        }
        hash.finalize().into()
    }
}

/// The key's state as the KMS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    /// Any other state (PendingImport, Unavailable, Creating, ...), named by the KMS.
    Other(String),
}

#[derive(Clone, Debug)]
pub struct KeyDescription {
    /// The key's ARN or id as the KMS names it.
    pub key_id: String,
    pub state: KeyState,
    /// `SYMMETRIC_DEFAULT`, `RSA_2048`, ...
    pub spec: String,
    /// `ENCRYPT_DECRYPT`, `SIGN_VERIFY`, ...
    pub usage: String,
    /// The region the KMS says the key is in, when it says.
    pub region: Option<String>,
    /// What Key Vault says of a key beyond the above (its own checks use these).
    pub azure: Option<AzureKeyFacts>,
    /// What Cloud KMS says of a key beyond the above.
    pub gcp: Option<GcpKeyFacts>,
}

/// A Cloud KMS key as `getCryptoKey` describes it.
#[derive(Clone, Debug, Default)]
pub struct GcpKeyFacts {
    /// The primary version's number, when the key has one.
    pub primary_version: Option<String>,
    /// `ENABLED`, `DISABLED`, `DESTROY_SCHEDULED`, `DESTROYED`, ... (empty: no primary).
    pub primary_state: String,
    /// `SOFTWARE`, `HSM`, `EXTERNAL`, `EXTERNAL_VPC`.
    pub protection_level: String,
    pub rotation_period: Option<std::time::Duration>,
    pub next_rotation: Option<chrono::DateTime<chrono::Utc>>,
    /// How long a version stays DESTROY_SCHEDULED before it is destroyed.
    pub destroy_scheduled_duration: Option<std::time::Duration>,
    /// When a primary scheduled for destruction is destroyed.
    pub primary_destroy_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// An Azure Key Vault key as `GET /keys/{name}` describes it, and the vault's region header.
#[derive(Clone, Debug, Default)]
pub struct AzureKeyFacts {
    /// The current version (the last segment of the key's `kid`).
    pub version: String,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct-HSM`.
    pub kty: String,
    /// The RSA modulus size in bits (from `n`), for RSA keys.
    pub modulus_bits: Option<usize>,
    pub key_ops: Vec<String>,
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// `Recoverable`, `Recoverable+Purgeable`, `CustomizedRecoverable`, ...
    pub recovery_level: Option<String>,
    /// The Microsoft Entra tenant the vault belongs to (from its challenge).
    pub tenant: String,
    /// When the current version was made (the last rotation, for a rotated key).
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

/// One key version's attributes: whether it may be used, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionState {
    pub enabled: bool,
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

impl VersionState {
    /// What the version's attributes mean at `now`: usable, or the status it gives the data
    /// keys it wrapped (an expired or not yet valid version refuses to unwrap, like a
    /// disabled one).
    pub fn status_at(&self, now: chrono::DateTime<chrono::Utc>) -> KeyStatus {
        let in_window = self.not_before.is_none_or(|nbf| nbf <= now)
            && self.expires.is_none_or(|exp| exp > now);
        if self.enabled && in_window {
            KeyStatus::Active
        } else {
            KeyStatus::Disabled
        }
    }
}

/// Why a KMS call failed, in the few kinds the console acts on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    #[error("access denied ({code}): {message}")]
    AccessDenied { code: String, message: String },
    #[error("the key is disabled")]
    Disabled { code: String },
    #[error("the key is pending deletion or in an invalid state")]
    PendingDeletion { code: String },
    #[error("the key does not exist")]
    NotFound { code: String },
    #[error("the key cannot be used for encryption ({code})")]
    WrongKeyUsage { code: String },
    #[error("the KMS is throttling requests")]
    Throttled { code: String },
    #[error("the KMS could not be reached: {0}")]
    Unreachable(String),
    /// The console could not make the call (its own configuration): like an outage, it says
    /// nothing about the customer's key.
    #[error("ConfigurationError: {0}")]
    Misconfigured(String),
    #[error("{code}: {message}")]
    Other { code: String, message: String },
}

impl KmsError {
    /// What this failure says about the key. Unreachable and throttled say nothing about the
    /// key itself (never a revocation); a key the KMS refuses in some other way is one the
    /// platform cannot use.
    pub fn key_status(&self) -> KeyStatus {
        match self {
            KmsError::AccessDenied { .. }
            | KmsError::WrongKeyUsage { .. }
            | KmsError::Other { .. } => KeyStatus::AccessDenied,
            KmsError::Disabled { .. } => KeyStatus::Disabled,
            KmsError::PendingDeletion { .. } => KeyStatus::PendingDeletion,
            KmsError::NotFound { .. } => KeyStatus::NotFound,
            KmsError::Throttled { .. } | KmsError::Unreachable(_) | KmsError::Misconfigured(_) => {
                KeyStatus::Unreachable
            }
        }
    }

    /// The KMS error code to show users (`AccessDeniedException`, ...).
    pub fn code(&self) -> &str {
        match self {
            KmsError::AccessDenied { code, .. }
            | KmsError::Disabled { code }
            | KmsError::PendingDeletion { code }
            | KmsError::NotFound { code }
            | KmsError::WrongKeyUsage { code }
            | KmsError::Throttled { code }
            | KmsError::Other { code, .. } => code,
            KmsError::Unreachable(_) => "Unreachable",
            KmsError::Misconfigured(_) => "ConfigurationError",
        }
    }
}

#[async_trait]
pub trait KeyProvider: Send + Sync {
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, KmsError>;
    /// A new data key: by default 32 random bytes made here and wrapped by the key (a KMS
    /// that makes data keys itself, AWS's GenerateDataKey, says so by overriding this).
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let plaintext = PlaintextKey::random();
        let wrapped = self.wrap_data_key(key, &plaintext, context).await?;
        Ok(DataKey { plaintext, wrapped })
    }
    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError>;
    /// Wraps a data key that exists already (a key change moves it to another key or to the
    /// current version) in the form `generate_data_key` gives, bound to the same context.
    async fn wrap_data_key(
        &self,
        key: &KeyRef,
        plaintext: &PlaintextKey,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError>;
    /// Whether the KMS rotates the key automatically (R9); `None` when it cannot say.
    async fn rotation_enabled(&self, key: &KeyRef) -> Result<Option<bool>, KmsError>;
    /// Which of `wanted` (IAM permissions) the platform holds on the key, for a KMS that can
    /// say (Cloud KMS's testIamPermissions); `None` when it cannot.
    async fn held_permissions(
        &self,
        key: &KeyRef,
        wanted: &[&str],
    ) -> Result<Option<Vec<String>>, KmsError> {
        let _ = (key, wanted);
        Ok(None)
    }
    /// Whether a key has versions of its own to watch beside the key itself (Azure, local);
    /// AWS's backing keys are the KMS's business (Decrypt finds them), so there is nothing
    /// more to probe, and the monitor skips the versions' bookkeeping.
    fn has_versions(&self) -> bool {
        false
    }
    /// The key version that wrapped `wrapped`, read from the wrapped form itself (no KMS
    /// call). By default the key itself: a KMS that finds the backing key on its own (AWS
    /// Decrypt) never breaks an old data key by rotating.
    fn wrapped_version(&self, key: &KeyRef, wrapped: &[u8]) -> Option<String> {
        let _ = wrapped;
        Some(key.display())
    }
    /// What the KMS says of one version of the key (by default a version is the key itself,
    /// see `wrapped_version`).
    async fn version_state(&self, key: &KeyRef, version: &str) -> Result<VersionState, KmsError> {
        let _ = version;
        let described = self.describe(key).await?;
        match described.state {
            KeyState::Enabled | KeyState::Disabled => Ok(VersionState {
                enabled: described.state == KeyState::Enabled,
                not_before: None,
                expires: None,
            }),
            KeyState::PendingDeletion => Err(KmsError::PendingDeletion {
                code: "KMSInvalidStateException".into(),
            }),
            KeyState::Other(state) => Err(KmsError::Other {
                code: "KMSInvalidStateException".into(),
                message: format!("the key is {state}"),
            }),
        }
    }
}

/// A region whose key the KMS refused or could not be reached for.
#[derive(Clone, Debug)]
pub struct RegionFailure {
    pub region: String,
    /// The key as users know it (ARN, local key id), or the platform key.
    pub key: String,
    pub error: KmsError,
}
