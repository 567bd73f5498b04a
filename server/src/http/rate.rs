//! The upload rate limit: a token bucket per caller (API key, or client
//! network without keys), with the table of buckets kept bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most rate-limit buckets kept.
const MAX_BUCKETS: usize = 100_000;

/// Token buckets per caller: `per_min` uploads a minute, bursts up to that.
#[derive(Debug)]
pub struct RateLimiter {
    per_min: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_min` requests a minute per bucket.
    pub fn new(per_min: u32) -> Self {
        Self {
            per_min: f64::from(per_min.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token, or tells how long until one is there.
    pub fn take(&self, bucket: &str) -> Result<(), Duration> {
        self.take_at(bucket, Instant::now())
    }

    /// [`RateLimiter::take`] at `now` (not before any earlier call's).
    pub fn take_at(&self, bucket: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.per_min / 60.0;
        let mut b = self.buckets.lock();
        if b.len() >= MAX_BUCKETS {
            // Full buckets carry no state worth keeping.
            b.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < self.per_min
            });
            if b.len() >= MAX_BUCKETS {
                // Still full (many callers, all busy): the older half goes,
                // so memory stays bounded and the scan is paid once per
                // MAX_BUCKETS / 2 new callers.
                let mut ages: Vec<Instant> = b.values().map(|(_, at)| *at).collect();
                let mid = ages.len() / 2;
                let (_, cut, _) = ages.select_nth_unstable(mid);
                let cut = *cut;
                b.retain(|_, (_, at)| *at > cut);
            }
        }
        let (tokens, at) = b.entry(bucket.to_string()).or_insert((self.per_min, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(self.per_min);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_wait_that_refills() {
        let l = RateLimiter::new(3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.take_at("a", t0).is_ok()));
        let about = |r: Result<(), Duration>, secs: f64| {
            let wait = r.expect_err("refused").as_secs_f64();
            assert!((wait - secs).abs() < 1e-6, "waits {wait} s, not {secs} s");
        };
        about(l.take_at("a", t0), 20.0);
        assert!(l.take_at("b", t0).is_ok(), "buckets are per caller");
        // 3 a minute: one token back every 20 s (the refused take kept none).
        about(l.take_at("a", t0 + Duration::from_secs(15)), 5.0);
        assert!(l.take_at("a", t0 + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        // One upload a minute: every caller's bucket is left empty, so
        // none can be pruned as full; the table still stays bounded.
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..(2 * MAX_BUCKETS + 10) {
            assert!(limiter.take_at(&format!("addr:{i}"), t0).is_ok());
            assert!(limiter.buckets.lock().len() <= MAX_BUCKETS);
        }
        // A caller that is still limited stays limited after a prune it survived.
        let last = format!("addr:{}", 2 * MAX_BUCKETS + 9);
        assert!(limiter.take_at(&last, t0).is_err());
    }
}
