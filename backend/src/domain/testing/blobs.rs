//! The in-memory BlobStore: stored bytes by key, each with the time it was written, and
//! unfinished writes that a test can leave behind as a killed process would.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::*;
use crate::domain::blobs::{BlobError, BlobMeta, BlobStore, BlobWriter, ByteStream};
use crate::domain::clock::Clock;

type Stored = BTreeMap<String, (Bytes, DateTime<Utc>)>;

pub struct MemoryBlobs {
    stored: Arc<Mutex<Stored>>,
    /// Unfinished writes (key, begun at), as `abort_stale_uploads` would find them.
    unfinished: Mutex<Vec<(String, DateTime<Utc>)>>,
    /// The storage's own clock (the tests move it like the console's).
    pub clock: Arc<ManualClock>,
}

impl MemoryBlobs {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            stored: Arc::default(),
            unfinished: Mutex::default(),
            clock,
        }
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.stored).keys().cloned().collect()
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        lock(&self.stored).get(key).map(|(b, _)| b.clone())
    }

    /// Stores `bytes` under `key` as if written at `at`, with no index row naming them.
    pub fn leave(&self, key: &str, bytes: &[u8], at: DateTime<Utc>) {
        lock(&self.stored).insert(key.to_owned(), (Bytes::copy_from_slice(bytes), at));
    }

    /// An unfinished write begun at `at`.
    pub fn leave_unfinished(&self, key: &str, at: DateTime<Utc>) {
        lock(&self.unfinished).push((key.to_owned(), at));
    }

    pub fn unfinished(&self) -> usize {
        lock(&self.unfinished).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Writer {
    key: String,
    bytes: Vec<u8>,
    stored: Arc<Mutex<Stored>>,
    clock: Arc<ManualClock>,
}

#[async_trait]
impl BlobWriter for Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), BlobError> {
        let at = self.clock.now();
        lock(&self.stored).insert(self.key, (Bytes::from(self.bytes), at));
        Ok(())
    }

    async fn abort(self: Box<Self>) {}
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(Writer {
            key: key.to_owned(),
            bytes: Vec::new(),
            stored: self.stored.clone(),
            clock: self.clock.clone(),
        }))
    }

    async fn read(&self, key: &str) -> Result<ByteStream, BlobError> {
        let bytes = self.get(key).ok_or(BlobError::NotFound)?;
        Ok(stream::iter([Ok(bytes)]).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        lock(&self.stored).remove(key);
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        lock(&self.stored).retain(|k, _| !k.starts_with(prefix));
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<BlobMeta, BlobError>> {
        let found: Vec<Result<BlobMeta, BlobError>> = lock(&self.stored)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, at))| {
                Ok(BlobMeta {
                    key: k.clone(),
                    modified: *at,
                })
            })
            .collect();
        stream::iter(found).boxed()
    }

    async fn abort_stale_uploads(&self, grace: std::time::Duration) -> Result<u64, BlobError> {
        let before = self.clock.now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut unfinished = lock(&self.unfinished);
        let was = unfinished.len();
        unfinished.retain(|(_, at)| *at >= before);
        Ok((was - unfinished.len()) as u64)
    }
}
