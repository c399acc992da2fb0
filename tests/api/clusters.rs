//! Clusters with the built-in local KMS (no service needed): the rules R5-R7 and R11, data
//! sealed at rest per region, tampering refused, pause and resume, backups and restore, keys
//! in use, and what a crash leaves behind.

use std::path::{Path, PathBuf};

use cmek_console::domain::identity::Role;
use cmek_console::domain::local_kms::LocalKeyAction;
use cmek_console::supervisor::Fault;
use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::{TestApp, fields, problem, problem_type, rule, spawn_app};

pub struct Fixture {
    pub app: TestApp,
    pub owner: String,
    pub project: String,
    /// Local key id per region, as created.
    pub local_keys: Vec<(String, uuid::Uuid)>,
}

/// A CMEK project with a local key (and its encryption key) in each region.
pub async fn local_cmek(regions: &[&str]) -> Fixture {
    local_cmek_with(regions, &[]).await
}

/// As `local_cmek`, on an instance that runs no background work (its workers fail every
/// round): what a test needs to stop a console between a change and its reaction.
pub async fn local_cmek_quiet(regions: &[&str]) -> Fixture {
    local_cmek_with(
        regions,
        &[(
            "CMEK_TEST_WORKER_FAULTS",
            &cmek_console::startup::WORKERS.join(","),
        )],
    )
    .await
}

pub async fn local_cmek_with(regions: &[&str], settings: &[(&str, &str)]) -> Fixture {
    let app = crate::helpers::spawn_app_with(settings).await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "data", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let operator = app.console.identity().operator(None).await.unwrap();
    let mut local_keys = Vec::new();
    for region in regions {
        let key = app
            .console
            .keys()
            .create_local_key(&operator, &format!("key {region}"))
            .await
            .unwrap()
            .id;
        let created = app
            .post_json(
                &format!("/api/v1/projects/{project}/encryption-keys"),
                &owner,
                &json!({ "provider": "local", "region": region, "key_id": key }),
            )
            .await;
        assert_eq!(created.status(), 201, "key for {region}");
        local_keys.push(((*region).to_owned(), key));
    }
    Fixture {
        app,
        owner,
        project,
        local_keys,
    }
}

impl Fixture {
    pub async fn create(&self, body: Value) -> Response {
        self.app
            .post_json(
                &format!("/api/v1/projects/{}/clusters", self.project),
                &self.owner,
                &body,
            )
            .await
    }

    /// A cluster that was created; its JSON.
    pub async fn cluster(&self, name: &str, regions: &[&str]) -> Value {
        let response = self
            .create(json!({ "name": name, "provider": "local", "regions": regions }))
            .await;
        assert_eq!(response.status(), 201, "cluster {name} created");
        response.json().await.unwrap()
    }

