use cmek_console::domain::audit::Verification;
use cmek_console::domain::identity::Role;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{fields, spawn_app, spawn_app_from_fixture};

async fn events(app: &crate::helpers::TestApp, key: &str, query: &str) -> Vec<Value> {
    let body: Value = app
        .get(&format!("/api/v1/audit-events?{query}"), key)
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn changes_are_audited_with_actor_target_outcome_and_source() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let project = app.create_project(&owner, "audited", true).await;
    let id = project["id"].as_str().unwrap();
    app.patch_json(
        &format!("/api/v1/projects/{id}"),
        &owner,
        &json!({ "name": "renamed" }),
    )
    .await;
    app.patch_json(
        &format!("/api/v1/projects/{id}"),
        &owner,
        &json!({ "cmek_enabled": false }),
    )
    .await;
    let auditor = app.api_key(Role::Auditor).await;

    let log = events(&app, &auditor, "").await;

    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("api_key.created", "success"),
            ("project.updated", "denied"),
            ("project.updated", "success"),
            ("project.created", "success"),
            ("api_key.created", "success"),
            ("sign_in_link.issued", "success"),
            ("organization.created", "success"),
        ]
    );
    let created = &log[3];
    assert_eq!(created["target"], format!("project/{id}"));
    assert!(created["actor"].as_str().unwrap().starts_with("api_key:"));
    assert_eq!(created["source_ip"], "127.0.0.1");
    assert_eq!(created["detail"]["name"], "audited");
}

#[tokio::test]
async fn sign_ins_and_refused_links_are_audited_without_the_token() {
    let app = spawn_app().await;
    app.signed_in_owner().await;
    app.redeem_link(&app.browser(), &app.sign_in_url).await;
    let auditor = app.api_key(Role::Auditor).await;

    let log = events(&app, &auditor, "action=session.sign_in").await;

    let outcomes: Vec<&str> = log.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["denied", "success"]);
    let token = app.sign_in_url.split("token=").nth(1).unwrap();
    let everything = app
        .get("/api/v1/audit-events?format=csv", &auditor)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !everything.contains(token),
        "the audit log never holds a credential"
    );
}

#[tokio::test]
async fn the_log_filters_by_time_and_refuses_bad_times() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.clock.advance(chrono::Duration::hours(1));
    let cut = app.clock_now_rfc3339();
    app.create_project(&owner, "later", false).await;

    let since = events(&app, &owner, &format!("since={}", urlencode(&cut))).await;
    assert_eq!(since.len(), 1);
    assert_eq!(since[0]["action"], "project.created");

    let bad = app
        .get("/api/v1/audit-events?since=yesterday", &owner)
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(fields(&bad.json().await.unwrap()), ["since"]);
}

#[tokio::test]
async fn the_text_filters_refuse_control_characters_and_names_too_long() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", false).await;
    let long = "a".repeat(257);
    for (query, field) in [
        ("actor=%00zzz", "actor"),
        ("action=project.%01created", "action"),
        (&*format!("actor={long}"), "actor"),
    ] {
        for format in ["", "&format=json"] {
            let bad = app
                .get(&format!("/api/v1/audit-events?{query}{format}"), &owner)
                .await;
            assert_eq!(bad.status(), 422, "{query}{format}");
            assert_eq!(fields(&bad.json().await.unwrap()), [field], "{query}");
        }
    }
    // What a name may hold still filters.
    let found = events(&app, &owner, "action=project.created").await;
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn the_log_exports_as_csv() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "exported", false).await;

    let response = app.get("/api/v1/audit-events?format=csv", &owner).await;

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".csv\"")
    );
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "record,chain,seq,id,occurred_at,actor,action,target,outcome,source_ip,detail,signed_at,prev_hash,hash,key_id,signature"
    );
    // The install's events and the project's, after the chain's checkpoint if it has one
    // yet (the worker makes one at start).
    let records: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(records.iter().filter(|r| **r == "event").count(), 4);
    assert!(
        records
            .iter()
            .skip_while(|r| **r == "checkpoint")
            .all(|r| *r == "event"),
        "{records:?}"
    );
}

