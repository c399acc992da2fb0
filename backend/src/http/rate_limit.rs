//! A fixed-window limit on sign-in attempts per source address, so links and callbacks
//! cannot be guessed or replayed at speed. In memory: each console process counts its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    limit: u32,
    window: Duration,
    hits: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt; `Err(retry_after)` once the address is over its limit.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        let Some(ip) = ip else {
            return Ok(());
        };
        let now = Instant::now();
        let Ok(mut hits) = self.hits.lock() else {
            return Ok(());
        };
        if hits.len() > 10_000 {
            hits.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = hits.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > self.limit {
            Err(self.window.saturating_sub(now.duration_since(entry.0)))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_limit_is_told_when_to_come_back() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(limiter.check(ip).is_ok());
        assert!(limiter.check(ip).is_ok());
        let retry = limiter.check(ip).err();
        assert!(retry.is_some_and(|d| d <= Duration::from_secs(60)));
        assert!(
            limiter.check(Some(IpAddr::from([127, 0, 0, 2]))).is_ok(),
            "other addresses are not affected"
        );
    }
}
