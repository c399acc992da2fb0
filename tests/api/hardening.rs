//! The cheap cases of the outside probe, kept so they keep holding: a damaged SQLite file,
//! slow and oversized requests, metrics cardinality, the error contract per route, and the
//! modes of what lands on disk.

use std::io::{Seek, SeekFrom, Write};

use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use cmek_console::domain::identity::Role;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app, spawn_app_on, spawn_app_with};

/// An app on a SQLite file of its own, whatever database the suite runs on.
async fn sqlite_app() -> (TestApp, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("cmek-damage-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("console.sqlite3");
    let app = spawn_app_on(&format!("sqlite://{}?mode=rwc", file.display()), &[]).await;
    (app, file)
}

/// Overwrites the start of every page but the first (the b-tree page headers): the file
/// still opens, but its tables no longer read.
fn damage(file: &std::path::Path) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let len = f.seek(SeekFrom::End(0)).unwrap();
    let mut page = 4096;
    while page < len {
        f.seek(SeekFrom::Start(page)).unwrap();
        f.write_all(&[0xA5; 12]).unwrap();
        page += 4096;
    }
    f.sync_all().unwrap();
}

async fn fill_and_checkpoint(app: &TestApp) {
    let owner = app.api_key(Role::Owner).await;
    for i in 0..30 {
        app.create_project(&owner, &format!("p{i}"), i % 2 == 0)
            .await;
    }
    app.db()
        .await
        .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_damaged_sqlite_file_is_refused_at_start_with_its_name_and_the_way_back() {
    let (app, file) = sqlite_app().await;
    fill_and_checkpoint(&app).await;
    damage(&file);

    let output = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", file.display()),
        )
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("CMEK_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let verify = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .args(["audit", "verify"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", file.display()),
        )
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();

    assert!(!output.status.success(), "serve refuses a damaged file");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("restore"), "{stderr}");
    assert!(
        !verify.status.success(),
        "audit verify does not pass a damaged file"
    );
}

#[tokio::test]
async fn a_file_damaged_while_serving_makes_readiness_fail_and_stops_writes() {
    let (app, file) = sqlite_app().await;
    fill_and_checkpoint(&app).await;
    let owner = app.api_key(Role::Owner).await;
    damage(&file);

    let ready = app.api.get(app.url("/readyz")).send().await.unwrap();
    let ready_status = ready.status();
    let ready: Value = ready.json().await.unwrap();
    let write = app
        .post_json(
            "/api/v1/projects",
            &owner,
            &json!({ "name": "after damage", "cmek_enabled": true }),
        )
        .await;

    assert_eq!(ready_status, 503);
    assert_eq!(ready["reason"], "database damaged");
    let write_status = write.status();
    let body = write.text().await.unwrap();
    assert_eq!(
        write_status, 503,
        "no more writes into a damaged file: {body}"
    );
}

