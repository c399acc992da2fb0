//! A cluster's data: objects written as they stream in, sealed once per region under that
//! region's data key (R8, R11), and read back as they stream out, each segment released only
//! once it authenticated. No KMS call per object: the data keys are in memory.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use uuid::Uuid;

use super::keyring::ClusterKeys;
use super::lifecycle::wrong_state;
use super::service::Clusters;
use super::{Cluster, ObjectName, StoredObject};
use crate::crypto::sealed_object::{HEADER_LEN, ObjectId, Opener, SealError, Sealer};
use crate::domain::DomainError;
use crate::domain::blobs::{BlobError, BlobStore, BlobWriter, ByteStream};
use crate::domain::identity::Caller;
use crate::domain::keys::region::Region;
use crate::domain::kms::PlaintextKey;
use crate::domain::page::{Page, PageRequest};
use crate::domain::ports::ObjectWrite;

pub use crate::domain::error::BodyError;

/// A body as it arrives (actix's payload is not `Send`, and need not be).
pub type ObjectBody<'a> = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + 'a>>;

/// An object being read: its facts, and its plaintext as it authenticates.
pub struct ObjectRead {
    pub object: StoredObject,
    pub body: BoxStream<'static, Result<Bytes, DomainError>>,
}

pub(super) fn data_key(key: &PlaintextKey) -> Result<&[u8; 32], DomainError> {
    key.expose()
        .try_into()
        .map_err(|_| DomainError::Integrity("a data key is not 32 bytes".into()))
}

pub(super) fn storage_error(err: BlobError) -> DomainError {
    match err {
        BlobError::NotFound => DomainError::Integrity("a stored object is missing".into()),
        BlobError::Unavailable(why) => DomainError::Storage(why),
    }
}

fn integrity(err: SealError) -> DomainError {
    DomainError::Integrity(err.to_string())
}

/// What a stored copy is bound to besides its cluster: the object's name and the version,
/// so a copy moved to another name, or an older version put back in place of the current
/// one, does not open.
pub(super) fn bound_name(version: Uuid, name: &str) -> String {
    format!("{version}:{name}")
}

fn stopped_serving() -> DomainError {
    DomainError::Conflict {
        rule: crate::domain::error::Rule::ClusterState,
        field: None,
        detail: "The cluster stopped serving data (paused, made inaccessible or deleted) while \
                 this ran; nothing more was read or written."
            .into(),
    }
}

/// One sealed copy being written.
pub(super) struct SealedWriter {
    sealer: Sealer,
    writer: Box<dyn BlobWriter>,
}

impl SealedWriter {
    pub(super) async fn start(
        blobs: &dyn BlobStore,
        blob: &str,
        key: &PlaintextKey,
        id: ObjectId<'_>,
    ) -> Result<Self, DomainError> {
        let mut writer = blobs.writer(blob).await.map_err(storage_error)?;
        let (sealer, header) = Sealer::new(data_key(key)?, id);
        if let Err(err) = writer.write(Bytes::from(header)).await {
            writer.abort().await;
            return Err(storage_error(err));
        }
        Ok(Self { sealer, writer })
    }

    pub(super) async fn push(&mut self, plaintext: &[u8]) -> Result<(), DomainError> {
        let sealed = self.sealer.push(plaintext).map_err(integrity)?;
        if !sealed.is_empty() {
            self.writer
                .write(Bytes::from(sealed))
                .await
                .map_err(storage_error)?;
        }
        Ok(())
    }

    pub(super) async fn finish(self) -> Result<(), DomainError> {
        let Self { sealer, mut writer } = self;
        let last = match sealer.finish() {
            Ok(last) => last,
            Err(err) => {
                writer.abort().await;
                return Err(integrity(err));
            }
        };
        if let Err(err) = writer.write(Bytes::from(last)).await {
            writer.abort().await;
            return Err(storage_error(err));
        }
        writer.finish().await.map_err(storage_error)
    }

