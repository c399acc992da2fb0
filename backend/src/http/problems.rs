//! Every kind of problem the API answers, documented where its `type` points.
//!
//! A problem's `type` is `https://cmek-console.dev/problems/<slug>` for a kind of failure and
//! `https://cmek-console.dev/rules/<slug>` for a rule of the product that refused the request.
//! Clients compare the `type`; people follow it. The console serves the same documentation
//! itself, so it is there even without the internet: `/problems` lists every type, and
//! `/problems/<slug>` and `/rules/<slug>` explain one (`pages/problems.rs`). `errors.rs` builds
//! problems only from [`ProblemKind`] and [`Rule`], so no answer can carry a type this list
//! lacks.

use actix_web::http::StatusCode;

use crate::domain::Rule;

/// Where problem types live: `<base>/problems/<slug>` and `<base>/rules/<slug>`.
pub const PROBLEM_BASE: &str = "https://cmek-console.dev";

/// A kind of failure that is not a product rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    MalformedRequest,
    Validation,
    Unauthenticated,
    CrossSiteRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    HeadersTooLarge,
    TooManyRequests,
    KeyTestFailed,
    KmsKeyUnusable,
    ObjectIntegrity,
    StorageUnavailable,
    Overloaded,
    Unavailable,
    DatabaseDamaged,
    Internal,
}

/// One documented problem type.
pub struct ProblemDoc {
    pub slug: &'static str,
    /// `problems` or `rules`: the path segment of the type URI.
    pub family: &'static str,
    pub title: &'static str,
    /// The statuses it comes with.
    pub statuses: &'static [u16],
    /// What happened and what to do, in a few sentences.
    pub about: &'static str,
}

impl ProblemDoc {
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_BASE}/{}/{}", self.family, self.slug)
    }

    pub fn path(&self) -> String {
        format!("/{}/{}", self.family, self.slug)
    }

    /// The statuses as people read them, e.g. `409 Conflict or 503 Service Unavailable`.
    pub fn status_line(&self) -> String {
        self.statuses
            .iter()
            .map(|status| {
                let reason = StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                format!("{status} {reason}")
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 19] = [
        Self::MalformedRequest,
        Self::Validation,
        Self::Unauthenticated,
        Self::CrossSiteRequest,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::HeadersTooLarge,
        Self::TooManyRequests,
        Self::KeyTestFailed,
        Self::KmsKeyUnusable,
        Self::ObjectIntegrity,
        Self::StorageUnavailable,
        Self::Overloaded,
        Self::Unavailable,
        Self::DatabaseDamaged,
        Self::Internal,
    ];

    pub fn doc(self) -> ProblemDoc {
        let (slug, title, statuses, about): (_, _, &'static [u16], _) = match self {
            Self::MalformedRequest => (
                "malformed-request",
                "Malformed request",
                &[400],
                "The request could not be read: its body is not JSON (a syntax error), its \
                 query string cannot be decoded, or its body ended early. Fix the request; \
                 `detail` says what was wrong.",
            ),
            Self::Validation => (
                "validation",
                "Invalid input",
                &[422],
                "The request was read, but a field or query parameter was refused: the body is \
                 not a JSON object, a field is missing, unknown or of the wrong type, or a value \
                 breaks its rule. `errors` lists every refused field with the reason, all at \
                 once; nothing was changed.",
            ),
            Self::Unauthenticated => (
                "unauthenticated",
                "Not signed in",
                &[401],
                "No valid credentials: send an API key as `Authorization: Bearer <key>` (from \
                 the API Keys page or `cmek-console api-key create`), or sign in. A revoked or \
                 unknown key is refused the same way.",
            ),
            Self::CrossSiteRequest => (
                "cross-site-request",
                "Cross-site request refused",
                &[403],
                "A request authenticated by a browser session came from another site (its \
                 Origin did not match the console's). Scripts should use an API key.",
            ),
            Self::NotFound => (
                "not-found",
                "Not found",
                &[404],
                "No such resource in your organization, or a path parameter that cannot name \
                 one (an id that is not a UUID). Resources of other organizations are not \
                 found, never forbidden.",
            ),
            Self::MethodNotAllowed => (
                "method-not-allowed",
                "Method not allowed",
                &[405],
                "The resource exists but does not answer this method; the `Allow` header lists \
                 the ones it does.",
            ),
            Self::RequestTimeout => (
                "request-timeout",
                "Request body not received in time",
                &[408],
                "The request body did not arrive within the console's body time-out \
                 (`CMEK_BODY_TIMEOUT`, 30 s by default) or arrived too slowly; the connection \
                 is closed. Send it again.",
            ),
            Self::PayloadTooLarge => (
                "payload-too-large",
                "Request body too large",
                &[413],
                "The body is larger than the operation takes: 64 KiB for JSON bodies, 5 GiB for \
                 an object. `detail` gives the limit.",
            ),
            Self::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                &[415],
                "JSON bodies must be sent with `Content-Type: application/json`.",
            ),
            Self::HeadersTooLarge => (
                "headers-too-large",
                "Request headers too large",
                &[431],
                "The request's headers are larger than the console reads; send fewer or \
                 shorter ones.",
            ),
            Self::TooManyRequests => (
                "too-many-requests",
                "Too many requests",
                &[429],
                "Asked too often: Check now is bounded per key and per caller (it calls your \
                 KMS), test events per organization, sign-in attempts per address. Wait the \
                 seconds of the `Retry-After` header.",
            ),
            Self::KeyTestFailed => (
                "key-test-failed",
                "Encryption key test failed",
                &[422],
                "Test Encryption Key found the key unusable, so nothing was created. `checks` \
                 is the whole checklist: each check with its outcome, the KMS's own error code \
                 and a one-line fix. Fix the key or its permissions and test again.",
            ),
            Self::KmsKeyUnusable => (
                "kms-key-unusable",
                "The KMS did not provide the data key",
                &[409, 503],
                "A customer key refused to wrap or unwrap a data key, so the cluster or backup \
                 could not be created, resumed or read. `failures` names each region, its key \
                 and the KMS's error. 409 when the key is refused (disabled, access denied, not \
                 found); 503 when the KMS could not be reached, which is worth retrying.",
            ),
            Self::ObjectIntegrity => (
                "object-integrity",
                "Stored data failed its integrity check",
                &[502],
                "The stored copy of an object does not authenticate under its data key: it was \
                 altered, truncated or moved. Nothing of it was returned. Restore it from a \
                 backup.",
            ),
            Self::StorageUnavailable => (
                "storage-unavailable",
                "Object storage unavailable",
                &[503],
                "The console cannot reach its object storage right now. Nothing was changed; \
                 retry after the `Retry-After` seconds.",
            ),
            Self::Overloaded => (
                "overloaded",
                "Busy",
                &[503],
                "The console holds as much upload memory as it may (`CMEK_UPLOAD_MEMORY_MIB`); \
                 retry after the `Retry-After` seconds.",
            ),
            Self::Unavailable => (
                "unavailable",
                "Temporarily unavailable",
                &[503],
                "The console cannot reach its database right now, or a write met too much \
                 contention. Nothing was changed; retry after the `Retry-After` seconds.",
            ),
            Self::DatabaseDamaged => (
                "database-damaged",
                "Database needs its operator",
                &[503],
                "The console found its database file damaged and stopped changing it. Its \
                 operator has to restore it; nothing was changed by the request.",
            ),
            Self::Internal => (
                "internal",
                "Internal error",
                &[500],
                "Something failed on the console's side. The answer says nothing more; quote \
                 the `x-request-id` response header when reporting it.",
            ),
        };
        ProblemDoc {
            slug,
            family: "problems",
            title,
            statuses,
            about,
        }
    }
}