/// Sends `request` as it is on a raw connection (part of a body, say) and reads until the
/// server closes it; `None` when it has not closed it within 10 s.
pub(crate) async fn send_raw(
    app: &TestApp,
    request: impl FnOnce(&str) -> String,
) -> Option<String> {
    // Async I/O: the test's runtime also drives the app's database pool.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(request(&address).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&answer).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn a_client_that_sends_half_a_body_is_cut_off_with_408() {
    let app = spawn_app_with(&[("CMEK_BODY_TIMEOUT", "1s")]).await;
    let owner = app.api_key(Role::Owner).await;
    let answer = send_raw(&app, |address| {
        format!(
            "POST /api/v1/projects HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {owner}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
        )
    })
    .await;

    let answer = answer.expect("the server answered and closed the connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let app = spawn_app().await;

    let response = app
        .api
        .get(app.url("/api/v1/projects"))
        .header("x-padding", "a".repeat(100 * 1024))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 431);
    assert_eq!(
        problem(response).await["type"],
        "https://cmek-console.dev/problems/headers-too-large"
    );
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let invent = |from: usize, to: usize| {
        let app = &app;
        async move {
            for i in from..to {
                let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
                app.api
                    .request(method, app.url(&format!("/nowhere/{i}")))
                    .send()
                    .await
                    .unwrap();
            }
            app.api
                .get(app.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };

    invent(0, 5).await;
    let after_five = invent(5, 10).await;
    let after_many = invent(10, 300).await;

    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        !after_many.contains("M299"),
        "no series per invented method"
    );
    assert!(after_many.contains("method=\"OTHER\""), "{after_many}");
    assert_eq!(
        series(&after_five),
        series(&after_many),
        "290 more invented methods add no series"
    );
}

#[tokio::test]
async fn a_wrong_method_on_an_api_route_is_a_405_problem_with_allow() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    let response = app
        .api
        .delete(app.url("/api/v1/projects"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_eq!(
        problem(response).await["type"],
        "https://cmek-console.dev/problems/method-not-allowed"
    );
}

#[tokio::test]
async fn unreadable_forms_get_an_html_page_not_plain_text() {
    let app = spawn_app().await;
    let browser = app.signed_in_owner().await;

    let wrong_type = browser
        .post(app.url("/projects"))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    let too_large = browser
        .post(app.url("/projects"))
        .form(&[("name", "x".repeat(100 * 1024))])
        .send()
        .await
        .unwrap();
    let not_a_uuid = browser
        .post(app.url("/organizations/switch"))
        .form(&[("organization_id", "not-a-uuid")])
        .send()
        .await
        .unwrap();

    for (response, status) in [(wrong_type, 415), (too_large, 413), (not_a_uuid, 400)] {
        assert_eq!(response.status(), status);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(response.text().await.unwrap().contains("<html"));
    }
}

#[tokio::test]
async fn the_wizard_stream_answers_403_and_404_up_front() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "streamed", true).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = [
        ("provider", "local"),
        ("region", "us-east-1"),
        ("key_id", "00000000-0000-7000-8000-000000000000"),
        ("action", "test"),
    ];
    let member = app.signed_in_as(Role::Member).await;
    let owner_browser = app.signed_in_owner().await;

    let forbidden = member
        .post(app.url(&format!("/projects/{project}/encryption-keys/stream")))
        .form(&form)
        .send()
        .await
        .unwrap();
    let missing = owner_browser
        .post(app.url(&format!(
            "/projects/{}/encryption-keys/stream",
            uuid::Uuid::now_v7()
        )))
        .form(&form)
        .send()
        .await
        .unwrap();

    assert_eq!(forbidden.status(), 403);
    assert_eq!(missing.status(), 404);
}

