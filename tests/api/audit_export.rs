//! The audit log a customer verifies on their own (issue 22): an organization's export in
//! format 2, JSON and CSV, checked by both offline verifiers (`cmek-console audit
//! verify-export`, with no database, and tools/verify_audit_export.py, Python with the
//! `cryptography` package only), every kind of tampering caught by them and by `audit
//! verify`, and signed checkpoints delivered to webhooks (checked with the Python
//! `standardwebhooks` package) that catch a later rewrite, even by someone holding the
//! signing key.

use std::path::{Path, PathBuf};
use std::process::Command;

use cmek_console::domain::identity::Role;
use sea_orm::ConnectionTrait;
use serde_json::Value;

use crate::alerts::{Receiver, add_webhook};
use crate::helpers::{TempDir, TestApp, spawn_app, spawn_app_with};
use crate::moto::service;

/// A verifier's exit status and what it printed.
#[derive(Debug)]
struct Verdict {
    code: i32,
    said: String,
}

impl Verdict {
    fn of(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            said: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

/// A scratch directory with the published keys, and the files a test writes there.
struct Workbench {
    dir: TempDir,
    keys: PathBuf,
}

impl Workbench {
    async fn new(app: &TestApp, key: &str) -> Self {
        let dir =
            TempDir(std::env::temp_dir().join(format!("cmek-verify-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let keys = app.get("/api/v1/audit/signing-keys", key).await;
        assert_eq!(keys.status(), 200);
        let path = dir.0.join("keys.json");
        std::fs::write(&path, keys.bytes().await.unwrap()).unwrap();
        Self { dir, keys: path }
    }

    fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Runs both offline verifiers on `file`, with the kept checkpoints and a flag
    /// (`--partial`, `--selection`), and asserts they agree.
    fn verify(&self, file: &Path, kept: &[PathBuf], flag: Option<&str>) -> Verdict {
        let mut args: Vec<String> = vec![
            file.display().to_string(),
            "--keys".into(),
            self.keys.display().to_string(),
        ];
        for cp in kept {
            args.push("--checkpoint".into());
            args.push(cp.display().to_string());
        }
        args.extend(flag.map(str::to_owned));
        let ours = Verdict::of(
            Command::new(env!("CARGO_BIN_EXE_cmek-console"))
                .args(["audit", "verify-export"])
                .args(&args)
                // No database: the verifier must not need one.
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")
                .env("CMEK_DATA_DIR", "/nonexistent/cmek")
                .env("RUST_LOG", "warn")
                .output()
                .expect("cmek-console runs"),
        );
        let python = Verdict::of(
            Command::new(service("CMEK_TEST_PYTHON"))
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../tools/verify_audit_export.py"
                ))
                .args(&args)
                .output()
                .expect("python runs"),
        );
        assert_eq!(
            ours.code,
            python.code,
            "the two verifiers disagree on {}:\nours: {}\npython: {}",
            file.display(),
            ours.said,
            python.said
        );
        ours
    }
}

async fn organization_of(app: &TestApp, key: &str) -> String {
    let me: Value = app.get("/api/v1/me", key).await.json().await.unwrap();
    me["organization"]["id"]
        .as_str()
        .expect("the caller's organization")
        .to_owned()
}

async fn export(app: &TestApp, key: &str, query: &str) -> (Vec<u8>, String) {
    let response = app.get(&format!("/api/v1/audit-events?{query}"), key).await;
    assert_eq!(response.status(), 200, "{query}");
    let extent = response.headers()["x-audit-export-extent"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.bytes().await.unwrap().to_vec(), extent)
}

/// Runs the statements; `{new id}` in one stands for a fresh event id.
async fn sql(app: &TestApp, statements: &[String]) {
    let db = app.db().await;
    let backend = db.get_database_backend();
    for statement in statements {
        if statement.contains("{new id}") {
            let mark = match backend {
                sea_orm::DatabaseBackend::Postgres => "$1",
                _ => "?",
            };
            db.execute_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                statement.replace("{new id}", mark),
                [uuid::Uuid::now_v7().into()],
            ))
            .await
            .unwrap();
        } else {
            db.execute_unprepared(statement).await.unwrap();
        }
    }
}

/// `audit verify` over every chain (what the command runs): `None` when intact, else the
/// chain and why.
async fn audit_verify(
    app: &TestApp,
    kept: &[cmek_console::crypto::audit_chain::Checkpoint],
) -> Option<String> {
    match app
        .console
        .audit()
        .verify_org_chains(None, kept)
        .await
        .unwrap()
    {
        Ok(_) => None,
        Err((chain, broken)) => Some(format!("{chain}: {broken}")),
    }
}

/// An event appended to `chain` after `prev` by someone holding `key`, as the console would
/// have signed it at `at`.
fn forged(
    chain: &str,
    seq: u64,
    prev: &str,
    at: chrono::DateTime<chrono::Utc>,
    key: &cmek_console::crypto::audit_chain::SigningKey,
) -> cmek_console::crypto::audit_chain::ChainEvent {
    cmek_console::crypto::audit_chain::ChainEvent::seal(
        chain,
        seq,
        prev,
        cmek_console::crypto::audit_chain::EventBody {
            id: uuid::Uuid::now_v7().to_string(),
            occurred_at: cmek_console::crypto::audit_chain::time_text(at),
            actor: "user:mallory@example.com".into(),
            action: "project.deleted".into(),
            target: "project/forged".into(),
            outcome: "success".into(),
            source_ip: None,
            detail: serde_json::json!({}),
        },
        at,
        key,
    )
}

#[tokio::test]
async fn an_export_verifies_offline_in_json_and_csv_and_holds_nothing_of_another_organization() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    let auditor = app.api_key(Role::Auditor).await;
    let member = app.api_key(Role::Member).await;
    for name in ["alpha", "payments é中", "with space.dot_under-score"] {
        app.create_project(&owner, name, false).await;
    }
    let stranger = app.stranger_key().await;
    app.create_project(&stranger, "strangers-secret-project", false)
        .await;
    let ours = organization_of(&app, &owner).await;
    let theirs = organization_of(&app, &stranger).await;
    app.console.audit().checkpoint_chains().await.unwrap();
    let bench = Workbench::new(&app, &auditor).await;

