//! Typed settings: defaults, then an optional TOML file, then environment variables.
//!
//! Every field is documented here and in the README's settings table; the TOML keys are the
//! variable names without the `CMEK_` prefix, lower-cased (`DATABASE_URL` -> `database_url`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::identity::SessionPolicy;

/// The header the trusted proxies write the client's address into
/// (`CMEK_FORWARDED_HEADER`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

pub use crate::domain::Environment;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct Settings {
    /// `CMEK_LISTEN`: address to bind, `127.0.0.1:8080` by default; port 0 picks a free one.
    pub listen: String,
    /// `CMEK_PUBLIC_URL`: the URL people type; sign-in links and cookie flags derive from it.
    /// Default: `http://` + the listen address.
    pub public_url: Option<String>,
    /// `CMEK_DATA_DIR`: where the embedded database lives, `./data` by default.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: `sqlite://...` or `postgres://...`; default a SQLite file in the data dir.
    pub database_url: Option<SecretString>,
    /// `CMEK_ENV`: `development` (default) or `production`.
    pub environment: Environment,
    /// `CMEK_LOG_FORMAT`: `text` (default) or `json`. The level comes from `RUST_LOG`.
    pub log_format: LogFormat,
    /// `CMEK_ORGANIZATION_NAME`: name of the organization created on first start.
    pub organization_name: String,
    /// `CMEK_SESSION_IDLE_TIMEOUT` (default `8h`) and `CMEK_SESSION_MAX_AGE` (default `7d`).
    pub sessions: SessionPolicy,
    /// `CMEK_AWS_ACCOUNT_ID`: the platform's AWS account, named in the policies customers
    /// paste and trusted by their roles. Without it the AWS KMS provider is off.
    pub aws_account_id: Option<String>,
    /// `CMEK_KMS_TIMEOUT` (default `5s`): the longest one KMS call may take.
    pub kms_timeout: Duration,
    /// The standard AWS variables the console applies itself (the SDK's default chain
    /// handles every other one: profiles, web identity, instance roles...).
    pub aws: AwsSettings,
    /// The platform's multi-tenant Microsoft Entra application; without `CMEK_AZURE_APP_ID`
    /// the Azure Key Vault provider is off.
    pub azure: Option<AzureSettings>,
    /// The platform's Google Cloud service account; without `CMEK_GCP_SERVICE_ACCOUNT` the
    /// Google Cloud KMS provider is off.
    pub gcp: Option<GcpSettings>,
    /// Single sign-on; off unless `CMEK_OIDC_ISSUER` is set.
    pub oidc: Option<OidcSettings>,
    /// `CMEK_TRUSTED_PROXIES`: addresses or CIDR ranges (comma-separated) whose
    /// `Forwarded` / `X-Forwarded-For` headers are believed; nobody's by default.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `CMEK_FORWARDED_HEADER`: the header those proxies write the client's address into,
    /// `x-forwarded-for` (default) or `forwarded`; the other one is never read.
    pub forwarded_header: ForwardedHeader,
    /// `CMEK_AUDIT_KEY_FILE`: the audit chain's keys (default `<CMEK_DATA_DIR>/audit-chain.keys`,
    /// created 0600 on first start). Every instance on one database needs the same file.
    pub audit_key_file: Option<PathBuf>,
    /// `CMEK_AUDIT_SIGNING_KEY_FILE`: the audit log's Ed25519 signing keys (default
    /// `<CMEK_DATA_DIR>/audit-signing.keys`, created 0600 by the first `serve`); every
    /// instance on one database needs the same file.
    pub audit_signing_key_file: Option<PathBuf>,
    /// `CMEK_BODY_TIMEOUT` (default `30s`): a request body must arrive within this after its
    /// headers, or the request gets 408 and the connection closes.
    pub body_timeout: Duration,
    /// `CMEK_AUDIT_CHECKPOINT_INTERVAL` (default `15m`): how often `serve` logs a signed
    /// checkpoint of the audit chain's head.
    pub audit_checkpoint_interval: Duration,
    /// `CMEK_AUDIT_CHECKPOINT_EVENTS` (default `1000`): every this many events of an
    /// organization's chain, its head is checkpointed (signed, kept, sent to its webhooks as
    /// `audit.checkpoint`) in the transaction of the event; `0`: on the interval only.
    pub audit_checkpoint_events: u64,
    /// `CMEK_STORAGE_URL`: where cluster data and backups go (sealed). Default: local files
    /// under `<CMEK_DATA_DIR>/storage`; `s3://bucket/prefix` with the AWS settings above so
    /// several instances share them; `file:///path` for another directory.
    pub storage_url: Option<String>,
    /// `CMEK_PLATFORM_KEY_FILE`: the platform-held key that wraps the data keys of projects
    /// without CMEK (default `<CMEK_DATA_DIR>/platform-data.key`, created 0600). Instances
    /// sharing object storage need the same file.
    pub platform_key_file: Option<PathBuf>,
    /// `CMEK_KEY_CHECK_INTERVAL` (default `5m`, at least `1s`): how often the key monitor
    /// checks each key.
    pub key_check_interval: Duration,
    /// `CMEK_KEY_CHECK_CONCURRENCY` (default 16, 1-256): keys one instance checks at once.
    pub key_check_concurrency: usize,
    /// `CMEK_KEY_CONFIRM_DELAY` (default `2s`, at most `30s`): how long Check now waits
    /// before the second probe that confirms a revocation the first one saw.
    pub key_confirm_delay: Duration,
    /// `CMEK_KEY_TEST_PROPAGATION` (default `60s`, at most `10m`; `0s` turns it off): how long
    /// Test Encryption Key keeps retrying, with back-off, a check the KMS refused the way a
    /// grant made a moment ago is refused until it propagates (AWS `AccessDeniedException`,
    /// Azure `Forbidden`).
    pub key_test_propagation: Duration,
    /// `CMEK_UPLOAD_MEMORY_MIB` (default 512, at least 16): the memory uploads of cluster
    /// data may hold at once; an upload reserves its copies' buffers (15 MiB per region) and
    /// is refused with 503 and `Retry-After` when that is not free.
    pub upload_memory_mib: u32,
    /// `CMEK_TEST_WORKER_FAULTS` (development only; refused with `CMEK_ENV=production`):
    /// background workers, by name and comma-separated, whose every round fails, so tests can
    /// stop a console between a change and its reaction (as a crash would).
    pub test_worker_faults: Vec<String>,
    /// `CMEK_RECONCILE_INTERVAL` (default `30s`, at least `1s`): how often every revoked
    /// key's clusters are brought in line with its status again (besides the reaction
    /// queued with each status change).
    pub reconcile_interval: Duration,
    /// `CMEK_STORAGE_SWEEP_INTERVAL` (default `1h`, at least `1s`): how often the storage
    /// sweeper lists the stored copies. A copy no index row names is removed when two sweeps
    /// in a row found it so and it is older than the grace period.
    pub storage_sweep_interval: Duration,
    /// `CMEK_STORAGE_SWEEP_GRACE` (default `1h`, at least `1s`): how old a copy, or an
    /// unfinished write's leftovers, must be before the sweeper may remove it.
    pub storage_sweep_grace: Duration,
}

