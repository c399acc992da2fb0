//! `spawn_app()` and the `TestApp` that tests drive: one method per kind of request, a
//! browser-like client that keeps cookies and does not follow redirects, and helpers that
//! act as each role.

use std::path::PathBuf;
use std::sync::Arc;

use cmek_console::domain::Console;
use cmek_console::domain::clock::ManualClock;
use cmek_console::domain::identity::Role;
use cmek_console::settings::Settings;
use cmek_console::startup::Application;
use reqwest::header::{HeaderMap, HeaderValue, ORIGIN};
use reqwest::{Client, Response};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::Value;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub console: Console,
    pub clock: Arc<ManualClock>,
    /// The background workers of this instance (to put faults into them).
    pub workers: Arc<cmek_console::supervisor::Workers>,
    pub database_url: String,
    /// The link printed at start for the first owner.
    pub sign_in_url: String,
    /// Plain client: no cookies, no Origin header (scripts, attackers).
    pub api: Client,
    data_dir: PathBuf,
    /// Declared before the data directory so the database goes first.
    _database: Option<DroppedDatabase>,
    _cleanup: TempDir,
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fresh_database(dir: &TempDir) -> String {
    match std::env::var("CMEK_TEST_POSTGRES_URL") {
        Ok(admin_url) if !admin_url.is_empty() => create_postgres_database(&admin_url).await,
        _ => format!("sqlite://{}?mode=rwc", dir.0.join("test.sqlite3").display()),
    }
}

/// Drops a test's PostgreSQL database when the test ends (`WITH (FORCE)` closes the app's
/// connections), from a thread of its own since `Drop` cannot wait on the test's runtime.
pub struct DroppedDatabase {
    admin_url: String,
    name: String,
}

impl Drop for DroppedDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// The database a URL names, if it is a test database on PostgreSQL (dropped through the
/// server's `postgres` database).
fn test_database(url: &str) -> Option<DroppedDatabase> {
    let (base, name) = url.rsplit_once('/')?;
    (url.starts_with("postgres") && name.starts_with("cmek_test_")).then(|| DroppedDatabase {
        admin_url: format!("{base}/postgres"),
        name: name.to_owned(),
    })
}