    let (json, extent) = export(&app, &auditor, "format=json").await;
    let (csv, csv_extent) = export(&app, &auditor, "format=csv").await;

    assert_eq!((extent.as_str(), csv_extent.as_str()), ("whole", "whole"));
    let doc: Value = serde_json::from_slice(&json).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["format", "chain", "checkpoint", "items"],
        "in the spec's order"
    );
    assert_eq!(doc["format"], "cmek-console-audit/2");
    assert_eq!(doc["chain"], ours.as_str());
    let items = doc["items"].as_array().unwrap();
    let seqs: Vec<u64> = items.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=items.len() as u64).collect::<Vec<_>>(),
        "oldest first, whole"
    );
    assert!(items.iter().all(|e| e["chain"] == ours.as_str()));
    assert_eq!(
        doc["checkpoint"]["seq"],
        items.len() as u64,
        "the newest checkpoint first"
    );
    let text = String::from_utf8_lossy(&json);
    assert!(!text.contains(&theirs) && !text.contains("strangers-secret-project"));
    let csv_text = String::from_utf8_lossy(&csv);
    assert!(csv_text.starts_with("record,chain,seq,id,occurred_at"));
    assert_eq!(
        csv_text
            .lines()
            .filter(|l| l.starts_with("checkpoint,"))
            .count(),
        1
    );

    for (name, content) in [("export.json", &json), ("export.csv", &csv)] {
        let file = bench.write(name, content);
        let verdict = bench.verify(&file, &[], None);
        assert_eq!(verdict.code, 0, "{name}: {}", verdict.said);
        assert!(
            verdict
                .said
                .to_lowercase()
                .contains(&format!("verified: {} events", items.len())),
            "{}",
            verdict.said
        );
    }
    // The other organization's export verifies on its own too, with nothing of ours.
    let (theirs_json, _) = export(&app, &stranger, "format=json").await;
    assert!(!String::from_utf8_lossy(&theirs_json).contains(&ours));
    let file = bench.write("theirs.json", &theirs_json);
    assert_eq!(bench.verify(&file, &[], None).code, 0);
    assert_eq!(audit_verify(&app, &[]).await, None);

    // Members do not read the audit log, exports included.
    assert_eq!(
        app.get("/api/v1/audit-events?format=json", &member)
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn a_time_range_exports_a_part_and_a_filter_exports_a_selection() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "before", false).await;
    app.clock.advance(chrono::Duration::hours(1));
    let cut = {
        use cmek_console::domain::clock::Clock;
        app.clock.now().to_rfc3339()
    };
    let cut = cut.replace('+', "%2B").replace(':', "%3A");
    for name in ["after-1", "after-2"] {
        let created = app.create_project(&owner, name, false).await;
        // Something else between the two, so a filter on the creations leaves a gap.
        let renamed = app
            .patch_json(
                &format!("/api/v1/projects/{}", created["id"].as_str().unwrap()),
                &owner,
                &serde_json::json!({ "name": format!("{name}-renamed") }),
            )
            .await;
        assert_eq!(renamed.status(), 200);
    }
    app.console.audit().checkpoint_chains().await.unwrap();
    let bench = Workbench::new(&app, &owner).await;

    let (part, extent) = export(&app, &owner, &format!("format=json&since={cut}")).await;
    assert_eq!(extent, "part");
    let doc: Value = serde_json::from_slice(&part).unwrap();
    let actions: Vec<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "project.created",
            "project.updated",
            "project.created",
            "project.updated"
        ]
    );
    let file = bench.write("part.json", &part);
    let whole = bench.verify(&file, &[], None);
    assert_eq!(
        whole.code, 1,
        "a part is not the whole chain: {}",
        whole.said
    );
    let verdict = bench.verify(&file, &[], Some("--partial"));
    assert_eq!(verdict.code, 0, "{}", verdict.said);
    // A checkpoint kept from later (beyond the part's end) cannot be checked against a part:
    // reported, not taken for a truncation.
    let (later, _) = export(&app, &owner, "format=json").await;
    let later: Value = serde_json::from_slice(&later).unwrap();
    let kept = bench.write(
        "kept.json",
        &serde_json::to_vec(&later["checkpoint"]).unwrap(),
    );
    let (before_cut, _) = export(&app, &owner, &format!("format=json&until={cut}")).await;
    let file = bench.write("before-cut.json", &before_cut);
    let verdict = bench.verify(&file, &[kept], Some("--partial"));
    assert_eq!(verdict.code, 0, "{}", verdict.said);
    assert!(
        verdict.said.to_lowercase().contains("not checked"),
        "{}",
        verdict.said
    );

    let (chosen, extent) = export(&app, &owner, "format=csv&action=project.created").await;
    assert_eq!(extent, "selection");
    let file = bench.write("chosen.csv", &chosen);
    assert_eq!(
        String::from_utf8_lossy(&chosen)
            .lines()
            .filter(|l| l.starts_with("event,"))
            .count(),
        3
    );
    let strict = bench.verify(&file, &[], Some("--partial"));
    assert_eq!(strict.code, 1, "{}", strict.said);
    assert!(strict.said.contains("--selection"), "{}", strict.said);
    let verdict = bench.verify(&file, &[], Some("--selection"));
    assert_eq!(verdict.code, 0, "{}", verdict.said);
}

