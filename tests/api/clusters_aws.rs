//! Clusters on moto: AWS KMS with IAM enforced (revoking the console's permission, R10 AWS
//! semantics), a key per region (R11), data in moto's S3 shared by two instances, and a
//! console killed with SIGKILL in the middle of creating a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cmek_console::domain::identity::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clusters::{assert_database_clean, contains, files_under, get, id, marked, post, put};
use crate::helpers::{TestApp, problem, problem_type, spawn_app_with};
use crate::moto::{ACCOUNT, Moto};

const REGION: &str = "us-east-1";

pub fn iam(moto: &Moto) -> aws_sdk_iam::Client {
    let (key, secret) = (
        crate::moto::service("CMEK_TEST_IAM_ADMIN_KEY"),
        crate::moto::service("CMEK_TEST_IAM_ADMIN_SECRET"),
    );
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                key, secret, None, None, "tests",
            ))
            .build(),
    )
}

const KMS_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:*"],"Resource":"*"}]}"#;

/// A console identity of this test's own (so revoking it touches no other test).
pub async fn console_user(moto: &Moto) -> (String, String, String) {
    let iam = iam(moto);
    let name = format!("console-{}", uuid::Uuid::new_v4().simple());
    iam.create_user().user_name(&name).send().await.unwrap();
    grant(moto, &name).await;
    let key = iam
        .create_access_key()
        .user_name(&name)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    (name, key.access_key_id, key.secret_access_key)
}

pub async fn grant(moto: &Moto, user: &str) {
    iam(moto)
        .put_user_policy()
        .user_name(user)
        .policy_name("kms")
        .policy_document(KMS_POLICY)
        .send()
        .await
        .unwrap();
}

pub async fn revoke(moto: &Moto, user: &str) {
    iam(moto)
        .delete_user_policy()
        .user_name(user)
        .policy_name("kms")
        .send()
        .await
        .unwrap();
}

pub async fn aws_cluster(
    app: &TestApp,
    owner: &str,
    regions: &[(&str, &str)],
    name: &str,
) -> Value {
    let project = id(&app.create_project(owner, &format!("p-{name}"), true).await);
    for (region, arn) in regions {
        let created = app
            .post_json(
                &format!("/api/v1/projects/{project}/encryption-keys"),
                owner,
                &json!({ "provider": "aws_kms", "region": region, "key_arn": arn }),
            )
            .await;
        assert_eq!(
            created.status(),
            201,
            "key for {region}: {}",
            created.text().await.unwrap()
        );
    }
    let created = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            owner,
            &json!({ "name": name, "provider": "aws", "regions": regions.iter().map(|(r, _)| *r).collect::<Vec<_>>() }),
        )
        .await;
    assert_eq!(
        created.status(),
        201,
        "{}",
        created.text().await.unwrap_or_default()
    );
    created.json().await.unwrap()
}

