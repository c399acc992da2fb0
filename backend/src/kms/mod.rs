//! KMS adapters implementing the domain's `KeyProvider`: AWS KMS through aws-sdk-kms, Azure Key
//! Vault through the Azure SDK, Google Cloud KMS through its Rust client, and the built-in
//! local KMS for development.

pub mod aws;
pub mod azure;
pub mod gcp;
pub mod local;
pub mod platform;

use std::time::Duration;

/// Bounds on every KMS call, so a KMS that is down or slow answers "unreachable" quickly.
#[derive(Clone, Copy, Debug)]
pub struct KmsTimeouts {
    pub connect: Duration,
    /// One attempt of one call.
    pub call: Duration,
    /// Attempts for a throttled call (throttling is the only error retried).
    pub throttle_attempts: u32,
}

impl Default for KmsTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            call: Duration::from_secs(5),
            throttle_attempts: 3,
        }
    }
}
