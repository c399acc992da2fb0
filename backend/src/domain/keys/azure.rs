//! Azure Key Vault: vault and key names as Key Vault's naming rules allow them, the unique
//! suffix the console adds to a key name, and what the wizard shows (the platform's Entra
//! application, the commands, the checklist and an Azure Resource Manager template).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::region::Region;
use crate::domain::FieldError;

/// The template's file name, for downloads.
pub const ARM_TEMPLATE_FILE: &str = "CMEK-KEY-VAULT-TEMPLATE.JSON";

/// Key Vault Crypto Service Encryption User: get, wrap and unwrap keys (what the platform needs).
pub const CRYPTO_SERVICE_ENCRYPTION_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";

/// A Key Vault name: 3-24 characters, letters, digits and hyphens, starting with a letter,
/// ending with a letter or digit, with no two hyphens in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultName(String);

impl VaultName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        let problem = if name.is_empty() {
            Some("is required: the name of your Key Vault".to_owned())
        } else if !(3..=24).contains(&name.len()) {
            Some(format!(
                "must be 3 to 24 characters long (\"{name}\" has {})",
                name.chars().count()
            ))
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            Some(format!(
                "may hold only letters, digits and hyphens (found {c:?})"
            ))
        } else if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            Some("must start with a letter".to_owned())
        } else if name.ends_with('-') {
            Some("must end with a letter or a digit".to_owned())
        } else if name.contains("--") {
            Some("may not contain two hyphens in a row".to_owned())
        } else {
            None
        };
        match problem {
            Some(reason) => Err(FieldError::new(field, reason)),
            // Vault names are case-insensitive: keep one spelling, as DNS does.
            None => Ok(Self(name.to_ascii_lowercase())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Key Vault key name: 1-127 letters, digits and hyphens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName(String);

pub const KEY_NAME_MAX: usize = 127;

impl KeyName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new(
                field,
                "is required: the full key name shown in step 3",
            ));
        }
        check_key_chars(field, name, KEY_NAME_MAX)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_key_chars(field: &str, name: &str, max: usize) -> Result<(), FieldError> {
    if name.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(FieldError::new(
            field,
            format!("may hold only letters, digits and hyphens (found {c:?})"),
        ));
    }
    Ok(())
}

/// Length of the generated suffix, with its hyphen.
const SUFFIX_LEN: usize = 9;

/// The full key name: the customer's prefix, a hyphen and eight hex digits the console derives
/// from the project and region, so the same project and region always get the same name and
/// no two projects share one.
pub fn full_key_name(
    field: &str,
    prefix: &str,
    project_id: Uuid,
    region: &Region,
) -> Result<KeyName, FieldError> {
    let prefix = prefix.trim().trim_end_matches('-');
    if prefix.is_empty() {
        return Err(FieldError::new(
            field,
            "is required: a key name prefix such as cmek",
        ));
    }
    check_key_chars(field, prefix, KEY_NAME_MAX - SUFFIX_LEN)?;
    Ok(KeyName(format!("{prefix}{}", suffix(project_id, region))))
}

/// The suffix the console gives key names of this project and region (`-` and 8 hex digits).
fn suffix(project_id: Uuid, region: &Region) -> String {
    let digest = Sha256::new()
        .chain_update(b"cmek-console azure key suffix\0")
        .chain_update(project_id.as_bytes())
        .chain_update(region.as_str().as_bytes())
        .finalize();
    format!("-{}", hex::encode(&digest[..4]))
}

/// A key name must carry this project's suffix: the platform's application may be granted
/// keys in many customers' tenants, and the suffix ties each key to the one project that
/// asked for it, so no other organization can register it.
pub fn require_suffix(
    field: &str,
    key_name: &KeyName,
    project_id: Uuid,
    region: &Region,
) -> Result<(), FieldError> {
    let suffix = suffix(project_id, region);
    // Key Vault's key names are case-insensitive.
    let name = key_name.as_str().to_ascii_lowercase();
    if name.len() > suffix.len() && name.ends_with(&suffix) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must end with this project's suffix {suffix} for {region} (the full key name shown in step 3, e.g. cmek{suffix})"
            ),
        ))
    }
}

