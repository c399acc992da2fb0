//! Google Cloud KMS: a key's resource name as Cloud KMS's naming rules allow each part, the
//! suffix the console requires at the end of a key's name, and what the wizard shows (the
//! platform's service account, the `gcloud` commands, and a Terraform configuration in
//! Terraform's JSON syntax).
//!
//! Another organization must never register a customer's key, although the platform's one
//! service account reaches every key granted to it (the confused deputy). As for Azure, the
//! key's name must end with a suffix the console derives from the project and region: a
//! customer who follows the wizard names the key for their own project, and a key named for
//! one project is refused in any other.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::region::Region;
use crate::domain::FieldError;

/// The Terraform configuration's file name, for downloads.
pub const TERRAFORM_FILE: &str = "cmek-gcp.tf.json";

/// What the platform's service account must hold on the key: use it to encrypt and decrypt,
/// and read it and its versions (the checks and the monitor read the versions' states).
pub const ROLES: [&str; 2] = [
    "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    "roles/cloudkms.viewer",
];

/// A region to check the wizard's parts against when the one given is not one.
pub const SOME_REGION: &str = "us-east1";

/// The rotation the wizard suggests: 90 days, in Cloud KMS's duration form.
pub const ROTATION_PERIOD: &str = "7776000s";

/// A key's full resource name: `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpKeyName {
    project: String,
    location: Region,
    key_ring: String,
    key: String,
}

/// A Google Cloud project id: 6-30 lowercase letters, digits and hyphens, starting with a
/// letter, not ending with a hyphen.
fn check_project(field: &str, raw: &str) -> Result<(), FieldError> {
    let problem = if raw.is_empty() {
        Some("names no Google Cloud project: projects/<project id>/... is required".to_owned())
    } else if !(6..=30).contains(&raw.chars().count()) {
        Some(format!(
            "has a project id of {} characters (\"{raw}\"); a Google Cloud project id has 6 to 30",
            raw.chars().count()
        ))
    } else if let Some(c) = raw
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        Some(format!(
            "has a project id with {c:?}; a Google Cloud project id holds only lowercase letters, digits and hyphens"
        ))
    } else if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some(format!(
            "has a project id that does not start with a letter (\"{raw}\")"
        ))
    } else if raw.ends_with('-') {
        Some(format!(
            "has a project id that ends with a hyphen (\"{raw}\")"
        ))
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(FieldError::new(field, p)))
}

/// A key ring or key id: 1-63 letters, digits, underscores and hyphens.
fn check_id(field: &str, what: &str, raw: &str) -> Result<(), FieldError> {
    let problem = if raw.is_empty() {
        Some(format!("names no {what}"))
    } else if raw.chars().count() > 63 {
        Some(format!(
            "has a {what} name of {} characters; Cloud KMS allows at most 63",
            raw.chars().count()
        ))
    } else {
        raw.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
            .map(|c| {
                format!(
                    "has a {what} name with {c:?}; Cloud KMS allows only letters, digits, underscores and hyphens"
                )
            })
    };
    problem.map_or(Ok(()), |p| Err(FieldError::new(field, p)))
}

