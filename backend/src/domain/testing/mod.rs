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

mod audit;
pub mod blobs;
pub mod clusters;
mod credentials;
mod jobs;
mod keys;
mod members;
mod projects;
pub mod world;

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
                    lease: Uuid::nil(),
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
            gcp: None,
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

    async fn wrap_data_key(
        &self,
        _: &KeyRef,
        _: &PlaintextKey,
        _: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        Ok(vec![9; 48])
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