/// What step 2 and 3 of the Azure wizard show; also `GET .../azure-setup`.
#[derive(Clone, Debug)]
pub struct AzureSetup {
    pub region: String,
    pub app_name: String,
    pub app_id: String,
    pub create_service_principal_command: String,
    pub show_service_principal_command: String,
    /// Present when a key name prefix was given.
    pub key_name: Option<String>,
    pub checklist: Vec<&'static str>,
    pub arm_template: Value,
}

pub const CHECKLIST: [&str; 4] = [
    "Purge protection is enabled on the Key Vault.",
    "The Key Vault is in the region you chose here (the region of your clusters).",
    "You hold Key Vault Crypto Officer on the vault (to create the key).",
    "The enterprise application holds Key Vault Crypto Service Encryption User on the key.",
];

pub fn setup(
    region: &Region,
    app_name: &str,
    app_id: &str,
    key_name: Option<&KeyName>,
) -> AzureSetup {
    AzureSetup {
        region: region.as_str().to_owned(),
        app_name: app_name.to_owned(),
        app_id: app_id.to_owned(),
        create_service_principal_command: format!("az ad sp create --id {app_id}"),
        show_service_principal_command: format!("az ad sp show --id {app_id} --query id -o tsv"),
        key_name: key_name.map(|k| k.as_str().to_owned()),
        checklist: CHECKLIST.to_vec(),
        arm_template: arm_template(region, key_name),
    }
}

