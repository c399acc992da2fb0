//! Supervised background workers: a panic restarts the worker and is counted, a worker that
//! keeps failing takes the instance out of readiness and says which one.

use cmek_console::supervisor::Fault;

use crate::helpers::spawn_app;

async fn metric(app: &crate::helpers::TestApp, line_start: &str) -> Option<u64> {
    let body = app
        .api
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn a_worker_that_panics_is_restarted_and_counted_in_metrics() {
    let app = spawn_app().await;
    let restarts = "cmek_worker_restarts_total{worker=\"key-monitor\"}";
    assert_eq!(metric(&app, restarts).await, Some(0));

    app.workers.inject("key-monitor", Some(Fault::PanicOnce));

    let mut counted = None;
    for _ in 0..50 {
        counted = metric(&app, restarts).await;
        if counted == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counted, Some(1));
    // It runs again: its rounds go on after the restart.
    let rounds = app.workers.report();
    let before = rounds
        .iter()
        .find(|w| w.name == "key-monitor")
        .unwrap()
        .rounds;
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let after = app.workers.report();
    let monitor = after.iter().find(|w| w.name == "key-monitor").unwrap();
    assert!(
        monitor.rounds > before,
        "rounds went on: {before} then {}",
        monitor.rounds
    );
    assert!(!monitor.failing);
    let ready = app.api.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_worker_that_keeps_failing_makes_readyz_name_it_until_it_recovers() {
    let app = spawn_app().await;

    app.workers.inject("reactions", Some(Fault::FailAlways));

    let mut answer = serde_json::Value::Null;
    for _ in 0..100 {
        let ready = app.api.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            answer = ready.json().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer["failing_workers"],
        serde_json::json!(["reactions"]),
        "{answer}"
    );
    assert!(
        metric(&app, "cmek_worker_errors_total{worker=\"reactions\"}")
            .await
            .unwrap()
            >= 3
    );

    app.workers.inject("reactions", None);
    let mut status = 503;
    for _ in 0..150 {
        status = app
            .api
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again once its rounds succeed");
}