#[tokio::test]
#[ignore = "needs moto with IAM enforced (scripts/test starts it)"]
async fn revoked_access_keeps_a_running_cluster_running_fails_its_resume_and_restoring_it_works() {
    let moto = Moto::iam_admin();
    let (user, key, secret) = console_user(&moto).await;
    let arn = moto.create_key(REGION).await;
    let app = moto.app_as(&key, &secret).await;
    let owner = app.api_key(Role::Owner).await;
    let cluster = aws_cluster(&app, &owner, &[(REGION, &arn)], "orders").await;
    assert_eq!(cluster["account_id"], ACCOUNT);
    let cluster = id(&cluster);
    let bytes = marked("revoked", 150_000);
    assert_eq!(
        put(&app, &owner, &cluster, "keep", bytes.clone())
            .await
            .status(),
        201
    );
    let backup = app.take_backup(&owner, &cluster).await;
    assert_eq!(backup["state"], "available");

    revoke(&moto, &user).await;
    // AWS semantics: the running cluster keeps running.
    assert_eq!(
        get(&app, &owner, &cluster, "keep")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        bytes.as_slice()
    );
    assert_eq!(
        post(&app, &owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    let refused = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(refused.status(), 409);
    let body = problem(refused).await;
    assert_eq!(body["type"], problem_type("kms-key-unusable"));
    assert_eq!(body["failures"][0]["region"], REGION);
    assert_eq!(body["failures"][0]["key"], arn.as_str());
    assert!(
        body["failures"][0]["code"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains(&arn));
    let state: Value = app
        .get(&format!("/api/v1/clusters/{cluster}"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["state"], "paused");
    let restore = post(
        &app,
        &owner,
        &format!("/api/v1/backups/{}/restore", id(&backup)),
    )
    .await;
    assert_eq!(restore.status(), 409, "a restore needs the key too");

    grant(&moto, &user).await;
    let resumed = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(
        get(&app, &owner, &cluster, "keep")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        bytes.as_slice()
    );
    let restored = app.restore_backup(&owner, &id(&backup), None).await;
    assert_eq!(restored["state"], "available", "{restored}");
    let copy = id(&restored);
    assert_eq!(
        get(&app, &owner, &copy, "keep")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        bytes.as_slice()
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_multi_region_cluster_uses_each_regions_key_and_resume_names_the_one_that_fails() {
    let moto = Moto::open();
    let east = moto.create_key("us-east-1").await;
    let west = moto.create_key("eu-west-1").await;
    let app = moto.app().await;
    let owner = app.api_key(Role::Owner).await;
    let cluster = aws_cluster(
        &app,
        &owner,
        &[("us-east-1", &east), ("eu-west-1", &west)],
        "global",
    )
    .await;
    let regions = cluster["regions"].as_array().unwrap();
    assert_eq!(regions[0]["key_ref"], east.as_str());
    assert_eq!(regions[1]["key_ref"], west.as_str());
    let cluster = id(&cluster);
    assert_eq!(
        put(&app, &owner, &cluster, "a", b"replicated".to_vec())
            .await
            .status(),
        201
    );
    for region in ["us-east-1", "eu-west-1"] {
        let copies = files_under(
            &app.data_dir()
                .join("storage/clusters")
                .join(&cluster)
                .join(region)
                .join("objects"),
        );
        assert_eq!(copies.len(), 1, "one sealed copy in {region}");
    }
    let (in_east, in_west) = (
        files_under(
            &app.data_dir()
                .join("storage/clusters")
                .join(&cluster)
                .join("us-east-1/objects"),
        ),
        files_under(
            &app.data_dir()
                .join("storage/clusters")
                .join(&cluster)
                .join("eu-west-1/objects"),
        ),
    );
    assert_ne!(
        std::fs::read(&in_east[0]).unwrap(),
        std::fs::read(&in_west[0]).unwrap(),
        "each region under its own data key"
    );

    moto.disable_key("eu-west-1", &west).await;
    assert_eq!(
        post(&app, &owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    let refused = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;

    assert_eq!(refused.status(), 409);
    let body = problem(refused).await;
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{body}");
    assert_eq!(failures[0]["region"], "eu-west-1");
    assert_eq!(failures[0]["key"], west.as_str());
    assert_eq!(failures[0]["code"], "DisabledException");
}

/// A bucket on moto's S3 (unsigned requests are accepted while IAM is off).
async fn bucket(moto: &Moto) -> String {
    let name = format!("cmek-{}", uuid::Uuid::new_v4().simple());
    let made = reqwest::Client::new()
        .put(format!("{}/{name}", moto.url))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "bucket: {}", made.status());
    name
}

async fn s3_objects(moto: &Moto, bucket: &str) -> Vec<Vec<u8>> {
    let client = reqwest::Client::new();
    let listing = client
        .get(format!("{}/{bucket}?list-type=2", moto.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Vec<String> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next().map(str::to_owned))
        .collect();
    let mut objects = Vec::new();
    for key in keys {
        let body = client
            .get(format!("{}/{bucket}/{key}", moto.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        objects.push(body.to_vec());
    }
    objects
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn cluster_data_in_s3_is_sealed_and_shared_by_two_instances() {
    let moto = Moto::open();
    let arn = moto.create_key(REGION).await;
    let bucket = bucket(&moto).await;
    let storage = format!("s3://{bucket}/console");
    let settings = [
        ("CMEK_AWS_ACCOUNT_ID", ACCOUNT),
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("CMEK_STORAGE_URL", storage.as_str()),
    ];
    let app = spawn_app_with(&settings).await;
    let owner = app.api_key(Role::Owner).await;
    let cluster = id(&aws_cluster(&app, &owner, &[(REGION, &arn)], "shared").await);
    let marker = "S3-PLAINTEXT-MARKER-19c2";
    let big = marked(marker, 6 * 1024 * 1024 + 3);
    assert_eq!(
        put(&app, &owner, &cluster, "big", big.clone())
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&app, &owner, &cluster, "small", marker.as_bytes().to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(
        app.take_backup(&owner, &cluster).await["state"],
        "available"
    );

    let second = app.another_instance_with(&settings).await;
    let calls = second.clusters().cluster_kms_calls();
    let read = get(&second, &owner, &cluster, "big").await;
    assert_eq!(
        read.bytes().await.unwrap().as_ref(),
        big.as_slice(),
        "the other instance reads it"
    );
    assert_eq!(
        second.clusters().cluster_kms_calls() - calls,
        1,
        "it unwrapped the data key once"
    );
    assert_eq!(get(&second, &owner, &cluster, "small").await.status(), 200);
    assert_eq!(second.clusters().cluster_kms_calls() - calls, 1);

    let stored = s3_objects(&moto, &bucket).await;
    assert!(
        stored.len() >= 4,
        "manifest, two objects and the backup's copies: {}",
        stored.len()
    );
    for object in &stored {
        assert!(!contains(object, marker.as_bytes()), "plaintext in S3");
    }
    assert!(
        files_under(&app.data_dir())
            .iter()
            .all(|f| !f.starts_with(app.data_dir().join("storage"))),
        "nothing went to local files"
    );
    assert_database_clean(&app, marker).await;

    // A pause on one instance stops the other serving within its cache's second.
    assert_eq!(
        post(&app, &owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&second, &owner, &cluster, "small").await.status(), 409);
    assert!(!second.clusters().holds_data_keys(cluster.parse().unwrap()));
}

/// Forwards to `upstream`, holding every answer back while `slow` is set; `held` counts the
/// answers it held.
async fn slow_proxy(upstream: String, slow: Arc<AtomicBool>, held: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let slow = slow.clone();
            let held = held.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let up = tokio::io::copy(&mut client_read, &mut server_write);
                let down = async {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = server_read.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        if slow.load(Ordering::SeqCst) {
                            held.fetch_add(1, Ordering::SeqCst);
                        }
                        while slow.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::join!(up, down);
            });
        }
    });
    address
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn a_console_killed_in_the_middle_of_creating_a_cluster_leaves_nothing_that_blocks_a_retry() {
    use std::io::{BufRead, BufReader};
    let moto = Moto::open();
    let arn = moto.create_key(REGION).await;
    let app = moto.app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = id(&app.create_project(&owner, "crash", true).await);
    let created = app
        .post_json(
            &format!("/api/v1/projects/{project}/encryption-keys"),
            &owner,
            &json!({ "provider": "aws_kms", "region": REGION, "key_arn": arn }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let slow = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let kms = slow_proxy(moto.url.clone(), slow.clone(), held.clone()).await;

    // A second console process on the same database, whose KMS answers never come.
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .env("DATABASE_URL", &app.database_url)
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("CMEK_LISTEN", "127.0.0.1:0")
        .env("CMEK_AWS_ACCOUNT_ID", ACCOUNT)
        .env("AWS_ENDPOINT_URL", &kms)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("CMEK_KMS_TIMEOUT", "30s")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = serve.stdout.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    // Read to the end: a closed pipe would kill the console at its next line.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split("running at ").nth(1) {
                let _ = found.send(url.to_owned());
            }
        }
    });
    let url = tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the console prints its address");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let request = reqwest::Client::new()
        .post(format!("{url}/api/v1/projects/{project}/clusters"))
        .bearer_auth(&owner)
        .json(&json!({ "name": "orders", "provider": "aws", "regions": [REGION] }))
        .send();
    let in_flight = tokio::spawn(request);
    for _ in 0..200 {
        if held.load(Ordering::SeqCst) > 0 || in_flight.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if in_flight.is_finished() {
        let answer = in_flight.await.unwrap().unwrap();
        panic!(
            "the create did not wait for the KMS: {} {}",
            answer.status(),
            answer.text().await.unwrap()
        );
    }
    assert!(
        held.load(Ordering::SeqCst) > 0,
        "the console asked the KMS for the data key"
    );
    serve.kill().unwrap(); // SIGKILL
    serve.wait().unwrap();
    slow.store(false, Ordering::SeqCst);
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed console never answered"
    );

    let listed: Value = app
        .get(&format!("/api/v1/projects/{project}/clusters"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"].as_array().unwrap().is_empty(),
        "nothing half-made: {listed}"
    );
    let retried = app
        .post_json(
            &format!("/api/v1/projects/{project}/clusters"),
            &owner,
            &json!({ "name": "orders", "provider": "aws", "regions": [REGION] }),
        )
        .await;
    assert_eq!(retried.status(), 201);
    let cluster = id(&retried.json::<Value>().await.unwrap());
    assert_eq!(
        put(&app, &owner, &cluster, "a", b"after the crash".to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(
        app.delete(&format!("/api/v1/clusters/{cluster}"), &owner)
            .await
            .status(),
        204
    );
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn the_sweeper_aborts_unfinished_s3_uploads_under_the_consoles_prefix_only() {
    let moto = Moto::open();
    let bucket = bucket(&moto).await;
    let storage = format!("s3://{bucket}/console");
    let client = reqwest::Client::new();
    // What a process killed in the middle of two uploads leaves, and one of another tenant
    // of the bucket.
    let mut started = Vec::new();
    for key in [
        "console/clusters/c1/us-east-1/objects/v1",
        "console/backups/b1/objects/v2",
        "elsewhere/theirs",
    ] {
        let made = client
            .post(format!("{}/{bucket}/{key}?uploads", moto.url))
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success(), "{}", made.status());
        started.push(key);
    }
    let unfinished = || async {
        let listing = client
            .get(format!("{}/{bucket}?uploads", moto.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    assert_eq!(unfinished().await.len(), 3);

    let _app = spawn_app_with(&[
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("CMEK_STORAGE_URL", storage.as_str()),
        ("CMEK_STORAGE_SWEEP_INTERVAL", "1s"),
        ("CMEK_STORAGE_SWEEP_GRACE", "1s"),
    ])
    .await;

    let mut left = Vec::new();
    for _ in 0..100 {
        left = unfinished().await;
        if left == ["elsewhere/theirs"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        left,
        ["elsewhere/theirs"],
        "the console's own, and only those, were aborted"
    );
}
