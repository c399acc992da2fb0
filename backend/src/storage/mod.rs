//! Where cluster data and backups go: Apache Arrow's `object_store`, on local files under
//! the data directory by default, or S3 (`CMEK_STORAGE_URL=s3://bucket/prefix`) so that
//! several console instances share them. What arrives here is already sealed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetResultPayload, ObjectStore, ObjectStoreExt, RetryConfig,
    WriteMultipart,
};

use crate::domain::blobs::{BlobError, BlobMeta, BlobStore, BlobWriter, ByteStream};

mod s3_uploads;
use crate::settings::AwsSettings;

/// Parts of a multipart upload (S3's minimum is 5 MiB); at most two in flight, so one
/// upload holds about 15 MiB whatever its size.
const PART: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The directory of local files (where staging copies of unfinished writes are found).
    local_root: Option<std::path::PathBuf>,
    /// S3's unfinished multipart uploads under the console's prefix.
    s3_uploads: Option<s3_uploads::S3Uploads>,
    /// How the storage is named in logs and the README (`local:/path`, `s3://bucket/prefix`).
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("CMEK_STORAGE_URL must be s3://bucket[/prefix] or file:///absolute/path, not {0}")]
    Url(String),
    #[error("object storage: {0}")]
    Open(String),
}

fn unavailable(err: object_store::Error) -> BlobError {
    match err {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Unavailable(other.to_string()),
    }
}

impl ObjectStorage {
    /// Local files under `dir` (created 0700 by the caller).
    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Open(e.to_string()))?
            .with_automatic_cleanup(true)
            // A copy is on disk before its index row says it exists.
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            local_root: Some(dir.to_path_buf()),
            s3_uploads: None,
            description: format!("local files under {}", dir.display()),
        })
    }

    /// `s3://bucket/prefix` with the AWS settings the console uses for KMS (endpoint,
    /// credentials, region), bounded time-outs and a few retries.
    pub fn s3(url: &str, aws: &AwsSettings) -> Result<Self, StorageError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StorageError::Url(url.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Url(url.to_owned()));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(aws.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(3))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &aws.endpoint_url {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&aws.access_key_id, &aws.secret_access_key) {
            use secrecy::ExposeSecret;
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose_secret());
            if let Some(token) = &aws.session_token {
                builder = builder.with_token(token.expose_secret());
            }
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Open(e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::from(prefix),
            local_root: None,
            s3_uploads: Some(
                s3_uploads::S3Uploads::new(bucket, prefix, aws)
                    .map_err(|e| StorageError::Open(e.to_string()))?,
            ),
            description: format!("s3://{bucket}/{prefix}"),
        })
    }

    fn path(&self, key: &str) -> Path {
        // Keys are ours (ids and region codes joined by '/'), never a user's object name.
        self.prefix.parts().chain(Path::from(key).parts()).collect()
    }
}

/// Bytes of a local file read per blocking task.
const READ_CHUNK: u64 = 1024 * 1024;

fn file_stream(file: std::fs::File, range: std::ops::Range<u64>) -> ByteStream {
    let start = (file, range.start, range.end, false);
    futures_util::stream::try_unfold(start, |(mut file, at, end, positioned)| async move {
        if at >= end {
            return Ok(None);
        }
        let len = READ_CHUNK.min(end - at);
        let read = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            if !positioned {
                file.seek(SeekFrom::Start(at))?;
            }
            let mut chunk = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
            file.read_exact(&mut chunk)?;
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        let (file, chunk) = read.map_err(|e| BlobError::Unavailable(e.to_string()))?;
        Ok(Some((Bytes::from(chunk), (file, at + len, end, true))))
    })
    .boxed()
}

struct Upload {
    upload: WriteMultipart,
}

#[async_trait]
impl BlobWriter for Upload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        self.upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(unavailable)?;
        self.upload.put(bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), BlobError> {
        self.upload.finish().await.map(|_| ()).map_err(unavailable)
    }

    async fn abort(self: Box<Self>) {
        if let Err(err) = self.upload.abort().await {
            tracing::warn!(error = %err, "could not abort an upload");
        }
    }
}

#[async_trait]
impl BlobStore for ObjectStorage {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        let upload = self
            .store
            .put_multipart(&self.path(key))
            .await
            .map_err(unavailable)?;
        Ok(Box::new(Upload {
            upload: WriteMultipart::new_with_chunk_size(upload, PART),
        }))
    }

    /// The part being filled and the parts in flight.
    fn writer_memory(&self) -> usize {
        PART * (PARTS_IN_FLIGHT + 1)
    }

    async fn read(&self, key: &str) -> Result<ByteStream, BlobError> {
        let found = self.store.get(&self.path(key)).await.map_err(unavailable)?;
        Ok(match found.payload {
            // object_store reads local files 8 KiB per blocking task; 1 MiB reads are
            // several times faster.
            GetResultPayload::File(file, _) => file_stream(file, found.range),
            GetResultPayload::Stream(stream) => stream.map_err(unavailable).boxed(),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        let prefix = self.path(prefix.trim_end_matches('/'));
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            match meta {
                Ok(meta) => self.delete_location(&meta.location).await?,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(unavailable(err)),
            }
        }
        Ok(())
    }

    fn list(
        &self,
        prefix: &str,
    ) -> futures_util::stream::BoxStream<'static, Result<BlobMeta, BlobError>> {
        let root = self.prefix.clone();
        let prefix = self.path(prefix.trim_end_matches('/'));
        self.store
            .list(Some(&prefix))
            .filter_map(move |meta| {
                let found = match meta {
                    Ok(meta) => meta.location.prefix_match(&root).map(|parts| {
                        Ok(BlobMeta {
                            key: parts
                                .map(|p| p.as_ref().to_owned())
                                .collect::<Vec<_>>()
                                .join("/"),
                            modified: meta.last_modified,
                        })
                    }),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(err) => Some(Err(unavailable(err))),
                };
                std::future::ready(found)
            })
            .boxed()
    }

    async fn abort_stale_uploads(&self, grace: Duration) -> Result<u64, BlobError> {
        match &self.local_root {
            Some(root) => {
                let root = root.clone();
                let before = std::time::SystemTime::now()
                    .checked_sub(grace)
                    .unwrap_or(std::time::UNIX_EPOCH);
                tokio::task::spawn_blocking(move || remove_staging_files(&root, before))
                    .await
                    .map_err(|e| BlobError::Unavailable(e.to_string()))?
            }
            None => match &self.s3_uploads {
                Some(uploads) => {
                    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
                    uploads.abort_begun_before(chrono::Utc::now() - grace).await
                }
                None => Ok(0),
            },
        }
    }
}

/// object_store writes a local file as `<name>#<n>` and renames it when the write finishes;
/// a process killed meanwhile leaves the staging file, which no listing shows. Those last
/// written before `before` (the file system's clock) are removed.
fn remove_staging_files(
    root: &std::path::Path,
    before: std::time::SystemTime,
) -> Result<u64, BlobError> {
    let mut removed = 0;
    // Only where the console writes copies.
    let mut dirs = vec![root.join("clusters"), root.join("backups")];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(BlobError::Unavailable(err.to_string())),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            let staging = name
                .to_string_lossy()
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !staging {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified());
            if modified.is_ok_and(|at| at < before) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

impl ObjectStorage {
    async fn delete_location(&self, location: &Path) -> Result<(), BlobError> {
        match self.store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(unavailable(err)),
        }
    }
}