/// The ways someone who can write the database, but does not hold the signing key, could
/// change an organization's log (its chain holds at least four events).
fn tamperings(chain: &str) -> Vec<(&'static str, Vec<String>)> {
    let head = |seq: i64| {
        format!(
            "UPDATE audit_chains SET seq = {seq}, hash = (SELECT chain_hash FROM audit_events \
             WHERE chain = '{chain}' AND chain_seq = {seq}) WHERE chain = '{chain}'"
        )
    };
    let at = |seq: i64| format!("chain = '{chain}' AND chain_seq = {seq}");
    vec![
        (
            "modified",
            vec![format!(
                "UPDATE audit_events SET target = 'project/forged' WHERE {}",
                at(2)
            )],
        ),
        (
            "deleted",
            vec![format!("DELETE FROM audit_events WHERE {}", at(2))],
        ),
        (
            "reordered",
            vec![
                format!("UPDATE audit_events SET chain_seq = -2 WHERE {}", at(2)),
                format!("UPDATE audit_events SET chain_seq = 2 WHERE {}", at(3)),
                format!("UPDATE audit_events SET chain_seq = 3 WHERE {}", at(-2)),
            ],
        ),
        (
            "inserted (an event replayed)",
            vec![
                format!(
                    "UPDATE audit_events SET chain_seq = -chain_seq WHERE chain = '{chain}' AND chain_seq >= 3"
                ),
                format!(
                    "UPDATE audit_events SET chain_seq = 1 - chain_seq WHERE chain = '{chain}' AND chain_seq < 0"
                ),
                format!(
                    "INSERT INTO audit_events (seq, id, organization_id, occurred_at, actor, action, \
                     target, outcome, source_ip, detail, prev_hash, hash, key_id, project, chain, \
                     chain_seq, chain_prev_hash, chain_hash, signed_at, signing_key_id, signature) \
                     SELECT (SELECT MAX(seq) + 1 FROM audit_events), {{new id}}, organization_id, \
                     occurred_at, actor, action, target, outcome, source_ip, detail, prev_hash, \
                     hash, key_id, project, chain, 3, chain_prev_hash, chain_hash, signed_at, \
                     signing_key_id, signature FROM audit_events WHERE {}",
                    at(2)
                ),
            ],
        ),
        (
            "the newest events removed",
            vec![format!(
                "DELETE FROM audit_events WHERE chain = '{chain}' AND chain_seq >= 3"
            )],
        ),
        (
            "the newest events removed, the log's checkpoints and head too",
            vec![
                format!("DELETE FROM audit_events WHERE chain = '{chain}' AND chain_seq >= 3"),
                format!("DELETE FROM audit_checkpoints WHERE chain = '{chain}'"),
                head(2),
            ],
        ),
    ]
}

