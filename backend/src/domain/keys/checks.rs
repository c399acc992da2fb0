//! Test Encryption Key: the checklist run against the customer's key before it is saved, each
//! item with its outcome, the KMS error code and a one-line fix. Items are sent to `progress`
//! as they complete, so the wizard can show them one by one.

use chrono::{DateTime, Utc};
use serde::Serialize;

mod gcp;

use super::region::Region;
use super::{AwsAccess, KeyRef, KeyStatus};
use crate::domain::kms::{EncryptionContext, KeyProvider, KeyState, KmsError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Pass,
    Fail,
    /// Not run, because an earlier check failed.
    Skipped,
    /// Information only; never blocks creation.
    Info,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Pass => "pass",
            CheckOutcome::Fail => "fail",
            CheckOutcome::Skipped => "skipped",
            CheckOutcome::Info => "info",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable id: `reachable`, `enabled`, `key_spec`, `region`, `generate_data_key`,
    /// `decrypt_round_trip`, `rotation`.
    pub id: &'static str,
    pub title: &'static str,
    /// Whether the key can be created without this check passing.
    pub required: bool,
    pub outcome: CheckOutcome,
    pub detail: String,
    /// The KMS error code, when a KMS call failed.
    pub code: Option<String>,
    /// What to do about a failure, in one line.
    pub fix: Option<String>,
    /// The key status a failure of this check shows (decided where the failure is known,
    /// from the KMS error's kind or the key's state), not sent to clients.
    #[serde(skip)]
    pub shows: Option<KeyStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Checklist {
    /// True when every required check passed.
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Automatic rotation, when the KMS reported it.
    #[serde(skip)]
    pub rotation_enabled: Option<bool>,
    /// Azure: the tenant the vault was found in, kept with the key when it is saved.
    #[serde(skip)]
    pub tenant: Option<String>,
    /// How long Test Encryption Key waited for a fresh grant to propagate, and how many
    /// times it ran the checks (1 when it did not wait).
    #[serde(skip)]
    pub waited: std::time::Duration,
    #[serde(skip)]
    pub attempts: u32,
}

impl Checklist {
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.outcome == CheckOutcome::Fail)
    }
}

/// Told about each check as it completes, so a caller can show progress while the rest run.
pub trait Progress: Send + Sync {
    fn completed(&self, check: &Check);
    /// The checks failed the way a grant made a moment ago fails until it propagates
    /// (`failed` says how): they run again after a pause. `attempt` is the one that failed.
    fn waiting(&self, attempt: u32, waited: std::time::Duration, failed: &Check) {
        let _ = (attempt, waited, failed);
    }
}

/// Error codes a KMS answers while a grant made a moment ago has not propagated yet: AWS
/// (KMS `AccessDeniedException`, STS `AccessDenied` on the role), Azure RBAC (`Forbidden`)
/// and Google Cloud IAM (`PERMISSION_DENIED`).
const PROPAGATION_CODES: [&str; 5] = [
    "AccessDeniedException",
    "AccessDenied",
    "Forbidden",
    "ForbiddenByRbac",
    "PERMISSION_DENIED",
];

impl Check {
    /// A required check the KMS refused for access, the way a key policy or a grant (or one
    /// made a moment ago, not propagated yet) refuses: what Check my key policy is for, and
    /// what Test Encryption Key waits out.
    pub fn access_refused(&self) -> bool {
        let code = self.code.as_deref().unwrap_or_default();
        self.outcome == CheckOutcome::Fail
            && self.shows == Some(KeyStatus::AccessDenied)
            && (PROPAGATION_CODES.contains(&code) || self.detail.contains("not authorized"))
    }
}

impl Checklist {
    /// Whether the checks failed only on access, as a grant that has not propagated yet
    /// fails: worth waiting for. A key that is missing, disabled, of the wrong kind or in
    /// the wrong region fails at once.
    pub fn awaits_propagation(&self) -> bool {
        self.first_failure().is_some_and(Check::access_refused)
    }
}

struct Run<'a> {
    checks: Vec<Check>,
    progress: Option<&'a dyn Progress>,
}