    /// The id of the project's encryption key in `region`.
    pub async fn key_id(&self, region: &str) -> String {
        let keys: Value = self
            .app
            .get(
                &format!("/api/v1/projects/{}/encryption-keys", self.project),
                &self.owner,
            )
            .await
            .json()
            .await
            .unwrap();
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["region"] == region)
            .unwrap_or_else(|| panic!("no key in {region}: {keys}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The project's cluster list as the API answers it.
    pub async fn listed_clusters(&self) -> Value {
        self.app
            .get(
                &format!("/api/v1/projects/{}/clusters", self.project),
                &self.owner,
            )
            .await
            .json()
            .await
            .unwrap()
    }

    /// Sets the project's revocation policy to `stop`.
    pub async fn stop_on_revocation(&self) {
        let changed = self
            .app
            .patch_json(
                &format!("/api/v1/projects/{}", self.project),
                &self.owner,
                &json!({ "revocation_policy": "stop" }),
            )
            .await;
        assert_eq!(changed.status(), 200);
    }

    pub async fn disable_local_key(&self, region: &str) {
        let operator = self.app.console.identity().operator(None).await.unwrap();
        let key = self.local_keys.iter().find(|(r, _)| r == region).unwrap().1;
        self.app
            .console
            .keys()
            .change_local_key(&operator, key, LocalKeyAction::Disable)
            .await
            .unwrap();
    }
}

/// A cluster as the API reads it.
pub async fn read_cluster(app: &TestApp, key: &str, cluster: &str) -> Value {
    app.get(&format!("/api/v1/clusters/{cluster}"), key)
        .await
        .json()
        .await
        .unwrap()
}

pub fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

pub async fn put(app: &TestApp, key: &str, cluster: &str, name: &str, bytes: Vec<u8>) -> Response {
    app.api
        .put(app.url(&format!("/api/v1/clusters/{cluster}/objects/{name}")))
        .bearer_auth(key)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

pub async fn get(app: &TestApp, key: &str, cluster: &str, name: &str) -> Response {
    app.get(&format!("/api/v1/clusters/{cluster}/objects/{name}"), key)
        .await
}

pub async fn post(app: &TestApp, key: &str, path: &str) -> Response {
    app.api
        .post(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Pauses and resumes the cluster (the resume unwraps its data keys through the KMS again)
/// and reads `name` back: it must be `bytes`.
pub async fn pause_resume_and_read(
    app: &TestApp,
    key: &str,
    cluster: &str,
    name: &str,
    bytes: &[u8],
) {
    let paused = post(app, key, &format!("/api/v1/clusters/{cluster}/pause")).await;
    assert_eq!(paused.status(), 200, "{}", paused.text().await.unwrap());
    let resumed = post(app, key, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read = get(app, key, cluster, name).await.bytes().await.unwrap();
    assert_eq!(read.as_ref(), bytes);
}

/// Bytes that look like nothing else, so a scan for them cannot hit by accident.
pub fn marked(marker: &str, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        bytes.extend_from_slice(marker.as_bytes());
        bytes.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where the local storage keeps one region's copy of an object version.
fn blob(app: &TestApp, cluster: &str, region: &str, version: &str) -> PathBuf {
    app.data_dir()
        .join("storage/clusters")
        .join(cluster)
        .join(region)
        .join("objects")
        .join(version)
}

#[tokio::test]
async fn a_cmek_cluster_needs_an_active_key_in_each_of_its_regions() {
    let f = local_cmek(&["us-east-1"]).await;

    let refused = f
        .create(
            json!({ "name": "orders", "provider": "local", "regions": ["us-east-1", "eu-west-1"] }),
        )
        .await;

    assert_eq!(refused.status(), 409);
    let body = problem(refused).await;
    assert_eq!(body["type"], rule("key-required-for-region"));
    assert_eq!(fields(&body), vec!["regions"]);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("eu-west-1"), "{detail}");
    assert!(
        !detail.contains("us-east-1 ("),
        "the region with a key is not named: {detail}"
    );
    assert!(
        detail.contains("encryption-keys/new?provider=local&region=eu-west-1"),
        "{detail}"
    );
    // A key that is not active does not count (R5).
    f.disable_local_key("us-east-1").await;
    let check = post(
        &f.app,
        &f.owner,
        &format!(
            "/api/v1/projects/{}/encryption-keys/{}/check",
            f.project,
            list_keys(&f).await[0]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(check.status(), 200);
    let refused = f
        .create(json!({ "name": "orders", "provider": "local", "regions": ["us-east-1"] }))
        .await;
    assert_eq!(refused.status(), 409);
    assert!(
        problem(refused).await["detail"]
            .as_str()
            .unwrap()
            .contains("is disabled")
    );
}

async fn list_keys(f: &Fixture) -> Vec<Value> {
    let body: Value = f
        .app
        .get(
            &format!("/api/v1/projects/{}/encryption-keys", f.project),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_key_of_each_region_is_matched_and_named_on_the_cluster() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;

    let cluster = f.cluster("orders", &["eu-west-1", "us-east-1"]).await;

    assert_eq!(cluster["state"], "available");
    assert_eq!(cluster["tier"], "dedicated");
    assert_eq!(cluster["provider"], "local");
    let regions = cluster["regions"].as_array().unwrap();
    assert_eq!(regions[0]["region"], "eu-west-1");
    assert_eq!(regions[1]["region"], "us-east-1");
    for (region, local) in &f.local_keys {
        let row = regions
            .iter()
            .find(|r| r["region"] == region.as_str())
            .unwrap();
        assert_eq!(row["key_ref"], local.to_string());
    }
    let read: Value = f
        .app
        .get(&format!("/api/v1/clusters/{}", id(&cluster)), &f.owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["name"], "orders");
    let listed = f.listed_clusters().await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cmek_projects_hold_dedicated_clusters_only() {
    let f = local_cmek(&["us-east-1"]).await;

    let refused = f
        .create(json!({ "name": "cheap", "provider": "local", "regions": ["us-east-1"], "tier": "serverless" }))
        .await;

    assert_eq!(refused.status(), 422);
    let body = problem(refused).await;
    assert_eq!(body["type"], rule("cmek-dedicated-only"));
    assert_eq!(fields(&body), vec!["tier"]);
}

#[tokio::test]
async fn dual_region_backup_is_refused_in_cmek_projects() {
    let f = local_cmek(&["us-east-1"]).await;

    let refused = f
        .create(json!({
            "name": "twice", "provider": "local", "regions": ["us-east-1"],
            "backup": { "dual_region": true }
        }))
        .await;

    assert_eq!(refused.status(), 422);
    let body = problem(refused).await;
    assert_eq!(body["type"], rule("no-dual-region-backup"));
    assert_eq!(fields(&body), vec!["backup.dual_region"]);
}

#[tokio::test]
async fn a_project_without_cmek_takes_any_tier_under_the_platform_key() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = id(&app.create_project(&owner, "plain", false).await);

    let created = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            &owner,
            &json!({ "name": "cheap", "provider": "aws", "regions": ["eu-west-1"], "tier": "serverless", "backup": { "dual_region": true } }),
        )
        .await;

    assert_eq!(created.status(), 201);
    let cluster: Value = created.json().await.unwrap();
    assert_eq!(cluster["regions"][0]["key_ref"], "platform-managed key");
    assert_eq!(cluster["regions"][0]["key_id"], Value::Null);
    assert_eq!(cluster["backup"]["dual_region"], true);
    let stored = put(&app, &owner, &id(&cluster), "hello.txt", b"hello".to_vec()).await;
    assert_eq!(stored.status(), 201);
    let read = get(&app, &owner, &id(&cluster), "hello.txt").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), b"hello");
}

#[tokio::test]
async fn local_clusters_are_refused_in_production() {
    let app = crate::helpers::spawn_app_with(&[("CMEK_ENV", "production")]).await;
    let owner = app.api_key(Role::Owner).await;
    let project = id(&app.create_project(&owner, "plain", false).await);

    let refused = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            &owner,
            &json!({ "name": "dev", "provider": "local", "regions": ["us-east-1"] }),
        )
        .await;

    assert_eq!(refused.status(), 403);
    assert_eq!(
        problem(refused).await["type"],
        rule("local-kms-not-in-production")
    );
    let allowed = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            &owner,
            &json!({ "name": "prod", "provider": "aws", "regions": ["us-east-1"] }),
        )
        .await;
    assert_eq!(
        allowed.status(),
        201,
        "a cloud cluster under the platform key"
    );
    let browser = app.signed_in_owner().await;
    let form = browser
        .get(app.url(&format!("/projects/{project}/clusters/new")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !form.contains("value=\"local\""),
        "the form does not offer it"
    );
}

#[tokio::test]
async fn bad_cluster_requests_name_every_field() {
    let f = local_cmek(&["us-east-1"]).await;

    let refused = f
        .create(json!({ "name": "Bad_Name", "provider": "oracle", "regions": ["us-east-1", "mars-1"], "tier": "huge" }))
        .await;

    assert_eq!(refused.status(), 422);
    let body = problem(refused).await;
    let mut named = fields(&body);
    named.sort();
    assert_eq!(named, vec!["name", "provider", "regions[1]", "tier"]);
    let listed = f.listed_clusters().await;
    assert!(
        listed["items"].as_array().unwrap().is_empty(),
        "nothing half-created"
    );
}

#[tokio::test]
async fn a_second_cluster_with_the_same_name_is_a_conflict() {
    let f = local_cmek(&["us-east-1"]).await;
    f.cluster("orders", &["us-east-1"]).await;

    let again = f
        .create(json!({ "name": "orders", "provider": "local", "regions": ["us-east-1"] }))
        .await;

    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["type"], rule("cluster-name-taken"));
}

#[tokio::test]
async fn only_owners_create_and_change_clusters_but_everyone_reads_them() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"data".to_vec())
            .await
            .status(),
        201
    );

    for role in [Role::Member, Role::Auditor] {
        let key = f.app.api_key(role).await;
        let create = f
            .app
            .post_json(
                &format!("/api/v1/projects/{}/clusters", f.project),
                &key,
                &json!({ "name": "mine", "provider": "local", "regions": ["us-east-1"] }),
            )
            .await;
        assert_eq!(create.status(), 403, "{role:?} creates");
        assert_eq!(problem(create).await["type"], rule("owner-only"));
        for path in ["pause", "resume", "backups"] {
            let refused = post(&f.app, &key, &format!("/api/v1/clusters/{cluster}/{path}")).await;
            assert_eq!(refused.status(), 403, "{role:?} {path}");
        }
        assert_eq!(
            put(&f.app, &key, &cluster, "b", b"x".to_vec())
                .await
                .status(),
            403
        );
        let deleted = f
            .app
            .delete(&format!("/api/v1/clusters/{cluster}"), &key)
            .await;
        assert_eq!(deleted.status(), 403);
        let read = get(&f.app, &key, &cluster, "a").await;
        assert_eq!(read.status(), 200, "{role:?} reads");
        assert_eq!(read.bytes().await.unwrap().as_ref(), b"data");
    }
}

#[tokio::test]
async fn another_organizations_cluster_is_not_found() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"a".to_vec())
            .await
            .status(),
        201
    );
    let stranger = f.app.stranger_key().await;

    for path in [
        format!("/api/v1/clusters/{cluster}"),
        format!("/api/v1/clusters/{cluster}/objects"),
        format!("/api/v1/clusters/{cluster}/objects/a"),
    ] {
        let response = f.app.get(&path, &stranger).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    for path in ["pause", "resume", "backups"] {
        let response = post(
            &f.app,
            &stranger,
            &format!("/api/v1/clusters/{cluster}/{path}"),
        )
        .await;
        assert_eq!(response.status(), 404, "{path}");
    }
    assert_eq!(
        put(&f.app, &stranger, &cluster, "a", b"evil".to_vec())
            .await
            .status(),
        404
    );
    assert_eq!(
        f.app
            .delete(&format!("/api/v1/clusters/{cluster}"), &stranger)
            .await
            .status(),
        404
    );
    assert_eq!(
        get(&f.app, &f.owner, &cluster, "a")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"a"
    );
    assert_eq!(
        f.app
            .get("/api/v1/clusters/not-a-uuid", &f.owner)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn objects_round_trip_small_empty_and_several_mib() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1", "eu-west-1"]).await);
    let big = marked("several-mib", 5 * 1024 * 1024 + 17);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("small.txt", b"hello, sealed world".to_vec()),
        ("empty", Vec::new()),
        ("dir/sub/one-segment", marked("exact", 64 * 1024)),
        ("big.bin", big.clone()),
    ];

    for (name, bytes) in &cases {
        let stored = put(&f.app, &f.owner, &cluster, name, bytes.clone()).await;
        assert_eq!(stored.status(), 201, "{name}");
        let body: Value = stored.json().await.unwrap();
        assert_eq!(body["size_bytes"], bytes.len() as u64);
        assert_eq!(body["name"], *name);
    }
    for (name, bytes) in &cases {
        let read = get(&f.app, &f.owner, &cluster, name).await;
        assert_eq!(read.status(), 200, "{name}");
        assert_eq!(
            read.headers()["content-length"].to_str().unwrap(),
            bytes.len().to_string()
        );
        assert_eq!(
            read.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "{name}"
        );
    }
    let listed: Value = f
        .app
        .get(
            &format!("/api/v1/clusters/{cluster}/objects?page_size=2"),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed["next_page_token"].is_string());

    // Replacing an object keeps one version; deleting removes it in every region.
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "small.txt", b"v2".to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(
        get(&f.app, &f.owner, &cluster, "small.txt")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"v2"
    );
    let before = files_under(&f.app.data_dir().join("storage")).len();
    let deleted = f
        .app
        .delete(
            &format!("/api/v1/clusters/{cluster}/objects/big.bin"),
            &f.owner,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        files_under(&f.app.data_dir().join("storage")).len(),
        before - 2
    );
    assert_eq!(
        get(&f.app, &f.owner, &cluster, "big.bin").await.status(),
        404
    );
}

