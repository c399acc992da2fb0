//! KMS key ARNs and IAM role ARNs, parsed at the edge with errors that say what is wrong.

use super::region::Region;
use crate::domain::FieldError;

const EXAMPLE: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// `arn:<partition>:kms:<region>:<account>:key/<uuid | mrk-<32 hex>>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKeyArn {
    arn: String,
    region: Region,
    account: String,
    key_id: String,
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_mrk(s: &str) -> bool {
    s.strip_prefix("mrk-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl KmsKeyArn {
    /// Parses `raw` for the request field `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        let bad = |reason: String| Err(FieldError::new(field, reason));
        if raw.is_empty() {
            return bad(format!("is required: paste the key's ARN, like {EXAMPLE}"));
        }
        if is_uuid(raw) || is_mrk(raw) {
            return bad(format!(
                "is a key ID, not an ARN: paste the full key ARN from the KMS console, like {EXAMPLE}"
            ));
        }
        if raw.starts_with("alias/") {
            return bad("is an alias name; the console needs the key's own ARN (key/...), because an alias can be re-pointed to another key".into());
        }
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return bad(format!("is not an ARN: expected the form {EXAMPLE}"));
        }
        let (partition, service, region, account, resource) =
            (parts[1], parts[2], parts[3], parts[4], parts[5]);
        if service != "kms" {
            return bad(format!(
                "is an ARN of the \"{service}\" service, not of a KMS key"
            ));
        }
        if !matches!(partition, "aws" | "aws-us-gov" | "aws-cn") {
            return bad(format!(
                "has an unknown partition \"{partition}\" (expected aws, aws-us-gov or aws-cn)"
            ));
        }
        let region = Region::parse(field, region).map_err(|_| {
            FieldError::new(field, format!("names the unknown region \"{region}\""))
        })?;
        if region.partition() != partition {
            return bad(format!(
                "puts region {region} in partition \"{partition}\"; it belongs to \"{}\"",
                region.partition()
            ));
        }
        if !is_account(account) {
            return bad(format!(
                "has the account \"{account}\"; an AWS account ID is 12 digits"
            ));
        }
        if resource.starts_with("alias/") {
            return bad("is an alias ARN; the console needs the key's own ARN (key/...), because an alias can be re-pointed to another key. Find the key ARN under the alias in the KMS console".into());
        }
        let Some(key_id) = resource.strip_prefix("key/") else {
            return bad(format!(
                "names \"{resource}\"; a KMS key ARN ends in key/<key id>"
            ));
        };
        if !(is_uuid(key_id) || is_mrk(key_id)) {
            return bad(format!(
                "has the key ID \"{key_id}\"; expected a UUID or a multi-Region key ID (mrk- and 32 hex digits)"
            ));
        }
        Ok(Self {
            arn: raw.to_owned(),
            region,
            account: account.to_owned(),
            key_id: key_id.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// A multi-Region key (R11): one key id, replicas in several regions.
    pub fn is_multi_region(&self) -> bool {
        self.key_id.starts_with("mrk-")
    }
}

/// `arn:<partition>:iam::<account>:role/<path/><name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleArn(String);

impl RoleArn {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        let bad = |reason: &str| Err(FieldError::new(field, reason));
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return bad("is not an ARN: expected arn:aws:iam::111122223333:role/cmek-access");
        }
        if !matches!(parts[1], "aws" | "aws-us-gov" | "aws-cn")
            || parts[2] != "iam"
            || !parts[3].is_empty()
        {
            return bad("is not an IAM ARN (arn:aws:iam::<account>:role/<name>)");
        }
        if !is_account(parts[4]) {
            return bad("has an account that is not 12 digits");
        }
        let Some(name) = parts[5].strip_prefix("role/") else {
            return bad("is not a role ARN: the resource must start with role/");
        };
        let last = name.rsplit('/').next().unwrap_or(name);
        let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        if last.is_empty() || last.len() > 64 || !last.chars().all(valid) {
            return bad("has an invalid role name (1-64 of letters, digits and +=,.@_-)");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> String {
        KmsKeyArn::parse("key_arn", raw)
            .err()
            .map(|e| e.reason)
            .unwrap_or_default()
    }

    #[test]
    fn key_and_multi_region_arns_parse() {
        let arn = KmsKeyArn::parse("key_arn", EXAMPLE).ok();
        assert_eq!(arn.as_ref().map(|a| a.region().as_str()), Some("us-east-1"));
        assert_eq!(arn.as_ref().map(|a| a.account()), Some("111122223333"));
        let mrk = KmsKeyArn::parse(
            "key_arn",
            "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        );
        assert!(mrk.is_ok_and(|a| a.is_multi_region()));
    }

    #[test]
    fn each_mistake_gets_its_own_message() {
        assert!(reason("arn:aws:kms:us-east-1:111122223333:alias/prod").contains("alias ARN"));
        assert!(reason("alias/prod").contains("alias name"));
        assert!(reason("1234abcd-12ab-34cd-56ef-1234567890ab").contains("key ID, not an ARN"));
        assert!(reason("arn:aws:s3:::bucket").contains("\"s3\" service"));
        assert!(
            reason("arn:aws:kms:us-east-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab")
                .contains("12 digits")
        );
        assert!(
            reason("arn:aws:kms:moon-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
                .contains("unknown region")
        );
        assert!(
            reason(
                "arn:aws-cn:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            )
            .contains("belongs to \"aws\"")
        );
        assert!(reason("arn:aws:kms:us-east-1:111122223333:key/not-a-key").contains("key ID"));
        assert!(reason("").contains("required"));
        assert!(
            reason("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab ")
                .is_empty()
        );
    }

    #[test]
    fn role_arns_parse() {
        assert!(RoleArn::parse("role_arn", "arn:aws:iam::111122223333:role/cmek-access").is_ok());
        assert!(RoleArn::parse("role_arn", "arn:aws:iam::111122223333:role/path/to/cmek").is_ok());
        assert!(RoleArn::parse("role_arn", "arn:aws:iam::111122223333:user/bob").is_err());
        assert!(RoleArn::parse("role_arn", "arn:aws:iam:us-east-1:111122223333:role/x").is_err());
    }
}