impl Run<'_> {
    fn push(&mut self, check: Check) {
        if let Some(progress) = self.progress {
            progress.completed(&check);
        }
        self.checks.push(check);
    }

    fn pass(&mut self, id: &'static str, title: &'static str, detail: String) {
        self.push(Check {
            id,
            title,
            required: true,
            outcome: CheckOutcome::Pass,
            detail,
            code: None,
            fix: None,
            shows: None,
        });
    }

    fn fail(
        &mut self,
        id: &'static str,
        title: &'static str,
        detail: String,
        code: Option<String>,
        fix: String,
    ) {
        self.fail_showing(None, id, title, detail, code, fix);
    }

    fn fail_showing(
        &mut self,
        shows: Option<KeyStatus>,
        id: &'static str,
        title: &'static str,
        detail: String,
        code: Option<String>,
        fix: String,
    ) {
        self.push(Check {
            id,
            title,
            required: true,
            outcome: CheckOutcome::Fail,
            detail,
            code,
            fix: Some(fix),
            shows,
        });
    }

    fn kms_fail(
        &mut self,
        id: &'static str,
        title: &'static str,
        err: &KmsError,
        key: &KeyRef,
        region: &Region,
    ) {
        self.fail_showing(
            Some(err.key_status()),
            id,
            title,
            err.to_string(),
            Some(err.code().to_owned()),
            fix_for(err, key, region),
        );
    }

    fn skip(&mut self, id: &'static str, title: &'static str, why: &str) {
        self.push(Check {
            id,
            title,
            required: true,
            outcome: CheckOutcome::Skipped,
            detail: why.to_owned(),
            code: None,
            fix: None,
            shows: None,
        });
    }
}

const REACHABLE: &str = "Key reachable (DescribeKey)";
const ENABLED: &str = "Key enabled";
const SPEC: &str = "Symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT)";
const REGION: &str = "Key region matches";
const GENERATE: &str = "Generate a data key (GenerateDataKey)";
const ROUND_TRIP: &str = "Decrypt round trip";
const ROTATION: &str = "Automatic rotation";

