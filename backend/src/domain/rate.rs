//! Fixed-window counters kept in the database, so every instance shares one budget: sign-in
//! attempts, Check now presses, test events.

use chrono::{DateTime, Duration, Utc};

use crate::domain::DomainError;
use crate::domain::clock::Clock;
use crate::domain::ports::Counters;

/// One count in a window of `seconds`: how many were counted in it so far (this one
/// included), when it started, and how long until it ends (at least a second).
pub struct Counted {
    pub count: u32,
    pub window_start: DateTime<Utc>,
    pub retry_after: std::time::Duration,
}

/// Counts one event in `bucket`'s current window of `seconds`, in the shared counters.
pub(crate) async fn count_in_window(
    store: &dyn Counters,
    clock: &dyn Clock,
    bucket: &str,
    seconds: i64,
) -> Result<Counted, DomainError> {
    let now = clock.now();
    let start_secs = now.timestamp() - now.timestamp().rem_euclid(seconds);
    let window_start = DateTime::<Utc>::from_timestamp(start_secs, 0).unwrap_or(now);
    let count = store.count_attempt(bucket, window_start).await?;
    let retry_after = (window_start + Duration::seconds(seconds) - now)
        .to_std()
        .unwrap_or_default()
        .max(std::time::Duration::from_secs(1));
    Ok(Counted {
        count,
        window_start,
        retry_after,
    })
}

/// The shared counters read with the console's clock: what a feature that limits a rate holds.
#[derive(Clone)]
pub struct Windows {
    pub(crate) counters: std::sync::Arc<dyn Counters>,
    pub(crate) clock: std::sync::Arc<dyn Clock>,
}

impl Windows {
    /// Counts one event in `bucket`'s current window of `seconds`.
    pub(crate) async fn count(&self, bucket: &str, seconds: i64) -> Result<Counted, DomainError> {
        count_in_window(self.counters.as_ref(), self.clock.as_ref(), bucket, seconds).await
    }
}
