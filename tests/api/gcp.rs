//! The Google Cloud KMS stand-in for tests (tests/gcp/standin.py, started by scripts/test):
//! one plain-HTTP server on loopback that speaks Cloud KMS's REST protocol, verifies the
//! self-signed JWTs of service-account key files, and is set up through `/_control`. No Cloud
//! KMS emulator can be installed here; the stand-in is itself checked with Google's Python
//! client (tests/gcp/test_standin.py).

use serde_json::{Value, json};
use uuid::Uuid;

use crate::azure::Console;
use crate::helpers::{TempDir, TestApp, spawn_app_with_settings, stand_in_control};
use crate::moto::service;

pub const REGION: &str = "us-east1";
pub const ENCRYPTER_DECRYPTER: &str = "roles/cloudkms.cryptoKeyEncrypterDecrypter";
pub const VIEWER: &str = "roles/cloudkms.viewer";

pub struct Standin {
    pub url: String,
    http: reqwest::Client,
}

impl Standin {
    pub fn open() -> Self {
        Self {
            url: service("CMEK_TEST_GCP_URL"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        stand_in_control(
            &self.http,
            method,
            format!("{}/_control/{path}", self.url),
            body,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::PATCH, path, body).await
    }
}

/// The platform's service account (its key file on disk) and a customer's Google Cloud
/// project: what one test needs, none of it shared with another test.
pub struct Gcp {
    pub standin: Standin,
    pub account: String,
    pub key_file: String,
    pub project: String,
    _dir: TempDir,
}

impl Gcp {
    pub async fn new() -> Self {
        let standin = Standin::open();
        let key_file = standin
            .post("serviceAccounts", json!({ "project": "platform-project" }))
            .await;
        let account = key_file["client_email"].as_str().unwrap().to_owned();
        let dir = TempDir(std::env::temp_dir().join(format!("cmek-gcp-{}", Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("platform-key.json");
        std::fs::write(&path, serde_json::to_vec(&key_file).unwrap()).unwrap();
        Self {
            standin,
            account,
            key_file: path.display().to_string(),
            project: format!("cust-{}", &Uuid::new_v4().simple().to_string()[..10]),
            _dir: dir,
        }
    }

    /// The console's Google Cloud settings, pointed at the stand-in.
    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("CMEK_GCP_SERVICE_ACCOUNT".into(), self.account.clone()),
            ("CMEK_GCP_CREDENTIALS_FILE".into(), self.key_file.clone()),
            ("CMEK_GCP_KMS_ENDPOINT".into(), self.standin.url.clone()),
            ("CMEK_KMS_TIMEOUT".into(), "3s".into()),
        ]
    }

    pub async fn console(&self) -> Console {
        self.console_with(&[]).await
    }

    pub async fn console_with(&self, extra: &[(&str, &str)]) -> Console {
        Console::new(self.app_with(extra).await).await
    }

    /// A console with these settings, `extra` overriding or adding.
    pub async fn app_with(&self, extra: &[(&str, &str)]) -> TestApp {
        spawn_app_with_settings(self.settings(), extra).await
    }

    /// A key in `location` named as the console's wizard names keys of `console`'s project
    /// for `region` (a prefix of the test's own and the suffix), granted both roles to the
    /// platform; `spec` overrides the control API's defaults. Its full name.
    pub async fn key(
        &self,
        console: &Console,
        region: &str,
        location: &str,
        spec: Value,
    ) -> String {
        let prefix = format!("k{}", &Uuid::new_v4().simple().to_string()[..6]);
        let setup = console.gcp_setup(region, &self.project, &prefix).await;
        let key_id = setup["key_id"].as_str().unwrap().to_owned();
        let member = format!("serviceAccount:{}", self.account);
        let mut body = json!({
            "project": self.project, "location": location, "keyRing": "cmek", "key": key_id,
            "rotationPeriod": "7776000s",
            "bindings": [{ "role": ENCRYPTER_DECRYPTER, "members": [member] },
                         { "role": VIEWER, "members": [member] }],
        });
        if let (Some(body), Some(spec)) = (body.as_object_mut(), spec.as_object()) {
            for (k, v) in spec {
                body.insert(k.clone(), v.clone());
            }
        }
        self.standin.post("cryptoKeys", body).await["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A control verb on a key or version (`disable`, `enable`, `scheduleDestroy`, ...).
    pub async fn act(&self, resource: &str, verb: &str, body: Value) -> Value {
        self.standin.post(&format!("{resource}:{verb}"), body).await
    }

    /// Version `n` of `key`.
    pub fn version(key: &str, n: u32) -> String {
        format!("{key}/cryptoKeyVersions/{n}")
    }

    pub fn body(key_name: &str) -> Value {
        json!({ "provider": "gcp_kms", "region": REGION, "key_name": key_name })
    }
}

impl Console {
    /// What the Google Cloud wizard shows for `prefix` in `region`, for `gcp_project`.
    pub async fn gcp_setup(&self, region: &str, gcp_project: &str, prefix: &str) -> Value {
        let response = self
            .app
            .get(
                &format!(
                    "/api/v1/projects/{}/encryption-keys/gcp-setup?region={region}&gcp_project_id={gcp_project}&key_name_prefix={prefix}",
                    self.project
                ),
                &self.owner,
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}