#[tokio::test]
async fn object_names_are_checked_at_the_edge() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);

    // Sent as raw bytes: an HTTP client would resolve the dot segments itself.
    for raw in [
        "a/../b",
        "a/%2E%2E/b",
        "..",
        "a//b",
        "x%0Ay",
        "x%7Fy",
        "a%5Cb",
        &"n".repeat(1025),
    ] {
        let answer = crate::hardening::send_raw(&f.app, |address| {
            format!(
                "PUT /api/v1/clusters/{cluster}/objects/{raw} HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
                f.owner
            )
        })
        .await
        .unwrap_or_default();
        let status = answer.split(' ').nth(1).unwrap_or_default().to_owned();
        assert_eq!(status, "422", "{raw}: {answer}");
        assert!(answer.contains("\"field\":\"name\""), "{raw}: {answer}");
    }
    let listed: Value = f
        .app
        .get(&format!("/api/v1/clusters/{cluster}/objects"), &f.owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn nothing_stored_holds_the_plaintext() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1", "eu-west-1"]).await);
    let marker = "PLAINTEXT-MARKER-7f3a";
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "m1", marked(marker, 300_000))
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "m2", marker.as_bytes().to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(
        f.app.take_backup(&f.owner, &cluster).await["state"],
        "available"
    );

    let files = files_under(&f.app.data_dir());
    assert!(files.len() > 4, "the data dir holds the sealed copies");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "plaintext in {}",
            file.display()
        );
    }
    assert_database_clean(&f.app, marker).await;
}

