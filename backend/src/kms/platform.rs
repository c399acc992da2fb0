//! The platform-held key of projects without CMEK (the seeds: "encrypted storage under a
//! platform-held key"): a 32-byte key in a file of its own (`CMEK_PLATFORM_KEY_FILE`,
//! default `platform-data.key` in the data directory, 0600). Data keys are generated here
//! and wrapped with AES-256-GCM, bound to their encryption context. Instances that share
//! object storage must share this file.

use std::path::Path;

use zeroize::Zeroizing;

use crate::crypto::keys::{fingerprint, key_file, random_key, seal, unseal};
use crate::domain::clusters::PlatformKey;
use crate::domain::kms::{DataKey, EncryptionContext, KmsError, PlaintextKey};

pub struct PlatformKms {
    key: Zeroizing<[u8; 32]>,
}

fn aad(context: &EncryptionContext) -> Vec<u8> {
    let context = serde_json::to_string(&context.0).unwrap_or_default();
    format!("platform-data-key:{context}").into_bytes()
}

impl PlatformKms {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            key: key_file(path)?,
        })
    }

    /// The key's fingerprint (see `crypto::keys::fingerprint`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key, "platform-data.key")
    }
}

impl PlatformKey for PlatformKms {
    fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, KmsError> {
        let plaintext = random_key();
        let wrapped =
            seal(&self.key, plaintext.as_ref(), &aad(context)).ok_or_else(|| KmsError::Other {
                code: "PlatformKeyError".into(),
                message: "the platform key could not wrap a data key".into(),
            })?;
        Ok(DataKey {
            plaintext: PlaintextKey::new(plaintext.to_vec()),
            wrapped,
        })
    }

    fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        unseal(&self.key, wrapped, &aad(context))
            .map(|plain| PlaintextKey::new(plain.to_vec()))
            .ok_or_else(|| KmsError::Other {
                code: "InvalidCiphertextException".into(),
                message: "the data key does not unwrap under the platform key".into(),
            })
    }
}
