//! Secrets the console hands out (sign-in links, sessions, API keys) and how they are
//! compared: 256 random bits shown once, kept only as SHA-256, and compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A credential in the clear, to hand out exactly once.
pub struct NewSecret {
    pub plaintext: String,
    pub hash: String,
}

impl NewSecret {
    /// 256 random bits, URL-safe, behind a prefix that says what the secret is.
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let plaintext = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = hash_secret(&plaintext);
        Self { plaintext, hash }
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that takes the same time wherever the inputs differ (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal_inputs_compare_as_expected() {
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }
}