/// No row of the database holds `marker` (on SQLite the file is also scanned with the data
/// directory).
pub async fn assert_database_clean(app: &TestApp, marker: &str) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.db().await;
    let backend = db.get_database_backend();
    for table in [
        "clusters",
        "cluster_regions",
        "cluster_objects",
        "backups",
        "backup_objects",
        "audit_events",
        "encryption_keys",
        "local_key_versions",
    ] {
        let sql = match backend {
            sea_orm::DatabaseBackend::Postgres => format!("SELECT t::text AS row FROM {table} t"),
            _ => format!("SELECT * FROM {table}"),
        };
        let rows = db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap();
        for row in rows {
            let text = format!("{row:?}");
            assert!(!text.contains(marker), "plaintext in a row of {table}");
        }
    }
}

#[tokio::test]
async fn tampered_stored_data_is_refused_never_returned() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);
    let mut versions = Vec::new();
    for (name, len) in [("a", 1000), ("b", 1000), ("c", 1000), ("large", 300_000)] {
        let stored: Value = put(&f.app, &f.owner, &cluster, name, marked(name, len))
            .await
            .json()
            .await
            .unwrap();
        versions.push(stored["version"].as_str().unwrap().to_owned());
    }
    let path = |i: usize| blob(&f.app, &cluster, "us-east-1", &versions[i]);

    // One flipped bit.
    let mut a = std::fs::read(path(0)).unwrap();
    a[60] ^= 0x01;
    std::fs::write(path(0), &a).unwrap();
    // Two objects swapped (each is intact, under the other's name).
    let (b, c) = (
        std::fs::read(path(1)).unwrap(),
        std::fs::read(path(2)).unwrap(),
    );
    std::fs::write(path(1), &c).unwrap();
    std::fs::write(path(2), &b).unwrap();

    for name in ["a", "b", "c"] {
        let read = get(&f.app, &f.owner, &cluster, name).await;
        assert_eq!(read.status(), 502, "{name}");
        assert_eq!(
            problem(read).await["type"],
            problem_type("object-integrity")
        );
    }

    // Truncated after its first segments: the first ones stream, the end never comes.
    let large = std::fs::read(path(3)).unwrap();
    std::fs::write(path(3), &large[..large.len() - 100]).unwrap();
    let read = get(&f.app, &f.owner, &cluster, "large").await;
    let whole = read.bytes().await;
    assert!(
        whole.is_err() || whole.unwrap().len() < 300_000,
        "a truncated object never reads whole"
    );
    // Cut at a segment boundary: the last segment's flag is missing.
    std::fs::write(path(3), &large[..47 + 2 * (65536 + 16)]).unwrap();
    let read = get(&f.app, &f.owner, &cluster, "large").await;
    let whole = read.bytes().await;
    assert!(whole.is_err() || whole.unwrap().len() < 300_000);
}

#[tokio::test]
async fn a_paused_cluster_refuses_reads_and_writes_and_resumes_intact() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);
    let bytes = marked("paused", 200_000);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "keep", bytes.clone())
            .await
            .status(),
        201
    );

    let paused = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/pause"),
    )
    .await;
    assert_eq!(paused.status(), 200);
    assert_eq!(paused.json::<Value>().await.unwrap()["state"], "paused");
    assert!(
        !f.app.clusters().holds_data_keys(cluster.parse().unwrap()),
        "pause drops the keys"
    );

    for response in [
        get(&f.app, &f.owner, &cluster, "keep").await,
        put(&f.app, &f.owner, &cluster, "new", b"x".to_vec()).await,
        post(
            &f.app,
            &f.owner,
            &format!("/api/v1/clusters/{cluster}/backups"),
        )
        .await,
    ] {
        assert_eq!(response.status(), 409);
        assert_eq!(problem(response).await["type"], rule("cluster-state"));
    }
    // Pausing twice changes nothing.
    assert_eq!(
        post(
            &f.app,
            &f.owner,
            &format!("/api/v1/clusters/{cluster}/pause")
        )
        .await
        .status(),
        200
    );

    let calls = f.app.clusters().cluster_kms_calls();
    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(resumed.json::<Value>().await.unwrap()["state"], "available");
    assert_eq!(
        f.app.clusters().cluster_kms_calls() - calls,
        1,
        "one unwrap per region"
    );
    let read = get(&f.app, &f.owner, &cluster, "keep").await;
    assert_eq!(read.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(
        f.app.clusters().cluster_kms_calls() - calls,
        1,
        "no KMS call per object"
    );
}

#[tokio::test]
async fn resume_fails_while_a_region_key_is_disabled_and_names_it() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1", "eu-west-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "keep", b"kept".to_vec())
            .await
            .status(),
        201
    );
    // Running clusters keep running when a key is revoked (R10, AWS semantics).
    f.disable_local_key("eu-west-1").await;
    assert_eq!(get(&f.app, &f.owner, &cluster, "keep").await.status(), 200);

    assert_eq!(
        post(
            &f.app,
            &f.owner,
            &format!("/api/v1/clusters/{cluster}/pause")
        )
        .await
        .status(),
        200
    );
    let refused = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;

    assert_eq!(refused.status(), 409);
    let body = problem(refused).await;
    assert_eq!(body["type"], problem_type("kms-key-unusable"));
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "only the region that failed: {body}");
    assert_eq!(failures[0]["region"], "eu-west-1");
    assert_eq!(failures[0]["code"], "DisabledException");
    assert_eq!(failures[0]["key"], f.local_keys[1].1.to_string());
    let state = read_cluster(&f.app, &f.owner, &cluster).await;
    assert_eq!(state["state"], "paused");
    assert!(state["last_error"].as_str().unwrap().contains("eu-west-1"));
    let audit: Value = f
        .app
        .get(
            "/api/v1/audit-events?action=cluster.resume_failed",
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);

    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[1].1, LocalKeyAction::Enable)
        .await
        .unwrap();
    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
    let body: Value = resumed.json().await.unwrap();
    assert_eq!(body["last_error"], Value::Null);
    assert_eq!(
        get(&f.app, &f.owner, &cluster, "keep")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"kept"
    );
}

