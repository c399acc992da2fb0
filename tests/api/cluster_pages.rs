//! The cluster pages as a browser without JavaScript sees them: forms, refusals shown in the
//! page with their status, and what each role is offered.

use cmek_console::domain::identity::Role;
use serde_json::Value;

use crate::clusters::{id, local_cmek, put, read_cluster};

#[tokio::test]
async fn create_cluster_refuses_a_region_without_a_key_and_links_to_the_wizard_for_it() {
    let f = local_cmek(&["us-east-1"]).await;
    let browser = f.app.signed_in_owner().await;
    let form = browser
        .get(f.app.url(&format!("/projects/{}/clusters/new", f.project)))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let page = form.text().await.unwrap();
    assert!(page.contains("Create Cluster"));
    assert!(
        page.contains(&f.local_keys[0].1.to_string()),
        "the form lists the project's keys"
    );

    let refused = browser
        .post(f.app.url(&format!("/projects/{}/clusters", f.project)))
        .form(&[
            ("name", "orders"),
            ("provider", "local"),
            ("region_1", "us-east-1"),
            ("region_2", "eu-central-1"),
            ("tier", "dedicated"),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(refused.status(), 409);
    let page = refused.text().await.unwrap();
    assert!(page.contains("No active key for eu-central-1"), "{page}");
    assert!(page.contains(&format!(
        "/projects/{}/encryption-keys/new?provider=local&amp;region=eu-central-1",
        f.project
    )));
    assert!(
        page.contains("value=\"orders\""),
        "the form comes back filled in"
    );

    let created = browser
        .post(f.app.url(&format!("/projects/{}/clusters", f.project)))
        .form(&[
            ("name", "orders"),
            ("provider", "local"),
            ("region_1", "us-east-1"),
            ("tier", "dedicated"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 303);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/clusters/") && location.ends_with("?created=1"),
        "{location}"
    );
    let page = browser
        .get(f.app.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Cluster created."));
    assert!(page.contains("id=\"state\">available<"));
    let project = browser
        .get(f.app.url(&format!("/projects/{}", f.project)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(project.contains("orders") && project.contains("state-available"));
}

#[tokio::test]
async fn a_resume_the_kms_refuses_is_explained_on_the_page() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let browser = f.app.signed_in_owner().await;
    let paused = browser
        .post(f.app.url(&format!("/clusters/{cluster}/pause")))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 303);
    f.disable_local_key("us-east-1").await;

    let refused = browser
        .post(f.app.url(&format!("/clusters/{cluster}/resume")))
        .send()
        .await
        .unwrap();

    assert_eq!(refused.status(), 409);
    let page = refused.text().await.unwrap();
    assert!(page.contains("DisabledException"), "{page}");
    assert!(page.contains("us-east-1"));
    assert!(page.contains("id=\"state\">paused<"));
    assert!(page.contains("Last KMS error"));
}

#[tokio::test]
async fn members_see_clusters_but_are_offered_no_changes_and_are_refused_them() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    assert_eq!(
        put(&f.app, &f.owner, &cluster, "report.csv", b"a,b".to_vec())
            .await
            .status(),
        201
    );
    let member = f.app.signed_in_as(Role::Member).await;

    let page = member
        .get(f.app.url(&format!("/clusters/{cluster}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("report.csv"));
    for offer in [
        "Pause</button>",
        "Upload</button>",
        "Take backup",
        "Delete cluster",
    ] {
        assert!(!page.contains(offer), "a member is offered {offer}");
    }
    let refused = member
        .post(f.app.url(&format!("/clusters/{cluster}/pause")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let read = read_cluster(&f.app, &f.owner, &cluster).await;
    assert_eq!(read["state"], "available");
    let download = member
        .get(f.app.url(&format!(
            "/clusters/{cluster}/objects/download?name=report.csv"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("report.csv")
    );
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"a,b");
}

#[tokio::test]
async fn a_cross_site_form_cannot_pause_a_cluster() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    let browser = f.app.signed_in_owner().await;

    let refused = browser
        .post(f.app.url(&format!("/clusters/{cluster}/pause")))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();

    assert_eq!(refused.status(), 403);
    let read = read_cluster(&f.app, &f.owner, &cluster).await;
    assert_eq!(read["state"], "available");
}

#[tokio::test]
async fn the_backups_of_a_deleted_cluster_stay_on_the_project_page() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("gone", &["us-east-1"]).await);
    let backup = f.app.take_backup(&f.owner, &cluster).await;
    assert_eq!(
        f.app
            .delete(&format!("/api/v1/clusters/{cluster}"), &f.owner)
            .await
            .status(),
        204
    );
    let browser = f.app.signed_in_owner().await;

    let page = browser
        .get(f.app.url(&format!("/projects/{}", f.project)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Backups of deleted clusters"));
    assert!(page.contains(backup["id"].as_str().unwrap()));

    let deleted = browser
        .post(f.app.url(&format!(
            "/backups/{}/delete",
            backup["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 303);
    assert_eq!(
        deleted.headers()["location"],
        format!("/projects/{}?backup_deleted=1", f.project).as_str()
    );
    let listed: Value = f
        .app
        .get(&format!("/api/v1/projects/{}/backups", f.project), &f.owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
}
