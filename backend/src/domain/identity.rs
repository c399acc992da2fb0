//! Who is calling: organizations, users, roles, and the credentials that prove identity
//! (one-time sign-in links, browser sessions, API keys). Every credential is random, handed
//! out once, and stored only as its SHA-256, so a database dump signs nobody in.
//! Single sign-on will add another way to reach `open_session`; the rest stays as it is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::error::Rule;
pub use crate::domain::secrets::{NewSecret, hash_secret};
use crate::domain::{Console, DomainError};

/// A sign-in link works once, for this long.
pub const SIGN_IN_LINK_TTL: chrono::Duration = chrono::Duration::minutes(15);
/// Sign-in attempts (links, SSO callbacks) allowed per source address in one window, counted
/// in the database so the limit holds however many console processes serve.
pub const SIGN_IN_ATTEMPTS: u32 = 20;
pub const SIGN_IN_WINDOW: chrono::Duration = chrono::Duration::minutes(5);

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
    /// R2: only an Organization Owner may do `what`.
    pub fn require_owner(&self, what: &str) -> Result<(), DomainError> {
        if self.role == Role::Owner {
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

    /// The event of this member's successful sign-in.
    pub(crate) fn signed_in(&self, now: DateTime<Utc>, source_ip: Option<String>) -> AuditDraft {
        AuditDraft::new(
            self.actor().label(),
            Some(self.organization_id),
            now,
            "session.sign_in",
            format!("user/{}", self.id),
        )
        .from_address(source_ip)
    }
}

/// The event of an organization's creation, by the system.
pub(crate) fn organization_created(organization: &Organization, now: DateTime<Utc>) -> AuditDraft {
    AuditDraft::new(
        Actor::System.label(),
        Some(organization.id),
        now,
        "organization.created",
        format!("organization/{}", organization.id),
    )
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

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkRefusal {
    Unknown,
    Used,
    Expired,
}

impl LinkRefusal {
    pub fn message(self) -> &'static str {
        match self {
            LinkRefusal::Unknown => "This sign-in link is not valid.",
            LinkRefusal::Used => "This sign-in link has already been used.",
            LinkRefusal::Expired => "This sign-in link has expired.",
        }
    }
}

pub enum SignIn {
    /// The session token for the cookie.
    Opened {
        token: String,
    },
    Refused(LinkRefusal),
}

impl Console {
    /// First start of any command: creates the first organization and its owner, once, even
    /// when several console processes start together. Returns that owner.
    pub async fn ensure_organization(&self) -> Result<User, DomainError> {
        if let Some(owner) = self.store.first_owner().await? {
            return Ok(owner);
        }
        let now = self.clock.now();
        let organization = Organization {
            id: Uuid::now_v7(),
            name: self.policy.organization_name.clone(),
            created_at: now,
        };
        let owner = User {
            id: Uuid::now_v7(),
            organization_id: organization.id,
            email: None,
            display_name: Role::Owner.title().into(),
            role: Role::Owner,
            created_at: now,
            last_sign_in_at: None,
            identity: None,
        };
        let audit = organization_created(&organization, now)
            .detail(serde_json::json!({ "name": organization.name, "owner": owner.id }));
        Ok(self
            .store
            .create_first_organization(&organization, &owner, audit)
            .await?)
    }

    /// What `serve` does at start: the first organization, and a sign-in link for its owner
    /// until that owner has signed in once. Links issued earlier keep working until they are
    /// used or expire. Returns the link's token when one was issued.
    pub async fn bootstrap(&self) -> Result<Option<String>, DomainError> {
        let owner = self.ensure_organization().await?;
        if owner.last_sign_in_at.is_some() {
            return Ok(None);
        }
        Ok(Some(self.issue_sign_in_link(&owner).await?))
    }

    /// Counts a sign-in attempt from `address`; when it is over the limit, how long until the
    /// window ends.
    pub async fn count_sign_in_attempt(
        &self,
        address: &str,
    ) -> Result<Option<std::time::Duration>, DomainError> {
        let now = self.clock.now();
        let window = SIGN_IN_WINDOW.num_seconds();
        let start_secs = now.timestamp() - now.timestamp().rem_euclid(window);
        let start = DateTime::<Utc>::from_timestamp(start_secs, 0).unwrap_or(now);
        let hits = self
            .store
            .count_attempt(&format!("sign-in:{address}"), start)
            .await?;
        if hits <= SIGN_IN_ATTEMPTS {
            return Ok(None);
        }
        Ok(Some(
            (start + SIGN_IN_WINDOW - now)
                .to_std()
                .unwrap_or_default()
                .max(std::time::Duration::from_secs(1)),
        ))
    }

    /// A fresh single-use link for a user (the operator's `sign-in-link` command uses it too).
    pub async fn issue_sign_in_link(&self, user: &User) -> Result<String, DomainError> {
        let now = self.clock.now();
        let secret = NewSecret::generate("");
        let link = SignInLink {
            id: Uuid::now_v7(),
            user_id: user.id,
            token_hash: secret.hash,
            created_at: now,
            expires_at: now + SIGN_IN_LINK_TTL,
            used_at: None,
        };
        let audit = AuditDraft::new(
            Actor::System.label(),
            Some(user.organization_id),
            now,
            "sign_in_link.issued",
            format!("user/{}", user.id),
        )
        .detail(serde_json::json!({ "expires_at": link.expires_at }));
        self.store.insert_sign_in_link(&link, audit).await?;
        Ok(secret.plaintext)
    }

    pub async fn first_owner(&self) -> Result<Option<User>, DomainError> {
        Ok(self.store.first_owner().await?)
    }

    /// Redeems a sign-in link: valid, unused and unexpired opens a session, once.
    pub async fn sign_in_with_link(
        &self,
        token: &str,
        source_ip: Option<String>,
    ) -> Result<SignIn, DomainError> {
        let now = self.clock.now();
        let link = self.store.sign_in_link(&hash_secret(token)).await?;
        let refusal = match &link {
            None => Some(LinkRefusal::Unknown),
            Some(l) if l.used_at.is_some() => Some(LinkRefusal::Used),
            Some(l) if l.expires_at <= now => Some(LinkRefusal::Expired),
            Some(_) => None,
        };
        let user = match &link {
            Some(l) => self.store.user(l.user_id).await?,
            None => None,
        };
        let (link, user) = match (link, user, refusal) {
            (Some(link), Some(user), None) => (link, user),
            (link, user, refusal) => {
                let refusal = refusal.unwrap_or(LinkRefusal::Unknown);
                let actor = user.as_ref().map(User::actor).unwrap_or(Actor::System);
                let target = link
                    .map(|l| format!("sign_in_link/{}", l.id))
                    .unwrap_or_else(|| "sign_in_link/unknown".into());
                let organization_id = user.as_ref().map(|u| u.organization_id);
                let reason = format!("{refusal:?}").to_lowercase();
                self.record(
                    AuditDraft::new(
                        actor.label(),
                        organization_id,
                        now,
                        "session.sign_in",
                        target,
                    )
                    .from_address(source_ip)
                    .outcome(Outcome::Denied)
                    .detail(serde_json::json!({ "method": "link", "reason": reason })),
                )
                .await?;
                return Ok(SignIn::Refused(refusal));
            }
        };
        let (session, token) = self.new_session(user.id, now);
        let audit = user
            .signed_in(now, source_ip)
            .detail(serde_json::json!({ "method": "link", "session": session.id }));
        if self
            .store
            .redeem_sign_in_link(link.id, now, &session, audit)
            .await?
        {
            Ok(SignIn::Opened { token })
        } else {
            Ok(SignIn::Refused(LinkRefusal::Used))
        }
    }

    pub(crate) fn new_session(&self, user_id: Uuid, now: DateTime<Utc>) -> (Session, String) {
        let secret = NewSecret::generate("");
        let session = Session {
            id: Uuid::now_v7(),
            user_id,
            token_hash: secret.hash,
            created_at: now,
            last_seen_at: now,
            expires_at: now + to_chrono(self.policy.sessions.max_age),
        };
        (session, secret.plaintext)
    }

    /// The caller behind a session cookie, if the session is live; refreshes its idle timer.
    pub async fn authenticate_session(
        &self,
        token: &str,
        source_ip: Option<String>,
    ) -> Result<Option<Caller>, DomainError> {
        let now = self.clock.now();
        let Some(session) = self.store.session(&hash_secret(token)).await? else {
            return Ok(None);
        };
        let idle_deadline = session.last_seen_at + to_chrono(self.policy.sessions.idle);
        if session.expires_at <= now || idle_deadline <= now {
            return Ok(None);
        }
        let Some(user) = self.store.user(session.user_id).await? else {
            return Ok(None);
        };
        // Writing on every request would make reads write, so the idle timer moves in steps:
        // a minute, or a quarter of the idle time-out when that is shorter, so an active
        // session never runs out however short the time-out is.
        let step = chrono::Duration::minutes(1).min(to_chrono(self.policy.sessions.idle) / 4);
        if now - session.last_seen_at >= step {
            self.store.touch_session(session.id, now).await?;
        }
        Ok(Some(Caller {
            organization_id: user.organization_id,
            actor: Actor::User {
                id: user.id,
                name: user.display_name,
            },
            role: user.role,
            source_ip,
            session_id: Some(session.id),
        }))
    }

    /// Ends the browser session; for a single sign-on member, also returns where to end the
    /// session at the identity provider (when it supports that), coming back to `return_to`.
    pub async fn sign_out(
        &self,
        caller: &Caller,
        return_to: &str,
    ) -> Result<Option<String>, DomainError> {
        let Some(session_id) = caller.session_id else {
            return Ok(None);
        };
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "session.sign_out",
            format!("session/{session_id}"),
        );
        self.store.delete_session(session_id, audit).await?;
        let Actor::User { id, .. } = &caller.actor else {
            return Ok(None);
        };
        let sso_member = self
            .store
            .user(*id)
            .await?
            .is_some_and(|u| u.identity.is_some());
        match (&self.sso, sso_member) {
            (Some(provider), true) => Ok(provider.end_session_url(return_to).await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "could not end the session at the identity provider");
                None
            })),
            _ => Ok(None),
        }
    }

    pub async fn organization_of(&self, caller: &Caller) -> Result<Organization, DomainError> {
        self.store
            .organization(caller.organization_id)
            .await?
            .ok_or(DomainError::NotFound("organization"))
    }

    /// The operator's command line acts as the system, as owner of the only organization
    /// (or of the one named when there are several).
    pub async fn operator(&self, organization: Option<Uuid>) -> Result<Caller, DomainError> {
        let organizations = self.store.organizations().await?;
        let chosen = match organization {
            Some(id) => organizations.into_iter().find(|o| o.id == id),
            None if organizations.len() == 1 => organizations.into_iter().next(),
            None => {
                let names = organizations
                    .iter()
                    .map(|o| format!("{} ({})", o.name, o.id))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(DomainError::invalid(
                    "organization",
                    format!(
                        "there are several organizations, name one with --organization <id>: {names}"
                    ),
                ));
            }
        };
        let organization = chosen.ok_or(DomainError::NotFound("organization"))?;
        Ok(Caller {
            organization_id: organization.id,
            actor: Actor::System,
            role: Role::Owner,
            source_ip: None,
            session_id: None,
        })
    }
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
