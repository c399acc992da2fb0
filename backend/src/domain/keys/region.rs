//! AWS region codes and the partition each belongs to.

/// Commercial, GovCloud and China regions, as of late 2026.
pub const AWS_REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "US East (N. Virginia)"),
    ("us-east-2", "US East (Ohio)"),
    ("us-west-1", "US West (N. California)"),
    ("us-west-2", "US West (Oregon)"),
    ("af-south-1", "Africa (Cape Town)"),
    ("ap-east-1", "Asia Pacific (Hong Kong)"),
    ("ap-east-2", "Asia Pacific (Taipei)"),
    ("ap-south-1", "Asia Pacific (Mumbai)"),
    ("ap-south-2", "Asia Pacific (Hyderabad)"),
    ("ap-southeast-1", "Asia Pacific (Singapore)"),
    ("ap-southeast-2", "Asia Pacific (Sydney)"),
    ("ap-southeast-3", "Asia Pacific (Jakarta)"),
    ("ap-southeast-4", "Asia Pacific (Melbourne)"),
    ("ap-southeast-5", "Asia Pacific (Malaysia)"),
    ("ap-southeast-7", "Asia Pacific (Thailand)"),
    ("ap-northeast-1", "Asia Pacific (Tokyo)"),
    ("ap-northeast-2", "Asia Pacific (Seoul)"),
    ("ap-northeast-3", "Asia Pacific (Osaka)"),
    ("ca-central-1", "Canada (Central)"),
    ("ca-west-1", "Canada West (Calgary)"),
    ("eu-central-1", "Europe (Frankfurt)"),
    ("eu-central-2", "Europe (Zurich)"),
    ("eu-west-1", "Europe (Ireland)"),
    ("eu-west-2", "Europe (London)"),
    ("eu-west-3", "Europe (Paris)"),
    ("eu-south-1", "Europe (Milan)"),
    ("eu-south-2", "Europe (Spain)"),
    ("eu-north-1", "Europe (Stockholm)"),
    ("il-central-1", "Israel (Tel Aviv)"),
    ("me-south-1", "Middle East (Bahrain)"),
    ("me-central-1", "Middle East (UAE)"),
    ("mx-central-1", "Mexico (Central)"),
    ("sa-east-1", "South America (São Paulo)"),
    ("us-gov-east-1", "AWS GovCloud (US-East)"),
    ("us-gov-west-1", "AWS GovCloud (US-West)"),
    ("cn-north-1", "China (Beijing)"),
    ("cn-northwest-1", "China (Ningxia)"),
];

/// A known AWS region code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsRegion(String);

impl AwsRegion {
    pub fn parse(field: &str, raw: &str) -> Result<Self, crate::domain::FieldError> {
        let code = raw.trim();
        if AWS_REGIONS.iter().any(|(c, _)| *c == code) {
            Ok(Self(code.to_owned()))
        } else {
            Err(crate::domain::FieldError::new(
                field,
                format!("\"{code}\" is not an AWS region code (for example us-east-1)"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ARN partition of the region.
    pub fn partition(&self) -> &'static str {
        if self.0.starts_with("us-gov-") {
            "aws-us-gov"
        } else if self.0.starts_with("cn-") {
            "aws-cn"
        } else {
            "aws"
        }
    }

    /// The DNS suffix of its service endpoints, as used in `kms:ViaService`.
    pub fn dns_suffix(&self) -> &'static str {
        if self.0.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }
}

impl std::fmt::Display for AwsRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_regions_parse_with_their_partition() {
        let region = AwsRegion::parse("region", "eu-west-1").ok();
        assert_eq!(region.as_ref().map(AwsRegion::partition), Some("aws"));
        let gov = AwsRegion::parse("region", "us-gov-west-1").ok();
        assert_eq!(gov.as_ref().map(AwsRegion::partition), Some("aws-us-gov"));
        assert!(AwsRegion::parse("region", "mars-north-1").is_err());
        assert!(AwsRegion::parse("region", "").is_err());
    }
}
