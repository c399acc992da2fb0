//! The cluster driver of this console: where a cloud driver would hand each region's data
//! key to that region's volumes (EBS with a KMS grant, Azure disks with a disk encryption
//! set), this one writes a small sealed manifest per region, and on every resume opens it:
//! a data key that unwrapped but does not open its region's data is refused there.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream;

use super::keyring::ClusterKeys;
use super::objects::{read_sealed, write_sealed};
use super::{Cluster, ClusterDriver};
use crate::domain::DomainError;
use crate::domain::blobs::BlobStore;
use crate::domain::keys::region::Region;
use crate::domain::kms::PlaintextKey;

pub struct ManifestDriver {
    blobs: Arc<dyn BlobStore>,
}

impl ManifestDriver {
    pub fn new(blobs: Arc<dyn BlobStore>) -> Self {
        Self { blobs }
    }
}

/// Bound into the manifest's seal; no object's name can be the same (they hold no control
/// character).
fn manifest_name(region: &Region) -> String {
    format!("\u{0}manifest/{region}")
}

fn manifest(cluster: &Cluster, region: &Region) -> Vec<u8> {
    serde_json::json!({
        "cluster_id": cluster.id,
        "project_id": cluster.project_id,
        "region": region.as_str(),
    })
    .to_string()
    .into_bytes()
}

#[async_trait]
impl ClusterDriver for ManifestDriver {
    async fn provision(
        &self,
        cluster: &Cluster,
        keys: &[(Region, &PlaintextKey)],
    ) -> Result<(), DomainError> {
        for (region, key) in keys {
            let body = stream::iter([Ok::<_, DomainError>(bytes::Bytes::from(manifest(
                cluster, region,
            )))]);
            write_sealed(
                self.blobs.as_ref(),
                &[(cluster.manifest(region), *key)],
                cluster.id,
                &manifest_name(region),
                Box::pin(body),
                None,
                None,
            )
            .await?;
        }
        Ok(())
    }

    async fn attach(
        &self,
        cluster: &Cluster,
        keys: &[(Region, &PlaintextKey)],
    ) -> Result<(), DomainError> {
        for (region, key) in keys {
            let one = Arc::new(ClusterKeys::new(vec![(
                region.clone(),
                PlaintextKey::new(key.expose().to_vec()),
            )]));
            let opened = read_sealed(
                self.blobs.as_ref(),
                &cluster.manifest(region),
                one,
                region.clone(),
                cluster.id,
                &manifest_name(region),
            )
            .await
            .map_err(|err| match err {
                DomainError::Integrity(_) => DomainError::Integrity(format!(
                    "the data key of {region} does not open that region's data"
                )),
                other => other,
            })?;
            if opened != manifest(cluster, region) {
                return Err(DomainError::Integrity(format!(
                    "the manifest of {region} belongs to another cluster"
                )));
            }
        }
        Ok(())
    }

    async fn destroy(&self, cluster: &Cluster) -> Result<(), DomainError> {
        self.blobs
            .delete_prefix(&cluster.prefix())
            .await
            .map_err(super::objects::storage_error)
    }
}