#[tokio::test]
async fn a_backup_restores_the_same_bytes_into_a_new_cluster() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1", "eu-west-1"]).await);
    let big = marked("backup", 700_000);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "big", big.clone())
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "dir/small", b"small".to_vec())
            .await
            .status(),
        201
    );

    let backup = f.app.take_backup(&f.owner, &cluster).await;
    assert_eq!(backup["state"], "available");
    assert_eq!(backup["object_count"], 2);
    assert_eq!(backup["objects_copied"], 2);
    assert_eq!(backup["size_bytes"], 700_005);
    assert_eq!(backup["region"], "us-east-1");
    // Changes after the snapshot are not in it.
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "big", b"changed".to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "later", b"later".to_vec())
            .await
            .status(),
        201
    );

    let copy = f
        .app
        .restore_backup(
            &f.owner,
            &id(&backup),
            Some(json!({ "name": "data-restored" })),
        )
        .await;

    assert_eq!(copy["state"], "available", "{copy}");
    assert_eq!(copy["restore"]["objects_total"], 2);
    assert_eq!(copy["restore"]["objects_restored"], 2);
    assert_eq!(copy["name"], "data-restored");
    assert_eq!(copy["project_id"], f.project.as_str());
    let regions: Vec<&str> = copy["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, vec!["us-east-1", "eu-west-1"]);
    let copy = id(&copy);
    assert_eq!(
        get(&f.app, &f.owner, &copy, "big")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        big.as_slice()
    );
    assert_eq!(
        get(&f.app, &f.owner, &copy, "dir/small")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"small"
    );
    assert_eq!(get(&f.app, &f.owner, &copy, "later").await.status(), 404);

    // A cluster's backups outlive it; a restore without a body picks a name.
    assert_eq!(
        f.app
            .delete(&format!("/api/v1/clusters/{cluster}"), &f.owner)
            .await
            .status(),
        204
    );
    let listed: Value = f
        .app
        .get(&format!("/api/v1/clusters/{cluster}/backups"), &f.owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let again = f.app.restore_backup(&f.owner, &id(&backup), None).await;
    assert_eq!(again["state"], "available");
    assert!(
        again["name"]
            .as_str()
            .unwrap()
            .starts_with("data-restored-")
    );
}

#[tokio::test]
async fn a_restore_needs_the_backup_key() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"a".to_vec())
            .await
            .status(),
        201
    );
    let backup = f.app.take_backup(&f.owner, &cluster).await;
    f.disable_local_key("us-east-1").await;

    let refused = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/backups/{}/restore", id(&backup)),
    )
    .await;

    assert_eq!(refused.status(), 409);
    let body = problem(refused).await;
    assert_eq!(body["type"], problem_type("kms-key-unusable"));
    assert_eq!(body["failures"][0]["code"], "DisabledException");
    let listed = f.listed_clusters().await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "no cluster was half-made"
    );
}

#[tokio::test]
async fn a_key_that_a_cluster_or_backup_uses_cannot_be_deleted() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let backup = f.app.take_backup(&f.owner, &cluster).await;
    let key = list_keys(&f).await[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{}/encryption-keys/{key}", f.project);

    let refused = f.app.delete(&path, &f.owner).await;
    assert_eq!(refused.status(), 409);
    let body = problem(refused).await;
    assert_eq!(body["type"], rule("key-in-use"));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cluster \"orders\"")
    );

    assert_eq!(
        f.app
            .delete(&format!("/api/v1/clusters/{cluster}"), &f.owner)
            .await
            .status(),
        204
    );
    let refused = f.app.delete(&path, &f.owner).await;
    assert_eq!(refused.status(), 409, "its backup still needs it");
    assert!(
        problem(refused).await["detail"]
            .as_str()
            .unwrap()
            .contains(&id(&backup))
    );

    assert_eq!(
        f.app
            .delete(&format!("/api/v1/backups/{}", id(&backup)), &f.owner)
            .await
            .status(),
        204
    );
    assert_eq!(f.app.delete(&path, &f.owner).await.status(), 204);
}

#[tokio::test]
async fn a_cluster_left_half_done_by_a_crash_can_be_resumed_paused_or_deleted() {
    use sea_orm::{ConnectionTrait, Statement};
    let f = local_cmek(&["us-east-1"]).await;
    let db = f.app.db().await;
    let set_state = |cluster: String, state: &'static str| {
        let db = db.clone();
        async move {
            let backend = db.get_database_backend();
            let sql = match backend {
                sea_orm::DatabaseBackend::Postgres => {
                    "UPDATE clusters SET state = $1 WHERE id = $2"
                }
                _ => "UPDATE clusters SET state = ? WHERE id = ?",
            };
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [
                    state.into(),
                    uuid::Uuid::parse_str(&cluster).unwrap().into(),
                ],
            ))
            .await
            .unwrap();
        }
    };
    let resuming = id(&f.cluster("resuming", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &resuming, "a", b"a".to_vec())
            .await
            .status(),
        201
    );
    let deleting = id(&f.cluster("deleting", &["us-east-1"]).await);
    let pausing = id(&f.cluster("pausing", &["us-east-1"]).await);
    set_state(resuming.clone(), "resuming").await;
    set_state(deleting.clone(), "deleting").await;
    set_state(pausing.clone(), "pausing").await;
    // What a process that died mid-delete left: some of the cluster's files are gone.
    std::fs::remove_dir_all(f.app.data_dir().join("storage/clusters").join(&deleting)).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{resuming}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(
        get(&f.app, &f.owner, &resuming, "a")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"a"
    );
    assert_eq!(
        post(
            &f.app,
            &f.owner,
            &format!("/api/v1/clusters/{pausing}/pause")
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        f.app
            .delete(&format!("/api/v1/clusters/{deleting}"), &f.owner)
            .await
            .status(),
        204
    );
    // The name of the deleted cluster is free again.
    let again = f
        .create(json!({ "name": "deleting", "provider": "local", "regions": ["us-east-1"] }))
        .await;
    assert_eq!(again.status(), 201);
}