/// Format 1's single chain, closed into a legacy segment by the upgrade (the fixture was made
/// by the version before format 2), is verified as before: an altered event is named.
#[tokio::test]
async fn verification_names_the_first_altered_event_of_the_legacy_segment() {
    let app = spawn_app_from_fixture("format1").await;
    assert!(matches!(
        app.console.audit().verify_audit_chain(None).await.unwrap(),
        Verification::Intact { events: 7, .. }
    ));

    app.db()
        .await
        .execute_unprepared("UPDATE audit_events SET target = 'project/forged' WHERE seq = 3")
        .await
        .unwrap();

    match app.console.audit().verify_audit_chain(None).await.unwrap() {
        Verification::Broken(found) => assert_eq!(found.seq, 3),
        Verification::Intact { .. } => panic!("tampering went unnoticed"),
    }
}

#[tokio::test]
async fn verification_notices_a_removed_event_of_the_legacy_segment() {
    let app = spawn_app_from_fixture("format1").await;

    app.db()
        .await
        .execute_unprepared("DELETE FROM audit_events WHERE seq = 2")
        .await
        .unwrap();

    match app.console.audit().verify_audit_chain(None).await.unwrap() {
        Verification::Broken(found) => assert_eq!(found.seq, 3),
        Verification::Intact { .. } => panic!("a deletion went unnoticed"),
    }
}

/// The legacy segment ends where it ended when it closed: removing its newest events, or
/// moving the record of its end, is caught.
#[tokio::test]
async fn the_legacy_segment_must_end_where_it_closed() {
    let app = spawn_app_from_fixture("format1").await;
    app.db()
        .await
        .execute_unprepared("DELETE FROM audit_events WHERE seq = 7")
        .await
        .unwrap();
    match app.console.audit().verify_audit_chain(None).await.unwrap() {
        Verification::Broken(found) => assert!(
            found.reason.contains("closed at event 7"),
            "{}",
            found.reason
        ),
        Verification::Intact { .. } => panic!("a truncated legacy segment went unnoticed"),
    }
    app.db()
        .await
        .execute_unprepared(
            "UPDATE audit_legacy SET last_seq = 6, last_hash = (SELECT hash FROM audit_events WHERE seq = 6)",
        )
        .await
        .unwrap();
    match app.console.audit().verify_audit_chain(None).await.unwrap() {
        Verification::Broken(found) => {
            assert!(found.reason.contains("not sealed"), "{}", found.reason)
        }
        Verification::Intact { .. } => panic!("a moved end went unnoticed"),
    }
}

#[tokio::test]
async fn a_row_planted_outside_the_chain_is_refused_then_reported_and_never_listed() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", true).await;
    let db = app.db().await;
    let new_id = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Sqlite => "randomblob(16)",
        _ => "gen_random_uuid()",
    };
    let plant = format!(
        "INSERT INTO audit_events (seq, id, organization_id, occurred_at, actor, action, \
         target, outcome, source_ip, detail, prev_hash, hash, key_id) \
         SELECT 0, {new_id}, organization_id, occurred_at, 'forger', 'project.deleted', target, \
         outcome, source_ip, detail, prev_hash, hash, key_id FROM audit_events WHERE seq = 2"
    );
    let plant = plant.as_str();

    let refused = db.execute_unprepared(plant).await;
    // Someone with write access could drop the guard first; verification still sees the row.
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Sqlite => {
            db.execute_unprepared("DROP TRIGGER audit_events_seq_insert")
                .await
                .unwrap();
        }
        _ => {
            db.execute_unprepared("ALTER TABLE audit_events DROP CONSTRAINT ck_audit_events_seq")
                .await
                .unwrap();
        }
    }
    db.execute_unprepared(plant).await.unwrap();
    let auditor = app.api_key(Role::Auditor).await;
    let log = events(&app, &auditor, "").await;

    assert!(refused.is_err(), "the database refuses seq 0");
    match app.console.audit().verify_audit_chain(None).await.unwrap() {
        Verification::Broken(found) => assert_eq!(found.seq, 0),
        Verification::Intact { .. } => panic!("a planted row went unnoticed"),
    }
    assert!(
        log.iter().all(|e| e["actor"] != "forger"),
        "the API lists only rows inside the chain"
    );
}

