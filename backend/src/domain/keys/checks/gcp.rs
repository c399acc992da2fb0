//! Google Cloud KMS's checklist: what `getCryptoKey` says of the key (purpose, primary
//! version, location), the permissions the platform holds on it (`testIamPermissions`), then
//! an encrypt and decrypt of a random 32-byte data key with the encryption context as
//! additional authenticated data, compared in constant time. Protection level, rotation and
//! the destroy-scheduled duration are shown as information.

use super::{Check, CheckOutcome, Run};
use crate::domain::keys::region::Region;
use crate::domain::keys::{KeyRef, KeyStatus};
use crate::domain::kms::{EncryptionContext, GcpKeyFacts, KeyProvider, KmsError};

const EXISTS: &str = "Key exists (getCryptoKey)";
const PURPOSE: &str = "Purpose ENCRYPT_DECRYPT";
const PRIMARY: &str = "Primary version enabled";
const LOCATION: &str = "Key location matches";
const PERMISSIONS: &str = "Encrypt and decrypt permissions (testIamPermissions)";
const ENCRYPT: &str = "Encrypt a data key (encrypt, with additional authenticated data)";
const DECRYPT: &str = "Decrypt round trip (decrypt)";
const PROTECTION: &str = "Protection level";
const DESTROY: &str = "Destroy-scheduled duration";

/// The permissions the platform needs, as Cloud KMS names them.
const USE: [&str; 2] = [
    "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
];

