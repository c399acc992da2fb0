//! Members and invitations: owners invite an email with a role; the invitee joins on their
//! first single sign-on with that verified email. Owners change roles and remove members;
//! the last owner of an organization can be neither demoted nor removed. A person who
//! belongs to several organizations switches between them.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::error::Rule;
use crate::domain::identity::{Actor, Caller, Organization, Role, User, organization_created};
use crate::domain::ports::{Constraint, StoreError};
use crate::domain::sso::SsoIdentity;
use crate::domain::{Console, DomainError, FieldError};

pub const INVITATION_TTL: Duration = Duration::days(7);

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
    /// Refused: it would leave the organization without an owner.
    LastOwner,
}

/// Lower-cased and checked: one `@`, something on both sides, no spaces, at most 254 characters.
pub fn parse_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(FieldError::new("email", "is not an email address"))
    }
}

/// Why a single sign-on found no way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsoRefusal {
    /// No membership and no pending invitation for a verified email.
    NotInvited,
}

impl SsoRefusal {
    pub fn message(self) -> &'static str {
        match self {
            SsoRefusal::NotInvited => {
                "Your identity provider signed you in, but you are not a member of any organization here. Ask an Organization Owner to invite your email address."
            }
        }
    }
}

fn last_owner() -> DomainError {
    DomainError::Conflict {
        rule: Rule::LastOwner,
        field: Some("role"),
        detail:
            "An organization needs at least one Organization Owner: make someone else owner first."
                .into(),
    }
}

impl Console {
    fn identity_provider(&self) -> Result<&dyn crate::domain::sso::IdentityProvider, DomainError> {
        self.sso
            .as_deref()
            .ok_or(DomainError::NotFound("single sign-on"))
    }

    /// The first leg of single sign-on: where to send the browser, and what to remember.
    pub async fn sso_start(
        &self,
        redirect_uri: &str,
    ) -> Result<Result<crate::domain::sso::SsoStart, crate::domain::sso::SsoError>, DomainError>
    {
        Ok(self.identity_provider()?.start(redirect_uri).await)
    }

    /// Records a single sign-on refused before the provider was asked (a forged state).
    pub async fn sso_refused(
        &self,
        reason: &str,
        source_ip: Option<String>,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let target = "identity/unverified".to_owned();
        self.record(
            AuditDraft::new("sso:unknown".into(), None, now, "session.sign_in", target)
                .from_address(source_ip)
                .outcome(Outcome::Denied)
                .detail(serde_json::json!({ "method": "sso", "reason": reason })),
        )
        .await
    }

    /// The callback: exchanges the code, verifies the ID token, and signs the person in.
    pub async fn sso_finish(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        source_ip: Option<String>,
    ) -> Result<Result<String, String>, DomainError> {
        let identity = match self
            .identity_provider()?
            .finish(redirect_uri, code, pkce_verifier, nonce)
            .await
        {
            Ok(identity) => identity,
            Err(err) => {
                self.sso_refused(&err.to_string(), source_ip).await?;
                return Ok(Err(match err {
                    crate::domain::sso::SsoError::Unavailable(_) => "The identity provider could not be reached. Try again in a moment.".into(),
                    crate::domain::sso::SsoError::Rejected(_) => "The identity provider's answer could not be verified, so you were not signed in.".into(),
                }));
            }
        };
        Ok(self
            .sign_in_with_sso(&identity, source_ip)
            .await?
            .map_err(|r| r.message().to_owned()))
    }

    /// Signs in a verified identity and returns the session token: pending invitations for its verified email are accepted
    /// first, then the session opens in the organization used most recently.
    pub async fn sign_in_with_sso(
        &self,
        identity: &SsoIdentity,
        source_ip: Option<String>,
    ) -> Result<Result<String, SsoRefusal>, DomainError> {
        let now = self.clock.now();
        let mut memberships = self
            .store
            .users_by_identity(&identity.issuer, &identity.subject)
            .await?;
        let member_of: Vec<Uuid> = memberships.iter().map(|u| u.organization_id).collect();
        let joined = self
            .join_by_invitation(identity, &member_of, now, source_ip.clone())
            .await?;
        memberships.extend(joined);
        memberships.sort_by_key(|u| std::cmp::Reverse(u.last_sign_in_at));
        let Some(user) = memberships.into_iter().next() else {
            let email = identity
                .verified_email
                .as_deref()
                .unwrap_or("no verified email");
            let actor = format!("sso:{} ({email})", identity.subject);
            let target = format!("identity/{}", identity.issuer);
            self.record(
                AuditDraft::new(actor, None, now, "session.sign_in", target)
                    .from_address(source_ip)
                    .outcome(Outcome::Denied)
                    .detail(serde_json::json!({ "method": "sso", "reason": "not_invited" })),
            )
            .await?;
            return Ok(Err(SsoRefusal::NotInvited));
        };
        let (session, token) = self.new_session(user.id, now);
        let audit = user.signed_in(now, source_ip).detail(
            serde_json::json!({ "method": "sso", "issuer": identity.issuer, "session": session.id }),
        );
        self.store.open_session(&session, audit).await?;
        Ok(Ok(token))
    }