/// An owner's key, four projects in its organization, and a checkpoint of the chain's head
/// (which the customer receives): the key, the chain, and the export in JSON then.
async fn four_projects_then_a_checkpoint(app: &TestApp) -> (String, String, Vec<u8>) {
    let owner = app.api_key(Role::Owner).await;
    for name in ["one", "two", "three", "four"] {
        app.create_project(&owner, name, false).await;
    }
    let chain = organization_of(app, &owner).await;
    app.console.audit().checkpoint_chains().await.unwrap();
    let (exported, _) = export(app, &owner, "format=json").await;
    (owner, chain, exported)
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_by_audit_verify_and_both_offline_verifiers() {
    let template = tamperings("x");
    for (n, (kind, _)) in template.iter().enumerate() {
        let app = spawn_app().await;
        let (owner, chain, before) = four_projects_then_a_checkpoint(&app).await;
        let bench = Workbench::new(&app, &owner).await;
        let doc: Value = serde_json::from_slice(&before).unwrap();
        assert_eq!(doc["checkpoint"]["chain"], chain.as_str());
        assert_eq!(
            doc["checkpoint"]["seq"],
            doc["items"].as_array().unwrap().len() as u64
        );
        let kept = bench.write(
            "kept.json",
            &serde_json::to_vec(&doc["checkpoint"]).unwrap(),
        );
        let file = bench.write("before.json", &before);
        assert_eq!(
            bench.verify(&file, std::slice::from_ref(&kept), None).code,
            0
        );

        let (_, statements) = tamperings(&chain).swap_remove(n);
        sql(&app, &statements).await;

        // With the log's own checkpoints and head gone too, only a checkpoint kept outside
        // tells (format 1's chain, until it closes, also does).
        if !kind.contains("checkpoints") {
            assert!(
                audit_verify(&app, &[]).await.is_some(),
                "{kind}: audit verify saw nothing"
            );
        }
        let kept_checkpoint = serde_json::from_value(doc["checkpoint"].clone()).unwrap();
        assert!(
            audit_verify(&app, &[kept_checkpoint]).await.is_some(),
            "{kind}: audit verify with the kept checkpoint saw nothing"
        );
        for format in ["json", "csv"] {
            let (after, _) = export(&app, &owner, &format!("format={format}")).await;
            let file = bench.write(&format!("after.{format}"), &after);
            let verdict = bench.verify(&file, std::slice::from_ref(&kept), None);
            assert_eq!(verdict.code, 1, "{kind} ({format}): {}", verdict.said);
            assert!(verdict.said.contains("NOT VERIFIED"), "{}", verdict.said);
        }
    }
}

/// The operator's `audit verify` with the checkpoint an organization kept (a file holding
/// its webhook's `data`): matched while the log is whole; after the newest events are
/// removed with the log's own checkpoints and head rewritten to agree, the kept checkpoint
/// catches it. A file that is not a checkpoint, or no signing key file, is exit 2, not a
/// false alarm of tampering.
#[tokio::test]
async fn audit_verify_takes_the_checkpoints_an_organization_kept() {
    use crate::cli::{run, run_with};
    let app = spawn_app().await;
    let (_, chain, exported) = four_projects_then_a_checkpoint(&app).await;
    let doc: Value = serde_json::from_slice(&exported).unwrap();
    let dir = TempDir(std::env::temp_dir().join(format!("cmek-kept-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let kept = dir.0.join("kept.json");
    std::fs::write(&kept, doc["checkpoint"].to_string()).unwrap();
    let kept = kept.to_str().unwrap();

    let whole = run(&app, &["audit", "verify", "--checkpoint", kept]);
    let said = String::from_utf8_lossy(&whole.stdout);
    assert!(
        whole.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    assert!(said.contains("1 kept checkpoint(s) matched"), "{said}");

    let garbage = dir.0.join("garbage.json");
    std::fs::write(&garbage, "{\"seq\": 1}").unwrap();
    for bad in [garbage.to_str().unwrap(), "/nonexistent/kept.json", "cp1.x"] {
        let refused = run(&app, &["audit", "verify", "--checkpoint", bad]);
        assert_eq!(refused.status.code(), Some(2), "{bad}");
    }
    let no_keys = run_with(
        &app,
        &["audit", "verify"],
        &[(
            "CMEK_AUDIT_SIGNING_KEY_FILE",
            Path::new("/nonexistent/signing.keys"),
        )],
    );
    assert_eq!(no_keys.status.code(), Some(2));
    let said = String::from_utf8_lossy(&no_keys.stderr);
    assert!(
        said.contains("signing key file") && !said.contains("broken"),
        "{said}"
    );

    let (_, thorough) = tamperings(&chain)
        .into_iter()
        .find(|(kind, _)| kind.contains("checkpoints and head"))
        .unwrap();
    sql(&app, &thorough).await;
    let caught = run(&app, &["audit", "verify", "--checkpoint", kept]);
    assert_eq!(caught.status.code(), Some(1));
    let said = String::from_utf8_lossy(&caught.stderr);
    assert!(
        said.contains(&format!("Organization chain {chain} broken")) && said.contains("removed"),
        "{said}"
    );
}

/// An owner's key and one project in its organization (its chain), then a rotation of the
/// signing key file to a key valid from `at`: the owner's key, the chain, the file, and the
/// keys it held before (the first retires at `at`).
async fn one_project_then_rotation(
    app: &TestApp,
    at: chrono::DateTime<chrono::Utc>,
) -> (
    String,
    String,
    PathBuf,
    cmek_console::crypto::audit_chain::SigningKeys,
) {
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", false).await;
    let chain = organization_of(app, &owner).await;
    let file = app.data_dir().join("audit-signing.keys");
    let before = cmek_console::store::signing_keys::load(&file).unwrap();
    cmek_console::store::signing_keys::rotate(&file, at).unwrap();
    (owner, chain, file, before)
}

#[tokio::test]
async fn a_retired_keys_late_signature_is_refused() {
    let app = spawn_app().await;
    // The key retires a minute from now (a rotation); it leaks later, and someone appends an
    // event signed after that.
    let now = chrono::Utc::now();
    let (owner, chain, file, before) =
        one_project_then_rotation(&app, now + chrono::Duration::minutes(1)).await;
    let retired = before.current().unwrap();
    let later = now + chrono::Duration::hours(2);
    let bench = Workbench::new(&app, &owner).await;
    // The customer's list after the rotation is the file's (the running console takes it
    // within 10 s; this test does not wait for that).
    let keys = cmek_console::store::signing_keys::load(&file).unwrap();
    let body = serde_json::json!({ "keys": keys.published() });
    assert_eq!(body["keys"].as_array().unwrap().len(), 2);
    assert!(!body["keys"][0]["retired_at"].is_null());
    std::fs::write(&bench.keys, serde_json::to_vec(&body).unwrap()).unwrap();

    let (doc, _) = export(&app, &owner, "format=json").await;
    let mut doc: Value = serde_json::from_slice(&doc).unwrap();
    let last = doc["items"].as_array().unwrap().last().unwrap().clone();
    let forged = forged(
        &chain,
        last["seq"].as_u64().unwrap() + 1,
        last["hash"].as_str().unwrap(),
        later,
        retired,
    );
    doc["items"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::to_value(&forged).unwrap());
    let file = bench.write("late.json", &serde_json::to_vec(&doc).unwrap());
    let verdict = bench.verify(&file, &[], None);
    assert_eq!(verdict.code, 1, "{}", verdict.said);
    assert!(verdict.said.contains("not valid then"), "{}", verdict.said);
}

/// A rotation scheduled ahead (`audit rotate-key --in`) reaches a running console without a
/// restart: once it read the key file again (its `audit-signing-keys` worker, every 10 s),
/// it publishes the new key, signs with the old one until the new one's time and with the
/// new one from then on, and the export verifies with both offline verifiers. A file that
/// lost a key is refused and changes nothing.
#[tokio::test]
async fn a_rotation_scheduled_ahead_reaches_a_running_console_and_its_export_verifies() {
    use cmek_console::domain::clock::Clock as _;
    // Its own worker would read the file at any moment: the test reads it itself.
    let app = spawn_app_with(&[("CMEK_TEST_WORKER_FAULTS", "audit-signing-keys")]).await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "before", false).await;
    let file = app.data_dir().join("audit-signing.keys");
    let ring = app.console.audit().signing_ring();
    let old = ring.get().current().unwrap().id().to_owned();
    let from = app.clock.now() + chrono::Duration::minutes(5);
    let new = cmek_console::store::signing_keys::rotate(&file, from).unwrap();
    let added = cmek_console::store::signing_keys::reload(&file, ring).unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].0, new);
    assert!(
        cmek_console::store::signing_keys::reload(&file, ring)
            .unwrap()
            .is_empty(),
        "read again unchanged"
    );
    let published: Value = app
        .get("/api/v1/audit/signing-keys", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["keys"][1]["key_id"], new.as_str(), "{published}");
    assert_eq!(
        published["keys"][0]["retired_at"], published["keys"][1]["valid_from"],
        "{published}"
    );
    // The old key still signs until then: the places it signed are not final yet.
    assert!(published["keys"][0].get("signed").is_none(), "{published}");

    // Before the new key's time the old one still signs; after it, the new one.
    app.create_project(&owner, "still-before", false).await;
    app.clock.advance(chrono::Duration::minutes(6));
    app.create_project(&owner, "after", false).await;
    let (json, _) = export(&app, &owner, "format=json").await;
    let doc: Value = serde_json::from_slice(&json).unwrap();
    let items = doc["items"].as_array().unwrap();
    let signer = |name: &str| {
        items
            .iter()
            .find(|e| e["action"] == "project.created" && e["detail"]["name"] == name)
            .map(|e| e["key_id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(signer("before"), old);
    assert_eq!(signer("still-before"), old);
    assert_eq!(signer("after"), new);
    // Now the old key has retired, and its places are told.
    let bench = Workbench::new(&app, &owner).await;
    let keys: Value = serde_json::from_slice(&std::fs::read(&bench.keys).unwrap()).unwrap();
    assert!(
        keys["keys"][0]["signed"]["last_seq"].as_u64().unwrap() >= 2,
        "{keys}"
    );
    let verdict = bench.verify(&bench.write("rotated.json", &json), &[], None);
    assert_eq!(verdict.code, 0, "{}", verdict.said);
    let (csv, _) = export(&app, &owner, "format=csv").await;
    let verdict = bench.verify(&bench.write("rotated.csv", &csv), &[], None);
    assert_eq!(verdict.code, 0, "{}", verdict.said);

    // A file with the first key taken out is not taken: both keys stay.
    let text = std::fs::read_to_string(&file).unwrap();
    let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, rest).unwrap();
    assert!(cmek_console::store::signing_keys::reload(&file, ring).is_err());
    assert_eq!(ring.get().len(), 2);
    app.create_project(&owner, "after-refused", false).await;
    let (json, _) = export(&app, &owner, "format=json").await;
    let verdict = bench.verify(&bench.write("kept.json", &json), &[], None);
    assert_eq!(verdict.code, 0, "{}", verdict.said);
}

#[tokio::test]
async fn checkpoints_reach_the_webhooks_signed_and_catch_a_later_rewrite_even_with_the_signing_key()
{
    // A checkpoint after every 3 events of a chain, in the transaction of the third.
    let app = spawn_app_with(&[("CMEK_AUDIT_CHECKPOINT_EVENTS", "3")]).await;
    let owner = app.api_key(Role::Owner).await;
    let receiver = Receiver::start();
    let (_, secret) = add_webhook(&app, &owner, &receiver.url).await;
    receiver
        .configure(serde_json::json!({ "secret": secret }))
        .await;
    for name in ["one", "two", "three", "four"] {
        app.create_project(&owner, name, false).await;
    }
    let chain = organization_of(&app, &owner).await;
    // And one on the interval, of the head wherever it is (the worker makes them; this is
    // its round).
    app.console.audit().checkpoint_chains().await.unwrap();
    let (now, _) = export(&app, &owner, "format=json").await;
    let head = serde_json::from_slice::<Value>(&now).unwrap()["items"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(
        head >= 6,
        "the webhook's creation and four projects at least"
    );

    let mut checkpoints = Vec::new();
    for _ in 0..300 {
        checkpoints = receiver
            .received_all()
            .await
            .into_iter()
            .filter(|d| d["body"]["type"] == "audit.checkpoint")
            .collect();
        if checkpoints.iter().any(|d| d["body"]["data"]["seq"] == head) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        checkpoints.iter().any(|d| d["body"]["data"]["seq"] == head),
        "the head's checkpoint arrives: {checkpoints:?}"
    );
    assert!(
        checkpoints.iter().all(|d| d["verified"] == true),
        "Standard Webhooks signatures: {checkpoints:?}"
    );
    let seqs: Vec<u64> = checkpoints
        .iter()
        .map(|d| d["body"]["data"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.iter().any(|s| s % 3 == 0),
        "one after N events: {seqs:?}"
    );
    let newest = checkpoints
        .iter()
        .max_by_key(|d| d["body"]["data"]["seq"].as_u64().unwrap())
        .unwrap();
    assert_eq!(newest["body"]["data"]["chain"], chain.as_str());
    let bench = Workbench::new(&app, &owner).await;
    let kept = bench.write(
        "delivered.json",
        &serde_json::to_vec(&newest["body"]["data"]).unwrap(),
    );
    let (export_now, _) = export(&app, &owner, "format=json").await;
    let file = bench.write("now.json", &export_now);
    let verdict = bench.verify(&file, std::slice::from_ref(&kept), None);
    assert_eq!(verdict.code, 0, "{}", verdict.said);

    // Someone with the database and the signing key file rewrites event 2 and re-signs
    // everything after it, checkpoints too: the log is consistent again...
    let signing =
        cmek_console::store::signing_keys::load(&app.data_dir().join("audit-signing.keys"))
            .unwrap();
    let key = signing.current().unwrap();
    let doc: Value = serde_json::from_slice(&export_now).unwrap();
    let mut events: Vec<cmek_console::crypto::audit_chain::ChainEvent> =
        serde_json::from_value(doc["items"].clone()).unwrap();
    let mut statements = vec![format!(
        "DELETE FROM audit_checkpoints WHERE chain = '{chain}'"
    )];
    let mut prev = events[0].hash.clone();
    for event in events.iter_mut().skip(1) {
        if event.seq == 2 {
            event.body.target = "project/rewritten".into();
        }
        let at = chrono::DateTime::parse_from_rfc3339(&event.signed_at)
            .unwrap()
            .with_timezone(&chrono::Utc);
        *event = cmek_console::crypto::audit_chain::ChainEvent::seal(
            &chain,
            event.seq,
            &prev,
            event.body.clone(),
            at,
            key,
        );
        prev = event.hash.clone();
        statements.push(format!(
            "UPDATE audit_events SET target = '{}', chain_prev_hash = '{}', chain_hash = '{}', \
             signature = '{}' WHERE chain = '{chain}' AND chain_seq = {}",
            event.body.target, event.prev_hash, event.hash, event.signature, event.seq
        ));
    }
    sql(&app, &statements).await;
    let (rewritten, _) = export(&app, &owner, "format=json").await;
    let file = bench.write("rewritten.json", &rewritten);
    let unaware = bench.verify(&file, &[], None);
    assert_eq!(
        unaware.code, 0,
        "without a kept checkpoint: {}",
        unaware.said
    );
    // ...but not with the checkpoint the customer's webhook received before.
    let verdict = bench.verify(&file, &[kept], None);
    assert_eq!(verdict.code, 1, "{}", verdict.said);
    assert!(verdict.said.contains("rewritten"), "{}", verdict.said);
}

/// Installations made by the versions before (tests/fixtures/upgrade: `format1` by the one
/// that wrote format 1 only, `dual` by the one that also signed each event into its
/// organization's chain) upgrade: format 1's chain closes into a legacy segment that still
/// verifies, new events go to the organization's chain, which starts where format 1 ended
/// (or goes on from the dual writes), and the export verifies offline.
#[tokio::test]
async fn an_installation_made_by_the_versions_before_upgrades_and_verifies_legacy_segment_included()
{
    use cmek_console::domain::audit::Verification;
    for (fixture, legacy_events, signed_before) in [("format1", 7, 0), ("dual", 12, 5)] {
        let app = crate::helpers::spawn_app_from_fixture(fixture).await;
        // On PostgreSQL the installation upgraded is the one that version made there.
        if std::env::var("CMEK_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
            assert!(app.database_url.starts_with("postgres"), "{fixture}");
        }
        let legacy_head = match app.console.audit().verify_audit_chain(None).await.unwrap() {
            Verification::Intact { events, checkpoint } => {
                assert_eq!(events, legacy_events, "{fixture}");
                checkpoint.hash
            }
            Verification::Broken(b) => panic!("{fixture}: {} {}", b.seq, b.reason),
        };
        let owner = app.api_key(Role::Owner).await;
        app.create_project(&owner, "after-the-upgrade", false).await;

        assert!(app.verify_chains().await.is_ok(), "{fixture}");
        let (json, _) = export(&app, &owner, "format=json").await;
        let doc: Value = serde_json::from_slice(&json).unwrap();
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items[0]["seq"], 1, "{fixture}");
        // The chain's first event is bound to format 1: where it ended, or (written beside
        // it) the format-1 event before it.
        if signed_before == 0 {
            assert_eq!(items[0]["prev_hash"], legacy_head.as_str(), "{fixture}");
        }
        assert!(
            items.len() >= signed_before + 2,
            "{fixture}: the api key's and the project's"
        );
        assert_eq!(
            items.last().unwrap()["action"],
            "project.created",
            "{fixture}"
        );
        let bench = Workbench::new(&app, &owner).await;
        let file = bench.write("upgraded.json", &json);
        let verdict = bench.verify(&file, &[], None);
        assert_eq!(verdict.code, 0, "{fixture}: {}", verdict.said);
        // Format 1 is closed: it does not grow.
        match app.console.audit().verify_audit_chain(None).await.unwrap() {
            Verification::Intact { events, .. } => assert_eq!(events, legacy_events),
            Verification::Broken(b) => panic!("{fixture}: {} {}", b.seq, b.reason),
        }
    }
}

/// A retired key that leaked cannot extend a chain, even with events dated before it
/// retired: the keys an owner or auditor fetches say which places of their chain each key
/// signed, and both verifiers refuse the rest.
#[tokio::test]
async fn a_retired_key_cannot_extend_the_chain_within_its_validity() {
    let app = spawn_app().await;
    // Events so far were signed at the test clock's start, before now.
    let retires_at = chrono::Utc::now();
    let (owner, chain, _, before) = one_project_then_rotation(&app, retires_at).await;
    let retired = before.current().unwrap();
    // An instance started after the rotation publishes both keys, and what each signed.
    let restarted = app.another_instance().await;
    let bench = Workbench::new(&restarted, &owner).await;
    let keys: Value = serde_json::from_slice(&std::fs::read(&bench.keys).unwrap()).unwrap();
    let old = &keys["keys"][0];
    assert!(!old["retired_at"].is_null(), "{keys}");
    assert_eq!(old["signed"]["chain"], chain.as_str());
    let (doc, _) = export(&app, &owner, "format=json").await;
    let mut doc: Value = serde_json::from_slice(&doc).unwrap();
    // What the old key signed, up to where it stopped (the restarted instance signs with
    // the new one).
    let old_last = old["signed"]["last_seq"].as_u64().unwrap();
    doc["items"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["seq"].as_u64().unwrap() <= old_last);
    let last = doc["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["seq"], old_last, "{keys}");
    assert_eq!(last["key_id"], old["key_id"]);
    // Members are not told: it would say how long the log is.
    let member = app.api_key(Role::Member).await;
    let told: Value = restarted
        .get("/api/v1/audit/signing-keys", &member)
        .await
        .json()
        .await
        .unwrap();
    assert!(told["keys"][0].get("signed").is_none(), "{told}");

    // Someone holding the retired key appends an event dated before it retired.
    let at = chrono::DateTime::parse_from_rfc3339(last["signed_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        + chrono::Duration::milliseconds(1);
    assert!(at < retires_at);
    let forged = forged(
        &chain,
        last["seq"].as_u64().unwrap() + 1,
        last["hash"].as_str().unwrap(),
        at,
        retired,
    );
    doc["items"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::to_value(&forged).unwrap());
    doc["checkpoint"] = Value::Null;
    let file = bench.write("extended.json", &serde_json::to_vec(&doc).unwrap());
    let verdict = bench.verify(&file, &[], None);
    assert_eq!(verdict.code, 1, "{}", verdict.said);
    assert!(
        verdict.said.contains("retired having signed"),
        "{}",
        verdict.said
    );
    // Without what each key signed (a member's copy of the keys), it would have passed.
    let mut unknown = keys.clone();
    for key in unknown["keys"].as_array_mut().unwrap() {
        key.as_object_mut().unwrap().remove("signed");
    }
    std::fs::write(&bench.keys, serde_json::to_vec(&unknown).unwrap()).unwrap();
    assert_eq!(bench.verify(&file, &[], None).code, 0);
}
