//! Backups as durable jobs and the storage sweeper, against real processes: a console killed
//! (SIGKILL) in the middle of a backup leaves a backup that another console finishes, a
//! cluster that kept serving, and orphaned copies that the sweeper removes; the sweeper never
//! removes a live copy while writes race it.

use serde_json::Value;

use crate::clusters::{
    Fixture, free_port, get, id, local_cmek_quiet, local_cmek_with, marked, post, put, serve,
    until_up,
};

/// The stored copies under `dir` (finished ones and unfinished writes' staging files).
fn copies_in(dir: &std::path::Path) -> (usize, usize) {
    let mut finished = 0;
    let mut staging = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains('#') {
                staging += 1;
            } else {
                finished += 1;
            }
        }
    }
    (finished, staging)
}

async fn backup(f: &Fixture, backup: &str) -> Value {
    f.app
        .get(&format!("/api/v1/backups/{backup}"), &f.owner)
        .await
        .json()
        .await
        .unwrap()
}

/// Puts `n` objects of `size` bytes, a few at a time.
async fn fill(f: &Fixture, cluster: &str, n: usize, size: usize) {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .for_each_concurrent(8, |i| async move {
            let stored = put(
                &f.app,
                &f.owner,
                cluster,
                &format!("o/{i:05}"),
                marked(&format!("object {i}"), size),
            )
            .await;
            assert_eq!(stored.status(), 201);
        })
        .await;
}