    pub(super) async fn abort(self) {
        self.writer.abort().await;
    }
}

/// Writes `source` sealed into every (blob, key) target at once; all or none. Returns the
/// plaintext size.
pub(super) async fn write_sealed<S, E>(
    blobs: &dyn BlobStore,
    targets: &[(String, &PlaintextKey)],
    id_cluster: Uuid,
    name: &str,
    mut source: S,
    limit: Option<u64>,
    guard: Option<&ClusterKeys>,
) -> Result<u64, DomainError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<DomainError>,
{
    let mut writers = Vec::new();
    for (blob, key) in targets {
        let id = ObjectId {
            cluster: id_cluster,
            name,
        };
        match SealedWriter::start(blobs, blob, key, id).await {
            Ok(writer) => writers.push(writer),
            Err(err) => {
                abort_all(writers).await;
                return Err(err);
            }
        }
    }
    let mut size: u64 = 0;
    while let Some(chunk) = source.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                abort_all(writers).await;
                return Err(err.into());
            }
        };
        size += chunk.len() as u64;
        if limit.is_some_and(|limit| size > limit) {
            abort_all(writers).await;
            return Err(DomainError::Body(BodyError::TooLarge));
        }
        if guard.is_some_and(ClusterKeys::dropped) {
            abort_all(writers).await;
            return Err(stopped_serving());
        }
        for i in 0..writers.len() {
            if let Err(err) = writers[i].push(&chunk).await {
                abort_all(writers).await;
                return Err(err);
            }
        }
    }
    let mut failed = None;
    for writer in writers {
        if failed.is_some() {
            writer.abort().await;
        } else if let Err(err) = writer.finish().await {
            failed = Some(err);
        }
    }
    match failed {
        Some(err) => {
            for (blob, _) in targets {
                let _ = blobs.delete(blob).await;
            }
            Err(err)
        }
        None => Ok(size),
    }
}

async fn abort_all(writers: Vec<SealedWriter>) {
    for writer in writers {
        writer.abort().await;
    }
}

impl From<BodyError> for DomainError {
    fn from(err: BodyError) -> Self {
        DomainError::Body(err)
    }
}

struct Opening {
    blobs: ByteStream,
    key: Arc<ClusterKeys>,
    region: Region,
    owner: Uuid,
    name: String,
    header: Vec<u8>,
    opener: Option<Opener>,
    done: bool,
}

/// The plaintext of a sealed blob as it streams in: each segment is released once it
/// authenticated, the end only once the last segment proved it is the last.
pub(super) fn open_sealed(
    blobs: ByteStream,
    key: Arc<ClusterKeys>,
    region: Region,
    owner: Uuid,
    name: String,
) -> BoxStream<'static, Result<Bytes, DomainError>> {
    let state = Opening {
        blobs,
        key,
        region,
        owner,
        name,
        header: Vec::with_capacity(HEADER_LEN),
        opener: None,
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let fail = |mut st: Opening, err: DomainError| {
            st.done = true;
            Some((Err(err), st))
        };
        loop {
            match st.blobs.next().await {
                Some(Ok(_)) if st.key.dropped() => return fail(st, stopped_serving()),
                Some(Ok(chunk)) => {
                    let mut rest: &[u8] = &chunk;
                    if st.opener.is_none() {
                        let take = (HEADER_LEN - st.header.len()).min(rest.len());
                        st.header.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if st.header.len() < HEADER_LEN {
                            continue;
                        }
                        let Some(key) = st.key.get(&st.region) else {
                            return fail(
                                st,
                                DomainError::Integrity("no data key for the region".into()),
                            );
                        };
                        let key = match data_key(key) {
                            Ok(key) => key,
                            Err(err) => return fail(st, err),
                        };
                        let id = ObjectId {
                            cluster: st.owner,
                            name: &st.name,
                        };
                        match Opener::new(key, id, &st.header) {
                            Ok(opener) => st.opener = Some(opener),
                            Err(err) => return fail(st, integrity(err)),
                        }
                    }
                    if rest.is_empty() {
                        continue;
                    }
                    let Some(opener) = st.opener.as_mut() else {
                        continue;
                    };
                    match opener.push(rest) {
                        Ok(plain) if plain.is_empty() => continue,
                        Ok(plain) => return Some((Ok(Bytes::copy_from_slice(&plain)), st)),
                        Err(err) => return fail(st, integrity(err)),
                    }
                }
                Some(Err(err)) => return fail(st, storage_error(err)),
                None => {
                    st.done = true;
                    return match st.opener.take() {
                        None => Some((Err(integrity(SealError::Format)), st)),
                        Some(opener) => match opener.finish() {
                            Ok(plain) if plain.is_empty() => None,
                            Ok(plain) => Some((Ok(Bytes::copy_from_slice(&plain)), st)),
                            Err(err) => Some((Err(integrity(err)), st)),
                        },
                    };
                }
            }
        }
    })
    .boxed()
}

