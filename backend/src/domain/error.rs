//! What a use case can refuse, in the domain's words. The HTTP layer maps each variant to a
//! status and a problem `type`; nothing here formats a response.

/// Why a request body could not be received whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than allowed")]
    TooLarge,
    #[error("the body did not arrive in time")]
    TimedOut,
    #[error("the body could not be read")]
    Broken,
}

/// Which uniqueness rule a refused write broke, so a caller never reports the wrong reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// Project names are unique within an organization.
    ProjectName,
    /// R4: one key per (project, provider, region).
    KeyPerRegion,
    /// One pending invitation per email and organization.
    PendingInvitation,
    /// Cluster names are unique within a project.
    ClusterName,
    /// A row still refers to the one being deleted (a key that a cluster or backup uses).
    InUse,
    /// The key was replaced meanwhile, or a re-wrap of it is running.
    KeyChange,
    /// Any other unique index or primary key, named as the database named it.
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; the variant says which.
    #[error("conflict on {0:?}")]
    Conflict(Constraint),
    /// The database cannot be reached right now (down, restarting, pool exhausted): the
    /// request may be tried again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race with another writer (serialization failure, deadlock, a
    /// busy SQLite file) and was rolled back; the store retries these itself.
    #[error("write contention: {0}")]
    Contention(String),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be read back into a domain type.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database file itself is damaged (SQLite's integrity check or a read failed on a
    /// malformed page): the console stops writing to it and reports not ready.
    #[error("database damaged: {0}")]
    Damaged(String),
}

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
    /// Cluster names are unique within a project.
    ClusterNameTaken,
    /// R5, R11: a CMEK cluster needs an active key in each of its regions.
    KeyRequiredForRegion,
    /// R6: CMEK projects hold Dedicated clusters only.
    DedicatedOnly,
    /// R7: no dual-region backup in CMEK projects.
    NoDualRegionBackup,
    /// The cluster is not in a state that allows this (paused clusters serve no data, ...).
    ClusterState,
    /// An encryption key that a cluster or backup uses cannot be deleted.
    KeyInUse,
    /// The audit log, the Key Status page and alerts are for owners and auditors.
    OwnersAndAuditors,
    /// An organization has at most `MAX_WEBHOOKS` webhooks.
    WebhookLimit,
    /// The backup is not in a state that allows this (one being taken is neither restored
    /// nor deleted until it is done).
    BackupState,
    /// A key that was replaced is not replaced again (replace its successor), and a key
    /// being re-wrapped takes no other change until the re-wrap ends.
    KeyChange,
}

impl Rule {
    pub const ALL: [Rule; 18] = [
        Rule::CmekImmutable,
        Rule::OwnerOnly,
        Rule::ProjectNameTaken,
        Rule::CmekNotEnabled,
        Rule::LocalKmsInProduction,
        Rule::OneKeyPerRegion,
        Rule::LastOwner,
        Rule::InvitationPending,
        Rule::ClusterNameTaken,
        Rule::KeyRequiredForRegion,
        Rule::DedicatedOnly,
        Rule::NoDualRegionBackup,
        Rule::ClusterState,
        Rule::KeyInUse,
        Rule::OwnersAndAuditors,
        Rule::WebhookLimit,
        Rule::BackupState,
        Rule::KeyChange,
    ];

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
            Rule::ClusterNameTaken => "cluster-name-taken",
            Rule::KeyRequiredForRegion => "key-required-for-region",
            Rule::DedicatedOnly => "cmek-dedicated-only",
            Rule::NoDualRegionBackup => "no-dual-region-backup",
            Rule::ClusterState => "cluster-state",
            Rule::KeyInUse => "key-in-use",
            Rule::OwnersAndAuditors => "owners-and-auditors",
            Rule::WebhookLimit => "webhook-limit",
            Rule::BackupState => "backup-state",
            Rule::KeyChange => "key-change",
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
    /// A rule refused the request as sent (422), naming the field.
    #[error("{detail}")]
    Refused {
        rule: Rule,
        field: &'static str,
        detail: String,
    },
    /// The KMS refused (or could not be reached for) the data key of one or more regions;
    /// each failure names the region, the key and the KMS error.
    #[error("{action}: the KMS could not provide the data key")]
    KeyUnusable {
        action: &'static str,
        failures: Vec<crate::domain::kms::RegionFailure>,
    },
    /// Stored data failed its integrity check (altered, truncated, moved): nothing of it is
    /// returned.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// Object storage could not be reached; the cause is for the log.
    #[error("object storage unavailable: {0}")]
    Storage(String),
    /// A request body that could not be received whole.
    #[error("request body: {0}")]
    Body(BodyError),
    /// The key failed a required check of Test Encryption Key; nothing was created.
    #[error("the encryption key test failed")]
    ChecksFailed(crate::domain::keys::checks::Checklist),
    /// The caller asked more often than the console allows; try again after `retry_after`.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// The console is at a limit of its own (memory for uploads): nothing was done; try
    /// again after `retry_after`.
    #[error("{detail}")]
    Overloaded {
        detail: String,
        retry_after: std::time::Duration,
    },
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
