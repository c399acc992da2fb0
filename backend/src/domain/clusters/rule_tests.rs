//! The cluster rules (R5-R8, R10, R11), the lifecycle, backups and restores as jobs, and the
//! storage sweeper, on the in-memory fakes: no HTTP, no database, no files.

use uuid::Uuid;

use super::{BackupState, ClusterState};
use crate::domain::DomainError;
use crate::domain::clock::Clock;
use crate::domain::error::Rule;
use crate::domain::kms::KmsError;
use crate::domain::testing::world::World;

fn rule_of<T: std::fmt::Debug>(result: Result<T, DomainError>) -> Rule {
    match result {
        Err(
            DomainError::Conflict { rule, .. }
            | DomainError::Refused { rule, .. }
            | DomainError::Forbidden { rule, .. },
        ) => rule,
        other => panic!("expected a refusal by rule, got {other:?}"),
    }
}

fn disabled() -> KmsError {
    KmsError::Disabled {
        code: "DisabledException".into(),
    }
}

#[tokio::test]
async fn r5_r11_a_cmek_cluster_needs_an_active_key_in_each_of_its_regions() {
    let w = World::new().await;

    let refused = w
        .svc()
        .create_cluster(
            &w.owner,
            w.project,
            &World::request("c", &["us-east-1", "ap-south-1"]),
        )
        .await;

    assert_eq!(rule_of(refused), Rule::KeyRequiredForRegion);
    assert!(w.blobs.keys().is_empty(), "nothing was written");
    // With a key there too, the cluster is made, each region under its own key.
    w.add_key(w.project, "ap-south-1").await;
    let cluster = w.cluster("c", &["us-east-1", "ap-south-1"]).await;
    assert_eq!(cluster.state, ClusterState::Available);
    let keys: Vec<_> = cluster.regions.iter().map(|r| r.key_id).collect();
    assert!(keys.iter().all(Option::is_some));
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn r6_r7_cmek_clusters_are_dedicated_and_back_up_to_one_region() {
    let w = World::new().await;
    let mut serverless = World::request("s", &["us-east-1"]);
    serverless.tier = Some("serverless".into());
    let mut dual = World::request("d", &["us-east-1"]);
    dual.dual_region_backup = true;

    let serverless = w
        .svc()
        .create_cluster(&w.owner, w.project, &serverless)
        .await;
    let dual = w.svc().create_cluster(&w.owner, w.project, &dual).await;

    assert_eq!(rule_of(serverless), Rule::DedicatedOnly);
    assert_eq!(rule_of(dual), Rule::NoDualRegionBackup);
}

#[tokio::test]
async fn r8_each_region_keeps_its_own_sealed_copy_and_no_plaintext_is_stored() {
    let w = World::new().await;
    let cluster = w.cluster("c", &["us-east-1", "eu-west-1"]).await;
    let secret = b"the plaintext that must never be stored".repeat(100);

    w.put(cluster.id, "rows", &secret).await.unwrap();

    let copies: Vec<String> = w
        .blobs
        .keys()
        .into_iter()
        .filter(|k| k.contains("/objects/"))
        .collect();
    assert_eq!(copies.len(), 2, "one copy per region: {copies:?}");
    assert!(copies.iter().any(|k| k.contains("/us-east-1/")));
    assert!(copies.iter().any(|k| k.contains("/eu-west-1/")));
    for key in w.blobs.keys() {
        let stored = w.blobs.get(&key).unwrap();
        assert!(
            !stored
                .windows(20)
                .any(|w| secret.windows(20).next() == Some(w)),
            "{key} holds plaintext"
        );
    }
    assert_eq!(w.read(cluster.id, "rows").await.unwrap(), secret);
}

#[tokio::test]
async fn r10_a_paused_cluster_serves_nothing_and_resumes_only_with_its_key() {
    let w = World::new().await;
    let cluster = w.cluster("c", &["us-east-1"]).await;
    w.put(cluster.id, "a", b"kept").await.unwrap();

    let paused = w.svc().pause_cluster(&w.owner, cluster.id).await.unwrap();
    assert_eq!(paused.state, ClusterState::Paused);
    assert_eq!(rule_of(w.read(cluster.id, "a").await), Rule::ClusterState);
    assert_eq!(
        rule_of(w.put(cluster.id, "b", b"x").await),
        Rule::ClusterState
    );
    assert_eq!(
        rule_of(w.svc().create_backup(&w.owner, cluster.id).await),
        Rule::ClusterState
    );

    // The key is refused: the cluster stays paused, and says why.
    w.kms.refuse(Some(disabled()));
    let refused = w.svc().resume_cluster(&w.owner, cluster.id).await;
    assert!(
        matches!(refused, Err(DomainError::KeyUnusable { .. })),
        "{refused:?}"
    );
    let still = w.svc().cluster(&w.owner, cluster.id).await.unwrap();
    assert_eq!(still.state, ClusterState::Paused);
    assert!(still.last_error.is_some());

    w.kms.refuse(None);
    let resumed = w.svc().resume_cluster(&w.owner, cluster.id).await.unwrap();
    assert_eq!(resumed.state, ClusterState::Available);
    assert_eq!(w.read(cluster.id, "a").await.unwrap(), b"kept");
}

#[tokio::test]
async fn a_backup_is_a_snapshot_copied_by_its_job_and_restores_as_it_was() {
    let w = World::new().await;
    let cluster = w.cluster("c", &["us-east-1", "eu-west-1"]).await;
    w.put(cluster.id, "a", b"before").await.unwrap();
    w.put(cluster.id, "b", b"bee").await.unwrap();

    let backup = w.svc().create_backup(&w.owner, cluster.id).await.unwrap();
    assert_eq!(backup.state, BackupState::Creating);
    assert_eq!(backup.object_count, 2);
    // Changes after the snapshot are not in it; a second backup waits for the first.
    w.put(cluster.id, "a", b"after").await.unwrap();
    w.put(cluster.id, "c", b"later").await.unwrap();
    assert_eq!(
        rule_of(w.svc().create_backup(&w.owner, cluster.id).await),
        Rule::ClusterState
    );
    // Not restorable nor deletable while it is being taken.
    assert_eq!(
        rule_of(w.svc().restore_backup(&w.owner, backup.id, None).await),
        Rule::BackupState
    );
    assert_eq!(
        rule_of(w.svc().delete_backup(&w.owner, backup.id).await),
        Rule::BackupState
    );
    // Nor is the cluster deleted from under it.
    assert_eq!(
        rule_of(w.svc().delete_cluster(&w.owner, cluster.id).await),
        Rule::BackupState
    );

    w.run_jobs().await;
    let taken = w.svc().backup(&w.owner, backup.id).await.unwrap();
    assert_eq!(taken.state, BackupState::Available);
    assert_eq!(taken.objects_copied, 2);
    assert_eq!(taken.size_bytes, 9);
    // Released: the version kept for it ("before" in each region) is gone.
    let copies = |w: &World| {
        w.blobs
            .keys()
            .into_iter()
            .filter(|k| {
                k.starts_with(&format!("clusters/{}/", cluster.id)) && k.contains("/objects/")
            })
            .count()
    };
    assert_eq!(copies(&w), 3 * 2);

    let restored = w
        .svc()
        .restore_backup(&w.owner, backup.id, Some("copy"))
        .await
        .unwrap();
    assert_eq!(restored.state, ClusterState::Creating);
    assert_eq!(restored.restore.unwrap().objects_total, 2);
    assert_eq!(rule_of(w.read(restored.id, "a").await), Rule::ClusterState);
    // The backup a restore reads is not deleted from under it.
    assert_eq!(
        rule_of(w.svc().delete_backup(&w.owner, backup.id).await),
        Rule::BackupState
    );
    w.run_jobs().await;
    let restored = w.svc().cluster(&w.owner, restored.id).await.unwrap();
    assert_eq!(restored.state, ClusterState::Available);
    assert_eq!(restored.restore.unwrap().objects_restored, 2);
    assert_eq!(w.read(restored.id, "a").await.unwrap(), b"before");
    assert_eq!(w.read(restored.id, "b").await.unwrap(), b"bee");
    assert!(w.read(restored.id, "c").await.is_err());
}

#[tokio::test]
async fn a_refused_key_fails_a_backup_at_once_and_an_unreachable_kms_is_waited_out() {
    let w = World::new().await;
    let cluster = w.cluster("c", &["us-east-1"]).await;
    w.put(cluster.id, "a", b"x").await.unwrap();

    // Unreachable: retried later, still `creating`.
    let first = w.svc().create_backup(&w.owner, cluster.id).await.unwrap();
    w.kms
        .refuse(Some(KmsError::Unreachable("connection reset".into())));
    w.svc().sweep_data_keys().await.unwrap();
    w.run_jobs().await;
    assert_eq!(
        w.svc().backup(&w.owner, first.id).await.unwrap().state,
        BackupState::Creating
    );
    w.kms.refuse(None);
    w.clock.advance(chrono::Duration::minutes(10));
    w.run_jobs().await;
    assert_eq!(
        w.svc().backup(&w.owner, first.id).await.unwrap().state,
        BackupState::Available
    );

    // Refused: failed at once, with the reason, and the cluster is free again.
    let second = w.svc().create_backup(&w.owner, cluster.id).await.unwrap();
    w.kms.refuse(Some(disabled()));
    w.run_jobs().await;
    let failed = w.svc().backup(&w.owner, second.id).await.unwrap();
    assert_eq!(failed.state, BackupState::Failed);
    assert!(failed.last_error.is_some());
    assert_eq!(
        rule_of(w.svc().restore_backup(&w.owner, failed.id, None).await),
        Rule::BackupState
    );
    w.kms.refuse(None);
    let third = w.svc().create_backup(&w.owner, cluster.id).await.unwrap();
    w.run_jobs().await;
    assert_eq!(
        w.svc().backup(&w.owner, third.id).await.unwrap().state,
        BackupState::Available
    );
    w.svc().delete_backup(&w.owner, failed.id).await.unwrap();
}

#[tokio::test]
async fn the_sweeper_removes_an_orphan_on_its_second_sighting_and_nothing_live() {
    let w = World::new().await;
    let cluster = w.cluster("c", &["us-east-1"]).await;
    w.put(cluster.id, "live", b"live").await.unwrap();
    let old = w.clock.now() - chrono::Duration::hours(3);
    let orphan = format!(
        "clusters/{}/us-east-1/objects/{}",
        cluster.id,
        Uuid::now_v7()
    );
    let young = format!(
        "clusters/{}/us-east-1/objects/{}",
        cluster.id,
        Uuid::now_v7()
    );
    let gone_backup = format!("backups/{}/objects/{}", Uuid::now_v7(), Uuid::now_v7());
    w.blobs.leave(&orphan, b"x", old);
    w.blobs.leave(&gone_backup, b"x", old);
    w.blobs.leave(&young, b"x", w.clock.now());
    w.blobs.leave_unfinished("clusters/x/upload", old);
    w.blobs.leave_unfinished("clusters/y/upload", w.clock.now());
    let before = w.blobs.keys().len();
    let grace = std::time::Duration::from_secs(3600);
    let mut orphans = Default::default();
    // Sightings count from the second on (the fakes' writes are recorded at once).
    let settle = std::time::Duration::ZERO;

    let first = w
        .svc()
        .sweep_storage(&mut orphans, grace, settle)
        .await
        .unwrap();
    assert_eq!((first.removed, first.marked), (0, 2));
    assert_eq!(first.uploads_aborted, 1);
    assert_eq!(w.blobs.unfinished(), 1);
    assert_eq!(w.blobs.keys().len(), before);

    let second = w
        .svc()
        .sweep_storage(&mut orphans, grace, settle)
        .await
        .unwrap();
    assert_eq!(second.removed, 2);
    let left = w.blobs.keys();
    assert!(!left.contains(&orphan) && !left.contains(&gone_backup));
    assert!(
        left.contains(&young),
        "a copy within its grace period stays"
    );
    assert_eq!(w.read(cluster.id, "live").await.unwrap(), b"live");
    assert!(
        left.iter().any(|k| k.ends_with("/manifest")),
        "what is not an object's copy stays"
    );
}
