//! Key requests as clients send them, parsed into domain types with every field error at once.

use uuid::Uuid;

use super::arn::{KmsKeyArn, RoleArn};
use super::azure::{KeyName, VaultName};
use super::gcp::GcpKeyName;
use super::policy::AccessMode;
use super::region::Region;
use super::{AwsAccess, KeyRef, Provider};
use crate::domain::{DomainError, FieldError};

/// A key request as clients send it (every provider's fields; each uses its own). AWS:
/// `provider: "aws_kms", region, key_arn, access_mode?, role_arn?`; Azure: `provider:
/// "azure_key_vault", region, vault_name, key_name`; Google Cloud: `provider: "gcp_kms",
/// region, key_name` (the key's full resource name); local: `provider: "local", region,
/// key_id`. It is also the API's request body.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequestInput {
    pub provider: String,
    pub region: String,
    pub key_arn: Option<String>,
    pub access_mode: Option<String>,
    pub role_arn: Option<String>,
    pub vault_name: Option<String>,
    pub key_name: Option<String>,
    pub key_id: Option<String>,
}

/// A parsed key request.
#[derive(Clone, Debug)]
pub struct KeyRequest {
    pub region: Region,
    pub key_ref: KeyRef,
}

impl KeyRequest {
    pub fn parse(input: &KeyRequestInput, organization_id: Uuid) -> Result<Self, DomainError> {
        let mut errors: Vec<FieldError> = Vec::new();
        let provider = Provider::parse(&input.provider);
        let region = Region::parse_for(
            *provider.as_ref().unwrap_or(&Provider::AwsKms),
            "region",
            &input.region,
        )
        .map_err(|e| errors.push(e))
        .ok();
        let key_ref = match provider {
            Err(e) => {
                errors.push(e);
                None
            }
            Ok(Provider::AzureKeyVault) => parse_azure(input, &mut errors),
            Ok(Provider::GcpKms) => parse_gcp(input, &mut errors),
            Ok(Provider::AwsKms) => parse_aws(input, region.as_ref(), organization_id, &mut errors),
            Ok(Provider::Local) => parse_local(input, organization_id, &mut errors),
        };
        match (region, key_ref) {
            (Some(region), Some(key_ref)) if errors.is_empty() => Ok(Self { region, key_ref }),
            _ => Err(DomainError::Invalid(errors)),
        }
    }
}

fn parse_azure(input: &KeyRequestInput, errors: &mut Vec<FieldError>) -> Option<KeyRef> {
    let vault = VaultName::parse("vault_name", input.vault_name.as_deref().unwrap_or(""))
        .map_err(|e| errors.push(e))
        .ok();
    let key_name = KeyName::parse("key_name", input.key_name.as_deref().unwrap_or(""))
        .map_err(|e| errors.push(e))
        .ok();
    Some(KeyRef::Azure {
        vault: vault?,
        key_name: key_name?,
        tenant: None,
    })
}

/// A Google Cloud key by its full resource name. Its location is compared with the region by
/// Test Encryption Key, which names both and the fix.
fn parse_gcp(input: &KeyRequestInput, errors: &mut Vec<FieldError>) -> Option<KeyRef> {
    let raw = input.key_name.as_deref().unwrap_or("");
    if raw.trim().is_empty() {
        errors.push(FieldError::new(
            "key_name",
            "is required: the key's full resource name, projects/<project>/locations/<location>/keyRings/<key ring>/cryptoKeys/<key>",
        ));
        return None;
    }
    GcpKeyName::parse("key_name", raw)
        .map_err(|e| errors.push(e))
        .ok()
        .map(|name| KeyRef::Gcp { name })
}

fn parse_local(
    input: &KeyRequestInput,
    organization_id: Uuid,
    errors: &mut Vec<FieldError>,
) -> Option<KeyRef> {
    let raw = input.key_id.as_deref().map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        errors.push(FieldError::new(
            "key_id",
            "is required: the id of a key on the Local KMS page",
        ));
        return None;
    }
    match Uuid::parse_str(raw) {
        Ok(key_id) => Some(KeyRef::Local {
            key_id,
            organization_id,
        }),
        Err(_) => {
            errors.push(FieldError::new("key_id", "is not a local key id (a UUID)"));
            None
        }
    }
}

fn parse_aws(
    input: &KeyRequestInput,
    region: Option<&Region>,
    organization_id: Uuid,
    errors: &mut Vec<FieldError>,
) -> Option<KeyRef> {
    let arn = KmsKeyArn::parse("key_arn", input.key_arn.as_deref().unwrap_or(""));
    let mode = AccessMode::parse("access_mode", input.access_mode.as_deref());
    let arn = match arn {
        Ok(arn) => match region {
            Some(region) if arn.region() != region => {
                errors.push(FieldError::new("key_arn", format!(
                    "is a key in {}, but you chose {region}: use a key in {region}, or choose {} as the region",
                    arn.region(), arn.region()
                )));
                None
            }
            _ => Some(arn),
        },
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let access = match mode {
        Err(e) => {
            errors.push(e);
            None
        }
        Ok(AccessMode::KeyPolicy) => Some(AwsAccess::KeyPolicy),
        Ok(AccessMode::Role) => match input.role_arn.as_deref().filter(|r| !r.trim().is_empty()) {
            None => {
                errors.push(FieldError::new(
                    "role_arn",
                    "is required in role mode: the ARN of the IAM role you created in step 2",
                ));
                None
            }
            Some(raw) => match RoleArn::parse("role_arn", raw) {
                Ok(role_arn) => Some(AwsAccess::Role {
                    role_arn,
                    external_id: organization_id.to_string(),
                }),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        },
    };
    match (arn, access) {
        (Some(arn), Some(access)) => Some(KeyRef::Aws { arn, access }),
        _ => None,
    }
}
