//! The plaintext data keys of the clusters this process serves, in memory only. A key is
//! put here when a cluster is created or resumed (or when this process first serves an
//! available cluster that another instance resumed), and dropped, zeroized, when the
//! cluster is paused, made inaccessible or deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::domain::keys::region::Region;
use crate::domain::kms::PlaintextKey;

/// A cluster's data keys, by region, in the cluster's region order. Once dropped from the
/// ring, work still holding them (a download, an upload, a backup) stops at its next segment.
pub struct ClusterKeys {
    keys: Vec<(Region, PlaintextKey)>,
    dropped: AtomicBool,
}

impl ClusterKeys {
    pub fn new(keys: Vec<(Region, PlaintextKey)>) -> Self {
        Self {
            keys,
            dropped: AtomicBool::new(false),
        }
    }

    pub fn get(&self, region: &Region) -> Option<&PlaintextKey> {
        self.keys.iter().find(|(r, _)| r == region).map(|(_, k)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Region, PlaintextKey)> {
        self.keys.iter()
    }

    /// Whether the cluster stopped being served since these keys were handed out.
    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
pub struct DataKeyRing {
    clusters: Mutex<HashMap<Uuid, Arc<ClusterKeys>>>,
}

impl DataKeyRing {
    pub fn get(&self, cluster: Uuid) -> Option<Arc<ClusterKeys>> {
        self.clusters.lock().ok()?.get(&cluster).cloned()
    }

    pub fn put(&self, cluster: Uuid, keys: ClusterKeys) -> Arc<ClusterKeys> {
        let keys = Arc::new(keys);
        if let Ok(mut clusters) = self.clusters.lock() {
            clusters.insert(cluster, keys.clone());
        }
        keys
    }

    /// Drops the cluster's keys; requests still using them finish, then the memory is
    /// zeroized with the last reference.
    pub fn drop_keys(&self, cluster: Uuid) {
        let removed = self
            .clusters
            .lock()
            .ok()
            .and_then(|mut clusters| clusters.remove(&cluster));
        if let Some(keys) = removed {
            keys.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// The clusters whose keys this process holds, with the keys as they are now.
    pub fn held(&self) -> Vec<(Uuid, Arc<ClusterKeys>)> {
        self.clusters
            .lock()
            .map(|clusters| clusters.iter().map(|(id, k)| (*id, k.clone())).collect())
            .unwrap_or_default()
    }

    /// Drops the cluster's keys only if they are still `these` (keys put since, by a resume
    /// that finished meanwhile, stay).
    pub fn drop_if_unchanged(&self, cluster: Uuid, these: &Arc<ClusterKeys>) {
        if let Ok(mut clusters) = self.clusters.lock()
            && clusters
                .get(&cluster)
                .is_some_and(|k| Arc::ptr_eq(k, these))
        {
            clusters.remove(&cluster);
            these.dropped.store(true, Ordering::SeqCst);
        }
    }

    pub fn holds(&self, cluster: Uuid) -> bool {
        self.get(cluster).is_some()
    }
}