/// Reads a small sealed blob whole (manifests).
pub(super) async fn read_sealed(
    blobs: &dyn BlobStore,
    blob: &str,
    key: Arc<ClusterKeys>,
    region: Region,
    owner: Uuid,
    name: &str,
) -> Result<Vec<u8>, DomainError> {
    let source = blobs.read(blob).await.map_err(storage_error)?;
    let mut plain = open_sealed(source, key, region, owner, name.to_owned());
    let mut out = Vec::new();
    while let Some(chunk) = plain.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// The largest object the console stores (5 GiB).
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

impl Clusters {
    pub async fn objects(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<StoredObject>, DomainError> {
        let cluster = self.cluster(caller, cluster_id).await?;
        let items = self.parts.store.objects(cluster.id, page).await?;
        Ok(page.finish(items, |o| o.id))
    }

    /// Stores an object (owners only): sealed in every region of the cluster, recorded only
    /// once every copy is complete, replacing the previous version.
    pub async fn put_object(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
        name: &str,
        body: ObjectBody<'_>,
    ) -> Result<StoredObject, DomainError> {
        let cluster = self.cluster(caller, cluster_id).await?;
        caller.require_owner("write cluster data")?;
        let name = ObjectName::parse(name).map_err(|e| DomainError::Invalid(vec![e]))?;
        let keys = self.serving_keys(&cluster).await?;
        let parts = &self.parts;
        // Admitted only within the memory cap: each region's copy holds its buffers for as
        // long as the upload lasts, and a slow client can make that hours.
        let Some(_memory) = parts
            .upload_memory
            .reserve(parts.blobs.writer_memory() * cluster.regions.len())
        else {
            return Err(DomainError::Overloaded {
                detail: "The console holds as many uploads as its memory allows \
                         (CMEK_UPLOAD_MEMORY_MIB); try again in a few seconds."
                    .into(),
                retry_after: std::time::Duration::from_secs(5),
            });
        };
        let version = Uuid::now_v7();
        let targets = region_targets(&cluster, &keys, version)?;
        let size = write_sealed(
            parts.blobs.as_ref(),
            &targets,
            cluster.id,
            &bound_name(version, name.as_str()),
            body,
            Some(MAX_OBJECT_BYTES),
            Some(&keys),
        )
        .await?;
        let object = StoredObject {
            id: Uuid::now_v7(),
            name,
            version,
            size_bytes: size,
            updated_at: self.clock.now(),
        };
        match parts.store.put_object(cluster.id, &object).await {
            Ok(ObjectWrite::Recorded { replaced }) => {
                if let Some(old) = replaced {
                    self.delete_versions(&cluster, &[old]).await;
                }
                Ok(parts
                    .store
                    .object(cluster.id, &object.name)
                    .await?
                    .unwrap_or(object))
            }
            Ok(ObjectWrite::ClusterNotAvailable) => {
                self.delete_versions(&cluster, &[version]).await;
                Err(wrong_state(
                    &self.cluster(caller, cluster_id).await?,
                    "it stopped serving data while the object was written",
                ))
            }
            Err(err) => {
                self.delete_versions(&cluster, &[version]).await;
                Err(err.into())
            }
        }
    }

    /// Removes every region's copy of these versions; a copy that cannot be removed now is
    /// logged (it is unreachable: no index row names it).
    pub(super) async fn delete_versions(&self, cluster: &Cluster, versions: &[Uuid]) {
        let parts = &self.parts;
        for version in versions {
            for region in &cluster.regions {
                if let Err(err) = parts
                    .blobs
                    .delete(&cluster.blob(&region.region, *version))
                    .await
                {
                    tracing::warn!(error = %err, cluster = %cluster.id, "could not delete a replaced object version");
                }
            }
        }
    }

    /// Reads an object: its plaintext streams out as each segment authenticates. A copy
    /// that fails its integrity check is refused, never returned as garbage.
    pub async fn get_object(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
        name: &str,
    ) -> Result<ObjectRead, DomainError> {
        let cluster = self.cluster(caller, cluster_id).await?;
        let name = ObjectName::parse(name).map_err(|e| DomainError::Invalid(vec![e]))?;
        let keys = self.serving_keys(&cluster).await?;
        let parts = &self.parts;
        let primary = cluster
            .primary()
            .ok_or_else(|| DomainError::Integrity("the cluster has no region".into()))?;
        // A copy replaced between reading the index and opening it: read the index again.
        let mut attempts = 0;
        let (object, source) = loop {
            attempts += 1;
            let object = parts
                .store
                .object(cluster.id, &name)
                .await?
                .ok_or(DomainError::NotFound("object"))?;
            match parts
                .blobs
                .read(&cluster.blob(&primary.region, object.version))
                .await
            {
                Ok(source) => break (object, source),
                Err(BlobError::NotFound) if attempts < 3 => continue,
                Err(err) => return Err(storage_error(err)),
            }
        };
        let body = open_sealed(
            source,
            keys,
            primary.region.clone(),
            cluster.id,
            bound_name(object.version, name.as_str()),
        );
        Ok(ObjectRead { object, body })
    }

    pub async fn delete_object(
        &self,
        caller: &Caller,
        cluster_id: Uuid,
        name: &str,
    ) -> Result<(), DomainError> {
        let cluster = self.cluster(caller, cluster_id).await?;
        caller.require_owner("write cluster data")?;
        let name = ObjectName::parse(name).map_err(|e| DomainError::Invalid(vec![e]))?;
        self.serving_keys(&cluster).await?;
        let parts = &self.parts;
        match parts.store.delete_object(cluster.id, &name).await? {
            Some(ObjectWrite::Recorded { replaced }) => {
                self.delete_versions(&cluster, replaced.as_slice()).await;
                Ok(())
            }
            Some(ObjectWrite::ClusterNotAvailable) => Err(wrong_state(
                &self.cluster(caller, cluster_id).await?,
                "its data can be changed only while it is available",
            )),
            None => Err(DomainError::NotFound("object")),
        }
    }
}

/// Where each region's copy of a version goes, with the key that seals it.
pub(super) fn region_targets<'k>(
    cluster: &Cluster,
    keys: &'k ClusterKeys,
    version: Uuid,
) -> Result<Vec<(String, &'k PlaintextKey)>, DomainError> {
    cluster
        .regions
        .iter()
        .map(|r| {
            keys.get(&r.region)
                .map(|k| (cluster.blob(&r.region, version), k))
                .ok_or_else(|| DomainError::Integrity(format!("no data key for {}", r.region)))
        })
        .collect()
}
