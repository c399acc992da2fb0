//! The built-in local KMS: per-organization keys whose material (32 random bytes per
//! version) is stored wrapped with AES-256-GCM under a master key file in the data
//! directory (created on first start, mode 0600). Data keys are wrapped the same way under
//! the key's current version, bound to the encryption context; rotation adds a version and
//! older wrapped data keys still unwrap. Unlike moto, it enforces key state: a disabled key
//! neither wraps nor unwraps. For development only (refused in production).

use std::path::Path;

use async_trait::async_trait;
use sea_orm::DatabaseConnection;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::keys::{fingerprint, key_file, random, seal, unseal};
use crate::domain::keys::KeyRef;
use crate::domain::kms::{
    EncryptionContext, KeyDescription, KeyProvider, KeyState, KmsError, PlaintextKey, VersionState,
};
use crate::domain::local_kms::{LocalKey, LocalKeyAdmin};
use crate::domain::ports::StoreError;
use crate::store::local_kms as rows;

const MASTER_FILE: &str = "local-kms-master.key";
const WRAP_MAGIC: &[u8; 3] = b"LK1";

pub struct LocalKms {
    master: Zeroizing<[u8; 32]>,
    db: DatabaseConnection,
}

fn internal(what: &str) -> KmsError {
    KmsError::Other {
        code: "KMSInternalException".into(),
        message: what.into(),
    }
}

/// Storage failures are logged with their cause; users learn only that the KMS is unavailable.
fn store_error(err: StoreError) -> KmsError {
    tracing::error!(error = %err, "local KMS storage failed");
    KmsError::Unreachable("the local KMS could not read its keys".into())
}

impl LocalKms {
    /// Opens the master key in `data_dir`, creating it (0600) on first use.
    pub fn open(data_dir: &Path, db: DatabaseConnection) -> std::io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let master = key_file(&data_dir.join(MASTER_FILE))?;
        Ok(Self { master, db })
    }

    /// The master key's fingerprint (see `fingerprint`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.master, MASTER_FILE)
    }

    fn material_aad(key_id: Uuid, version: i32) -> Vec<u8> {
        format!("local-key-material:{key_id}:{version}").into_bytes()
    }

    fn data_key_aad(key_id: Uuid, context: &EncryptionContext) -> Vec<u8> {
        let context = serde_json::to_string(&context.0).unwrap_or_default();
        format!("local-data-key:{key_id}:{context}").into_bytes()
    }

    async fn key(&self, key: &KeyRef) -> Result<LocalKey, KmsError> {
        let KeyRef::Local {
            key_id,
            organization_id,
        } = key
        else {
            return Err(KmsError::Other {
                code: "WrongProvider".into(),
                message: "not a local key".into(),
            });
        };
        match rows::get(&self.db, *key_id).await.map_err(store_error)? {
            Some(key) if key.organization_id == *organization_id => Ok(key),
            _ => Err(KmsError::NotFound {
                code: "NotFoundException".into(),
            }),
        }
    }

    async fn usable(&self, key: &KeyRef) -> Result<LocalKey, KmsError> {
        let key = self.key(key).await?;
        if !key.enabled {
            return Err(KmsError::Disabled {
                code: "DisabledException".into(),
            });
        }
        Ok(key)
    }

    async fn material(&self, key_id: Uuid, version: i32) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let sealed = rows::material(&self.db, key_id, version)
            .await
            .map_err(store_error)?
            .ok_or_else(|| KmsError::Other {
                code: "InvalidCiphertextException".into(),
                message: "unknown key version".into(),
            })?;
        // The console's own configuration (another master key file), never the key's owner
        // revoking anything: reported as the console's fault, which stops no cluster.
        let plain = unseal(&self.master, &sealed, &Self::material_aad(key_id, version))
            .ok_or_else(|| {
                KmsError::Misconfigured(
                    "the local KMS's master key file does not open this key's material".into(),
                )
            })?;
        let mut material = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(internal("key material has the wrong length"));
        }
        material.copy_from_slice(&plain);
        Ok(material)
    }

    fn new_material(&self, key_id: Uuid, version: i32) -> Result<Vec<u8>, StoreError> {
        let material = random::<32>();
        seal(
            &self.master,
            material.as_ref(),
            &Self::material_aad(key_id, version),
        )
        .ok_or_else(|| StoreError::Corrupt("could not seal new key material".into()))
    }
}