#[tokio::test]
async fn an_unreadable_row_is_a_break_at_that_event_not_an_error() {
    // In the legacy segment.
    let upgraded = spawn_app_from_fixture("format1").await;
    upgraded
        .db()
        .await
        .execute_unprepared("UPDATE audit_events SET outcome = 'forged' WHERE seq = 2")
        .await
        .unwrap();
    match upgraded
        .console
        .audit()
        .verify_audit_chain(None)
        .await
        .unwrap()
    {
        Verification::Broken(found) => assert_eq!(found.seq, 2),
        Verification::Intact { .. } => panic!("tampering went unnoticed"),
    }

    // In an organization's chain.
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", true).await;
    app.db()
        .await
        .execute_unprepared("UPDATE audit_events SET outcome = 'forged' WHERE chain_seq = 2")
        .await
        .unwrap();
    match app.verify_chains().await {
        Err((_, broken)) => {
            assert_eq!(broken.seq, Some(2));
            assert!(broken.reason.contains("does not read back"), "{broken}");
        }
        Ok(_) => panic!("tampering went unnoticed"),
    }
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

impl crate::helpers::TestApp {
    fn clock_now_rfc3339(&self) -> String {
        use cmek_console::domain::clock::Clock;
        self.clock.now().to_rfc3339()
    }
}

/// An install from before the chain was keyed: its events carry plain SHA-256 hashes and it
/// has no chain key file. Its first start with a key re-seals them, after checking they still
/// link up, and then closes format 1's chain there.
#[tokio::test]
async fn a_legacy_unkeyed_chain_is_resealed_at_start_then_closed_and_verifies() {
    use cmek_console::domain::audit::{AuditEvent, GENESIS, Outcome};
    use sea_orm::{DbBackend, Statement};
    let dir = crate::helpers::copy_fixture("format1");
    let db = cmek_console::store::connect(&crate::helpers::fixture_database(&dir))
        .await
        .unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT seq, id, organization_id, occurred_at, actor, action, target, outcome, \
             source_ip, detail FROM audit_events ORDER BY seq",
        ))
        .await
        .unwrap();
    let mut prev = GENESIS.to_owned();
    for row in &rows {
        let mut event = AuditEvent {
            seq: row.try_get("", "seq").unwrap(),
            id: row.try_get("", "id").unwrap(),
            organization_id: row.try_get("", "organization_id").unwrap(),
            occurred_at: row.try_get("", "occurred_at").unwrap(),
            actor: row.try_get("", "actor").unwrap(),
            action: row.try_get("", "action").unwrap(),
            target: row.try_get("", "target").unwrap(),
            outcome: Outcome::parse(&row.try_get::<String>("", "outcome").unwrap()).unwrap(),
            source_ip: row.try_get("", "source_ip").unwrap(),
            detail: serde_json::from_str(&row.try_get::<String>("", "detail").unwrap()).unwrap(),
            prev_hash: prev.clone(),
            hash: String::new(),
            key_id: None,
            chain_seq: None,
            signing_key_id: None,
        };
        event.hash = event.legacy_hash();
        db.execute_unprepared(&format!(
            "UPDATE audit_events SET prev_hash = '{}', hash = '{}', key_id = NULL WHERE seq = {}",
            event.prev_hash, event.hash, event.seq
        ))
        .await
        .unwrap();
        prev = event.hash;
    }
    db.close().await.unwrap();
    std::fs::remove_file(dir.0.join("audit-chain.keys")).unwrap();

    let app = crate::helpers::spawn_app_in(dir).await;

    match app.console.audit().verify_audit_chain(None).await.unwrap() {
        Verification::Intact { events, checkpoint } => {
            assert_eq!(events as usize, rows.len());
            assert_eq!(checkpoint.hash.len(), 64);
        }
        Verification::Broken(found) => panic!("not re-sealed: {} {}", found.seq, found.reason),
    }
    // New events go to the organization's chain, which verifies too.
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "after-the-upgrade", false).await;
    assert!(app.verify_chains().await.is_ok());
    assert!(matches!(
        app.console.audit().verify_audit_chain(None).await.unwrap(),
        Verification::Intact { .. }
    ));
}