/// `CMEK_OIDC_ISSUER`, `CMEK_OIDC_CLIENT_ID`, `CMEK_OIDC_CLIENT_SECRET`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

/// `CMEK_AZURE_APP_ID`, `CMEK_AZURE_APP_NAME`, `CMEK_AZURE_CLIENT_SECRET`,
/// `AZURE_AUTHORITY_HOST`, `CMEK_AZURE_VAULT_URL_TEMPLATE`, `CMEK_AZURE_CA_FILE`.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// The application (client) id customers create a service principal for.
    pub app_id: String,
    /// Its display name, shown in the wizard (default `cmek-console`).
    pub app_name: String,
    pub client_secret: SecretString,
    /// Where tokens are requested (default `https://login.microsoftonline.com`); https only.
    pub authority_host: url::Url,
    /// The vault's URL with `{vault}` in it (default `https://{vault}.vault.azure.net`).
    pub vault_url_template: String,
    /// An extra CA (PEM) trusted for the vault and the authority.
    pub ca_file: Option<PathBuf>,
    /// Whether the vault's 401 challenge must name a resource whose domain the vault's host
    /// is under: always in production; in development only when the template's host is.
    pub verify_challenge_resource: bool,
}

impl AzureSettings {
    /// The URL of a vault, from the template.
    pub fn vault_url(&self, vault: &str) -> String {
        self.vault_url_template.replace("{vault}", vault)
    }
}

/// `CMEK_GCP_SERVICE_ACCOUNT`, `CMEK_GCP_CREDENTIALS_FILE` (or the standard
/// `GOOGLE_APPLICATION_CREDENTIALS`), `CMEK_GCP_KMS_ENDPOINT`.
#[derive(Debug, Clone)]
pub struct GcpSettings {
    /// The service account's email, shown in the wizard for customers to grant.
    pub service_account: String,
    /// Its key file (JSON, `type: service_account`, for that same account).
    pub credentials_file: PathBuf,
    /// Cloud KMS's endpoint when not `https://cloudkms.googleapis.com` (private endpoints;
    /// tests, where plain http is allowed to a loopback address).
    pub endpoint: Option<String>,
}

/// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`.
#[derive(Debug, Default, Clone)]
pub struct AwsSettings {
    /// Where STS is called when no key region applies; default `us-east-1`.
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    env: Option<String>,
    log_format: Option<String>,
    organization_name: Option<String>,
    session_idle_timeout: Option<String>,
    session_max_age: Option<String>,
    aws_account_id: Option<String>,
    kms_timeout: Option<String>,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<String>,
    trusted_proxies: Option<String>,
    forwarded_header: Option<String>,
    audit_key_file: Option<PathBuf>,
    audit_signing_key_file: Option<PathBuf>,
    audit_checkpoint_interval: Option<String>,
    audit_checkpoint_events: Option<String>,
    body_timeout: Option<String>,
    storage_url: Option<String>,
    platform_key_file: Option<PathBuf>,
    key_check_interval: Option<String>,
    key_check_concurrency: Option<String>,
    key_confirm_delay: Option<String>,
    key_test_propagation: Option<String>,
    reconcile_interval: Option<String>,
    storage_sweep_interval: Option<String>,
    storage_sweep_grace: Option<String>,
    azure_app_id: Option<String>,
    azure_app_name: Option<String>,
    azure_client_secret: Option<String>,
    azure_authority_host: Option<String>,
    azure_vault_url_template: Option<String>,
    azure_ca_file: Option<PathBuf>,
    gcp_service_account: Option<String>,
    gcp_credentials_file: Option<PathBuf>,
    gcp_kms_endpoint: Option<String>,
}

/// Every variable we read; any other `CMEK_*` variable is reported as a likely typo.
const KNOWN_VARIABLES: &[&str] = &[
    "CMEK_CONFIG",
    "CMEK_LISTEN",
    "CMEK_PUBLIC_URL",
    "CMEK_DATA_DIR",
    "CMEK_ENV",
    "CMEK_LOG_FORMAT",
    "CMEK_ORGANIZATION_NAME",
    "CMEK_SESSION_IDLE_TIMEOUT",
    "CMEK_SESSION_MAX_AGE",
    "CMEK_AWS_ACCOUNT_ID",
    "CMEK_KMS_TIMEOUT",
    "CMEK_OIDC_ISSUER",
    "CMEK_OIDC_CLIENT_ID",
    "CMEK_OIDC_CLIENT_SECRET",
    "CMEK_TRUSTED_PROXIES",
    "CMEK_FORWARDED_HEADER",
    "CMEK_AUDIT_KEY_FILE",
    "CMEK_AUDIT_SIGNING_KEY_FILE",
    "CMEK_AUDIT_CHECKPOINT_INTERVAL",
    "CMEK_AUDIT_CHECKPOINT_EVENTS",
    "CMEK_KEY_TEST_PROPAGATION",
    "CMEK_BODY_TIMEOUT",
    "CMEK_STORAGE_URL",
    "CMEK_PLATFORM_KEY_FILE",
    "CMEK_KEY_CHECK_INTERVAL",
    "CMEK_KEY_CHECK_CONCURRENCY",
    "CMEK_KEY_CONFIRM_DELAY",
    "CMEK_RECONCILE_INTERVAL",
    "CMEK_STORAGE_SWEEP_INTERVAL",
    "CMEK_STORAGE_SWEEP_GRACE",
    "CMEK_TEST_WORKER_FAULTS",
    "CMEK_UPLOAD_MEMORY_MIB",
    "CMEK_AZURE_APP_ID",
    "CMEK_AZURE_APP_NAME",
    "CMEK_AZURE_CLIENT_SECRET",
    "CMEK_AZURE_VAULT_URL_TEMPLATE",
    "CMEK_AZURE_CA_FILE",
    "CMEK_GCP_SERVICE_ACCOUNT",
    "CMEK_GCP_CREDENTIALS_FILE",
    "CMEK_GCP_KMS_ENDPOINT",
];