/// Makes the job's lease lapse now, as it would once its holder has been dead long enough.
pub async fn lapse_leases(f: &Fixture) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = f.app.db().await;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE jobs SET lease_until = NULL",
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_console_killed_during_a_backup_leaves_it_to_another_and_the_cluster_untouched() {
    // The test's own instance sets things up and runs no background work.
    let f = local_cmek_quiet(&["us-east-1"]).await;
    let cluster = id(&f.cluster("big", &["us-east-1"]).await);
    let n = 640;
    fill(&f, &cluster, n, 16 * 1024).await;

    // A real console takes the backup's job, and is killed (SIGKILL) while it copies.
    let port = free_port();
    let mut first = serve(
        &f.app,
        port,
        &[("CMEK_TEST_WORKER_FAULTS", "storage-sweeper")],
    );
    until_up(&f.app, port).await;
    let started = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/clusters/{cluster}/backups"),
    )
    .await;
    assert_eq!(started.status(), 202);
    let backup_id = id(&started.json::<Value>().await.unwrap());
    let mut copied = 0;
    for _ in 0..3000 {
        copied = backup(&f, &backup_id).await["objects_copied"]
            .as_u64()
            .unwrap();
        if copied > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = backup(&f, &backup_id).await;
    assert_eq!(at_kill["state"], "creating", "{at_kill}");
    assert!(
        copied > 0 && at_kill["objects_copied"].as_u64().unwrap() < n as u64,
        "the console was killed in the middle of the copy: {at_kill}"
    );

    // The cluster kept serving: every object reads back, and a write replaces one (its old
    // version is kept for the backup, whose snapshot holds it).
    let cluster_copies = f
        .app
        .data_dir()
        .join(format!("storage/clusters/{cluster}/us-east-1/objects"));
    assert_eq!(copies_in(&cluster_copies).0, n);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "o/00000", b"changed".to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(
        copies_in(&cluster_copies).0,
        n + 1,
        "the old version is kept"
    );

    // Another console resumes the job once the dead one's lease lapses, and its sweeper
    // removes the copies the killed one wrote but never recorded.
    lapse_leases(&f).await;
    let port = free_port();
    let mut second = serve(
        &f.app,
        port,
        &[
            ("CMEK_STORAGE_SWEEP_INTERVAL", "1s"),
            ("CMEK_STORAGE_SWEEP_GRACE", "1s"),
        ],
    );
    until_up(&f.app, port).await;
    let done = f.app.backup_when_done(&f.owner, &backup_id).await;
    assert_eq!(done["state"], "available", "{done}");
    assert_eq!(done["object_count"], n);
    assert_eq!(done["objects_copied"], n);
    assert_eq!(done["size_bytes"], n * 16 * 1024);
    // Released: the version kept for it is gone, the cluster holds its objects only. The
    // job removes it right after it records the backup done, so the answer may come first.
    for _ in 0..200 {
        if copies_in(&cluster_copies).0 == n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(copies_in(&cluster_copies).0, n);

    let backup_copies = f
        .app
        .data_dir()
        .join(format!("storage/backups/{backup_id}/objects"));
    let mut left = (0, 0);
    for _ in 0..300 {
        left = copies_in(&backup_copies);
        if left == (n, 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, (n, 0), "orphaned copies and staging files were swept");
    second.kill().unwrap();
    second.wait().unwrap();

    // The backup holds the snapshot: the object as it was before the change. (The test's
    // own instance runs the restore's job.)
    f.app.workers.inject("backups", None);
    let copy = id(&f.app.restore_backup(&f.owner, &backup_id, None).await);
    for i in [0, 1, n / 2, n - 1] {
        let read = get(&f.app, &f.owner, &copy, &format!("o/{i:05}")).await;
        assert_eq!(read.status(), 200);
        assert_eq!(
            read.bytes().await.unwrap().as_ref(),
            marked(&format!("object {i}"), 16 * 1024).as_slice()
        );
    }
}

#[tokio::test]
async fn the_sweeper_removes_orphans_and_never_a_live_copy_while_writes_race_it() {
    let f = local_cmek_with(
        &["us-east-1"],
        &[
            ("CMEK_STORAGE_SWEEP_INTERVAL", "1s"),
            ("CMEK_STORAGE_SWEEP_GRACE", "1s"),
        ],
    )
    .await;
    let cluster = id(&f.cluster("busy", &["us-east-1"]).await);
    let storage = f.app.data_dir().join("storage");
    let objects = storage.join(format!("clusters/{cluster}/us-east-1/objects"));
    // What a killed process leaves: a copy no row names, a staging file, a deleted backup's
    // copy; and what is not a copy at all, which stays.
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "seed", b"seed".to_vec())
            .await
            .status(),
        201
    );
    let orphan = objects.join(uuid::Uuid::now_v7().to_string());
    let staging = objects.join(format!("{}#7", uuid::Uuid::now_v7()));
    let gone_backup = storage.join(format!("backups/{}/objects", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&gone_backup).unwrap();
    let backup_orphan = gone_backup.join(uuid::Uuid::now_v7().to_string());
    let not_a_copy = storage.join(format!("clusters/{cluster}/us-east-1/notes.txt"));
    for file in [&orphan, &staging, &backup_orphan, &not_a_copy] {
        std::fs::write(file, b"left behind").unwrap();
    }
    // The console's clock runs an hour ahead of the storage's: every copy, those the racing
    // writes make included, is past its grace period at once, so only the index and the
    // second sighting stand between a live copy and the sweeper.
    f.app.clock.advance(chrono::Duration::hours(1));

    // Writes race the sweeper for several of its rounds: replacing one object, adding others.
    let writes = {
        let app_url = f.app.url("");
        let owner = f.owner.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let started = std::time::Instant::now();
            let mut i = 0u32;
            while started.elapsed() < std::time::Duration::from_secs(6) {
                for name in ["hot".to_owned(), format!("new/{i}")] {
                    let stored = client
                        .put(format!(
                            "{app_url}/api/v1/clusters/{cluster}/objects/{name}"
                        ))
                        .bearer_auth(&owner)
                        .body(format!("{name} {i}"))
                        .send()
                        .await
                        .unwrap();
                    let status = stored.status();
                    assert_eq!(status, 201, "{}", stored.text().await.unwrap());
                }
                i += 1;
            }
            i
        })
    };
    let rounds = writes.await.unwrap();
    assert!(
        rounds > 10,
        "the writes raced the sweeper ({rounds} rounds)"
    );

    for _ in 0..100 {
        if !orphan.exists() && !staging.exists() && !backup_orphan.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !orphan.exists(),
        "an orphaned copy is removed: {:?}",
        f.app.workers.report()
    );
    assert!(
        !staging.exists(),
        "an unfinished write's staging file is removed"
    );
    assert!(
        !backup_orphan.exists(),
        "a deleted backup's copy is removed"
    );
    assert!(not_a_copy.exists(), "what is not a copy is left alone");

    // Every object reads back with what was last written, and storage holds exactly one
    // copy per object: none lost, no orphan left.
    let last = rounds - 1;
    let mut expected = vec![
        ("seed".to_owned(), "seed".to_owned()),
        ("hot".to_owned(), format!("hot {last}")),
    ];
    expected.extend((0..rounds).map(|i| (format!("new/{i}"), format!("new/{i} {i}"))));
    for (name, want) in &expected {
        let read = get(&f.app, &f.owner, &cluster, name).await;
        assert_eq!(read.status(), 200, "{name}");
        assert_eq!(&read.text().await.unwrap(), want);
    }
    assert_eq!(copies_in(&objects), (expected.len(), 0));
}