/// An Azure Resource Manager template that creates the vault (RBAC authorization, soft delete
/// and purge protection), the RSA key allowed to wrap and unwrap, and the role assignment that
/// lets the platform's service principal use that key. Its parameters default to what the
/// wizard knows; the service principal's object id comes from `az ad sp show`.
pub fn arm_template(region: &Region, key_name: Option<&KeyName>) -> Value {
    let mut key_name_param = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": KEY_NAME_MAX,
        "metadata": {"description": "The full key name shown in the console (prefix and suffix)."}
    });
    if let Some(name) = key_name {
        key_name_param["defaultValue"] = json!(name.as_str());
    }
    let assignment_name = format!(
        "[guid(resourceId('Microsoft.KeyVault/vaults/keys', parameters('keyVaultName'), parameters('keyName')), parameters('servicePrincipalObjectId'), '{CRYPTO_SERVICE_ENCRYPTION_USER}')]"
    );
    let role_definition = format!(
        "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{CRYPTO_SERVICE_ENCRYPTION_USER}')]"
    );
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {"description": "Key Vault, RSA key and role assignment for customer-managed encryption keys (cmek-console)."},
        "parameters": {
            "location": {
                "type": "string",
                "defaultValue": region.as_str(),
                "metadata": {"description": "The vault's region: the region of your clusters."}
            },
            "keyVaultName": {
                "type": "string",
                "minLength": 3,
                "maxLength": 24,
                "metadata": {"description": "The Key Vault to create (3-24 letters, digits and hyphens)."}
            },
            "keyName": key_name_param,
            "keySize": {
                "type": "int",
                "defaultValue": 3072,
                "allowedValues": [2048, 3072, 4096],
                "metadata": {"description": "RSA modulus size in bits."}
            },
            "servicePrincipalObjectId": {
                "type": "string",
                "metadata": {"description": "Object id of the enterprise application: az ad sp show --id <app-id> --query id -o tsv"}
            }
        },
        "resources": [
            {
                "type": "Microsoft.KeyVault/vaults",
                "apiVersion": "2023-07-01",
                "name": "[parameters('keyVaultName')]",
                "location": "[parameters('location')]",
                "properties": {
                    "tenantId": "[subscription().tenantId]",
                    "sku": {"family": "A", "name": "standard"},
                    "enableRbacAuthorization": true,
                    "enableSoftDelete": true,
                    "softDeleteRetentionInDays": 90,
                    "enablePurgeProtection": true
                }
            },
            {
                "type": "Microsoft.KeyVault/vaults/keys",
                "apiVersion": "2023-07-01",
                "name": "[format('{0}/{1}', parameters('keyVaultName'), parameters('keyName'))]",
                "dependsOn": ["[resourceId('Microsoft.KeyVault/vaults', parameters('keyVaultName'))]"],
                "properties": {
                    "kty": "RSA",
                    "keySize": "[parameters('keySize')]",
                    "keyOps": ["wrapKey", "unwrapKey"],
                    "attributes": {"enabled": true}
                }
            },
            {
                "type": "Microsoft.Authorization/roleAssignments",
                "apiVersion": "2022-04-01",
                "name": assignment_name,
                "scope": "[format('Microsoft.KeyVault/vaults/{0}/keys/{1}', parameters('keyVaultName'), parameters('keyName'))]",
                "dependsOn": ["[resourceId('Microsoft.KeyVault/vaults/keys', parameters('keyVaultName'), parameters('keyName'))]"],
                "properties": {
                    "roleDefinitionId": role_definition,
                    "principalId": "[parameters('servicePrincipalObjectId')]",
                    "principalType": "ServicePrincipal"
                }
            }
        ],
        "outputs": {
            "keyUri": {
                "type": "string",
                "value": "[reference(resourceId('Microsoft.KeyVault/vaults/keys', parameters('keyVaultName'), parameters('keyName'))).keyUri]"
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<VaultName, FieldError>) -> String {
        r.err().map(|e| e.reason).unwrap_or_default()
    }

    #[test]
    fn vault_names_follow_key_vaults_rules() {
        assert_eq!(
            VaultName::parse("vault_name", " Contoso-Keys1 ")
                .ok()
                .map(|v| v.0),
            Some("contoso-keys1".to_owned())
        );
        assert!(reason(VaultName::parse("v", "ab")).contains("3 to 24"));
        assert!(reason(VaultName::parse("v", &"a".repeat(25))).contains("3 to 24"));
        assert!(reason(VaultName::parse("v", "1vault")).contains("start with a letter"));
        assert!(reason(VaultName::parse("v", "vault-")).contains("end with"));
        assert!(reason(VaultName::parse("v", "va--ult")).contains("two hyphens"));
        assert!(reason(VaultName::parse("v", "va_ult")).contains("'_'"));
    }

    #[test]
    fn the_suffix_is_stable_per_project_and_region_and_differs_between_them() {
        let east = Region::parse_azure("region", "eastus").unwrap_or_else(|e| panic!("{e:?}"));
        let west = Region::parse_azure("region", "westus").unwrap_or_else(|e| panic!("{e:?}"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let name = |p, r| full_key_name("key_name_prefix", "cmek", p, r).map(|k| k.0);
        assert_eq!(name(a, &east), name(a, &east));
        assert_ne!(name(a, &east), name(b, &east));
        assert_ne!(name(a, &east), name(a, &west));
        let full = name(a, &east).unwrap_or_default();
        assert!(full.starts_with("cmek-") && full.len() == "cmek-".len() + 8);
        let kept =
            KeyName::parse("key_name", &full.to_uppercase()).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            require_suffix("key_name", &kept, a, &east).is_ok(),
            "Key Vault names ignore case"
        );
        assert!(require_suffix("key_name", &kept, b, &east).is_err());
        assert!(require_suffix("key_name", &kept, a, &west).is_err());
        assert!(full_key_name("p", "bad name", a, &east).is_err());
        assert!(full_key_name("p", &"k".repeat(119), a, &east).is_err());
        assert!(full_key_name("p", &"k".repeat(118), a, &east).is_ok());
    }

    #[test]
    fn the_template_names_the_vault_key_and_role_assignment() {
        let region = Region::parse_azure("region", "eastus2").unwrap_or_else(|e| panic!("{e:?}"));
        let t = arm_template(&region, None);
        let types: Vec<&str> = t["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "Microsoft.KeyVault/vaults",
                "Microsoft.KeyVault/vaults/keys",
                "Microsoft.Authorization/roleAssignments"
            ]
        );
        assert_eq!(
            t["resources"][0]["properties"]["enablePurgeProtection"],
            true
        );
        assert_eq!(t["parameters"]["location"]["defaultValue"], "eastus2");
    }
}