/// Runs the checks into `run`; returns the rotation item's text, and whether the key rotates,
/// when the key was read.
pub(super) async fn checks(
    run: &mut Run<'_>,
    provider: &dyn KeyProvider,
    key: &KeyRef,
    region: &Region,
    context: &EncryptionContext,
) -> Option<(String, bool)> {
    let described = match provider.describe(key).await {
        Err(err) => {
            run.kms_fail("reachable", EXISTS, &err, key, region);
            let why = "not run: the key could not be read";
            for (id, title) in [
                ("purpose", PURPOSE),
                ("enabled", PRIMARY),
                ("region", LOCATION),
                ("permissions", PERMISSIONS),
                ("encrypt", ENCRYPT),
                ("decrypt_round_trip", DECRYPT),
            ] {
                run.skip(id, title, why);
            }
            return None;
        }
        Ok(d) => d,
    };
    run.pass(
        "reachable",
        EXISTS,
        format!("Cloud KMS returns {}.", described.key_id),
    );
    let facts = described.gcp.clone().unwrap_or_default();
    if described.usage == "ENCRYPT_DECRYPT" {
        run.pass(
            "purpose",
            PURPOSE,
            "A symmetric key for encryption and decryption.".into(),
        );
    } else {
        run.fail(
            "purpose",
            PURPOSE,
            format!("The key's purpose is {}.", super::or_unknown(&described.usage)),
            Some("FAILED_PRECONDITION".into()),
            "Create a key with purpose Symmetric encrypt/decrypt (gcloud kms keys create --purpose=encryption) and use its name.".into(),
        );
    }
    primary_check(run, &facts);
    match described.region.as_deref() {
        Some(actual) if actual == region.as_str() => {
            run.pass("region", LOCATION, format!("The key is in {region}."))
        }
        Some(actual) => run.fail(
            "region",
            LOCATION,
            format!("The key is in {actual}, but the encryption key is for {region}."),
            Some("LocationMismatch".into()),
            format!("Create the key ring and key in {region} (a key's location must be its clusters' region), or choose {actual} as the region."),
        ),
        None => run.fail_showing(
            Some(KeyStatus::Unreachable),
            "region",
            LOCATION,
            "Cloud KMS returned a key name without a location.".into(),
            Some("LocationUnknown".into()),
            "Check that CMEK_GCP_KMS_ENDPOINT points at Cloud KMS itself, then test again.".into(),
        ),
    }
    match provider.held_permissions(key, &USE).await {
        Ok(Some(held)) => {
            let missing: Vec<&str> = USE
                .into_iter()
                .filter(|p| !held.iter().any(|h| h == p))
                .collect();
            if missing.is_empty() {
                run.pass(
                    "permissions",
                    PERMISSIONS,
                    "The platform's service account may encrypt and decrypt with the key.".into(),
                );
            } else {
                run.fail_showing(
                    Some(KeyStatus::AccessDenied),
                    "permissions",
                    PERMISSIONS,
                    format!("The platform's service account lacks {}.", missing.join(" and ")),
                    Some("PERMISSION_DENIED".into()),
                    "Grant roles/cloudkms.cryptoKeyEncrypterDecrypter on the key to the platform's service account (step 2), then test again.".into(),
                );
            }
        }
        Ok(None) => run.pass(
            "permissions",
            PERMISSIONS,
            "The KMS does not report permissions; the round trip below tests them.".into(),
        ),
        Err(err) => run.kms_fail("permissions", PERMISSIONS, &err, key, region),
    }
    match provider.generate_data_key(key, context).await {
        Err(err) => {
            run.kms_fail("encrypt", ENCRYPT, &err, key, region);
            run.skip(
                "decrypt_round_trip",
                DECRYPT,
                "not run: no data key was encrypted",
            );
        }
        Ok(data_key) => {
            run.pass(
                "encrypt",
                ENCRYPT,
                format!(
                    "A random {}-byte data key was encrypted, bound to the encryption context.",
                    data_key.plaintext.expose().len()
                ),
            );
            match provider.decrypt_data_key(key, &data_key.wrapped, context).await {
                Ok(plain) if plain.same_as(&data_key.plaintext) => run.pass(
                    "decrypt_round_trip",
                    DECRYPT,
                    "The encrypted data key decrypts to the same key.".into(),
                ),
                Ok(_) => run.fail(
                    "decrypt_round_trip",
                    DECRYPT,
                    "Decrypt returned a different key.".into(),
                    None,
                    "Cloud KMS returned inconsistent results; contact your Google Cloud administrator.".into(),
                ),
                Err(err) => run.kms_fail("decrypt_round_trip", DECRYPT, &err, key, region),
            }
        }
    }
    info(
        run,
        "protection_level",
        PROTECTION,
        match facts.protection_level.as_str() {
            "" => "Cloud KMS did not report the protection level.".into(),
            "HSM" => "HSM: the key material never leaves Cloud HSM.".into(),
            level if level.starts_with("EXTERNAL") => format!(
                "{level}: the key material is held by an external key manager; its availability decides this key's."
            ),
            level => format!("{level}."),
        },
    );
    info(
        run,
        "destroy_scheduled_duration",
        DESTROY,
        match facts.destroy_scheduled_duration {
            Some(d) => format!(
                "A version scheduled for destruction is destroyed after {} days; until then it can be restored.",
                d.as_secs() / 86_400
            ),
            None => "Cloud KMS did not report the duration.".into(),
        },
    );
    Some((rotation_text(&facts), facts.rotation_period.is_some()))
}

