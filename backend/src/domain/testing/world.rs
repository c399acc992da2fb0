//! A console with clusters on the in-memory fakes (store, cluster store, blobs, a KMS that
//! can be told to refuse), for the cluster rules' unit tests.

use bytes::Bytes;
use futures_util::StreamExt;

use super::blobs::MemoryBlobs;
use super::clusters::MemoryClusters;
use super::*;
use crate::domain::DomainError;
use crate::domain::clusters::parts::ClusterParts;
use crate::domain::clusters::{
    Cluster, ClusterRequestInput, DataKeyRing, ManifestDriver, PlatformKey, UploadMemory,
};
use crate::domain::identity::Caller;
use crate::domain::keys::KeyRequestInput;
use crate::domain::projects::NewProject;

/// A KMS whose data keys round-trip (the "wrapped" form is the plaintext behind a marker), or
/// that refuses every call with the error it was told.
#[derive(Default)]
pub struct SwitchKms {
    refusal: Mutex<Option<KmsError>>,
}

const WRAPPED: &[u8] = b"wrapped:";

impl SwitchKms {
    pub fn refuse(&self, error: Option<KmsError>) {
        *self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    fn refused(&self) -> Result<(), KmsError> {
        match self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn fresh() -> DataKey {
        let plaintext: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        DataKey {
            wrapped: [WRAPPED, &plaintext].concat(),
            plaintext: PlaintextKey::new(plaintext),
        }
    }

    fn open(wrapped: &[u8]) -> Result<PlaintextKey, KmsError> {
        wrapped
            .strip_prefix(WRAPPED)
            .map(|p| PlaintextKey::new(p.to_vec()))
            .ok_or_else(|| KmsError::Other {
                code: "InvalidCiphertextException".into(),
                message: "not a data key of this KMS".into(),
            })
    }
}

#[async_trait]
impl KeyProvider for SwitchKms {
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, KmsError> {
        self.refused()?;
        FakeKms::passing().describe(key).await
    }

    async fn generate_data_key(
        &self,
        _: &KeyRef,
        _: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.refused()?;
        Ok(Self::fresh())
    }

    async fn decrypt_data_key(
        &self,
        _: &KeyRef,
        wrapped: &[u8],
        _: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        self.refused()?;
        Self::open(wrapped)
    }

    async fn wrap_data_key(
        &self,
        _: &KeyRef,
        plaintext: &PlaintextKey,
        _: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.refused()?;
        Ok([WRAPPED, plaintext.expose()].concat())
    }

    async fn rotation_enabled(&self, _: &KeyRef) -> Result<Option<bool>, KmsError> {
        Ok(Some(true))
    }
}

impl PlatformKey for SwitchKms {
    fn generate_data_key(&self, _: &EncryptionContext) -> Result<DataKey, KmsError> {
        Ok(Self::fresh())
    }

    fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        _: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        Self::open(wrapped)
    }
}

/// Everything a cluster test touches.
pub struct World {
    pub console: Console,
    pub store: Arc<MemoryStore>,
    pub clusters: Arc<MemoryClusters>,
    pub blobs: Arc<MemoryBlobs>,
    pub clock: Arc<ManualClock>,
    pub kms: Arc<SwitchKms>,
    pub owner: Caller,
    /// A CMEK project with a local key in `us-east-1` and `eu-west-1`.
    pub project: Uuid,
}

impl World {
    pub async fn new() -> Self {
        let store = Arc::new(MemoryStore::default());
        let clock = Arc::new(ManualClock::starting_now());
        let kms = Arc::new(SwitchKms::default());
        let clusters = Arc::new(MemoryClusters::new(store.clone()));
        let blobs = Arc::new(MemoryBlobs::new(clock.clone()));
        let (base, _, _) = console(Environment::Development);
        let console = Console::new(
            store.clone(),
            clock.clone(),
            base.policy.clone(),
            KmsProviders {
                local: Some(kms.clone()),
                ..KmsProviders::default()
            },
            None,
            ChainKeys::new(vec![ChainKey::new([42; 32])]).unwrap_or_else(|| unreachable!()),
        )
        .with_clusters(ClusterParts {
            store: clusters.clone(),
            blobs: blobs.clone(),
            driver: Arc::new(ManifestDriver::new(blobs.clone())),
            platform: kms.clone(),
            ring: Arc::new(DataKeyRing::default()),
            kms_calls: Arc::default(),
            rotation: Arc::default(),
            upload_memory: UploadMemory::new(64),
        });
        console
            .identity()
            .ensure_organization()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let owner = console
            .identity()
            .operator(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let project = console
            .projects()
            .create_project(
                &owner,
                NewProject::parse("p", true, None).unwrap_or_else(|e| panic!("{e:?}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .id;
        let world = Self {
            console,
            store,
            clusters,
            blobs,
            clock,
            kms,
            owner,
            project,
        };
        for region in ["us-east-1", "eu-west-1"] {
            world.add_key(world.project, region).await;
        }
        world
    }

    /// The clusters service under test.
    pub fn svc(&self) -> &crate::domain::clusters::Clusters {
        self.console.clusters().unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn add_key(&self, project: Uuid, region: &str) {
        let input = KeyRequestInput {
            provider: "local".into(),
            region: region.into(),
            key_id: Some(Uuid::now_v7().to_string()),
            ..KeyRequestInput::default()
        };
        self.console
            .keys()
            .create_key(&self.owner, project, &input, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn request(name: &str, regions: &[&str]) -> ClusterRequestInput {
        ClusterRequestInput {
            name: name.into(),
            provider: "local".into(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            tier: None,
            dual_region_backup: false,
        }
    }

    pub async fn cluster(&self, name: &str, regions: &[&str]) -> Cluster {
        self.svc()
            .create_cluster(&self.owner, self.project, &Self::request(name, regions))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn put(&self, cluster: Uuid, name: &str, bytes: &[u8]) -> Result<(), DomainError> {
        let body: Vec<Result<Bytes, crate::domain::clusters::BodyError>> =
            vec![Ok(Bytes::copy_from_slice(bytes))];
        self.svc()
            .put_object(
                &self.owner,
                cluster,
                name,
                Box::pin(futures_util::stream::iter(body)),
            )
            .await
            .map(|_| ())
    }

    pub async fn read(&self, cluster: Uuid, name: &str) -> Result<Vec<u8>, DomainError> {
        let read = self.svc().get_object(&self.owner, cluster, name).await?;
        let mut body = read.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// Runs the backup and restore jobs until none is due.
    pub async fn run_jobs(&self) {
        for _ in 0..100 {
            let done = self
                .svc()
                .run_due_backups()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if done == crate::domain::clusters::BackupReport::default() {
                return;
            }
        }
    }
}
