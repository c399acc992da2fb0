//! Wiring: settings -> database -> `Console` -> HTTP server. `Application::build` binds the
//! listener first, so tests can ask for port 0 and read the port it got.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{Compress, from_fn};
use actix_web::{App, HttpServer, web};

use std::sync::atomic::AtomicU64;

use crate::alerts::HttpSender;
use crate::domain::alerts::AlertParts;
use crate::domain::blobs::BlobStore;
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::clusters::Clusters;
use crate::domain::clusters::parts::ClusterParts;
use crate::domain::clusters::{DataKeyRing, ManifestDriver};
use crate::domain::keys::{AzureApp, KmsProviders};
use crate::domain::kms::KeyProvider;
use crate::domain::local_kms::LocalKeyAdmin;
use crate::domain::ports::{AuditStore, StoreError};
use crate::domain::{Console, DomainError, Policy};
use crate::http::forwarded::TrustedProxies;
use crate::http::metrics::Metrics;
use crate::http::{AppState, middleware, routes};
use crate::kms::KmsTimeouts;
use crate::kms::aws::AwsKms;
use crate::kms::azure::AzureKeyVault;
use crate::kms::gcp::{GcpConfig, GcpKms};
use crate::kms::local::LocalKms;
use crate::kms::platform::PlatformKms;
use crate::settings::{Environment, Settings, SettingsError, private_dir};
use crate::sso::oidc::OidcProvider;
use crate::storage::{ObjectStorage, StorageError};
use crate::store::chain_keys::{self, KeyFileError};
use crate::store::{self, SeaStore};
use crate::supervisor::{Supervisor, Workers};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Domain(#[from] DomainError),
    #[error("single sign-on: {0}")]
    Sso(String),
    #[error("webhook sender: {0}")]
    Webhooks(String),
    #[error("Azure Key Vault: {0}")]
    Azure(String),
    #[error("Google Cloud KMS: {0}")]
    Gcp(String),
    #[error("{0}")]
    SigningKeys(String),
    #[error("local KMS master key: {0}")]
    LocalKms(std::io::Error),
    #[error(
        "{what} {path} is not the file this database was used with (its fingerprint differs \
         from the one recorded at the first start): put the original file back (from the \
         backup of the data directory, or copy it from another instance). Starting with \
         another file would make {consequence}"
    )]
    KeyFileReplaced {
        what: &'static str,
        path: String,
        consequence: &'static str,
    },
    #[error(transparent)]
    AuditKeys(#[from] KeyFileError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the database file {file} is damaged ({problem}). Stop every console using it, restore \
         the file from a backup (or salvage what SQLite can read: `sqlite3 {file} .recover | \
         sqlite3 recovered.sqlite3`, then put the recovered file in its place), remove \
         {file}-wal and {file}-shm if they are there (they belong to the damaged file), and \
         start again"
    )]
    DamagedDatabase { file: String, problem: String },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

/// What a command may do to the audit chain's key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAccess {
    /// `serve`: as `ReadWrite`, and the first start that has the local KMS's master key and
    /// the platform key records their fingerprints (commands never do: a one-off job without
    /// the files mounted must not lock the servers out).
    Serve,
    /// Create the key file on first use, and re-seal events from before the chain was keyed.
    ReadWrite,
    /// The file must exist (verification only reads).
    ReadOnly,
}

/// The local KMS, refused when its master key file is not the one the database was used
/// with: its keys would all "stop working" and be read as the customers' revocations.
async fn open_local_kms(
    settings: &Settings,
    db: &sea_orm::DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
    record: bool,
) -> Result<LocalKms, StartupError> {
    let local = LocalKms::open(&settings.data_dir, db.clone()).map_err(StartupError::LocalKms)?;
    if !store::same_key_file(
        db,
        "local-kms-master.key",
        &local.fingerprint(),
        now,
        record,
    )
    .await
    .map_err(|e| DomainError::from(StoreError::from(e)))?
    {
        return Err(StartupError::KeyFileReplaced {
            what: "The local KMS's master key file",
            path: settings
                .data_dir
                .join("local-kms-master.key")
                .display()
                .to_string(),
            consequence: "every local key look revoked",
        });
    }
    Ok(local)
}

