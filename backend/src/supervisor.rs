//! Supervised background work. Each worker is a named loop of rounds; the supervisor runs it
//! as a task of its own and:
//! - logs a round's error with the worker's name, backs off (1 s doubling, at most a minute)
//!   while the errors go on, and counts them;
//! - restarts a worker whose task panicked, after the same back-off, and counts the restart
//!   (`cmek_worker_restarts_total{worker}`);
//! - tells readiness which worker keeps failing (three failures in a row, rounds or panics);
//! - stops every worker at shutdown and waits for them (a round in progress finishes).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Failures in a row after which a worker counts as failing for readiness.
const FAILING_AFTER: u32 = 3;
/// Longest wait between attempts of a failing worker.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest a round may take (a full sweep of the key monitor over many keys stays well
/// below it); a round that hangs longer counts as failed, so a stuck worker shows in
/// `/readyz` instead of stopping silently.
const ROUND_LIMIT: Duration = Duration::from_secs(15 * 60);

/// A fault to put into a worker, for tests of the supervisor itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next round panics.
    PanicOnce,
    /// Every round fails until the fault is cleared.
    FailAlways,
}

#[derive(Clone, Debug, Default)]
struct WorkerState {
    rounds: u64,
    errors: u64,
    restarts: u64,
    failures_in_a_row: u32,
    last_error: Option<String>,
    fault: Option<Fault>,
}

/// What every worker of this process is doing: shared with `/metrics` and `/readyz`.
#[derive(Default)]
pub struct Workers {
    states: Mutex<BTreeMap<&'static str, WorkerState>>,
}

/// One worker as `/metrics` and `/readyz` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerReport {
    pub name: &'static str,
    pub rounds: u64,
    pub errors: u64,
    pub restarts: u64,
    pub failing: bool,
    pub last_error: Option<String>,
}

impl Workers {
    fn with<T>(&self, name: &'static str, f: impl FnOnce(&mut WorkerState) -> T) -> T {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(states.entry(name).or_default())
    }

    /// Every worker, by name.
    pub fn report(&self) -> Vec<WorkerReport> {
        let states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        states
            .iter()
            .map(|(name, s)| WorkerReport {
                name,
                rounds: s.rounds,
                errors: s.errors,
                restarts: s.restarts,
                failing: s.failures_in_a_row >= FAILING_AFTER,
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    /// The workers that keep failing.
    pub fn failing(&self) -> Vec<WorkerReport> {
        self.report().into_iter().filter(|w| w.failing).collect()
    }

    /// Puts a fault into a worker (`None` clears it): for tests of supervision.
    pub fn inject(&self, name: &'static str, fault: Option<Fault>) {
        self.with(name, |s| s.fault = fault);
    }

    fn backoff(&self, name: &'static str) -> Duration {
        let failures = self.with(name, |s| s.failures_in_a_row);
        Duration::from_secs(1_u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
    }
}

/// Starts, restarts and stops the workers.
pub struct Supervisor {
    workers: Arc<Workers>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            workers: Arc::default(),
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    pub fn workers(&self) -> Arc<Workers> {
        self.workers.clone()
    }

    /// Runs `round` every `every` (or as soon as `wake` resolves, when given), supervised.
    /// A round that overruns delays the next one; it does not pile up behind it.
    pub fn every<F, Fut>(&mut self, name: &'static str, every: Duration, round: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.every_or_woken(name, every, round, std::future::pending::<()>);
    }

    /// As `every`, but a round also starts when `wake()` resolves.
    pub fn every_or_woken<F, Fut, W, WFut>(
        &mut self,
        name: &'static str,
        every: Duration,
        round: F,
        wake: W,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
        W: Fn() -> WFut + Send + Sync + 'static,
        WFut: Future<Output = ()> + Send + 'static,
    {
        let workers = self.workers.clone();
        workers.with(name, |_| ());
        let round = Arc::new(round);
        let wake = Arc::new(wake);
        let mut stop = self.stop.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let inner = tokio::spawn(run_rounds(
                    name,
                    every,
                    round.clone(),
                    wake.clone(),
                    workers.clone(),
                    stop.clone(),
                ));
                match inner.await {
                    Ok(()) => return,
                    Err(err) if err.is_panic() => {
                        let restarts = workers.with(name, |s| {
                            s.restarts += 1;
                            s.failures_in_a_row += 1;
                            s.last_error = Some("the worker panicked".into());
                            s.restarts
                        });
                        tracing::error!(
                            worker = name,
                            restarts,
                            "a background worker panicked; restarting it"
                        );
                    }
                    Err(_) => return,
                }
                let pause = workers.backoff(name);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        });
        self.tasks.push(task);
    }

    /// Stops every worker and waits for them (each finishes the round it is in), at most
    /// `limit` in all.
    pub async fn shutdown(mut self, limit: Duration) {
        let _ = self.stop.send(true);
        let joined = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(limit, joined).await.is_err() {
            tracing::warn!("background workers did not stop in time; stopping them where they are");
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

async fn run_rounds<F, Fut, W, WFut>(
    name: &'static str,
    every: Duration,
    round: Arc<F>,
    wake: Arc<W>,
    workers: Arc<Workers>,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
    W: Fn() -> WFut + Send + Sync + 'static,
    WFut: Future<Output = ()> + Send + 'static,
{
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = wake() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let fault = workers.with(name, |s| {
            let fault = s.fault;
            if fault == Some(Fault::PanicOnce) {
                s.fault = None;
            }
            fault
        });
        let result = match fault {
            #[allow(clippy::panic)]
            Some(Fault::PanicOnce) => panic!("fault injected into worker {name}"),
            Some(Fault::FailAlways) => Err("fault injected".to_owned()),
            None => match tokio::time::timeout(ROUND_LIMIT, round()).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "the round took longer than {} minutes",
                    ROUND_LIMIT.as_secs() / 60
                )),
            },
        };
        match result {
            Ok(()) => workers.with(name, |s| {
                s.rounds += 1;
                s.failures_in_a_row = 0;
            }),
            Err(error) => {
                let failures = workers.with(name, |s| {
                    s.rounds += 1;
                    s.errors += 1;
                    s.failures_in_a_row += 1;
                    s.last_error = Some(error.clone());
                    s.failures_in_a_row
                });
                tracing::warn!(
                    worker = name,
                    failures,
                    error,
                    "a background worker's round failed"
                );
                let pause = workers.backoff(name);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_is_restarted_and_counted() {
        let mut supervisor = Supervisor::new();
        let workers = supervisor.workers();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        workers.inject("w", Some(Fault::PanicOnce));
        supervisor.every("w", Duration::from_millis(10), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let report = workers.report();
        assert_eq!(report[0].restarts, 1);
        assert!(
            runs.load(Ordering::SeqCst) > 10,
            "runs on after the restart"
        );
        assert!(!report[0].failing);
        supervisor.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_keeps_failing_is_reported_and_recovers() {
        let mut supervisor = Supervisor::new();
        let workers = supervisor.workers();
        workers.inject("w", Some(Fault::FailAlways));
        supervisor.every("w", Duration::from_millis(10), || async { Ok(()) });
        tokio::time::sleep(Duration::from_secs(30)).await;
        let failing = workers.failing();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].name, "w");
        assert!(failing[0].errors >= 3);
        workers.inject("w", None);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(workers.failing().is_empty());
        supervisor.shutdown(Duration::from_secs(1)).await;
    }
}