impl Settings {
    /// Reads the TOML file named by `config` (or `CMEK_CONFIG`) and the environment.
    pub fn load(config: Option<&Path>) -> Result<(Self, Vec<String>), SettingsError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let config = config
            .map(Path::to_path_buf)
            .or_else(|| lookup(&vars, "CMEK_CONFIG").map(PathBuf::from));
        let file = match config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str(&text).map_err(|source| SettingsError::Parse {
                    path,
                    source: Box::new(source),
                })?
            }
            None => FileSettings::default(),
        };
        let warnings = vars
            .iter()
            .filter(|(k, _)| k.starts_with("CMEK_") && !KNOWN_VARIABLES.contains(&k.as_str()))
            .map(|(k, _)| format!("unknown setting {k} is ignored"))
            .collect();
        Ok((Self::from_sources(file, &vars)?, warnings))
    }

    /// Settings from environment-style pairs only; tests build theirs this way.
    pub fn from_vars(vars: &[(&str, &str)]) -> Result<Self, SettingsError> {
        let owned: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::from_sources(FileSettings::default(), &owned)
    }

    fn from_sources(file: FileSettings, vars: &[(String, String)]) -> Result<Self, SettingsError> {
        let pick = |name: &str, from_file: Option<String>| lookup(vars, name).or(from_file);
        let environment = match pick("CMEK_ENV", file.env).as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "CMEK_ENV",
                    reason: format!("expected `development` or `production`, got `{other}`"),
                });
            }
        };
        let log_format = match pick("CMEK_LOG_FORMAT", file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "CMEK_LOG_FORMAT",
                    reason: format!("expected `text` or `json`, got `{other}`"),
                });
            }
        };
        let public_url = pick("CMEK_PUBLIC_URL", file.public_url)
            .map(|url| url.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(SettingsError::Invalid {
                name: "CMEK_PUBLIC_URL",
                reason: "must start with http:// or https://".into(),
            });
        }
        let idle = duration_setting(
            "CMEK_SESSION_IDLE_TIMEOUT",
            pick("CMEK_SESSION_IDLE_TIMEOUT", file.session_idle_timeout),
            Duration::from_secs(8 * 3600),
        )?;
        if idle < Duration::from_secs(1) {
            return Err(SettingsError::Invalid {
                name: "CMEK_SESSION_IDLE_TIMEOUT",
                reason: "must be at least 1s".into(),
            });
        }
        let max_age = duration_setting(
            "CMEK_SESSION_MAX_AGE",
            pick("CMEK_SESSION_MAX_AGE", file.session_max_age),
            Duration::from_secs(7 * 24 * 3600),
        )?;
        let aws_account_id = pick("CMEK_AWS_ACCOUNT_ID", file.aws_account_id);
        if let Some(account) = &aws_account_id
            && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(SettingsError::Invalid {
                name: "CMEK_AWS_ACCOUNT_ID",
                reason: "an AWS account ID is 12 digits".into(),
            });
        }
        let kms_timeout = duration_setting(
            "CMEK_KMS_TIMEOUT",
            pick("CMEK_KMS_TIMEOUT", file.kms_timeout),
            Duration::from_secs(5),
        )?;
        let aws = AwsSettings {
            region: lookup(vars, "AWS_REGION").or_else(|| lookup(vars, "AWS_DEFAULT_REGION")),
            endpoint_url: lookup(vars, "AWS_ENDPOINT_URL"),
            access_key_id: lookup(vars, "AWS_ACCESS_KEY_ID"),
            secret_access_key: lookup(vars, "AWS_SECRET_ACCESS_KEY").map(SecretString::from),
            session_token: lookup(vars, "AWS_SESSION_TOKEN").map(SecretString::from),
        };
        let azure = azure_settings(
            AzureInput {
                app_id: pick("CMEK_AZURE_APP_ID", file.azure_app_id),
                app_name: pick("CMEK_AZURE_APP_NAME", file.azure_app_name),
                client_secret: pick("CMEK_AZURE_CLIENT_SECRET", file.azure_client_secret),
                authority_host: pick("AZURE_AUTHORITY_HOST", file.azure_authority_host),
                vault_url_template: pick(
                    "CMEK_AZURE_VAULT_URL_TEMPLATE",
                    file.azure_vault_url_template,
                ),
                ca_file: lookup(vars, "CMEK_AZURE_CA_FILE")
                    .map(PathBuf::from)
                    .or(file.azure_ca_file),
            },
            environment,
        )?;
        let gcp = gcp_settings(
            pick("CMEK_GCP_SERVICE_ACCOUNT", file.gcp_service_account),
            lookup(vars, "CMEK_GCP_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or(file.gcp_credentials_file)
                .or_else(|| lookup(vars, "GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from)),
            pick("CMEK_GCP_KMS_ENDPOINT", file.gcp_kms_endpoint),
        )?;
        let oidc = match (
            pick("CMEK_OIDC_ISSUER", file.oidc_issuer),
            pick("CMEK_OIDC_CLIENT_ID", file.oidc_client_id),
            pick("CMEK_OIDC_CLIENT_SECRET", file.oidc_client_secret),
        ) {
            (None, _, _) => None,
            (Some(issuer), Some(client_id), Some(secret)) => Some(OidcSettings {
                issuer,
                client_id,
                client_secret: SecretString::from(secret),
            }),
            (Some(_), _, _) => {
                return Err(SettingsError::Invalid {
                    name: "CMEK_OIDC_ISSUER",
                    reason:
                        "single sign-on also needs CMEK_OIDC_CLIENT_ID and CMEK_OIDC_CLIENT_SECRET"
                            .into(),
                });
            }
        };
        let trusted_proxies = parse_networks(
            "CMEK_TRUSTED_PROXIES",
            pick("CMEK_TRUSTED_PROXIES", file.trusted_proxies).as_deref(),
        )?;
        let audit_checkpoint_interval = duration_setting(
            "CMEK_AUDIT_CHECKPOINT_INTERVAL",
            pick(
                "CMEK_AUDIT_CHECKPOINT_INTERVAL",
                file.audit_checkpoint_interval,
            ),
            Duration::from_secs(15 * 60),
        )?;
        if audit_checkpoint_interval.is_zero() {
            return Err(SettingsError::Invalid {
                name: "CMEK_AUDIT_CHECKPOINT_INTERVAL",
                reason: "must be longer than zero".into(),
            });
        }
        let forwarded_header = match pick("CMEK_FORWARDED_HEADER", file.forwarded_header)
            .map(|h| h.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("x-forwarded-for") => ForwardedHeader::XForwardedFor,
            Some("forwarded") => ForwardedHeader::Forwarded,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "CMEK_FORWARDED_HEADER",
                    reason: format!("expected `x-forwarded-for` or `forwarded`, got `{other}`"),
                });
            }
        };
        let body_timeout = duration_setting(
            "CMEK_BODY_TIMEOUT",
            pick("CMEK_BODY_TIMEOUT", file.body_timeout),
            Duration::from_secs(30),
        )?;
        if body_timeout.is_zero() {
            return Err(SettingsError::Invalid {
                name: "CMEK_BODY_TIMEOUT",
                reason: "must be longer than zero".into(),
            });
        }
        let storage_url = pick("CMEK_STORAGE_URL", file.storage_url).filter(|u| !u.is_empty());
        if let Some(url) = &storage_url
            && !(url.starts_with("s3://") || url.starts_with("file:///"))
        {
            return Err(SettingsError::Invalid {
                name: "CMEK_STORAGE_URL",
                reason: "must be s3://bucket[/prefix] or file:///absolute/path".into(),
            });
        }
        let key_check_interval = duration_setting(
            "CMEK_KEY_CHECK_INTERVAL",
            pick("CMEK_KEY_CHECK_INTERVAL", file.key_check_interval),
            Duration::from_secs(5 * 60),
        )?;
        if key_check_interval < Duration::from_secs(1) {
            return Err(SettingsError::Invalid {
                name: "CMEK_KEY_CHECK_INTERVAL",
                reason: "must be at least 1s".into(),
            });
        }
        let audit_checkpoint_events = match pick(
            "CMEK_AUDIT_CHECKPOINT_EVENTS",
            file.audit_checkpoint_events,
        ) {
            None => crate::store::DEFAULT_CHECKPOINT_EVERY,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if n <= 1_000_000 => n,
                _ => {
                    return Err(SettingsError::Invalid {
                        name: "CMEK_AUDIT_CHECKPOINT_EVENTS",
                        reason: format!(
                            "expected a whole number from 0 (the interval only) to 1000000, got `{raw}`"
                        ),
                    });
                }
            },
        };
        let key_check_concurrency =
            match pick("CMEK_KEY_CHECK_CONCURRENCY", file.key_check_concurrency) {
                None => 16,
                Some(raw) => match raw.trim().parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => n,
                    _ => {
                        return Err(SettingsError::Invalid {
                            name: "CMEK_KEY_CHECK_CONCURRENCY",
                            reason: format!("expected a whole number from 1 to 256, got `{raw}`"),
                        });
                    }
                },
            };
        let key_confirm_delay = duration_setting(
            "CMEK_KEY_CONFIRM_DELAY",
            pick("CMEK_KEY_CONFIRM_DELAY", file.key_confirm_delay),
            Duration::from_secs(2),
        )?;
        if key_confirm_delay > Duration::from_secs(30) {
            return Err(SettingsError::Invalid {
                name: "CMEK_KEY_CONFIRM_DELAY",
                reason: "must be at most 30s (Check now waits for it)".into(),
            });
        }
        let key_test_propagation = duration_setting(
            "CMEK_KEY_TEST_PROPAGATION",
            pick("CMEK_KEY_TEST_PROPAGATION", file.key_test_propagation)
                .map(|v| if v.trim() == "0" { "0s".to_owned() } else { v }),
            Duration::from_secs(60),
        )?;
        if key_test_propagation > Duration::from_secs(600) {
            return Err(SettingsError::Invalid {
                name: "CMEK_KEY_TEST_PROPAGATION",
                reason: "must be at most 10m (Test Encryption Key waits for it)".into(),
            });
        }
        let reconcile_interval = duration_setting(
            "CMEK_RECONCILE_INTERVAL",
            pick("CMEK_RECONCILE_INTERVAL", file.reconcile_interval),
            Duration::from_secs(30),
        )?;
        if reconcile_interval < Duration::from_secs(1) {
            return Err(SettingsError::Invalid {
                name: "CMEK_RECONCILE_INTERVAL",
                reason: "must be at least 1s".into(),
            });
        }
        let mut sweep = [Duration::ZERO; 2];
        for (slot, (name, raw)) in sweep.iter_mut().zip([
            (
                "CMEK_STORAGE_SWEEP_INTERVAL",
                pick("CMEK_STORAGE_SWEEP_INTERVAL", file.storage_sweep_interval),
            ),
            (
                "CMEK_STORAGE_SWEEP_GRACE",
                pick("CMEK_STORAGE_SWEEP_GRACE", file.storage_sweep_grace),
            ),
        ]) {
            *slot = duration_setting(name, raw, Duration::from_secs(3600))?;
            if *slot < Duration::from_secs(1) {
                return Err(SettingsError::Invalid {
                    name,
                    reason: "must be at least 1s".into(),
                });
            }
        }
        let [storage_sweep_interval, storage_sweep_grace] = sweep;
        let test_worker_faults: Vec<String> = lookup(vars, "CMEK_TEST_WORKER_FAULTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        if !test_worker_faults.is_empty() && environment == Environment::Production {
            return Err(SettingsError::Invalid {
                name: "CMEK_TEST_WORKER_FAULTS",
                reason: "is for tests and refused in production".into(),
            });
        }
        let upload_memory_mib = match lookup(vars, "CMEK_UPLOAD_MEMORY_MIB") {
            None => 512,
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) if n >= 16 => n,
                _ => {
                    return Err(SettingsError::Invalid {
                        name: "CMEK_UPLOAD_MEMORY_MIB",
                        reason: format!("expected a whole number of MiB, at least 16, got `{raw}`"),
                    });
                }
            },
        };
        Ok(Self {
            upload_memory_mib,
            test_worker_faults,
            key_check_interval,
            key_check_concurrency,
            audit_checkpoint_events,
            key_confirm_delay,
            key_test_propagation,
            reconcile_interval,
            storage_sweep_interval,
            storage_sweep_grace,
            storage_url,
            platform_key_file: lookup(vars, "CMEK_PLATFORM_KEY_FILE")
                .map(PathBuf::from)
                .or(file.platform_key_file),
            oidc,
            azure,
            gcp,
            trusted_proxies,
            forwarded_header,
            body_timeout,
            audit_key_file: lookup(vars, "CMEK_AUDIT_KEY_FILE")
                .map(PathBuf::from)
                .or(file.audit_key_file),
            audit_signing_key_file: lookup(vars, "CMEK_AUDIT_SIGNING_KEY_FILE")
                .map(PathBuf::from)
                .or(file.audit_signing_key_file),
            audit_checkpoint_interval,
            aws,
            aws_account_id,
            kms_timeout,
            listen: pick("CMEK_LISTEN", file.listen).unwrap_or_else(|| "127.0.0.1:8080".into()),
            public_url,
            data_dir: lookup(vars, "CMEK_DATA_DIR")
                .map(PathBuf::from)
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            database_url: pick("DATABASE_URL", file.database_url).map(SecretString::from),
            environment,
            log_format,
            organization_name: pick("CMEK_ORGANIZATION_NAME", file.organization_name)
                .unwrap_or_else(|| "My Organization".into()),
            sessions: SessionPolicy { idle, max_age },
        })
    }

    /// The database URL to connect to. For the SQLite default it prepares the data directory
    /// (0700) and the database file (0600) first, so nobody else on the machine can read them.
    pub fn database_url(&self) -> Result<String, SettingsError> {
        if let Some(url) = &self.database_url {
            return Ok(url.expose_secret().to_owned());
        }
        let file = self.data_dir.join(SQLITE_FILE);
        prepare_private_file(&self.data_dir, &file).map_err(|e| SettingsError::Invalid {
            name: "CMEK_DATA_DIR",
            reason: format!(
                "cannot use {} for the database (need a writable directory): {e}",
                file.display()
            ),
        })?;
        Ok(format!("sqlite://{}?mode=rwc", file.display()))
    }

    /// Where the audit chain's keys are.
    pub fn platform_key_path(&self) -> PathBuf {
        self.platform_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("platform-data.key"))
    }

    pub fn audit_key_path(&self) -> PathBuf {
        self.audit_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-chain.keys"))
    }

    /// The audit log's Ed25519 signing keys (format 2).
    pub fn audit_signing_key_path(&self) -> PathBuf {
        self.audit_signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-signing.keys"))
    }

    /// The SQLite file of the embedded default, if that is the database in use.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match &self.database_url {
            None => Some(self.data_dir.join(SQLITE_FILE)),
            Some(url) => url
                .expose_secret()
                .strip_prefix("sqlite://")
                .map(|rest| PathBuf::from(rest.split('?').next().unwrap_or(rest))),
        }
    }
}