/// Appends `2 * n` events straight to the chain, sealed with the install's chain key so that
/// it still verifies, faster than thousands of requests would: every other one in
/// `organization`, the rest in another, so one organization's sequence numbers have gaps as
/// in a shared install. Event `i` of the organization happens `i` seconds after now, and
/// every third is a `project.deleted`. Returns the organization's new events, oldest first.
async fn append_events(app: &crate::helpers::TestApp, organization: Uuid, n: usize) -> Vec<Seeded> {
    use cmek_console::domain::audit::AuditDraft;
    use cmek_console::domain::clock::Clock;
    use sea_orm::sea_query::{Alias, Expr, Query};

    let other = Uuid::now_v7();
    // Each event is signed into its organization's chain with the console's key, from where
    // ours stands; a new chain starts where format 1's closed. `seq` is only an ordinal.
    let signing =
        cmek_console::store::signing_keys::load(&app.data_dir().join("audit-signing.keys"))
            .unwrap();
    let signer = signing.current().unwrap();
    let db = app.db().await;
    let backend = db.get_database_backend();
    let scalar = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one_raw(sea_orm::Statement::from_string(backend, sql))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let mut seq: i64 = scalar("SELECT MAX(seq) AS v FROM audit_events")
        .await
        .try_get("", "v")
        .unwrap();
    let prev: String = scalar("SELECT last_hash AS v FROM audit_legacy")
        .await
        .try_get("", "v")
        .unwrap();
    let ours_head = db
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            format!("SELECT seq, hash, signed_at FROM audit_chains WHERE chain = '{organization}'"),
        ))
        .await
        .unwrap()
        .expect("our chain has a head");
    let mut chains: std::collections::HashMap<Uuid, (u64, String, String)> = [(
        organization,
        (
            ours_head.try_get::<i64>("", "seq").unwrap() as u64,
            ours_head.try_get::<String>("", "hash").unwrap(),
            ours_head.try_get::<String>("", "signed_at").unwrap(),
        ),
    )]
    .into();
    let mut signed = Vec::new();
    // Whole seconds, stored and compared alike on both databases.
    let start = chrono::SubsecRound::trunc_subsecs(app.clock.now(), 0);
    let mut ours = Vec::new();
    let mut rows = Vec::new();
    for i in 0..n {
        for org in [organization, other] {
            let action = if i % 3 == 0 {
                "project.deleted"
            } else {
                "project.updated"
            };
            let at = start + chrono::Duration::seconds(i as i64);
            seq += 1;
            let mut event = AuditDraft::new(
                "system".into(),
                Some(org),
                at,
                action,
                format!("project/{i}"),
            )
            .unsealed(seq);
            // A new chain is signed no earlier than ours (the key is valid from then on).
            let (chain_seq, chain_prev, after) = chains
                .get(&org)
                .cloned()
                .unwrap_or_else(|| (0, prev.clone(), chains[&organization].2.clone()));
            let signed_at = chrono::DateTime::parse_from_rfc3339(&after)
                .map(|t| t.with_timezone(&chrono::Utc).max(at))
                .unwrap_or(at);
            let link = cmek_console::crypto::audit_chain::ChainEvent::seal(
                &org.to_string(),
                chain_seq + 1,
                &chain_prev,
                cmek_console::crypto::audit_chain::EventBody {
                    id: event.id.to_string(),
                    occurred_at: cmek_console::crypto::audit_chain::time_text(event.occurred_at),
                    actor: event.actor.clone(),
                    action: event.action.clone(),
                    target: event.target.clone(),
                    outcome: event.outcome.as_str().to_owned(),
                    source_ip: event.source_ip.clone(),
                    detail: event.detail.clone(),
                },
                signed_at,
                signer,
            );
            chains.insert(org, (link.seq, link.hash.clone(), link.signed_at.clone()));
            event.prev_hash = link.prev_hash.clone();
            event.hash = link.hash.clone();
            signed.push(link);
            if org == organization {
                ours.push(Seeded {
                    id: event.id.to_string(),
                    deleted: action == "project.deleted",
                    at,
                });
            }
            rows.push(event);
        }
    }
    for (batch, links) in rows.chunks(200).zip(signed.chunks(200)) {
        let mut insert = Query::insert();
        insert.into_table(Alias::new("audit_events")).columns(
            [
                "seq",
                "id",
                "organization_id",
                "occurred_at",
                "actor",
                "action",
                "target",
                "outcome",
                "source_ip",
                "detail",
                "prev_hash",
                "hash",
                "key_id",
                "chain",
                "chain_seq",
                "chain_prev_hash",
                "chain_hash",
                "signed_at",
                "signing_key_id",
                "signature",
            ]
            .map(Alias::new),
        );
        for (e, link) in batch.iter().zip(links) {
            insert
                .values([
                    Expr::val(e.seq),
                    Expr::val(e.id),
                    Expr::val(e.organization_id),
                    Expr::val(e.occurred_at),
                    Expr::val(e.actor.clone()),
                    Expr::val(e.action.clone()),
                    Expr::val(e.target.clone()),
                    Expr::val(e.outcome.as_str()),
                    Expr::val(e.source_ip.clone()),
                    Expr::val(e.detail.to_string()),
                    Expr::val(e.prev_hash.clone()),
                    Expr::val(e.hash.clone()),
                    Expr::val(e.key_id.clone()),
                    Expr::val(link.chain.clone()),
                    Expr::val(link.seq as i64),
                    Expr::val(link.prev_hash.clone()),
                    Expr::val(link.hash.clone()),
                    Expr::val(link.signed_at.clone()),
                    Expr::val(link.key_id.clone()),
                    Expr::val(link.signature.clone()),
                ])
                .unwrap();
        }
        db.execute_raw(db.get_database_backend().build(&insert))
            .await
            .unwrap();
    }
    if backend == sea_orm::DatabaseBackend::Postgres {
        db.execute_unprepared(
            "SELECT setval('audit_events_seq', (SELECT MAX(seq) FROM audit_events) + 1, false)",
        )
        .await
        .unwrap();
    }
    for (org, (seq, hash, signed_at)) in chains {
        db.execute_unprepared(&format!("DELETE FROM audit_chains WHERE chain = '{org}'"))
            .await
            .unwrap();
        db.execute_unprepared(&format!(
            "INSERT INTO audit_chains (chain, seq, hash, signed_at, checkpoint_seq) \
             VALUES ('{org}', {seq}, '{hash}', '{signed_at}', 0)"
        ))
        .await
        .unwrap();
    }
    ours
}

