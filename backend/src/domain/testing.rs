//! An in-memory `Store` and a KMS that passes every check, so the domain's rules are tested
//! in milliseconds without HTTP or a database. The sea-orm adapter stays the one real
//! implementation; the integration tests run it against SQLite and PostgreSQL.
//!
//! The fake keeps the same promises the adapter does where rules depend on them: unique
//! project names and one key per (project, provider, region) refused as the right
//! `Constraint`, the last owner guarded inside the write, one pending invitation per email,
//! and every change stored with its audit event (sealed into a chain).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::audit::{
    AuditDraft, AuditEvent, AuditFilter, ChainKey, ChainKeys, ChainRow, GENESIS,
};
use crate::domain::clock::ManualClock;
use crate::domain::identity::{
    ApiKey, Organization, Role, Session, SessionPolicy, SignInLink, User,
};
use crate::domain::keys::status_report::KeyStatusFilter;
use crate::domain::keys::{EncryptionKey, KeyRef, KeyStatus, KmsProviders, Provider, StatusChange};
use crate::domain::kms::{
    DataKey, EncryptionContext, KeyDescription, KeyProvider, KeyState, KmsError, PlaintextKey,
};
use crate::domain::local_kms::LocalKey;
use crate::domain::members::{Invitation, MembershipChange};
use crate::domain::page::PageRequest;
use crate::domain::ports::{
    AuditStore, Constraint, CredentialStore, Job, JobKind, JobStore, KeyStore, KeyVersionStatus,
    MemberStore, ProjectStore, Store, StoreError,
};
use crate::domain::projects::Project;
use crate::domain::{Console, Environment, Policy};

#[derive(Default)]
struct State {
    organizations: Vec<Organization>,
    users: Vec<User>,
    invitations: Vec<Invitation>,
    links: Vec<SignInLink>,
    sessions: Vec<Session>,
    api_keys: Vec<ApiKey>,
    projects: Vec<Project>,
    keys: Vec<EncryptionKey>,
    /// (organization, key, change)
    history: Vec<(Uuid, Uuid, StatusChange)>,
    local_keys: Vec<LocalKey>,
    audit: Vec<AuditEvent>,
    hits: HashMap<(String, DateTime<Utc>), u32>,
    /// Queued jobs: the job and when it is due.
    jobs: Vec<(Job, DateTime<Utc>)>,
    versions: Vec<KeyVersionStatus>,
}

impl State {
    fn enqueue(&mut self, kind: JobKind, organization_id: Uuid, subject: Uuid, due: DateTime<Utc>) {
        match self
            .jobs
            .iter_mut()
            .find(|(j, _)| j.kind == kind && j.subject == subject)
        {
            Some((job, at)) => {
                job.generation += 1;
                *at = (*at).min(due);
            }
            None => self.jobs.push((
                Job {
                    id: Uuid::now_v7(),
                    kind,
                    organization_id,
                    subject,
                    generation: 0,
                    attempts: 0,
                },
                due,
            )),
        }
    }
}

impl State {
    fn append(&mut self, key: &ChainKey, draft: AuditDraft) {
        let (seq, prev) = self
            .audit
            .last()
            .map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash.clone()));
        self.audit.push(draft.seal(seq + 1, &prev, key));
    }

    fn still_owner(&self, organization_id: Uuid, acting: Option<Uuid>) -> bool {
        acting.is_none_or(|id| {
            self.users.iter().any(|u| {
                u.id == id && u.organization_id == organization_id && u.role == Role::Owner
            })
        })
    }

    fn owners(&self, organization_id: Uuid) -> usize {
        self.users
            .iter()
            .filter(|u| u.organization_id == organization_id && u.role == Role::Owner)
            .count()
    }
}

pub struct MemoryStore {
    state: Mutex<State>,
    key: ChainKey,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            key: ChainKey::new([42; 32]),
        }
    }
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds another owner to `beside`'s organization, as an accepted invitation would.
    pub fn add_owner(&self, beside: &User) -> Uuid {
        let id = Uuid::now_v7();
        self.state().users.push(User {
            id,
            role: Role::Owner,
            display_name: "another owner".into(),
            ..beside.clone()
        });
        id
    }

    /// The audit events stored so far, oldest first.
    pub fn audit_log(&self) -> Vec<AuditEvent> {
        self.state().audit.clone()
    }

    /// Does `change` and records `audit` with it, or neither.
    fn write<T>(
        &self,
        audit: AuditDraft,
        change: impl FnOnce(&mut State) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.state();
        let (value, happened) = change(&mut state)?;
        if happened {
            state.append(&self.key, audit);
        }
        Ok(value)
    }
}

