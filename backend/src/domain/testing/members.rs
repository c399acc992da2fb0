//! The in-memory MemberStore: organizations, users, invitations and the last-owner guard.

use super::*;

#[async_trait]
impl MemberStore for MemoryStore {
    async fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        Ok(self.state().organizations.clone())
    }

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        Ok(self
            .state()
            .organizations
            .iter()
            .find(|o| o.id == id)
            .cloned())
    }

    async fn create_first_organization(
        &self,
        organization: &Organization,
        owner: &User,
        audit: AuditDraft,
    ) -> Result<User, StoreError> {
        self.write(audit, |s| {
            if let Some(first) = s.users.iter().find(|u| u.role == Role::Owner) {
                return Ok((first.clone(), false));
            }
            s.organizations.push(organization.clone());
            s.users.push(owner.clone());
            Ok((owner.clone(), true))
        })
    }

    async fn first_owner(&self) -> Result<Option<User>, StoreError> {
        Ok(self
            .state()
            .users
            .iter()
            .filter(|u| u.role == Role::Owner)
            .min_by_key(|u| u.id)
            .cloned())
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.iter().find(|u| u.id == id).cloned())
    }

    async fn users_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Vec<User>, StoreError> {
        Ok(self
            .state()
            .users
            .iter()
            .filter(|u| {
                u.identity
                    .as_ref()
                    .is_some_and(|(i, s)| i == issuer && s == subject)
            })
            .cloned()
            .collect())
    }

    async fn users(&self, organization_id: Uuid) -> Result<Vec<User>, StoreError> {
        Ok(self
            .state()
            .users
            .iter()
            .filter(|u| u.organization_id == organization_id)
            .cloned()
            .collect())
    }

    async fn memberships(&self, user_id: Uuid) -> Result<Vec<(Organization, Uuid)>, StoreError> {
        let state = self.state();
        let Some(me) = state.users.iter().find(|u| u.id == user_id) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(Organization, Uuid)> = state
            .users
            .iter()
            .filter(|u| u.id == me.id || (me.identity.is_some() && u.identity == me.identity))
            .filter_map(|u| {
                state
                    .organizations
                    .iter()
                    .find(|o| o.id == u.organization_id)
                    .map(|o| (o.clone(), u.id))
            })
            .collect();
        found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(found)
    }

    async fn change_role(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        role: Role,
        acting: Option<Uuid>,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        self.write(audit, |s| {
            if !s.still_owner(organization_id, acting) {
                return Ok((MembershipChange::ActorNotOwner, false));
            }
            let owners = s.owners(organization_id);
            let Some(user) = s
                .users
                .iter_mut()
                .find(|u| u.id == user_id && u.organization_id == organization_id)
            else {
                return Ok((MembershipChange::NotFound, false));
            };
            if user.role == Role::Owner && role != Role::Owner && owners <= 1 {
                return Ok((MembershipChange::LastOwner, false));
            }
            user.role = role;
            Ok((MembershipChange::Done, true))
        })
    }

    async fn remove_user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        acting: Option<Uuid>,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError> {
        self.write(audit, |s| {
            if !s.still_owner(organization_id, acting) {
                return Ok((MembershipChange::ActorNotOwner, false));
            }
            let owners = s.owners(organization_id);
            let Some(user) = s
                .users
                .iter()
                .find(|u| u.id == user_id && u.organization_id == organization_id)
            else {
                return Ok((MembershipChange::NotFound, false));
            };
            if user.role == Role::Owner && owners <= 1 {
                return Ok((MembershipChange::LastOwner, false));
            }
            s.users.retain(|u| u.id != user_id);
            s.sessions.retain(|x| x.user_id != user_id);
            Ok((MembershipChange::Done, true))
        })
    }

    async fn insert_organization_with_invitation(
        &self,
        organization: &Organization,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.organizations.push(organization.clone());
            s.invitations.push(invitation.clone());
            Ok(((), true))
        })
    }

    async fn insert_invitation(
        &self,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let open = s.invitations.iter().any(|i| {
                i.organization_id == invitation.organization_id
                    && i.email == invitation.email
                    && i.accepted_at.is_none()
                    && i.revoked_at.is_none()
                    && i.expires_at > invitation.created_at
            });
            if open {
                return Err(StoreError::Conflict(Constraint::PendingInvitation));
            }
            s.invitations.push(invitation.clone());
            Ok(((), true))
        })
    }

    async fn invitations(&self, organization_id: Uuid) -> Result<Vec<Invitation>, StoreError> {
        Ok(self
            .state()
            .invitations
            .iter()
            .filter(|i| i.organization_id == organization_id)
            .cloned()
            .collect())
    }

    async fn invitations_for_email(&self, email: &str) -> Result<Vec<Invitation>, StoreError> {
        Ok(self
            .state()
            .invitations
            .iter()
            .filter(|i| i.email == email)
            .cloned()
            .collect())
    }

    async fn accept_invitation(
        &self,
        id: Uuid,
        user: &User,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            let Some(invitation) = s
                .invitations
                .iter_mut()
                .find(|i| i.id == id && i.accepted_at.is_none() && i.revoked_at.is_none())
            else {
                return Ok((false, false));
            };
            invitation.accepted_at = Some(now);
            s.users.push(user.clone());
            Ok((true, true))
        })
    }

    async fn revoke_invitation(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            let found = s.invitations.iter_mut().find(|i| {
                i.id == id
                    && i.organization_id == organization_id
                    && i.accepted_at.is_none()
                    && i.revoked_at.is_none()
            });
            match found {
                Some(invitation) => {
                    invitation.revoked_at = Some(now);
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }
}