/// Connects, migrates, and returns the use cases; the command line uses this alone.
pub async fn console(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Console, StartupError> {
    console_with(settings, clock, KeyAccess::ReadWrite).await
}

pub async fn console_with(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    access: KeyAccess,
) -> Result<Console, StartupError> {
    let damaged = |problem: String| StartupError::DamagedDatabase {
        file: settings
            .sqlite_file()
            .map_or_else(|| "(database)".into(), |f| f.display().to_string()),
        problem,
    };
    // A damaged file can fail as early as the connection's first statement.
    let failed = |err: sea_orm::DbErr| match StoreError::from(err) {
        StoreError::Damaged(problem) => damaged(problem),
        other => DomainError::from(other).into(),
    };
    let db = store::connect(&settings.database_url()?)
        .await
        .map_err(failed)?;
    if let Some(problem) = store::integrity_problem(&db).await.map_err(failed)? {
        return Err(damaged(problem));
    }
    store::migrate(&db).await.map_err(failed)?;
    let key_path = settings.audit_key_path();
    // The key that sealed the newest event: a key file must hold it, and a new key file is
    // made only for a log that no key has sealed yet (a fresh install, or one from before
    // the chain was keyed), never beside one sealed by a key kept elsewhere.
    let sealed_with = store::newest_chain_key(&db)
        .await
        .map_err(|e| DomainError::from(StoreError::from(e)))?;
    let (chain_keys, created) = match access {
        KeyAccess::ReadOnly => (chain_keys::load(&key_path)?, false),
        KeyAccess::ReadWrite | KeyAccess::Serve if !key_path.exists() && sealed_with.is_none() => {
            if let Some(dir) = key_path.parent() {
                private_dir(dir).map_err(|source| StartupError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            (chain_keys::load_or_create(&key_path)?, true)
        }
        KeyAccess::ReadWrite | KeyAccess::Serve => (chain_keys::load(&key_path)?, false),
    };
    if let Some(id) = &sealed_with
        && chain_keys.get(id).is_none()
    {
        return Err(KeyFileError::Foreign {
            path: key_path.display().to_string(),
            id: id.clone(),
        }
        .into());
    }
    let signing_path = settings.audit_signing_key_path();
    let signing_keys = match access {
        // The first `serve` makes the file (an upgraded installation's too); a one-off
        // command never does: in a job's own data directory it would make a key no server
        // has.
        KeyAccess::Serve => {
            if let Some(dir) = signing_path.parent() {
                private_dir(dir).map_err(|source| StartupError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            crate::store::signing_keys::load_or_create(&signing_path, clock.now())
        }
        KeyAccess::ReadWrite | KeyAccess::ReadOnly => {
            crate::store::signing_keys::load(&signing_path)
        }
    }
    .map_err(|e| StartupError::SigningKeys(e.to_string()))?;
    // As for the chain keys: a console whose signing key file lacks the key that signed the
    // newest event would start a second history beside the other instances' one.
    if access != KeyAccess::ReadOnly
        && signing_keys.current().is_some()
        && let Some(id) = store::newest_signing_key(&db)
            .await
            .map_err(|e| DomainError::from(StoreError::from(e)))?
        && !signing_keys.published().iter().any(|k| k.key_id == id)
    {
        return Err(StartupError::SigningKeys(format!(
            "the audit log's newest event is signed with key {id}, which {} does not hold: give \
             this console the signing key file the other instances use (CMEK_AUDIT_SIGNING_KEY_FILE)",
            signing_path.display()
        )));
    }
    let timeouts = KmsTimeouts {
        call: settings.kms_timeout,
        ..KmsTimeouts::default()
    };
    let aws: Option<Arc<dyn KeyProvider>> = match &settings.aws_account_id {
        Some(_) => Some(Arc::new(AwsKms::new(&settings.aws, timeouts).await)),
        None => None,
    };
    let azure: Option<Arc<dyn KeyProvider>> = match &settings.azure {
        Some(azure) => Some(Arc::new(
            AzureKeyVault::new(azure.clone(), timeouts)
                .map_err(|e| StartupError::Azure(e.to_string()))?,
        )),
        None => None,
    };
    let gcp: Option<Arc<dyn KeyProvider>> = match &settings.gcp {
        Some(gcp) => Some(Arc::new(
            GcpKms::new(
                &GcpConfig {
                    credentials_file: gcp.credentials_file.clone(),
                    endpoint: gcp.endpoint.clone(),
                },
                timeouts,
            )
            .await
            .map_err(|e| StartupError::Gcp(e.to_string()))?,
        )),
        None => None,
    };
    let local = match settings.environment {
        Environment::Production => None,
        Environment::Development => Some(Arc::new(
            open_local_kms(settings, &db, clock.now(), access == KeyAccess::Serve).await?,
        )),
    };
    let sso = match &settings.oidc {
        Some(oidc) => Some(
            OidcProvider::new(
                &oidc.issuer,
                &oidc.client_id,
                oidc.client_secret.clone(),
                clock.clone(),
            )
            .map_err(StartupError::Sso)?,
        ),
        None => None,
    };
    let signing_keys = crate::crypto::audit_chain::SigningKeyRing::new(signing_keys);
    let store = Arc::new(
        SeaStore::new(db, chain_keys.clone())
            .with_signing_keys(signing_keys.clone())
            .with_checkpoint_every(settings.audit_checkpoint_events),
    );
    // Only the start that keys the chain re-seals a legacy one: re-sealing later would seal
    // whatever someone with database access rewrote in the unkeyed form meanwhile.
    if created {
        let resealed = store
            .reseal_legacy_audit_chain()
            .await
            .map_err(DomainError::from)?;
        if resealed > 0 {
            tracing::info!(
                events = resealed,
                "audit chain re-sealed with the chain key"
            );
        }
    }
    // The first start that signs (serve, with the signing key file) closes format 1's single
    // chain: from then on each event goes to its organization's chain only, and nothing is
    // shared by every write. Other consoles read where it ended.
    let legacy = store
        .open_legacy(
            access == KeyAccess::Serve && !signing_keys.get().is_empty(),
            clock.now(),
        )
        .await
        .map_err(DomainError::from)?;
    if let Some(end) = &legacy {
        tracing::debug!(
            last_seq = end.last_seq,
            "format 1's audit chain is closed (legacy segment)"
        );
    }
    let clusters = cluster_parts(
        settings,
        store.clone(),
        clock.now(),
        access == KeyAccess::Serve,
    )
    .await?;
    let alerts = AlertParts {
        store: store.clone(),
        sender: Arc::new(
            HttpSender::new(settings.environment)
                .map_err(|err| StartupError::Webhooks(err.to_string()))?,
        ),
        sealer: clusters.platform.clone(),
        results: Arc::default(),
        sending: AlertParts::sending_room(),
    };
    let console = Console::new(
        store,
        clock,
        Policy {
            environment: settings.environment,
            sessions: settings.sessions,
            organization_name: settings.organization_name.clone(),
        },
        KmsProviders {
            aws,
            local: local.clone().map(|l| l as Arc<dyn KeyProvider>),
            aws_account_id: settings.aws_account_id.clone(),
            azure,
            azure_app: settings.azure.as_ref().map(|a| AzureApp {
                id: a.app_id.clone(),
                name: a.app_name.clone(),
            }),
            gcp,
            gcp_service_account: settings.gcp.as_ref().map(|g| g.service_account.clone()),
        },
        local.map(|l| l as Arc<dyn LocalKeyAdmin>),
        chain_keys,
    )
    .with_clusters(clusters)
    .with_alerts(alerts)
    .with_confirm_delay(settings.key_confirm_delay)
    .with_audit_signing_keys(signing_keys)
    .with_key_test_propagation(settings.key_test_propagation);
    Ok(match sso {
        Some(provider) => console.with_sso(Arc::new(provider)),
        None => console,
    })
}

/// Object storage, the platform key and the driver clusters need.
async fn cluster_parts(
    settings: &Settings,
    store: Arc<SeaStore>,
    now: chrono::DateTime<chrono::Utc>,
    record: bool,
) -> Result<ClusterParts, StartupError> {
    let db = store.connection();
    let storage = match settings.storage_url.as_deref() {
        Some(url) if url.starts_with("s3://") => ObjectStorage::s3(url, &settings.aws)?,
        other => {
            let dir = other
                .and_then(|url| url.strip_prefix("file://"))
                .map_or_else(
                    || settings.data_dir.join("storage"),
                    std::path::PathBuf::from,
                );
            private_dir(&dir).map_err(|source| StartupError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            ObjectStorage::local(&dir)?
        }
    };
    tracing::info!(storage = %storage.description, "cluster data and backups");
    let blobs: Arc<dyn BlobStore> = Arc::new(storage);
    let platform_key = settings.platform_key_path();
    let platform = PlatformKms::open(&platform_key).map_err(|source| StartupError::DataDir {
        path: platform_key.display().to_string(),
        source,
    })?;
    if !store::same_key_file(
        db,
        "platform-data.key",
        &platform.fingerprint(),
        now,
        record,
    )
    .await
    .map_err(|e| DomainError::from(StoreError::from(e)))?
    {
        return Err(StartupError::KeyFileReplaced {
            what: "The platform key file",
            path: platform_key.display().to_string(),
            consequence: "the data of projects without CMEK and the webhooks' signing secrets unreadable",
        });
    }
    Ok(ClusterParts {
        upload_memory: crate::domain::clusters::UploadMemory::new(settings.upload_memory_mib),
        store,
        driver: Arc::new(ManifestDriver::new(blobs.clone())),
        blobs,
        platform: Arc::new(platform),
        ring: Arc::new(DataKeyRing::default()),
        kms_calls: Arc::new(AtomicU64::new(0)),
        rotation: Arc::default(),
    })
}

pub struct Application {
    port: u16,
    public_url: String,
    server: Server,
    console: Console,
    sign_in_token: Option<String>,
    supervisor: Supervisor,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let console = console_with(&settings, clock, KeyAccess::Serve).await?;
        let sign_in_token = console.identity().bootstrap().await?;
        match console.keys().backfill_key_versions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                data_keys = n,
                "recorded the key version of data keys stored before versions were"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "could not record the key versions of older data keys")
            }
        }
        let supervisor = start_workers(&console, console.clusters().ok(), &settings);
        let workers = supervisor.workers();
        for name in &settings.test_worker_faults {
            if !cfg!(debug_assertions) {
                tracing::warn!(worker = %name, "CMEK_TEST_WORKER_FAULTS is ignored in release builds");
                continue;
            }
            match WORKERS.iter().find(|w| **w == name.as_str()) {
                Some(worker) => {
                    tracing::warn!(worker, "CMEK_TEST_WORKER_FAULTS: this worker's rounds fail");
                    workers.inject(worker, Some(crate::supervisor::Fault::FailAlways));
                }
                None => tracing::warn!(worker = %name, "CMEK_TEST_WORKER_FAULTS names no worker"),
            }
        }
        let listen_error = |source| StartupError::Listen {
            address: settings.listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&settings.listen).map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let public_url = settings.public_url.clone().unwrap_or_else(|| {
            let host = if address.ip().is_unspecified() {
                "localhost".to_owned()
            } else {
                address.ip().to_string()
            };
            format!("http://{host}:{}", address.port())
        });
        let state = web::Data::new(AppState {
            console: console.clone(),
            metrics: Metrics::default(),
            public_origin: crate::http::forwarded::origin_of(&public_url),
            public_url: public_url.clone(),
            public_url_configured: settings.public_url.is_some(),
            proxies: TrustedProxies::new(
                settings.trusted_proxies.clone(),
                settings.forwarded_header,
            ),
            body_timeout: settings.body_timeout,
            secure_cookies: public_url.starts_with("https://"),
            workers: workers.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(middleware::same_origin))
                .wrap(Compress::default())
                .wrap(from_fn(middleware::security_headers))
                .wrap(from_fn(middleware::head_as_get))
                .wrap(from_fn(middleware::bound_request))
                .wrap(from_fn(middleware::observe))
                .configure(routes::configure)
        })
        .workers(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .shutdown_timeout(10)
        .listen(listener)
        .map_err(listen_error)?
        .run();
        Ok(Self {
            port: address.port(),
            public_url,
            server,
            console,
            sign_in_token,
            supervisor,
        })
    }

    /// The background workers of this instance (for tests of their supervision).
    pub fn workers(&self) -> Arc<Workers> {
        self.supervisor.workers()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The one-time sign-in link issued at this start, if the owner has never signed in.
    pub fn sign_in_url(&self) -> Option<String> {
        self.sign_in_token
            .as_ref()
            .map(|token| sign_in_url(&self.public_url, token))
    }

    pub fn console(&self) -> Console {
        self.console.clone()
    }

    /// Serves until SIGINT or SIGTERM, then finishes in-flight requests (10 s at most) and
    /// stops the background workers, waiting for the rounds in progress (10 s at most).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.supervisor
            .shutdown(std::time::Duration::from_secs(10))
            .await;
        served
    }
}

/// The background workers' names, as logs, `/metrics` and `/readyz` give them.
pub const WORKERS: [&str; 11] = [
    "audit-checkpoints",
    "audit-signing-keys",
    "data-key-sweep",
    "webhook-deliveries",
    "key-monitor",
    "reactions",
    "reconcile",
    "backups",
    "rewraps",
    "storage-sweeper",
    "memory-trim",
];

/// Starts the background workers under one supervisor:
/// - `audit-checkpoints`: at start and then every `CMEK_AUDIT_CHECKPOINT_INTERVAL`, a
///   signed checkpoint of format 1's chain in the logs (`audit verify --checkpoint` notices
///   that the newest events were removed), and one of every organization's chain that moved
///   since its last, kept and sent to its webhooks (`audit.checkpoint`);
/// - `audit-signing-keys`: every 10 s, reads the signing key file again and takes the keys a
///   rotation appended (`audit rotate-key --in`), so running instances sign with the new key
///   from its time on; a file that lost or changed a key is refused and logged as an error
///   (the round still succeeds: the instance keeps the keys it holds and stays ready);
/// - `data-key-sweep`: drops the plaintext data keys of clusters that stopped being available
///   (another instance paused, deleted or made them inaccessible), every second;
/// - `webhook-deliveries`: sends the deliveries that are due (each once across instances);
/// - `key-monitor`: checks the keys that are due (each once per interval across instances);
/// - `reactions`: runs the reconciliations queued with key status changes, every second or
///   as soon as this process queued one;
/// - `reconcile`: every `CMEK_RECONCILE_INTERVAL`, every revoked key's clusters again;
/// - `backups`: copies the objects of the backups being taken (each job leased, resumed after
///   a crash), every second or as soon as this process started one;
/// - `rewraps`: moves the data keys of key changes (replacements and re-wraps) to their new
///   key, every second (each change leased, resumed after a crash);
/// - `storage-sweeper`: every `CMEK_STORAGE_SWEEP_INTERVAL`, removes the stored copies no
///   index row names (seen so by two sweeps in a row, older than `CMEK_STORAGE_SWEEP_GRACE`)
///   and what unfinished writes left.
fn start_workers(
    console: &Console,
    clusters: Option<&Clusters>,
    settings: &Settings,
) -> Supervisor {
    let mut supervisor = Supervisor::new();
    let second = std::time::Duration::from_secs(1);
    let c = console.clone();
    supervisor.every(
        "audit-checkpoints",
        settings.audit_checkpoint_interval,
        move || {
            let c = c.clone();
            async move {
                let checkpoint = c
                    .audit()
                    .audit_checkpoint()
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    seq = checkpoint.seq,
                    checkpoint = checkpoint.token(),
                    "audit checkpoint"
                );
                let signed = c
                    .audit()
                    .checkpoint_chains()
                    .await
                    .map_err(|e| e.to_string())?;
                if !signed.is_empty() {
                    tracing::info!(chains = signed.len(), "audit chains checkpointed");
                }
                Ok(())
            }
        },
    );
    let ring = console.audit().signing_ring().clone();
    let path = settings.audit_signing_key_path();
    supervisor.every(
        "audit-signing-keys",
        std::time::Duration::from_secs(10),
        move || {
            let (ring, path) = (ring.clone(), path.clone());
            async move {
                let read = tokio::task::spawn_blocking(move || {
                    crate::store::signing_keys::reload(&path, &ring)
                })
                .await
                .map_err(|e| e.to_string())?;
                match read {
                    Ok(added) => {
                        let now = chrono::Utc::now();
                        for (key_id, from) in added {
                            if from <= now {
                                // Already valid: what this instance signed since then with
                                // the key before it does not verify.
                                tracing::error!(%key_id, valid_from = %from, "audit signing key taken after its time; rotate with `--in` ahead of every instance's next read");
                            } else {
                                tracing::info!(%key_id, valid_from = %from, "audit signing key added from the key file");
                            }
                        }
                    }
                    // A bad edit of a shared file must not take every instance out of
                    // service: each keeps signing with the keys it holds.
                    Err(err) => {
                        tracing::error!(error = %err, "audit signing key file refused; signing with the keys held");
                    }
                }
                Ok(())
            }
        },
    );
    if let Ok(alerts) = console.alerts() {
        let c = alerts.clone();
        supervisor.every("webhook-deliveries", second, move || {
            let c = c.clone();
            async move {
                let report = c.deliver_due_webhooks().await.map_err(|e| e.to_string())?;
                if report.started > 0 {
                    tracing::debug!(started = report.started, "webhook deliveries");
                }
                Ok(())
            }
        });
    }
    let policy = crate::domain::keys::MonitorPolicy {
        interval: settings.key_check_interval,
        concurrency: settings.key_check_concurrency,
    };
    let c = console.clone();
    supervisor.every("key-monitor", second, move || {
        let c = c.clone();
        async move {
            let report = c
                .keys()
                .check_due_keys(&policy)
                .await
                .map_err(|e| e.to_string())?;
            if report.changed > 0 || report.suspected > 0 {
                tracing::info!(
                    checked = report.checked,
                    changed = report.changed,
                    suspected = report.suspected,
                    "key monitor"
                );
            }
            Ok(())
        }
    });
    let Some(clusters) = clusters else {
        return supervisor;
    };
    let c = clusters.clone();
    supervisor.every("data-key-sweep", second, move || {
        let c = c.clone();
        async move {
            let dropped = c.sweep_data_keys().await.map_err(|e| e.to_string())?;
            if dropped > 0 {
                tracing::info!(dropped, "data keys of clusters no longer available dropped");
            }
            Ok(())
        }
    });
    let c = clusters.clone();
    let woken = console.clone();
    supervisor.every_or_woken(
        "reactions",
        second,
        move || {
            let c = c.clone();
            async move {
                let done = c.run_due_reactions().await.map_err(|e| e.to_string())?;
                log_reactions("reactions", done);
                Ok(())
            }
        },
        move || {
            let woken = woken.clone();
            async move { woken.reactions_queued().await }
        },
    );
    let c = clusters.clone();
    supervisor.every("reconcile", settings.reconcile_interval, move || {
        let c = c.clone();
        async move {
            let done = c
                .reconcile_revoked_keys()
                .await
                .map_err(|e| e.to_string())?;
            log_reactions("periodic reconciliation", done);
            Ok(())
        }
    });
    let c = clusters.clone();
    let woken = clusters.clone();
    supervisor.every_or_woken(
        "backups",
        second,
        move || {
            let c = c.clone();
            async move {
                let done = c.run_due_backups().await.map_err(|e| e.to_string())?;
                if done != crate::domain::clusters::BackupReport::default() {
                    tracing::info!(
                        copied = done.copied,
                        available = done.available,
                        failed = done.failed,
                        "backups"
                    );
                }
                Ok(())
            }
        },
        move || {
            let woken = woken.clone();
            async move { woken.backups_queued().await }
        },
    );
    let c = clusters.clone();
    supervisor.every("rewraps", second, move || {
        let c = c.clone();
        async move {
            let done = c.run_due_rewraps().await.map_err(|e| e.to_string())?;
            if done != crate::domain::clusters::RewrapReport::default() {
                tracing::info!(
                    moved = done.moved,
                    failed = done.failed,
                    ended = done.ended,
                    "key changes"
                );
            }
            Ok(())
        }
    });
    let c = clusters.clone();
    let grace = settings.storage_sweep_grace;
    let settle = settings.storage_sweep_interval;
    let orphans = Arc::new(tokio::sync::Mutex::new(
        crate::domain::clusters::sweeper::Sightings::new(),
    ));
    supervisor.every(
        "storage-sweeper",
        settings.storage_sweep_interval,
        move || {
            let c = c.clone();
            let orphans = orphans.clone();
            async move {
                let mut orphans = orphans.lock().await;
                let done = c
                    .sweep_storage(&mut orphans, grace, settle)
                    .await
                    .map_err(|e| e.to_string())?;
                if done.removed > 0 || done.marked > 0 || done.uploads_aborted > 0 {
                    tracing::info!(
                        listed = done.listed,
                        removed = done.removed,
                        marked = done.marked,
                        uploads_aborted = done.uploads_aborted,
                        "storage sweep"
                    );
                }
                Ok(())
            }
        },
    );
    let c = clusters.clone();
    let busy_since_trim = Arc::new(std::sync::atomic::AtomicBool::new(false));
    supervisor.every("memory-trim", second, move || {
        let c = c.clone();
        let busy = busy_since_trim.clone();
        async move {
            use std::sync::atomic::Ordering;
            if c.uploads_in_progress() {
                busy.store(true, Ordering::Relaxed);
            } else if busy.swap(false, Ordering::Relaxed) {
                give_memory_back();
            }
            Ok(())
        }
    });
    supervisor
}

/// After a burst of uploads, hands the allocator's free memory back to the system (glibc
/// keeps freed buffers in its arenas otherwise, and the process stays at its peak).
fn give_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it takes no pointer
    // and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn log_reactions(what: &'static str, done: crate::domain::clusters::ReconcileReport) {
    if done != crate::domain::clusters::ReconcileReport::default() {
        tracing::info!(
            stopped = done.stopped,
            marked = done.marked,
            cleared = done.cleared,
            "{what}: clusters brought in line with their keys"
        );
    }
}

pub fn sign_in_url(public_url: &str, token: &str) -> String {
    format!("{public_url}/sign-in/link?token={token}")
}
