//! The domain's rules on the in-memory store: no HTTP, no database, milliseconds each.

use uuid::Uuid;

use crate::domain::identity::{Actor, Caller, Role};
use crate::domain::keys::KeyRequestInput;
use crate::domain::projects::{NewProject, ProjectChanges};
use crate::domain::sign_in::{LinkRefusal, SignIn};
use std::sync::Arc;

use crate::domain::Console;
use crate::domain::testing::{MemoryStore, console};
use crate::domain::{DomainError, Environment, Rule};

fn as_role(owner: &Caller, role: Role) -> Caller {
    Caller {
        role,
        actor: Actor::User {
            id: Uuid::now_v7(),
            name: "someone".into(),
        },
        ..owner.clone()
    }
}

fn refused_by(result: Result<impl std::fmt::Debug, DomainError>) -> Rule {
    match result {
        Err(DomainError::Conflict { rule, .. } | DomainError::Forbidden { rule, .. }) => rule,
        other => panic!("expected a refusal by rule, got {other:?}"),
    }
}

/// A console with its first organization, the operator acting as owner, and a CMEK project.
async fn with_cmek_project() -> (Console, Arc<MemoryStore>, Caller, Uuid) {
    let (console, store, _) = console(Environment::Development);
    console.identity().ensure_organization().await.unwrap();
    let owner = console.identity().operator(None).await.unwrap();
    let project = console
        .projects()
        .create_project(&owner, NewProject::parse("p", true, None).unwrap())
        .await
        .unwrap();
    (console, store, owner, project.id)
}

fn local_key(region: &str) -> KeyRequestInput {
    KeyRequestInput {
        provider: "local".into(),
        region: region.into(),
        key_id: Some(Uuid::now_v7().to_string()),
        ..KeyRequestInput::default()
    }
}

#[tokio::test]
async fn r1_cmek_cannot_be_turned_off_after_creation() {
    let (console, _, owner, project) = with_cmek_project().await;

    let changed = console
        .projects()
        .update_project(
            &owner,
            project,
            ProjectChanges {
                name: None,
                cmek_enabled: Some(false),
                revocation_policy: None,
            },
        )
        .await;

    assert_eq!(refused_by(changed), Rule::CmekImmutable);
}

#[tokio::test]
async fn r2_only_an_owner_creates_projects_and_keys() {
    let (console, _, owner, project) = with_cmek_project().await;

    for role in [Role::Member, Role::Auditor] {
        let caller = as_role(&owner, role);
        let created = console
            .projects()
            .create_project(&caller, NewProject::parse("q", true, None).unwrap())
            .await;
        let key = console
            .keys()
            .create_key(&caller, project, &local_key("eu-west-1"), None)
            .await;
        assert_eq!(refused_by(created), Rule::OwnerOnly);
        assert_eq!(refused_by(key), Rule::OwnerOnly);
    }
}

#[tokio::test]
async fn r3_the_local_kms_is_refused_in_production() {
    let (console, _, _) = console(Environment::Production);
    console.identity().ensure_organization().await.unwrap();
    let owner = console.identity().operator(None).await.unwrap();

    let created = console.keys().create_local_key(&owner, "dev key").await;

    assert_eq!(refused_by(created), Rule::LocalKmsInProduction);
}

#[tokio::test]
async fn r4_a_second_key_for_one_provider_and_region_is_a_conflict() {
    let (console, store, owner, project) = with_cmek_project().await;

    let first = console
        .keys()
        .create_key(&owner, project, &local_key("eu-west-1"), None)
        .await;
    let second = console
        .keys()
        .create_key(&owner, project, &local_key("eu-west-1"), None)
        .await;
    let elsewhere = console
        .keys()
        .create_key(&owner, project, &local_key("us-east-1"), None)
        .await;

    assert!(first.is_ok() && elsewhere.is_ok());
    assert_eq!(refused_by(second), Rule::OneKeyPerRegion);
    let created = store
        .audit_log()
        .iter()
        .filter(|e| e.action == "encryption_key.created")
        .count();
    assert_eq!(
        created, 2,
        "one event per stored key, none for the refused one"
    );
}

#[tokio::test]
async fn the_last_owner_cannot_step_down_or_be_removed() {
    let (console, _, _) = console(Environment::Development);
    let first = console.identity().ensure_organization().await.unwrap();
    let owner = console.identity().operator(None).await.unwrap();

    let demoted = console
        .identity()
        .change_role(&owner, first.id, Role::Member)
        .await;
    let removed = console.identity().remove_member(&owner, first.id).await;

    assert_eq!(refused_by(demoted), Rule::LastOwner);
    assert_eq!(refused_by(removed), Rule::LastOwner);
}

#[tokio::test]
async fn a_sign_in_link_works_once() {
    let (console, _, _) = console(Environment::Development);
    let token = console.identity().bootstrap().await.unwrap().unwrap();

    let first = console
        .identity()
        .sign_in_with_link(&token, None)
        .await
        .unwrap();
    let again = console
        .identity()
        .sign_in_with_link(&token, None)
        .await
        .unwrap();

    assert!(matches!(first, SignIn::Opened { .. }));
    assert!(matches!(again, SignIn::Refused(LinkRefusal::Used)));
}

#[tokio::test]
async fn a_sign_in_link_expires_after_15_minutes() {
    let (console, _, clock) = console(Environment::Development);
    let in_time = console.identity().bootstrap().await.unwrap().unwrap();

    clock.advance(chrono::Duration::minutes(14));
    let before = console
        .identity()
        .sign_in_with_link(&in_time, None)
        .await
        .unwrap();
    let (console, _, clock) = crate::domain::testing::console(Environment::Development);
    let token_late = console.identity().bootstrap().await.unwrap().unwrap();
    clock.advance(chrono::Duration::minutes(16));
    let after = console
        .identity()
        .sign_in_with_link(&token_late, None)
        .await
        .unwrap();

    assert!(
        matches!(before, SignIn::Opened { .. }),
        "14 minutes: still valid"
    );
    assert!(
        matches!(after, SignIn::Refused(LinkRefusal::Expired)),
        "16 minutes: expired"
    );
}

#[tokio::test]
async fn an_owner_demoted_a_moment_ago_can_no_longer_act_as_one() {
    let (console, store, _) = console(Environment::Development);
    let first = console.identity().ensure_organization().await.unwrap();
    let owner = console.identity().operator(None).await.unwrap();
    let (b, c) = (store.add_owner(&first), store.add_owner(&first));
    let as_b = Caller {
        actor: Actor::User {
            id: b,
            name: "b".into(),
        },
        ..owner.clone()
    };

    console
        .identity()
        .change_role(&owner, b, Role::Member)
        .await
        .unwrap();
    // b's request was authenticated as an owner just before.
    let late = console.identity().change_role(&as_b, c, Role::Member).await;

    assert_eq!(refused_by(late), Rule::OwnerOnly);
}
