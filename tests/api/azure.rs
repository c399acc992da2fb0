//! The Azure Key Vault and Entra stand-in for tests (tests/azure/standin.py, started by
//! scripts/test): one HTTPS server with a test CA that plays the Entra token authority and
//! any number of vaults, set up through its `/_control` endpoints. No Key Vault emulator can
//! be installed here; the stand-in speaks the public REST protocol and is itself checked with
//! Microsoft's Python SDK (tests/azure/test_standin.py).

use serde_json::{Value, json};
use uuid::Uuid;

use cmek_console::domain::identity::Role;

use crate::helpers::{TestApp, spawn_app_with_settings, stand_in_control};
use crate::moto::service;

pub struct Standin {
    pub url: String,
    pub ca: String,
    http: reqwest::Client,
}

impl Standin {
    pub fn open() -> Self {
        let url = service("CMEK_TEST_AZURE_URL");
        let ca = service("CMEK_TEST_AZURE_CA");
        let pem = std::fs::read(&ca).expect("the stand-in's CA");
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"))
            .build()
            .unwrap();
        Self { url, ca, http }
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        stand_in_control(
            &self.http,
            method,
            format!("{}/_control{path}", self.url),
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

/// A platform application, a customer tenant where it has a service principal, and a vault
/// in that tenant: what one test needs, none of it shared with another test.
pub struct Azure {
    pub standin: Standin,
    pub app_id: String,
    pub secret: String,
    pub tenant: String,
    pub vault: String,
}

pub const REGION: &str = "eastus";

impl Azure {
    pub async fn new() -> Self {
        Self::in_region(REGION, true).await
    }

    pub async fn in_region(region: &str, purge_protection: bool) -> Self {
        let standin = Standin::open();
        let app_id = Uuid::new_v4().to_string();
        let secret = format!("secret-{}", Uuid::new_v4().simple());
        standin
            .post(
                "/apps",
                json!({ "client_id": app_id, "client_secret": secret }),
            )
            .await;
        let tenant = Uuid::new_v4().to_string();
        standin
            .post(
                "/tenants",
                json!({ "tenant_id": tenant, "service_principals": [app_id] }),
            )
            .await;
        let azure = Self {
            standin,
            app_id,
            secret,
            tenant,
            vault: String::new(),
        };
        let vault = azure
            .vault_in(&azure.tenant, region, purge_protection)
            .await;
        Self { vault, ..azure }
    }

    /// Another vault, in `tenant`.
    pub async fn vault_in(&self, tenant: &str, region: &str, purge_protection: bool) -> String {
        let name = format!("v{}", &Uuid::new_v4().simple().to_string()[..12]);
        self.standin
            .post(
                "/vaults",
                json!({ "name": name, "tenant_id": tenant, "region": region,
                        "purge_protection": purge_protection, "delay_seconds": 0 }),
            )
            .await;
        name
    }

    /// A key in the vault the platform may use, named as the console names keys of the
    /// console's project (a prefix of the test's own and the project's suffix); `spec`
    /// overrides the defaults (RSA 2048, wrapKey/unwrapKey allowed, enabled, granted to the
    /// platform's app). Its name.
    pub async fn key(&self, console: &Console, spec: Value) -> String {
        self.key_in(&self.vault, console, spec).await
    }

    pub async fn key_in(&self, vault: &str, console: &Console, spec: Value) -> String {
        let prefix = format!("k{}", &Uuid::new_v4().simple().to_string()[..6]);
        let name = console.key_name(&prefix).await;
        let mut body = json!({ "name": name, "kty": "RSA", "size": 2048,
            "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"], "enabled": true,
            "grants": [self.app_id] });
        if let (Some(body), Some(spec)) = (body.as_object_mut(), spec.as_object()) {
            for (k, v) in spec {
                body.insert(k.clone(), v.clone());
            }
        }
        self.standin
            .post(&format!("/vaults/{vault}/keys"), body)
            .await;
        name
    }

    /// A new version of a key (what rotation does).
    pub async fn rotate(&self, key: &str) -> Value {
        self.standin
            .post(
                &format!("/vaults/{}/keys", self.vault),
                json!({ "name": key, "kty": "RSA", "size": 2048,
                        "key_ops": ["wrapKey", "unwrapKey"], "enabled": true }),
            )
            .await
    }

    pub async fn patch_key(&self, key: &str, body: Value) -> Value {
        self.standin
            .patch(&format!("/vaults/{}/keys/{key}", self.vault), body)
            .await
    }

    pub async fn patch_vault(&self, body: Value) -> Value {
        self.standin
            .patch(&format!("/vaults/{}", self.vault), body)
            .await
    }

    /// The console's Azure settings, pointed at the stand-in.
    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("CMEK_AZURE_APP_ID".into(), self.app_id.clone()),
            ("CMEK_AZURE_APP_NAME".into(), "cmek-console-tests".into()),
            ("CMEK_AZURE_CLIENT_SECRET".into(), self.secret.clone()),
            ("AZURE_AUTHORITY_HOST".into(), self.standin.url.clone()),
            (
                "CMEK_AZURE_VAULT_URL_TEMPLATE".into(),
                format!("{}/{{vault}}", self.standin.url),
            ),
            ("CMEK_AZURE_CA_FILE".into(), self.standin.ca.clone()),
            ("CMEK_KMS_TIMEOUT".into(), "3s".into()),
        ]
    }

