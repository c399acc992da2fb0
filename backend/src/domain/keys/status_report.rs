//! The Key Status page: every key of the organization with its project, status, last check,
//! last error and rotation, the clusters it protects and what its status means for them;
//! counts per status at the top. For owners and auditors.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use super::{EncryptionKey, KeyStatus};
use crate::domain::DomainError;
use crate::domain::clusters::{Cluster, ClusterState};
use crate::domain::identity::Caller;
use crate::domain::keys::Keys;
use crate::domain::page::{Page, PageRequest};

/// Every status, in the order the page counts them.
pub const STATUSES: [KeyStatus; 6] = [
    KeyStatus::Active,
    KeyStatus::AccessDenied,
    KeyStatus::Disabled,
    KeyStatus::PendingDeletion,
    KeyStatus::NotFound,
    KeyStatus::Unreachable,
];

pub use crate::domain::keys::KeyStatusFilter;

/// What a key's status means for one cluster that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEffect {
    /// Its keys work: nothing to do.
    Ok,
    /// Running (or paused) while a key it needs is revoked: it will not resume until the key
    /// works again (`keep_running` projects).
    WillNotResume,
    /// Made inaccessible, and a key it needs still does not work.
    WaitingForKey,
    /// Made inaccessible, and every key it needs works again: the owner can resume it.
    CanBeResumed,
    /// The KMS cannot be reached: nothing changes for the cluster.
    KmsUnreachable,
}

impl ClusterEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterEffect::Ok => "ok",
            ClusterEffect::WillNotResume => "will_not_resume",
            ClusterEffect::WaitingForKey => "waiting_for_key",
            ClusterEffect::CanBeResumed => "can_be_resumed",
            ClusterEffect::KmsUnreachable => "kms_unreachable",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ClusterEffect::Ok => "OK",
            ClusterEffect::WillNotResume => "Will not resume",
            ClusterEffect::WaitingForKey => "Waiting for the key",
            ClusterEffect::CanBeResumed => "Can be resumed",
            ClusterEffect::KmsUnreachable => "KMS unreachable (cluster unaffected)",
        }
    }
}

/// What the statuses of a cluster's keys mean for it.
pub fn effect(state: ClusterState, statuses: &[KeyStatus]) -> ClusterEffect {
    let revoked = statuses.iter().any(|s| s.is_revocation());
    let unreachable = statuses.contains(&KeyStatus::Unreachable);
    match state {
        ClusterState::Inaccessible if revoked || unreachable => ClusterEffect::WaitingForKey,
        ClusterState::Inaccessible => ClusterEffect::CanBeResumed,
        ClusterState::Deleting | ClusterState::Failed => ClusterEffect::Ok,
        _ if revoked => ClusterEffect::WillNotResume,
        _ if unreachable => ClusterEffect::KmsUnreachable,
        _ => ClusterEffect::Ok,
    }
}

#[derive(Clone, Debug)]
pub struct ProtectedCluster {
    pub id: Uuid,
    pub name: String,
    pub state: ClusterState,
    pub region: String,
    pub effect: ClusterEffect,
}

#[derive(Clone, Debug)]
pub struct KeyStatusEntry {
    pub key: EncryptionKey,
    pub project_name: String,
    pub clusters: Vec<ProtectedCluster>,
    /// Versions of the key, still wrapping data keys, recorded revoked: the key itself may
    /// be `active` while what an older version wrapped cannot be unwrapped.
    pub revoked_versions: Vec<(String, KeyStatus)>,
    /// The latest change (replacement or re-wrap) from or to the key, with its progress.
    pub change: Option<super::rewrap::Rewrap>,
}

/// What each region's data key can count on: its key's status, or its version's when that
/// version is recorded revoked.
struct Statuses {
    keys: HashMap<Uuid, KeyStatus>,
    versions: HashMap<(Uuid, String), KeyStatus>,
}

impl Statuses {
    fn of(&self, region: &crate::domain::clusters::ClusterRegion) -> Option<KeyStatus> {
        let key = region.key_id?;
        let status = *self.keys.get(&key)?;
        if status.is_revocation() {
            return Some(status);
        }
        Some(
            region
                .key_version
                .as_ref()
                .and_then(|v| self.versions.get(&(key, v.clone())).copied())
                .unwrap_or(status),
        )
    }
}

pub struct KeyStatusReport {
    /// Per status, over every key the provider and project filters keep.
    pub counts: Vec<(KeyStatus, usize)>,
    pub page: Page<KeyStatusEntry>,
}