struct Seeded {
    id: String,
    deleted: bool,
    at: chrono::DateTime<chrono::Utc>,
}

/// Fails at the first event out of place, so a page boundary that skipped or repeated an
/// event is named rather than lost in a diff of thousands.
fn assert_same_events(got: &[String], expected: &[String], what: &str) {
    let first_difference = got.iter().zip(expected).position(|(a, b)| a != b);
    assert_eq!(
        (got.len(), first_difference),
        (expected.len(), None),
        "{what}: every event once, in order"
    );
}

#[tokio::test]
async fn an_export_of_thousands_of_events_holds_each_once_in_order() {
    let app = spawn_app().await;
    let auditor = app.api_key(Role::Auditor).await;
    let organization = app.first_organization().await;
    let ids = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let existing = ids(&events(&app, &auditor, "page_size=100").await);
    // 2,500 of ours: 5 full export pages and more, between 2,500 events of another
    // organization.
    let seeded = append_events(&app, organization, 2_500).await;
    let expected: Vec<String> = seeded
        .iter()
        .rev()
        .map(|s| s.id.clone())
        .chain(existing)
        .collect();
    // An export is the chain, oldest first.
    let oldest_first: Vec<String> = expected.iter().rev().cloned().collect();

    let export: Value = app
        .get("/api/v1/audit-events?format=json", &auditor)
        .await
        .json()
        .await
        .unwrap();
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page: Value = app
            .get(
                &format!("/api/v1/audit-events?page_size=100&page_token={token}"),
                &auditor,
            )
            .await
            .json()
            .await
            .unwrap();
        paged.extend(ids(page["items"].as_array().unwrap()));
        match page["next_page_token"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    let middle = seeded[seeded.len() / 2].at;
    let filtered = app
        .get(
            &format!(
                "/api/v1/audit-events?format=csv&action=project.deleted&since={}",
                urlencode(&middle.to_rfc3339())
            ),
            &auditor,
        )
        .await
        .text()
        .await
        .unwrap();

    assert_same_events(
        &ids(export["items"].as_array().unwrap()),
        &oldest_first,
        "JSON export",
    );
    assert_same_events(&paged, &expected, "pages of 100");
    let filtered: Vec<String> = filtered
        .lines()
        .filter(|line| line.starts_with("event,"))
        .map(|line| line.split(',').nth(3).unwrap().to_owned())
        .collect();
    let expected_filtered: Vec<String> = seeded
        .iter()
        .filter(|s| s.deleted && s.at >= middle)
        .map(|s| s.id.clone())
        .collect();
    assert_same_events(
        &filtered,
        &expected_filtered,
        "CSV export filtered by action and time",
    );
    assert!(
        matches!(
            app.console.audit().verify_audit_chain(None).await.unwrap(),
            Verification::Intact { .. }
        ),
        "the appended events extend the chain"
    );
    let chains = app.verify_chains().await;
    assert!(
        chains.is_ok(),
        "and each organization's own chain: {chains:?}"
    );
}

/// Events written before the project column existed get theirs from their target or their
/// detail when the migration runs, so the project filter finds old events too. On SQLite, and
/// on PostgreSQL when the suite has one.
#[tokio::test]
async fn events_from_before_the_project_column_are_given_their_project() {
    use cmek_migrations::{Migrator, MigratorTrait};
    use sea_orm::{DbBackend, Statement};

    let postgres = std::env::var("CMEK_TEST_POSTGRES_URL").ok();
    let file = std::env::temp_dir().join(format!("cmek-audit-backfill-{}.db", Uuid::now_v7()));
    let (url, backend) = match &postgres {
        Some(admin) => (
            crate::helpers::create_postgres_database(admin).await,
            DbBackend::Postgres,
        ),
        None => (
            format!("sqlite://{}?mode=rwc", file.display()),
            DbBackend::Sqlite,
        ),
    };
    let db = cmek_console::store::connect(&url).await.unwrap();
    Migrator::up(&db, Some(17)).await.unwrap();
    let (organization, project) = (Uuid::now_v7(), Uuid::now_v7());
    let rows = [
        (1_i64, format!("project/{project}"), "{}".to_owned()),
        (
            2,
            "cluster/c".to_owned(),
            format!(r#"{{"project_id":"{project}","name":"c"}}"#),
        ),
        (
            3,
            "user/u".to_owned(),
            r#"{"message":"nul \u0000 from a KMS"}"#.to_owned(),
        ),
        (
            4,
            "cluster/d".to_owned(),
            r#"{"project_id":"not-an-id"}"#.to_owned(),
        ),
    ];
    let insert = match backend {
        DbBackend::Postgres => {
            "INSERT INTO audit_events (seq, id, organization_id, occurred_at, actor, action, \
             target, outcome, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, 'system', 'x.y', $5, 'success', $6, '', '')"
        }
        _ => {
            "INSERT INTO audit_events (seq, id, organization_id, occurred_at, actor, action, \
             target, outcome, detail, prev_hash, hash) \
             VALUES (?, ?, ?, ?, 'system', 'x.y', ?, 'success', ?, '', '')"
        }
    };
    for (seq, target, detail) in rows {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            insert,
            [
                seq.into(),
                Uuid::now_v7().into(),
                organization.into(),
                chrono::Utc::now().into(),
                target.into(),
                detail.into(),
            ],
        ))
        .await
        .unwrap();
    }

    Migrator::up(&db, None).await.unwrap();

    let found = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT seq, project FROM audit_events ORDER BY seq",
        ))
        .await
        .unwrap();
    let projects: Vec<(i64, Option<String>)> = found
        .iter()
        .map(|row| {
            (
                row.try_get("", "seq").unwrap(),
                row.try_get("", "project").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        projects,
        [
            (1, Some(project.to_string())),
            (2, Some(project.to_string())),
            (3, None),
            (4, None),
        ]
    );
    db.close().await.unwrap();
    let _ = std::fs::remove_file(file);
    if let Some(admin) = postgres {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let admin = sea_orm::Database::connect(&admin).await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
    }
}

/// The audit log's signing keys (format 2): made 0600 by the first start, published to every
/// signed-in role with their validity, shown on the Audit Log page; a rotation retires the
/// key before it at the new key's start.
#[tokio::test]
async fn the_signing_keys_are_published_and_a_rotation_retires_the_one_before() {
    let app = spawn_app().await;
    let member = app.api_key(Role::Member).await;
    let response = app.get("/api/v1/audit/signing-keys", &member).await;
    assert_eq!(response.status(), 200);
    let published: Value = response.json().await.unwrap();
    let keys = published["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{published}");
    assert_eq!(keys[0]["algorithm"], "Ed25519");
    assert!(keys[0]["retired_at"].is_null());
    let key_id = keys[0]["key_id"].as_str().unwrap().to_owned();
    let public = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        keys[0]["public_key"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(public.len(), 32);
    assert_eq!(cmek_console::crypto::audit_chain::key_id(&public), key_id);

    let file = app.data_dir().join("audit-signing.keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let unauthenticated = reqwest::get(app.url("/api/v1/audit/signing-keys"))
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let page = app.owner_page("/audit").await;
    assert!(
        page.contains(&format!("data-key-id=\"{key_id}\"")),
        "the Audit Log page lists it"
    );

    // A rotation (what `cmek-console audit rotate-key` does) appends a key valid from now;
    // the first one retires then, and both stay published.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let second = cmek_console::store::signing_keys::rotate(&file, later).unwrap();
    let both = cmek_console::store::signing_keys::load(&file)
        .unwrap()
        .published();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].key_id, key_id);
    assert_eq!(
        both[0].retired_at.as_deref(),
        Some(both[1].valid_from.as_str())
    );
    assert_eq!(both[1].key_id, second);
}

/// Format 2 beside format 1: each new event is also signed into its organization's own chain;
/// the chains verify with the published keys, and a row edited in the database breaks its
/// organization's chain, named.
#[tokio::test]
async fn each_organization_has_its_own_signed_chain_and_an_edit_breaks_it() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    for name in ["alpha", "beta"] {
        app.create_project(&owner, name, false).await;
    }
    let verified = app.verify_chains().await;
    let (chains, events) = verified.expect("intact");
    assert!(
        chains >= 1 && events >= 3,
        "{chains} chains, {events} events"
    );
    // Every event of the organization is in its chain, numbered from 1 without a gap, and the
    // first starts from format 1's hash before it.
    let db = app.db().await;
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT chain_seq, chain_prev_hash, prev_hash, chain, signature FROM audit_events \
             WHERE chain IS NOT NULL ORDER BY chain, chain_seq",
        ))
        .await
        .unwrap();
    let mut by_chain: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for row in &rows {
        let chain: String = row.try_get("", "chain").unwrap();
        let seq: i64 = row.try_get("", "chain_seq").unwrap();
        if seq == 1 {
            let a: String = row.try_get("", "chain_prev_hash").unwrap();
            let b: String = row.try_get("", "prev_hash").unwrap();
            assert_eq!(a, b, "a chain starts from format 1's hash before it");
        }
        by_chain.entry(chain).or_default().push(seq);
    }
    for (chain, seqs) in &by_chain {
        assert_eq!(
            *seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{chain}"
        );
    }
    // Someone with the database changes who did something: the chain names the event.
    db.execute_unprepared("UPDATE audit_events SET actor = 'someone else' WHERE chain_seq = 2")
        .await
        .unwrap();
    let broken = app.verify_chains().await.unwrap_err();
    assert_eq!(broken.1.seq, Some(2), "{broken:?}");
    assert!(broken.1.reason.contains("hash"), "{broken:?}");
}

