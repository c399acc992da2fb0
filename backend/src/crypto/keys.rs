//! Keys of the console's own: 32-byte key files (read, or created private on first use),
//! their fingerprints, and AES-256-GCM sealing with a random nonce. The local KMS (development)
//! and the platform key (production) both use these; nothing here is specific to either.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// How a private file (mode 0600) is opened.
pub enum Private {
    /// Created; refused if it exists.
    New,
    /// Created if missing; written at its end.
    Append,
}

/// Options that create a file readable by this user only (0600 where modes exist), the one
/// place where the console's key files and database files get their mode. The mode applies
/// when the file is created; an existing file keeps its own (`settings.rs` tightens the
/// database's at start).
pub fn private_file(how: Private) -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    match how {
        Private::New => options.write(true).create_new(true),
        Private::Append => options.create(true).append(true),
    };
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

pub(crate) fn random<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    rand::rng().fill_bytes(bytes.as_mut());
    bytes
}

// aes-gcm 0.10 takes nonces as generic-array 0.14 slices, whose `from_slice` is deprecated.
#[allow(deprecated)]
pub(crate) fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let nonce = random::<12>();
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_ref()),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .ok()?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Some(out)
}

#[allow(deprecated)]
pub(crate) fn unseal(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < 12 {
        return None;
    }
    let (nonce, sealed) = blob.split_at(12);
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .ok()
        .map(Zeroizing::new)
}

/// A 32-byte key kept in a file of its own: read, or created (0600) on first use.
pub(crate) fn key_file(path: &Path) -> std::io::Result<Zeroizing<[u8; 32]>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let mut key = Zeroizing::new([0u8; 32]);
            if bytes.len() != 32 {
                return Err(std::io::Error::other(format!(
                    "{} must hold exactly 32 bytes",
                    path.display()
                )));
            }
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random::<32>();
            private_file(Private::New)
                .open(path)?
                .write_all(key.as_ref())?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// A fingerprint of a key file's key, to tell the file the database was used with from
/// another one (HMAC under the key itself: nothing of the key can be learned from it).
pub(crate) fn fingerprint(key: &[u8; 32], name: &str) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("cmek-console key file check: {name}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub(crate) fn random_key() -> Zeroizing<[u8; 32]> {
    random::<32>()
}