/// The embedded database's file name inside `CMEK_DATA_DIR`.
const SQLITE_FILE: &str = "cmek-console.sqlite3";

/// Creates `dir` (0700) and `file` (0600) if missing and tightens their modes if not, then
/// checks that the file can be opened for writing.
/// Creates `dir` (and its parents) with mode 0700 if it is missing.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn prepare_private_file(dir: &Path, file: &Path) -> std::io::Result<()> {
    private_dir(dir)?;
    crate::crypto::keys::private_file(crate::crypto::keys::Private::Append).open(file)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = file.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A comma-separated list of addresses (`10.0.0.7`) or CIDR ranges (`10.0.0.0/8`).
fn parse_networks(
    name: &'static str,
    value: Option<&str>,
) -> Result<Vec<ipnet::IpNet>, SettingsError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| SettingsError::Invalid {
                    name,
                    reason: format!("`{item}` is neither an IP address nor a CIDR range"),
                })
        })
        .collect()
}

struct AzureInput {
    app_id: Option<String>,
    app_name: Option<String>,
    client_secret: Option<String>,
    authority_host: Option<String>,
    vault_url_template: Option<String>,
    ca_file: Option<PathBuf>,
}

/// The Azure provider's settings: off without an app id; with one, every part checked.
fn azure_settings(
    input: AzureInput,
    environment: Environment,
) -> Result<Option<AzureSettings>, SettingsError> {
    let invalid = |name: &'static str, reason: &str| SettingsError::Invalid {
        name,
        reason: reason.to_owned(),
    };
    let Some(app_id) = input.app_id.filter(|id| !id.trim().is_empty()) else {
        return Ok(None);
    };
    let app_id = app_id.trim().to_owned();
    if uuid::Uuid::parse_str(&app_id).is_err() {
        return Err(invalid(
            "CMEK_AZURE_APP_ID",
            "the application (client) id of an Entra application is a GUID",
        ));
    }
    let client_secret = input
        .client_secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            invalid(
                "CMEK_AZURE_CLIENT_SECRET",
                "the Azure provider needs the application's client secret",
            )
        })?;
    let authority = input
        .authority_host
        .unwrap_or_else(|| "https://login.microsoftonline.com".to_owned());
    // The SDK joins `/<tenant>/oauth2/v2.0/token` onto the host: a path would be dropped.
    let authority_host = url::Url::parse(&authority)
        .ok()
        .filter(|u| plain_https(u) && u.path().trim_end_matches('/').is_empty())
        .ok_or_else(|| {
            invalid(
                "AZURE_AUTHORITY_HOST",
                "must be an https URL with no path, query or user (e.g. https://login.microsoftonline.com)",
            )
        })?;
    let template = input
        .vault_url_template
        .unwrap_or_else(|| "https://{vault}.vault.azure.net".to_owned());
    let sample = url::Url::parse(&template.replace("{vault}", "sample"))
        .ok()
        .filter(plain_https);
    let Some(sample) = sample.filter(|_| template.contains("{vault}")) else {
        return Err(invalid(
            "CMEK_AZURE_VAULT_URL_TEMPLATE",
            "must be an https URL with {vault} in it and no query or user, e.g. https://{vault}.vault.azure.net",
        ));
    };
    let on_key_vault_domain = sample.host_str().is_some_and(|h| {
        [
            ".vault.azure.net",
            ".vault.azure.cn",
            ".vault.usgovcloudapi.net",
        ]
        .iter()
        .any(|d| h.ends_with(d))
    });
    if let Some(path) = &input.ca_file
        && !path.is_file()
    {
        return Err(invalid("CMEK_AZURE_CA_FILE", "no such file"));
    }
    Ok(Some(AzureSettings {
        app_id,
        app_name: input
            .app_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "cmek-console".to_owned()),
        client_secret: SecretString::from(client_secret),
        authority_host,
        vault_url_template: template.trim_end_matches('/').to_owned(),
        ca_file: input.ca_file,
        verify_challenge_resource: environment == Environment::Production || on_key_vault_domain,
    }))
}

