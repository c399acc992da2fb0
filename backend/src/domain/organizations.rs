//! Organizations: the first one, created once however many console processes start
//! together; more of them added by the operator with an owner invitation; the ones a person
//! belongs to and switching between them; and the operator acting as an organization's
//! owner from the command line.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::audit::AuditDraft;
use crate::domain::identity::{Actor, Caller, Organization, Role, User};
use crate::domain::identity_service::Identity;
use crate::domain::members::{INVITATION_TTL, Invitation, parse_email};

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

impl Identity {
    /// First start of any command: creates the first organization and its owner, once, even
    /// when several console processes start together. Returns that owner.
    pub async fn ensure_organization(&self) -> Result<User, DomainError> {
        if let Some(owner) = self.members.first_owner().await? {
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
            .members
            .create_first_organization(&organization, &owner, audit)
            .await?)
    }

    pub async fn first_owner(&self) -> Result<Option<User>, DomainError> {
        Ok(self.members.first_owner().await?)
    }

    pub async fn organization_of(&self, caller: &Caller) -> Result<Organization, DomainError> {
        self.members
            .organization(caller.organization_id)
            .await?
            .ok_or(DomainError::NotFound("organization"))
    }

    /// The operator's command line acts as the system, as owner of the only organization
    /// (or of the one named when there are several).
    pub async fn operator(&self, organization: Option<Uuid>) -> Result<Caller, DomainError> {
        let organizations = self.members.organizations().await?;
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
        Ok(Caller::system(organization.id, Role::Owner))
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
        self.members
            .insert_organization_with_invitation(&organization, &invitation, audit)
            .await?;
        Ok((organization, invitation))
    }

    /// The organizations the caller's person belongs to (one for link and API key callers).
    pub async fn organizations_of(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(Organization, Uuid)>, DomainError> {
        let Actor::User { id, .. } = &caller.actor else {
            return Ok(Vec::new());
        };
        Ok(self.members.memberships(*id).await?)
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
            .credentials
            .switch_session_user(session_id, target.1, audit)
            .await?)
    }
}
