//! Members and invitations: owners invite an email with a role (one pending invitation per
//! email); the invitee joins on their first single sign-on with that verified email. Owners
//! change roles and remove members; the last owner of an organization can be neither
//! demoted nor removed, across every console process (the guard runs inside the write).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::audit::AuditDraft;
use crate::domain::error::Rule;
use crate::domain::error::{Constraint, StoreError};
use crate::domain::identity::{Actor, Caller, Role, User};
use crate::domain::identity_service::Identity;
use crate::domain::sso::SsoIdentity;
use crate::domain::{DomainError, FieldError};

pub use crate::domain::identity::{INVITATION_TTL, Invitation, MembershipChange};

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

fn last_owner() -> DomainError {
    DomainError::Conflict {
        rule: Rule::LastOwner,
        field: Some("role"),
        detail:
            "An organization needs at least one Organization Owner: make someone else owner first."
                .into(),
    }
}

impl Identity {
    /// Accepts every pending invitation for the verified email, except to organizations the
    /// person already belongs to.
    pub(crate) async fn join_by_invitation(
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
            .members
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
                .members
                .accept_invitation(invitation.id, &user, now, audit)
                .await?
            {
                joined.push(user);
            }
        }
        Ok(joined)
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
            .members
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
        match self.members.insert_invitation(&invitation, audit).await {
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
        Ok(self.members.invitations(caller.organization_id).await?)
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
            .members
            .revoke_invitation(caller.organization_id, id, now, audit)
            .await?
        {
            Ok(())
        } else {
            Err(DomainError::NotFound("invitation"))
        }
    }

    pub async fn members(&self, caller: &Caller) -> Result<Vec<User>, DomainError> {
        Ok(self.members.users(caller.organization_id).await?)
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
            .members
            .change_role(caller.organization_id, user_id, role, acting(caller), audit)
            .await?
        {
            MembershipChange::Done => Ok(()),
            MembershipChange::NotFound => Err(DomainError::NotFound("member")),
            MembershipChange::LastOwner => Err(last_owner()),
            MembershipChange::ActorNotOwner => Err(no_longer_owner()),
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
            .members
            .remove_user(caller.organization_id, user_id, acting(caller), audit)
            .await?
        {
            MembershipChange::Done => Ok(()),
            MembershipChange::NotFound => Err(DomainError::NotFound("member")),
            MembershipChange::LastOwner => Err(last_owner()),
            MembershipChange::ActorNotOwner => Err(no_longer_owner()),
        }
    }
}

/// The member a person acts as; API keys and the operator act for the organization itself.
fn acting(caller: &Caller) -> Option<Uuid> {
    match &caller.actor {
        Actor::User { id, .. } => Some(*id),
        Actor::ApiKey { .. } | Actor::System => None,
    }
}

fn no_longer_owner() -> DomainError {
    DomainError::Forbidden {
        rule: Rule::OwnerOnly,
        detail: "You are no longer an Organization Owner here; nothing was changed.".into(),
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
        assert!(!invitation.is_pending(now + chrono::Duration::days(8)));
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
