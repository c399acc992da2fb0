//! Changing a key in place, on the in-memory fakes: a replacement moves every data key of the
//! region (running and paused clusters, backups) while the clusters serve, each swap audited;
//! a refusing KMS leaves the data keys where they were, readable, and fails the change.

use uuid::Uuid;

use super::{BackupState, ClusterState};
use crate::domain::DomainError;
use crate::domain::error::Rule;
use crate::domain::keys::rewrap::RewrapState;
use crate::domain::keys::{EncryptionKey, KeyRequestInput};
use crate::domain::kms::KmsError;
use crate::domain::testing::world::World;

fn rule_of<T: std::fmt::Debug>(result: Result<T, DomainError>) -> Rule {
    match result {
        Err(DomainError::Conflict { rule, .. }) => rule,
        other => panic!("expected a conflict by rule, got {other:?}"),
    }
}

fn local(region: &str) -> KeyRequestInput {
    KeyRequestInput {
        provider: "local".into(),
        region: region.into(),
        key_id: Some(Uuid::now_v7().to_string()),
        ..KeyRequestInput::default()
    }
}

async fn key_in(w: &World, region: &str) -> EncryptionKey {
    w.console
        .keys()
        .encryption_keys(&w.owner, w.project)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.region.as_str() == region && k.replaced_by.is_none())
        .unwrap()
}

async fn run_rewraps(w: &World) {
    for _ in 0..20 {
        let done = w.svc().run_due_rewraps().await.unwrap();
        if done == super::RewrapReport::default() {
            return;
        }
    }
}

#[tokio::test]
async fn a_replacement_moves_every_data_key_of_the_region_while_clusters_serve() {
    let w = World::new().await;
    let running = w.cluster("running", &["us-east-1", "eu-west-1"]).await;
    let paused = w.cluster("paused", &["us-east-1"]).await;
    w.put(running.id, "a", b"alpha").await.unwrap();
    w.put(paused.id, "p", b"kept while paused").await.unwrap();
    let backup = w.svc().create_backup(&w.owner, running.id).await.unwrap();
    w.run_jobs().await;
    w.svc().pause_cluster(&w.owner, paused.id).await.unwrap();
    let old = key_in(&w, "us-east-1").await;
    let keys = w.console.keys();

    let replaced = keys
        .replace_key(&w.owner, w.project, old.id, &local("us-east-1"), None)
        .await
        .unwrap();

    // Three data keys: the two clusters' us-east-1 regions and the backup.
    assert_eq!(replaced.rewrap.total, 3);
    // A backup taken now, while the cluster still names the old key, goes under the new one
    // (it would otherwise keep the old key in use after the change).
    let during = w.svc().create_backup(&w.owner, paused.id).await;
    assert!(during.is_err(), "a paused cluster takes no backup");
    let during = w.svc().create_backup(&w.owner, running.id).await.unwrap();
    assert_eq!(during.region.key_id, Some(replaced.key.id));
    w.run_jobs().await;
    assert_eq!(replaced.rewrap.state, RewrapState::Rewrapping);
    // While it runs, neither key is deleted nor changed again.
    assert_eq!(
        rule_of(keys.delete_key(&w.owner, w.project, old.id).await),
        Rule::KeyChange
    );
    assert_eq!(
        rule_of(keys.rewrap_key(&w.owner, w.project, replaced.key.id).await),
        Rule::KeyChange
    );
    run_rewraps(&w).await;

    let change = keys
        .key_change(&w.owner, w.project, old.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.state, RewrapState::Done);
    assert_eq!((change.done, change.failed), (3, 0));
    for id in [running.id, paused.id] {
        let cluster = w.svc().cluster(&w.owner, id).await.unwrap();
        let east = cluster
            .regions
            .iter()
            .find(|r| r.region.as_str() == "us-east-1")
            .unwrap();
        assert_eq!(
            east.key_id,
            Some(replaced.key.id),
            "{}",
            cluster.name.as_str()
        );
    }
    let moved = w.svc().backup(&w.owner, backup.id).await.unwrap();
    assert_eq!(moved.region.key_id, Some(replaced.key.id));
    assert_eq!(moved.state, BackupState::Available);
    // The running cluster served throughout; the paused one stayed paused and resumes
    // under the new key; the backup restores.
    assert_eq!(w.read(running.id, "a").await.unwrap(), b"alpha");
    let still = w.svc().cluster(&w.owner, paused.id).await.unwrap();
    assert_eq!(still.state, ClusterState::Paused);
    w.svc().resume_cluster(&w.owner, paused.id).await.unwrap();
    assert_eq!(w.read(paused.id, "p").await.unwrap(), b"kept while paused");
    // Each swap is in the audit log.
    let swaps = w
        .store
        .audit_log()
        .into_iter()
        .filter(|e| e.action == "data_key.rewrapped")
        .count();
    assert_eq!(swaps, 3);
    // Nothing uses the old key now: it can be deleted; new clusters take the new key.
    let fresh = w.cluster("fresh", &["us-east-1"]).await;
    assert_eq!(fresh.regions[0].key_id, Some(replaced.key.id));
    keys.delete_key(&w.owner, w.project, old.id).await.unwrap();
    // The replaced key cannot be replaced twice (its successor is the region's key).
    assert_eq!(key_in(&w, "us-east-1").await.id, replaced.key.id);
}