impl GcpKeyName {
    /// Parses `projects/P/locations/L/keyRings/R/cryptoKeys/K`; each part is checked against
    /// its own rules and a problem says which part is wrong. A key version's name
    /// (`.../cryptoKeyVersions/N`) is refused: a key is registered, not one of its versions.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.contains(char::is_whitespace) {
            return Err(FieldError::new(
                field,
                "has a space in it; a key's resource name has none",
            ));
        }
        let parts: Vec<&str> = name.split('/').collect();
        let shape = || {
            FieldError::new(
                field,
                "must be the key's full resource name, projects/<project>/locations/<location>/keyRings/<key ring>/cryptoKeys/<key>",
            )
        };
        if parts.len() == 10 && parts[8] == "cryptoKeyVersions" {
            return Err(FieldError::new(
                field,
                "names a key version; give the key's name (without /cryptoKeyVersions/...)",
            ));
        }
        let [
            projects,
            project,
            locations,
            location,
            key_rings,
            key_ring,
            crypto_keys,
            key,
        ] = parts[..]
        else {
            return Err(shape());
        };
        if (projects, locations, key_rings, crypto_keys)
            != ("projects", "locations", "keyRings", "cryptoKeys")
        {
            return Err(shape());
        }
        check_project(field, project)?;
        let location = Region::parse_gcp(field, location).map_err(|e| {
            FieldError::new(
                field,
                format!("has a location that is not usable: {}", e.reason),
            )
        })?;
        check_id(field, "key ring", key_ring)?;
        check_id(field, "key", key)?;
        Ok(Self {
            project: project.to_owned(),
            location,
            key_ring: key_ring.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Builds the name from the wizard's separate fields, each checked by its own rules.
    pub fn from_parts(
        project: &str,
        location: &Region,
        key_ring: &str,
        key: &str,
    ) -> Result<Self, Vec<FieldError>> {
        let errors: Vec<FieldError> = [
            check_project("project_id", project.trim()),
            check_id("key_ring", "key ring", key_ring.trim()),
            check_id("key", "key", key.trim()),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            project: project.trim().to_owned(),
            location: location.clone(),
            key_ring: key_ring.trim().to_owned(),
            key: key.trim().to_owned(),
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn location(&self) -> &Region {
        &self.location
    }

    pub fn key_ring(&self) -> &str {
        &self.key_ring
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key ring's resource name.
    pub fn key_ring_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/keyRings/{}",
            self.project,
            self.location.as_str(),
            self.key_ring
        )
    }

    pub fn as_string(&self) -> String {
        format!("{}/cryptoKeys/{}", self.key_ring_name(), self.key)
    }
}

/// Length of the generated suffix, with its hyphen.
const SUFFIX_LEN: usize = 9;

/// The suffix the console gives key names of this project and region (`-` and 8 hex
/// digits), derived with a label of its own so it differs from the Azure suffix.
pub fn suffix(project_id: Uuid, region: &Region) -> String {
    let digest = Sha256::new()
        .chain_update(b"cmek-console gcp key suffix\0")
        .chain_update(project_id.as_bytes())
        .chain_update(region.as_str().as_bytes())
        .finalize();
    format!("-{}", hex::encode(&digest[..4]))
}

/// The key's name for a prefix: the prefix, a hyphen and this project's suffix.
pub fn key_id_for(
    field: &str,
    prefix: &str,
    project_id: Uuid,
    region: &Region,
) -> Result<String, FieldError> {
    let prefix = prefix.trim().trim_end_matches('-');
    if prefix.is_empty() {
        return Err(FieldError::new(
            field,
            "is required: a key name prefix such as cmek",
        ));
    }
    check_id(field, "key", prefix)?;
    if prefix.len() + SUFFIX_LEN > 63 {
        return Err(FieldError::new(
            field,
            format!(
                "must be at most {} characters, to leave room for the suffix",
                63 - SUFFIX_LEN
            ),
        ));
    }
    Ok(format!("{prefix}{}", suffix(project_id, region)))
}

/// A key registered in a project must carry that project's suffix for the region: the
/// platform's service account may be granted keys of many customers, and the suffix ties each
/// key to the one project that asked for it, so no other organization can register it. (That
/// the key's location is the region is one of Test Encryption Key's checks.)
pub fn require_suffix(
    field: &str,
    key: &GcpKeyName,
    project_id: Uuid,
    region: &Region,
) -> Result<(), FieldError> {
    let suffix = suffix(project_id, region);
    if key.key().len() > suffix.len() && key.key().ends_with(&suffix) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "names a key whose name does not end with this project's suffix {suffix} for {region} (name it as the wizard shows, e.g. cmek{suffix})"
            ),
        ))
    }
}

/// What the customer chose in the wizard so far; each part may still be missing.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyParts<'a> {
    pub gcp_project_id: Option<&'a str>,
    pub key_ring: Option<&'a str>,
    pub key_name_prefix: Option<&'a str>,
}

