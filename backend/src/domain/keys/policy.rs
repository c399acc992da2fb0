//! The JSON a customer pastes into AWS (R12), filled in for the platform's account, the
//! region and the organization: a key policy (TiDB Cloud's way) or a cross-account role's
//! trust and permission policies (CockroachDB Cloud's way). Always valid JSON.

use serde::Serialize;
use serde_json::{Value, json};

use super::arn::KmsKeyArn;
use super::region::Region;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// The key policy names the platform's account (TiDB Cloud).
    KeyPolicy,
    /// The customer's IAM role trusts the platform's account with an ExternalId (CockroachDB Cloud).
    Role,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::KeyPolicy => "key_policy",
            AccessMode::Role => "role",
        }
    }

    pub fn parse(field: &str, raw: Option<&str>) -> Result<Self, crate::domain::FieldError> {
        match raw.filter(|r| !r.is_empty()) {
            None | Some("key_policy") => Ok(AccessMode::KeyPolicy),
            Some("role") => Ok(AccessMode::Role),
            Some(_) => Err(crate::domain::FieldError::new(
                field,
                "must be \"key_policy\" or \"role\"",
            )),
        }
    }
}

/// Where the policy applies: one region, or every region (`kms:ViaService` under StringLike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyScope {
    Region(Region),
    AllRegions,
}

