//! What the domain needs from object storage: write an object as it streams, read one as a
//! stream, delete. The `object_store` adapter in `storage/` implements it (local files or
//! S3); what is stored is always sealed (`crypto::sealed_object`), never plaintext.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;

pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// Whose copy a stored key is (the storage sweeper asks the index about each owner's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyOwner {
    Cluster(uuid::Uuid),
    Backup(uuid::Uuid),
}

/// A stored copy as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    /// When the storage says it was written (S3: when its upload began).
    pub modified: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such object")]
    NotFound,
    /// The storage could not be reached or refused the request; the cause is for the log.
    #[error("object storage: {0}")]
    Unavailable(String),
}

/// An object being written; nothing is visible under its key until `finish` succeeds.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError>;
    async fn finish(self: Box<Self>) -> Result<(), BlobError>;
    /// Gives up, leaving nothing under the key.
    async fn abort(self: Box<Self>);
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError>;
    async fn read(&self, key: &str) -> Result<ByteStream, BlobError>;
    /// Deleting what does not exist is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError>;
    /// Every copy under `prefix`, as the storage lists them (finished writes only).
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<BlobMeta, BlobError>>;
    /// Removes what writes that never finished left behind (a killed process's multipart
    /// uploads, a local file's staging copy) untouched for longer than `grace`, judged by the
    /// storage's own clock (no index names such leftovers: age is all there is to go by, and
    /// it must be measured with the clock that dated them); how many.
    async fn abort_stale_uploads(&self, grace: std::time::Duration) -> Result<u64, BlobError>;
    /// How many bytes one writer may hold in memory at most (its buffers), so uploads can be
    /// admitted within a memory cap.
    fn writer_memory(&self) -> usize {
        0
    }
}
