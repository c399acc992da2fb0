//! The read path's memory: who is calling (API keys and sessions by hash, their users) and the
//! reads every page and list repeats (projects, keys, memberships, organizations), kept so a
//! typical authenticated read costs no database round trip.
//!
//! What keeps it honest:
//! - Every change the console makes is written with an audit event, so the audit chain's head
//!   sequence number is a version of everything stored. An entry is valid only under the
//!   version it was read at. Other console processes' changes are seen when the head is
//!   polled again: within `HEAD_POLL` usually, and never later than twice that (after which
//!   every read waits for a fresh head).
//! - A change made through this process moves a local generation after it commits, which
//!   invalidates every entry at once; a row read before that commit is never stored after it.
//! - Credentials also expire after `CREDENTIAL_TTL`, so what is not audited (a session's idle
//!   timer refreshed by another instance) is read again soon.
//! - Only bounded key spaces are cached (rows that exist, pages of authenticated callers), and
//!   each map is emptied when it grows past `CAPACITY`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::clusters::Cluster;
use crate::domain::identity::{ApiKey, Organization, Session, User};
use crate::domain::keys::{EncryptionKey, KeyStatus};
use crate::domain::projects::Project;

/// How often the audit head is read again: the longest another instance's change takes to
/// be seen here.
pub const HEAD_POLL: Duration = Duration::from_millis(500);
/// Credentials are read again at least this often, changes or not.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(5);
/// Entries per map before it is emptied (a burst of distinct callers, not a leak).
const CAPACITY: usize = 10_000;
/// The same for maps whose entries are whole pages of up to 100 keys (a few hundred KiB of
/// them at most): the pages auditors are reading now, not every page ever asked for.
const PAGE_CAPACITY: usize = 256;

/// A Key Status page: organization, status and provider filters, project filter, the id the
/// page starts after, and its size.
pub type KeyStatusPageKey = (
    Uuid,
    Option<&'static str>,
    Option<&'static str>,
    Option<Uuid>,
    Option<Uuid>,
    u64,
);
/// Key Status counts: organization, provider filter, project filter.
pub type KeyTallyKey = (Uuid, Option<&'static str>, Option<Uuid>);
/// An organization and the ids of one Key Status page's keys (or of what they lead to).
pub type PageIds = (Uuid, Vec<Uuid>);

/// The version an entry was read at: the audit head seen and the local generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    head: i64,
    local: u64,
}

pub struct Map<K, V> {
    entries: Mutex<HashMap<K, (Tag, Instant, V)>>,
    max_age: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new(max_age: Duration) -> Self {
        Self::bounded(max_age, CAPACITY)
    }

    fn bounded(max_age: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_age,
            capacity,
        }
    }

    pub fn get(&self, key: &K, now: Tag) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (tag, at, value) = entries.get(key)?;
        (*tag == now && at.elapsed() < self.max_age).then(|| value.clone())
    }

    /// Stores `value`, read under `read`; entries of an older version are dropped, not kept.
    pub fn put(&self, key: K, read: Tag, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.capacity {
                entries.clear();
            }
            entries.insert(key, (read, Instant::now(), value));
        }
    }

    fn update(&self, mut change: impl FnMut(&mut V)) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.values_mut().for_each(|(_, _, v)| change(v));
        }
    }
}