#[derive(Clone, Debug, Serialize)]
pub struct Statement {
    /// The statement's `Sid`.
    pub sid: String,
    /// What the statement allows and why it is needed.
    pub explanation: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PolicyDocument {
    /// The file name of the download.
    pub file_name: String,
    pub title: String,
    /// Where to paste it.
    pub instructions: String,
    pub policy: Value,
    pub statements: Vec<Statement>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AwsAccessPolicies {
    pub mode: AccessMode,
    /// The region the policy is for, or `*` for every region.
    pub region: String,
    pub platform_account_id: String,
    /// In role mode: the `sts:ExternalId` the role must require (the organization id).
    pub external_id: Option<String>,
    pub documents: Vec<PolicyDocument>,
}

pub(crate) const EBS_SID: &str =
    "Allow access through EBS for all principals in the account that are authorized to use EBS";
pub(crate) const BACKUP_SID: &str =
    "Allow the platform to use the key for encrypted backups to S3 and to verify it";

pub fn aws_policies(
    mode: AccessMode,
    scope: &PolicyScope,
    platform_account: &str,
    organization_id: &str,
    key: Option<&KmsKeyArn>,
    customer_account: Option<&str>,
) -> AwsAccessPolicies {
    let (region_label, partition) = match scope {
        PolicyScope::Region(r) => (r.as_str().to_owned(), r.partition()),
        PolicyScope::AllRegions => ("*".to_owned(), "aws"),
    };
    let documents = match mode {
        AccessMode::KeyPolicy => vec![key_policy(
            scope,
            partition,
            platform_account,
            customer_account.or(key.map(KmsKeyArn::account)),
        )],
        AccessMode::Role => role_policies(scope, partition, platform_account, organization_id, key),
    };
    AwsAccessPolicies {
        mode,
        region: region_label,
        platform_account_id: platform_account.to_owned(),
        external_id: (mode == AccessMode::Role).then(|| organization_id.to_owned()),
        documents,
    }
}

fn via_service_condition(scope: &PolicyScope, platform_account: &str) -> Value {
    match scope {
        PolicyScope::Region(region) => json!({
            "StringEquals": {
                "kms:CallerAccount": platform_account,
                "kms:ViaService": format!("ec2.{}.{}", region.as_str(), region.dns_suffix()),
            }
        }),
        PolicyScope::AllRegions => json!({
            "StringEquals": { "kms:CallerAccount": platform_account },
            "StringLike": { "kms:ViaService": "ec2.*.amazonaws.com" },
        }),
    }
}

fn key_policy(
    scope: &PolicyScope,
    partition: &str,
    platform_account: &str,
    customer_account: Option<&str>,
) -> PolicyDocument {
    let platform_root = format!("arn:{partition}:iam::{platform_account}:root");
    let mut statements = vec![
        json!({
            "Sid": EBS_SID,
            "Effect": "Allow",
            "Principal": { "AWS": "*" },
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": via_service_condition(scope, platform_account),
        }),
        json!({
            "Sid": BACKUP_SID,
            "Effect": "Allow",
            "Principal": { "AWS": platform_root },
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:GetKeyRotationStatus"],
            "Resource": "*",
        }),
    ];
    let mut explained = vec![
        Statement {
            sid: EBS_SID.into(),
            explanation: format!(
                "Lets the cluster volumes (EBS) in the platform's account {platform_account} use the key, \
                 and only through the EC2 service{}: the condition keys kms:CallerAccount and \
                 kms:ViaService keep any other caller out.",
                match scope {
                    PolicyScope::Region(r) => format!(" in {r}"),
                    PolicyScope::AllRegions => " in any region".into(),
                }
            ),
        },
        Statement {
            sid: BACKUP_SID.into(),
            explanation:
                "Lets the platform's account generate and decrypt the data keys that encrypt \
                backups in S3, wrap existing data keys under this key (when it replaces another key \
                of the region), and describe the key and read its rotation status, which is how the \
                console tests the key and watches it afterwards."
                    .into(),
        },
    ];
    if let Some(account) = customer_account {
        statements.insert(
            0,
            json!({
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:{partition}:iam::{account}:root") },
                "Action": "kms:*",
                "Resource": "*",
            }),
        );
        explained.insert(0, Statement {
            sid: "Enable IAM User Permissions".into(),
            explanation: format!("Keeps your own account {account} in control of the key (the default \
                statement of every KMS key policy). Without it you could lock yourself out of the key."),
        });
    }
    PolicyDocument {
        file_name: "ROLE-TRUST-POLICY.JSON".into(),
        title: "Key policy".into(),
        instructions: if customer_account.is_some() {
            "In the AWS KMS console, open the key, choose Key policy > Edit, and replace the policy with this one.".into()
        } else {
            "In the AWS KMS console, open the key, choose Key policy > Edit, and add these statements to the \
             Statement list, keeping the statement that gives your own account access to the key."
                .into()
        },
        policy: json!({ "Version": "2012-10-17", "Id": "cmek-policy", "Statement": statements }),
        statements: explained,
    }
}

fn role_policies(
    scope: &PolicyScope,
    partition: &str,
    platform_account: &str,
    organization_id: &str,
    key: Option<&KmsKeyArn>,
) -> Vec<PolicyDocument> {
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowThePlatformToAssumeThisRole",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:{partition}:iam::{platform_account}:root") },
            "Action": "sts:AssumeRole",
            "Condition": { "StringEquals": { "sts:ExternalId": organization_id } },
        }],
    });
    let resource = match (key, scope) {
        (Some(key), _) => key.as_str().to_owned(),
        (None, PolicyScope::Region(r)) => format!("arn:{partition}:kms:{}:*:key/*", r.as_str()),
        (None, PolicyScope::AllRegions) => "*".to_owned(),
    };
    let permissions = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowUseOfTheCmekKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:GetKeyRotationStatus"],
            "Resource": resource,
        }],
    });
    vec![
        PolicyDocument {
            file_name: "ROLE-TRUST-POLICY.JSON".into(),
            title: "Role trust policy".into(),
            instructions:
                "In the IAM console, create a role with Custom trust policy, and paste this.".into(),
            policy: trust,
            statements: vec![Statement {
                sid: "AllowThePlatformToAssumeThisRole".into(),
                explanation: format!(
                    "Lets the platform's account {platform_account} assume the role, and only when it \
                     presents your organization id {organization_id} as the external id, so no other \
                     customer of the platform can make it use your role."
                ),
            }],
        },
        PolicyDocument {
            file_name: "ROLE-PERMISSION-POLICY.JSON".into(),
            title: "Role permission policy".into(),
            instructions: "Attach this to the role as an inline policy.".into(),
            policy: permissions,
            statements: vec![Statement {
                sid: "AllowUseOfTheCmekKey".into(),
                explanation: if key.is_some() {
                    "Lets the role use this one key to encrypt and decrypt data keys, describe it and read its rotation status.".into()
                } else {
                    "Lets the role use KMS keys in the region; enter the key ARN to narrow it to your key.".into()
                },
            }],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(code: &str) -> PolicyScope {
        PolicyScope::Region(Region::parse("region", code).unwrap_or_else(|_| unreachable!()))
    }

    #[test]
    fn the_key_policy_is_the_seeds_filled_in() {
        let p = aws_policies(
            AccessMode::KeyPolicy,
            &region("us-west-2"),
            "380838443567",
            "org",
            None,
            None,
        );
        let doc = &p.documents[0].policy;
        assert_eq!(doc["Id"], "cmek-policy");
        assert_eq!(
            doc["Statement"][0]["Condition"]["StringEquals"]["kms:ViaService"],
            "ec2.us-west-2.amazonaws.com"
        );
        assert_eq!(
            doc["Statement"][0]["Condition"]["StringEquals"]["kms:CallerAccount"],
            "380838443567"
        );
        assert_eq!(
            doc["Statement"][1]["Principal"]["AWS"],
            "arn:aws:iam::380838443567:root"
        );
        assert_eq!(p.documents[0].file_name, "ROLE-TRUST-POLICY.JSON");
        let text = serde_json::to_string_pretty(doc).unwrap_or_default();
        assert!(!text.contains("...") && !text.contains("//"));
    }

    #[test]
    fn one_policy_can_serve_every_region() {
        let p = aws_policies(
            AccessMode::KeyPolicy,
            &PolicyScope::AllRegions,
            "380838443567",
            "org",
            None,
            None,
        );
        let condition = &p.documents[0].policy["Statement"][0]["Condition"];
        assert_eq!(
            condition["StringLike"]["kms:ViaService"],
            "ec2.*.amazonaws.com"
        );
        assert!(condition["StringEquals"].get("kms:ViaService").is_none());
    }

    #[test]
    fn role_mode_requires_the_organization_as_external_id() {
        let p = aws_policies(
            AccessMode::Role,
            &region("eu-west-1"),
            "380838443567",
            "org-42",
            None,
            None,
        );
        assert_eq!(p.external_id.as_deref(), Some("org-42"));
        assert_eq!(
            p.documents[0].policy["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            "org-42"
        );
        let actions = &p.documents[1].policy["Statement"][0]["Action"];
        for action in [
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:GenerateDataKey*",
            "kms:ReEncrypt*",
        ] {
            assert!(
                actions
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == action)),
                "{action}"
            );
        }
    }
}