/// An event moved to another organization (its `organization_id` changed, so another
/// organization's log lists it), and an organization whose every event was removed, are both
/// caught by `audit verify`.
#[tokio::test]
async fn an_event_moved_to_another_organization_or_a_chain_emptied_is_caught() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", false).await;
    let chain = app.first_organization().await;
    app.db()
        .await
        .execute_unprepared(&format!(
            "UPDATE audit_events SET organization_id = NULL WHERE chain = '{chain}' AND chain_seq = 2"
        ))
        .await
        .unwrap();
    match app.verify_chains().await {
        Err((_, broken)) => assert!(broken.reason.contains("organization"), "{broken}"),
        Ok(_) => panic!("a moved event went unnoticed"),
    }

    let emptied = spawn_app().await;
    let owner = emptied.api_key(Role::Owner).await;
    emptied.create_project(&owner, "one", false).await;
    emptied
        .db()
        .await
        .execute_unprepared(
            "DELETE FROM audit_events WHERE chain IS NOT NULL AND chain <> 'platform'",
        )
        .await
        .unwrap();
    match emptied.verify_chains().await {
        Err((_, broken)) => assert!(broken.reason.contains("holds no event"), "{broken}"),
        Ok(_) => panic!("an emptied chain went unnoticed"),
    }
}