/// Polls the cluster until `done` holds (at most 15 s): the reconciliation runs in the
/// background.
async fn cluster_until(
    app: &crate::helpers::TestApp,
    key: &str,
    cluster: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut read = read_cluster(app, key, cluster).await;
    for _ in 0..150 {
        if done(&read) {
            return read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        read = read_cluster(app, key, cluster).await;
    }
    panic!("the cluster never got there: {read}");
}

async fn events(app: &crate::helpers::TestApp, owner: &str, action: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/api/v1/audit-events?action={action}"), owner)
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

async fn check_now(f: &Fixture, caller: &str, key: &str) -> Value {
    let checked = post(
        &f.app,
        caller,
        &format!("/api/v1/projects/{}/encryption-keys/{key}/check", f.project),
    )
    .await;
    assert_eq!(checked.status(), 200);
    checked.json().await.unwrap()
}

#[tokio::test]
async fn check_now_by_an_auditor_confirms_a_revocation_and_a_stop_project_cluster_becomes_inaccessible()
 {
    let f = local_cmek_with(&["us-east-1"], &[("CMEK_KEY_CONFIRM_DELAY", "200ms")]).await;
    f.stop_on_revocation().await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "doc", b"x".to_vec())
            .await
            .status(),
        201
    );
    let key = f.key_id("us-east-1").await;
    let auditor = f.app.api_key(Role::Auditor).await;
    f.disable_local_key("us-east-1").await;

    let checked = check_now(&f, &auditor, &key).await;

    assert_eq!(checked["status"], "disabled");
    assert_eq!(checked["confirmation"]["state"], "confirmed");
    assert_eq!(checked["confirmation"]["probes"], 2);
    let read = cluster_until(&f.app, &f.owner, &cluster, |c| c["state"] == "inaccessible").await;
    assert!(read["last_error"].as_str().unwrap().contains("disabled"));
    assert_eq!(
        get(&f.app, &f.owner, &cluster, "doc").await.status(),
        409,
        "its data is refused"
    );
    assert!(!f.app.clusters().holds_data_keys(cluster.parse().unwrap()));
    // However often it runs again, the reaction was made (and audited, and alerted) once.
    for _ in 0..2 {
        f.app.clusters().reconcile_revoked_keys().await.unwrap();
    }
    assert_eq!(
        events(&f.app, &f.owner, "cluster.inaccessible").await.len(),
        1
    );
}

#[tokio::test]
async fn a_keep_running_cluster_is_marked_once_and_a_policy_changed_to_stop_later_still_applies() {
    let f = local_cmek_with(
        &["us-east-1"],
        &[
            ("CMEK_KEY_CONFIRM_DELAY", "200ms"),
            ("CMEK_RECONCILE_INTERVAL", "1s"),
        ],
    )
    .await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let key = f.key_id("us-east-1").await;
    let member = f.app.api_key(Role::Member).await;
    f.disable_local_key("us-east-1").await;

    let checked = check_now(&f, &member, &key).await;

    assert_eq!(checked["confirmation"]["state"], "confirmed");
    // The local KMS's default is AWS's: keep running, marked "will not resume".
    let read = cluster_until(&f.app, &f.owner, &cluster, |c| {
        c["will_not_resume"].is_string()
    })
    .await;
    assert_eq!(read["state"], "available");
    assert_eq!(
        get(&f.app, &f.owner, &cluster, "none").await.status(),
        404,
        "still serving"
    );
    f.app.clusters().reconcile_revoked_keys().await.unwrap();
    assert_eq!(
        events(&f.app, &f.owner, "cluster.will_not_resume")
            .await
            .len(),
        1
    );

    // Level, not edge: the policy changes after the status was recorded, and the periodic
    // reconciliation applies it.
    f.stop_on_revocation().await;
    cluster_until(&f.app, &f.owner, &cluster, |c| c["state"] == "inaccessible").await;

    // The key works again: the mark goes at once, and the owner resumes the cluster.
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[0].1, LocalKeyAction::Enable)
        .await
        .unwrap();
    // Check now answers a press within 10 seconds of the last check with that check's result.
    f.app.clock.advance(chrono::Duration::seconds(11));
    let checked = check_now(&f, &member, &key).await;
    assert_eq!(checked["status"], "active");
    assert_eq!(checked["confirmation"]["state"], "not_needed");
    cluster_until(&f.app, &f.owner, &cluster, |c| {
        c["will_not_resume"].is_null()
    })
    .await;
    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
}

#[tokio::test]
async fn a_reaction_queued_by_an_instance_that_never_ran_it_is_run_by_another_exactly_once() {
    let f = local_cmek_with(&["us-east-1"], &[("CMEK_KEY_CONFIRM_DELAY", "100ms")]).await;
    f.stop_on_revocation().await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let key = f.key_id("us-east-1").await;
    // This instance records the status but never reacts: as if it died right after the
    // status change committed.
    f.app.workers.inject("reactions", Some(Fault::FailAlways));
    f.app.workers.inject("reconcile", Some(Fault::FailAlways));
    f.disable_local_key("us-east-1").await;
    let checked = check_now(&f, &f.owner, &key).await;
    assert_eq!(checked["confirmation"]["state"], "confirmed");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        read_cluster(&f.app, &f.owner, &cluster).await["state"],
        "available"
    );

    // Another instance on the same database finds the queued reaction and makes it.
    let other = f
        .app
        .another_instance_with(&[("CMEK_RECONCILE_INTERVAL", "1s")])
        .await;
    cluster_until(&other, &f.owner, &cluster, |c| c["state"] == "inaccessible").await;

    // Both instances reconciling again and again change nothing more.
    f.app.workers.inject("reactions", None);
    f.app.workers.inject("reconcile", None);
    for _ in 0..3 {
        f.app.clusters().reconcile_revoked_keys().await.unwrap();
        other.clusters().reconcile_revoked_keys().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        events(&f.app, &f.owner, "cluster.inaccessible").await.len(),
        1
    );
    assert_eq!(f.app.clusters().pending_reactions().await.unwrap(), 0);
}

