//! The Key Status page: every key of the organization with its project, status, last check,
//! last error and rotation, the clusters it protects and what its status means for them;
//! counts per status at the top. For owners and auditors.

use std::collections::HashMap;

use uuid::Uuid;

use super::{EncryptionKey, KeyStatus, Provider};
use crate::domain::clusters::{Cluster, ClusterState};
use crate::domain::identity::Caller;
use crate::domain::page::{Page, PageRequest};
use crate::domain::{Console, DomainError};

/// Every status, in the order the page counts them.
pub const STATUSES: [KeyStatus; 6] = [
    KeyStatus::Active,
    KeyStatus::AccessDenied,
    KeyStatus::Disabled,
    KeyStatus::PendingDeletion,
    KeyStatus::NotFound,
    KeyStatus::Unreachable,
];

#[derive(Clone, Debug, Default)]
pub struct KeyStatusFilter {
    pub status: Option<KeyStatus>,
    pub provider: Option<Provider>,
    pub project_id: Option<Uuid>,
}

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

pub fn is_revoked(status: KeyStatus) -> bool {
    !matches!(status, KeyStatus::Active | KeyStatus::Unreachable)
}

/// What the statuses of a cluster's keys mean for it.
pub fn effect(state: ClusterState, statuses: &[KeyStatus]) -> ClusterEffect {
    let revoked = statuses.iter().any(|s| is_revoked(*s));
    let unreachable = statuses.contains(&KeyStatus::Unreachable);
    match state {
        ClusterState::Inaccessible if revoked || unreachable => ClusterEffect::WaitingForKey,
        ClusterState::Inaccessible => ClusterEffect::CanBeResumed,
        ClusterState::Deleting => ClusterEffect::Ok,
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
}

pub struct KeyStatusReport {
    /// Per status, over every key the provider and project filters keep.
    pub counts: Vec<(KeyStatus, usize)>,
    pub page: Page<KeyStatusEntry>,
}

impl Console {
    pub async fn key_status_report(
        &self,
        caller: &Caller,
        filter: &KeyStatusFilter,
        page: PageRequest,
    ) -> Result<KeyStatusReport, DomainError> {
        caller.require_auditor_view("see the Key Status page")?;
        let all = self.store.organization_keys(caller.organization_id).await?;
        // Keys the filters leave out still decide what their clusters can do.
        let all_statuses: HashMap<Uuid, KeyStatus> = all.iter().map(|k| (k.id, k.status)).collect();
        let keys: Vec<EncryptionKey> = all
            .into_iter()
            .filter(|k| filter.provider.is_none_or(|p| k.key_ref.provider() == p))
            .filter(|k| filter.project_id.is_none_or(|p| k.project_id == p))
            .collect();
        let counts = STATUSES
            .iter()
            .map(|s| (*s, keys.iter().filter(|k| k.status == *s).count()))
            .collect();
        let mut selected: Vec<EncryptionKey> = keys
            .into_iter()
            .filter(|k| filter.status.is_none_or(|s| k.status == s))
            .filter(|k| page.after.is_none_or(|after| k.id > after))
            .collect();
        selected.truncate(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX));
        let clusters: Vec<Cluster> = match &self.clusters {
            Some(parts) => {
                parts
                    .store
                    .clusters_with_keys(caller.organization_id)
                    .await?
            }
            None => Vec::new(),
        };
        let names: HashMap<Uuid, String> = self.project_names(caller).await?.into_iter().collect();
        let entries = selected
            .into_iter()
            .map(|key| {
                let protected = clusters
                    .iter()
                    .filter_map(|cluster| {
                        let region = cluster.regions.iter().find(|r| r.key_id == Some(key.id))?;
                        let statuses: Vec<KeyStatus> = cluster
                            .regions
                            .iter()
                            .filter_map(|r| r.key_id.and_then(|id| all_statuses.get(&id).copied()))
                            .collect();
                        Some(ProtectedCluster {
                            id: cluster.id,
                            name: cluster.name.as_str().to_owned(),
                            state: cluster.state,
                            region: region.region.to_string(),
                            effect: effect(cluster.state, &statuses),
                        })
                    })
                    .collect();
                KeyStatusEntry {
                    project_name: names.get(&key.project_id).cloned().unwrap_or_default(),
                    key,
                    clusters: protected,
                }
            })
            .collect();
        Ok(KeyStatusReport {
            counts,
            page: page.finish(entries, |e| e.key.id),
        })
    }
}

impl Console {
    /// The clusters a key protects and what its status means for each (the key's page; anyone
    /// who can see the key).
    pub async fn key_clusters(
        &self,
        caller: &Caller,
        key: &EncryptionKey,
    ) -> Result<Vec<ProtectedCluster>, DomainError> {
        let Some(parts) = &self.clusters else {
            return Ok(Vec::new());
        };
        let clusters = parts
            .store
            .clusters_using_key(caller.organization_id, key.id)
            .await?;
        let mut statuses: HashMap<Uuid, KeyStatus> = HashMap::from([(key.id, key.status)]);
        let mut protected = Vec::new();
        for cluster in clusters {
            let mut mine = Vec::new();
            for region in &cluster.regions {
                let Some(id) = region.key_id else { continue };
                let status = match statuses.get(&id) {
                    Some(status) => *status,
                    None => {
                        let status = self
                            .store
                            .key(caller.organization_id, id)
                            .await?
                            .map_or(KeyStatus::NotFound, |k| k.status);
                        statuses.insert(id, status);
                        status
                    }
                };
                mine.push(status);
            }
            let region = cluster
                .regions
                .iter()
                .find(|r| r.key_id == Some(key.id))
                .map(|r| r.region.to_string())
                .unwrap_or_default();
            protected.push(ProtectedCluster {
                id: cluster.id,
                name: cluster.name.as_str().to_owned(),
                state: cluster.state,
                region,
                effect: effect(cluster.state, &mine),
            });
        }
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
