//! The kinds of durable work (the `jobs` table): what a change leaves to do, written with it.

use uuid::Uuid;

/// Durable work that follows a change: written in the same transaction as the change, leased
/// by one instance at a time, retried with back-off until it succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Bring the clusters that use a key (subject) in line with its status and its
    /// versions' statuses, under each project's revocation policy.
    ReconcileKey,
    /// Copy the objects of a backup (subject) that is `creating`, page by page, then make it
    /// available (or failed) and release its cluster.
    Backup,
    /// Copy a backup's objects into the cluster (subject) being restored from it, page by
    /// page, then make the cluster available (or failed).
    Restore,
    /// Move the data keys of a key change (subject: the re-wrap) to the target key, page by
    /// page, then end it done (or failed, naming what could not be moved).
    Rewrap,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::ReconcileKey,
        JobKind::Backup,
        JobKind::Restore,
        JobKind::Rewrap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::ReconcileKey => "reconcile_key",
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Rewrap => "rewrap",
        }
    }
}

/// A leased job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: Uuid,
    pub kind: JobKind,
    pub organization_id: Uuid,
    pub subject: Uuid,
    /// Grows each time the job is queued again; finishing an older generation leaves the
    /// job queued.
    pub generation: i64,
    /// Failed attempts so far.
    pub attempts: i32,
    /// This lease: renewing, releasing, retrying or finishing the job is done only while the
    /// lease is still this one (a lease that lapsed went to another holder).
    pub lease: Uuid,
}
