//! Changing a key in place, end to end over the API: a replacement moves every data key of
//! the region (running and paused clusters, backups) while a client reads and writes without
//! a failure; the old key's census reaches zero, the impact preview says it is safe, and
//! deleting it and disabling it in its KMS breaks nothing. On the local KMS, and on moto.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::clusters::{Fixture, get, id, local_cmek, marked, post, put};
use crate::helpers::{TestApp, problem, rule};

fn key_path(project: &str, key: &str) -> String {
    format!("/api/v1/projects/{project}/encryption-keys/{key}")
}

async fn json_of(app: &TestApp, path: &str, key: &str) -> Value {
    let response = app.get(path, key).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// The key's latest change once it has ended.
async fn change_when_ended(app: &TestApp, owner: &str, project: &str, key: &str) -> Value {
    for _ in 0..600 {
        let read = json_of(app, &key_path(project, key), owner).await;
        if read["change"]["state"] != "rewrapping" {
            return read["change"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the change of key {key} never ended");
}

/// A client that writes and reads objects of the cluster without a pause, until told to
/// stop: how many rounds it made, and how many requests failed.
async fn busy_client(
    app: &TestApp,
    owner: &str,
    cluster: &str,
    stop: &AtomicBool,
) -> (usize, usize) {
    let mut done = 0;
    let failed = AtomicUsize::new(0);
    while !stop.load(Ordering::SeqCst) {
        let name = format!("busy/{}", done % 16);
        let bytes = marked(&format!("busy {done}"), 4096);
        if put(app, owner, cluster, &name, bytes.clone())
            .await
            .status()
            != 201
        {
            failed.fetch_add(1, Ordering::SeqCst);
        }
        let read = get(app, owner, cluster, &name).await;
        if read.status() != 200 || read.bytes().await.unwrap().as_ref() != bytes.as_slice() {
            failed.fetch_add(1, Ordering::SeqCst);
        }
        done += 1;
    }
    (done, failed.load(Ordering::SeqCst))
}

async fn new_local_key(f: &Fixture, name: &str) -> uuid::Uuid {
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .create_local_key(&operator, name)
        .await
        .unwrap()
        .id
}

/// The key that replaced this one.
fn started_key(old: &Value) -> String {
    old["replaced_by"].as_str().unwrap().to_owned()
}

fn verdict<'a>(impact: &'a Value, action: &str) -> &'a Value {
    impact["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["action"] == action)
        .unwrap_or_else(|| panic!("no {action} verdict: {impact}"))
}

#[tokio::test]
async fn replacing_a_key_moves_every_data_key_while_a_client_reads_and_writes() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let live = id(&f.cluster("live", &["us-east-1", "eu-west-1"]).await);
    let sleepy = id(&f.cluster("sleepy", &["us-east-1"]).await);
    let kept = marked("kept", 70_000);
    assert_eq!(
        put(&f.app, &f.owner, &live, "kept", kept.clone())
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&f.app, &f.owner, &sleepy, "nap", kept.clone())
            .await
            .status(),
        201
    );
    let backup = id(&f.app.take_backup(&f.owner, &live).await);
    assert_eq!(
        f.app.backup_when_done(&f.owner, &backup).await["state"],
        "available"
    );
    let paused = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{sleepy}/pause"),
    )
    .await;
    assert_eq!(paused.status(), 200);
    let old = f.key_id("us-east-1").await;
    let old_local = f.local_keys[0].1;
    let new_local = new_local_key(&f, "new east").await;
    let before = json_of(
        &f.app,
        &format!("{}/impact", key_path(&f.project, &old)),
        &f.owner,
    )
    .await;
    assert_eq!(verdict(&before, "delete")["safe"], false, "{before}");

    let stop = AtomicBool::new(false);
    let client = busy_client(&f.app, &f.owner, &live, &stop);
    let change = async {
        let started = f
            .app
            .post_json(
                &format!("{}/replace", key_path(&f.project, &old)),
                &f.owner,
                &json!({ "provider": "local", "region": "us-east-1", "key_id": new_local }),
            )
            .await;
        assert_eq!(started.status(), 202);
        let started: Value = started.json().await.unwrap();
        let change = change_when_ended(&f.app, &f.owner, &f.project, &old).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        (started, change)
    };
    let ((requests, failed), (started, change)) = tokio::join!(client, change);
    let new = id(&started["key"]);
    assert_eq!(started["change"]["kind"], "replace");
    assert_eq!(started["change"]["from_key_id"], old.as_str());
    assert_eq!(started["change"]["to_key_id"], new.as_str());
    // live's and sleepy's us-east-1 regions, and the backup.
    assert_eq!(started["change"]["total"], 3, "{started}");
    assert!(started["checks"]["passed"].as_bool().unwrap());
    // Beside Test Encryption Key's checks, what the job will do: wrap an existing data key.
    let wrap = started["checks"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "wrap_existing_data_key")
        .cloned()
        .unwrap_or_else(|| panic!("{started}"));
    assert_eq!(wrap["outcome"], "pass", "{wrap}");

    assert_eq!(change["state"], "done", "{change}");
    assert_eq!(
        (change["done"].as_u64(), change["failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(requests > 0);
    assert_eq!(
        failed, 0,
        "no request failed during the change ({requests} made)"
    );
    // The old key wraps nothing now; the new one is the region's key.
    let old_read = json_of(&f.app, &key_path(&f.project, &old), &f.owner).await;
    assert_eq!(old_read["replaced_by"], new.as_str());
    assert_eq!(old_read["versions"], json!([]), "{old_read}");
    let impact = json_of(
        &f.app,
        &format!("{}/impact", key_path(&f.project, &old)),
        &f.owner,
    )
    .await;
    assert_eq!(verdict(&impact, "delete")["safe"], true, "{impact}");
    assert_eq!(verdict(&impact, "disable_key")["safe"], true, "{impact}");
    let cluster = json_of(&f.app, &format!("/api/v1/clusters/{sleepy}"), &f.owner).await;
    assert_eq!(cluster["state"], "paused", "a paused cluster stays paused");
    assert_eq!(cluster["regions"][0]["key_id"], new.as_str());
    // Each swap is audited.
    let audit = json_of(
        &f.app,
        "/api/v1/audit-events?action=data_key.rewrapped",
        &f.owner,
    )
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 3, "{audit}");

    // Deleting the old key, then disabling it in its KMS, breaks nothing.
    assert_eq!(
        f.app
            .delete(&key_path(&f.project, &old), &f.owner)
            .await
            .status(),
        204
    );
    let disabled = f
        .app
        .post_json(
            &format!("/api/v1/local-kms/keys/{old_local}/disable"),
            &f.owner,
            &json!({}),
        )
        .await;
    assert_eq!(disabled.status(), 200);
    let resumed = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{sleepy}/resume"),
    )
    .await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let nap = get(&f.app, &f.owner, &sleepy, "nap")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(nap.as_ref(), kept.as_slice());
    let restored = f.app.restore_backup(&f.owner, &backup, None).await;
    assert_eq!(restored["state"], "available", "{restored}");
    let copy = get(&f.app, &f.owner, &id(&restored), "kept")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(copy.as_ref(), kept.as_slice());
    // New clusters take the new key.
    let fresh = f.cluster("fresh", &["us-east-1"]).await;
    assert_eq!(fresh["regions"][0]["key_id"], new.as_str());
}

#[tokio::test]
async fn a_rewrap_moves_data_keys_to_the_current_version_after_a_rotation() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("c", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"alpha".to_vec())
            .await
            .status(),
        201
    );
    let backup = id(&f.app.take_backup(&f.owner, &cluster).await);
    f.app.backup_when_done(&f.owner, &backup).await;
    let key = f.key_id("us-east-1").await;
    let local = f.local_keys[0].1;
    let rotated = f
        .app
        .post_json(
            &format!("/api/v1/local-kms/keys/{local}/rotate"),
            &f.owner,
            &json!({}),
        )
        .await;
    assert_eq!(rotated.status(), 200);
    let versions = json_of(&f.app, &key_path(&f.project, &key), &f.owner).await["versions"].clone();
    assert_eq!(versions[0]["version"], "1", "{versions}");

    // Before: version 1 still wraps both data keys, so disabling it is not safe (this is what
    // makes the check after the re-wrap mean something).
    let before = json_of(
        &f.app,
        &format!("{}/impact", key_path(&f.project, &key)),
        &f.owner,
    )
    .await;
    let disable_1 = before["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["action"] == "disable_version" && v["version"] == "1")
        .unwrap_or_else(|| panic!("{before}"));
    assert_eq!(disable_1["safe"], false, "{before}");
    let started = post(
        &f.app,
        &f.owner,
        &format!("{}/rewrap", key_path(&f.project, &key)),
    )
    .await;
    assert_eq!(started.status(), 202);
    let started: Value = started.json().await.unwrap();
    assert_eq!(started["kind"], "rewrap");
    let change = change_when_ended(&f.app, &f.owner, &f.project, &key).await;

    assert_eq!(change["state"], "done", "{change}");
    assert_eq!(
        change["done"], 2,
        "the cluster's data key and the backup's: {change}"
    );
    assert_eq!(change["target_version"], "2");
    let read = json_of(&f.app, &key_path(&f.project, &key), &f.owner).await;
    let versions: Vec<&str> = read["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["2"],
        "only the current version wraps data keys now: {read}"
    );
    let impact = json_of(
        &f.app,
        &format!("{}/impact", key_path(&f.project, &key)),
        &f.owner,
    )
    .await;
    let safe_to_disable_1 = impact["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["action"] != "disable_version" || v["version"] != "1" || v["safe"] == true);
    assert!(safe_to_disable_1, "{impact}");
    // A second re-wrap has nothing left to move.
    let again = post(
        &f.app,
        &f.owner,
        &format!("{}/rewrap", key_path(&f.project, &key)),
    )
    .await;
    assert_eq!(again.status(), 202);
    let again = change_when_ended(&f.app, &f.owner, &f.project, &key).await;
    assert_eq!(
        (again["state"].as_str(), again["done"].as_u64()),
        (Some("done"), Some(0))
    );
}

#[tokio::test]
async fn only_owners_change_keys_and_other_organizations_see_nothing() {
    let f = local_cmek(&["us-east-1"]).await;
    let key = f.key_id("us-east-1").await;
    let body =
        json!({ "provider": "local", "region": "us-east-1", "key_id": uuid::Uuid::now_v7() });
    for role in [Role::Member, Role::Auditor] {
        let caller = f.app.api_key(role).await;
        let replace = f
            .app
            .post_json(
                &format!("{}/replace", key_path(&f.project, &key)),
                &caller,
                &body,
            )
            .await;
        assert_eq!(replace.status(), 403, "{role:?} replace");
        let rewrap = post(
            &f.app,
            &caller,
            &format!("{}/rewrap", key_path(&f.project, &key)),
        )
        .await;
        assert_eq!(rewrap.status(), 403, "{role:?} rewrap");
        // They can read the key, its change and its impact.
        json_of(&f.app, &key_path(&f.project, &key), &caller).await;
        json_of(
            &f.app,
            &format!("{}/impact", key_path(&f.project, &key)),
            &caller,
        )
        .await;
    }
    let stranger = f.app.stranger_key().await;
    let replace = f
        .app
        .post_json(
            &format!("{}/replace", key_path(&f.project, &key)),
            &stranger,
            &body,
        )
        .await;
    assert_eq!(replace.status(), 404);
    let rewrap = post(
        &f.app,
        &stranger,
        &format!("{}/rewrap", key_path(&f.project, &key)),
    )
    .await;
    assert_eq!(rewrap.status(), 404);
    let impact = f
        .app
        .get(&format!("{}/impact", key_path(&f.project, &key)), &stranger)
        .await;
    assert_eq!(impact.status(), 404);
}

#[tokio::test]
async fn a_replacement_is_refused_clearly_and_leaves_nothing_half_made() {
    let f = local_cmek(&["us-east-1"]).await;
    let key = f.key_id("us-east-1").await;
    let path = format!("{}/replace", key_path(&f.project, &key));

    // Another region, and the same key: 422 naming the field.
    let other = new_local_key(&f, "other").await;
    let wrong_region = f
        .app
        .post_json(
            &path,
            &f.owner,
            &json!({ "provider": "local", "region": "eu-west-1", "key_id": other }),
        )
        .await;
    assert_eq!(wrong_region.status(), 422);
    assert!(crate::helpers::fields(&problem(wrong_region).await).contains(&"region".to_owned()));
    let same = f
        .app
        .post_json(
            &path,
            &f.owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": f.local_keys[0].1 }),
        )
        .await;
    assert_eq!(same.status(), 422);
    // A key that fails its checks (unknown to the KMS): 422 with the checklist; nothing saved.
    let unknown = f
        .app
        .post_json(
            &path,
            &f.owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": uuid::Uuid::now_v7() }),
        )
        .await;
    assert_eq!(unknown.status(), 422);
    let keys = json_of(
        &f.app,
        &format!("/api/v1/projects/{}/encryption-keys", f.project),
        &f.owner,
    )
    .await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 1, "{keys}");
    // A replaced key is not replaced again.
    let replaced = f
        .app
        .post_json(
            &path,
            &f.owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": other }),
        )
        .await;
    assert_eq!(replaced.status(), 202);
    let third = new_local_key(&f, "third").await;
    change_when_ended(&f.app, &f.owner, &f.project, &key).await;
    let again = f
        .app
        .post_json(
            &path,
            &f.owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": third }),
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["type"], rule("key-change"));
}