/// A console on a fresh in-memory store, with a manual clock and a KMS that passes.
pub fn console(environment: Environment) -> (Console, Arc<MemoryStore>, Arc<ManualClock>) {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::starting_now());
    let console = Console::new(
        store.clone(),
        clock.clone(),
        Policy {
            environment,
            sessions: SessionPolicy {
                idle: std::time::Duration::from_secs(8 * 3600),
                max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            },
            organization_name: "Test Organization".into(),
        },
        KmsProviders {
            aws: None,
            local: Some(Arc::new(FakeKms::passing())),
            aws_account_id: None,
            ..KmsProviders::default()
        },
        None,
        ChainKeys::new(vec![ChainKey::new([42; 32])]).unwrap_or_else(|| unreachable!()),
    );
    (console, store, clock)
}

/// A KMS that describes every key as told (enabled, by default) or fails as told; data keys
/// always round-trip.
pub struct FakeKms {
    pub describe: Result<KeyState, KmsError>,
}

impl FakeKms {
    pub fn passing() -> Self {
        Self {
            describe: Ok(KeyState::Enabled),
        }
    }
}

#[async_trait]
impl KeyProvider for FakeKms {
    async fn describe(&self, _: &KeyRef) -> Result<KeyDescription, KmsError> {
        self.describe.clone().map(|state| KeyDescription {
            azure: None,
            key_id: "test".into(),
            state,
            spec: "SYMMETRIC_DEFAULT".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            region: None,
        })
    }

    async fn generate_data_key(
        &self,
        _: &KeyRef,
        _: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        Ok(DataKey {
            plaintext: PlaintextKey::new(vec![7; 32]),
            wrapped: vec![9; 48],
        })
    }

    async fn decrypt_data_key(
        &self,
        _: &KeyRef,
        _: &[u8],
        _: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        Ok(PlaintextKey::new(vec![7; 32]))
    }

    async fn rotation_enabled(&self, _: &KeyRef) -> Result<Option<bool>, KmsError> {
        Ok(Some(true))
    }
}

fn page<T: Clone>(items: &[T], page: PageRequest, id: impl Fn(&T) -> Uuid) -> Vec<T> {
    items
        .iter()
        .filter(|item| page.after.is_none_or(|after| id(item) > after))
        .take(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX))
        .cloned()
        .collect()
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

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

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn open_session(&self, session: &Session, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.sessions.push(session.clone());
            if let Some(user) = s.users.iter_mut().find(|u| u.id == session.user_id) {
                user.last_sign_in_at = Some(session.created_at);
            }
            Ok(((), true))
        })
    }

    async fn switch_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            if let Some(session) = s.sessions.iter_mut().find(|x| x.id == session_id) {
                session.user_id = user_id;
            }
            Ok(((), true))
        })
    }

    async fn insert_sign_in_link(
        &self,
        link: &SignInLink,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.links.retain(|l| {
                !(l.user_id == link.user_id
                    && l.used_at.is_none()
                    && l.expires_at <= link.created_at)
            });
            s.links.push(link.clone());
            Ok(((), true))
        })
    }

    async fn sign_in_link(&self, token_hash: &str) -> Result<Option<SignInLink>, StoreError> {
        Ok(self
            .state()
            .links
            .iter()
            .find(|l| l.token_hash == token_hash)
            .cloned())
    }

    async fn redeem_sign_in_link(
        &self,
        link_id: Uuid,
        now: DateTime<Utc>,
        session: &Session,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            let Some(link) = s
                .links
                .iter_mut()
                .find(|l| l.id == link_id && l.used_at.is_none())
            else {
                return Ok((false, false));
            };
            link.used_at = Some(now);
            let user_id = link.user_id;
            s.links
                .retain(|l| !(l.user_id == user_id && l.used_at.is_none()));
            s.sessions.push(session.clone());
            if let Some(user) = s.users.iter_mut().find(|u| u.id == user_id) {
                user.last_sign_in_at = Some(now);
            }
            Ok((true, true))
        })
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .state()
            .sessions
            .iter()
            .find(|x| x.token_hash == token_hash)
            .cloned())
    }

    async fn touch_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(session) = self.state().sessions.iter_mut().find(|x| x.id == id) {
            session.last_seen_at = now;
        }
        Ok(())
    }

    async fn delete_session(&self, id: Uuid, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.sessions.retain(|x| x.id != id);
            Ok(((), true))
        })
    }

    async fn insert_api_key(&self, key: &ApiKey, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.api_keys.push(key.clone());
            Ok(((), true))
        })
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .state()
            .api_keys
            .iter()
            .find(|k| k.key_hash == key_hash)
            .cloned())
    }

    async fn api_keys(&self, organization_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        Ok(self
            .state()
            .api_keys
            .iter()
            .filter(|k| k.organization_id == organization_id)
            .cloned()
            .collect())
    }

    async fn revoke_api_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            match s.api_keys.iter_mut().find(|k| {
                k.id == id && k.organization_id == organization_id && k.revoked_at.is_none()
            }) {
                Some(key) => {
                    key.revoked_at = Some(now);
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }

    async fn touch_api_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(key) = self.state().api_keys.iter_mut().find(|k| k.id == id) {
            key.last_used_at = Some(now);
        }
        Ok(())
    }

    async fn count_attempt(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let mut state = self.state();
        let hits = state
            .hits
            .entry((bucket.to_owned(), window_start))
            .or_default();
        *hits += 1;
        Ok(*hits)
    }
}