fn primary_check(run: &mut Run<'_>, facts: &GcpKeyFacts) {
    let version = facts.primary_version.as_deref().unwrap_or("?");
    let restore =
        "Restore the version (gcloud kms keys versions restore), enable it, then test again.";
    match facts.primary_state.as_str() {
        "ENABLED" => run.pass("enabled", PRIMARY, format!("Primary version {version} is ENABLED.")),
        "DISABLED" => run.fail_showing(Some(KeyStatus::Disabled), "enabled", PRIMARY,
            format!("Primary version {version} is DISABLED."), Some("DISABLED".into()),
            format!("Enable the key's primary version (gcloud kms keys versions enable {version} --key=...), then test again.")),
        "DESTROY_SCHEDULED" => run.fail_showing(Some(KeyStatus::PendingDeletion), "enabled", PRIMARY,
            match facts.primary_destroy_time {
                Some(at) => format!("Primary version {version} is DESTROY_SCHEDULED: it will be destroyed at {}.", at.format("%Y-%m-%d %H:%M UTC")),
                None => format!("Primary version {version} is DESTROY_SCHEDULED."),
            },
            Some("DESTROY_SCHEDULED".into()), restore.into()),
        "DESTROYED" => run.fail_showing(Some(KeyStatus::NotFound), "enabled", PRIMARY,
            format!("Primary version {version} is DESTROYED: its key material is gone."), Some("DESTROYED".into()),
            "Rotate the key to a new primary version, or use another key.".into()),
        "" => run.fail("enabled", PRIMARY, "The key has no primary version (only encrypt/decrypt keys have one).".into(),
            Some("FAILED_PRECONDITION".into()), "Use a key with purpose Symmetric encrypt/decrypt.".into()),
        other => run.fail_showing(Some(KeyStatus::Disabled), "enabled", PRIMARY,
            format!("Primary version {version} is {other}."), Some(other.to_owned()),
            "Wait until the primary version is ENABLED, then test again.".into()),
    }
}

fn info(run: &mut Run<'_>, id: &'static str, title: &'static str, detail: String) {
    run.push(Check {
        id,
        title,
        required: false,
        outcome: CheckOutcome::Info,
        detail,
        code: None,
        fix: None,
        shows: None,
    });
}

fn rotation_text(facts: &GcpKeyFacts) -> String {
    let version = facts.primary_version.as_deref().unwrap_or("?");
    match (facts.rotation_period, facts.next_rotation) {
        (Some(period), next) => format!(
            "Rotates every {} days{}; primary version {version}. Each data key records the version that encrypted it, so nothing here needs updating.",
            period.as_secs() / 86_400,
            next.map(|n| format!(", next on {}", n.format("%Y-%m-%d")))
                .unwrap_or_default()
        ),
        (None, _) => format!(
            "Automatic rotation is off; primary version {version}. Recommended: set a rotation period (gcloud kms keys update --rotation-period=90d)."
        ),
    }
}

/// A one-line fix for a Cloud KMS failure.
pub(super) fn fix(err: &KmsError, region: &Region) -> String {
    match err {
        KmsError::AccessDenied { message, .. } if message.contains("cloudkms.cryptoKeys.get") || message.contains("cloudkms.cryptoKeyVersions.get") =>
            "Grant roles/cloudkms.viewer on the key to the platform's service account, with roles/cloudkms.cryptoKeyEncrypterDecrypter (step 2): the console reads the key and its versions to watch them.".into(),
        KmsError::AccessDenied { .. } =>
            "Grant roles/cloudkms.cryptoKeyEncrypterDecrypter and roles/cloudkms.viewer on the key to the platform's service account (step 2); a new grant can take a few minutes to apply.".into(),
        KmsError::NotFound { code } if code == "DESTROYED" => "The key's primary version is destroyed: rotate the key to a new primary version, or use another key.".into(),
        KmsError::NotFound { .. } => format!("No such key: check the project id, key ring and key name (with its suffix), in {region}."),
        KmsError::Disabled { .. } => "Enable the key's primary version (gcloud kms keys versions enable), then test again.".into(),
        KmsError::PendingDeletion { .. } => "Restore the key's primary version (gcloud kms keys versions restore), enable it, then test again.".into(),
        KmsError::WrongKeyUsage { .. } => "Use a key with purpose Symmetric encrypt/decrypt.".into(),
        KmsError::Throttled { .. } => "Cloud KMS is throttling requests: wait a minute and test again.".into(),
        KmsError::Misconfigured(_) => "The console could not authenticate as its service account: its operator should check CMEK_GCP_SERVICE_ACCOUNT, CMEK_GCP_CREDENTIALS_FILE and the log.".into(),
        KmsError::Unreachable(_) => "Cloud KMS did not answer in time: check the console's network access to it, then test again.".into(),
        KmsError::Other { .. } => "See Cloud KMS's error message above.".into(),
    }
}