/// Runs every check; stops early only when the key cannot even be described. `now` decides
/// whether an Azure key's validity period has begun or ended.
pub async fn run(
    provider: &dyn KeyProvider,
    key: &KeyRef,
    region: &Region,
    context: &EncryptionContext,
    now: DateTime<Utc>,
    progress: Option<&dyn Progress>,
) -> Checklist {
    let mut run = Run {
        checks: Vec::new(),
        progress,
    };
    if matches!(key, KeyRef::Azure { .. }) {
        let seen = azure_checks(&mut run, provider, key, region, context, now).await;
        let rotation = seen.as_ref().map(|s| s.rotation.clone());
        let mut checklist = finish(run, Ok(None), rotation);
        checklist.tenant = seen.map(|s| s.tenant).filter(|t| !t.is_empty());
        return checklist;
    }
    if matches!(key, KeyRef::Gcp { .. }) {
        let seen = gcp::checks(&mut run, provider, key, region, context).await;
        let rotates = seen.as_ref().map(|(_, rotates)| *rotates);
        return finish(run, Ok(rotates), seen.map(|(text, _)| text));
    }
    match provider.describe(key).await {
        Err(err) => {
            run.kms_fail("reachable", REACHABLE, &err, key, region);
            let why = "not run: the key could not be described";
            for (id, title) in [
                ("enabled", ENABLED),
                ("key_spec", SPEC),
                ("region", REGION),
                ("generate_data_key", GENERATE),
                ("decrypt_round_trip", ROUND_TRIP),
            ] {
                run.skip(id, title, why);
            }
        }
        Ok(description) => {
            run.pass(
                "reachable",
                REACHABLE,
                format!("The KMS describes {}.", description.key_id),
            );
            match &description.state {
                KeyState::Enabled => run.pass("enabled", ENABLED, "The key is enabled.".into()),
                KeyState::Disabled => run.fail_showing(Some(KeyStatus::Disabled), "enabled", ENABLED, "The key is disabled.".into(), Some("Disabled".into()),
                    "Enable the key in the KMS console (Key actions > Enable), then test again.".into()),
                KeyState::PendingDeletion => run.fail_showing(Some(KeyStatus::PendingDeletion), "enabled", ENABLED, "The key is scheduled for deletion.".into(), Some("PendingDeletion".into()),
                    "Cancel the key deletion in the KMS console and enable the key, then test again.".into()),
                KeyState::Other(state) => run.fail_showing(Some(KeyStatus::Disabled), "enabled", ENABLED, format!("The key is in state {state}."), Some(state.clone()),
                    "Wait until the key is Enabled in the KMS console, then test again.".into()),
            }
            if description.spec == "SYMMETRIC_DEFAULT" && description.usage == "ENCRYPT_DECRYPT" {
                run.pass(
                    "key_spec",
                    SPEC,
                    "Symmetric key for encryption and decryption.".into(),
                );
            } else {
                run.fail("key_spec", SPEC, format!("The key is {} with key usage {}.", or_unknown(&description.spec), or_unknown(&description.usage)), None,
                    "Create a new key with Key type Symmetric and Key usage Encrypt and decrypt, and use its ARN.".into());
            }
            match description.region.as_deref() {
                Some(actual) if actual != region.as_str() => run.fail(
                    "region",
                    REGION,
                    format!("The key is in {actual}, but the encryption key is for {region}."),
                    None,
                    format!("Use a key in {region} (or a replica there of a multi-Region key)."),
                ),
                _ => run.pass("region", REGION, format!("The key is in {region}.")),
            }
            match provider.generate_data_key(key, context).await {
                Err(err) => {
                    run.kms_fail("generate_data_key", GENERATE, &err, key, region);
                    run.skip(
                        "decrypt_round_trip",
                        ROUND_TRIP,
                        "not run: no data key was generated",
                    );
                }
                Ok(data_key) => {
                    run.pass(
                        "generate_data_key",
                        GENERATE,
                        format!(
                            "A {}-byte data key was generated and wrapped.",
                            data_key.plaintext.expose().len()
                        ),
                    );
                    match provider.decrypt_data_key(key, &data_key.wrapped, context).await {
                        Ok(unwrapped) if unwrapped.same_as(&data_key.plaintext) => run.pass("decrypt_round_trip", ROUND_TRIP,
                            "The wrapped data key decrypts to the same key.".into()),
                        Ok(_) => run.fail("decrypt_round_trip", ROUND_TRIP, "Decrypt returned a different key.".into(), None,
                            "The KMS returned inconsistent results; contact your KMS administrator.".into()),
                        Err(err) => run.kms_fail("decrypt_round_trip", ROUND_TRIP, &err, key, region),
                    }
                }
            }
        }
    }
    finish(run, provider.rotation_enabled(key).await, None)
}

/// Adds the rotation item (with `detail` when the provider says more than whether rotation
/// is on) and decides whether the list passed.
fn finish(
    mut run: Run<'_>,
    rotation_enabled: Result<Option<bool>, KmsError>,
    detail: Option<String>,
) -> Checklist {
    let mut rotation = match rotation_enabled.clone() {
        Ok(Some(true)) => ("Automatic rotation is enabled: the KMS rotates the key material; nothing needs updating here.".to_owned(), None, None),
        Ok(Some(false)) => ("Automatic rotation is off.".to_owned(), None, Some("Recommended: enable automatic key rotation in the KMS console.".to_owned())),
        Ok(None) => ("The KMS does not report rotation for this key.".to_owned(), None, None),
        Err(err) => (format!("Could not read the rotation status: {err}."), Some(err.code().to_owned()), None),
    };
    if let Some(detail) = detail {
        rotation.0 = detail;
    }
    run.push(Check {
        id: "rotation",
        title: ROTATION,
        required: false,
        outcome: CheckOutcome::Info,
        detail: rotation.0,
        code: rotation.1,
        fix: rotation.2,
        shows: None,
    });
    let passed = run
        .checks
        .iter()
        .filter(|c| c.required)
        .all(|c| c.outcome == CheckOutcome::Pass);
    Checklist {
        passed,
        checks: run.checks,
        rotation_enabled: rotation_enabled.ok().flatten(),
        tenant: None,
        waited: std::time::Duration::ZERO,
        attempts: 1,
    }
}