/// The page, the API and the export number an organization's events alike: by their place
/// in its own chain, dense whatever other organizations record in between (the install-wide
/// `seq` is not), each with the signing key that signed it.
#[tokio::test]
async fn events_carry_their_place_in_the_chain_as_the_export_numbers_it() {
    use crate::cli::run;
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "before", false).await;
    // Another organization records events in between.
    let other = run(
        &app,
        &[
            "organization",
            "create",
            "--name",
            "Other",
            "--owner-email",
            "o@example.com",
        ],
    );
    assert!(other.status.success());
    let said = String::from_utf8_lossy(&other.stdout);
    let other_id = said
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .find(|word| uuid::Uuid::parse_str(word).is_ok())
        .unwrap_or_else(|| panic!("the new organization's id: {said}"));
    let key = run(
        &app,
        &[
            "api-key",
            "create",
            "--role",
            "owner",
            "--name",
            "o",
            "--organization",
            other_id,
        ],
    );
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    app.create_project(&owner, "after", false).await;

    let page = events(&app, &owner, "").await;
    let export: Value = app
        .get("/api/v1/audit-events?format=json", &owner)
        .await
        .json()
        .await
        .unwrap();
    let items = export["items"].as_array().unwrap();
    assert_eq!(page.len(), items.len());
    let places: Vec<i64> = page
        .iter()
        .map(|e| e["chain_seq"].as_i64().unwrap())
        .collect();
    let dense: Vec<i64> = (1..=page.len() as i64).rev().collect();
    assert_eq!(places, dense, "newest first, with no gap");
    let seqs: Vec<i64> = page.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs[0] - seqs[seqs.len() - 1] >= seqs.len() as i64,
        "the other organization's events lie between: {seqs:?}"
    );
    for event in &page {
        let exported = items.iter().find(|i| i["id"] == event["id"]).unwrap();
        assert_eq!(event["chain_seq"], exported["seq"]);
        assert_eq!(event["signing_key_id"], exported["key_id"]);
    }

    let html = app.owner_page("/audit").await;
    let newest = format!("<td>{}</td><td>", places[0] + 1); // the sign-in is one more
    assert!(
        html.contains(&newest),
        "the page shows the chain's places: {newest}"
    );
}
