//! Region codes: AWS's (with the partition each belongs to) and Azure's. A region is only
//! ever one of these known codes; which list applies depends on the provider.

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

/// Azure's physical regions as `az account list-locations` names them (programmatic names),
/// as of late 2026, with their display names: the public cloud's, then Azure Government's and
/// Azure in China's (for consoles whose vault template and authority point there).
pub const AZURE_REGIONS: &[(&str, &str)] = &[
    ("eastus", "East US"),
    ("eastus2", "East US 2"),
    ("centralus", "Central US"),
    ("northcentralus", "North Central US"),
    ("southcentralus", "South Central US"),
    ("westcentralus", "West Central US"),
    ("westus", "West US"),
    ("westus2", "West US 2"),
    ("westus3", "West US 3"),
    ("brazilsoutheast", "Brazil Southeast"),
    ("canadacentral", "Canada Central"),
    ("canadaeast", "Canada East"),
    ("mexicocentral", "Mexico Central"),
    ("brazilsouth", "Brazil South"),
    ("northeurope", "North Europe"),
    ("westeurope", "West Europe"),
    ("uksouth", "UK South"),
    ("ukwest", "UK West"),
    ("francecentral", "France Central"),
    ("francesouth", "France South"),
    ("germanynorth", "Germany North"),
    ("germanywestcentral", "Germany West Central"),
    ("switzerlandnorth", "Switzerland North"),
    ("switzerlandwest", "Switzerland West"),
    ("norwayeast", "Norway East"),
    ("norwaywest", "Norway West"),
    ("swedencentral", "Sweden Central"),
    ("polandcentral", "Poland Central"),
    ("italynorth", "Italy North"),
    ("spaincentral", "Spain Central"),
    ("israelcentral", "Israel Central"),
    ("uaenorth", "UAE North"),
    ("uaecentral", "UAE Central"),
    ("qatarcentral", "Qatar Central"),
    ("southafricanorth", "South Africa North"),
    ("southafricawest", "South Africa West"),
    ("centralindia", "Central India"),
    ("southindia", "South India"),
    ("westindia", "West India"),
    ("jioindiawest", "Jio India West"),
    ("jioindiacentral", "Jio India Central"),
    ("eastasia", "East Asia"),
    ("southeastasia", "Southeast Asia"),
    ("japaneast", "Japan East"),
    ("japanwest", "Japan West"),
    ("koreacentral", "Korea Central"),
    ("koreasouth", "Korea South"),
    ("australiaeast", "Australia East"),
    ("australiasoutheast", "Australia Southeast"),
    ("australiacentral", "Australia Central"),
    ("australiacentral2", "Australia Central 2"),
    ("newzealandnorth", "New Zealand North"),
    ("indonesiacentral", "Indonesia Central"),
    ("malaysiawest", "Malaysia West"),
    ("usgovvirginia", "USGov Virginia"),
    ("usgovarizona", "USGov Arizona"),
    ("usgovtexas", "USGov Texas"),
    ("chinanorth2", "China North 2"),
    ("chinaeast2", "China East 2"),
    ("chinanorth3", "China North 3"),
    ("chinaeast3", "China East 3"),
];

/// Google Cloud regions where Cloud KMS keeps keys (a key's location must be its clusters'
/// region, so the multi-regions `global`, `us`, `europe`, `asia` are not offered).
pub const GCP_REGIONS: &[(&str, &str)] = &[
    ("us-central1", "Iowa"),
    ("us-east1", "South Carolina"),
    ("us-east4", "Northern Virginia"),
    ("us-east5", "Columbus"),
    ("us-south1", "Dallas"),
    ("us-west1", "Oregon"),
    ("us-west2", "Los Angeles"),
    ("us-west3", "Salt Lake City"),
    ("us-west4", "Las Vegas"),
    ("northamerica-northeast1", "Montréal"),
    ("northamerica-northeast2", "Toronto"),
    ("southamerica-east1", "São Paulo"),
    ("southamerica-west1", "Santiago"),
    ("europe-west1", "Belgium"),
    ("europe-west2", "London"),
    ("europe-west3", "Frankfurt"),
    ("europe-west4", "Netherlands"),
    ("europe-west6", "Zurich"),
    ("europe-west8", "Milan"),
    ("europe-west9", "Paris"),
    ("europe-west10", "Berlin"),
    ("europe-west12", "Turin"),
    ("europe-north1", "Finland"),
    ("europe-central2", "Warsaw"),
    ("europe-southwest1", "Madrid"),
    ("asia-east1", "Taiwan"),
    ("asia-east2", "Hong Kong"),
    ("asia-northeast1", "Tokyo"),
    ("asia-northeast2", "Osaka"),
    ("asia-northeast3", "Seoul"),
    ("asia-south1", "Mumbai"),
    ("asia-south2", "Delhi"),
    ("asia-southeast1", "Singapore"),
    ("asia-southeast2", "Jakarta"),
    ("australia-southeast1", "Sydney"),
    ("australia-southeast2", "Melbourne"),
    ("me-west1", "Tel Aviv"),
    ("me-central1", "Doha"),
    ("me-central2", "Dammam"),
    ("africa-south1", "Johannesburg"),
];

