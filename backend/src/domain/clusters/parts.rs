//! Everything the cluster use cases run on, gathered once at start (`startup.rs`). Apart from
//! the types in `mod.rs`, so that the store's port (which speaks of clusters) and the
//! clusters' types do not import each other.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::domain::blobs::BlobStore;
use crate::domain::clusters::{
    ClusterDriver, DataKeyRing, PlatformKey, RotationStatuses, UploadMemory,
};
use crate::domain::ports::ClusterStore;

/// What clusters need besides the store and the KMS: where their bytes go, the driver, the
/// platform key for projects without CMEK, and this process's plaintext data keys.
#[derive(Clone)]
pub struct ClusterParts {
    pub store: Arc<dyn ClusterStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub driver: Arc<dyn ClusterDriver>,
    pub platform: Arc<dyn PlatformKey>,
    pub ring: Arc<DataKeyRing>,
    /// Data-key calls to a KMS (generate and unwrap) made for clusters and backups: none
    /// per object operation, one per cluster-region per resume.
    pub kms_calls: Arc<AtomicU64>,
    /// Each key's rotation status as last asked, and when (the cluster page shows it).
    pub rotation: RotationStatuses,
    /// The memory uploads may hold at once, in MiB (`CMEK_UPLOAD_MEMORY_MIB`): an upload
    /// takes what its copies' buffers need before it starts, and is refused with 503 when
    /// that is not free.
    pub upload_memory: UploadMemory,
}