    /// Accepts every pending invitation for the verified email, except to organizations the
    /// person already belongs to.
    async fn join_by_invitation(
        &self,
        identity: &SsoIdentity,
        member_of: &[Uuid],
        now: DateTime<Utc>,
        source_ip: Option<String>,
    ) -> Result<Vec<User>, DomainError> {
        let Some(email) = &identity.verified_email else {
            return Ok(Vec::new());
        };
        let invitations: Vec<Invitation> = self
            .store
            .invitations_for_email(email)
            .await?
            .into_iter()
            .filter(|i| i.is_pending(now) && !member_of.contains(&i.organization_id))
            .collect();
        let mut joined = Vec::new();
        for invitation in invitations {
            let user = User {
                id: Uuid::now_v7(),
                organization_id: invitation.organization_id,
                email: Some(email.clone()),
                display_name: identity.name.clone().unwrap_or_else(|| email.clone()),
                role: invitation.role,
                created_at: now,
                last_sign_in_at: None,
                identity: Some((identity.issuer.clone(), identity.subject.clone())),
            };
            let target = format!("invitation/{}", invitation.id);
            let org = Some(invitation.organization_id);
            let audit = AuditDraft::new(user.actor().label(), org, now, "invitation.accepted", target)
                .from_address(source_ip.clone())
                .detail(serde_json::json!({ "email": email, "role": invitation.role.as_str(), "user": user.id }));
            if self
                .store
                .accept_invitation(invitation.id, &user, now, audit)
                .await?
            {
                joined.push(user);
            }
        }
        Ok(joined)
    }

    /// The operator's way to add an organization: it starts with an owner invitation, which
    /// the named person accepts at their first single sign-on.
    pub async fn create_organization(
        &self,
        name: &str,
        owner_email: &str,
    ) -> Result<(Organization, Invitation), DomainError> {
        let name = crate::domain::parse_display_name("name", name, 100)?;
        let email = parse_email(owner_email).map_err(|e| DomainError::Invalid(vec![e]))?;
        let now = self.clock.now();
        let organization = Organization {
            id: Uuid::now_v7(),
            name,
            created_at: now,
        };
        let invitation = Invitation {
            id: Uuid::now_v7(),
            organization_id: organization.id,
            email,
            role: Role::Owner,
            created_by: Actor::System.label(),
            created_at: now,
            expires_at: now + INVITATION_TTL,
            accepted_at: None,
            revoked_at: None,
        };
        let audit = organization_created(&organization, now).detail(
            serde_json::json!({ "name": organization.name, "owner_invitation": invitation.email }),
        );
        self.store
            .insert_organization_with_invitation(&organization, &invitation, audit)
            .await?;
        Ok((organization, invitation))
    }

    pub async fn invite(
        &self,
        caller: &Caller,
        email: &str,
        role: Role,
    ) -> Result<Invitation, DomainError> {
        caller.require_owner("invite members")?;
        let email = parse_email(email).map_err(|e| DomainError::Invalid(vec![e]))?;
        let now = self.clock.now();
        let pending = self
            .store
            .invitations(caller.organization_id)
            .await?
            .into_iter()
            .any(|i| i.email == email && i.is_pending(now));
        if pending {
            return Err(invitation_pending(&email));
        }
        let invitation = Invitation {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            email,
            role,
            created_by: caller.actor.label(),
            created_at: now,
            expires_at: now + INVITATION_TTL,
            accepted_at: None,
            revoked_at: None,
        };
        let audit = AuditDraft::by(caller, now, "invitation.created", format!("invitation/{}", invitation.id))
            .detail(serde_json::json!({ "email": invitation.email, "role": role.as_str(), "expires_at": invitation.expires_at }));
        match self.store.insert_invitation(&invitation, audit).await {
            Ok(()) => Ok(invitation),
            // Another console process invited the same person a moment ago.
            Err(StoreError::Conflict(Constraint::PendingInvitation)) => {
                Err(invitation_pending(&invitation.email))
            }
            Err(other) => Err(other.into()),
        }
    }