#[tokio::test]
async fn a_restore_that_cannot_finish_leaves_a_failed_cluster_that_says_why_and_can_be_deleted() {
    use cmek_console::supervisor::Fault;
    let f = local_cmek_with(&["us-east-1"], &[]).await;
    let cluster = id(&f.cluster("source", &["us-east-1"]).await);
    fill(&f, &cluster, 3, 1024).await;
    let backup = f.app.take_backup(&f.owner, &cluster).await;
    assert_eq!(backup["state"], "available");

    // The restore is accepted (its checks pass) and waits for its job ...
    f.app.workers.inject("backups", Some(Fault::FailAlways));
    let started = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/backups/{}/restore", id(&backup)),
    )
    .await;
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let creating: Value = started.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/clusters/{}", id(&creating)));
    assert_eq!(creating["state"], "creating");
    assert_eq!(creating["restore"]["objects_total"], 3);
    assert_eq!(creating["restore"]["objects_restored"], 0);
    // ... which the page shows, reloading itself.
    let browser = f.app.signed_in_owner().await;
    let cluster_page = || async {
        browser
            .get(f.app.url(&format!("/clusters/{}", id(&creating))))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let page = cluster_page().await;
    assert!(page.contains("id=\"restore-progress\""), "{page}");
    assert!(page.contains("0 of 3 objects"));
    assert!(page.contains(&format!(
        "http-equiv=\"refresh\" content=\"3;url=/clusters/{}\"",
        id(&creating)
    )));

    // The backup's copies are lost meanwhile: the job cannot finish.
    std::fs::remove_dir_all(
        f.app
            .data_dir()
            .join(format!("storage/backups/{}", id(&backup))),
    )
    .unwrap();
    f.app.workers.inject("backups", None);
    let mut failed = Value::Null;
    for _ in 0..600 {
        failed = f
            .app
            .get(&format!("/api/v1/clusters/{}", id(&creating)), &f.owner)
            .await
            .json()
            .await
            .unwrap();
        if failed["state"] != "creating" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("missing"),
        "{failed}"
    );
    // It serves nothing, says why on its page, and can be deleted.
    assert_eq!(
        get(&f.app, &f.owner, &id(&creating), "o/00000")
            .await
            .status(),
        409
    );
    let page = cluster_page().await;
    assert!(page.contains("The restore failed"), "{page}");
    let events: Value = f
        .app
        .get(
            "/api/v1/audit-events?action=backup.restore_failed",
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"][0]["detail"]["cluster_id"], id(&creating));
    assert_eq!(
        f.app
            .delete(&format!("/api/v1/clusters/{}", id(&creating)), &f.owner)
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn a_keys_impact_names_what_it_protects_and_what_each_action_would_break() {
    let f = local_cmek_with(&["us-east-1"], &[]).await;
    let key = f.key_id("us-east-1").await;
    let impact_path = format!(
        "/api/v1/projects/{}/encryption-keys/{key}/impact",
        f.project
    );
    let member = f
        .app
        .api_key(cmek_console::domain::identity::Role::Member)
        .await;
    let impact = |key: String| {
        let path = impact_path.clone();
        let app = &f.app;
        async move { app.get(&path, &key).await.json::<Value>().await.unwrap() }
    };

    // Nothing uses a new key: every action is safe.
    let unused = impact(member.clone()).await;
    assert!(
        unused["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["safe"] == true),
        "{unused}"
    );

    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let backup = f.app.take_backup(&f.owner, &cluster).await;
    let used = impact(member.clone()).await;

    assert_eq!(used["key_id"], key.to_string());
    assert_eq!(used["clusters"][0]["name"], "orders");
    assert_eq!(used["clusters"][0]["state"], "available");
    // The local KMS's default policy is keep_running.
    assert_eq!(used["clusters"][0]["if_revoked"], "would_not_resume");
    assert_eq!(used["backups"][0]["id"], backup["id"]);
    let verdict = |action: &str| {
        used["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["action"] == action)
            .cloned()
            .unwrap()
    };
    assert_eq!(verdict("delete")["safe"], false);
    assert!(
        verdict("delete")["reason"]
            .as_str()
            .unwrap()
            .contains("cluster \"orders\"")
    );
    let disable = verdict("disable_key");
    assert_eq!(disable["safe"], false);
    assert!(
        disable["reason"]
            .as_str()
            .unwrap()
            .contains("\"orders\" would keep running but could not resume"),
        "{disable}"
    );
    let version = verdict("disable_version");
    assert_eq!(version["safe"], false);
    assert!(
        version["reason"].as_str().unwrap().contains("2 data keys"),
        "{version}"
    );
    // Under `stop`, the same key would stop the cluster.
    assert_eq!(
        f.app
            .patch_json(
                &format!("/api/v1/projects/{}", f.project),
                &f.owner,
                &serde_json::json!({ "revocation_policy": "stop" }),
            )
            .await
            .status(),
        200
    );
    assert_eq!(
        impact(member.clone()).await["clusters"][0]["if_revoked"],
        "becomes_inaccessible"
    );
    // The key's page shows the verdicts, and Key Status links to them.
    let browser = f.app.signed_in_owner().await;
    let page = browser
        .get(
            f.app
                .url(&format!("/projects/{}/encryption-keys/{key}", f.project)),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"impact\""), "{page}");
    assert!(page.contains("Disable the key in your KMS"));
    assert!(page.contains("would become inaccessible"));
    assert!(page.contains(backup["id"].as_str().unwrap()));
    // Another organization's key is not found.
    let stranger = f.app.stranger_key().await;
    assert_eq!(f.app.get(&impact_path, &stranger).await.status(), 404);
}
