//! The Key Status page and API, the key's page with its timeline, and the audit views:
//! who may see them, what they count and filter, what they say about clusters.

use cmek_console::domain::clock::Clock;
use cmek_console::domain::identity::Role;
use cmek_console::domain::local_kms::LocalKeyAction;
use serde_json::{Value, json};

use crate::clusters::{Fixture, id, local_cmek, post};
use crate::helpers::{fields, problem, rule};

async fn disable_and_check(f: &Fixture, index: usize) {
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[index].1, LocalKeyAction::Disable)
        .await
        .unwrap();
    let key = f.key_id(&f.local_keys[index].0).await;
    let checked = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/projects/{}/encryption-keys/{key}/check", f.project),
    )
    .await;
    assert_eq!(checked.status(), 200);
}

#[tokio::test]
async fn key_status_counts_filters_and_says_what_each_key_protects() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1", "eu-west-1"]).await);
    disable_and_check(&f, 1).await;

    let auditor = f.app.api_key(Role::Auditor).await;
    let all: Value = f
        .app
        .get("/api/v1/key-status", &auditor)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["counts"]["active"], 1);
    assert_eq!(all["counts"]["disabled"], 1);
    assert_eq!(all["counts"]["access_denied"], 0);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    for item in all["items"].as_array().unwrap() {
        assert_eq!(item["project_name"], "data");
        assert_eq!(item["clusters"][0]["id"], cluster.as_str());
        assert_eq!(item["clusters"][0]["state"], "available");
        // Either key's cluster is the same one, which now will not resume (keep_running).
        assert_eq!(item["clusters"][0]["effect"], "will_not_resume", "{item}");
        assert!(item["last_checked_at"].is_string());
    }

    let disabled: Value = f
        .app
        .get("/api/v1/key-status?status=disabled", &auditor)
        .await
        .json()
        .await
        .unwrap();
    let items = disabled["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["region"], "eu-west-1");
    assert!(items[0]["last_error"].is_string());
    assert_eq!(
        disabled["counts"]["active"], 1,
        "counts ignore the status filter"
    );

    let none: Value = f
        .app
        .get("/api/v1/key-status?provider=aws_kms", &auditor)
        .await
        .json()
        .await
        .unwrap();
    assert!(none["items"].as_array().unwrap().is_empty());
    let other_project = f.app.create_project(&f.owner, "empty", true).await;
    let scoped: Value = f
        .app
        .get(
            &format!(
                "/api/v1/key-status?project_id={}",
                other_project["id"].as_str().unwrap()
            ),
            &auditor,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(scoped["items"].as_array().unwrap().is_empty());

    let paged: Value = f
        .app
        .get("/api/v1/key-status?page_size=1", &auditor)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paged["items"].as_array().unwrap().len(), 1);
    let token = paged["next_page_token"].as_str().unwrap();
    let rest: Value = f
        .app
        .get(
            &format!("/api/v1/key-status?page_size=1&page_token={token}"),
            &auditor,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0]["id"], paged["items"][0]["id"]);

    let bad = f
        .app
        .get(
            "/api/v1/key-status?status=revoked&provider=gcp&project_id=x",
            &auditor,
        )
        .await;
    assert_eq!(bad.status(), 422);
    let mut named = fields(&problem(bad).await);
    named.sort();
    assert_eq!(named, ["project_id", "provider", "status"]);
}

