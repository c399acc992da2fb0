//! A request to create a cluster, as clients send it, parsed into types that cannot be
//! wrong; the rules that depend on the project (R5-R7, R11) are checked in `lifecycle`.

use super::{ClusterName, MAX_REGIONS, Tier};
use crate::domain::keys::Provider;
use crate::domain::keys::region::Region;
use crate::domain::{DomainError, FieldError};

/// What clients send, unparsed.
#[derive(Clone, Debug, Default)]
pub struct ClusterRequestInput {
    pub name: String,
    pub provider: String,
    pub regions: Vec<String>,
    /// Absent means `dedicated`.
    pub tier: Option<String>,
    pub dual_region_backup: bool,
}

#[derive(Clone, Debug)]
pub struct NewCluster {
    pub name: ClusterName,
    pub provider: Provider,
    pub regions: Vec<Region>,
    pub tier: Tier,
    pub dual_region_backup: bool,
}

/// The cloud a cluster runs in, named as for keys (`aws_kms`) or as the cloud (`aws`).
fn provider(raw: &str) -> Result<Provider, FieldError> {
    match raw {
        "aws" => Ok(Provider::AwsKms),
        "azure" => Ok(Provider::AzureKeyVault),
        "gcp" => Ok(Provider::GcpKms),
        other => Provider::parse(other).map_err(|_| {
            FieldError::new(
                "provider",
                "must be \"aws_kms\" (or \"aws\"), \"azure_key_vault\" (or \"azure\"), \"gcp_kms\" (or \"gcp\") or \"local\"",
            )
        }),
    }
}

impl NewCluster {
    /// Parses every field and reports every problem at once.
    pub fn parse(input: &ClusterRequestInput) -> Result<Self, DomainError> {
        let mut errors = Vec::new();
        let name = ClusterName::parse(&input.name)
            .map_err(|e| errors.push(e))
            .ok();
        let provider = provider(input.provider.trim())
            .map_err(|e| errors.push(e))
            .ok();
        let tier = Tier::parse(input.tier.as_deref().unwrap_or("dedicated").trim())
            .map_err(|e| errors.push(e))
            .ok();
        let mut regions: Vec<Region> = Vec::new();
        if input.regions.is_empty() {
            errors.push(FieldError::new("regions", "must list at least one region"));
        } else if input.regions.len() > MAX_REGIONS {
            errors.push(FieldError::new(
                "regions",
                format!("a cluster spans at most {MAX_REGIONS} regions"),
            ));
        }
        for (i, raw) in input.regions.iter().enumerate() {
            let cloud = provider.unwrap_or(Provider::AwsKms);
            match Region::parse_for(cloud, &format!("regions[{i}]"), raw) {
                Ok(region) if regions.contains(&region) => errors.push(FieldError::new(
                    format!("regions[{i}]"),
                    format!("{region} is listed twice"),
                )),
                Ok(region) => regions.push(region),
                Err(e) => errors.push(e),
            }
        }
        match (name, provider, tier) {
            (Some(name), Some(provider), Some(tier)) if errors.is_empty() => Ok(Self {
                name,
                provider,
                regions,
                tier,
                dual_region_backup: input.dual_region_backup,
            }),
            _ => Err(DomainError::Invalid(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(regions: &[&str]) -> ClusterRequestInput {
        ClusterRequestInput {
            name: "orders".into(),
            provider: "aws".into(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_cluster_defaults_to_dedicated_and_names_the_cloud_either_way() {
        let parsed = NewCluster::parse(&input(&["us-east-1"])).ok();
        assert_eq!(parsed.as_ref().map(|c| c.tier), Some(Tier::Dedicated));
        assert_eq!(parsed.map(|c| c.provider), Some(Provider::AwsKms));
    }

    #[test]
    fn regions_are_known_distinct_and_few() {
        let fields = |i: ClusterRequestInput| match NewCluster::parse(&i) {
            Err(DomainError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            _ => Vec::new(),
        };
        assert_eq!(fields(input(&[])), vec!["regions"]);
        assert_eq!(fields(input(&["mars-1"])), vec!["regions[0]"]);
        assert_eq!(
            fields(input(&["us-east-1", "us-east-1"])),
            vec!["regions[1]"]
        );
        assert_eq!(
            fields(input(&[
                "us-east-1",
                "us-east-2",
                "us-west-1",
                "us-west-2",
                "eu-west-1",
                "eu-west-2"
            ])),
            vec!["regions"]
        );
    }
}