/// The key the wizard's commands make: its ring and name (the prefix the customer chose, or
/// `cmek`, with this project's suffix), and its full name once the project id is known.
#[derive(Clone, Debug)]
pub struct ChosenKey {
    pub gcp_project_id: Option<String>,
    pub key_ring: String,
    pub key_id: String,
    pub full_name: Option<GcpKeyName>,
}

fn given(part: Option<&str>) -> Option<&str> {
    part.map(str::trim).filter(|p| !p.is_empty())
}

/// The key for the wizard's parts: each given part checked by its own rules (every problem
/// at once); defaults for the others.
pub fn key_for(
    parts: &KeyParts<'_>,
    project_id: Uuid,
    region: &Region,
) -> Result<ChosenKey, Vec<FieldError>> {
    let mut errors = Vec::new();
    let key_id = key_id_for(
        "key_name_prefix",
        given(parts.key_name_prefix).unwrap_or("cmek"),
        project_id,
        region,
    )
    .map_err(|e| errors.push(e))
    .ok();
    let key_ring = given(parts.key_ring).unwrap_or("cmek");
    if let Err(e) = check_id("key_ring", "key ring", key_ring) {
        errors.push(e);
    }
    let gcp_project_id = given(parts.gcp_project_id);
    if let Some(Err(e)) = gcp_project_id.map(|p| check_project("gcp_project_id", p)) {
        errors.push(e);
    }
    let Some(key_id) = key_id.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let full_name = gcp_project_id.map(|project| GcpKeyName {
        project: project.to_owned(),
        location: region.clone(),
        key_ring: key_ring.to_owned(),
        key: key_id.clone(),
    });
    Ok(ChosenKey {
        gcp_project_id: gcp_project_id.map(str::to_owned),
        key_ring: key_ring.to_owned(),
        key_id,
        full_name,
    })
}

/// What the Google Cloud wizard shows: the service account to grant, the commands, and the
/// Terraform configuration, filled in.
#[derive(Clone, Debug)]
pub struct GcpSetup {
    pub region: String,
    pub service_account: String,
    pub key_ring: String,
    /// The key's name, with this project's suffix.
    pub key_id: String,
    /// `-` and 8 hex digits: what every key name of this project and region ends with.
    pub suffix: String,
    /// The full resource name, once the Google Cloud project id is given.
    pub key_name: Option<String>,
    pub commands: Vec<String>,
    pub terraform: Value,
}