#[tokio::test]
async fn members_get_403_from_the_key_status_the_audit_log_and_their_pages() {
    let f = local_cmek(&["us-east-1"]).await;
    let member = f.app.api_key(Role::Member).await;
    for path in [
        "/api/v1/key-status",
        "/api/v1/key-status?status=nonsense",
        "/api/v1/audit-events?outcome=nonsense",
        "/api/v1/audit-events",
        "/api/v1/audit-events?format=csv",
        "/api/v1/audit-events?format=json",
    ] {
        let refused = f.app.get(path, &member).await;
        assert_eq!(refused.status(), 403, "{path}");
        assert_eq!(
            problem(refused).await["type"],
            rule("owners-and-auditors"),
            "{path}"
        );
    }
    // Members still read keys.
    assert_eq!(
        f.app
            .get(
                &format!("/api/v1/projects/{}/encryption-keys", f.project),
                &member
            )
            .await
            .status(),
        200
    );

    let browser = f.app.signed_in_as(Role::Member).await;
    for page in [
        "/key-status",
        "/key-status?status=nonsense",
        "/audit",
        "/audit?since=x",
        "/alerts",
    ] {
        let refused = browser.get(f.app.url(page)).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{page}");
    }
    let projects = browser
        .get(f.app.url("/projects"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !projects.contains("href=\"/key-status\""),
        "members are not offered the page"
    );

    let auditor = f.app.signed_in_as(Role::Auditor).await;
    for page in ["/key-status", "/audit", "/alerts"] {
        let shown = auditor.get(f.app.url(page)).send().await.unwrap();
        assert_eq!(shown.status(), 200, "{page}");
    }
}

#[tokio::test]
async fn the_key_status_page_and_the_key_page_show_a_revoked_key_and_its_timeline() {
    let f = local_cmek(&["us-east-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1"]).await);
    disable_and_check(&f, 0).await;
    let browser = f.app.signed_in_as(Role::Auditor).await;

    let page = browser
        .get(f.app.url("/key-status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-key-status=\"disabled\""), "{page}");
    assert!(page.contains(&format!("href=\"/clusters/{cluster}\"")));
    assert!(page.contains("Will not resume"));
    let filtered = browser
        .get(f.app.url("/key-status?status=active"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!filtered.contains("data-key-status=\"disabled\""));
    let scoped = browser
        .get(f.app.url(&format!("/key-status?project_id={}", f.project)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scoped.contains(&format!(
            "/key-status?status=disabled&project_id={}",
            f.project
        )),
        "a count keeps the project filter: {scoped}"
    );

    let key = f.key_id("us-east-1").await;
    let key_page = browser
        .get(
            f.app
                .url(&format!("/projects/{}/encryption-keys/{key}", f.project)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(key_page.status(), 200);
    let key_page = key_page.text().await.unwrap();
    assert!(key_page.contains("<svg class=\"timeline\""), "{key_page}");
    assert!(key_page.contains("data-status=\"active\""));
    assert!(key_page.contains("data-status=\"disabled\""));
    assert!(key_page.contains("Will not resume"));

    let cluster_page = browser
        .get(f.app.url(&format!("/clusters/{cluster}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cluster_page.contains("data-effect=\"will_not_resume\""));
}

#[tokio::test]
async fn the_audit_log_filters_by_actor_project_outcome_and_time() {
    let f = local_cmek(&["us-east-1"]).await;
    let other = f.app.create_project(&f.owner, "other", false).await;
    f.cluster("orders", &["us-east-1"]).await;
    // A refusal: a second cluster by the same name.
    let refused = f
        .create(json!({ "name": "orders", "provider": "local", "regions": ["us-east-1"] }))
        .await;
    assert_eq!(refused.status(), 409);

    let get = async |query: &str| -> Vec<Value> {
        let body: Value = f
            .app
            .get(&format!("/api/v1/audit-events?{query}"), &f.owner)
            .await
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    };
    let in_project = get(&format!("project_id={}", f.project)).await;
    let actions: Vec<&str> = in_project
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "project.created",
        "encryption_key.created",
        "cluster.created",
        "cluster.create_refused",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    assert!(!actions.contains(&"organization.created"));
    let other_events = get(&format!("project_id={}", other["id"].as_str().unwrap())).await;
    assert_eq!(other_events.len(), 1, "{other_events:?}");

    let denied = get("outcome=denied").await;
    assert!(!denied.is_empty());
    assert!(denied.iter().all(|e| e["outcome"] == "denied"));

    let by_system = get("actor=system").await;
    assert!(
        by_system
            .iter()
            .all(|e| e["actor"].as_str().unwrap().contains("system"))
    );
    let by_key = get("actor=api_key").await;
    assert!(by_key.len() >= 3);
    assert_eq!(
        get("actor=API_KEY").await.len(),
        by_key.len(),
        "case does not matter"
    );
    assert!(
        get("actor=%25").await.is_empty(),
        "a % is a percent sign, not a wildcard"
    );
    assert!(
        by_key
            .iter()
            .all(|e| e["actor"].as_str().unwrap().starts_with("api_key:"))
    );

    let later = (f.app.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    assert!(
        get(&format!("since={}", urlencode(&later)))
            .await
            .is_empty()
    );

    let bad = f
        .app
        .get("/api/v1/audit-events?outcome=maybe&project_id=nope&since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", &f.owner)
        .await;
    assert_eq!(bad.status(), 422);
    let mut named = fields(&problem(bad).await);
    named.sort();
    assert_eq!(named, ["outcome", "project_id"]);

    // `until` at or before `since` is an empty range, not an error: a rule between two
    // parameters is one the API's document cannot state.
    assert!(
        get("since=2026-12-02T00%3A00%3A00Z&until=2026-12-01T00%3A00%3A00Z")
            .await
            .is_empty()
    );
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn exports_stream_every_matching_event_in_csv_and_json() {
    let app = crate::helpers::spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    // More events than one page of the store (the export reads page after page).
    for n in 0..230 {
        app.create_project(&owner, &format!("p{n}"), false).await;
    }
    let json_export = app
        .get(
            "/api/v1/audit-events?format=json&action=project.created",
            &owner,
        )
        .await;
    assert_eq!(json_export.status(), 200);
    assert!(
        json_export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with("-selection.json\"")
    );
    assert_eq!(json_export.headers()["x-audit-export-extent"], "selection");
    let body: Value = json_export.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 230);
    assert_eq!(body["format"], "cmek-console-audit/2");
    let mut seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let before = seqs.clone();
    seqs.sort_unstable();
    assert_eq!(seqs, before, "in chain order, no event twice");
    seqs.dedup();
    assert_eq!(seqs.len(), 230);

    let csv = app
        .get(
            "/api/v1/audit-events?format=csv&action=project.created",
            &owner,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("event,")).count(),
        230,
        "every event"
    );
    assert!(csv.starts_with("record,chain,seq,id,occurred_at,actor,action"));

    let empty: Value = app
        .get(
            "/api/v1/audit-events?format=json&action=nothing.happened",
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["items"], json!([]));
}

#[tokio::test]
async fn the_audit_page_shows_the_chain_verified_or_where_it_breaks() {
    let app = crate::helpers::spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "first", false).await;
    app.create_project(&owner, "second", false).await;
    let browser = app.signed_in_as(Role::Auditor).await;
    let page = browser
        .get(app.url("/audit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Chain verified"), "{page}");

    // Someone with database access rewrites an event.
    let db = app.db().await;
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(
        "UPDATE audit_events SET actor = 'someone else' WHERE action = 'project.created' AND detail LIKE '%first%'",
    )
    .await
    .unwrap();
    // A new event changes the head, so the page verifies again.
    app.create_project(&owner, "third", false).await;
    let page = browser
        .get(app.url("/audit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("audit chain is broken at event #"), "{page}");
}

const SEVEN_REGIONS: [&str; 7] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "ap-south-1",
    "ap-southeast-1",
];

/// Every page of `query` (without its page token), followed to the end: each page's items.
async fn pages(f: &Fixture, key: &str, query: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(token) => format!("/api/v1/key-status?{query}&page_token={token}"),
            None => format!("/api/v1/key-status?{query}"),
        };
        let response = f.app.get(&path, key).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        pages.push(body["items"].as_array().unwrap().clone());
        match body["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 20, "pagination never ends: {query}");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A second CMEK project with local keys in `regions`; its id.
async fn second_project(f: &Fixture, regions: &[&str]) -> String {
    let project = id(&f.app.create_project(&f.owner, "second", true).await);
    let operator = f.app.console.identity().operator(None).await.unwrap();
    for region in regions {
        let local = f
            .app
            .console
            .keys()
            .create_local_key(&operator, &format!("second {region}"))
            .await
            .unwrap()
            .id;
        let created = f
            .app
            .post_json(
                &format!("/api/v1/projects/{project}/encryption-keys"),
                &f.owner,
                &json!({ "provider": "local", "region": region, "key_id": local }),
            )
            .await;
        assert_eq!(created.status(), 201);
    }
    project
}

async fn counts(f: &Fixture, key: &str, query: &str) -> Value {
    let body: Value = f
        .app
        .get(&format!("/api/v1/key-status?{query}"), key)
        .await
        .json()
        .await
        .unwrap();
    body["counts"].clone()
}

#[tokio::test]
async fn pages_of_key_status_list_every_key_exactly_once_in_id_order() {
    let f = local_cmek(&SEVEN_REGIONS).await;
    let auditor = f.app.api_key(Role::Auditor).await;

    let pages = pages(&f, &auditor, "page_size=3").await;

    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "each key once, in id order");
    let all: Value = f
        .app
        .get("/api/v1/key-status?page_size=100", &auditor)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen, ids(all["items"].as_array().unwrap()));
    assert!(all["next_page_token"].is_null());
}

#[tokio::test]
async fn a_filter_holds_on_every_page_its_token_leads_to() {
    let f = local_cmek(&SEVEN_REGIONS[..5]).await;
    for index in [0, 2, 4] {
        disable_and_check(&f, index).await;
    }
    let second = second_project(&f, &["us-east-1", "eu-west-1", "ap-south-1"]).await;
    let auditor = f.app.api_key(Role::Auditor).await;

    let disabled = pages(&f, &auditor, "status=disabled&page_size=2").await;
    let sizes: Vec<usize> = disabled.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 1]);
    for item in disabled.iter().flatten() {
        assert_eq!(item["status"], "disabled", "{item}");
        assert_eq!(item["project_id"], f.project.as_str());
    }

    let scoped = pages(&f, &auditor, &format!("project_id={second}&page_size=1")).await;
    assert_eq!(scoped.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    for item in scoped.iter().flatten() {
        assert_eq!(item["project_id"], second.as_str());
        assert_eq!(item["project_name"], "second");
    }

    let active_here = pages(
        &f,
        &auditor,
        &format!(
            "status=active&provider=local&project_id={}&page_size=1",
            f.project
        ),
    )
    .await;
    let active: Vec<String> = active_here.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(
        active.len(),
        2,
        "the two keys left active in the first project"
    );

    // A token from one filter used with another still only returns what the filter keeps.
    let first_disabled = &disabled[0][0]["id"];
    let mixed = pages(&f, &auditor, &format!("project_id={second}&page_size=100")).await;
    assert!(mixed.iter().flatten().all(|k| &k["id"] != first_disabled));
}

#[tokio::test]
async fn counts_follow_the_project_and_provider_filters_and_every_change() {
    let f = local_cmek(&SEVEN_REGIONS[..4]).await;
    disable_and_check(&f, 1).await;
    let second = second_project(&f, &["us-east-1", "eu-west-1"]).await;
    let auditor = f.app.api_key(Role::Auditor).await;

    let all = counts(&f, &auditor, "").await;
    assert_eq!(
        (all["active"].as_u64(), all["disabled"].as_u64()),
        (Some(5), Some(1))
    );
    let first = counts(&f, &auditor, &format!("project_id={}", f.project)).await;
    assert_eq!(
        (first["active"].as_u64(), first["disabled"].as_u64()),
        (Some(3), Some(1))
    );
    let other = counts(
        &f,
        &auditor,
        &format!("project_id={second}&status=disabled"),
    )
    .await;
    assert_eq!(
        (other["active"].as_u64(), other["disabled"].as_u64()),
        (Some(2), Some(0))
    );
    let aws = counts(&f, &auditor, "provider=aws_kms").await;
    assert_eq!(aws["active"], 0);
    assert_eq!(aws["disabled"], 0);

    // Deleted and re-enabled keys leave the counts at once.
    let keys: Value = f
        .app
        .get(
            &format!("/api/v1/projects/{second}/encryption-keys"),
            &f.owner,
        )
        .await
        .json()
        .await
        .unwrap();
    let doomed = keys["items"][0]["id"].as_str().unwrap();
    let deleted = f
        .app
        .delete(
            &format!("/api/v1/projects/{second}/encryption-keys/{doomed}"),
            &f.owner,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let operator = f.app.console.identity().operator(None).await.unwrap();
    f.app
        .console
        .keys()
        .change_local_key(&operator, f.local_keys[1].1, LocalKeyAction::Enable)
        .await
        .unwrap();
    let key = f.key_id(&f.local_keys[1].0).await;
    // A press within 10 s of the last check of the key would answer that check's result.
    f.app.clock.advance(chrono::Duration::seconds(11));
    let checked = post(
        &f.app,
        &f.owner,
        &format!("/api/v1/projects/{}/encryption-keys/{key}/check", f.project),
    )
    .await;
    assert_eq!(checked.status(), 200);

    let all = counts(&f, &auditor, "").await;
    assert_eq!(
        (all["active"].as_u64(), all["disabled"].as_u64()),
        (Some(5), Some(0))
    );
    let other = counts(&f, &auditor, &format!("project_id={second}")).await;
    assert_eq!(other["active"], 1);
}

#[tokio::test]
async fn the_key_status_page_links_to_the_next_page_with_its_filters() {
    let f = local_cmek(&SEVEN_REGIONS[..5]).await;
    let browser = f.app.signed_in_as(Role::Auditor).await;
    let read = |path: String| {
        let browser = browser.clone();
        let url = f.app.url(&path);
        async move { browser.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let rows = |page: &str| page.matches("<tr data-key=").count();

    let first = read("/key-status?status=active&page_size=2".to_owned()).await;
    assert_eq!(rows(&first), 2);
    let mut seen = rows(&first);
    let mut page = first;
    let mut hops = 0;
    while let Some(start) = page.find("rel=\"next\" href=\"") {
        let rest = &page[start + "rel=\"next\" href=\"".len()..];
        // As a browser reads the attribute: askama escapes `&`.
        let href = rest[..rest.find('"').unwrap()]
            .replace("&amp;", "&")
            .replace("&#38;", "&");
        assert!(href.contains("status=active"), "{href}");
        assert!(href.contains("page_size=2"), "{href}");
        page = read(href).await;
        assert!(page.contains("First page"));
        seen += rows(&page);
        hops += 1;
        assert!(hops < 5);
    }
    assert_eq!((seen, hops), (5, 2));
}

#[tokio::test]
async fn a_clusters_effect_counts_its_keys_that_the_page_leaves_out() {
    let f = local_cmek(&["us-east-1", "eu-west-1"]).await;
    let cluster = id(&f.cluster("orders", &["us-east-1", "eu-west-1"]).await);
    disable_and_check(&f, 1).await;
    let auditor = f.app.api_key(Role::Auditor).await;

    // Only the active key is on the page; the disabled one still stops the cluster resuming.
    for query in ["status=active", "page_size=1"] {
        let body: Value = f
            .app
            .get(&format!("/api/v1/key-status?{query}"), &auditor)
            .await
            .json()
            .await
            .unwrap();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{query}");
        assert_eq!(items[0]["region"], "us-east-1", "{query}");
        assert_eq!(items[0]["clusters"][0]["id"], cluster.as_str());
        assert_eq!(items[0]["clusters"][0]["region"], "us-east-1");
        assert_eq!(
            items[0]["clusters"][0]["effect"], "will_not_resume",
            "{query}"
        );
    }
}