#[tokio::test]
async fn a_single_denial_seen_by_check_now_records_nothing() {
    let f = local_cmek_with(&["us-east-1"], &[("CMEK_KEY_CONFIRM_DELAY", "3s")]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let key = f.key_id("us-east-1").await;
    f.disable_local_key("us-east-1").await;
    let operator = f.app.console.identity().operator(None).await.unwrap();
    let local_key = f.local_keys[0].1;
    let console = f.app.console.clone();
    // The key works again while Check now waits to confirm what its first probe saw.
    let restore = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        console
            .keys()
            .change_local_key(&operator, local_key, LocalKeyAction::Enable)
            .await
            .unwrap();
    });

    let checked = check_now(&f, &f.owner, &key).await;
    restore.await.unwrap();

    assert_eq!(checked["confirmation"]["state"], "not_confirmed");
    assert_eq!(checked["confirmation"]["first"], "disabled");
    assert_eq!(checked["confirmation"]["second"], "active");
    assert_eq!(checked["status"], "active");
    let history: Value = f
        .app
        .get(
            &format!(
                "/api/v1/projects/{}/encryption-keys/{key}/history",
                f.project
            ),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["items"].as_array().unwrap().len(), 0, "{history}");
    f.app.clusters().reconcile_revoked_keys().await.unwrap();
    let read = read_cluster(&f.app, &f.owner, &cluster).await;
    assert_eq!(read["state"], "available");
    assert!(read["will_not_resume"].is_null());
}

#[tokio::test]
async fn an_older_version_put_back_in_place_of_the_current_one_does_not_open() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);
    let first: Value = put(&f.app, &f.owner, &cluster, "doc", b"version one".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let old = std::fs::read(blob(
        &f.app,
        &cluster,
        "us-east-1",
        first["version"].as_str().unwrap(),
    ))
    .unwrap();
    let second: Value = put(&f.app, &f.owner, &cluster, "doc", b"version two".to_vec())
        .await
        .json()
        .await
        .unwrap();

    std::fs::write(
        blob(
            &f.app,
            &cluster,
            "us-east-1",
            second["version"].as_str().unwrap(),
        ),
        &old,
    )
    .unwrap();

    let read = get(&f.app, &f.owner, &cluster, "doc").await;
    assert_eq!(read.status(), 502);
    assert_eq!(
        problem(read).await["type"],
        problem_type("object-integrity")
    );
}

#[tokio::test]
async fn an_object_larger_than_allowed_is_refused_before_its_body_is_read() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);

    let answer = crate::hardening::send_raw(&f.app, |address| {
        format!(
            "PUT /api/v1/clusters/{cluster}/objects/huge HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {}\r\nContent-Length: 6000000000\r\n\r\n",
            f.owner
        )
    })
    .await
    .unwrap_or_default();

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload-too-large"));
}

#[tokio::test]
async fn another_instance_drops_the_keys_of_a_cluster_paused_elsewhere_unasked() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"a".to_vec())
            .await
            .status(),
        201
    );
    let second = f.app.another_instance().await;
    assert_eq!(get(&second, &f.owner, &cluster, "a").await.status(), 200);
    let id: uuid::Uuid = cluster.parse().unwrap();
    assert!(second.clusters().holds_data_keys(id));

    assert_eq!(
        post(
            &f.app,
            &f.owner,
            &format!("/api/v1/clusters/{cluster}/pause")
        )
        .await
        .status(),
        200
    );

    let mut held = true;
    for _ in 0..50 {
        held = second.clusters().holds_data_keys(id);
        if !held {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !held,
        "the other instance dropped the keys within seconds, with no request"
    );
}

#[tokio::test]
async fn a_backup_being_taken_holds_the_cluster_until_its_job_ends() {
    use cmek_console::supervisor::Fault;
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("data", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"before".to_vec())
            .await
            .status(),
        201
    );
    // The job cannot run yet: the backup stays `creating`.
    f.app.workers.inject("backups", Some(Fault::FailAlways));
    let started = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/backups"),
    )
    .await;
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = started.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/backups/{}", id(&first)));
    assert_eq!(first["state"], "creating");
    assert_eq!(first["object_count"], 1);
    assert_eq!(first["objects_copied"], 0);

    let refused = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/backups"),
    )
    .await;
    assert_eq!(refused.status(), 409);
    assert!(
        problem(refused).await["detail"]
            .as_str()
            .unwrap()
            .contains("another backup")
    );
    let restore = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/backups/{}/restore", id(&first)),
    )
    .await;
    assert_eq!(restore.status(), 409);
    assert_eq!(problem(restore).await["type"], rule("backup-state"));
    let delete = f
        .app
        .delete(&format!("/api/v1/backups/{}", id(&first)), &f.owner)
        .await;
    assert_eq!(delete.status(), 409);
    assert_eq!(problem(delete).await["type"], rule("backup-state"));
    // A version replaced while the backup waits is kept for it.
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"after".to_vec())
            .await
            .status(),
        201
    );

    f.app.workers.inject("backups", None);
    let done = f.app.backup_when_done(&f.owner, &id(&first)).await;
    assert_eq!(done["state"], "available", "{done}");
    assert_eq!(done["objects_copied"], 1);
    assert_eq!(done["size_bytes"], 6);
    assert!(done["finished_at"].is_string());
    // It released the cluster: the next one starts at once.
    assert_eq!(
        f.app.take_backup(&f.owner, &cluster).await["state"],
        "available"
    );
    let copy = id(&f.app.restore_backup(&f.owner, &id(&first), None).await);
    assert_eq!(
        get(&f.app, &f.owner, &copy, "a")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"before"
    );
}

