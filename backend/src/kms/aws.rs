//! AWS KMS through aws-sdk-kms, with STS AssumeRole (ExternalId = the organization id) for
//! keys reached through a customer's role. Honours the standard AWS variables
//! (`AWS_ENDPOINT_URL`, credentials, profile). The SDK's own retries are off: only throttling
//! is retried, here, with backoff; timeouts and refusals are reported at once.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::config::Region;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use secrecy::ExposeSecret;
use tokio::sync::Mutex;

use super::KmsTimeouts;
use crate::domain::keys::arn::KmsKeyArn;
use crate::domain::keys::{AwsAccess, KeyRef};
use crate::domain::kms::{
    DataKey, EncryptionContext, KeyDescription, KeyProvider, KeyState, KmsError, PlaintextKey,
};
use crate::settings::AwsSettings;

type Credentials = aws_sdk_kms::config::Credentials;

pub struct AwsKms {
    base: SdkConfig,
    timeouts: KmsTimeouts,
    /// Assumed-role credentials by (role ARN, external id), until shortly before they expire.
    assumed: Mutex<HashMap<(String, String), (Credentials, SystemTime)>>,
}

impl AwsKms {
    /// The SDK's default configuration chain, with the settings' endpoint and static
    /// credentials applied when given (so each test app can point at its own KMS).
    pub async fn new(settings: &AwsSettings, timeouts: KmsTimeouts) -> Self {
        // An explicit region keeps the SDK from asking the instance metadata service.
        let region = settings
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned());
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose_secret(),
                settings
                    .session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                None,
                "cmek-console-settings",
            ));
        }
        let base = loader
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeouts.connect)
                    .operation_attempt_timeout(timeouts.call)
                    .operation_timeout(timeouts.call)
                    .build(),
            )
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        Self {
            base,
            timeouts,
            assumed: Mutex::new(HashMap::new()),
        }
    }

    fn kms(&self, region: &str, credentials: Option<Credentials>) -> aws_sdk_kms::Client {
        let mut config =
            aws_sdk_kms::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(credentials) = credentials {
            config = config.credentials_provider(credentials);
        }
        aws_sdk_kms::Client::from_conf(config.build())
    }

    async fn assume(
        &self,
        role_arn: &str,
        external_id: &str,
        region: &str,
    ) -> Result<Credentials, KmsError> {
        let cache_key = (role_arn.to_owned(), external_id.to_owned());
        if let Some((credentials, until)) = self.assumed.lock().await.get(&cache_key)
            && *until > SystemTime::now()
        {
            return Ok(credentials.clone());
        }
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&self.base)
                .region(aws_sdk_sts::config::Region::new(region.to_owned()))
                .build(),
        );
        let output = sts
            .assume_role()
            .role_arn(role_arn)
            .external_id(external_id)
            .role_session_name("cmek-console")
            .duration_seconds(900)
            .send()
            .await
            .map_err(|err| match classify(err) {
                KmsError::AccessDenied { code, message } => KmsError::AccessDenied {
                    code,
                    message: format!("could not assume {role_arn}: {message}"),
                },
                other => other,
            })?;
        let Some(c) = output.credentials else {
            return Err(KmsError::Other {
                code: "AssumeRole".into(),
                message: "STS returned no credentials".into(),
            });
        };
        let expires = SystemTime::try_from(c.expiration).unwrap_or_else(|_| SystemTime::now());
        let credentials = Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            Some(expires),
            "cmek-console-assume-role",
        );
        let refresh_at = expires
            .checked_sub(Duration::from_secs(120))
            .unwrap_or(expires);
        self.assumed
            .lock()
            .await
            .insert(cache_key, (credentials.clone(), refresh_at));
        Ok(credentials)
    }

    async fn client_for<'k>(
        &self,
        key: &'k KeyRef,
    ) -> Result<(aws_sdk_kms::Client, &'k KmsKeyArn), KmsError> {
        let KeyRef::Aws { arn, access } = key else {
            return Err(KmsError::Other {
                code: "WrongProvider".into(),
                message: "not an AWS key".into(),
            });
        };
        let region = arn.region().as_str();
        let credentials = match access {
            AwsAccess::KeyPolicy => None,
            AwsAccess::Role {
                role_arn,
                external_id,
            } => Some(self.assume(role_arn.as_str(), external_id, region).await?),
        };
        Ok((self.kms(region, credentials), arn))
    }

    /// Retries a call that was throttled, with exponential backoff; anything else returns.
    async fn throttled<T, F, Fut>(&self, mut call: F) -> Result<T, KmsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, KmsError>>,
    {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match call().await {
                Err(KmsError::Throttled { .. }) if attempt < self.timeouts.throttle_attempts => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The console could not even send the call (no credentials, a bad endpoint...): the cause
/// is the operator's business, so it goes to the log and the user gets a plain sentence.
fn configuration_error(err: &(dyn std::error::Error + 'static)) -> KmsError {
    tracing::error!(error = %DisplayErrorContext(err), "AWS call could not be made");
    KmsError::Misconfigured(
        "the console's AWS configuration could not make the call; its operator's log has the cause"
            .into(),
    )
}

/// Sorts an SDK failure into the kinds the console acts on. moto answers an IAM denial with
/// HTTP 403 and a body the SDK cannot parse (no error code), so the status counts too.
fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: SdkError<E, HttpResponse>,
) -> KmsError {
    let message = err.message().map(str::to_owned).unwrap_or_else(|| {
        let status = err.raw_response().map(|r| r.status().as_u16());
        format!(
            "the KMS gave no message (HTTP {})",
            status.unwrap_or_default()
        )
    });
    match &err {
        SdkError::TimeoutError(_) => {
            return KmsError::Unreachable("the KMS did not answer in time".into());
        }
        SdkError::DispatchFailure(failure) => {
            // Only a request the SDK could not even make is ours to fix; a connection that
            // failed or was cut in any other way (reset, closed before the answer, TLS) is
            // the KMS being out of reach, never a revocation.
            return if failure.is_timeout() {
                KmsError::Unreachable("the KMS did not answer in time".into())
            } else if failure.is_user() {
                configuration_error(&err)
            } else {
                KmsError::Unreachable("the connection to the KMS failed".into())
            };
        }
        SdkError::ConstructionFailure(_) => return configuration_error(&err),
        _ => {}
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    match (code.as_deref(), status) {
        (
            Some(
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId",
            ),
            _,
        )
        | (None, Some(401 | 403)) => KmsError::AccessDenied {
            code: code.clone().unwrap_or_else(|| "AccessDenied".into()),
            message,
        },
        (Some(c @ "DisabledException"), _) => KmsError::Disabled { code: c.into() },
        (Some(c @ "KMSInvalidStateException"), _) => KmsError::PendingDeletion { code: c.into() },
        (Some(c @ "NotFoundException"), _) => KmsError::NotFound { code: c.into() },
        (
            Some(
                c @ ("InvalidKeyUsageException"
                | "IncorrectKeyException"
                | "UnsupportedOperationException"),
            ),
            _,
        ) => KmsError::WrongKeyUsage { code: c.into() },
        (Some("ThrottlingException" | "LimitExceededException" | "RequestLimitExceeded"), _)
        | (None, Some(429)) => KmsError::Throttled {
            code: code.clone().unwrap_or_else(|| "ThrottlingException".into()),
        },
        (Some("KMSInternalException" | "DependencyTimeoutException" | "ServiceUnavailable"), _)
        | (None, Some(500..=599)) => KmsError::Unreachable(format!(
            "the KMS answered with an error ({})",
            code.clone().unwrap_or_else(|| "HTTP 5xx".into())
        )),
        (Some(c), _) => KmsError::Other {
            code: c.to_owned(),
            message,
        },
        (None, s) => KmsError::Other {
            code: s
                .map(|s| format!("HTTP {s}"))
                .unwrap_or_else(|| "Unknown".into()),
            message,
        },
    }
}

fn region_of_arn(arn: &str) -> Option<String> {
    arn.split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

#[async_trait]
impl KeyProvider for AwsKms {
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, KmsError> {
        let (client, arn) = self.client_for(key).await?;
        let output = self
            .throttled(|| async {
                client
                    .describe_key()
                    .key_id(arn.as_str())
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        let Some(meta) = output.key_metadata else {
            return Err(KmsError::Other {
                code: "DescribeKey".into(),
                message: "no key metadata returned".into(),
            });
        };
        let state = match meta.key_state.as_ref().map(|s| s.as_str()) {
            Some("Enabled") => KeyState::Enabled,
            Some("Disabled") => KeyState::Disabled,
            Some("PendingDeletion" | "PendingReplicaDeletion") => KeyState::PendingDeletion,
            Some(other) => KeyState::Other(other.to_owned()),
            None if meta.enabled => KeyState::Enabled,
            None => KeyState::Disabled,
        };
        let key_id = meta.arn.clone().unwrap_or_else(|| meta.key_id.clone());
        Ok(KeyDescription {
            azure: None,
            gcp: None,
            region: region_of_arn(&key_id),
            key_id,
            state,
            spec: meta
                .key_spec
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            usage: meta
                .key_usage
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
        })
    }

    async fn generate_data_key(
        &self,
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let (client, arn) = self.client_for(key).await?;
        let mut output = self
            .throttled(|| async {
                client
                    .generate_data_key()
                    .key_id(arn.as_str())
                    .key_spec(DataKeySpec::Aes256)
                    .set_encryption_context(Some(context_map(context)))
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        let (Some(plaintext), Some(wrapped)) =
            (output.plaintext.take(), output.ciphertext_blob.take())
        else {
            return Err(KmsError::Other {
                code: "GenerateDataKey".into(),
                message: "no data key returned".into(),
            });
        };
        Ok(DataKey {
            plaintext: PlaintextKey::new(plaintext.into_inner()),
            wrapped: wrapped.into_inner(),
        })
    }

    async fn decrypt_data_key(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<PlaintextKey, KmsError> {
        let (client, arn) = self.client_for(key).await?;
        let mut output = self
            .throttled(|| async {
                client
                    .decrypt()
                    .key_id(arn.as_str())
                    .ciphertext_blob(Blob::new(wrapped.to_vec()))
                    .set_encryption_context(Some(context_map(context)))
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        output
            .plaintext
            .take()
            .map(|p| PlaintextKey::new(p.into_inner()))
            .ok_or_else(|| KmsError::Other {
                code: "Decrypt".into(),
                message: "no plaintext returned".into(),
            })
    }

    /// Encrypt under the key, with the same encryption context GenerateDataKey took: the
    /// result is a ciphertext blob Decrypt opens as it opens a generated one.
    async fn wrap_data_key(
        &self,
        key: &KeyRef,
        plaintext: &PlaintextKey,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let (client, arn) = self.client_for(key).await?;
        let mut output = self
            .throttled(|| async {
                client
                    .encrypt()
                    .key_id(arn.as_str())
                    .plaintext(Blob::new(plaintext.expose().to_vec()))
                    .set_encryption_context(Some(context_map(context)))
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        output
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .ok_or_else(|| KmsError::Other {
                code: "Encrypt".into(),
                message: "no ciphertext returned".into(),
            })
    }

    async fn rotation_enabled(&self, key: &KeyRef) -> Result<Option<bool>, KmsError> {
        let (client, arn) = self.client_for(key).await?;
        let output = self
            .throttled(|| async {
                client
                    .get_key_rotation_status()
                    .key_id(arn.as_str())
                    .send()
                    .await
                    .map_err(classify)
            })
            .await?;
        Ok(Some(output.key_rotation_enabled))
    }
}