const AZ_EXISTS: &str = "Key exists (get key)";
const AZ_VALIDITY: &str = "Key not expired and already valid (exp, nbf)";
const AZ_TYPE: &str = "RSA or RSA-HSM key of 2048 bits or more";
const AZ_OPS: &str = "Key operations allow wrapKey and unwrapKey";
const AZ_PURGE: &str = "Purge protection on (recoveryLevel)";
const AZ_REGION: &str = "Vault region matches (x-ms-keyvault-region)";
const AZ_WRAP: &str = "Wrap a data key (wrapKey, RSA-OAEP-256)";
const AZ_UNWRAP: &str = "Unwrap round trip (unwrapKey)";

/// Azure Key Vault's checklist: what `get key` says of the key and its vault, then a wrap and
/// unwrap of a random 32-byte data key with RSA-OAEP-256, compared in constant time. Returns
/// what was seen of the key, when it could be read.
async fn azure_checks(
    run: &mut Run<'_>,
    provider: &dyn KeyProvider,
    key: &KeyRef,
    region: &Region,
    context: &EncryptionContext,
    now: DateTime<Utc>,
) -> Option<AzureSeen> {
    let facts = match provider.describe(key).await {
        Err(err) => {
            run.kms_fail("reachable", AZ_EXISTS, &err, key, region);
            let why = "not run: the key could not be read";
            for (id, title) in [
                ("enabled", ENABLED),
                ("validity", AZ_VALIDITY),
                ("key_type", AZ_TYPE),
                ("key_ops", AZ_OPS),
                ("purge_protection", AZ_PURGE),
                ("region", AZ_REGION),
                ("wrap_key", AZ_WRAP),
                ("unwrap_round_trip", AZ_UNWRAP),
            ] {
                run.skip(id, title, why);
            }
            return None;
        }
        Ok(d) => {
            run.pass(
                "reachable",
                AZ_EXISTS,
                format!("Key Vault returns {}.", d.key_id),
            );
            if d.state == KeyState::Enabled {
                run.pass("enabled", ENABLED, "The key is enabled.".into());
            } else {
                run.fail_showing(Some(KeyStatus::Disabled), "enabled", ENABLED, "The key is disabled (attributes.enabled is false).".into(), Some("KeyDisabled".into()),
                    "In the Key Vault, open the key's current version and set Enabled to Yes, then test again.".into());
            }
            let region_seen = d.region.clone();
            (d.azure.unwrap_or_default(), region_seen)
        }
    };
    let (facts, region_seen) = facts;
    match (facts.not_before, facts.expires) {
        (Some(nbf), _) if nbf > now => run.fail_showing(Some(KeyStatus::Disabled), "validity", AZ_VALIDITY,
            format!("The key is not valid before {} (nbf).", nbf.to_rfc3339()), Some("KeyNotYetValid".into()),
            "Clear or move back the key's activation date in the Key Vault, then test again.".into()),
        (_, Some(exp)) if exp <= now => run.fail_showing(Some(KeyStatus::Disabled), "validity", AZ_VALIDITY,
            format!("The key expired at {} (exp).", exp.to_rfc3339()), Some("KeyExpired".into()),
            "Clear or extend the key's expiration date in the Key Vault (or rotate to a new version), then test again.".into()),
        (_, exp) => run.pass("validity", AZ_VALIDITY, match exp {
            Some(exp) => format!("The key is valid until {}.", exp.to_rfc3339()),
            None => "The key has no expiration date.".into(),
        }),
    }
    let rsa = matches!(facts.kty.as_str(), "RSA" | "RSA-HSM");
    match facts.modulus_bits {
        Some(bits) if rsa && bits >= 2048 => run.pass("key_type", AZ_TYPE, format!("{} key of {bits} bits.", facts.kty)),
        Some(bits) if rsa => run.fail("key_type", AZ_TYPE, format!("The key is {} of {bits} bits.", facts.kty), Some("KeySizeTooSmall".into()),
            "Create a new RSA key of 2048 bits or more (3072 recommended) and use its name.".into()),
        _ => run.fail("key_type", AZ_TYPE, format!("The key type is {}.", or_unknown(&facts.kty)), Some("UnsupportedKeyType".into()),
            "Create an RSA or RSA-HSM key (2048 bits or more); EC and symmetric keys cannot wrap data keys here.".into()),
    }
    let missing: Vec<&str> = ["wrapKey", "unwrapKey"]
        .into_iter()
        .filter(|op| !facts.key_ops.iter().any(|o| o == op))
        .collect();
    if missing.is_empty() {
        run.pass(
            "key_ops",
            AZ_OPS,
            "The key allows wrapKey and unwrapKey.".into(),
        );
    } else {
        run.fail("key_ops", AZ_OPS, format!("The key's permitted operations lack {}.", missing.join(" and ")), Some("OperationNotPermitted".into()),
            "In the key's settings, allow the Wrap Key and Unwrap Key operations (or create the key with them), then test again.".into());
    }
    match facts.recovery_level.as_deref() {
        Some(level) if !level.contains("Purgeable") => run.pass("purge_protection", AZ_PURGE, format!("Recovery level {level}: the key cannot be purged.")),
        Some(level) => run.fail("purge_protection", AZ_PURGE, format!("Recovery level {level}: the key can be purged."), Some("PurgeProtectionDisabled".into()),
            "Turn on purge protection for the Key Vault (Properties > Enable purge protection; it cannot be turned off later), then test again.".into()),
        None => run.fail_showing(Some(KeyStatus::Unreachable), "purge_protection", AZ_PURGE, "Key Vault did not report the key's recovery level.".into(), Some("RecoveryLevelUnknown".into()),
            "Check that the vault URL points at Azure Key Vault itself, then test again.".into()),
    }
    match region_seen.as_deref() {
        Some(seen) if region.is_named_by(seen) => {
            run.pass("region", AZ_REGION, format!("The vault is in {region}."))
        }
        Some(seen) => run.fail(
            "region",
            AZ_REGION,
            format!("The vault is in {seen}, but the encryption key is for {region}."),
            Some("RegionMismatch".into()),
            format!("Use a Key Vault in {region}, or choose {seen} as the region."),
        ),
        // Not an answer about the key (a proxy may have dropped the header): never a revocation.
        None => run.fail_showing(
            Some(KeyStatus::Unreachable),
            "region",
            AZ_REGION,
            "Key Vault did not report the vault's region.".into(),
            Some("RegionUnknown".into()),
            "Check that the vault URL points at Azure Key Vault itself, then test again.".into(),
        ),
    }
    match provider.generate_data_key(key, context).await {
        Err(err) => {
            run.kms_fail("wrap_key", AZ_WRAP, &err, key, region);
            run.skip(
                "unwrap_round_trip",
                AZ_UNWRAP,
                "not run: no data key was wrapped",
            );
        }
        Ok(data_key) => {
            run.pass(
                "wrap_key",
                AZ_WRAP,
                format!(
                    "A random {}-byte data key was wrapped with RSA-OAEP-256.",
                    data_key.plaintext.expose().len()
                ),
            );
            match provider
                .decrypt_data_key(key, &data_key.wrapped, context)
                .await
            {
                Ok(unwrapped) if unwrapped.same_as(&data_key.plaintext) => run.pass(
                    "unwrap_round_trip",
                    AZ_UNWRAP,
                    "The wrapped data key unwraps to the same key.".into(),
                ),
                Ok(_) => run.fail(
                    "unwrap_round_trip",
                    AZ_UNWRAP,
                    "Unwrap returned a different key.".into(),
                    None,
                    "Key Vault returned inconsistent results; contact your Azure administrator."
                        .into(),
                ),
                Err(err) => run.kms_fail("unwrap_round_trip", AZ_UNWRAP, &err, key, region),
            }
        }
    }
    let rotation = match facts.created {
        Some(created) => format!(
            "Current version {} since {}. Key Vault rotates a key by its rotation policy; each data key records the version that wrapped it, so nothing here needs updating.",
            facts.version,
            created.format("%Y-%m-%d %H:%M UTC")
        ),
        None => format!(
            "Current version {}. Key Vault rotates a key by its rotation policy; each data key records the version that wrapped it, so nothing here needs updating.",
            facts.version
        ),
    };
    Some(AzureSeen {
        tenant: facts.tenant,
        rotation,
    })
}