/// The ARN partition of an AWS region code.
pub fn aws_partition(code: &str) -> &'static str {
    if code.starts_with("us-gov-") {
        "aws-us-gov"
    } else if code.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    }
}

/// A known region code, of AWS, Azure or Google Cloud.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

impl Region {
    /// An AWS region code (also what the local KMS uses).
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

    /// An Azure region name (`eastus2`); the display form (`East US 2`) is accepted too.
    pub fn parse_azure(field: &str, raw: &str) -> Result<Self, crate::domain::FieldError> {
        let name = azure_name(raw);
        if AZURE_REGIONS.iter().any(|(c, _)| *c == name) {
            Ok(Self(name))
        } else {
            Err(crate::domain::FieldError::new(
                field,
                format!(
                    "\"{}\" is not an Azure region name (for example eastus2)",
                    raw.trim()
                ),
            ))
        }
    }

    /// A Google Cloud region (`us-east1`), as Cloud KMS names a key's location.
    pub fn parse_gcp(field: &str, raw: &str) -> Result<Self, crate::domain::FieldError> {
        let code = raw.trim();
        if GCP_REGIONS.iter().any(|(c, _)| *c == code) {
            Ok(Self(code.to_owned()))
        } else {
            Err(crate::domain::FieldError::new(
                field,
                format!(
                    "\"{code}\" is not a Google Cloud region (for example us-east1 or europe-west1; a key's location must be its clusters' region, so multi-regions such as global are not accepted)"
                ),
            ))
        }
    }

    /// A region of the provider's own list.
    pub fn parse_for(
        provider: super::Provider,
        field: &str,
        raw: &str,
    ) -> Result<Self, crate::domain::FieldError> {
        match provider {
            super::Provider::AzureKeyVault => Self::parse_azure(field, raw),
            super::Provider::GcpKms => Self::parse_gcp(field, raw),
            super::Provider::AwsKms | super::Provider::Local => Self::parse(field, raw),
        }
    }

    /// A stored region of any list (what the database holds was parsed on the way in).
    pub fn parse_known(field: &str, raw: &str) -> Result<Self, crate::domain::FieldError> {
        Self::parse(field, raw)
            .or_else(|_| Self::parse_azure(field, raw))
            .or_else(|_| Self::parse_gcp(field, raw))
    }

    /// Whether `reported` (as Key Vault's `x-ms-keyvault-region` header says it, in any case
    /// and spacing) names this region.
    pub fn is_named_by(&self, reported: &str) -> bool {
        azure_name(reported) == self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ARN partition of the region.
    pub fn partition(&self) -> &'static str {
        aws_partition(&self.0)
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

/// An Azure region as its programmatic name: `East US 2` and `eastus2` are the same region.
fn azure_name(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_regions_parse_with_their_partition() {
        let region = Region::parse("region", "eu-west-1").ok();
        assert_eq!(region.as_ref().map(Region::partition), Some("aws"));
        let gov = Region::parse("region", "us-gov-west-1").ok();
        assert_eq!(gov.as_ref().map(Region::partition), Some("aws-us-gov"));
        assert!(Region::parse("region", "mars-north-1").is_err());
        assert!(Region::parse("region", "").is_err());
    }

    #[test]
    fn azure_regions_parse_by_name_or_display_name() {
        let r = Region::parse_azure("region", "East US 2").ok();
        assert_eq!(r.as_ref().map(Region::as_str), Some("eastus2"));
        assert!(Region::parse_azure("region", "us-east-1").is_err());
        assert!(Region::parse("region", "eastus2").is_err());
        let r = Region::parse_known("region", "westeurope").ok();
        assert!(r.is_some_and(|r| r.is_named_by("West Europe")));
    }
}