/// The wizard's commands and Terraform for the chosen key (`PROJECT_ID` until the customer's
/// project id is given).
pub fn setup(
    region: &Region,
    service_account: &str,
    key: &ChosenKey,
    suffix: String,
    next_rotation: chrono::DateTime<chrono::Utc>,
) -> GcpSetup {
    let project = key.gcp_project_id.as_deref().unwrap_or("PROJECT_ID");
    let (ring, name) = (key.key_ring.as_str(), key.key_id.as_str());
    let location = region.as_str();
    let scope = format!("--keyring={ring} --location={location} --project={project}");
    let mut commands = vec![
        format!("gcloud kms keyrings create {ring} --location={location} --project={project}"),
        format!(
            "gcloud kms keys create {name} {scope} --purpose=encryption --rotation-period=90d --next-rotation-time={}",
            next_rotation.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    ];
    for role in ROLES {
        commands.push(format!(
            "gcloud kms keys add-iam-policy-binding {name} {scope} --member=serviceAccount:{service_account} --role={role}"
        ));
    }
    GcpSetup {
        region: location.to_owned(),
        service_account: service_account.to_owned(),
        key_ring: ring.to_owned(),
        key_id: name.to_owned(),
        suffix,
        key_name: key.full_name.as_ref().map(GcpKeyName::as_string),
        commands,
        terraform: terraform(region, service_account, project, ring, name),
    }
}

/// A Terraform configuration in Terraform's JSON syntax (`cmek-gcp.tf.json`): the key ring,
/// the key (encrypt/decrypt, rotated every 90 days, protected from `terraform destroy`), and
/// the platform's two IAM members on the key.
pub fn terraform(
    region: &Region,
    service_account: &str,
    project: &str,
    key_ring: &str,
    key: &str,
) -> Value {
    let member = format!("serviceAccount:{service_account}");
    json!({
        "terraform": {
            "required_providers": { "google": { "source": "hashicorp/google" } }
        },
        "provider": { "google": { "project": project } },
        "resource": {
            "google_kms_key_ring": {
                "cmek": { "name": key_ring, "location": region.as_str(), "project": project }
            },
            "google_kms_crypto_key": {
                "cmek": {
                    "name": key,
                    "key_ring": "${google_kms_key_ring.cmek.id}",
                    "purpose": "ENCRYPT_DECRYPT",
                    "rotation_period": ROTATION_PERIOD,
                    "lifecycle": { "prevent_destroy": true }
                }
            },
            "google_kms_crypto_key_iam_member": {
                "platform_encrypter_decrypter": {
                    "crypto_key_id": "${google_kms_crypto_key.cmek.id}",
                    "role": ROLES[0],
                    "member": member
                },
                "platform_viewer": {
                    "crypto_key_id": "${google_kms_crypto_key.cmek.id}",
                    "role": ROLES[1],
                    "member": member
                }
            }
        },
        "output": {
            "key_name": { "value": "${google_kms_crypto_key.cmek.id}" }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn east() -> Region {
        Region::parse_gcp("region", "us-east1").unwrap()
    }

    #[test]
    fn a_full_name_parses_and_each_wrong_part_is_named() {
        let key = GcpKeyName::parse(
            "key_name",
            " projects/acme-prod/locations/us-east1/keyRings/cmek/cryptoKeys/orders-1a2b3c4d ",
        )
        .unwrap();
        assert_eq!(key.project(), "acme-prod");
        assert_eq!(key.location().as_str(), "us-east1");
        assert_eq!(
            key.as_string(),
            "projects/acme-prod/locations/us-east1/keyRings/cmek/cryptoKeys/orders-1a2b3c4d"
        );
        for (raw, says) in [
            (
                "projects/acme/locations/us-east1/keyRings/r/cryptoKeys/k",
                "6 to 30",
            ),
            (
                "projects/Acme-prod/locations/us-east1/keyRings/r/cryptoKeys/k",
                "lowercase",
            ),
            (
                "projects/1acme-prod/locations/us-east1/keyRings/r/cryptoKeys/k",
                "start with a letter",
            ),
            (
                "projects/acme-prod-/locations/us-east1/keyRings/r/cryptoKeys/k",
                "ends with a hyphen",
            ),
            (
                "projects/acme-prod/locations/global/keyRings/r/cryptoKeys/k",
                "location",
            ),
            (
                "projects/acme-prod/locations/us-east1/keyRings/r.s/cryptoKeys/k",
                "key ring",
            ),
            (
                "projects/acme-prod/locations/us-east1/keyRings/r/cryptoKeys/",
                "names no key",
            ),
            (
                "projects/acme-prod/locations/us-east1/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
                "key version",
            ),
            ("acme-prod/us-east1/r/k", "full resource name"),
            (
                "projects/acme-prod/locations/ us-east1/keyRings/r/cryptoKeys/k",
                "space",
            ),
        ] {
            let err = GcpKeyName::parse("key_name", raw).unwrap_err();
            assert_eq!(err.field, "key_name");
            assert!(err.reason.contains(says), "{raw}: {}", err.reason);
        }
        let long = format!(
            "projects/acme-prod/locations/us-east1/keyRings/r/cryptoKeys/{}",
            "k".repeat(64)
        );
        assert!(
            GcpKeyName::parse("key_name", &long)
                .unwrap_err()
                .reason
                .contains("63")
        );
    }

    #[test]
    fn the_suffix_ties_a_key_to_one_project_and_region() {
        let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
        let name = key_id_for("key", "orders", mine, &east()).unwrap();
        assert!(
            name.starts_with("orders-") && name.len() == "orders".len() + 9,
            "{name}"
        );
        let key = GcpKeyName::from_parts("acme-prod", &east(), "cmek", &name).unwrap();
        assert!(require_suffix("key_name", &key, mine, &east()).is_ok());
        // Another organization's project cannot register it.
        assert!(require_suffix("key_name", &key, theirs, &east()).is_err());
        // Nor is a key named for another region accepted for this one.
        let west = Region::parse_gcp("region", "us-west1").unwrap();
        let err = require_suffix("key_name", &key, mine, &west).unwrap_err();
        assert!(err.reason.contains("us-west1"), "{}", err.reason);
        // The suffix differs from Azure's for the same project and region.
        let azure = super::super::azure::full_key_name("key_name", "x", mine, &east()).unwrap();
        assert_ne!(format!("x{}", suffix(mine, &east())), azure.as_str());
    }

    #[test]
    fn the_terraform_names_the_key_ring_the_key_and_both_roles() {
        let project = Uuid::now_v7();
        let parts = KeyParts {
            gcp_project_id: Some("acme-prod"),
            key_ring: Some("cmek"),
            key_name_prefix: Some("orders"),
        };
        let key = key_for(&parts, project, &east()).unwrap();
        let s = setup(
            &east(),
            "cmek@platform.iam.gserviceaccount.com",
            &key,
            suffix(project, &east()),
            chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        );
        assert!(
            s.commands[1].contains("--next-rotation-time=2027-01-15T08:00:00Z"),
            "{}",
            s.commands[1]
        );
        let tf = &s.terraform["resource"];
        assert_eq!(tf["google_kms_key_ring"]["cmek"]["location"], "us-east1");
        assert_eq!(
            tf["google_kms_crypto_key"]["cmek"]["purpose"],
            "ENCRYPT_DECRYPT"
        );
        assert_eq!(
            tf["google_kms_crypto_key"]["cmek"]["rotation_period"],
            ROTATION_PERIOD
        );
        let members = tf["google_kms_crypto_key_iam_member"].as_object().unwrap();
        let roles: Vec<&str> = members
            .values()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles.len(), 2);
        assert!(ROLES.iter().all(|r| roles.contains(r)));
        assert!(
            members
                .values()
                .all(|m| m["member"] == "serviceAccount:cmek@platform.iam.gserviceaccount.com")
        );
        assert!(s.commands[0].starts_with(
            "gcloud kms keyrings create cmek --location=us-east1 --project=acme-prod"
        ));
        assert!(
            s.commands
                .iter()
                .any(|c| c.contains("--purpose=encryption") && c.contains("--rotation-period=90d"))
        );
        assert_eq!(
            s.commands
                .iter()
                .filter(|c| c.contains("add-iam-policy-binding"))
                .count(),
            2
        );
        let full = format!(
            "projects/acme-prod/locations/us-east1/keyRings/cmek/cryptoKeys/orders{}",
            suffix(project, &east())
        );
        assert_eq!(s.key_name.as_deref(), Some(full.as_str()));
        assert!(
            require_suffix(
                "key_name",
                &GcpKeyName::parse("k", &full).unwrap(),
                project,
                &east()
            )
            .is_ok()
        );
    }

    #[test]
    fn the_wizard_parts_are_checked_each_by_its_rules_and_default_otherwise() {
        let project = Uuid::now_v7();
        let none = key_for(&KeyParts::default(), project, &east()).unwrap();
        assert_eq!(none.key_ring, "cmek");
        assert_eq!(none.key_id, format!("cmek{}", suffix(project, &east())));
        assert!(none.full_name.is_none());
        let s = setup(
            &east(),
            "a@b.iam.gserviceaccount.com",
            &none,
            suffix(project, &east()),
            chrono::Utc::now(),
        );
        assert!(s.commands[0].contains("--project=PROJECT_ID"));
        let bad = KeyParts {
            gcp_project_id: Some("Acme"),
            key_ring: Some("ring/1"),
            key_name_prefix: Some("k.1"),
        };
        let errors = key_for(&bad, project, &east()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["key_name_prefix", "key_ring", "gcp_project_id"]);
    }
}