/// What the Azure checklist saw of the key: its vault's tenant and its current version.
struct AzureSeen {
    tenant: String,
    rotation: String,
}

fn or_unknown(value: &str) -> &str {
    if value.is_empty() {
        "(not reported)"
    } else {
        value
    }
}

fn fix_for(err: &KmsError, key: &KeyRef, region: &Region) -> String {
    let role = matches!(
        key,
        KeyRef::Aws {
            access: AwsAccess::Role { .. },
            ..
        }
    );
    if let KeyRef::Azure { .. } = key {
        return azure_fix_for(err, region);
    }
    if let KeyRef::Gcp { .. } = key {
        return gcp::fix(err, region);
    }
    match err {
        KmsError::AccessDenied { .. } if role => "Check that the role trusts the platform account with your organization id as ExternalId, \
            and that its permission policy (step 2) allows this key.".into(),
        KmsError::AccessDenied { .. } => "Add the statements shown in step 2 to the key policy, then test again.".into(),
        KmsError::NotFound { .. } => format!("No such key in {region}: check the key ARN, its account and its region."),
        KmsError::Disabled { .. } => "Enable the key in the KMS console (Key actions > Enable), then test again.".into(),
        KmsError::PendingDeletion { .. } => "Cancel the key deletion in the KMS console and enable the key, then test again.".into(),
        KmsError::WrongKeyUsage { .. } => "Use a symmetric key with key usage Encrypt and decrypt.".into(),
        KmsError::Throttled { .. } => "The KMS is throttling requests: wait a minute and test again.".into(),
        KmsError::Misconfigured(_) => "The console could not make the call: its operator should check the console's settings and log (its cloud credentials, or for the local KMS its master key file local-kms-master.key).".into(),
        KmsError::Unreachable(_) => "The KMS did not answer in time: check the console's network access to KMS and test again.".into(),
        KmsError::Other { .. } => "See the KMS error message above.".into(),
    }
}

