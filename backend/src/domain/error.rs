//! What a use case can refuse, in the domain's words. The HTTP layer maps each variant to a
//! status and a problem `type`; nothing here formats a response.

use crate::domain::ports::StoreError;

/// A rule with its own stable problem type (`https://cmek-console.dev/rules/<slug>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// R1: CMEK is chosen at project creation and never changes.
    CmekImmutable,
    /// R2: only an Organization Owner creates projects and manages keys and credentials.
    OwnerOnly,
    /// Project names are unique within an organization.
    ProjectNameTaken,
    /// Encryption keys belong to CMEK projects only.
    CmekNotEnabled,
    /// R3: the built-in local KMS is refused in production.
    LocalKmsInProduction,
    /// R4: at most one key per (project, provider, region).
    OneKeyPerRegion,
    /// An organization keeps at least one owner.
    LastOwner,
    /// One pending invitation per email and organization.
    InvitationPending,
}

impl Rule {
    pub fn slug(self) -> &'static str {
        match self {
            Rule::CmekImmutable => "cmek-immutable",
            Rule::OwnerOnly => "owner-only",
            Rule::ProjectNameTaken => "project-name-taken",
            Rule::CmekNotEnabled => "cmek-not-enabled",
            Rule::LocalKmsInProduction => "local-kms-not-in-production",
            Rule::OneKeyPerRegion => "one-key-per-region",
            Rule::LastOwner => "last-owner",
            Rule::InvitationPending => "invitation-pending",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The offending field, as named in the request (`name`, `revocation_policy`, ...).
    pub field: String,
    /// Why it was refused, in a sentence.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid input: {}", describe(.0))]
    Invalid(Vec<FieldError>),
    #[error("not signed in")]
    Unauthenticated,
    #[error("{detail}")]
    Forbidden { rule: Rule, detail: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    Conflict {
        rule: Rule,
        field: Option<&'static str>,
        detail: String,
    },
    /// The key failed a required check of Test Encryption Key; nothing was created.
    #[error("the encryption key test failed")]
    ChecksFailed(crate::domain::keys::checks::Checklist),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl DomainError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, reason)])
    }
}
