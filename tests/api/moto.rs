//! The KMS API server for tests: moto, started by scripts/test on loopback. Two servers: an
//! open one (any credentials) and one with IAM enforced, where access can be denied and
//! roles assumed. moto's gaps and how the tests meet them:
//! - key state is not enforced by moto itself: tests/moto/launcher.py adds it;
//! - a role trust policy must name the exact calling user (moto does not treat
//!   `arn:aws:iam::<account>:root` as the whole account), so test roles trust the console's
//!   IAM user; the policies the console renders for customers use `:root`, as AWS expects.

use aws_sdk_kms::config::{Credentials, Region};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use serde_json::json;

use crate::helpers::{TestApp, spawn_app_with};

/// moto's default account: the "platform account" in tests.
pub const ACCOUNT: &str = "123456789012";

/// A service a test needs. Such tests are `#[ignore]`d with the reason, so a plain
/// `cargo test` lists them as ignored instead of passing them; scripts/test starts the
/// services and runs them with `--include-ignored`. Run without its service, a test fails.
pub fn service(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{var} is not set: run the tests with scripts/test, which starts the services"),
    }
}

pub struct Moto {
    pub url: String,
    key: String,
    secret: String,
}

impl Moto {
    /// The open server; any credentials work.
    pub fn open() -> Self {
        Self {
            url: service("CMEK_TEST_MOTO_URL"),
            key: "testing".into(),
            secret: "testing".into(),
        }
    }

    /// The IAM-enforcing server, as its administrator.
    pub fn iam_admin() -> Self {
        Self {
            url: service("CMEK_TEST_IAM_MOTO_URL"),
            key: service("CMEK_TEST_IAM_ADMIN_KEY"),
            secret: service("CMEK_TEST_IAM_ADMIN_SECRET"),
        }
    }

    pub fn iam_identity(&self, who: &str) -> (String, String) {
        let upper = who.to_uppercase();
        (
            std::env::var(format!("CMEK_TEST_IAM_{upper}_KEY")).expect("identity key"),
            std::env::var(format!("CMEK_TEST_IAM_{upper}_SECRET")).expect("identity secret"),
        )
    }

    fn config(&self, region: &str) -> aws_sdk_kms::Config {
        aws_sdk_kms::Config::builder()
            .behavior_version_latest()
            .region(Region::new(region.to_owned()))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new(
                &self.key,
                &self.secret,
                None,
                None,
                "tests",
            ))
            .build()
    }

    pub fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::from_conf(self.config(region))
    }

    /// A new symmetric encrypt/decrypt key in `region`; its ARN.
    pub async fn create_key(&self, region: &str) -> String {
        self.create_key_with(
            region,
            KeySpec::SymmetricDefault,
            KeyUsageType::EncryptDecrypt,
        )
        .await
    }

    pub async fn create_key_with(
        &self,
        region: &str,
        spec: KeySpec,
        usage: KeyUsageType,
    ) -> String {
        let out = self
            .kms(region)
            .create_key()
            .key_spec(spec)
            .key_usage(usage)
            .send()
            .await
            .expect("CreateKey");
        out.key_metadata.and_then(|m| m.arn).expect("key ARN")
    }

    /// moto's DisableKey and EnableKeyRotation take the bare key id, not the ARN.
    fn key_id(arn: &str) -> &str {
        arn.rsplit("key/").next().unwrap_or(arn)
    }

    pub async fn disable_key(&self, region: &str, arn: &str) {
        self.kms(region)
            .disable_key()
            .key_id(Self::key_id(arn))
            .send()
            .await
            .expect("DisableKey");
    }

    pub async fn enable_rotation(&self, region: &str, arn: &str) {
        self.kms(region)
            .enable_key_rotation()
            .key_id(Self::key_id(arn))
            .send()
            .await
            .expect("EnableKeyRotation");
    }

    /// A role that trusts `principal` when it presents `external_id`, allowed to use KMS.
    pub async fn create_role(&self, name: &str, principal: &str, external_id: &str) -> String {
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::Config::builder()
                .behavior_version_latest()
                .region(aws_sdk_iam::config::Region::new("us-east-1"))
                .endpoint_url(&self.url)
                .credentials_provider(aws_sdk_iam::config::Credentials::new(
                    &self.key,
                    &self.secret,
                    None,
                    None,
                    "tests",
                ))
                .build(),
        );
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "AWS": principal },
                "Action": "sts:AssumeRole",
                "Condition": { "StringEquals": { "sts:ExternalId": external_id } },
            }],
        });
        let role = iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .expect("CreateRole");
        let permissions = json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": ["kms:*"], "Resource": "*" }],
        });
        iam.put_role_policy()
            .role_name(name)
            .policy_name("cmek")
            .policy_document(permissions.to_string())
            .send()
            .await
            .expect("PutRolePolicy");
        role.role.map(|r| r.arn).expect("role ARN")
    }

    /// An app whose AWS KMS is this server, acting with the given credentials.
    pub async fn app_as(&self, key: &str, secret: &str) -> TestApp {
        self.app_with(key, secret, &self.url, &[]).await
    }

    /// An app as `key`, reaching the KMS at `endpoint` (moto, or a proxy in front of it),
    /// with extra settings.
    pub async fn app_with(
        &self,
        key: &str,
        secret: &str,
        endpoint: &str,
        extra: &[(&str, &str)],
    ) -> TestApp {
        let mut settings = vec![
            ("CMEK_AWS_ACCOUNT_ID", ACCOUNT),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("CMEK_KMS_TIMEOUT", "3s"),
        ];
        settings.extend_from_slice(extra);
        spawn_app_with(&settings).await
    }

    pub fn credentials(&self) -> (&str, &str) {
        (&self.key, &self.secret)
    }

    pub async fn app(&self) -> TestApp {
        self.app_as(&self.key, &self.secret).await
    }
}
