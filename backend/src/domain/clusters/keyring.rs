//! The plaintext data keys of the clusters this process serves, in memory only. A key is
//! put here when a cluster is created or resumed (or when this process first serves an
//! available cluster that another instance resumed), and dropped, zeroized, when the
//! cluster is paused, made inaccessible or deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::domain::keys::region::AwsRegion;
use crate::domain::kms::PlaintextKey;

/// A cluster's data keys, by region, in the cluster's region order.
pub struct ClusterKeys(pub Vec<(AwsRegion, PlaintextKey)>);

impl ClusterKeys {
    pub fn get(&self, region: &AwsRegion) -> Option<&PlaintextKey> {
        self.0.iter().find(|(r, _)| r == region).map(|(_, k)| k)
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
        if let Ok(mut clusters) = self.clusters.lock() {
            clusters.remove(&cluster);
        }
    }

    pub fn holds(&self, cluster: Uuid) -> bool {
        self.get(cluster).is_some()
    }
}
