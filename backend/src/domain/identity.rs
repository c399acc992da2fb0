//! Who is calling, in the domain's words: organizations, their people (a `User` is one
//! person's membership of one organization) and roles, the actor behind a request, and the
//! credentials that prove identity (sign-in links, sessions, API keys). The flows live in
//! `sign_in`, `sso`, `organizations`, `members` and `api_keys`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::error::Rule;
pub use crate::domain::secrets::{NewSecret, hash_secret};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Organization Owner: creates projects, manages keys and credentials.
    Owner,
    /// Reads everything in the organization.
    Member,
    /// Reads everything, the audit log above all.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Member, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The `role` field of a request.
    pub fn parse_field(text: &str) -> Result<Self, DomainError> {
        Self::parse(text).ok_or_else(|| DomainError::invalid("role", Self::CHOICES))
    }

    pub const CHOICES: &'static str = "choose owner, member or auditor";

    /// Owners and auditors read the audit log, the Key Status page and alerts (they say who
    /// did what and from where); members do not.
    pub fn sees_audit(self) -> bool {
        matches!(self, Role::Owner | Role::Auditor)
    }

    pub fn title(self) -> &'static str {
        match self {
            Role::Owner => "Organization Owner",
            Role::Member => "Member",
            Role::Auditor => "Auditor",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    User {
        id: Uuid,
        name: String,
    },
    ApiKey {
        id: Uuid,
        name: String,
    },
    /// The console itself, or an operator at its command line.
    System,
}

impl Actor {
    /// How events and `created_by` fields name the actor.
    pub fn label(&self) -> String {
        match self {
            Actor::User { id, name } => format!("user:{id} ({name})"),
            Actor::ApiKey { id, name } => format!("api_key:{id} ({name})"),
            Actor::System => "system".into(),
        }
    }
}

/// An authenticated request: who, in which organization, with which role, from where.
#[derive(Clone, Debug)]
pub struct Caller {
    pub organization_id: Uuid,
    pub actor: Actor,
    pub role: Role,
    pub source_ip: Option<String>,
    /// The browser session behind the request, if it came from one.
    pub session_id: Option<Uuid>,
}

impl Caller {
    /// The console itself acting in an organization (the key monitor, the reconciliation,
    /// an operator's command), with `role`'s rights.
    pub fn system(organization_id: Uuid, role: Role) -> Self {
        Self {
            organization_id,
            actor: Actor::System,
            role,
            source_ip: None,
            session_id: None,
        }
    }

    /// R2: whether the caller is an Organization Owner (pages use it to offer what only
    /// owners may do; the domain checks it again when they do it).
    pub fn is_owner(&self) -> bool {
        self.role == Role::Owner
    }

    /// Whether the caller may read the audit log, the Key Status page and alerts (owners
    /// and auditors; they say who did what and from where).
    pub fn sees_audit(&self) -> bool {
        self.role.sees_audit()
    }

    /// Only owners and auditors may do `what`.
    pub fn require_auditor_view(&self, what: &str) -> Result<(), DomainError> {
        if self.sees_audit() {
            Ok(())
        } else {
            Err(DomainError::Forbidden {
                rule: Rule::OwnersAndAuditors,
                detail: format!(
                    "Only Organization Owners and Auditors can {what}; you are signed in as {}.",
                    self.role.title()
                ),
            })
        }
    }

    /// R2: only an Organization Owner may do `what`.
    pub fn require_owner(&self, what: &str) -> Result<(), DomainError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(DomainError::Forbidden {
                rule: Rule::OwnerOnly,
                detail: format!(
                    "Only an Organization Owner can {what}; you are signed in as {}.",
                    self.role.title()
                ),
            })
        }
    }
}

#[derive(Clone, Debug)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: Option<String>,
    pub display_name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// The OpenID Connect identity (issuer, subject) of a single sign-on member.
    pub identity: Option<(String, String)>,
}

impl User {
    pub fn actor(&self) -> Actor {
        Actor::User {
            id: self.id,
            name: self.display_name.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SignInLink {
    pub id: Uuid,
    pub user_id: Uuid,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct ApiKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The first characters of the key, shown so people can tell keys apart.
    pub prefix: String,
    pub key_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub max_age: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_stored_only_as_their_hash() {
        let a = NewSecret::generate("cmek_");
        let b = NewSecret::generate("cmek_");
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.starts_with("cmek_") && a.plaintext.len() >= 48);
        assert_eq!(a.hash, hash_secret(&a.plaintext));
        assert!(!a.hash.contains(&a.plaintext));
    }

    #[test]
    fn only_owners_pass_the_owner_check() {
        for role in Role::ALL {
            let caller = Caller {
                organization_id: Uuid::nil(),
                actor: Actor::System,
                role,
                source_ip: None,
                session_id: None,
            };
            assert_eq!(caller.require_owner("x").is_ok(), role == Role::Owner);
        }
    }
}

/// How long an invitation stays open.
pub const INVITATION_TTL: chrono::Duration = chrono::Duration::days(7);

#[derive(Clone, Debug)]
pub struct Invitation {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Invitation {
    pub fn is_pending(&self, now: DateTime<Utc>) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What a guarded membership change did.
#[derive(Debug, PartialEq, Eq)]
pub enum MembershipChange {
    Done,
    NotFound,
    /// Refused: the person acting is no longer an owner.
    ActorNotOwner,
    /// Refused: it would leave the organization without an owner.
    LastOwner,
}