/// The Google Cloud provider's settings: off without a service account; with one, its key
/// file must be that account's, so the wizard never names an account the console is not.
fn gcp_settings(
    service_account: Option<String>,
    credentials_file: Option<PathBuf>,
    endpoint: Option<String>,
) -> Result<Option<GcpSettings>, SettingsError> {
    let invalid = |name: &'static str, reason: String| SettingsError::Invalid { name, reason };
    let Some(service_account) = service_account
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
    else {
        return Ok(None);
    };
    if !service_account
        .split_once('@')
        .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
    {
        return Err(invalid(
            "CMEK_GCP_SERVICE_ACCOUNT",
            "must be a service account's email, e.g. cmek@platform-project.iam.gserviceaccount.com"
                .into(),
        ));
    }
    let Some(credentials_file) = credentials_file else {
        return Err(invalid(
            "CMEK_GCP_CREDENTIALS_FILE",
            "the Google Cloud provider needs the service account's key file (CMEK_GCP_CREDENTIALS_FILE or GOOGLE_APPLICATION_CREDENTIALS)".into(),
        ));
    };
    // Only the two fields that say whose key it is are read here; the private key is left to
    // the client (and never logged).
    #[derive(serde::Deserialize)]
    struct KeyFile {
        #[serde(rename = "type")]
        kind: String,
        client_email: String,
    }
    let key_file: KeyFile = std::fs::read(&credentials_file)
        .map_err(|e| {
            invalid(
                "CMEK_GCP_CREDENTIALS_FILE",
                format!("{}: {e}", credentials_file.display()),
            )
        })
        .and_then(|raw| {
            serde_json::from_slice(&raw).map_err(|_| {
                invalid(
                    "CMEK_GCP_CREDENTIALS_FILE",
                    format!(
                        "{} is not a service account key file (JSON with type and client_email)",
                        credentials_file.display()
                    ),
                )
            })
        })?;
    if key_file.kind != "service_account" {
        return Err(invalid(
            "CMEK_GCP_CREDENTIALS_FILE",
            format!(
                "{} is of type {:?}; a service account key file is needed",
                credentials_file.display(),
                key_file.kind
            ),
        ));
    }
    if key_file.client_email != service_account {
        return Err(invalid(
            "CMEK_GCP_SERVICE_ACCOUNT",
            format!(
                "is {service_account}, but the key file is for {}: customers would grant an account the console does not use",
                key_file.client_email
            ),
        ));
    }
    let endpoint = match endpoint.map(|e| e.trim().trim_end_matches('/').to_owned()) {
        None => None,
        Some(raw) => {
            let url = url::Url::parse(&raw).ok();
            let loopback_http = url.as_ref().is_some_and(|u| {
                u.scheme() == "http"
                    && match u.host() {
                        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                        Some(url::Host::Domain(d)) => d == "localhost",
                        None => false,
                    }
            });
            let fine = url.as_ref().is_some_and(|u| {
                (plain_https(u) || loopback_http) && u.path().trim_end_matches('/').is_empty()
            });
            if !fine {
                return Err(invalid(
                    "CMEK_GCP_KMS_ENDPOINT",
                    "must be an https URL with no path, query or user (plain http only to a loopback address), e.g. https://cloudkms.googleapis.com".into(),
                ));
            }
            Some(raw)
        }
    };
    Ok(Some(GcpSettings {
        service_account,
        credentials_file,
        endpoint,
    }))
}

