//! One sweep of the key monitor over many keys against moto (scripts/bench-monitor starts moto
//! and runs this), next to what a plain async client reaches against the same moto with the
//! same concurrency doing the same calls per key (DescribeKey, GenerateDataKey, Decrypt,
//! GetKeyRotationStatus). Prints keys per second for both, their ratio, and the console's
//! resident memory before and at its peak during the sweep.
//!
//! The console is the real one (`Application` with SQLite, the AWS adapter, the monitor
//! inside it); its clock is moved one interval ahead to make every key due at once.
//! `CMEK_BENCH_MOTO_URL` (required), `CMEK_BENCH_KEYS` (default 10000),
//! `CMEK_BENCH_CONCURRENCY` (default 16).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType};
use cmek_console::domain::clock::ManualClock;
use cmek_console::domain::keys::KeyRequestInput;
use cmek_console::domain::keys::region::AWS_REGIONS;
use cmek_console::domain::projects::NewProject;
use cmek_console::settings::Settings;
use cmek_console::startup::Application;
use futures_util::StreamExt;

const REGIONS: usize = 20;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn kms(url: &str, region: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version_latest()
            .region(Region::new(region.to_owned()))
            .endpoint_url(url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
            .build(),
    )
}

/// The plain client: the same four calls per key, `concurrency` keys at a time.
async fn plain_sweep(url: &str, arns: &[(String, String)], concurrency: usize) -> Duration {
    let clients: std::collections::HashMap<String, aws_sdk_kms::Client> = arns
        .iter()
        .map(|(region, _)| (region.clone(), kms(url, region)))
        .collect();
    let started = Instant::now();
    futures_util::stream::iter(arns.iter())
        .map(|(region, arn)| {
            let client = clients[region].clone();
            async move {
                client
                    .describe_key()
                    .key_id(arn)
                    .send()
                    .await
                    .expect("DescribeKey");
                let key = client
                    .generate_data_key()
                    .key_id(arn)
                    .key_spec(DataKeySpec::Aes256)
                    .encryption_context("purpose", "bench")
                    .send()
                    .await
                    .expect("GenerateDataKey");
                let wrapped = key.ciphertext_blob.expect("wrapped key");
                client
                    .decrypt()
                    .key_id(arn)
                    .ciphertext_blob(Blob::new(wrapped.into_inner()))
                    .encryption_context("purpose", "bench")
                    .send()
                    .await
                    .expect("Decrypt");
                client
                    .get_key_rotation_status()
                    .key_id(arn)
                    .send()
                    .await
                    .expect("GetKeyRotationStatus");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("CMEK_BENCH_MOTO_URL").expect("CMEK_BENCH_MOTO_URL names moto");
    let keys = env_number("CMEK_BENCH_KEYS", 10_000);
    let concurrency = env_number("CMEK_BENCH_CONCURRENCY", 16);
    let regions: Vec<&str> = AWS_REGIONS.iter().take(REGIONS).map(|(r, _)| *r).collect();

    // One KMS key per region; each project holds one encryption key per region (R4).
    let mut arns = Vec::new();
    for region in &regions {
        let made = kms(&url, region)
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .send()
            .await
            .expect("CreateKey");
        arns.push(made.key_metadata.unwrap().arn.unwrap());
    }

    let dir = std::env::temp_dir().join(format!("cmek-bench-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data_dir = dir.display().to_string();
    let concurrency_text = concurrency.to_string();
    let settings = Settings::from_vars(&[
        ("CMEK_LISTEN", "127.0.0.1:0"),
        ("CMEK_DATA_DIR", data_dir.as_str()),
        ("CMEK_AWS_ACCOUNT_ID", "123456789012"),
        ("AWS_ENDPOINT_URL", url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("CMEK_KEY_CHECK_INTERVAL", "1h"),
        ("CMEK_KEY_CHECK_CONCURRENCY", concurrency_text.as_str()),
    ])
    .expect("settings");
    let clock = Arc::new(ManualClock::starting_now());
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("console");
    let console = app.console();
    tokio::spawn(app.run_until_stopped());
    let owner = console.identity().operator(None).await.expect("operator");

    let setup = Instant::now();
    let projects = keys.div_ceil(regions.len());
    let mut planned = Vec::new();
    for n in 0..projects {
        let project = console
            .projects()
            .create_project(
                &owner,
                NewProject::parse(&format!("bench-{n}"), true, None).expect("project"),
            )
            .await
            .expect("create project");
        for (region, arn) in regions.iter().zip(&arns) {
            if planned.len() < keys {
                planned.push((project.id, (*region).to_owned(), arn.clone()));
            }
        }
    }
    futures_util::stream::iter(planned.iter())
        .map(|(project, region, arn)| {
            let console = console.clone();
            let owner = owner.clone();
            async move {
                let input = KeyRequestInput {
                    provider: "aws_kms".into(),
                    region: region.clone(),
                    key_arn: Some(arn.clone()),
                    access_mode: None,
                    role_arn: None,
                    vault_name: None,
                    key_name: None,
                    key_id: None,
                };
                console
                    .keys()
                    .create_key(&owner, *project, &input, None)
                    .await
                    .expect("create key");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    println!(
        "setup: {keys} keys in {projects} projects over {} regions in {:.1} s",
        regions.len(),
        setup.elapsed().as_secs_f64()
    );

    // The sweep: every key due at once; the monitor inside the console does the rest.
    let rss_before = rss_kib();
    let mut rss_peak = rss_before;
    let checks_before = console.keys().monitor_checks();
    clock.advance(chrono::Duration::hours(1) + chrono::Duration::seconds(1));
    let started = Instant::now();
    while console.keys().monitor_checks() - checks_before < keys as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        rss_peak = rss_peak.max(rss_kib());
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the sweep stalled"
        );
    }
    let console_time = started.elapsed();

    let pairs: Vec<(String, String)> = planned
        .iter()
        .map(|(_, region, arn)| (region.clone(), arn.clone()))
        .collect();
    let plain_time = plain_sweep(&url, &pairs, concurrency).await;

    let console_rate = keys as f64 / console_time.as_secs_f64();
    let plain_rate = keys as f64 / plain_time.as_secs_f64();
    let ratio = console_rate / plain_rate;
    println!("concurrency: {concurrency}");
    println!(
        "console sweep: {keys} keys in {:.1} s = {console_rate:.0} keys/s",
        console_time.as_secs_f64()
    );
    println!(
        "plain async client: {keys} keys in {:.1} s = {plain_rate:.0} keys/s",
        plain_time.as_secs_f64()
    );
    println!(
        "ratio: {ratio:.2}x (goal >= 0.8x: {})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    println!(
        "console RSS: {} MiB before the sweep, {} MiB at its peak",
        rss_before / 1024,
        rss_peak / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}
