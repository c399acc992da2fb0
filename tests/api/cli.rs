//! The operator's commands, run as the real binary against a test's database.

use std::process::{Command, Output};

use cmek_console::domain::identity::Role;
use sea_orm::ConnectionTrait;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

pub(crate) fn run(app: &TestApp, args: &[&str]) -> Output {
    run_with(app, args, &[])
}

/// The command on the test's database and data directory, with settings of its own.
pub(crate) fn run_with(
    app: &TestApp,
    args: &[&str],
    settings: &[(&str, &std::path::Path)],
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cmek-console"));
    command
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("RUST_LOG", "warn");
    for (name, value) in settings {
        command.env(name, value);
    }
    command.output().expect("cmek-console runs")
}

#[tokio::test]
async fn api_key_create_prints_a_working_key_as_the_last_word() {
    let app = spawn_app().await;

    let output = run(
        &app,
        &["api-key", "create", "--role", "auditor", "--name", "ci"],
    );

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap();
    let me: Value = app.get("/api/v1/me", key).await.json().await.unwrap();
    assert_eq!(me["role"], "auditor");
}

#[tokio::test]
async fn api_key_create_refuses_an_unknown_role() {
    let app = spawn_app().await;

    let output = run(
        &app,
        &["api-key", "create", "--role", "root", "--name", "ci"],
    );

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("owner, member or auditor"));
}

#[tokio::test]
async fn other_commands_leave_the_link_printed_by_serve_working() {
    let app = spawn_app().await;

    let created = run(
        &app,
        &["api-key", "create", "--role", "owner", "--name", "ci"],
    );
    let organization = run(
        &app,
        &[
            "organization",
            "create",
            "--name",
            "Second",
            "--owner-email",
            "a@example.com",
        ],
    );

    assert!(created.status.success() && organization.status.success());
    assert_eq!(
        app.redeem_link(&app.browser(), &app.sign_in_url)
            .await
            .status(),
        303,
        "the link serve printed still signs the owner in"
    );
}

#[tokio::test]
async fn api_key_create_with_several_organizations_names_them() {
    let app = spawn_app().await;
    let second = run(
        &app,
        &[
            "organization",
            "create",
            "--name",
            "Second Org",
            "--owner-email",
            "a@example.com",
        ],
    );
    assert!(second.status.success());

    let output = run(
        &app,
        &["api-key", "create", "--role", "owner", "--name", "ci"],
    );

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--organization"), "{stderr}");
    assert!(stderr.contains("Second Org"), "{stderr}");
    assert!(stderr.contains("My Organization"), "{stderr}");
}

#[tokio::test]
async fn audit_verify_with_a_saved_checkpoint_notices_that_the_newest_events_were_removed() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "one", true).await;
    let first = run(&app, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    let checkpoint = stdout.lines().last().unwrap().trim().to_owned();
    assert!(checkpoint.starts_with("cp1."), "{stdout}");
    app.create_project(&owner, "two", true).await;

    let still_whole = run(&app, &["audit", "verify", "--checkpoint", &checkpoint]);
    app.db()
        .await
        .execute_unprepared(
            "DELETE FROM audit_events WHERE seq >= (SELECT MAX(seq) - 1 FROM audit_events)",
        )
        .await
        .unwrap();
    let plain = run(&app, &["audit", "verify"]);
    let with_checkpoint = run(&app, &["audit", "verify", "--checkpoint", &checkpoint]);

    assert!(still_whole.status.success(), "newer events are fine");
    // Format 1's chain still links up without the checkpoint, but the organization's own
    // chain no longer reaches its newest stored checkpoint, nor ends where its head row says.
    assert_eq!(plain.status.code(), Some(1));
    let plain_err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        plain_err.contains("Organization chain") && plain_err.contains("removed"),
        "{plain_err}"
    );
    assert_eq!(with_checkpoint.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&with_checkpoint.stderr);
    assert!(stderr.contains("removed"), "{stderr}");
}

#[tokio::test]
async fn a_forged_checkpoint_is_refused() {
    let app = spawn_app().await;
    let first = run(&app, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    let checkpoint = stdout.lines().last().unwrap().trim().to_owned();
    let mut parts: Vec<&str> = checkpoint.split('.').collect();
    parts[1] = "999";
    let forged = parts.join(".");

    let output = run(&app, &["audit", "verify", "--checkpoint", &forged]);

    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("signature"));
}