#[cfg(unix)]
#[tokio::test]
async fn the_embedded_database_and_its_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cmek-modes-{}", uuid::Uuid::new_v4()));
    let data = dir.join("data");

    let output = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .env("CMEK_DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("cmek-console.sqlite3")), 0o600);
    assert_eq!(mode(&data.join("audit-chain.keys")), 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn an_unwritable_data_dir_is_named_in_the_error() {
    let file = std::env::temp_dir().join(format!("cmek-not-a-dir-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, b"a file, not a directory").unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .env("CMEK_DATA_DIR", &file)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    let api = app
        .api
        .head(app.url("/api/v1/projects"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    let page = app.api.head(app.url("/sign-in")).send().await.unwrap();
    let health = app.api.head(app.url("/healthz")).send().await.unwrap();

    assert_eq!(api.status(), 200);
    assert_eq!(page.status(), 200);
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn the_favicon_is_served_and_a_missing_asset_gets_the_404_page() {
    let app = spawn_app().await;

    let icon = app.api.get(app.url("/favicon.ico")).send().await.unwrap();
    let missing = app
        .api
        .get(app.url("/static/nope.js"))
        .send()
        .await
        .unwrap();

    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn an_unauthenticated_client_with_a_trickling_chunked_body_is_answered_and_cut_off() {
    let app = spawn_app_with(&[("CMEK_BODY_TIMEOUT", "1s")]).await;

    let answer = send_raw(&app, |address| {
        format!(
            "POST /api/v1/projects HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\n{{\"na\r\n"
        )
    })
    .await;

    let answer = answer.expect("the server answered and closed the connection");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

mod check_now_bounds {
    use cmek_console::domain::identity::Role;
    use serde_json::Value;

    use crate::clusters::{local_cmek, post};

    async fn checks_recorded(f: &crate::clusters::Fixture) -> usize {
        let page: Value = f
            .app
            .get(
                "/api/v1/audit-events?action=encryption_key.checked",
                &f.owner,
            )
            .await
            .json()
            .await
            .unwrap();
        page["items"].as_array().unwrap().len()
    }

    #[tokio::test]
    async fn a_key_checked_moments_ago_on_any_instance_answers_with_that_check_without_calling_the_kms()
     {
        let f = local_cmek(&["us-east-1"]).await;
        let key = f.key_id("us-east-1").await;
        let path = format!("/api/v1/projects/{}/encryption-keys/{key}/check", f.project);
        let member = f.app.api_key(Role::Member).await;
        let other = f.app.another_instance().await;
        // Both instances in the same 10-second window, as one shared clock would have them.
        other.clock.set(f.app.console.now());

        let first: Value = post(&f.app, &member, &path).await.json().await.unwrap();
        let again: Value = post(&other, &f.owner, &path).await.json().await.unwrap();

        assert_eq!(first["confirmation"]["state"], "not_needed");
        assert_eq!(again["confirmation"]["state"], "reused", "{again}");
        assert_eq!(again["confirmation"]["probes"], 0);
        assert_eq!(again["status"], "active");
        assert_eq!(again["last_checked_at"], first["last_checked_at"]);
        assert_eq!(
            checks_recorded(&f).await,
            1,
            "one call to the KMS, one event"
        );
        // Once the window has passed, the next press checks again.
        f.app.clock.advance(chrono::Duration::seconds(11));
        let later: Value = post(&f.app, &member, &path).await.json().await.unwrap();
        assert_eq!(later["confirmation"]["state"], "not_needed");
        assert_eq!(checks_recorded(&f).await, 2);
    }

    #[tokio::test]
    async fn one_caller_pressing_check_now_too_often_gets_429_with_retry_after_on_every_instance() {
        let f = local_cmek(&["us-east-1"]).await;
        let key = f.key_id("us-east-1").await;
        let path = format!("/api/v1/projects/{}/encryption-keys/{key}/check", f.project);
        let member = f.app.api_key(Role::Member).await;
        let other = f.app.another_instance().await;
        // Both instances in the same 10-second window, as one shared clock would have them.
        other.clock.set(f.app.console.now());

        for press in 0..20 {
            let app = if press % 2 == 0 { &f.app } else { &other };
            assert_eq!(
                post(app, &member, &path).await.status(),
                200,
                "press {press}"
            );
        }
        let refused = post(&other, &member, &path).await;

        assert_eq!(refused.status(), 429);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let problem = crate::helpers::problem(refused).await;
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .ends_with("/too-many-requests")
        );
        // Another caller is not held back by this one.
        f.app.clock.advance(chrono::Duration::seconds(11));
        assert_eq!(post(&f.app, &f.owner, &path).await.status(), 200);
    }
}

mod second_probe {
    use cmek_console::domain::identity::Role;
    use serde_json::{Value, json};

    use crate::clusters::{get, id, local_cmek};

    async fn put_raw(app: &crate::helpers::TestApp, key: &str, path: &str, body: &[u8]) -> u16 {
        app.api
            .put(app.url(path))
            .bearer_auth(key)
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn object_names_that_are_not_utf8_once_decoded_are_refused_and_never_collide() {
        let f = local_cmek(&["us-east-1"]).await;
        let cluster = id(&f.cluster("data", &["us-east-1"]).await);
        let objects = format!("/api/v1/clusters/{cluster}/objects");

        for name in ["coll%ff", "coll%fe", "a/%80b"] {
            let refused = f
                .app
                .api
                .put(f.app.url(&format!("{objects}/{name}")))
                .bearer_auth(&f.owner)
                .header("content-type", "application/octet-stream")
                .body(b"x".to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), 422, "{name}");
            let problem = crate::helpers::problem(refused).await;
            assert_eq!(
                crate::helpers::fields(&problem),
                vec!["name".to_owned()],
                "{problem}"
            );
        }
        assert_eq!(
            get(&f.app, &f.owner, &cluster, "coll%80").await.status(),
            422
        );
        // A valid escaped name is stored as its characters.
        assert_eq!(
            put_raw(&f.app, &f.owner, &format!("{objects}/caf%C3%A9"), b"v").await,
            201
        );
        let read = get(&f.app, &f.owner, &cluster, "caf%C3%A9").await;
        assert_eq!(read.bytes().await.unwrap().as_ref(), b"v");
        let list: Value = f.app.get(&objects, &f.owner).await.json().await.unwrap();
        assert_eq!(list["items"][0]["name"], "café", "{list}");
    }

    #[tokio::test]
    async fn a_webhook_url_is_shown_whole_only_in_the_answer_that_creates_it() {
        let app = crate::helpers::spawn_app().await;
        let owner = app.api_key(Role::Owner).await;
        let auditor = app.api_key(Role::Auditor).await;
        let created = app
            .post_json(
                "/api/v1/webhooks",
                &owner,
                &json!({ "url": "http://127.0.0.1:9/hooks/T000/B000?token=s3cret" }),
            )
            .await;
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        assert_eq!(
            created["url"],
            "http://127.0.0.1:9/hooks/T000/B000?token=s3cret"
        );
        let webhook = created["id"].as_str().unwrap();

        for caller in [&auditor, &owner] {
            let read = app
                .get(&format!("/api/v1/webhooks/{webhook}"), caller)
                .await
                .text()
                .await
                .unwrap();
            assert!(!read.contains("s3cret") && !read.contains("T000"), "{read}");
            assert!(read.contains("\"url\":\"http://127.0.0.1:9\""), "{read}");
            let list = app
                .get("/api/v1/webhooks", caller)
                .await
                .text()
                .await
                .unwrap();
            assert!(!list.contains("s3cret") && !list.contains("T000"), "{list}");
        }
        let page = app
            .signed_in_as(Role::Auditor)
            .await
            .get(app.url(&format!("/alerts/{webhook}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!page.contains("s3cret") && !page.contains("T000"));
    }
}

mod upload_memory {
    use tokio::io::AsyncWriteExt;

    use crate::clusters::{id, local_cmek_with, put};

    #[tokio::test]
    async fn uploads_beyond_the_memory_cap_get_503_with_retry_after_until_memory_is_free() {
        // 16 MiB: one copy's buffers (15 MiB) at a time.
        let f = local_cmek_with(&["us-east-1"], &[("CMEK_UPLOAD_MEMORY_MIB", "16")]).await;
        let cluster = id(&f.cluster("data", &["us-east-1"]).await);
        // A slow client: its headers and a first few bytes, then nothing for now.
        let address = f.app.address.trim_start_matches("http://").to_owned();
        let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
        slow.write_all(
            format!(
                "PUT /api/v1/clusters/{cluster}/objects/slow HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: 1000000\r\n\r\n",
                f.owner
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        slow.write_all(&[7u8; 4096]).await.unwrap();
        slow.flush().await.unwrap();
        for _ in 0..100 {
            if f.app.clusters().uploads_in_progress() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            f.app.clusters().uploads_in_progress(),
            "the slow upload holds its memory"
        );

        let mut refused = None;
        for _ in 0..50 {
            let response = put(&f.app, &f.owner, &cluster, "other", b"x".to_vec()).await;
            if response.status() == 503 {
                refused = Some(response);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let Some(refused) = refused else {
            use tokio::io::AsyncReadExt;
            let mut answer = vec![0u8; 2048];
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), slow.read(&mut answer))
                .await
                .map_or(0, |r| r.unwrap_or(0));
            panic!(
                "a second upload was not refused; the slow one got: {}",
                String::from_utf8_lossy(&answer[..n])
            );
        };
        assert!(refused.headers().contains_key("retry-after"));
        let problem = crate::helpers::problem(refused).await;
        assert!(
            problem["type"].as_str().unwrap().ends_with("/overloaded"),
            "{problem}"
        );

        // The slow client goes away: its memory is free again.
        drop(slow);
        let mut status = 0;
        for _ in 0..100 {
            status = put(&f.app, &f.owner, &cluster, "other", b"x".to_vec())
                .await
                .status()
                .as_u16();
            if status == 201 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, 201);
    }
}