/// The documentation of a rule's problem type: the status it is answered with and why.
pub fn rule_doc(rule: Rule) -> ProblemDoc {
    let (title, status, about): (_, &'static [u16], _) = match rule {
        Rule::CmekImmutable => (
            "Conflict",
            &[409],
            "R1: whether a project uses customer-managed keys is chosen when it is created and \
             never changes. Create another project to change it.",
        ),
        Rule::OwnerOnly => (
            "Not allowed",
            &[403],
            "R2: only an Organization Owner creates projects, manages encryption keys, \
             clusters, webhooks, members and API keys. Members and auditors read.",
        ),
        Rule::ProjectNameTaken => (
            "Conflict",
            &[409],
            "Project names are unique within an organization; choose another name.",
        ),
        Rule::CmekNotEnabled => (
            "Conflict",
            &[409],
            "Encryption keys belong to projects created with CMEK enabled (R1).",
        ),
        Rule::LocalKmsInProduction => (
            "Not allowed",
            &[403],
            "R3: the built-in local KMS is for development; a console running with \
             `CMEK_ENV=production` refuses it. Use AWS KMS or Azure Key Vault.",
        ),
        Rule::OneKeyPerRegion => (
            "Conflict",
            &[409],
            "R4: a project has at most one encryption key per provider and region. Delete the \
             existing key first (when nothing uses it).",
        ),
        Rule::LastOwner => (
            "Conflict",
            &[409],
            "An organization keeps at least one owner: the last one cannot leave or be demoted.",
        ),
        Rule::InvitationPending => (
            "Conflict",
            &[409],
            "One pending invitation per email and organization; revoke the first to send \
             another.",
        ),
        Rule::ClusterNameTaken => (
            "Conflict",
            &[409],
            "Cluster names are unique within a project; choose another name.",
        ),
        Rule::KeyRequiredForRegion => (
            "Conflict",
            &[409],
            "R5, R11: a cluster of a CMEK project needs an active key of its provider in each \
             of its regions. Create the key first (Encryption Access).",
        ),
        Rule::DedicatedOnly => (
            "Refused",
            &[422],
            "R6: CMEK projects hold Dedicated clusters only.",
        ),
        Rule::NoDualRegionBackup => (
            "Refused",
            &[422],
            "R7: a cluster of a CMEK project cannot keep a backup copy in a second region.",
        ),
        Rule::ClusterState => (
            "Conflict",
            &[409],
            "The cluster's state does not allow this: a paused or inaccessible cluster serves \
             no data, only a paused cluster resumes, and so on. `detail` names the state.",
        ),
        Rule::BackupState => (
            "Conflict",
            &[409],
            "A backup's job does not allow this now: a backup that is still being taken (state \
             `creating`) can be neither restored nor deleted, nor its cluster deleted, until its \
             job ends; a backup a restore is reading is not deleted until the restore ends; a \
             failed backup holds nothing to restore. `detail` says which.",
        ),
        Rule::KeyChange => (
            "Conflict",
            &[409],
            "The key cannot be changed this way now: a key that was replaced is not replaced or \
             re-wrapped again (change its successor, named in `detail`), and a key being \
             re-wrapped (or the key a re-wrap moves data keys to) takes no other replacement, \
             re-wrap or deletion until that re-wrap ends.",
        ),
        Rule::KeyInUse => (
            "Conflict",
            &[409],
            "An encryption key that a cluster or backup still uses cannot be deleted: delete \
             or move what it protects first.",
        ),
        Rule::OwnersAndAuditors => (
            "Not allowed",
            &[403],
            "The audit log, Key Status and alerts are for owners and auditors.",
        ),
        Rule::WebhookLimit => (
            "Conflict",
            &[409],
            "An organization has at most ten webhooks; delete one to add another.",
        ),
    };
    ProblemDoc {
        slug: rule.slug(),
        family: "rules",
        title,
        statuses: status,
        about,
    }
}