#[tokio::test]
async fn audit_verify_without_the_key_file_says_where_it_looked() {
    let app = spawn_app().await;
    let elsewhere = std::env::temp_dir().join(format!("no-keys-{}", uuid::Uuid::new_v4()));

    let output = run_with(
        &app,
        &["audit", "verify"],
        &[("CMEK_AUDIT_KEY_FILE", &elsewhere)],
    );

    assert!(!output.status.success());
    assert!(!elsewhere.exists(), "verification creates no key");
    assert!(String::from_utf8_lossy(&output.stderr).contains(&elsewhere.display().to_string()));
}

#[tokio::test]
async fn a_console_without_the_key_that_sealed_the_log_refuses_to_start() {
    let app = spawn_app().await;
    let elsewhere = std::env::temp_dir().join(format!("other-keys-{}", uuid::Uuid::new_v4()));

    let output = run_with(
        &app,
        &["api-key", "create", "--role", "owner", "--name", "ci"],
        &[("CMEK_AUDIT_KEY_FILE", &elsewhere)],
    );

    assert!(!output.status.success());
    assert!(
        !elsewhere.exists(),
        "no stray key is made beside a keyed log"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CMEK_AUDIT_KEY_FILE"), "{stderr}");
}

#[tokio::test]
async fn audit_verify_passes_then_names_a_tampered_event() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "kept", true).await;

    let intact = run(&app, &["audit", "verify"]);
    assert!(intact.status.success());
    let said = String::from_utf8_lossy(&intact.stdout);
    // A new install's format 1 closed empty: every event is in its organization's chain.
    assert!(said.contains("intact: 0 events verified"), "{said}");
    assert!(
        said.contains("1 chain(s), 4 signed events verified"),
        "{said}"
    );

    app.db()
        .await
        .execute_unprepared("UPDATE audit_events SET actor = 'someone else' WHERE chain_seq = 2")
        .await
        .unwrap();
    let broken = run(&app, &["audit", "verify"]);

    assert_eq!(broken.status.code(), Some(1));
    let said = String::from_utf8_lossy(&broken.stderr);
    assert!(said.contains("broken: event 2"), "{said}");
}

#[tokio::test]
async fn sign_in_link_prints_a_link_that_works() {
    let app = spawn_app().await;

    let output = run(&app, &["sign-in-link"]);

    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let link = stdout.lines().last().unwrap();
    assert_eq!(app.redeem_link(&app.browser(), link).await.status(), 303);
}

#[tokio::test]
async fn logs_are_json_lines_when_asked_and_typos_in_settings_are_reported() {
    let app = spawn_app().await;

    let output = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .arg("migrate")
        .env("DATABASE_URL", &app.database_url)
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("RUST_LOG", "info")
        .env("CMEK_LOG_FORMAT", "json")
        .env("CMEK_LSITEN", "0.0.0.0:1")
        .output()
        .unwrap();

    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "unknown setting CMEK_LSITEN is ignored")
    );
}

#[tokio::test]
async fn organization_create_invites_the_first_owner() {
    let app = spawn_app().await;

    let output = run(
        &app,
        &[
            "organization",
            "create",
            "--name",
            "Acme",
            "--owner-email",
            "Boss@Acme.test",
        ],
    );

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("boss@acme.test is invited as its Organization Owner")
    );
    let refused = run(
        &app,
        &[
            "organization",
            "create",
            "--name",
            "Acme 2",
            "--owner-email",
            "nobody",
        ],
    );
    assert!(!refused.status.success());
}