/// An https URL with a host and nothing that a path appended to it would break.
fn plain_https(u: &url::Url) -> bool {
    u.scheme() == "https"
        && u.host_str().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && u.query().is_none()
        && u.fragment().is_none()
}

fn lookup(vars: &[(String, String)], name: &str) -> Option<String> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

fn duration_setting(
    name: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, SettingsError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(&text).ok_or_else(|| SettingsError::Invalid {
            name,
            reason: format!("`{text}` is not a duration like `90s`, `5m`, `8h` or `7d`"),
        }),
    }
}

/// Parses `<n><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `CMEK_*` name this file reads is known, so setting it draws no "unknown
    /// setting" warning (two documented settings once did), and the README explains it.
    #[test]
    fn every_setting_read_is_known_and_documented() {
        let source = include_str!("settings.rs");
        let readme = include_str!("../../README.md");
        let names: std::collections::BTreeSet<&str> = source
            .match_indices("\"CMEK_")
            .map(|(at, _)| {
                let name = &source[at + 1..];
                &name[..name
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(name.len())]
            })
            // This test's own pattern.
            .filter(|name| *name != "CMEK_")
            .collect();
        assert!(names.len() > 30, "{names:?}");
        for name in names {
            assert!(
                KNOWN_VARIABLES.contains(&name),
                "{name} is read but not known"
            );
            assert!(readme.contains(name), "{name} is not in the README");
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m5"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }

    #[test]
    fn a_bad_environment_name_is_refused_with_the_variable_named() {
        let err = Settings::from_vars(&[("CMEK_ENV", "prod")]).err();
        assert!(matches!(
            err,
            Some(SettingsError::Invalid {
                name: "CMEK_ENV",
                ..
            })
        ));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let parsed: Result<FileSettings, _> = toml::from_str("lisen = \"0.0.0.0:1\"");
        assert!(parsed.is_err());
    }
}