fn azure_fix_for(err: &KmsError, region: &Region) -> String {
    match err {
        KmsError::AccessDenied { code, .. } if code == "VaultTenantChanged" => "The vault now answers for another Microsoft Entra tenant than when this key was created. The console does not follow it (a vault name re-created by someone else looks the same): if you moved the vault, move it back, or ask your operator.".into(),
        KmsError::AccessDenied { code, .. } if matches!(code.as_str(), "AADSTS7000229" | "AADSTS7000112") => "Create (or enable again) the enterprise application's service principal in your tenant (az ad sp create --id, step 2), then test again.".into(),
        KmsError::AccessDenied { code, .. } if code == "Unauthorized" => "The vault belongs to another tenant than the service principal's token: check the vault name, and create the service principal in the vault's tenant.".into(),
        KmsError::AccessDenied { .. } => "Assign Key Vault Crypto Service Encryption User on the key to the enterprise application (step 3), wait a minute for it to apply, then test again.".into(),
        KmsError::NotFound { code } if code == "VaultNotFound" => "No Key Vault of this name answered: check the vault name (and that the vault was not deleted).".into(),
        KmsError::NotFound { .. } => format!("No such key in this vault: check the vault name and the full key name (with its suffix), in {region}."),
        KmsError::Disabled { .. } => "Enable the key's current version in the Key Vault (and check its activation and expiration dates), then test again.".into(),
        KmsError::WrongKeyUsage { .. } => "Use an RSA key (2048 bits or more) that allows Wrap Key and Unwrap Key.".into(),
        KmsError::PendingDeletion { .. } => "Recover the deleted key in the Key Vault, then test again.".into(),
        KmsError::Throttled { .. } => "Key Vault is throttling requests: wait a minute and test again.".into(),
        KmsError::Misconfigured(_) => "The console could not authenticate as its Entra application: its operator should check CMEK_AZURE_APP_ID, CMEK_AZURE_CLIENT_SECRET and the log.".into(),
        KmsError::Unreachable(_) => "Key Vault did not answer in time: check the vault name and the console's network access to it, then test again.".into(),
        KmsError::Other { .. } => "See the Key Vault error message above.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::FakeKms;

    #[tokio::test]
    async fn only_an_access_refusal_is_worth_waiting_for() {
        let refused = |code: &str| FakeKms {
            describe: Err(KmsError::AccessDenied {
                code: code.into(),
                message: "User: arn:aws:iam::123456789012:user/console is not authorized".into(),
            }),
        };
        let run_with = async |kms: FakeKms| {
            let key = KeyRef::Local {
                key_id: uuid::Uuid::now_v7(),
                organization_id: uuid::Uuid::now_v7(),
            };
            let region = Region::parse_known("region", "us-east-1").unwrap();
            run(
                &kms,
                &key,
                &region,
                &EncryptionContext::default(),
                Utc::now(),
                None,
            )
            .await
        };
        assert!(
            run_with(refused("AccessDeniedException"))
                .await
                .awaits_propagation()
        );
        assert!(run_with(refused("Forbidden")).await.awaits_propagation());
        let missing = FakeKms {
            describe: Err(KmsError::NotFound {
                code: "NotFoundException".into(),
            }),
        };
        assert!(!run_with(missing).await.awaits_propagation());
        let disabled = FakeKms {
            describe: Ok(KeyState::Disabled),
        };
        assert!(!run_with(disabled).await.awaits_propagation());
        assert!(!run_with(FakeKms::passing()).await.awaits_propagation());
    }

    async fn status_after(describe: Result<KeyState, KmsError>) -> KeyStatus {
        let key = KeyRef::Local {
            key_id: uuid::Uuid::nil(),
            organization_id: uuid::Uuid::nil(),
        };
        let region = Region::parse("region", "us-east-1").unwrap();
        let checklist = run(
            &FakeKms { describe },
            &key,
            &region,
            &EncryptionContext::default(),
            chrono::Utc::now(),
            None,
        )
        .await;
        KeyStatus::from_checklist(&checklist)
    }

    #[tokio::test]
    async fn the_status_follows_the_kind_of_failure_not_its_code() {
        assert_eq!(status_after(Ok(KeyState::Enabled)).await, KeyStatus::Active);
        assert_eq!(
            status_after(Ok(KeyState::Disabled)).await,
            KeyStatus::Disabled
        );
        assert_eq!(
            status_after(Ok(KeyState::PendingDeletion)).await,
            KeyStatus::PendingDeletion
        );
        assert_eq!(
            status_after(Err(KmsError::Throttled {
                code: "SomethingNew".into()
            }))
            .await,
            KeyStatus::Unreachable,
            "throttling is never a revocation, whatever its code"
        );
        assert_eq!(
            status_after(Err(KmsError::Unreachable("timed out".into()))).await,
            KeyStatus::Unreachable
        );
        assert_eq!(
            status_after(Err(KmsError::Misconfigured("no credentials".into()))).await,
            KeyStatus::Unreachable,
            "the console's own configuration says nothing about the customer's key"
        );
        assert_eq!(
            status_after(Err(KmsError::NotFound {
                code: "NotFoundException".into()
            }))
            .await,
            KeyStatus::NotFound
        );
        assert_eq!(
            status_after(Err(KmsError::AccessDenied {
                code: "AccessDeniedException".into(),
                message: "no".into()
            }))
            .await,
            KeyStatus::AccessDenied
        );
    }
}
