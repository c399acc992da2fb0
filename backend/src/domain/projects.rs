//! Projects and rule R1: whether a project uses customer-managed keys is decided when it is
//! created and never changes. R2: only owners create or change projects.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::error::{FieldError, Rule};

pub const PROJECT_NAME_MAX: usize = 64;

/// 1-64 characters: letters, digits, spaces, `-`, `_`, `.`; starts with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        let invalid = |reason: &str| FieldError::new("name", reason);
        if name.is_empty() {
            return Err(invalid("is required"));
        }
        if name.chars().count() > PROJECT_NAME_MAX {
            return Err(invalid("must be at most 64 characters"));
        }
        if !name.chars().next().is_some_and(char::is_alphanumeric) {
            return Err(invalid("must start with a letter or a digit"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')))
        {
            return Err(invalid(&format!(
                "may contain letters, digits, spaces, '-', '_' and '.', not {bad:?}"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// R10: what happens to running clusters when key access is revoked. `None` on a project
/// means the provider's default (AWS keeps running, Azure and Google Cloud stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationPolicy {
    KeepRunning,
    Stop,
}

impl RevocationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationPolicy::KeepRunning => "keep_running",
            RevocationPolicy::Stop => "stop",
        }
    }

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        match text {
            "keep_running" => Ok(RevocationPolicy::KeepRunning),
            "stop" => Ok(RevocationPolicy::Stop),
            _ => Err(FieldError::new(
                "revocation_policy",
                "must be \"keep_running\" or \"stop\"",
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Project {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: ProjectName,
    pub cmek_enabled: bool,
    pub revocation_policy: Option<RevocationPolicy>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A request to create a project, parsed.
#[derive(Debug)]
pub struct NewProject {
    pub name: ProjectName,
    pub cmek_enabled: bool,
    pub revocation_policy: Option<RevocationPolicy>,
}

impl NewProject {
    /// Parses every field and reports every problem at once.
    pub fn parse(
        name: &str,
        cmek_enabled: bool,
        revocation_policy: Option<&str>,
    ) -> Result<Self, DomainError> {
        let name = ProjectName::parse(name);
        let policy = parse_policy(cmek_enabled, revocation_policy);
        match (name, policy) {
            (Ok(name), Ok(revocation_policy)) => Ok(Self {
                name,
                cmek_enabled,
                revocation_policy,
            }),
            (name, policy) => Err(DomainError::Invalid(
                [name.err(), policy.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

fn parse_policy(
    cmek_enabled: bool,
    raw: Option<&str>,
) -> Result<Option<RevocationPolicy>, FieldError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let policy = RevocationPolicy::parse(raw)?;
    if !cmek_enabled {
        return Err(FieldError::new(
            "revocation_policy",
            "applies only to projects with CMEK enabled",
        ));
    }
    Ok(Some(policy))
}

/// A partial update; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub cmek_enabled: Option<bool>,
    /// `Some(None)` resets to the provider default.
    pub revocation_policy: Option<Option<String>>,
}

impl Project {
    /// Applies `changes`, refusing any change of `cmek_enabled` (R1).
    pub fn apply(&self, changes: &ProjectChanges, now: DateTime<Utc>) -> Result<Self, DomainError> {
        if let Some(wanted) = changes.cmek_enabled
            && wanted != self.cmek_enabled
        {
            let detail = if wanted {
                "CMEK cannot be enabled on an existing project: create a new project with CMEK enabled."
            } else {
                "CMEK cannot be disabled on a project that was created with it."
            };
            return Err(DomainError::Conflict {
                rule: Rule::CmekImmutable,
                field: Some("cmek_enabled"),
                detail: detail.into(),
            });
        }
        let mut errors = Vec::new();
        let mut next = self.clone();
        if let Some(name) = &changes.name {
            match ProjectName::parse(name) {
                Ok(name) => next.name = name,
                Err(e) => errors.push(e),
            }
        }
        let mut needs_cmek = false;
        if let Some(policy) = &changes.revocation_policy {
            // The value is checked as any field is (422); a valid policy for a project without
            // CMEK conflicts with what the project is, as a key for it does (409 below). In a
            // new project's body the two fields disagree with each other instead: 422.
            match parse_policy(true, policy.as_deref()) {
                Ok(Some(_)) if !self.cmek_enabled => needs_cmek = true,
                Ok(policy) => next.revocation_policy = policy,
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors));
        }
        if needs_cmek {
            return Err(DomainError::Conflict {
                rule: Rule::CmekNotEnabled,
                field: Some("revocation_policy"),
                detail: "A revocation policy applies only to projects with CMEK enabled.".into(),
            });
        }
        next.updated_at = now;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(cmek_enabled: bool) -> Project {
        let now = Utc::now();
        Project {
            id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            name: ProjectName("alpha".into()),
            cmek_enabled,
            revocation_policy: None,
            created_by: "system".into(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(
            ProjectName::parse("  prod-eu ").map(|n| n.0),
            Ok("prod-eu".into())
        );
        assert!(ProjectName::parse("").is_err());
        assert!(ProjectName::parse("-lead").is_err());
        assert!(ProjectName::parse("a<b>").is_err());
        assert!(ProjectName::parse(&"x".repeat(65)).is_err());
        assert!(ProjectName::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn cmek_can_be_neither_enabled_nor_disabled_later() {
        for before in [false, true] {
            let changes = ProjectChanges {
                cmek_enabled: Some(!before),
                ..Default::default()
            };
            let refused = project(before).apply(&changes, Utc::now());
            assert!(matches!(
                refused,
                Err(DomainError::Conflict {
                    rule: Rule::CmekImmutable,
                    ..
                })
            ));
        }
    }

    #[test]
    fn restating_the_same_cmek_choice_is_not_a_change() {
        let changes = ProjectChanges {
            cmek_enabled: Some(true),
            name: Some("beta".into()),
            ..Default::default()
        };
        let updated = project(true).apply(&changes, Utc::now()).ok();
        assert_eq!(updated.map(|p| p.name.0), Some("beta".into()));
    }

    #[test]
    fn a_revocation_policy_needs_cmek() {
        assert!(NewProject::parse("a", false, Some("stop")).is_err());
        assert!(NewProject::parse("a", true, Some("stop")).is_ok());
        assert!(NewProject::parse("a", true, Some("sometimes")).is_err());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        match NewProject::parse("", false, Some("nope")) {
            Err(DomainError::Invalid(errors)) => assert_eq!(errors.len(), 2),
            other => unreachable!("expected two field errors, got {other:?}"),
        }
    }
}