/// `cmek-console serve` as a real process on the fixture's database and data directory.
pub fn serve(
    app: &crate::helpers::TestApp,
    port: u16,
    settings: &[(&str, &str)],
) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cmek-console"));
    command
        .arg("serve")
        .env("DATABASE_URL", &app.database_url)
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("CMEK_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(app.data_dir().join(format!("serve-{port}.log")))
                .map_or_else(|_| std::process::Stdio::null(), Into::into),
        );
    for (name, value) in settings {
        command.env(name, value);
    }
    command.spawn().expect("cmek-console serve starts")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn until_up(app: &crate::helpers::TestApp, port: u16) {
    for _ in 0..600 {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(app.data_dir().join(format!("serve-{port}.log")))
        .unwrap_or_default();
    panic!("the console on port {port} never answered:\n{log}");
}

#[tokio::test]
async fn a_console_killed_between_a_revocation_and_its_reaction_reacts_after_a_restart() {
    // The test's own instance sets things up and never reacts to anything.
    let f = local_cmek_quiet(&["us-east-1"]).await;
    f.stop_on_revocation().await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let key = f.key_id("us-east-1").await;
    f.disable_local_key("us-east-1").await;

    // A real console records the confirmed revocation, and is killed (SIGKILL) before its
    // reaction runs (its reaction workers fail every round, as if it died first).
    let port = free_port();
    let mut first = serve(
        &f.app,
        port,
        &[
            ("CMEK_TEST_WORKER_FAULTS", "reactions,reconcile"),
            ("CMEK_KEY_CONFIRM_DELAY", "100ms"),
        ],
    );
    until_up(&f.app, port).await;
    let checked: Value = f
        .app
        .api
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/projects/{}/encryption-keys/{key}/check",
            f.project
        ))
        .bearer_auth(&f.owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checked["confirmation"]["state"], "confirmed", "{checked}");
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(
        read_cluster(&f.app, &f.owner, &cluster).await["state"],
        "available"
    );

    // Restarted, the console finds the reaction queued with the status and makes it.
    let port = free_port();
    let mut second = serve(&f.app, port, &[]);
    until_up(&f.app, port).await;
    let read = cluster_until(&f.app, &f.owner, &cluster, |c| c["state"] == "inaccessible").await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(read["last_error"].as_str().unwrap().contains("disabled"));
    assert_eq!(
        events(&f.app, &f.owner, "cluster.inaccessible").await.len(),
        1
    );
}

#[tokio::test]
async fn a_database_failure_while_resuming_is_the_consoles_own_and_blames_no_key() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let paused = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/pause"),
    )
    .await;
    assert_eq!(paused.status(), 200);
    // The keys' table cannot be read while the resume needs it.
    use sea_orm::ConnectionTrait;
    let db = f.app.db().await;
    db.execute_unprepared("ALTER TABLE encryption_keys RENAME TO encryption_keys_away")
        .await
        .unwrap();

    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;

    db.execute_unprepared("ALTER TABLE encryption_keys_away RENAME TO encryption_keys")
        .await
        .unwrap();
    assert!(resumed.status().is_server_error(), "{}", resumed.status());
    let problem = problem(resumed).await;
    assert_ne!(
        problem["type"],
        problem_type("kms-key-unusable"),
        "{problem}"
    );
    assert!(
        !problem.to_string().contains("KMS"),
        "the console's own failure names no KMS: {problem}"
    );
    assert!(
        events(&f.app, &f.owner, "cluster.resume_failed")
            .await
            .is_empty(),
        "no alert blames the key"
    );
    assert_eq!(
        events(&f.app, &f.owner, "cluster.resume_interrupted")
            .await
            .len(),
        1
    );
    assert_eq!(
        read_cluster(&f.app, &f.owner, &cluster).await["state"],
        "paused"
    );
    // The database is back: the resume works.
    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200);
}

#[tokio::test]
async fn data_keys_stored_before_versions_were_recorded_get_theirs_at_start() {
    let f = local_cmek(&["us-east-1"]).await;
    id(&f.cluster("orders", &["us-east-1"]).await);
    let key = f.key_id("us-east-1").await;
    let path = format!("/api/v1/projects/{}/encryption-keys/{key}", f.project);
    let read: Value = f.app.get(&path, &f.owner).await.json().await.unwrap();
    assert_eq!(read["versions"][0]["version"], "1", "{read}");
    // As a database from before the upgrade has them: no version recorded.
    use sea_orm::ConnectionTrait;
    f.app
        .db()
        .await
        .execute_unprepared("UPDATE cluster_regions SET key_version = NULL")
        .await
        .unwrap();
    let before: Value = f.app.get(&path, &f.owner).await.json().await.unwrap();
    assert_eq!(before["versions"], json!([]), "{before}");

    let restarted = f.app.another_instance().await;

    let after: Value = restarted.get(&path, &f.owner).await.json().await.unwrap();
    assert_eq!(after["versions"][0]["version"], "1", "{after}");
    assert_eq!(after["versions"][0]["clusters"], json!(["orders"]));
    assert_eq!(after["versions"][0]["data_keys"], 1);
}

#[tokio::test]
async fn a_policy_changed_to_stop_applies_at_once_not_only_at_the_next_periodic_pass() {
    let f = local_cmek_with(
        &["us-east-1"],
        &[
            ("CMEK_KEY_CONFIRM_DELAY", "100ms"),
            ("CMEK_RECONCILE_INTERVAL", "1h"),
        ],
    )
    .await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let key = f.key_id("us-east-1").await;
    f.disable_local_key("us-east-1").await;
    let checked = check_now(&f, &f.owner, &key).await;
    assert_eq!(checked["confirmation"]["state"], "confirmed");
    cluster_until(&f.app, &f.owner, &cluster, |c| {
        c["will_not_resume"].is_string()
    })
    .await;

    f.stop_on_revocation().await;

    cluster_until(&f.app, &f.owner, &cluster, |c| c["state"] == "inaccessible").await;
}

/// Which events alert is the use case's decision (a typed notice on its audit event): a check
/// that finds the key as it was queues nothing for the webhooks; one that finds it disabled
/// queues `key.status_changed`.
#[tokio::test]
async fn a_check_that_changes_nothing_alerts_nobody_and_one_that_does_queues_the_alert() {
    let f = local_cmek_with(&["us-east-1"], &[("CMEK_KEY_CONFIRM_DELAY", "100ms")]).await;
    let (webhook, _) =
        crate::alerts::add_webhook(&f.app, &f.owner, "http://127.0.0.1:9/hook").await;
    let key = f.key_id("us-east-1").await;
    let queued = async || -> Vec<Value> {
        let body: Value = f
            .app
            .get(&format!("/api/v1/webhooks/{webhook}/deliveries"), &f.owner)
            .await
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    };

    let unchanged = check_now(&f, &f.owner, &key).await;
    assert_eq!(unchanged["status"], "active");
    assert!(
        queued().await.is_empty(),
        "nothing changed, nothing alerted"
    );

    f.disable_local_key("us-east-1").await;
    // Past the window in which a second press answers with the first check's result.
    f.app.clock.advance(chrono::Duration::seconds(11));
    let changed = check_now(&f, &f.owner, &key).await;
    assert_eq!(changed["status"], "disabled");
    let queued = queued().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["event_type"], "key.status_changed");
}