/// Every documented type: kinds first, then rules.
pub fn all() -> Vec<ProblemDoc> {
    ProblemKind::ALL
        .into_iter()
        .map(ProblemKind::doc)
        .chain(Rule::ALL.into_iter().map(rule_doc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A variant added to either enum fails to compile here until it gets a place (and the
    /// count of places below goes up with it); the test then fails until `ALL` holds it too,
    /// so no type goes undocumented.
    #[test]
    fn every_kind_and_rule_is_listed_once() {
        let place = |kind: ProblemKind| match kind {
            ProblemKind::MalformedRequest => 0,
            ProblemKind::Validation => 1,
            ProblemKind::Unauthenticated => 2,
            ProblemKind::CrossSiteRequest => 3,
            ProblemKind::NotFound => 4,
            ProblemKind::MethodNotAllowed => 5,
            ProblemKind::RequestTimeout => 6,
            ProblemKind::PayloadTooLarge => 7,
            ProblemKind::UnsupportedMediaType => 8,
            ProblemKind::HeadersTooLarge => 9,
            ProblemKind::TooManyRequests => 10,
            ProblemKind::KeyTestFailed => 11,
            ProblemKind::KmsKeyUnusable => 12,
            ProblemKind::ObjectIntegrity => 13,
            ProblemKind::StorageUnavailable => 14,
            ProblemKind::Overloaded => 15,
            ProblemKind::Unavailable => 16,
            ProblemKind::DatabaseDamaged => 17,
            ProblemKind::Internal => 18,
        };
        let places: Vec<usize> = ProblemKind::ALL.into_iter().map(place).collect();
        // 19 arms above: every place is in `ALL`, once, in order.
        assert_eq!(places, (0..19).collect::<Vec<_>>());

        let place = |rule: Rule| match rule {
            Rule::CmekImmutable => 0,
            Rule::OwnerOnly => 1,
            Rule::ProjectNameTaken => 2,
            Rule::CmekNotEnabled => 3,
            Rule::LocalKmsInProduction => 4,
            Rule::OneKeyPerRegion => 5,
            Rule::LastOwner => 6,
            Rule::InvitationPending => 7,
            Rule::ClusterNameTaken => 8,
            Rule::KeyRequiredForRegion => 9,
            Rule::DedicatedOnly => 10,
            Rule::NoDualRegionBackup => 11,
            Rule::ClusterState => 12,
            Rule::KeyInUse => 13,
            Rule::OwnersAndAuditors => 14,
            Rule::WebhookLimit => 15,
            Rule::BackupState => 16,
            Rule::KeyChange => 17,
        };
        let places: Vec<usize> = Rule::ALL.into_iter().map(place).collect();
        // 18 arms above.
        assert_eq!(places, (0..18).collect::<Vec<_>>());
    }
}