#[tokio::test]
async fn the_key_page_replaces_a_key_without_javascript_and_shows_the_progress() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("c", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "a", b"alpha".to_vec())
            .await
            .status(),
        201
    );
    let old = f.key_id("us-east-1").await;
    let new_local = new_local_key(&f, "replacement").await;
    let browser = f.app.signed_in_owner().await;
    let page_path = format!("/projects/{}/encryption-keys/{old}", f.project);
    let page = browser
        .get(f.app.url(&page_path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Replace with another key") && page.contains("Re-wrap"),
        "{page}"
    );
    assert!(
        page.contains(&new_local.to_string()),
        "the form lists the local keys"
    );

    // A key of another region: the form comes back with the field's error, nothing changed.
    let refused = browser
        .post(f.app.url(&format!("{page_path}/replace")))
        .form(&[
            ("provider", "local"),
            ("region", "eu-west-1"),
            ("key_id", &new_local.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(page.contains("data-field=\"region\""), "{page}");
    assert!(page.contains("This key has not been changed."));

    let replaced = browser
        .post(f.app.url(&format!("{page_path}/replace")))
        .form(&[
            ("provider", "local"),
            ("region", "us-east-1"),
            ("key_id", &new_local.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 303);
    let location = replaced.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with("?changed=replace#change"), "{location}");
    change_when_ended(&f.app, &f.owner, &f.project, &old).await;
    let page = browser
        .get(f.app.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"change-state\">done<"), "{page}");
    assert!(page.contains("1 of 1 data keys moved"), "{page}");
    assert!(page.contains("This key was replaced by"));
    assert!(
        !page.contains("Replace with another key"),
        "a replaced key is not changed again"
    );
    // Members see the change but are offered no form.
    let member = f.app.signed_in_as(Role::Member).await;
    let page = member
        .get(f.app.url(&page_path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"change-state\">done<") && !page.contains("Re-wrap</button>"));
}

#[tokio::test]
#[ignore = "needs moto (scripts/test starts it)"]
async fn replacing_an_aws_key_under_a_multi_region_cluster_then_disabling_it_breaks_nothing() {
    use crate::clusters_aws::aws_cluster;
    let moto = crate::moto::Moto::open();
    let (east, west) = ("us-east-1", "us-west-2");
    let old_arn = moto.create_key(east).await;
    let west_arn = moto.create_key(west).await;
    let new_arn = moto.create_key(east).await;
    let app = moto.app().await;
    let owner = app.api_key(Role::Owner).await;
    let cluster = aws_cluster(
        &app,
        &owner,
        &[(east, &old_arn), (west, &west_arn)],
        "orders",
    )
    .await;
    let project = cluster["project_id"].as_str().unwrap().to_owned();
    let cluster = id(&cluster);
    let bytes = marked("aws replace", 90_000);
    assert_eq!(
        put(&app, &owner, &cluster, "kept", bytes.clone())
            .await
            .status(),
        201
    );
    let backup = id(&app.take_backup(&owner, &cluster).await);
    app.backup_when_done(&owner, &backup).await;
    let keys = json_of(
        &app,
        &format!("/api/v1/projects/{project}/encryption-keys"),
        &owner,
    )
    .await;
    let old = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["region"] == east)
        .map(id)
        .unwrap();

    let impact_path = format!("{}/impact", key_path(&project, &old));
    let before = json_of(&app, &impact_path, &owner).await;
    assert_eq!(verdict(&before, "delete")["safe"], false, "{before}");
    assert_eq!(verdict(&before, "disable_key")["safe"], false, "{before}");

    let stop = AtomicBool::new(false);
    let client = busy_client(&app, &owner, &cluster, &stop);
    let change = async {
        let started = app
            .post_json(
                &format!("{}/replace", key_path(&project, &old)),
                &owner,
                &json!({ "provider": "aws_kms", "region": east, "key_arn": new_arn }),
            )
            .await;
        assert_eq!(started.status(), 202, "{}", started.text().await.unwrap());
        let change = change_when_ended(&app, &owner, &project, &old).await;
        stop.store(true, Ordering::SeqCst);
        change
    };
    let ((requests, failed), change) = tokio::join!(client, change);

    assert_eq!(change["state"], "done", "{change}");
    assert_eq!(
        change["done"], 2,
        "the cluster's us-east-1 data key and the backup's: {change}"
    );
    assert_eq!(
        failed, 0,
        "no request failed during the change ({requests} made)"
    );
    let old_read = json_of(&app, &key_path(&project, &old), &owner).await;
    assert_eq!(old_read["versions"], json!([]), "{old_read}");
    let after = json_of(&app, &impact_path, &owner).await;
    assert_eq!(verdict(&after, "delete")["safe"], true, "{after}");
    assert_eq!(verdict(&after, "disable_key")["safe"], true, "{after}");
    // An AWS key has nothing to re-wrap (KMS decrypts with the backing key that encrypted).
    let nothing = post(
        &app,
        &owner,
        &format!("{}/rewrap", key_path(&project, &started_key(&old_read))),
    )
    .await;
    assert_eq!(nothing.status(), 409);
    // Delete the old key here, disable it in AWS: the cluster pauses and resumes, the backup
    // restores, every byte reads back.
    assert_eq!(
        app.delete(&key_path(&project, &old), &owner).await.status(),
        204
    );
    moto.disable_key(east, &old_arn).await;
    assert_eq!(
        post(&app, &owner, &format!("/api/v1/clusters/{cluster}/pause"))
            .await
            .status(),
        200
    );
    let resumed = post(&app, &owner, &format!("/api/v1/clusters/{cluster}/resume")).await;
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read = get(&app, &owner, &cluster, "kept")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(read.as_ref(), bytes.as_slice());
    let restored = app.restore_backup(&owner, &backup, None).await;
    assert_eq!(restored["state"], "available", "{restored}");
    let copy = get(&app, &owner, &id(&restored), "kept")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(copy.as_ref(), bytes.as_slice());
}

/// `n` clusters in us-east-1, made a few at a time: `n` data keys under the region's key.
async fn many_clusters(f: &Fixture, n: usize) {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .for_each_concurrent(8, |i| async move {
            let created = f
                .create(json!({ "name": format!("c{i}"), "provider": "local", "regions": ["us-east-1"] }))
                .await;
            assert_eq!(created.status(), 201);
        })
        .await;
}

async fn start_replacement(f: &Fixture, old: &str) -> Value {
    let new_local = new_local_key(f, "successor").await;
    let started = f
        .app
        .post_json(
            &format!("{}/replace", key_path(&f.project, old)),
            &f.owner,
            &json!({ "provider": "local", "region": "us-east-1", "key_id": new_local }),
        )
        .await;
    assert_eq!(started.status(), 202);
    started.json().await.unwrap()
}

/// Every item of a list, page after page.
async fn all_items(f: &Fixture, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let join = if path.contains('?') { '&' } else { '?' };
    loop {
        let page_path = match &token {
            Some(t) => format!("{path}{join}page_size=100&page_token={t}"),
            None => format!("{path}{join}page_size=100"),
        };
        let page = json_of(&f.app, &page_path, &f.owner).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// Every data key of the change was swapped exactly once: one audit event each, the count
/// as recorded, and every cluster now under the new key.
async fn each_swapped_once(f: &Fixture, change: &Value, n: usize) {
    assert_eq!(change["state"], "done", "{change}");
    assert_eq!(change["done"], n, "{change}");
    let swaps = all_items(f, "/api/v1/audit-events?action=data_key.rewrapped").await;
    assert_eq!(swaps.len(), n, "one swap, and one event, per data key");
    let clusters = all_items(f, &format!("/api/v1/projects/{}/clusters", f.project)).await;
    assert_eq!(clusters.len(), n);
    let new = change["to_key_id"].as_str().unwrap();
    for cluster in &clusters {
        assert_eq!(cluster["regions"][0]["key_id"], new, "{cluster}");
    }
}

#[tokio::test]
async fn a_console_killed_in_the_middle_of_a_change_leaves_it_to_another_and_loses_nothing() {
    use crate::clusters::{local_cmek_quiet, serve, until_up};
    let f = local_cmek_quiet(&["us-east-1"]).await;
    let n = 400;
    many_clusters(&f, n).await;
    let old = f.key_id("us-east-1").await;
    let port = crate::clusters::free_port();
    let mut first = serve(
        &f.app,
        port,
        &[("CMEK_TEST_WORKER_FAULTS", "storage-sweeper")],
    );
    until_up(&f.app, port).await;

    start_replacement(&f, &old).await;
    let mut done = 0;
    for _ in 0..5000 {
        done = json_of(&f.app, &key_path(&f.project, &old), &f.owner).await["change"]["done"]
            .as_u64()
            .unwrap();
        if done > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = json_of(&f.app, &key_path(&f.project, &old), &f.owner).await["change"].clone();
    assert_eq!(
        at_kill["state"], "rewrapping",
        "killed in the middle: {at_kill}"
    );
    assert!(
        done > 0 && at_kill["done"].as_u64().unwrap() < n as u64,
        "{at_kill}"
    );

    // Its lease lapses; another console finishes the change.
    crate::backup_jobs::lapse_leases(&f).await;
    let port = crate::clusters::free_port();
    let mut second = serve(
        &f.app,
        port,
        &[("CMEK_TEST_WORKER_FAULTS", "storage-sweeper")],
    );
    until_up(&f.app, port).await;
    let change = change_when_ended(&f.app, &f.owner, &f.project, &old).await;
    second.kill().unwrap();
    second.wait().unwrap();
    each_swapped_once(&f, &change, n).await;
}

#[tokio::test]
async fn two_consoles_share_a_change_and_each_data_key_is_moved_once() {
    use crate::clusters::{local_cmek_quiet, serve, until_up};
    let f = local_cmek_quiet(&["us-east-1"]).await;
    let n = 200;
    many_clusters(&f, n).await;
    let old = f.key_id("us-east-1").await;
    let ports = [crate::clusters::free_port(), crate::clusters::free_port()];
    let mut consoles: Vec<_> = ports
        .iter()
        .map(|port| {
            serve(
                &f.app,
                *port,
                &[("CMEK_TEST_WORKER_FAULTS", "storage-sweeper")],
            )
        })
        .collect();
    for port in ports {
        until_up(&f.app, port).await;
    }

    start_replacement(&f, &old).await;
    let change = change_when_ended(&f.app, &f.owner, &f.project, &old).await;
    for console in &mut consoles {
        console.kill().unwrap();
        console.wait().unwrap();
    }
    each_swapped_once(&f, &change, n).await;
}

/// Test Encryption Key against moto with IAM enforced, for a console identity whose KMS
/// permission is granted `grant_after` into the test (or never).
async fn test_while_the_grant_propagates(
    propagation: &str,
    grant_after: Option<Duration>,
) -> (Vec<Value>, std::time::Duration) {
    use crate::clusters_aws::{console_user, grant, revoke};
    let moto = crate::moto::Moto::iam_admin();
    let (user, key, secret) = console_user(&moto).await;
    let arn = moto.create_key("us-east-1").await;
    let app = moto
        .app_with(
            &key,
            &secret,
            &moto.url,
            &[("CMEK_KEY_TEST_PROPAGATION", propagation)],
        )
        .await;
    revoke(&moto, &user).await;
    let browser = app.signed_in_owner().await;
    let owner = app.api_key(Role::Owner).await;
    let project = id(&app.create_project(&owner, "fresh grant", true).await);
    let granting = async {
        if let Some(after) = grant_after {
            tokio::time::sleep(after).await;
            grant(&moto, &user).await;
        }
    };
    let testing = async {
        let started = std::time::Instant::now();
        let text = browser
            .post(app.url(&format!("/projects/{project}/encryption-keys/stream")))
            .form(&[
                ("provider", "aws_kms"),
                ("region", "us-east-1"),
                ("key_arn", arn.as_str()),
                ("action", "test"),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (events, started.elapsed())
    };
    let ((), outcome) = tokio::join!(granting, testing);
    outcome
}

#[tokio::test]
#[ignore = "needs moto with IAM enforced (scripts/test starts it)"]
async fn test_encryption_key_waits_for_a_fresh_grant_to_propagate_and_says_so() {
    let (events, _) = test_while_the_grant_propagates("30s", Some(Duration::from_secs(3))).await;

    let waiting: Vec<&Value> = events.iter().filter(|e| e["type"] == "waiting").collect();
    assert!(
        !waiting.is_empty(),
        "the checklist said it was waiting: {events:?}"
    );
    assert!(
        waiting[0]["message"]
            .as_str()
            .unwrap()
            .contains("Waiting for the grant to propagate"),
        "{waiting:?}"
    );
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(
        done["passed"], true,
        "passed once the grant propagated: {events:?}"
    );
    assert!(done["waited_seconds"].as_u64().unwrap() >= 2, "{done}");
}

#[tokio::test]
#[ignore = "needs moto with IAM enforced (scripts/test starts it)"]
async fn with_propagation_off_a_refused_key_fails_at_once() {
    let (events, took) = test_while_the_grant_propagates("0", None).await;

    assert!(events.iter().all(|e| e["type"] != "waiting"), "{events:?}");
    // The check the KMS refused for access offers Check my key policy, for this region.
    assert!(
        events.iter().any(|e| e["type"] == "check"
            && e["html"]
                .as_str()
                .unwrap_or_default()
                .contains("aws-policy-check?region=us-east-1")),
        "{events:?}"
    );
    let done = events.last().unwrap();
    assert_eq!(done["passed"], false, "{done}");
    assert_eq!(done["waited_seconds"], 0);
    assert!(took < Duration::from_secs(20), "it did not wait: {took:?}");
}