#[async_trait]
impl ProjectStore for MemoryStore {
    async fn insert_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let taken = s
                .projects
                .iter()
                .any(|p| p.organization_id == project.organization_id && p.name == project.name);
            if taken {
                return Err(StoreError::Conflict(Constraint::ProjectName));
            }
            s.projects.push(project.clone());
            Ok(((), true))
        })
    }

    async fn project(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        Ok(self
            .state()
            .projects
            .iter()
            .find(|p| p.id == id && p.organization_id == organization_id)
            .cloned())
    }

    async fn projects(
        &self,
        organization_id: Uuid,
        request: PageRequest,
    ) -> Result<Vec<Project>, StoreError> {
        let state = self.state();
        let mine: Vec<Project> = state
            .projects
            .iter()
            .filter(|p| p.organization_id == organization_id)
            .cloned()
            .collect();
        Ok(page(&mine, request, |p| p.id))
    }

    async fn update_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let taken = s.projects.iter().any(|p| {
                p.id != project.id
                    && p.organization_id == project.organization_id
                    && p.name == project.name
            });
            if taken {
                return Err(StoreError::Conflict(Constraint::ProjectName));
            }
            if let Some(p) = s.projects.iter_mut().find(|p| p.id == project.id) {
                *p = project.clone();
            }
            Ok(((), true))
        })
    }
    async fn project_names_of(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        Ok(self
            .state()
            .projects
            .iter()
            .filter(|p| p.organization_id == organization_id && ids.contains(&p.id))
            .map(|p| (p.id, p.name.as_str().to_owned()))
            .collect())
    }
}