#[async_trait]
impl KeyProvider for LocalKms {
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, KmsError> {
        let key = self.key(key).await?;
        Ok(KeyDescription {
            azure: None,
            gcp: None,
            key_id: key.id.to_string(),
            state: if key.enabled {
                KeyState::Enabled
            } else {
                KeyState::Disabled
            },
            spec: "SYMMETRIC_DEFAULT".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            region: None,
        })
    }

    /// Seals under the key's current version.
    async fn wrap_data_key(
        &self,
        key: &KeyRef,
        plaintext: &PlaintextKey,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let local = self.usable(key).await?;
        let material = self.material(local.id, local.version).await?;
        let sealed = seal(
            &material,
            plaintext.expose(),
            &Self::data_key_aad(local.id, context),
        )
        .ok_or_else(|| internal("could not wrap the data key"))?;
        let mut wrapped = WRAP_MAGIC.to_vec();
        wrapped.extend(local.version.to_be_bytes());
        wrapped.extend(sealed);
        Ok(wrapped)
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        let local = self.usable(key).await?;
        let invalid = || KmsError::Other {
            code: "InvalidCiphertextException".into(),
            message: "the wrapped key does not open under this key and context".into(),
        };
        let rest = wrapped
            .strip_prefix(WRAP_MAGIC.as_slice())
            .ok_or_else(invalid)?;
        let (version, sealed) = rest.split_at_checked(4).ok_or_else(invalid)?;
        let version = i32::from_be_bytes(version.try_into().map_err(|_| invalid())?);
        let material = self.material(local.id, version).await?;
        let plain = unseal(&material, sealed, &Self::data_key_aad(local.id, context))
            .ok_or_else(invalid)?;
        Ok(PlaintextKey::new(plain.to_vec()))
    }

    async fn rotation_enabled(&self, _key: &KeyRef) -> Result<Option<bool>, KmsError> {
        Ok(None)
    }

    fn has_versions(&self) -> bool {
        true
    }

    fn wrapped_version(&self, _key: &KeyRef, wrapped: &[u8]) -> Option<String> {
        let version = wrapped.strip_prefix(WRAP_MAGIC.as_slice())?.get(..4)?;
        Some(i32::from_be_bytes(version.try_into().ok()?).to_string())
    }

    /// A local key's versions are enabled and disabled with the key; a version whose
    /// material is gone is not found.
    async fn version_state(&self, key: &KeyRef, version: &str) -> Result<VersionState, KmsError> {
        let local = self.key(key).await?;
        let number: i32 = version.parse().map_err(|_| KmsError::NotFound {
            code: "NotFoundException".into(),
        })?;
        self.material(local.id, number).await?;
        Ok(VersionState {
            enabled: local.enabled,
            not_before: None,
            expires: None,
        })
    }
}

#[async_trait]
impl LocalKeyAdmin for LocalKms {
    async fn list(&self, organization_id: Uuid) -> Result<Vec<LocalKey>, StoreError> {
        rows::list(&self.db, organization_id).await
    }

    async fn get(&self, organization_id: Uuid, id: Uuid) -> Result<Option<LocalKey>, StoreError> {
        Ok(rows::get(&self.db, id)
            .await?
            .filter(|key| key.organization_id == organization_id))
    }

    fn seal_new_material(&self, key_id: Uuid, version: i32) -> Result<Vec<u8>, StoreError> {
        self.new_material(key_id, version)
    }
}