    pub async fn invitations(&self, caller: &Caller) -> Result<Vec<Invitation>, DomainError> {
        caller.require_owner("manage invitations")?;
        Ok(self.store.invitations(caller.organization_id).await?)
    }

    pub async fn revoke_invitation(&self, caller: &Caller, id: Uuid) -> Result<(), DomainError> {
        caller.require_owner("manage invitations")?;
        let now = self.clock.now();
        let audit = AuditDraft::by(
            caller,
            now,
            "invitation.revoked",
            format!("invitation/{id}"),
        );
        if self
            .store
            .revoke_invitation(caller.organization_id, id, now, audit)
            .await?
        {
            Ok(())
        } else {
            Err(DomainError::NotFound("invitation"))
        }
    }

    pub async fn members(&self, caller: &Caller) -> Result<Vec<User>, DomainError> {
        Ok(self.store.users(caller.organization_id).await?)
    }

    pub async fn change_role(
        &self,
        caller: &Caller,
        user_id: Uuid,
        role: Role,
    ) -> Result<(), DomainError> {
        caller.require_owner("change roles")?;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "member.role_changed",
            format!("user/{user_id}"),
        )
        .detail(serde_json::json!({ "role": role.as_str() }));
        match self
            .store
            .change_role(caller.organization_id, user_id, role, audit)
            .await?
        {
            MembershipChange::Done => Ok(()),
            MembershipChange::NotFound => Err(DomainError::NotFound("member")),
            MembershipChange::LastOwner => Err(last_owner()),
        }
    }

    pub async fn remove_member(&self, caller: &Caller, user_id: Uuid) -> Result<(), DomainError> {
        caller.require_owner("remove members")?;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "member.removed",
            format!("user/{user_id}"),
        );
        match self
            .store
            .remove_user(caller.organization_id, user_id, audit)
            .await?
        {
            MembershipChange::Done => Ok(()),
            MembershipChange::NotFound => Err(DomainError::NotFound("member")),
            MembershipChange::LastOwner => Err(last_owner()),
        }
    }

    /// The organizations the caller's person belongs to (one for link and API key callers).
    pub async fn organizations_of(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(Organization, Uuid)>, DomainError> {
        let Actor::User { id, .. } = &caller.actor else {
            return Ok(Vec::new());
        };
        Ok(self.store.memberships(*id).await?)
    }

    /// Moves the caller's session to another organization the same person belongs to.
    pub async fn switch_organization(
        &self,
        caller: &Caller,
        organization_id: Uuid,
    ) -> Result<(), DomainError> {
        let session_id = caller
            .session_id
            .ok_or(DomainError::NotFound("organization"))?;
        let target = self
            .organizations_of(caller)
            .await?
            .into_iter()
            .find(|(org, _)| org.id == organization_id)
            .ok_or(DomainError::NotFound("organization"))?;
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "session.switched_organization",
            format!("organization/{organization_id}"),
        )
        .detail(serde_json::json!({ "membership": target.1 }));
        Ok(self
            .store
            .switch_session_user(session_id, target.1, audit)
            .await?)
    }
}

fn invitation_pending(email: &str) -> DomainError {
    DomainError::Conflict {
        rule: Rule::InvitationPending,
        field: Some("email"),
        detail: format!("{email} already has a pending invitation; revoke it to invite again."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            parse_email(" Ada@Example.COM "),
            Ok("ada@example.com".into())
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_invitation_is_pending_until_accepted_revoked_or_expired() {
        let now = Utc::now();
        let invitation = Invitation {
            id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            email: "a@b.co".into(),
            role: Role::Member,
            created_by: "x".into(),
            created_at: now,
            expires_at: now + INVITATION_TTL,
            accepted_at: None,
            revoked_at: None,
        };
        assert!(invitation.is_pending(now));
        assert!(!invitation.is_pending(now + Duration::days(8)));
        assert!(
            !Invitation {
                revoked_at: Some(now),
                ..invitation.clone()
            }
            .is_pending(now)
        );
        assert!(
            !Invitation {
                accepted_at: Some(now),
                ..invitation
            }
            .is_pending(now)
        );
    }
}
