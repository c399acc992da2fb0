//! What the domain needs from storage. The sea-orm adapter in `store/` implements it; every
//! method that changes state takes the audit event that records it and writes both in one
//! transaction, so a change is never stored without its event (and vice versa).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::audit::{AuditDraft, AuditEvent, AuditFilter, ChainRow};
use crate::domain::clusters::{Backup, Cluster, ClusterState, ObjectName, StoredObject};
use crate::domain::identity::{
    ApiKey, Invitation, MembershipChange, Organization, Role, Session, SignInLink, User,
};
use crate::domain::keys::KeyStatusFilter;
pub use crate::domain::keys::rewrap::DataKeyRow;
use crate::domain::keys::rewrap::{DataKeySwap, DataKeyToMove, Rewrap, RewrapFailure, RewrapState};
use crate::domain::keys::{EncryptionKey, KeyStatus, Provider, StatusChange};
use crate::domain::local_kms::LocalKey;

use crate::domain::page::PageRequest;
use crate::domain::projects::Project;

// Storage failures are the domain's own errors (error.rs); adapters name them from here too.
pub use crate::domain::error::{Constraint, StoreError};
pub use crate::domain::jobs::{Job, JobKind};

/// Everything the domain needs from storage, one port per aggregate. The sea-orm adapter in
/// `store/` implements each; `domain::testing` holds an in-memory one for fast rule tests.
#[async_trait]
pub trait Store:
    MemberStore + CredentialStore + Counters + ProjectStore + KeyStore + AuditStore + JobStore
{
    /// Readiness: the database answers, and (SQLite) its file passed an integrity check
    /// recently.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Organizations and the people in them: memberships, roles, invitations.
#[async_trait]
pub trait MemberStore: Send + Sync {
    async fn organizations(&self) -> Result<Vec<Organization>, StoreError>;
    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError>;
    /// Creates the first organization with its owner unless an owner exists already (another
    /// console process may have won the race); either way returns the first owner.
    async fn create_first_organization(
        &self,
        organization: &Organization,
        owner: &User,
        audit: AuditDraft,
    ) -> Result<User, StoreError>;
    /// The oldest owner of the oldest organization: who the bootstrap link is for.
    async fn first_owner(&self) -> Result<Option<User>, StoreError>;
    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// Every membership of the person with this single sign-on identity.
    async fn users_by_identity(&self, issuer: &str, subject: &str)
    -> Result<Vec<User>, StoreError>;
    async fn users(&self, organization_id: Uuid) -> Result<Vec<User>, StoreError>;
    /// Every organization the person behind membership `user_id` belongs to (through the
    /// same single sign-on identity), with their membership in each, by organization name.
    async fn memberships(&self, user_id: Uuid) -> Result<Vec<(Organization, Uuid)>, StoreError>;
    /// Changes a member's role unless that leaves the organization without an owner, or the
    /// acting member (when a person acts) is no longer an owner: both checked inside the write.
    async fn change_role(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        role: Role,
        acting: Option<Uuid>,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError>;
    /// Removes a member (and their sessions) unless they are the last owner, or the acting
    /// member is no longer an owner.
    async fn remove_user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        acting: Option<Uuid>,
        audit: AuditDraft,
    ) -> Result<MembershipChange, StoreError>;
    async fn insert_organization_with_invitation(
        &self,
        organization: &Organization,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    async fn insert_invitation(
        &self,
        invitation: &Invitation,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    async fn invitations(&self, organization_id: Uuid) -> Result<Vec<Invitation>, StoreError>;
    async fn invitations_for_email(&self, email: &str) -> Result<Vec<Invitation>, StoreError>;
    /// Marks a still-pending invitation accepted and adds the member; false if it was not pending.
    async fn accept_invitation(
        &self,
        id: Uuid,
        user: &User,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    async fn revoke_invitation(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
}

/// How people and scripts prove who they are: sign-in links, sessions, API keys, and the
/// sign-in rate limits.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    async fn open_session(&self, session: &Session, audit: AuditDraft) -> Result<(), StoreError>;
    /// Moves a session to the person's membership of another organization.
    async fn switch_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    /// Changes a member's role unless that leaves the organization without an owner.
    /// Stores a new link; the user's unexpired unused links keep working (a link already
    /// printed must not break), expired ones are deleted.
    async fn insert_sign_in_link(
        &self,
        link: &SignInLink,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    async fn sign_in_link(&self, token_hash: &str) -> Result<Option<SignInLink>, StoreError>;
    /// Marks the link used and opens the session, only if the link is still unused; false
    /// when another request redeemed it first.
    async fn redeem_sign_in_link(
        &self,
        link_id: Uuid,
        now: DateTime<Utc>,
        session: &Session,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError>;
    async fn touch_session(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn delete_session(&self, id: Uuid, audit: AuditDraft) -> Result<(), StoreError>;
    async fn insert_api_key(&self, key: &ApiKey, audit: AuditDraft) -> Result<(), StoreError>;
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn api_keys(&self, organization_id: Uuid) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes a live key of the organization; false when there is none by that id.
    async fn revoke_api_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    async fn touch_api_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Fixed-window counters every instance shares (sign-in attempts, Check now presses, test
/// events).
#[async_trait]
pub trait Counters: Send + Sync {
    /// Counts one attempt in `bucket`'s window starting at `window_start`; returns the count.
    async fn count_attempt(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u32, StoreError>;
}

/// Projects (R1: CMEK is chosen at creation).
#[async_trait]
pub trait ProjectStore: Send + Sync {
    async fn insert_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError>;
    async fn project(&self, organization_id: Uuid, id: Uuid)
    -> Result<Option<Project>, StoreError>;
    async fn projects(
        &self,
        organization_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Project>, StoreError>;
    async fn update_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError>;
    /// The names of these projects of the organization (one query, whatever the number);
    /// ids it does not have are absent.
    async fn project_names_of(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, String)>, StoreError>;
}

/// Encryption keys (R4 by unique index) and the local KMS's keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Conflict when the project already has a key for the provider and region (R4).
    async fn insert_key(&self, key: &EncryptionKey, audit: AuditDraft) -> Result<(), StoreError>;
    /// Several keys and their events in one transaction: all or none.
    async fn insert_keys(
        &self,
        keys: &[EncryptionKey],
        events: Vec<AuditDraft>,
    ) -> Result<(), StoreError>;
    async fn keys(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Vec<EncryptionKey>, StoreError>;
    async fn key(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<EncryptionKey>, StoreError>;
    async fn delete_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    /// Records a check's outcome; a status that changed is also kept in the key's history
    /// and queues the key's reconciliation (`JobKind::ReconcileKey`) in the same
    /// transaction, so the reaction to it survives a crash right after.
    async fn update_key_status(
        &self,
        id: Uuid,
        status: KeyStatus,
        checked_at: DateTime<Utc>,
        error: Option<String>,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    /// Leases up to `limit` keys that are due for the monitor (scheduled for `now` or
    /// earlier, or never scheduled and last checked before `checked_before`) and not leased
    /// by another instance, until `lease_until`; with each, the status a first probe saw and
    /// a second must confirm.
    async fn lease_due_keys(
        &self,
        now: DateTime<Utc>,
        checked_before: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(EncryptionKey, Option<KeyStatus>)>, StoreError>;
    /// How many keys (of every organization) have each status, for `/metrics`.
    async fn key_status_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// One page of the Key Status report: the organization's keys the filter keeps, in id
    /// order after `page.after`, `page.fetch_limit()` of them, read on indexes (the cost is
    /// the page's, not the organization's).
    async fn key_status_page(
        &self,
        organization_id: Uuid,
        filter: &KeyStatusFilter,
        page: PageRequest,
    ) -> Result<Vec<EncryptionKey>, StoreError>;
    /// How many of the organization's keys (of `provider`, of `project_id`, when given) have
    /// each status; statuses no key has may be absent. Kept as keys change, so reading it
    /// does not walk the keys.
    async fn key_status_tally(
        &self,
        organization_id: Uuid,
        provider: Option<Provider>,
        project_id: Option<Uuid>,
    ) -> Result<Vec<(KeyStatus, u64)>, StoreError>;
    /// The status of each of these keys of the organization; ids it does not have are absent.
    async fn key_statuses(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, KeyStatus)>, StoreError>;
    /// Moves a saved Azure key's pinned tenant from `from` to `to`, with the event, if it is
    /// still pinned to `from`; false (nothing recorded) otherwise.
    async fn repin_key(
        &self,
        organization_id: Uuid,
        id: Uuid,
        from: &str,
        to: &str,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Records the key's automatic rotation as a check saw it.
    async fn record_rotation(&self, id: Uuid, enabled: Option<bool>) -> Result<(), StoreError>;
    /// Schedules the key's next check, releases its lease, and keeps (or clears) the status
    /// awaiting confirmation.
    async fn schedule_key_check(
        &self,
        id: Uuid,
        checked_at: DateTime<Utc>,
        next_check_at: DateTime<Utc>,
        suspected: Option<KeyStatus>,
    ) -> Result<(), StoreError>;
    /// A key's status changes, newest first.
    async fn key_history(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StatusChange>, StoreError>;
    async fn insert_local_key(
        &self,
        key: &LocalKey,
        material: Vec<u8>,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    /// False when the organization has no such key.
    async fn set_local_key_enabled(
        &self,
        organization_id: Uuid,
        id: Uuid,
        enabled: bool,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Adds version `key.version + 1` and makes it current; false when the key is gone or
    /// another rotation got there first.
    async fn rotate_local_key(
        &self,
        key: &LocalKey,
        material: Vec<u8>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
}

/// The tamper-evident audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, audit: AuditDraft) -> Result<(), StoreError>;
    /// Events of one organization, newest first, after `page.after`.
    async fn audit_events(
        &self,
        organization_id: Uuid,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Every stored row in `seq` order, `limit` rows from `from_seq` on (rows that no longer
    /// read back as events included, for verification to report).
    async fn audit_chain(&self, from_seq: i64, limit: u64) -> Result<Vec<ChainRow>, StoreError>;
    /// The newest event's sequence number and hash.
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;
    /// Re-seals, once, events written before the chain was keyed; how many.
    async fn reseal_legacy_audit_chain(&self) -> Result<u64, StoreError>;
    /// The events of the organizations' chains (format 2), in chain then sequence order,
    /// `limit` of them after `after` (a chain and a sequence number), of chain `only` if
    /// given. (The in-memory fakes keep none.)
    async fn audit_org_chains(
        &self,
        only: Option<&str>,
        after: Option<(String, i64)>,
        limit: u64,
    ) -> Result<Vec<crate::domain::audit::ChainRead>, StoreError> {
        let _ = (only, after, limit);
        Ok(Vec::new())
    }
    /// The places of `chain` each signing key signed: the key's id, its first and last.
    async fn audit_key_ranges(&self, chain: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let _ = chain;
        Ok(Vec::new())
    }
    /// The chains that have a head row, in name order, `limit` of them after `after`.
    async fn audit_chain_names(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let _ = (after, limit);
        Ok(Vec::new())
    }
    /// Where format 1's chain ended, once closed.
    async fn audit_legacy_end(
        &self,
    ) -> Result<Option<crate::domain::audit::LegacyEnd>, StoreError> {
        Ok(None)
    }
    /// How many events after `last_seq` (format 1's end) are in no organization's chain.
    async fn audit_unchained_after(&self, last_seq: i64) -> Result<u64, StoreError> {
        let _ = last_seq;
        Ok(0)
    }
    /// One chain's head: its newest event's place and hash, or its newest signed before
    /// `before` (`None`: no such event).
    async fn audit_chain_head(
        &self,
        chain: &str,
        before: Option<DateTime<Utc>>,
    ) -> Result<Option<(u64, String)>, StoreError> {
        let _ = (chain, before);
        Ok(None)
    }
    /// A page of one chain's events in chain order, after `after` and up to `through`,
    /// signed in the filter's time range and matching its other filters.
    async fn audit_chain_events(
        &self,
        chain: &str,
        after: u64,
        through: u64,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<crate::crypto::audit_chain::ChainEvent>, StoreError> {
        let _ = (chain, after, through, filter, limit);
        Ok(Vec::new())
    }
    /// The chain's newest signed checkpoint at or before the place `at_most`.
    async fn audit_latest_checkpoint(
        &self,
        chain: &str,
        at_most: u64,
    ) -> Result<Option<crate::crypto::audit_chain::Checkpoint>, StoreError> {
        let _ = (chain, at_most);
        Ok(None)
    }
    /// Signs, keeps and queues to webhooks a checkpoint of every chain whose head moved since
    /// its last one (a batch of them); the checkpoints made.
    async fn checkpoint_audit_chains(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::crypto::audit_chain::Checkpoint>, StoreError> {
        let _ = now;
        Ok(Vec::new())
    }
}

/// What a cluster's object write found when it came to record the new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectWrite {
    /// Recorded; the version it replaced, if any, is returned for deletion unless a backup
    /// is reading the cluster (then it is kept until the backup ends).
    Recorded { replaced: Option<Uuid> },
    /// The cluster is no longer available (paused, deleted meanwhile): nothing recorded.
    ClusterNotAvailable,
}

/// What starting a backup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupStart {
    /// Recorded `creating` with its snapshot of this many objects; its job is queued.
    Started {
        objects: u32,
    },
    NotAvailable,
    /// Another backup of the cluster is being taken.
    AlreadyRunning,
}

/// One object a backup job copied: its name, the copy's version, its plaintext size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupCopy {
    pub name: ObjectName,
    pub version: Uuid,
    pub size_bytes: u64,
}

/// Clusters, their objects' index and their backups. The sealed bytes live in a `BlobStore`.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Conflict(ClusterName) when the project has a cluster by that name. `objects` are
    /// recorded with it, all in one transaction; a cluster being restored (`creating`, with
    /// `restore` set) is recorded with its restore job queued.
    async fn insert_cluster(
        &self,
        cluster: &Cluster,
        objects: &[StoredObject],
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    async fn cluster(&self, organization_id: Uuid, id: Uuid)
    -> Result<Option<Cluster>, StoreError>;
    async fn clusters(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Cluster>, StoreError>;
    /// The states of these clusters, as stored now (not cached); deleted ones are absent.
    async fn cluster_states(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, ClusterState)>, StoreError>;
    /// The clusters of the organization with a region that uses one of these keys (a page of
    /// the Key Status report), found from the keys in one query.
    async fn clusters_using_keys(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<Cluster>, StoreError>;
    /// Clusters (of any project of the organization) with a region that uses the key.
    async fn clusters_using_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<Cluster>, StoreError>;
    /// Marks the cluster "will not resume" (`reason`) if it is not marked, or clears the
    /// mark (`None`) if it is, with the event; false (and nothing recorded) otherwise, so
    /// each mark is audited and alerted once however often it is asked for.
    async fn set_will_not_resume(
        &self,
        organization_id: Uuid,
        id: Uuid,
        reason: Option<String>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Moves the cluster to `to` if it is in one of `from`, setting `last_error`; false
    /// (and nothing recorded) when it is not.
    async fn transition(
        &self,
        organization_id: Uuid,
        id: Uuid,
        from: &[ClusterState],
        to: ClusterState,
        last_error: Option<String>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Removes the cluster, its regions and its objects' index (its backups stay).
    async fn delete_cluster(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    async fn objects(
        &self,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<StoredObject>, StoreError>;
    async fn object(
        &self,
        cluster_id: Uuid,
        name: &ObjectName,
    ) -> Result<Option<StoredObject>, StoreError>;
    /// Records a new version of an object, if the cluster is still available.
    async fn put_object(
        &self,
        cluster_id: Uuid,
        object: &StoredObject,
    ) -> Result<ObjectWrite, StoreError>;
    /// Removes an object from the index: None when there is no such object; else, as for
    /// `put_object`, the version to delete now (none while a backup reads the cluster).
    async fn delete_object(
        &self,
        cluster_id: Uuid,
        name: &ObjectName,
    ) -> Result<Option<ObjectWrite>, StoreError>;
    /// Records `backup` as `creating` with a snapshot of the cluster's index (taken inside
    /// the database, whatever its size), holds the cluster for it (a version replaced from
    /// now on is kept until the backup ends) and queues its job, with `audit`, in one
    /// transaction, if the cluster is available and no other backup holds it.
    async fn start_backup(
        &self,
        backup: &Backup,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<BackupStart, StoreError>;
    /// Up to `limit` objects of the snapshot not copied yet, in name order; each names the
    /// cluster's version to copy.
    async fn backup_objects_to_copy(
        &self,
        backup_id: Uuid,
        limit: u64,
    ) -> Result<Vec<StoredObject>, StoreError>;
    /// Records copies made by the backup's job, and its progress; false (nothing recorded)
    /// when the backup is no longer `creating`.
    async fn record_backup_copies(
        &self,
        backup_id: Uuid,
        copies: &[BackupCopy],
    ) -> Result<bool, StoreError>;
    /// Ends a `creating` backup, available (`failure` None) or failed, with `audit`; removes
    /// its job and releases its cluster, in one transaction. The versions the cluster kept
    /// for it, now to be deleted; None (nothing recorded) when it was not `creating`.
    async fn end_backup(
        &self,
        backup: &Backup,
        failure: Option<String>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<Option<Vec<Uuid>>, StoreError>;
    async fn backup(&self, organization_id: Uuid, id: Uuid) -> Result<Option<Backup>, StoreError>;
    /// A cluster's backups, newest first (also once the cluster is deleted).
    async fn backups(
        &self,
        organization_id: Uuid,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Backup>, StoreError>;
    /// A project's backups, newest first.
    async fn project_backups(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Backup>, StoreError>;
    /// Backups of the organization whose data key the key wraps.
    async fn backups_using_key(
        &self,
        organization_id: Uuid,
        key_id: Uuid,
    ) -> Result<Vec<Backup>, StoreError>;
    /// The objects a backup holds, in name order after `after`, at most `limit`, each dated
    /// `taken_at` (when the backup was taken).
    async fn backup_objects(
        &self,
        backup_id: Uuid,
        taken_at: DateTime<Utc>,
        after: Option<&ObjectName>,
        limit: u64,
    ) -> Result<Vec<StoredObject>, StoreError>;
    async fn delete_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;
    /// Whether a restore from the backup is running (a cluster `creating` from it).
    async fn restoring_from(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
    ) -> Result<bool, StoreError>;
    /// The last object (in name order) a restore has put into the cluster so far.
    async fn restored_up_to(&self, cluster_id: Uuid) -> Result<Option<ObjectName>, StoreError>;
    /// Records objects a restore's job put into the cluster, and its progress; false
    /// (nothing recorded) when the cluster is no longer `creating`.
    async fn record_restored(
        &self,
        cluster_id: Uuid,
        objects: &[StoredObject],
    ) -> Result<bool, StoreError>;
    /// Ends a restore: the `creating` cluster becomes available (`failure` None) or failed,
    /// its job removed, with `audit`, in one transaction; false when it was not `creating`.
    async fn end_restore(
        &self,
        cluster_id: Uuid,
        failure: Option<String>,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Starts a change of key: with `replacement`, saves the new key and marks `rewrap`'s
    /// old key replaced by it (R4 then counts the new one); records the re-wrap with how many
    /// data keys the old key wraps, and queues its job, with `events`, in one transaction.
    /// Conflict(KeyChange) when the old key was replaced meanwhile or a re-wrap of either key
    /// is running; Conflict(KeyPerRegion) as for any new key.
    async fn start_rewrap(
        &self,
        rewrap: &Rewrap,
        replacement: Option<&EncryptionKey>,
        events: Vec<AuditDraft>,
    ) -> Result<Rewrap, StoreError>;
    /// A re-wrap of the organization, with (the first `FAILURES_SHOWN` of) its failures.
    async fn rewrap(&self, organization_id: Uuid, id: Uuid) -> Result<Option<Rewrap>, StoreError>;
    /// The latest re-wrap from or to each of these keys (one per key that has any).
    async fn latest_rewraps(
        &self,
        organization_id: Uuid,
        key_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Rewrap)>, StoreError>;
    /// Up to `limit` data keys the re-wrap still has to move: wrapped by its old key (and,
    /// for a re-wrap under the same key, by a version other than the target), not given up
    /// on by this re-wrap.
    async fn data_keys_to_move(
        &self,
        rewrap: &Rewrap,
        limit: u64,
    ) -> Result<Vec<DataKeyToMove>, StoreError>;
    /// Records a page of the job's work in one transaction: each swap made only where the
    /// stored wrapped key is still the one read (its event written only then), each failure
    /// marked on its data key and listed, the progress counted, and the target version
    /// (when it changed, the total is counted again). How many swaps were made.
    async fn record_rewrap(
        &self,
        rewrap: &Rewrap,
        to_key_ref: &str,
        swaps: Vec<(DataKeySwap, AuditDraft)>,
        failures: &[(DataKeyRow, Vec<u8>, RewrapFailure)],
    ) -> Result<u32, StoreError>;
    /// Ends the re-wrap (`state` done or failed) with `audit` and removes its job, if no data
    /// key is left to move (one written meanwhile, a backup taken under the old key, keeps
    /// it going): false, nothing recorded, otherwise.
    async fn finish_rewrap(
        &self,
        rewrap: &Rewrap,
        state: RewrapState,
        now: DateTime<Utc>,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;
    /// Which of these versions of the owner's copies an index row names: a cluster's objects,
    /// the versions it keeps for a backup being taken and those a backup still has to copy;
    /// a backup's objects.
    async fn named_versions(
        &self,
        owner: crate::domain::blobs::CopyOwner,
        versions: &[Uuid],
    ) -> Result<Vec<Uuid>, StoreError>;
}

/// What a key version still in use was last seen as, by the monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersionStatus {
    pub key_id: Uuid,
    pub version: String,
    pub status: KeyStatus,
    /// Seen once by a probe; a second must confirm it before it is recorded.
    pub suspected: Option<KeyStatus>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Queues the job for `subject` (or, when one is pending, brings it forward to `due_at`
    /// and gives it a new generation).
    async fn enqueue_job(
        &self,
        kind: JobKind,
        organization_id: Uuid,
        subject: Uuid,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Leases up to `limit` due jobs of `kind` that no live lease holds, until `lease_until`.
    async fn lease_jobs(
        &self,
        kind: JobKind,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Job>, StoreError>;
    /// Done: removed, unless it was queued again meanwhile (then released to run again).
    async fn finish_job(&self, job: &Job) -> Result<(), StoreError>;
    /// Extends a long job's lease; false when the job is gone or was queued again (then the
    /// holder stops: what it does may be outdated).
    async fn renew_job(&self, job: &Job, lease_until: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Given back after some progress (a long job's share of a round): due again at
    /// `due_at`, its count of failed attempts reset.
    async fn release_job(&self, job: &Job, due_at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Failed: released, due again at `due_at`, with the error kept for operators.
    async fn retry_job(
        &self,
        job: &Job,
        due_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Jobs waiting (due or not), for `/metrics` and readiness.
    async fn pending_jobs(&self, kind: JobKind) -> Result<u64, StoreError>;
    /// Keys whose clusters the periodic reconciliation looks at: every key (of every
    /// organization) with a revocation status or a version with one, and every key of a
    /// cluster marked "will not resume". (organization, key) in key order, after `after`, at
    /// most `limit` (a keyset page).
    async fn keys_to_reconcile(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError>;
    /// The versions of the key that wrap data keys still in use (cluster regions and
    /// backups), with how many each wraps, and what the monitor last saw of each.
    async fn versions_in_use(
        &self,
        key_id: Uuid,
    ) -> Result<Vec<(String, u64, Option<KeyVersionStatus>)>, StoreError>;
    /// Data keys wrapped before versions were recorded (at most `limit`), to be given the
    /// version their wrapped form names.
    async fn data_keys_without_version(
        &self,
        limit: u64,
    ) -> Result<Vec<UnversionedDataKey>, StoreError>;
    async fn set_data_key_version(&self, row: &DataKeyRow, version: &str)
    -> Result<(), StoreError>;
    /// Forgets what the monitor saw of the key's versions that no longer wrap anything.
    async fn forget_versions_not_in(
        &self,
        key_id: Uuid,
        in_use: &[String],
    ) -> Result<(), StoreError>;
    /// The versions of these keys recorded with a revocation status (one query, for a page
    /// of keys).
    async fn revoked_versions(&self, key_ids: &[Uuid])
    -> Result<Vec<KeyVersionStatus>, StoreError>;
    /// Records what a probe saw of a version: the status (history of a change is the
    /// audit event's; a changed status queues the key's reconciliation in the same
    /// transaction) or a suspicion awaiting confirmation.
    async fn record_version_status(
        &self,
        organization_id: Uuid,
        status: KeyVersionStatus,
        audit: Option<AuditDraft>,
    ) -> Result<(), StoreError>;
}

/// A data key stored before the key version that wrapped it was recorded.
#[derive(Clone, Debug)]
pub struct UnversionedDataKey {
    pub row: DataKeyRow,
    pub organization_id: Uuid,
    pub key_id: Uuid,
    pub wrapped: Vec<u8>,
}
