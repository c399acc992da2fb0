use cmek_console::domain::identity::Role;
use serde_json::{Value, json};

use crate::helpers::{fields, problem, problem_type, rule, spawn_app};

#[tokio::test]
async fn an_owner_creates_a_cmek_project_and_reads_it_back() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    let response = app
        .post_json(
            "/api/v1/projects",
            &owner,
            &json!({ "name": "payments", "cmek_enabled": true, "revocation_policy": "stop" }),
        )
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "payments");
    assert_eq!(created["cmek_enabled"], true);
    assert_eq!(created["revocation_policy"], "stop");
    assert_eq!(
        location,
        format!("/api/v1/projects/{}", created["id"].as_str().unwrap())
    );
    let read: Value = app.get(&location, &owner).await.json().await.unwrap();
    assert_eq!(read, created);
}

#[tokio::test]
async fn members_and_auditors_read_projects_but_cannot_create_them() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "existing", false).await;

    for role in [Role::Member, Role::Auditor] {
        let key = app.api_key(role).await;
        let response = app
            .post_json(
                "/api/v1/projects",
                &key,
                &json!({ "name": "mine", "cmek_enabled": true }),
            )
            .await;
        assert_eq!(response.status(), 403, "{role:?} may not create");
        assert_eq!(problem(response).await["type"], rule("owner-only"));

        let list: Value = app
            .get("/api/v1/projects", &key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            1,
            "{role:?} reads the list"
        );
    }
}

#[tokio::test]
async fn members_cannot_rename_a_project() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "alpha", true).await;
    let member = app.api_key(Role::Member).await;

    let path = format!("/api/v1/projects/{}", project["id"].as_str().unwrap());
    let response = app
        .patch_json(&path, &member, &json!({ "name": "beta" }))
        .await;

    assert_eq!(response.status(), 403);
    let read: Value = app.get(&path, &owner).await.json().await.unwrap();
    assert_eq!(read["name"], "alpha");
}

#[tokio::test]
async fn cmek_cannot_be_disabled_on_a_cmek_project() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "secure", true).await;
    let path = format!("/api/v1/projects/{}", project["id"].as_str().unwrap());

    let response = app
        .patch_json(
            &path,
            &owner,
            &json!({ "cmek_enabled": false, "name": "renamed" }),
        )
        .await;

    assert_eq!(response.status(), 409);
    let body = problem(response).await;
    assert_eq!(body["type"], rule("cmek-immutable"));
    assert_eq!(fields(&body), ["cmek_enabled"]);
    let read: Value = app.get(&path, &owner).await.json().await.unwrap();
    assert_eq!(read["cmek_enabled"], true);
    assert_eq!(read["name"], "secure", "nothing half-applied");
}

#[tokio::test]
async fn cmek_cannot_be_enabled_on_an_existing_project() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "plain", false).await;
    let path = format!("/api/v1/projects/{}", project["id"].as_str().unwrap());

    let response = app
        .patch_json(&path, &owner, &json!({ "cmek_enabled": true }))
        .await;

    assert_eq!(response.status(), 409);
    assert_eq!(problem(response).await["type"], rule("cmek-immutable"));
    let read: Value = app.get(&path, &owner).await.json().await.unwrap();
    assert_eq!(read["cmek_enabled"], false);
}

#[tokio::test]
async fn restating_the_cmek_choice_while_renaming_is_fine() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "first", true).await;
    let path = format!("/api/v1/projects/{}", project["id"].as_str().unwrap());

    let response = app
        .patch_json(
            &path,
            &owner,
            &json!({ "cmek_enabled": true, "name": "second" }),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], "second");
    assert_eq!(body["cmek_enabled"], true);
}

#[tokio::test]
async fn project_names_are_unique_in_an_organization() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "shared", false).await;
    let other = app.create_project(&owner, "other", false).await;

    let again = app
        .post_json(
            "/api/v1/projects",
            &owner,
            &json!({ "name": "shared", "cmek_enabled": true }),
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["type"], rule("project-name-taken"));

    let path = format!("/api/v1/projects/{}", other["id"].as_str().unwrap());
    let rename = app
        .patch_json(&path, &owner, &json!({ "name": "shared" }))
        .await;
    assert_eq!(rename.status(), 409);
}

#[tokio::test]
async fn two_simultaneous_creates_of_one_name_make_one_project() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let body = json!({ "name": "race", "cmek_enabled": true });

    let (a, b) = tokio::join!(
        app.post_json("/api/v1/projects", &owner, &body),
        app.post_json("/api/v1/projects", &owner, &body)
    );

    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let list: Value = app
        .get("/api/v1/projects", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_fields_are_named_and_nothing_is_created() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    let response = app
        .post_json(
            "/api/v1/projects",
            &owner,
            &json!({ "name": "  <script>", "cmek_enabled": false, "revocation_policy": "stop" }),
        )
        .await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    assert_eq!(body["type"], problem_type("validation"));
    assert_eq!(fields(&body), ["name", "revocation_policy"]);
    let list: Value = app
        .get("/api/v1/projects", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn wrong_types_missing_and_unknown_fields_are_named() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let cases = [
        (
            json!({ "name": "a", "cmek_enabled": "yes" }),
            "cmek_enabled",
        ),
        (json!({ "name": "a" }), "cmek_enabled"),
        (
            json!({ "name": "a", "cmek_enabled": true, "cmek": true }),
            "cmek",
        ),
        (json!({ "name": 5, "cmek_enabled": true }), "name"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/api/v1/projects", &owner, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem = problem(response).await;
        assert_eq!(fields(&problem), [field], "{body}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    let response = app
        .api
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&owner)
        .header("content-type", "application/json")
        .body(r#"{"name": "a", "cmek_enabled": tru"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(
        problem(response).await["type"],
        problem_type("malformed-request")
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    let response = app
        .api
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&owner)
        .header("content-type", "text/plain")
        .body("name=a")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 415);
    assert_eq!(
        problem(response).await["type"],
        problem_type("unsupported-media-type")
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let huge = json!({ "name": "x".repeat(100 * 1024), "cmek_enabled": true });

    let response = app.post_json("/api/v1/projects", &owner, &huge).await;

    assert_eq!(response.status(), 413);
    assert_eq!(
        problem(response).await["type"],
        problem_type("payload-too-large")
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_project_id_is_404() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    for path in [
        format!("/api/v1/projects/{}", uuid::Uuid::now_v7()),
        "/api/v1/projects/not-a-uuid".to_owned(),
        "/api/v1/nothing-here".to_owned(),
    ] {
        let response = app.get(&path, &owner).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(problem(response).await["type"], problem_type("not-found"));
    }
}

#[tokio::test]
async fn project_lists_are_paginated_in_creation_order() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    for name in ["one", "two", "three"] {
        app.create_project(&owner, name, true).await;
    }

    let first: Value = app
        .get("/api/v1/projects?page_size=2", &owner)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    let token = first["next_page_token"].as_str().expect("a next page");

    let second: Value = app
        .get(
            &format!("/api/v1/projects?page_size=2&page_token={token}"),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"][0]["name"], "three");
    assert!(second["next_page_token"].is_null());
}

#[tokio::test]
async fn bad_paging_parameters_are_named() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;

    for (query, field) in [
        ("page_size=0", "page_size"),
        ("page_size=many", "page_size"),
        ("page_token=forged", "page_token"),
    ] {
        let response = app.get(&format!("/api/v1/projects?{query}"), &owner).await;
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(fields(&problem(response).await), [field]);
    }
}