impl Keys {
    /// One page of the report. Every read is bounded by the page: the keys come from an
    /// indexed keyset query, the counts from tallies kept as keys change, and the clusters,
    /// their other keys' statuses and the projects' names are fetched for the page's keys
    /// only, one query each.
    pub async fn key_status_report(
        &self,
        caller: &Caller,
        filter: &KeyStatusFilter,
        page: PageRequest,
    ) -> Result<KeyStatusReport, DomainError> {
        caller.require_auditor_view("see the Key Status page")?;
        let organization_id = caller.organization_id;
        let tally = self
            .keys
            .key_status_tally(organization_id, filter.provider, filter.project_id)
            .await?;
        let counts = STATUSES
            .iter()
            .map(|status| {
                let n = tally
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| usize::try_from(*n).unwrap_or(usize::MAX));
                (*status, n)
            })
            .collect();
        let keys = self
            .keys
            .key_status_page(organization_id, filter, page)
            .await?;
        let keys = page.finish(keys, |k| k.id);
        let entries = self.entries(organization_id, keys.items).await?;
        Ok(KeyStatusReport {
            counts,
            page: Page {
                items: entries,
                next: keys.next,
            },
        })
    }

    /// The page's keys with their projects' names and the clusters they protect.
    async fn entries(
        &self,
        organization_id: Uuid,
        keys: Vec<EncryptionKey>,
    ) -> Result<Vec<KeyStatusEntry>, DomainError> {
        let key_ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
        let clusters: Vec<Cluster> = match self.clusters.get() {
            Some(parts) => parts.clusters_using_keys(organization_id, &key_ids).await?,
            None => Vec::new(),
        };
        // A cluster's other keys, even those the filters leave out, decide what it can do.
        let mut statuses: HashMap<Uuid, KeyStatus> =
            keys.iter().map(|k| (k.id, k.status)).collect();
        let others: BTreeSet<Uuid> = clusters
            .iter()
            .flat_map(|c| c.regions.iter().filter_map(|r| r.key_id))
            .filter(|id| !statuses.contains_key(id))
            .collect();
        if !others.is_empty() {
            let others: Vec<Uuid> = others.into_iter().collect();
            statuses.extend(self.keys.key_statuses(organization_id, &others).await?);
        }
        let all_keys: Vec<Uuid> = statuses.keys().copied().collect();
        let revoked = self.jobs.revoked_versions(&all_keys).await?;
        let statuses = Statuses {
            keys: statuses,
            versions: revoked
                .iter()
                .map(|v| ((v.key_id, v.version.clone()), v.status))
                .collect(),
        };
        let project_ids: Vec<Uuid> = keys
            .iter()
            .map(|k| k.project_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names: HashMap<Uuid, String> = self
            .projects
            .project_names_of(organization_id, &project_ids)
            .await?
            .into_iter()
            .collect();
        let page_ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
        let mut changes = self.key_changes(organization_id, &page_ids).await?;
        Ok(keys
            .into_iter()
            .map(|key| KeyStatusEntry {
                change: changes
                    .iter()
                    .position(|(id, _)| *id == key.id)
                    .map(|i| changes.swap_remove(i).1),
                project_name: names.get(&key.project_id).cloned().unwrap_or_default(),
                clusters: protected_by(&key, &clusters, &statuses),
                revoked_versions: revoked
                    .iter()
                    .filter(|v| v.key_id == key.id)
                    .map(|v| (v.version.clone(), v.status))
                    .collect(),
                key,
            })
            .collect())
    }
}

/// The clusters among `clusters` that `key` protects, with what the statuses of all their
/// keys mean for each.
fn protected_by(
    key: &EncryptionKey,
    clusters: &[Cluster],
    statuses: &Statuses,
) -> Vec<ProtectedCluster> {
    clusters
        .iter()
        .filter_map(|cluster| {
            let region = cluster.regions.iter().find(|r| r.key_id == Some(key.id))?;
            let all: Vec<KeyStatus> = cluster
                .regions
                .iter()
                .filter_map(|r| statuses.of(r))
                .collect();
            Some(ProtectedCluster {
                id: cluster.id,
                name: cluster.name.as_str().to_owned(),
                state: cluster.state,
                region: region.region.to_string(),
                effect: effect(cluster.state, &all),
            })
        })
        .collect()
}

impl Keys {
    /// The clusters a key protects and what its status means for each (the key's page; anyone
    /// who can see the key).
    pub async fn key_clusters(
        &self,
        caller: &Caller,
        key: &EncryptionKey,
    ) -> Result<Vec<ProtectedCluster>, DomainError> {
        let Some(parts) = self.clusters.get() else {
            return Ok(Vec::new());
        };
        let clusters = parts
            .clusters_using_key(caller.organization_id, key.id)
            .await?;
        let mut keys: HashMap<Uuid, KeyStatus> = HashMap::from([(key.id, key.status)]);
        let others: Vec<Uuid> = clusters
            .iter()
            .flat_map(|c| c.regions.iter().filter_map(|r| r.key_id))
            .filter(|id| *id != key.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !others.is_empty() {
            keys.extend(
                self.keys
                    .key_statuses(caller.organization_id, &others)
                    .await?,
            );
        }
        let all_keys: Vec<Uuid> = keys.keys().copied().collect();
        let statuses = Statuses {
            versions: self
                .jobs
                .revoked_versions(&all_keys)
                .await?
                .into_iter()
                .map(|v| ((v.key_id, v.version), v.status))
                .collect(),
            keys,
        };
        let protected = protected_by(key, &clusters, &statuses);
        Ok(protected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClusterState as S;
    use KeyStatus as K;

    #[test]
    fn what_a_key_status_means_for_a_cluster() {
        assert_eq!(effect(S::Available, &[K::Active]), ClusterEffect::Ok);
        assert_eq!(
            effect(S::Available, &[K::Active, K::AccessDenied]),
            ClusterEffect::WillNotResume
        );
        assert_eq!(
            effect(S::Paused, &[K::Disabled]),
            ClusterEffect::WillNotResume
        );
        assert_eq!(
            effect(S::Available, &[K::Unreachable]),
            ClusterEffect::KmsUnreachable
        );
        assert_eq!(
            effect(S::Inaccessible, &[K::Disabled]),
            ClusterEffect::WaitingForKey
        );
        assert_eq!(
            effect(S::Inaccessible, &[K::Active, K::Active]),
            ClusterEffect::CanBeResumed
        );
    }
}