#[tokio::test]
async fn serve_logs_a_signed_checkpoint_that_audit_verify_accepts() {
    use std::io::{BufRead, BufReader};
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "before the checkpoint", true)
        .await;

    let mut serve = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .arg("serve")
        .env("DATABASE_URL", &app.database_url)
        .env("CMEK_DATA_DIR", app.data_dir())
        .env("CMEK_LISTEN", "127.0.0.1:0")
        .env("CMEK_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = serve.stderr.take().unwrap();
    let found = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .find(|line| line["message"] == "audit checkpoint")
    });
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::task::spawn_blocking(move || found.join().unwrap()),
    )
    .await;
    let _ = serve.kill();
    let _ = serve.wait();
    let line = waited.ok().and_then(Result::ok).flatten();
    let checkpoint = line.expect("an audit checkpoint line at start")["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();

    let verified = run(&app, &["audit", "verify", "--checkpoint", &checkpoint]);

    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// Replaces a key file in the data directory and runs a command: refused, saying what.
async fn refused_with_replaced(file: &str, says: &[&str]) {
    let app = spawn_app().await;
    std::fs::write(app.data_dir().join(file), [7u8; 32]).unwrap();

    let output = run(
        &app,
        &["api-key", "create", "--role", "owner", "--name", "ci"],
    );

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(says.iter().all(|s| stderr.contains(s)), "{stderr}");
}

#[tokio::test]
async fn a_replaced_local_kms_master_key_file_is_refused_at_start() {
    refused_with_replaced(
        "local-kms-master.key",
        &[
            "local KMS's master key file",
            "not the file this database was used with",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_replaced_platform_key_file_is_refused_at_start() {
    refused_with_replaced(
        "platform-data.key",
        &["platform key file", "put the original file back"],
    )
    .await;
}

#[tokio::test]
async fn a_command_run_without_the_servers_key_files_does_not_lock_them_out() {
    // A one-off job (its own empty data directory: no master key, no platform key) runs
    // against the database before any server has started.
    let job = crate::helpers::TempDir(
        std::env::temp_dir().join(format!("cmek-job-{}", uuid::Uuid::new_v4())),
    );
    std::fs::create_dir_all(&job.0).unwrap();
    let database = job.0.join("shared.sqlite3");
    let url = format!("sqlite://{}?mode=rwc", database.display());
    let audit_keys = job.0.join("audit-chain.keys");
    let output = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .args(["api-key", "create", "--role", "owner", "--name", "job"])
        .env("DATABASE_URL", &url)
        .env("CMEK_DATA_DIR", job.0.join("job-data"))
        .env("CMEK_AUDIT_KEY_FILE", &audit_keys)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The server, with key files of its own, starts (spawn_app_on fails the test if not).
    let audit = audit_keys.display().to_string();
    let app = crate::helpers::spawn_app_on(&url, &[("CMEK_AUDIT_KEY_FILE", audit.as_str())]).await;
    let ready = app.api.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn key_impact_prints_what_the_key_protects_and_each_verdict() {
    let f = crate::clusters::local_cmek(&["us-east-1"]).await;
    let key = f.key_id("us-east-1").await;

    let unused = run(&f.app, &["key", "impact", &key]);
    assert!(
        unused.status.success(),
        "{}",
        String::from_utf8_lossy(&unused.stderr)
    );
    let text = String::from_utf8(unused.stdout).unwrap();
    assert!(text.contains("delete: safe"), "{text}");

    let cluster = f.cluster("orders", &["us-east-1"]).await;
    let used = run(&f.app, &["key", "impact", &key]);
    let text = String::from_utf8(used.stdout).unwrap();
    assert!(!used.status.success(), "no action is safe: {text}");
    assert!(
        text.contains(&format!(
            "cluster orders ({}, available)",
            cluster["id"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("delete: NOT SAFE"), "{text}");
    assert!(text.contains("disable in the KMS: NOT SAFE"), "{text}");

    let unknown = run(
        &f.app,
        &["key", "impact", &uuid::Uuid::now_v7().to_string()],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
}

/// `audit verify-export` with no database at all (its URL points where nothing listens): the
/// fixed vectors verify, a tampered copy names the broken event, a missing file is exit 2.
#[test]
fn audit_verify_export_runs_without_a_database() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/audit-v2");
    let verify = |export: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cmek-console"))
            .args([
                "audit",
                "verify-export",
                export,
                "--keys",
                &format!("{fixtures}/keys.json"),
            ])
            .args(extra)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")
            .env("CMEK_DATA_DIR", "/nonexistent/cmek")
            .env("RUST_LOG", "warn")
            .output()
            .expect("cmek-console runs")
    };
    let good = verify(&format!("{fixtures}/export.json"), &[]);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        stdout.contains("Verified: 5 events, seq 1 to 5") && stdout.contains("[5]"),
        "{stdout}"
    );

    let dir = crate::helpers::TempDir(
        std::env::temp_dir().join(format!("cmek-export-{}", uuid::Uuid::new_v4())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut export: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/export.json")).unwrap())
            .unwrap();
    export["items"][2]["actor"] = "someone else".into();
    let tampered = dir.0.join("tampered.json");
    std::fs::write(&tampered, export.to_string()).unwrap();
    let bad = verify(tampered.to_str().unwrap(), &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("NOT VERIFIED: event 3"));

    // A checkpoint kept from elsewhere must be signed: a forged one is refused.
    let mut kept = export["checkpoint"].clone();
    kept["seq"] = 4.into();
    let forged = dir.0.join("cp.json");
    std::fs::write(&forged, kept.to_string()).unwrap();
    let refused = verify(
        &format!("{fixtures}/export.json"),
        &["--checkpoint", forged.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("not signed"));

    let missing = verify("/nonexistent/export.json", &[]);
    assert_eq!(missing.status.code(), Some(2));

    // A keys file whose key id is not its public key's cannot vouch for anything: a bad
    // file (2), as the Python verifier says, not a broken log (1).
    let mut keys: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/keys.json")).unwrap())
            .unwrap();
    keys["keys"][0]["key_id"] = "0000000000000000".into();
    let bad_keys = dir.0.join("keys.json");
    std::fs::write(&bad_keys, keys.to_string()).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_cmek-console"))
        .args([
            "audit",
            "verify-export",
            &format!("{fixtures}/export.json"),
            "--keys",
        ])
        .arg(&bad_keys)
        .env("CMEK_DATA_DIR", "/nonexistent/cmek")
        .env("RUST_LOG", "warn")
        .output()
        .expect("cmek-console runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("its id is not its public key's"));
}

/// A console given another signing key file than the one that signed the newest event
/// refuses to start (it would begin a second history), as it does for the chain key file.
#[tokio::test]
async fn a_console_with_another_signing_key_file_refuses_to_start() {
    let app = spawn_app().await;
    let owner = app.api_key(Role::Owner).await;
    app.create_project(&owner, "signed", true).await;
    let other = app.data_dir().join("other-signing.keys");
    std::fs::write(
        &other,
        format!("2026-01-01T00:00:00.000000Z {}\n", "17".repeat(32)),
    )
    .unwrap();
    let output = run_with(
        &app,
        &["api-key", "create", "--role", "auditor", "--name", "job"],
        &[("CMEK_AUDIT_SIGNING_KEY_FILE", other.as_path())],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CMEK_AUDIT_SIGNING_KEY_FILE"), "{stderr}");
    // With the right file it runs, and its event is signed into the organization's chain.
    let ok = run(
        &app,
        &["api-key", "create", "--role", "auditor", "--name", "job"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (_, events) = app.verify_chains().await.unwrap();
    assert!(events >= 3, "{events}");
}

/// `audit rotate-key` schedules the new signing key ahead (two minutes at least, so every
/// running instance reads it first), and refuses a shorter delay without touching a file.
#[tokio::test]
async fn audit_rotate_key_schedules_the_new_signing_key_ahead() {
    let app = spawn_app().await;
    let file = app.data_dir().join("audit-signing.keys");
    let chain_file = app.data_dir().join("audit-chain.keys");
    let (signing_before, chain_before) = (
        std::fs::read(&file).unwrap(),
        std::fs::read(&chain_file).unwrap(),
    );

    let refused = run(&app, &["audit", "rotate-key", "--in", "30s"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("2 minutes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), signing_before);
    assert_eq!(std::fs::read(&chain_file).unwrap(), chain_before);

    let started = chrono::Utc::now();
    let output = run(&app, &["audit", "rotate-key", "--in", "10m"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let keys = cmek_console::store::signing_keys::load(&file)
        .unwrap()
        .published();
    assert_eq!(keys.len(), 2);
    let from = chrono::DateTime::parse_from_rfc3339(&keys[1].valid_from).unwrap();
    assert!(from >= started + chrono::Duration::minutes(10), "{from}");
    assert_eq!(
        keys[0].retired_at.as_deref(),
        Some(keys[1].valid_from.as_str())
    );
    // A second rotation may not start before the one scheduled: refused, nothing changed.
    let chain_after = std::fs::read(&chain_file).unwrap();
    let again = run(&app, &["audit", "rotate-key"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already scheduled"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&chain_file).unwrap(), chain_after);
}