#[tokio::test]
async fn a_refusing_kms_leaves_the_data_keys_readable_and_fails_the_change_with_an_alert() {
    let w = World::new().await;
    let cluster = w.cluster("c", &["us-east-1"]).await;
    w.put(cluster.id, "a", b"alpha").await.unwrap();
    w.svc().pause_cluster(&w.owner, cluster.id).await.unwrap();
    let old = key_in(&w, "us-east-1").await;
    let keys = w.console.keys();
    let replaced = keys
        .replace_key(&w.owner, w.project, old.id, &local("us-east-1"), None)
        .await
        .unwrap();

    w.kms.refuse(Some(KmsError::Disabled {
        code: "DisabledException".into(),
    }));
    run_rewraps(&w).await;
    w.kms.refuse(None);

    let change = keys
        .key_change(&w.owner, w.project, old.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.state, RewrapState::Failed);
    assert_eq!((change.done, change.failed), (0, 1));
    assert_eq!(change.failures[0].code, "DisabledException");
    assert_eq!(
        change.failures[0].data_key,
        format!("cluster/{}/us-east-1", cluster.id)
    );
    let alert = w
        .store
        .audit_log()
        .into_iter()
        .find(|e| e.action == "encryption_key.rewrap_failed");
    assert!(alert.is_some(), "the failure is recorded (and alerts)");
    // The data key is where it was: the cluster resumes under the old key.
    let kept = w.svc().cluster(&w.owner, cluster.id).await.unwrap();
    assert_eq!(kept.regions[0].key_id, Some(old.id));
    w.svc().resume_cluster(&w.owner, cluster.id).await.unwrap();
    assert_eq!(w.read(cluster.id, "a").await.unwrap(), b"alpha");
    // The old key still wraps it: deleting it is refused.
    assert_eq!(
        rule_of(keys.delete_key(&w.owner, w.project, old.id).await),
        Rule::KeyInUse
    );
    // The new key cannot go while the old one still wraps what should move to it.
    assert_eq!(
        rule_of(keys.delete_key(&w.owner, w.project, replaced.key.id).await),
        Rule::KeyChange
    );
    // Once the KMS answers again, what is left moves to the successor (a re-wrap of the
    // replaced key), and then the old key can go.
    let retried = keys.rewrap_key(&w.owner, w.project, old.id).await.unwrap();
    assert_eq!(retried.to_key_id, replaced.key.id);
    assert_eq!(retried.total, 1);
    run_rewraps(&w).await;
    let change = keys
        .key_change(&w.owner, w.project, old.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((change.state, change.done), (RewrapState::Done, 1));
    let moved = w.svc().cluster(&w.owner, cluster.id).await.unwrap();
    assert_eq!(moved.regions[0].key_id, Some(replaced.key.id));
    keys.delete_key(&w.owner, w.project, old.id).await.unwrap();
}

#[tokio::test]
async fn a_replacement_must_be_another_key_of_the_same_provider_and_region() {
    let w = World::new().await;
    let old = key_in(&w, "us-east-1").await;
    let keys = w.console.keys();

    let other_region = keys
        .replace_key(&w.owner, w.project, old.id, &local("eu-west-1"), None)
        .await;
    let mut same = local("us-east-1");
    same.key_id = Some(old.key_ref.display());
    let same_key = keys
        .replace_key(&w.owner, w.project, old.id, &same, None)
        .await;

    for (result, field) in [(other_region, "region"), (same_key, "key_id")] {
        match result {
            Err(DomainError::Invalid(fields)) => {
                assert!(fields.iter().any(|f| f.field == field), "{fields:?}");
            }
            other => panic!("expected a refusal naming {field}, got {other:?}"),
        }
    }
}