/// A new, empty database on the PostgreSQL server `admin_url` points at; returns its URL.
pub async fn create_postgres_database(admin_url: &str) -> String {
    let name = format!("cmek_test_{}", Uuid::new_v4().simple());
    let admin = Database::connect(admin_url)
        .await
        .expect("PostgreSQL reachable");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// An app with extra settings (AWS endpoint and credentials, `CMEK_ENV`, ...).
/// An app with a provider's `settings`, `extra` overriding or adding to them.
pub async fn spawn_app_with_settings(
    settings: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut settings = settings;
    for (k, v) in extra {
        settings.retain(|(name, _)| name != k);
        settings.push(((*k).to_owned(), (*v).to_owned()));
    }
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    spawn_app_with(&pairs).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let dir = TempDir(std::env::temp_dir().join(format!("cmek-test-{}", Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let database_url = fresh_database(&dir).await;
    let data_dir = dir.0.display().to_string();
    let mut app = start(database_url, &data_dir, dir, extra).await;
    app._database = test_database(&app.database_url);
    app
}

/// A copy of an installation made by an earlier version (tests/fixtures/upgrade/<name>: its
/// SQLite database `cmek-console.sqlite3` and its key files), for `spawn_app_in`.
pub fn copy_fixture(name: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let fixture = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/upgrade"
    ))
    .join(name);
    let dir = TempDir(std::env::temp_dir().join(format!("cmek-upgrade-{}", Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(&fixture).expect("the fixture") {
        let from = entry.unwrap().path();
        let to = dir.0.join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// The SQLite URL of an installation's database in `dir`.
pub fn fixture_database(dir: &TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.0.join("cmek-console.sqlite3").display()
    )
}

/// An app started on an installation copied by `copy_fixture`, as an upgrade starts it.
pub async fn spawn_app_in(dir: TempDir) -> TestApp {
    let database_url = fixture_database(&dir);
    let data_dir = dir.0.display().to_string();
    start(database_url, &data_dir, dir, &[]).await
}

/// An app upgraded from the installation `name` (tests/fixtures/upgrade). When the suite
/// runs on PostgreSQL, the installation that version made on PostgreSQL (`postgres.sql`, a
/// `pg_dump --inserts` of its database, beside the same key files) is restored into a new
/// database and upgraded there; an installation with no such dump upgrades on SQLite.
pub async fn spawn_app_from_fixture(name: &str) -> TestApp {
    let dir = copy_fixture(name);
    let dump = dir.0.join("postgres.sql");
    match std::env::var("CMEK_TEST_POSTGRES_URL") {
        Ok(admin_url) if !admin_url.is_empty() && dump.exists() => {
            let database_url = create_postgres_database(&admin_url).await;
            restore_dump(&database_url, &dump).await;
            let data_dir = dir.0.display().to_string();
            let mut app = start(database_url.clone(), &data_dir, dir, &[]).await;
            app._database = test_database(&database_url);
            app
        }
        _ => spawn_app_in(dir).await,
    }
}

/// Runs a plain-text `pg_dump` on a connection of its own (the dump empties `search_path`
/// for the session it runs in).
async fn restore_dump(database_url: &str, dump: &std::path::Path) {
    let sql = std::fs::read_to_string(dump).expect("the dump");
    let db = Database::connect(
        sea_orm::ConnectOptions::new(database_url.to_owned())
            .max_connections(1)
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .expect("PostgreSQL reachable");
    db.execute_unprepared(&sql)
        .await
        .expect("the dump restores");
    db.close().await.expect("closed");
}

/// An app on a database the test prepared itself (a second PostgreSQL server, say).
pub async fn spawn_app_on(database_url: &str, extra: &[(&str, &str)]) -> TestApp {
    let dir = TempDir(std::env::temp_dir().join(format!("cmek-test-{}", Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let data_dir = dir.0.display().to_string();
    let mut app = start(database_url.to_owned(), &data_dir, dir, extra).await;
    app._database = test_database(database_url);
    app
}

async fn start(
    database_url: String,
    data_dir: &str,
    cleanup: TempDir,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut vars = vec![
        ("CMEK_LISTEN", "127.0.0.1:0"),
        ("CMEK_DATA_DIR", data_dir),
        ("DATABASE_URL", database_url.as_str()),
    ];
    vars.extend_from_slice(extra);
    // A refused key fails its test at once unless a test asks for the wait (the first
    // setting of a name wins).
    vars.push(("CMEK_KEY_TEST_PROPAGATION", "0s"));
    let settings = Settings::from_vars(&vars).expect("settings");
    let clock = Arc::new(ManualClock::starting_now());
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let console = app.console();
    let workers = app.workers();
    let sign_in_url = app.sign_in_url().unwrap_or_default();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        console,
        clock,
        workers,
        database_url,
        sign_in_url,
        api: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        data_dir: PathBuf::from(data_dir),
        _database: None,
        _cleanup: cleanup,
    }
}

impl TestApp {
    /// Another console process on the same database and data directory, as a second
    /// instance behind a load balancer would be.
    pub async fn another_instance(&self) -> TestApp {
        self.another_instance_with(&[]).await
    }

    /// Another instance with settings of its own (the same object storage, say).
    pub async fn another_instance_with(&self, extra: &[(&str, &str)]) -> TestApp {
        let cleanup = TempDir(std::env::temp_dir().join(format!("cmek-test-{}", Uuid::new_v4())));
        let data_dir = self.data_dir.display().to_string();
        start(self.database_url.clone(), &data_dir, cleanup, extra).await
    }

    /// The first organization's id (the one the start made, and the operator's).
    pub async fn first_organization(&self) -> Uuid {
        self.console
            .identity()
            .operator(None)
            .await
            .expect("operator")
            .organization_id
    }

    /// Adds an owner to the first organization, as an accepted invitation would.
    pub async fn add_owner(&self, name: &str) -> Uuid {
        let id = Uuid::now_v7();
        let organization = self.first_organization().await;
        let db = self.db().await;
        let backend = db.get_database_backend();
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DatabaseBackend::Postgres => {
                    "INSERT INTO users (id, organization_id, display_name, role, created_at) \
                     VALUES ($1, $2, $3, 'owner', $4)"
                }
                _ => {
                    "INSERT INTO users (id, organization_id, display_name, role, created_at) \
                     VALUES (?, ?, ?, 'owner', ?)"
                }
            },
            [
                id.into(),
                organization.into(),
                name.into(),
                chrono::Utc::now().into(),
            ],
        ))
        .await
        .unwrap();
        id
    }

    /// A browser signed in as the first owner, who is then made `role` (another owner is
    /// added so the organization keeps one).
    pub async fn signed_in_as(&self, role: Role) -> Client {
        let browser = self.signed_in_owner().await;
        let first = self
            .console
            .identity()
            .first_owner()
            .await
            .unwrap()
            .unwrap();
        let other = self.add_owner("stand-in owner").await;
        let organization = first.organization_id;
        let caller = cmek_console::domain::identity::Caller {
            organization_id: organization,
            actor: cmek_console::domain::identity::Actor::User {
                id: other,
                name: "stand-in owner".into(),
            },
            role: Role::Owner,
            source_ip: None,
            session_id: None,
        };
        self.console
            .identity()
            .change_role(&caller, first.id, role)
            .await
            .unwrap();
        browser
    }

    /// This instance's clusters service.
    pub fn clusters(&self) -> &cmek_console::domain::clusters::Clusters {
        self.console.clusters().expect("clusters are configured")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A browser: keeps cookies, sends the console's Origin on every request, and does not
    /// follow redirects so tests can see them.
    pub fn browser(&self) -> Client {
        let mut headers = HeaderMap::new();
        headers.insert(
            ORIGIN,
            HeaderValue::from_str(&self.address).expect("origin"),
        );
        Client::builder()
            .cookie_store(true)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// `audit verify` over every organization's chain (format 2), with no kept checkpoint.
    pub async fn verify_chains(
        &self,
    ) -> Result<(u64, u64), (String, cmek_console::crypto::audit_chain::Broken)> {
        self.console
            .audit()
            .verify_org_chains(None, &[])
            .await
            .unwrap()
    }

    /// A page's HTML as a newly signed-in first owner sees it.
    pub async fn owner_page(&self, path: &str) -> String {
        self.signed_in_owner()
            .await
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A browser signed in as the first owner: with the bootstrap link the first time, with
    /// a fresh link (as `cmek-console sign-in-link` prints) after that.
    pub async fn signed_in_owner(&self) -> Client {
        let browser = self.browser();
        let mut response = self.redeem_link(&browser, &self.sign_in_url).await;
        if response.status() == 401 {
            let owner = self
                .console
                .identity()
                .first_owner()
                .await
                .unwrap()
                .unwrap();
            let token = self
                .console
                .identity()
                .issue_sign_in_link(&owner)
                .await
                .unwrap();
            response = self
                .redeem_link(&browser, &format!("x?token={token}"))
                .await;
        }
        assert_eq!(response.status(), 303, "sign-in redirects to the console");
        browser
    }

    pub async fn redeem_link(&self, browser: &Client, link: &str) -> Response {
        let token = link.split("token=").nth(1).expect("token in link");
        browser
            .post(self.url("/sign-in/link"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("request")
    }

    /// An owner's API key in a second organization of this install: someone who must find
    /// nothing of the first one.
    pub async fn stranger_key(&self) -> String {
        let (other, _) = self
            .console
            .identity()
            .create_organization("Intruders", "mallory@example.com")
            .await
            .expect("second organization");
        let operator = self
            .console
            .identity()
            .operator(Some(other.id))
            .await
            .expect("operator");
        self.console
            .identity()
            .create_api_key(&operator, "stranger", Role::Owner)
            .await
            .expect("api key")
            .secret
    }

    /// A fresh API key with the given role, as `cmek-console api-key create` makes it.
    pub async fn api_key(&self, role: Role) -> String {
        let operator = self
            .console
            .identity()
            .operator(None)
            .await
            .expect("operator");
        self.console
            .identity()
            .create_api_key(&operator, &format!("test {}", role.as_str()), role)
            .await
            .expect("api key")
            .secret
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.api
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// Starts a backup of the cluster (202, `creating`) and waits until its job has ended:
    /// the backup as it ended (`available` or `failed`).
    pub async fn take_backup(&self, key: &str, cluster: &str) -> Value {
        let started = self
            .api
            .post(self.url(&format!("/api/v1/clusters/{cluster}/backups")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        assert_eq!(started.status(), 202, "a backup starts as a job");
        let backup: Value = started.json().await.expect("a backup");
        assert_eq!(backup["state"], "creating");
        self.backup_when_done(key, backup["id"].as_str().expect("an id"))
            .await
    }

    /// Restores a backup (202, a new cluster `creating`) and waits until its job has ended:
    /// the cluster as it ended (`available` or `failed`).
    pub async fn restore_backup(&self, key: &str, backup: &str, body: Option<Value>) -> Value {
        let mut request = self
            .api
            .post(self.url(&format!("/api/v1/backups/{backup}/restore")))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = request.send().await.expect("request");
        assert_eq!(started.status(), 202, "a restore starts as a job");
        let cluster: Value = started.json().await.expect("a cluster");
        assert_eq!(cluster["state"], "creating");
        assert_eq!(cluster["restore"]["backup_id"], backup);
        let id = cluster["id"].as_str().expect("an id");
        self.once_created(key, &format!("/api/v1/clusters/{id}"))
            .await
    }

    /// The backup once its job has ended (polled; a minute at most).
    pub async fn backup_when_done(&self, key: &str, backup: &str) -> Value {
        self.once_created(key, &format!("/api/v1/backups/{backup}"))
            .await
    }

    /// The resource at `path` once it is no longer `creating` (polled; a minute at most).
    async fn once_created(&self, key: &str, path: &str) -> Value {
        for _ in 0..1200 {
            let now: Value = self.get(path, key).await.json().await.expect("a resource");
            if now["state"] != "creating" {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{path} was still being created after a minute");
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Response {
        self.api
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch_json(&self, path: &str, key: &str, body: &Value) -> Response {
        self.api
            .patch(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, key: &str) -> Response {
        self.api
            .delete(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    pub async fn create_project(&self, key: &str, name: &str, cmek: bool) -> Value {
        let response = self
            .post_json(
                "/api/v1/projects",
                key,
                &serde_json::json!({ "name": name, "cmek_enabled": cmek }),
            )
            .await;
        assert_eq!(response.status(), 201, "project {name} created");
        response.json().await.expect("json")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// A direct connection to the app's database, for assertions on what is stored and for
    /// tampering with it.
    pub async fn db(&self) -> DatabaseConnection {
        Database::connect(&self.database_url)
            .await
            .expect("database")
    }
}

/// Reads a problem document and checks its media type.
pub async fn problem(response: Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    response.json().await.expect("problem json")
}

pub fn rule(slug: &str) -> String {
    format!("https://cmek-console.dev/rules/{slug}")
}

pub fn problem_type(slug: &str) -> String {
    format!("https://cmek-console.dev/problems/{slug}")
}

/// A check of a checklist by its id.
pub fn check<'a>(checklist: &'a Value, id: &str) -> &'a Value {
    checklist["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {checklist}"))
}

/// The names of the fields a problem names.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One call to a KMS stand-in's control API: JSON in, the JSON answer out (`null` when
/// empty); any answer but 2xx fails the test, with what the stand-in said.
pub async fn stand_in_control(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> Value {
    let response = http
        .request(method, &url)
        .json(&body)
        .send()
        .await
        .expect("stand-in control");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "control {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