    /// A console on the stand-in with an owner's API key and a CMEK project.
    pub async fn console(&self) -> Console {
        self.console_with(&[]).await
    }

    pub async fn console_with(&self, extra: &[(&str, &str)]) -> Console {
        Console::new(self.app_with(extra).await).await
    }

    /// A console with these Azure settings, `extra` overriding or adding.
    pub async fn app_with(&self, extra: &[(&str, &str)]) -> TestApp {
        spawn_app_with_settings(self.settings(), extra).await
    }

    /// The request body for a key of this vault.
    pub fn body(&self, key: &str) -> Value {
        json!({ "provider": "azure_key_vault", "region": REGION, "vault_name": self.vault, "key_name": key })
    }
}

/// A console, an owner's API key and a CMEK project of it.
pub struct Console {
    pub app: TestApp,
    pub owner: String,
    pub project: String,
}

impl Console {
    /// An owner's API key and a CMEK project on `app`.
    pub async fn new(app: TestApp) -> Self {
        let owner = app.api_key(Role::Owner).await;
        let project = app.create_project(&owner, "payments", true).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            app,
            owner,
            project,
        }
    }

    /// The project's keys, as the API lists them.
    pub async fn keys(&self) -> Vec<Value> {
        let keys: Value = self
            .app
            .get(&self.keys_path(), &self.owner)
            .await
            .json()
            .await
            .unwrap();
        keys["items"].as_array().unwrap().clone()
    }

    /// Check now, for a saved key.
    pub async fn check_now(&self, key_id: &str) -> reqwest::Response {
        self.app
            .post_json(
                &format!("{}/{key_id}/check", self.keys_path()),
                &self.owner,
                &json!({}),
            )
            .await
    }

    /// The full key name the wizard shows for `prefix` (the project's suffix added).
    pub async fn key_name(&self, prefix: &str) -> String {
        let response = self
            .app
            .get(
                &format!(
                    "/api/v1/projects/{}/encryption-keys/azure-setup?region={REGION}&key_name_prefix={prefix}",
                    self.project
                ),
                &self.owner,
            )
            .await;
        assert_eq!(response.status(), 200);
        let setup: Value = response.json().await.unwrap();
        setup["key_name"].as_str().unwrap().to_owned()
    }

    pub fn keys_path(&self) -> String {
        format!("/api/v1/projects/{}/encryption-keys", self.project)
    }
}