fn same_slot(a: &EncryptionKey, b: &EncryptionKey) -> bool {
    a.project_id == b.project_id
        && a.key_ref.provider() == b.key_ref.provider()
        && a.region == b.region
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, key: &EncryptionKey, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            if s.keys.iter().any(|k| same_slot(k, key)) {
                return Err(StoreError::Conflict(Constraint::KeyPerRegion));
            }
            s.keys.push(key.clone());
            Ok(((), true))
        })
    }

    async fn insert_keys(
        &self,
        keys: &[EncryptionKey],
        events: Vec<AuditDraft>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for (i, key) in keys.iter().enumerate() {
            let clash = state
                .keys
                .iter()
                .chain(&keys[..i])
                .any(|k| same_slot(k, key));
            if clash {
                return Err(StoreError::Conflict(Constraint::KeyPerRegion));
            }
        }
        state.keys.extend(keys.iter().cloned());
        for event in events {
            state.append(&self.key, event);
        }
        Ok(())
    }

    async fn record_rotation(&self, id: Uuid, enabled: Option<bool>) -> Result<(), StoreError> {
        if let Some(key) = self.state().keys.iter_mut().find(|k| k.id == id) {
            key.rotation_enabled = enabled;
        }
        Ok(())
    }

    async fn key_status_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for key in &self.state().keys {
            *counts.entry(key.status.as_str().to_owned()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    async fn key_status_page(
        &self,
        organization_id: Uuid,
        filter: &KeyStatusFilter,
        request: PageRequest,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        let mut keys: Vec<EncryptionKey> = self
            .state()
            .keys
            .iter()
            .filter(|k| k.organization_id == organization_id)
            .filter(|k| filter.status.is_none_or(|s| k.status == s))
            .filter(|k| filter.provider.is_none_or(|p| k.key_ref.provider() == p))
            .filter(|k| filter.project_id.is_none_or(|p| k.project_id == p))
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.id);
        Ok(page(&keys, request, |k| k.id))
    }

    async fn key_status_tally(
        &self,
        organization_id: Uuid,
        provider: Option<Provider>,
        project_id: Option<Uuid>,
    ) -> Result<Vec<(KeyStatus, u64)>, StoreError> {
        let mut counts: Vec<(KeyStatus, u64)> = Vec::new();
        for key in self.state().keys.iter().filter(|k| {
            k.organization_id == organization_id
                && provider.is_none_or(|p| k.key_ref.provider() == p)
                && project_id.is_none_or(|p| k.project_id == p)
        }) {
            match counts.iter_mut().find(|(s, _)| *s == key.status) {
                Some((_, n)) => *n += 1,
                None => counts.push((key.status, 1)),
            }
        }
        Ok(counts)
    }

    async fn key_statuses(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, KeyStatus)>, StoreError> {
        Ok(self
            .state()
            .keys
            .iter()
            .filter(|k| k.organization_id == organization_id && ids.contains(&k.id))
            .map(|k| (k.id, k.status))
            .collect())
    }

    async fn keys(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Vec<EncryptionKey>, StoreError> {
        Ok(self
            .state()
            .keys
            .iter()
            .filter(|k| k.organization_id == organization_id && k.project_id == project_id)
            .cloned()
            .collect())
    }

    async fn key(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<EncryptionKey>, StoreError> {
        Ok(self
            .state()
            .keys
            .iter()
            .find(|k| k.id == id && k.organization_id == organization_id)
            .cloned())
    }

    async fn delete_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.keys
                .retain(|k| !(k.id == id && k.organization_id == organization_id));
            Ok(((), true))
        })
    }

    async fn update_key_status(
        &self,
        id: Uuid,
        status: KeyStatus,
        checked_at: DateTime<Utc>,
        error: Option<String>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let mut queue = None;
            if let Some(key) = s.keys.iter_mut().find(|k| k.id == id) {
                if key.status != status {
                    let change = StatusChange {
                        id: Uuid::now_v7(),
                        at: checked_at,
                        from: key.status,
                        to: status,
                        message: error.clone(),
                    };
                    s.history.push((key.organization_id, id, change));
                    queue = Some(key.organization_id);
                }
                key.status = status;
                key.last_checked_at = Some(checked_at);
                key.last_error = error;
            }
            if let Some(organization_id) = queue {
                s.enqueue(JobKind::ReconcileKey, organization_id, id, checked_at);
            }
            Ok(((), true))
        })
    }

    /// The rule tests do not run the monitor: nothing is ever due here.
    async fn lease_due_keys(
        &self,
        _now: DateTime<Utc>,
        _checked_before: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
        _limit: u64,
    ) -> Result<Vec<(EncryptionKey, Option<KeyStatus>)>, StoreError> {
        Ok(Vec::new())
    }

    async fn schedule_key_check(
        &self,
        _id: Uuid,
        _checked_at: DateTime<Utc>,
        _next_check_at: DateTime<Utc>,
        _suspected: Option<KeyStatus>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn key_history(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StatusChange>, StoreError> {
        Ok(self
            .state()
            .history
            .iter()
            .rev()
            .filter(|(org, key, c)| {
                *org == organization_id && *key == key_id && page.after.is_none_or(|a| c.id < a)
            })
            .map(|(_, _, c)| c.clone())
            .take(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX))
            .collect())
    }

    async fn insert_local_key(
        &self,
        key: &LocalKey,
        _material: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        self.write(audit, |s| {
            s.local_keys.push(key.clone());
            Ok(((), true))
        })
    }

    async fn set_local_key_enabled(
        &self,
        organization_id: Uuid,
        id: Uuid,
        enabled: bool,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            match s
                .local_keys
                .iter_mut()
                .find(|k| k.id == id && k.organization_id == organization_id)
            {
                Some(key) => {
                    key.enabled = enabled;
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }

    async fn rotate_local_key(
        &self,
        key: &LocalKey,
        _material: Vec<u8>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        self.write(audit, |s| {
            match s
                .local_keys
                .iter_mut()
                .find(|k| k.id == key.id && k.version == key.version)
            {
                Some(stored) => {
                    stored.version += 1;
                    stored.rotated_at = Some(now);
                    Ok((true, true))
                }
                None => Ok((false, false)),
            }
        })
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn enqueue_job(
        &self,
        kind: JobKind,
        organization_id: Uuid,
        subject: Uuid,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.state().enqueue(kind, organization_id, subject, due_at);
        Ok(())
    }

    /// No leases here: one process, one worker.
    async fn lease_jobs(
        &self,
        kind: JobKind,
        now: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Job>, StoreError> {
        Ok(self
            .state()
            .jobs
            .iter()
            .filter(|(j, due)| j.kind == kind && *due <= now)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(j, _)| j.clone())
            .collect())
    }

    async fn finish_job(&self, job: &Job) -> Result<(), StoreError> {
        self.state()
            .jobs
            .retain(|(j, _)| !(j.id == job.id && j.generation == job.generation));
        Ok(())
    }

    async fn renew_job(&self, job: &Job, _lease_until: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .jobs
            .iter()
            .any(|(j, _)| j.id == job.id && j.generation == job.generation))
    }

    async fn release_job(&self, job: &Job, due_at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some((j, due)) = self.state().jobs.iter_mut().find(|(j, _)| j.id == job.id) {
            j.attempts = 0;
            *due = due_at;
        }
        Ok(())
    }

    async fn retry_job(
        &self,
        job: &Job,
        due_at: DateTime<Utc>,
        _error: &str,
    ) -> Result<(), StoreError> {
        if let Some((j, due)) = self.state().jobs.iter_mut().find(|(j, _)| j.id == job.id) {
            j.attempts += 1;
            *due = due_at;
        }
        Ok(())
    }

    async fn pending_jobs(&self, kind: JobKind) -> Result<u64, StoreError> {
        Ok(self
            .state()
            .jobs
            .iter()
            .filter(|(j, _)| j.kind == kind)
            .count() as u64)
    }

    async fn keys_to_reconcile(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let mut keys = self.state().keys.clone();
        keys.sort_by_key(|k| k.id);
        Ok(keys
            .iter()
            .filter(|k| k.status.is_revocation() && after.is_none_or(|a| k.id > a))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|k| (k.organization_id, k.id))
            .collect())
    }

    /// No clusters here: no data keys, so no versions in use.
    async fn versions_in_use(
        &self,
        _key_id: Uuid,
    ) -> Result<Vec<(String, u64, Option<KeyVersionStatus>)>, StoreError> {
        Ok(Vec::new())
    }

    /// No clusters here: every data key has its version.
    async fn data_keys_without_version(
        &self,
        _limit: u64,
    ) -> Result<Vec<crate::domain::ports::UnversionedDataKey>, StoreError> {
        Ok(Vec::new())
    }

    async fn set_data_key_version(
        &self,
        _row: &crate::domain::ports::DataKeyRow,
        _version: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn forget_versions_not_in(
        &self,
        key_id: Uuid,
        in_use: &[String],
    ) -> Result<(), StoreError> {
        self.state()
            .versions
            .retain(|v| v.key_id != key_id || in_use.contains(&v.version));
        Ok(())
    }

    async fn revoked_versions(
        &self,
        key_ids: &[Uuid],
    ) -> Result<Vec<KeyVersionStatus>, StoreError> {
        Ok(self
            .state()
            .versions
            .iter()
            .filter(|v| key_ids.contains(&v.key_id) && v.status.is_revocation())
            .cloned()
            .collect())
    }

    async fn record_version_status(
        &self,
        organization_id: Uuid,
        status: KeyVersionStatus,
        audit: Option<AuditDraft>,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        let changed = audit.is_some();
        if let Some(audit) = audit {
            let key = self.key.clone();
            s.append(&key, audit);
        }
        if changed {
            s.enqueue(
                JobKind::ReconcileKey,
                organization_id,
                status.key_id,
                status.last_checked_at.unwrap_or_default(),
            );
        }
        s.versions
            .retain(|v| !(v.key_id == status.key_id && v.version == status.version));
        s.versions.push(status);
        Ok(())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |_| Ok(((), true)))
    }

    async fn audit_events(
        &self,
        organization_id: Uuid,
        _filter: &AuditFilter,
        request: PageRequest,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let state = self.state();
        let mine: Vec<AuditEvent> = state
            .audit
            .iter()
            .rev()
            .filter(|e| e.organization_id == Some(organization_id))
            .cloned()
            .collect();
        Ok(mine
            .into_iter()
            .take(usize::try_from(request.fetch_limit()).unwrap_or(usize::MAX))
            .collect())
    }

    async fn audit_chain(&self, from_seq: i64, limit: u64) -> Result<Vec<ChainRow>, StoreError> {
        Ok(self
            .state()
            .audit
            .iter()
            .filter(|e| e.seq >= from_seq)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .map(ChainRow::Event)
            .collect())
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self.state().audit.last().map(|e| (e.seq, e.hash.clone())))
    }

    async fn reseal_legacy_audit_chain(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