pub struct ReadCache {
    head: AtomicI64,
    local: AtomicU64,
    polled_at: Mutex<Option<Instant>>,
    pub api_keys: Map<String, ApiKey>,
    pub sessions: Map<String, Session>,
    pub users: Map<Uuid, User>,
    pub organizations: Map<Uuid, Organization>,
    pub memberships: Map<Uuid, Vec<(Organization, Uuid)>>,
    pub projects: Map<(Uuid, Option<Uuid>, u64), Vec<Project>>,
    pub project: Map<(Uuid, Uuid), Project>,
    pub keys: Map<(Uuid, Uuid), Vec<EncryptionKey>>,
    pub clusters: Map<(Uuid, Uuid), Cluster>,
    pub key_status_pages: Map<KeyStatusPageKey, Vec<EncryptionKey>>,
    pub key_tallies: Map<KeyTallyKey, Vec<(KeyStatus, u64)>>,
    /// What a Key Status page's keys lead to, by the page's ids.
    pub key_statuses: Map<PageIds, Vec<(Uuid, KeyStatus)>>,
    pub project_names: Map<PageIds, Vec<(Uuid, String)>>,
    pub clusters_using_keys: Map<PageIds, Vec<Cluster>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        let lists = Duration::MAX;
        Self {
            head: AtomicI64::new(i64::MIN),
            local: AtomicU64::new(0),
            polled_at: Mutex::new(None),
            api_keys: Map::new(CREDENTIAL_TTL),
            sessions: Map::new(CREDENTIAL_TTL),
            users: Map::new(CREDENTIAL_TTL),
            organizations: Map::new(lists),
            memberships: Map::new(CREDENTIAL_TTL),
            projects: Map::new(lists),
            project: Map::new(lists),
            keys: Map::new(lists),
            clusters: Map::new(lists),
            key_status_pages: Map::bounded(lists, PAGE_CAPACITY),
            key_tallies: Map::new(lists),
            key_statuses: Map::bounded(lists, PAGE_CAPACITY),
            project_names: Map::bounded(lists, PAGE_CAPACITY),
            clusters_using_keys: Map::bounded(lists, PAGE_CAPACITY),
        }
    }
}

impl ReadCache {
    /// Whether the audit head must be read again before the cache can answer.
    pub fn poll_due(&self) -> bool {
        self.polled_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= HEAD_POLL))
            .unwrap_or(true)
    }

    /// Whether the version in hand is too old to answer with at all.
    pub fn poll_overdue(&self) -> bool {
        self.polled_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= 2 * HEAD_POLL))
            .unwrap_or(true)
    }

    /// Records the head read by a query sent at `asked`.
    pub fn polled(&self, head: i64, asked: Instant) {
        self.head.store(head, Ordering::SeqCst);
        if let Ok(mut at) = self.polled_at.lock() {
            *at = Some(asked);
        }
    }

    /// The version reads are tagged with now. Take it before reading the database.
    pub fn tag(&self) -> Tag {
        Tag {
            local: self.local.load(Ordering::SeqCst),
            head: self.head.load(Ordering::SeqCst),
        }
    }

    /// A change was committed through this process: every entry is stale.
    pub fn changed(&self) {
        self.local.fetch_add(1, Ordering::SeqCst);
    }

    /// Not audited, so it does not move the version: the cached rows follow in place.
    pub fn api_key_used(&self, id: Uuid, at: DateTime<Utc>) {
        self.api_keys.update(|k| {
            if k.id == id {
                k.last_used_at = Some(at);
            }
        });
    }

    pub fn session_seen(&self, id: Uuid, at: DateTime<Utc>) {
        self.sessions.update(|s| {
            if s.id == id {
                s.last_seen_at = at;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_change_invalidates_at_once() {
        let cache = ReadCache::default();
        cache.polled(7, Instant::now());
        let read = cache.tag();
        cache.users.put(Uuid::nil(), read, user());
        assert!(cache.users.get(&Uuid::nil(), cache.tag()).is_some());

        cache.changed();

        assert!(cache.users.get(&Uuid::nil(), cache.tag()).is_none());
    }

    #[test]
    fn a_row_read_before_a_local_change_is_stale_when_stored_after_it() {
        let cache = ReadCache::default();
        let read = cache.tag();
        cache.changed();
        cache.users.put(Uuid::nil(), read, user());

        assert!(cache.users.get(&Uuid::nil(), cache.tag()).is_none());
    }

    #[test]
    fn another_instances_change_is_seen_at_the_next_poll() {
        let cache = ReadCache::default();
        cache.polled(7, Instant::now());
        cache.users.put(Uuid::nil(), cache.tag(), user());

        cache.polled(8, Instant::now());

        assert!(cache.users.get(&Uuid::nil(), cache.tag()).is_none());
    }

    fn user() -> User {
        User {
            id: Uuid::nil(),
            organization_id: Uuid::nil(),
            email: None,
            display_name: "x".into(),
            role: crate::domain::identity::Role::Owner,
            created_at: Utc::now(),
            last_sign_in_at: None,
            identity: None,
        }
    }
}
